-- One row per order: order header + totals over its lines + the status flags the marts filter on.
-- Orders without any line (possible when all lines were quarantined) get zero totals.
-- Incremental: a run rebuilds the orders placed on its days (an order's lines share its order day).
{{ config(replace_days='order_date') }}

with orders as (
    select * from {{ ref('stg_orders') }}
    where {{ in_run_days('order_date') }}
),

line_totals as (
    select
        order_id,
        count(*) as line_count,
        sum(quantity) as items_quantity,
        sum(line_total_cents) as order_total_cents
    from {{ ref('stg_order_items') }}
    where {{ in_run_days('order_date') }}
    group by order_id
),

joined as (
    select
        orders.order_id,
        orders.customer_id,
        orders.order_status,
        orders.channel,
        orders.currency,
        orders.ordered_at,
        orders.order_date,
        cast(coalesce(line_totals.line_count, 0) as bigint) as line_count,
        cast(coalesce(line_totals.items_quantity, 0) as bigint) as items_quantity,
        cast(coalesce(line_totals.order_total_cents, 0) as bigint) as order_total_cents,
        orders.order_status in {{ billable_order_statuses() }} as is_billable,
        orders.order_status in {{ net_order_statuses() }} as is_net,
        orders.order_status = 'refunded' as is_refunded
    from orders
    left join line_totals on line_totals.order_id = orders.order_id
)

select
    order_id,
    customer_id,
    order_status,
    channel,
    currency,
    ordered_at,
    order_date,
    line_count,
    items_quantity,
    order_total_cents,
    {{ cents_to_currency('order_total_cents') }} as order_total,
    is_billable,
    is_net,
    is_refunded
from joined
