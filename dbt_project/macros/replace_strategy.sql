{#
  Incremental strategy `replace`: delete+insert of exactly what this build of the model rebuilt, in one
  transaction (a build that fails or is killed leaves the previous table).

  - Day-keyed models (config `replace_days: <day column>`, no unique_key): delete the rows of the run's
    days, insert the rebuilt days. Unlike dbt's own delete+insert, which deletes only the keys present in
    the new rows, a day that has no rows any more (its records were all removed) is emptied too.
  - Key models (config `unique_key`, optionally `replace_days` naming a day column of the table itself):
    delete the rows of every key that was rebuilt and of every key that had a row on one of the run's
    days, insert the rebuilt rows. So a key whose data moved away from, or vanished from, a rebuilt day
    is recomputed or removed. Models whose keys can vanish otherwise remove them in a post-hook.
#}
{% macro get_incremental_replace_sql(arg_dict) -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set source = arg_dict['temp_relation'] -%}
    {%- set unique_key = arg_dict['unique_key'] -%}
    {%- set day_column = config.get('replace_days') -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    {%- if not unique_key and not day_column -%}
        {{ exceptions.raise_compiler_error("incremental_strategy 'replace' needs unique_key or replace_days in " ~ this) }}
    {%- endif -%}
    delete from {{ target }}
    where
    {%- if unique_key %}
        {{ unique_key }} in (
            select {{ unique_key }} from {{ source }}
            {%- if day_column %}
            union
            select {{ unique_key }} from {{ target }} where {{ in_run_days(day_column) }}
            {%- endif %}
        )
    {%- else %}
        {{ in_run_days(day_column) }}
    {%- endif %};

    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ source }}
{%- endmacro %}
