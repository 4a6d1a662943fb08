-- SCD type 2 history of customers: one row per customer version, valid from its updated_at until the next
-- version's (dbt_valid_to null for the current one), with the columns of a dbt snapshot on stg_customers
-- (timestamp strategy on updated_at, unique_key customer_id).
--
-- Built from every version the raw layer holds (stg_customer_versions: one per customer and day) instead of
-- by dbt's snapshot, which compares the latest version with the table's current rows at each run: the
-- history is then a function of the raw data, so a run reads only the customers it touched, a late change
-- to an old day rewrites exactly the history it changes, and day-by-day runs equal one full rebuild.
-- Incremental: a run rebuilds the whole history of every customer with a version (or a tombstone of one)
-- on one of its days; a customer with no version left loses their rows (they had one on a rebuilt day).
{{ config(unique_key='customer_id', replace_days='_partition_date') }}

with versions as (
    select * from {{ ref('stg_customer_versions') }}
)


select
    customer_id,
    email,
    full_name,
    country,
    city,
    loyalty_tier,
    marketing_opt_in,
    signup_at,
    updated_at,
    _partition_date,
    _batch_id,
    _loaded_at,
    md5(coalesce(cast(customer_id as varchar), '') || '|' || coalesce(cast(updated_at as varchar), '')) as dbt_scd_id,
    updated_at as dbt_updated_at,
    updated_at as dbt_valid_from,
    lead(updated_at) over (partition by customer_id order by updated_at, _partition_date) as dbt_valid_to
from versions
where updated_at is not null
{% if is_incremental() %}
    and customer_id in (select customer_id from versions where {{ in_run_days('_partition_date') }})
{% endif %}
