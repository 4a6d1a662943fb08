-- Every version of every product: one row per product and raw partition (day the version was written). The
-- input of stg_products (the latest version).
-- Incremental: a run rebuilds the partitions of its days, replacing them whole. A version that went away
-- from a rebuilt day (quarantined or deleted when the day was re-extracted) leaves a tombstone, a row with
-- only its key and day (updated_at null), so that the models built from the versions still see that this
-- product changed on that day; they read real versions only (updated_at is not null).
{{ config(replace_days='_partition_date') }}

with source as (
    select * from {{ raw_source('products') }}
    where {{ in_run_days('"date"') }}
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
),

versions as (
    select * from typed
    {{ latest_per_key('product_id, _partition_date') }}
)

select * from versions
{% if is_incremental() %}
union all by name
select previous.product_id, previous._partition_date
from {{ this }} as previous
anti join versions using (product_id, _partition_date)
where {{ in_run_days('previous._partition_date') }}
{% endif %}
