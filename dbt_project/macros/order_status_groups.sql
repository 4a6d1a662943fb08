{#
  Order status groups from the mart definitions in demo_source/DATA_SPEC.md (single source of truth for every model):
  billable = paid, shipped, delivered, refunded; net = paid, shipped, delivered.
#}
{% macro billable_order_statuses() -%}
    ('paid', 'shipped', 'delivered', 'refunded')
{%- endmacro %}

{% macro net_order_statuses() -%}
    ('paid', 'shipped', 'delivered')
{%- endmacro %}
