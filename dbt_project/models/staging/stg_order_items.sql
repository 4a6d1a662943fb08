-- One row per order line (latest version), with the line total in cents and currency units. Incremental: a run
-- rebuilds the partitions of its days (an order's lines are in its order day's partition).
{{ config(replace_days='_partition_date') }}

with source as (
    select * from {{ raw_source('order_items') }}
    where {{ in_run_days('"date"') }}
),

typed as (
    select
        cast(order_item_id as bigint) as order_item_id,
        cast(order_id as bigint) as order_id,
        cast(product_id as bigint) as product_id,
        cast(quantity as bigint) as quantity,
        cast(unit_price_cents as bigint) as unit_price_cents,
        cast(discount_cents as bigint) as discount_cents,
        cast(ordered_at as timestamp) as ordered_at,
        cast(cast(ordered_at as timestamp) as date) as order_date,
        cast(updated_at as timestamp) as updated_at,
        cast(_partition_date as date) as _partition_date,
        cast(_batch_id as varchar) as _batch_id,
        cast(_loaded_at as timestamp) as _loaded_at
    from source
),

deduplicated as (
    select * from typed
    {{ latest_per_key('order_item_id') }}
)

select
    order_item_id,
    order_id,
    product_id,
    quantity,
    unit_price_cents,
    {{ cents_to_currency('unit_price_cents') }} as unit_price,
    discount_cents,
    {{ cents_to_currency('discount_cents') }} as discount,
    quantity * unit_price_cents - discount_cents as line_total_cents,
    {{ cents_to_currency('quantity * unit_price_cents - discount_cents') }} as line_total,
    ordered_at,
    order_date,
    updated_at,
    _partition_date,
    _batch_id,
    _loaded_at
from deduplicated
