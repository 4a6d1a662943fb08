"""Observability: what the pipeline looks like from outside, for Prometheus, Grafana and log shippers.

- `exporter.py`: the Prometheus exporter process (`python -m pipeline_project.observability.exporter`),
  its settings, the scrape cache and the HTTP endpoint.
- `freshness.py`, `runs.py`, `checks.py`: what the Dagster instance says (freshness state and lag per
  asset; run outcomes and durations per job; asset check results by severity).
- `ledger.py`: what the load ledger (the raw layer's partition manifests) says: rows loaded, quarantined
  and dropped as copies per table and partition.
- `monitoring.py`: whether the alerting is itself healthy: outbox backlog, delivery failures, heartbeat.
- `logging.py`: JSON-lines logging for every process, with run, step, asset and partition ids, scrubbed.
- `process.py`: the exporter as a child process of `make dev`.
- `prometheus/`: alert and recording rules with their `promtool test rules` unit tests, a scrape config.
- `grafana/`: the dashboard (JSON ready for provisioning) and its provisioning file.

Monitoring reads and never writes: events and records of the Dagster instance through its public API,
manifest files, and the alert outbox opened read-only. Nothing here imports asset code.
"""
