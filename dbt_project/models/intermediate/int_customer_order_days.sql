-- One row per customer and order day: the customer's net-status orders placed that day (count, total,
-- first and last time; 0 and null when all of the day's orders are in other statuses). The input of
-- customer_lifetime_value, which sums a customer's days.
-- Incremental: a run rebuilds its days. A customer who had orders on a rebuilt day and has none there any
-- more (an order removed or moved to another customer) keeps a zero row for that day, so that
-- customer_lifetime_value still sees that the customer changed; zero rows add nothing to any sum.
{{ config(replace_days='order_date') }}

with orders as (
    select * from {{ ref('int_order_totals') }}
    where {{ in_run_days('order_date') }}
),

order_days as (
    select
        order_date,
        customer_id,
        cast(count(*) filter (where is_net) as bigint) as net_orders_count,
        cast(coalesce(sum(order_total_cents) filter (where is_net), 0) as bigint) as net_revenue_cents,
        min(ordered_at) filter (where is_net) as first_net_order_at,
        max(ordered_at) filter (where is_net) as last_net_order_at
    from orders
    group by order_date, customer_id
)

select * from order_days
{% if is_incremental() %}
union all
select
    previous.order_date,
    previous.customer_id,
    cast(0 as bigint) as net_orders_count,
    cast(0 as bigint) as net_revenue_cents,
    cast(null as timestamp) as first_net_order_at,
    cast(null as timestamp) as last_net_order_at
from {{ this }} as previous
anti join order_days using (order_date, customer_id)
where {{ in_run_days('previous.order_date') }}
{% endif %}
