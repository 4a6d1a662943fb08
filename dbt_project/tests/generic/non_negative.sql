{#
  Fails for every row whose column is negative (nulls pass; combine with not_null where needed).
  Usage:  data_tests: [non_negative]
#}
{% test non_negative(model, column_name) %}
select {{ column_name }} as failing_value
from {{ model }}
where {{ column_name }} < 0
{% endtest %}
