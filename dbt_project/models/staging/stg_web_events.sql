-- One row per web event. Events are immutable (no updated_at): a duplicate (re-landed) event keeps the
-- latest loaded copy. Incremental: a run rebuilds the partitions of its days.
{{ config(replace_days='_partition_date') }}

with source as (
    select * from {{ raw_source('web_events') }}
    where {{ in_run_days('"date"') }}
),

typed as (
    select
        cast(event_id as varchar) as event_id,
        cast(session_id as varchar) as session_id,
        cast(customer_id as bigint) as customer_id,
        cast(event_type as varchar) as event_type,
        cast(product_id as bigint) as product_id,
        cast(page_path as varchar) as page_path,
        cast(occurred_at as timestamp) as occurred_at,
        cast(cast(occurred_at as timestamp) as date) as event_date,
        cast(_partition_date as date) as _partition_date,
        cast(_batch_id as varchar) as _batch_id,
        cast(_loaded_at as timestamp) as _loaded_at
    from source
)

select * from typed
{{ latest_per_key('event_id', order_by='_loaded_at desc, _batch_id desc, occurred_at desc') }}
