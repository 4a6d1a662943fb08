{#
  The days a build processes ("the run's days"), so that a day's run costs the same however long the history.

  Dagster hands them over in the environment variable PIPELINE_DBT_DAYS (comma-separated ISO dates: the
  run's partition window plus every day whose raw partitions changed since the warehouse last took them in,
  see pipeline_project/transform/dbt_days.py); by hand they can be given as `--vars '{days: [2026-03-20]}'`. The
  variable is read only while models execute (`execute`), so a new list of days does not make dbt re-parse
  the project, as a changed --vars would (about 3 s per run).

  Without days, a build processes every day: the first build of a model, `--full-refresh`, or a hand-run
  `dbt build`. Day-keyed models are rebuilt a day at a time (the raw partition of day D holds the records
  whose business day is D: orders and order items of orders placed on D, payments made on D, web events of
  D, customer and product versions written on D); models keyed by customer or product are rebuilt for the
  keys those days touched.
#}
{% macro run_days() -%}
    {%- set days = var('days', none) -%}
    {%- if days is none and execute -%}
        {%- set listed = env_var('PIPELINE_DBT_DAYS', '') | trim -%}
        {%- if listed -%}
            {%- set days = listed.split(',') -%}
        {%- endif -%}
    {%- endif -%}
    {%- if days is string -%}
        {%- set days = days.split(',') -%}
    {%- endif -%}
    {%- if days is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set checked = [] -%}
    {%- for day in days -%}
        {%- set day = day | string | trim -%}
        {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', day) -%}
            {{ exceptions.raise_compiler_error("run days must be YYYY-MM-DD dates, got " ~ day) }}
        {%- endif -%}
        {%- do checked.append(day) -%}
    {%- endfor -%}
    {{ return(checked | unique | sort | list) }}
{%- endmacro %}


{#
  SQL condition: `column` is one of the run's days, when this build of the model processes only them (it is
  incremental and was given days); `true` otherwise (the first build, a full refresh, no days given).
#}
{% macro in_run_days(column) -%}
    {%- set days = run_days() -%}
    {%- if not is_incremental() or days is none -%}
        true
    {%- elif days | length == 0 -%}
        false
    {%- else -%}
        {{ column }} in ({% for day in days %}date '{{ day }}'{{ ", " if not loop.last }}{% endfor %})
    {%- endif -%}
{%- endmacro %}
