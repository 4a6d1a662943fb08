-- Latest version of every customer (raw customers hold one version per customer and day).
-- Full history is kept by customers_snapshot (SCD2), built from the same versions.
-- Incremental: a run recomputes the customers that have a version on one of its days, or whose latest
-- version came from one of them (so a version that vanished from a rebuilt day is replaced or removed).
{{ config(unique_key='customer_id', replace_days='_partition_date') }}

with versions as (
    select * from {{ ref('stg_customer_versions') }}
)

{% if is_incremental() %}
, touched as (
    select customer_id from versions where {{ in_run_days('_partition_date') }}
    union
    select customer_id from {{ this }} where {{ in_run_days('_partition_date') }}
)
{% endif %}

select * from versions
{% if is_incremental() %}
where customer_id in (select customer_id from touched)
{% endif %}
{{ latest_per_key('customer_id') }}
