-- One row per web session with a flag per funnel step: has_<step> is true when the session has at least
-- one event of that type (the data spec's definition for web_funnel; steps are not required to be in order).
-- Incremental: a run rebuilds the sessions of its days (all events of a session fall on one UTC day).
{{ config(replace_days='session_date') }}

with events as (
    select * from {{ ref('stg_web_events') }}
    where {{ in_run_days('event_date') }}
),

sessions as (
    select
        session_id,
        -- a session belongs to one customer or is anonymous (null)
        max(customer_id) as customer_id,
        min(occurred_at) as session_started_at,
        max(occurred_at) as session_ended_at,
        count(*) as events_count,
        bool_or(event_type = 'page_view') as has_page_view,
        bool_or(event_type = 'product_view') as has_product_view,
        bool_or(event_type = 'add_to_cart') as has_add_to_cart,
        bool_or(event_type = 'checkout_started') as has_checkout_started,
        bool_or(event_type = 'purchase') as has_purchase
    from events
    group by session_id
)

select
    session_id,
    customer_id,
    -- all events of a session fall on the same UTC day (data spec); tested on session_ended_at below
    cast(session_started_at as date) as session_date,
    session_started_at,
    session_ended_at,
    cast(events_count as bigint) as events_count,
    has_page_view,
    has_product_view,
    has_add_to_cart,
    has_checkout_started,
    has_purchase,
    case
        when has_purchase then 'purchase'
        when has_checkout_started then 'checkout_started'
        when has_add_to_cart then 'add_to_cart'
        when has_product_view then 'product_view'
        else 'page_view'
    end as furthest_step
from sessions
