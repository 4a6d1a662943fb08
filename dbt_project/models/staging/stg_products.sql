-- Latest version of every product (the nightly inventory sync writes all products every day).
with source as (
    select * from {{ source('raw', 'products') }}
),

typed as (
    select
        cast(product_id as bigint) as product_id,
        cast(sku as varchar) as sku,
        cast(product_name as varchar) as product_name,
        cast(category as varchar) as category,
        cast(unit_price_cents as bigint) as unit_price_cents,
        {{ cents_to_currency('unit_price_cents') }} as unit_price,
        cast(stock_quantity as bigint) as stock_quantity,
        cast(is_active as boolean) as is_active,
        cast(updated_at as timestamp) as updated_at,
        cast(_partition_date as date) as _partition_date,
        cast(_batch_id as varchar) as _batch_id,
        cast(_loaded_at as timestamp) as _loaded_at
    from source
)

select * from typed
{{ latest_per_key('product_id') }}
