-- One row per product (latest products version): sales over net-status orders, views/carts over all events.
-- Incremental: a run recomputes the products it touched: those with activity on its days (in
-- int_product_days, which keeps a zero row where a product's activity went away) and those with a version
-- on its days (in stg_product_versions, which keeps a tombstone where a version went away); the post-hook
-- deletes the row of a touched product that has no version left.
-- depends_on: {{ ref('stg_product_versions') }}
{{
    config(
        unique_key='product_id',
        post_hook="{{ delete_entities_without_version('product_id', 'stg_product_versions', 'stg_products') }}",
    )
}}

with products as (
    select * from {{ ref('stg_products') }}
),

product_days as (
    select * from {{ ref('int_product_days') }}
),

{% if is_incremental() %}
touched as (
    {{ touched_entities('product_id', 'product_days', 'activity_date', 'stg_product_versions') }}
),
{% endif %}

totals as (
    select
        product_id,
        sum(units_sold) as units_sold,
        sum(revenue_cents) as revenue_cents,
        sum(orders_count) as orders_count,
        sum(product_views) as product_views,
        sum(add_to_carts) as add_to_carts
    from product_days
    {% if is_incremental() %}
    where product_id in (select product_id from touched)
    {% endif %}
    group by product_id
)

select
    products.product_id,
    products.sku,
    products.product_name,
    products.category,
    cast(coalesce(totals.units_sold, 0) as bigint) as units_sold,
    {{ cents_to_currency('coalesce(totals.revenue_cents, 0)') }} as revenue,
    cast(coalesce(totals.orders_count, 0) as bigint) as orders_count,
    cast(coalesce(totals.product_views, 0) as bigint) as product_views,
    cast(coalesce(totals.add_to_carts, 0) as bigint) as add_to_carts,
    case
        when coalesce(totals.product_views, 0) = 0 then null
        else cast(totals.add_to_carts as double) / totals.product_views
    end as view_to_cart_rate
from products
left join totals on totals.product_id = products.product_id
{% if is_incremental() %}
where products.product_id in (select product_id from touched)
{% endif %}
order by products.product_id
