{#
  Average of an integer-cents total over a count, rounded half-up to whole cents with exact integer
  arithmetic and returned as DECIMAL(18,2) currency units; null when the count is 0 (or null).
  Assumes a non-negative total (money totals here are sums of non-negative line totals).
#}
{% macro safe_average_cents(total_cents, count) -%}
    case
        when coalesce({{ count }}, 0) = 0 then null
        else {{ cents_to_currency('(2 * (' ~ total_cents ~ ') + (' ~ count ~ ')) // (2 * (' ~ count ~ '))') }}
    end
{%- endmacro %}
