-- One row per payment (latest version), amount in cents and currency units. Incremental: a run rebuilds the
-- partitions of its days (a payment's partition is the day it was made, which can be after its order's).
{{ config(replace_days='_partition_date') }}

with source as (
    select * from {{ raw_source('payments') }}
    where {{ in_run_days('"date"') }}
),

typed as (
    select
        cast(payment_id as bigint) as payment_id,
        cast(order_id as bigint) as order_id,
        cast(payment_method as varchar) as payment_method,
        cast(payment_status as varchar) as payment_status,
        cast(amount_cents as bigint) as amount_cents,
        {{ cents_to_currency('amount_cents') }} as amount,
        cast(paid_at as timestamp) as paid_at,
        cast(updated_at as timestamp) as updated_at,
        cast(_partition_date as date) as _partition_date,
        cast(_batch_id as varchar) as _batch_id,
        cast(_loaded_at as timestamp) as _loaded_at
    from source
)

select * from typed
{{ latest_per_key('payment_id') }}
