-- Every version of every product: one row per product and raw partition (day the version was written). The
-- input of stg_products (the latest version).
-- Incremental by day, with tombstones for versions that went away (macros/entity_versions.sql).
{{ config(replace_days='_partition_date') }}

{% call dimension_versions('products', 'product_id') %}
    cast(product_id as bigint) as product_id,
    cast(sku as varchar) as sku,
    cast(product_name as varchar) as product_name,
    cast(category as varchar) as category,
    cast(unit_price_cents as bigint) as unit_price_cents,
    {{ cents_to_currency('unit_price_cents') }} as unit_price,
    cast(stock_quantity as bigint) as stock_quantity,
    cast(is_active as boolean) as is_active,
{% endcall %}
