-- The DuckLake catalog's database, beside the Dagster instance's (compose.yaml mounts this into the
-- postgres image's /docker-entrypoint-initdb.d, which runs it once, on an empty data directory).
create database ducklake owner dagster;
