-- One row per product and day with sales or engagement: units, revenue (cents) and distinct orders over
-- the lines of net-status orders placed that day, and the day's product_view / add_to_cart events. The
-- input of product_performance, which sums a product's days (an order falls on one day, so summing its
-- days' distinct orders counts each order once).
-- Incremental: a run rebuilds its days. A product that had activity on a rebuilt day and has none there any
-- more keeps a zero row for that day, so that product_performance still sees that the product changed.
{{ config(replace_days='activity_date') }}

with net_sales as (
    select
        items.order_date as activity_date,
        items.product_id,
        sum(items.quantity) as units_sold,
        sum(items.line_total_cents) as revenue_cents,
        count(distinct items.order_id) as orders_count
    from {{ ref('stg_order_items') }} as items
    inner join {{ ref('int_order_totals') }} as orders on orders.order_id = items.order_id
    where orders.is_net
        and {{ in_run_days('items.order_date') }}
        and {{ in_run_days('orders.order_date') }}
    group by items.order_date, items.product_id
),

engagement as (
    select
        event_date as activity_date,
        product_id,
        count(*) filter (where event_type = 'product_view') as product_views,
        count(*) filter (where event_type = 'add_to_cart') as add_to_carts
    from {{ ref('stg_web_events') }}
    where product_id is not null
        and {{ in_run_days('event_date') }}
    group by event_date, product_id
),

product_days as (
    select
        activity_date,
        product_id,
        cast(coalesce(net_sales.units_sold, 0) as bigint) as units_sold,
        cast(coalesce(net_sales.revenue_cents, 0) as bigint) as revenue_cents,
        cast(coalesce(net_sales.orders_count, 0) as bigint) as orders_count,
        cast(coalesce(engagement.product_views, 0) as bigint) as product_views,
        cast(coalesce(engagement.add_to_carts, 0) as bigint) as add_to_carts
    from net_sales
    full outer join engagement using (activity_date, product_id)
)

select * from product_days
{% if is_incremental() %}
union all
select
    previous.activity_date,
    previous.product_id,
    cast(0 as bigint) as units_sold,
    cast(0 as bigint) as revenue_cents,
    cast(0 as bigint) as orders_count,
    cast(0 as bigint) as product_views,
    cast(0 as bigint) as add_to_carts
from {{ this }} as previous
anti join product_days using (activity_date, product_id)
where {{ in_run_days('previous.activity_date') }}
{% endif %}
