-- One row per customer (latest customers version); lifetime figures over net-status orders only.
-- Incremental: a run recomputes the customers it touched: those with orders on its days (in
-- int_customer_order_days, which keeps a zero row where a customer's orders went away) and those with a
-- version on its days (in stg_customer_versions, which keeps a tombstone where a version went away); the
-- post-hook deletes the row of a touched customer who has no version left.
-- depends_on: {{ ref('stg_customer_versions') }}
{{
    config(
        unique_key='customer_id',
        post_hook="{{ delete_entities_without_version('customer_id', 'stg_customer_versions', 'stg_customers') }}",
    )
}}

with customers as (
    select * from {{ ref('stg_customers') }}
),

order_days as (
    select * from {{ ref('int_customer_order_days') }}
),

{% if is_incremental() %}
touched as (
    {{ touched_entities('customer_id', 'order_days', 'order_date', 'stg_customer_versions') }}
),
{% endif %}

net_orders as (
    select
        customer_id,
        sum(net_orders_count) as orders_count,
        sum(net_revenue_cents) as lifetime_revenue_cents,
        min(first_net_order_at) as first_order_at,
        max(last_net_order_at) as last_order_at
    from order_days
    {% if is_incremental() %}
    where customer_id in (select customer_id from touched)
    {% endif %}
    group by customer_id
    having sum(net_orders_count) > 0
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
{% if is_incremental() %}
where customers.customer_id in (select customer_id from touched)
{% endif %}
order by customers.customer_id
