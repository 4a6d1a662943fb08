{#
  Integer cents -> currency units as DECIMAL(18,2), exactly (no floating point on the way):
  cents are cast to DECIMAL(18,0) and scaled by 0.01. Works for column expressions and aggregates
  (e.g. cents_to_currency('sum(line_total_cents)')).
#}
{% macro cents_to_currency(cents_expression) -%}
    cast(cast({{ cents_expression }} as decimal(18, 0)) * 0.01 as decimal(18, 2))
{%- endmacro %}
