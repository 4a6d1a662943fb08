-- One row per order_date (UTC date of ordered_at). Money is summed in integer cents and converted once.
-- Incremental: a run rebuilds its days from all orders of those days in their latest status.
{{ config(replace_days='order_date') }}

with orders as (
    select * from {{ ref('int_order_totals') }}
    where {{ in_run_days('order_date') }}
),

daily as (
    select
        order_date,
        count(*) as orders_count,
        count(*) filter (where is_billable) as billable_orders_count,
        coalesce(sum(items_quantity) filter (where is_billable), 0) as items_sold,
        coalesce(sum(order_total_cents) filter (where is_billable), 0) as gross_revenue_cents,
        coalesce(sum(order_total_cents) filter (where is_refunded), 0) as refunded_revenue_cents,
        count(distinct customer_id) as customers_count
    from orders
    group by order_date
)

select
    order_date,
    cast(orders_count as bigint) as orders_count,
    cast(billable_orders_count as bigint) as billable_orders_count,
    cast(items_sold as bigint) as items_sold,
    {{ cents_to_currency('gross_revenue_cents') }} as gross_revenue,
    {{ cents_to_currency('refunded_revenue_cents') }} as refunded_revenue,
    {{ cents_to_currency('gross_revenue_cents - refunded_revenue_cents') }} as net_revenue,
    {{ safe_average_cents('gross_revenue_cents', 'billable_orders_count') }} as average_order_value,
    cast(customers_count as bigint) as customers_count
from daily
order by order_date
