"""The raw layer's storage: where committed partitions, their quarantine and the load ledger live
(`raw_store`, written by `partition_writer`, recorded by `manifest`, made durable by `durable_files`, with the
copy classification of `dedupe` and the partition locks of `file_lock`).

Two implementations of one interface (the commit and the reads that `loading`, `ingestion`, `changes` and the
checks use), selected by configuration (`PIPELINE_PROFILE`):

- `embedded` (the default, `make run`, `make dev`): `pipeline_project.lake.raw_store.Lake`, Parquet files and JSON
  manifests on a local filesystem, committed with `flock` and atomic renames.
- `production`: `pipeline_project.lake.ducklake_store.DuckLakeStore`, tables of a DuckLake whose catalog is in
  PostgreSQL and whose data files are under a configurable data path (a local directory, a shared filesystem,
  or S3-compatible object storage), each partition committed as one DuckLake transaction together with its
  ledger row; no reliance on `flock` or atomic renames.

Both keep the load sequence of `pipeline_project.ingest.loading` (stage, dedupe, reconcile, then commit or reject).
"""
