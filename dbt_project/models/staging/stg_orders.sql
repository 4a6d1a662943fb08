-- One row per order: the latest version (an order's partition, its order day, is re-extracted when its status
-- changes). Incremental: a run rebuilds the partitions of its days, replacing them whole.
{{ config(replace_days='_partition_date') }}

with source as (
    select * from {{ raw_source('orders') }}
    where {{ in_run_days('"date"') }}
),

typed as (
    select
        cast(order_id as bigint) as order_id,
        cast(customer_id as bigint) as customer_id,
        cast(order_status as varchar) as order_status,
        cast(channel as varchar) as channel,
        cast(currency as varchar) as currency,
        cast(ordered_at as timestamp) as ordered_at,
        cast(cast(ordered_at as timestamp) as date) as order_date,
        cast(updated_at as timestamp) as updated_at,
        cast(_partition_date as date) as _partition_date,
        cast(_batch_id as varchar) as _batch_id,
        cast(_loaded_at as timestamp) as _loaded_at
    from source
)

select * from typed
{{ latest_per_key('order_id') }}
