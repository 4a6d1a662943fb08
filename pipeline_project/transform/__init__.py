"""dbt and the warehouse: the dbt project handle (`project`), the partitioned dbt assets (`dbt_assets`), the
days a build takes in (`dbt_days`) and read access to the DuckDB warehouse (`warehouse`)."""
