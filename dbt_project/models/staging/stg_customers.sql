-- Latest version of every customer (raw customers hold one version per customer and day).
-- Full history is kept by the customers_snapshot (SCD2) built on top of this model.
with source as (
    select * from {{ source('raw', 'customers') }}
),

typed as (
    select
        cast(customer_id as bigint) as customer_id,
        cast(email as varchar) as email,
        cast(full_name as varchar) as full_name,
        cast(country as varchar) as country,
        cast(city as varchar) as city,
        cast(loyalty_tier as varchar) as loyalty_tier,
        cast(marketing_opt_in as boolean) as marketing_opt_in,
        cast(signup_at as timestamp) as signup_at,
        cast(updated_at as timestamp) as updated_at,
        cast(_partition_date as date) as _partition_date,
        cast(_batch_id as varchar) as _batch_id,
        cast(_loaded_at as timestamp) as _loaded_at
    from source
)

select * from typed
{{ latest_per_key('customer_id') }}
