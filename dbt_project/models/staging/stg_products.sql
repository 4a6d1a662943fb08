-- Latest version of every product (the nightly inventory sync writes all products every day).
-- Incremental: a run recomputes the products that have a version on one of its days, or whose latest
-- version came from one of them (so a version that vanished from a rebuilt day is replaced or removed).
{{ config(unique_key='product_id', replace_days='_partition_date') }}

with versions as (
    select * from {{ ref('stg_product_versions') }}
)

{% if is_incremental() %}
, touched as (
    select product_id from versions where {{ in_run_days('_partition_date') }}
    union
    select product_id from {{ this }} where {{ in_run_days('_partition_date') }}
)
{% endif %}

select * from versions
{% if is_incremental() %}
where product_id in (select product_id from touched)
{% endif %}
{{ latest_per_key('product_id') }}
