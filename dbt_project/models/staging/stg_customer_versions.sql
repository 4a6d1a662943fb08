-- Every version of every customer: one row per customer and raw partition (day the version was written). The
-- input of stg_customers (the latest version) and customers_snapshot (the SCD2 history).
-- Incremental by day, with tombstones for versions that went away (macros/entity_versions.sql).
{{ config(replace_days='_partition_date') }}

{% call dimension_versions('customers', 'customer_id') %}
    cast(customer_id as bigint) as customer_id,
    cast(email as varchar) as email,
    cast(full_name as varchar) as full_name,
    cast(country as varchar) as country,
    cast(city as varchar) as city,
    cast(loyalty_tier as varchar) as loyalty_tier,
    cast(marketing_opt_in as boolean) as marketing_opt_in,
    cast(signup_at as timestamp) as signup_at,
{% endcall %}
