{#
  QUALIFY clause that keeps one row per primary key: the same record can be ingested in several daily
  partitions (re-extracted after a change, or re-run partitions), so keep the latest version by
  `order_by` (default: latest updated_at, then latest _loaded_at, then latest batch id as a deterministic
  final tie-break).
#}
{% macro latest_per_key(key, order_by="updated_at desc, _loaded_at desc, _batch_id desc") -%}
    qualify row_number() over (partition by {{ key }} order by {{ order_by }}) = 1
{%- endmacro %}
