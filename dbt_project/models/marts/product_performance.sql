-- One row per product (latest products version): sales over net-status orders, views/carts over all events.
with products as (
    select * from {{ ref('stg_products') }}
),

net_sales as (
    select
        items.product_id,
        sum(items.quantity) as units_sold,
        sum(items.line_total_cents) as revenue_cents,
        count(distinct items.order_id) as orders_count
    from {{ ref('stg_order_items') }} as items
    inner join {{ ref('int_order_totals') }} as orders on orders.order_id = items.order_id
    where orders.is_net
    group by items.product_id
),

engagement as (
    select
        product_id,
        count(*) filter (where event_type = 'product_view') as product_views,
        count(*) filter (where event_type = 'add_to_cart') as add_to_carts
    from {{ ref('stg_web_events') }}
    where product_id is not null
    group by product_id
)

select
    products.product_id,
    products.sku,
    products.product_name,
    products.category,
    cast(coalesce(net_sales.units_sold, 0) as bigint) as units_sold,
    {{ cents_to_currency('coalesce(net_sales.revenue_cents, 0)') }} as revenue,
    cast(coalesce(net_sales.orders_count, 0) as bigint) as orders_count,
    cast(coalesce(engagement.product_views, 0) as bigint) as product_views,
    cast(coalesce(engagement.add_to_carts, 0) as bigint) as add_to_carts,
    case
        when coalesce(engagement.product_views, 0) = 0 then null
        else cast(engagement.add_to_carts as double) / engagement.product_views
    end as view_to_cart_rate
from products
left join net_sales on net_sales.product_id = products.product_id
left join engagement on engagement.product_id = products.product_id
order by products.product_id
