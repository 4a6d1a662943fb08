{#
  Row-level assertion: fails for every row where `expression` is false or null.
  Usage (model level):
    data_tests:
      - expression_is_true:
          arguments:
            expression: "net_revenue = gross_revenue - refunded_revenue"
  Used at column level, the column name is prefixed to the expression (e.g. expression: "> 0").
#}
{% test expression_is_true(model, expression, column_name=none) %}
select *
from {{ model }}
{% if column_name is none -%}
where not coalesce(({{ expression }}), false)
{%- else -%}
where not coalesce(({{ column_name }} {{ expression }}), false)
{%- endif %}
{% endtest %}
