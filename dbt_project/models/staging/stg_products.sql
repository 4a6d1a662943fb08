-- Latest version of every product (the nightly inventory sync writes all products every day).
-- Incremental: a run recomputes the products with a version (or a tombstone of one) on one of its days, from
-- all their versions; one that has no version left is deleted (its row came from a rebuilt day).
{{ config(unique_key='product_id', replace_days='_partition_date') }}

with versions as (
    select * from {{ ref('stg_product_versions') }}
)

select * from versions
where updated_at is not null
{% if is_incremental() %}
    and product_id in (select product_id from versions where {{ in_run_days('_partition_date') }})
{% endif %}
{{ latest_per_key('product_id') }}
