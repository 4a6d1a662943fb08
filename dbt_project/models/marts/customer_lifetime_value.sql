-- One row per customer (latest customers version); lifetime figures over net-status orders only.
with customers as (
    select * from {{ ref('stg_customers') }}
),

net_orders as (
    select
        customer_id,
        count(*) as orders_count,
        sum(order_total_cents) as lifetime_revenue_cents,
        min(ordered_at) as first_order_at,
        max(ordered_at) as last_order_at
    from {{ ref('int_order_totals') }}
    where is_net
    group by customer_id
)

select
    customers.customer_id,
    customers.email,
    customers.country,
    customers.loyalty_tier,
    cast(coalesce(net_orders.orders_count, 0) as bigint) as orders_count,
    {{ cents_to_currency('coalesce(net_orders.lifetime_revenue_cents, 0)') }} as lifetime_revenue,
    net_orders.first_order_at,
    net_orders.last_order_at,
    {{ safe_average_cents('net_orders.lifetime_revenue_cents', 'net_orders.orders_count') }} as average_order_value
from customers
left join net_orders on net_orders.customer_id = customers.customer_id
order by customers.customer_id
