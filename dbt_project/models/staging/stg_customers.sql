-- Latest version of every customer (raw customers hold one version per customer and day).
-- Full history is kept by customers_snapshot (SCD2), built from the same versions.
-- Incremental: a run recomputes the customers with a version (or a tombstone of one) on one of its days, from
-- all their versions; one that has no version left is deleted (its row came from a rebuilt day).
{{ config(unique_key='customer_id', replace_days='_partition_date') }}

with versions as (
    select * from {{ ref('stg_customer_versions') }}
)

select * from versions
where updated_at is not null
{% if is_incremental() %}
    and customer_id in (select customer_id from versions where {{ in_run_days('_partition_date') }})
{% endif %}
{{ latest_per_key('customer_id') }}
