-- Every version of every customer: one row per customer and raw partition (day the version was written). The
-- input of stg_customers (the latest version) and customers_snapshot (the SCD2 history).
-- Incremental: a run rebuilds the partitions of its days, replacing them whole. A version that went away
-- from a rebuilt day (quarantined or deleted when the day was re-extracted) leaves a tombstone, a row with
-- only its key and day (updated_at null), so that the models built from the versions still see that this
-- customer changed on that day; they read real versions only (updated_at is not null).
{{ config(replace_days='_partition_date') }}

with source as (
    select * from {{ raw_source('customers') }}
    where {{ in_run_days('"date"') }}
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
),

versions as (
    select * from typed
    {{ latest_per_key('customer_id, _partition_date') }}
)

select * from versions
{% if is_incremental() %}
union all by name
select previous.customer_id, previous._partition_date
from {{ this }} as previous
anti join versions using (customer_id, _partition_date)
where {{ in_run_days('previous._partition_date') }}
{% endif %}
