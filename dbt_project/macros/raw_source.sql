{#
  A raw table of the lake, as a relation to select from: `{{ raw_source('orders') }}` in place of
  `{{ source('raw', 'orders') }}` (which it calls, so the lineage stays the source's).

  When the model is built for the run's days only, only those days' partition files are read: a
  read_parquet over the files that exist under `raw/<table>/date=<day>/`, found with DuckDB's glob at run
  time. The source's own read_parquet over `raw/<table>/*/*.parquet` would list every partition and, with
  union_by_name, read the footer of every file (0.15 s per table after a year). Otherwise (first build, full
  refresh, no days) it is the source itself. The partitions' location comes from the source's
  external_location in _sources.yml. In the production profile the source is a DuckLake table, not files:
  it is returned as it is, and the model's own filter on the day selects the partitions.
#}
{% macro raw_source(table) -%}
    {%- set relation = source('raw', table) -%}
    {%- set days = run_days() -%}
    {%- if not execute or not is_incremental() or days is none -%}
        {{ return(relation) }}
    {%- endif -%}
    {%- set location = modules.re.search("read_parquet\\('([^']+)/\\*/\\*\\.parquet'", relation | string) -%}
    {%- if location is none and (relation | string).startswith('(select *, _partition_date as "date" from lake.raw.') -%}
        {{ return(relation) }}
    {%- endif -%}
    {%- if location is none -%}
        {{ exceptions.raise_compiler_error("raw_source: cannot find the partitions' path in " ~ relation) }}
    {%- endif -%}
    {%- set globs = [] -%}
    {%- for day in days -%}
        {%- do globs.append("select file from glob('" ~ location.group(1) ~ "/date=" ~ day ~ "/*.parquet')") -%}
    {%- endfor -%}
    {%- set files = run_query(globs | join(" union all ") ~ " order by file").columns[0].values() if globs else [] -%}
    {%- if files | length == 0 -%}
        {{ return("(select * from " ~ relation ~ " where false)") }}
    {%- endif -%}
    {%- set quoted = [] -%}
    {%- for file in files -%}
        {%- do quoted.append("'" ~ file | replace("'", "''") ~ "'") -%}
    {%- endfor -%}
    {{ return("read_parquet([" ~ quoted | join(", ") ~ "], union_by_name = true, hive_partitioning = true)") }}
{%- endmacro %}
