-- One row per event_date (UTC date of occurred_at): distinct sessions overall and per funnel step.
-- Incremental: a run rebuilds its days.
{{ config(replace_days='event_date') }}

with sessions as (
    select * from {{ ref('int_session_funnel') }}
    where {{ in_run_days('session_date') }}
),

daily as (
    select
        session_date as event_date,
        count(*) as sessions,
        count(*) filter (where has_product_view) as product_view_sessions,
        count(*) filter (where has_add_to_cart) as add_to_cart_sessions,
        count(*) filter (where has_checkout_started) as checkout_sessions,
        count(*) filter (where has_purchase) as purchase_sessions
    from sessions
    group by session_date
)

select
    event_date,
    cast(sessions as bigint) as sessions,
    cast(product_view_sessions as bigint) as product_view_sessions,
    cast(add_to_cart_sessions as bigint) as add_to_cart_sessions,
    cast(checkout_sessions as bigint) as checkout_sessions,
    cast(purchase_sessions as bigint) as purchase_sessions,
    cast(purchase_sessions as double) / sessions as conversion_rate
from daily
order by event_date
