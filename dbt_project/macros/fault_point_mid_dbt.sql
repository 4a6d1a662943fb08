{#
  Test-only crash point `mid_dbt` (see pipeline_project/fault_points.py), a post-hook of the mart models.
  With PIPELINE_FAULT_POINT=mid_dbt, once a mart has been rebuilt and swapped in inside its still open
  transaction, it writes `<warehouse>.mid_dbt.reached` and then blocks in a query that would run for days,
  so that the harness which armed the point can SIGKILL the run, dbt included, at exactly this moment (SQL
  cannot send a signal). Otherwise (PIPELINE_FAULT_POINT unset, as in every deployment, or naming another
  point) it renders nothing, and dbt runs no statement for a hook that renders empty: a production build of
  a mart executes no SQL of it. tests/faults/test_crash_points.py compiles the hook unarmed to prove it.
#}
{% macro fault_point_mid_dbt() -%}
  {%- if env_var('PIPELINE_FAULT_POINT', '') == 'mid_dbt' -%}
    copy (select '{{ this }}' as rebuilt_mart) to '{{ env_var("PIPELINE_WAREHOUSE_PATH") }}.mid_dbt.reached' (format csv);
    select sum(range) from range(1000000000000000)
  {%- endif -%}
{%- endmacro %}
