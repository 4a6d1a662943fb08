{#
  The incremental pattern of the models keyed by an entity (a customer, a product) rather than by a day.

  dimension_versions(table, key): every version of every entity, one row per key and raw partition (the day
  the version was written), built for the run's days and replacing those days whole. A version that went
  away from a rebuilt day (quarantined or deleted when the day was re-extracted) leaves a tombstone, a row
  with only its key and day (updated_at null), so that the models built from the versions still see that
  the entity changed on that day; they read real versions only (updated_at is not null). The call block
  lists the table's own typed columns, each followed by a comma:

      {% call dimension_versions('customers', 'customer_id') %}
          cast(customer_id as bigint) as customer_id,
      {% endcall %}

  touched_entities(key, activity, activity_date, versions_model): the keys a run recomputes: those with
  activity on its days (`activity`, a relation with the key and `activity_date`, keeps a zero row where an
  entity's activity went away) and those with a version or tombstone on its days.

  delete_entities_without_version(key, versions_model, current_model): the post-hook that deletes the row
  of a touched entity that has no version left.
#}
{% macro dimension_versions(table, key) -%}
with source as (
    select * from {{ raw_source(table) }}
    where {{ in_run_days('"date"') }}
),

typed as (
    select
        {{ caller() }}
        cast(updated_at as timestamp) as updated_at,
        cast(_partition_date as date) as _partition_date,
        cast(_batch_id as varchar) as _batch_id,
        cast(_loaded_at as timestamp) as _loaded_at
    from source
),

versions as (
    select * from typed
    {{ latest_per_key(key ~ ', _partition_date') }}
)

select * from versions
{% if is_incremental() %}
union all by name
select previous.{{ key }}, previous._partition_date
from {{ this }} as previous
anti join versions using ({{ key }}, _partition_date)
where {{ in_run_days('previous._partition_date') }}
{% endif %}
{%- endmacro %}


{% macro touched_entities(key, activity, activity_date, versions_model) -%}
    select {{ key }} from {{ activity }} where {{ in_run_days(activity_date) }}
    union
    select {{ key }} from {{ ref(versions_model) }} where {{ in_run_days('_partition_date') }}
{%- endmacro %}


{% macro delete_entities_without_version(key, versions_model, current_model) -%}
    {%- if is_incremental() -%}
        delete from {{ this }}
        where {{ key }} in (
            select {{ key }} from {{ ref(versions_model) }} where {{ in_run_days('_partition_date') }}
        )
        and {{ key }} not in (select {{ key }} from {{ ref(current_model) }})
    {%- endif -%}
{%- endmacro %}
