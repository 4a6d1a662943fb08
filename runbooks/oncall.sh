# Helpers the runbooks use, for bash. From the repository root:   source runbooks/oncall.sh
#
# Paths follow the pipeline's own settings (.env.example): variables already set in your shell win, then
# .env, then the local defaults under .state (what `make run` and `make dev` use). Every helper only reads
# (the lake, the warehouse, the Dagster instance, the alert outbox), except `pipeline_dagster`, which is the
# dagster CLI and does what you ask of it.

if [ ! -x .venv/bin/python ]; then
  echo "oncall.sh: run this from the repository root, after 'make install'" >&2
  return 1 2>/dev/null || exit 1
fi

# .env values for variables that are still unset (the rule `make run` follows); values are never printed.
eval "$(.venv/bin/python -c '
import os, shlex
from dotenv import dotenv_values
for name, value in (dotenv_values(".env") if os.path.exists(".env") else {}).items():
    if value and not os.environ.get(name):
        print(f"export {name}={shlex.quote(value)}")
')"

export PIPELINE_STATE_DIR="$(realpath -m "${PIPELINE_STATE_DIR:-.state}")"
export PIPELINE_LAKE_DIR="${PIPELINE_LAKE_DIR:-$PIPELINE_STATE_DIR/lake}"
export PIPELINE_WAREHOUSE_PATH="${PIPELINE_WAREHOUSE_PATH:-$PIPELINE_STATE_DIR/warehouse.duckdb}"
export LANDING_DIR="${LANDING_DIR:-$PIPELINE_STATE_DIR/landing}"
export DAGSTER_HOME="${DAGSTER_HOME:-$PIPELINE_STATE_DIR/dagster_home}"
export ALERT_DIR="${ALERT_DIR:-$PIPELINE_STATE_DIR/alerts}"
export DAGSTER_WEBSERVER_URL="${DAGSTER_WEBSERVER_URL:-http://127.0.0.1:3000}"
STATE="$PIPELINE_STATE_DIR"

# The dagster CLI with the source settings a run needs. In a deployment they are already set; locally they
# point at the demo source that `make dev` serves on 127.0.0.1:8765.
pipeline_dagster() {
  SHOP_API_URL="${SHOP_API_URL:-http://127.0.0.1:${SHOP_DEMO_PORT:-8765}}" \
    SHOP_API_TOKEN="${SHOP_API_TOKEN:-demo-token}" .venv/bin/dagster "$@"
}

# The latest runs (default 10): run id, job, status, start (UTC), partition or first day of a range.
pipeline_runs() {
  .venv/bin/python -W ignore -c '
import sys
from datetime import UTC, datetime
import dagster as dg
for record in dg.DagsterInstance.get().get_run_records(limit=int(sys.argv[1])):
    run, tags = record.dagster_run, record.dagster_run.tags
    started = datetime.fromtimestamp(record.start_time, UTC).strftime("%Y-%m-%d %H:%M") if record.start_time else "not started"
    partition = tags.get("dagster/partition") or tags.get("dagster/asset_partition_range_start", "-")
    print(run.run_id, f"{run.job_name:<14} {run.status.value:<9} {started:<16} {partition}")
' "${1:-10}"
}

# What went wrong in one run: each step failure, retry and the run failure, with the error and any
# metadata the failure carried (for example `schema_drift`).
run_errors() {
  .venv/bin/python -W ignore -c '
import sys
import dagster as dg
kinds = ("STEP_FAILURE", "STEP_UP_FOR_RETRY", "PIPELINE_CANCELING", "PIPELINE_CANCELED", "PIPELINE_FAILURE")
for entry in dg.DagsterInstance.get().all_logs(sys.argv[1]):
    event = entry.dagster_event
    if event is None or event.event_type_value not in kinds:
        continue
    data = event.event_specific_data
    error = getattr(data, "error", None)
    where = entry.step_key or "(run)"
    text = (error.message if error else event.message or "").strip()[:600]
    print(f"{event.event_type_value} {where}: {text}")
    user = getattr(data, "user_failure_data", None)
    for name, value in ((user.metadata or {}).items() if user else ()):
        print(f"    {name}:", getattr(value, "value", value))
' "$1"
}

# Asset checks evaluated in one run that failed (pass --all to list passing ones too), with key metadata.
run_checks() {
  .venv/bin/python -W ignore -c '
import sys
import dagster as dg
show_all = "--all" in sys.argv[2:]
keys = ("fail/", "dagster_dbt/failed_row_count", "partitions_failing", "rows_checked", "schema_drift", "sample")
for entry in dg.DagsterInstance.get().all_logs(sys.argv[1], of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
    check = entry.dagster_event.event_specific_data
    if check.passed and not show_all:
        continue
    print("pass" if check.passed else "FAIL", check.severity.value, check.asset_key.to_user_string(), check.check_name, check.partition or "")
    for name, value in check.metadata.items():
        if name.startswith(keys) and not check.passed:
            print(f"    {name}:", getattr(value, "value", value))
' "$@"
}

# Freshness state (PASS / WARN / FAIL) and hours since the last materialization of the given assets
# (default: the four marts).
freshness() {
  [ $# -gt 0 ] || set -- daily_revenue customer_lifetime_value product_performance web_funnel
  .venv/bin/python -W ignore -c '
import sys, time
import dagster as dg
instance = dg.DagsterInstance.get()
keys = [dg.AssetKey(name) for name in sys.argv[1:]]
states = instance.get_freshness_state_records(keys)
for key in keys:
    latest, state = instance.get_latest_materialization_event(key), states.get(key)
    age = f"last materialized {(time.time() - latest.timestamp) / 3600:.1f} h ago" if latest else "never materialized"
    label = state.freshness_state.value if state else "no state yet"
    print(f"{key.to_user_string():<26} {label:<13} {age}")
' "$@"
}

# Does every raw table's partition of one day reconcile? The same test as the `source_reconciled` check:
# source count = loaded + quarantined, and the files match the checksums and row counts of the manifest.
lake_verify() {
  .venv/bin/python -W ignore -c '
import os, sys
from datetime import date
from pipeline_project.contracts import RAW_CONTRACTS
from pipeline_project.raw_store import Lake
lake, day = Lake(os.environ["PIPELINE_LAKE_DIR"]), date.fromisoformat(sys.argv[1])
for table in sys.argv[2:] or RAW_CONTRACTS:
    manifest = lake.read_manifest(table, day)
    if manifest is None:
        print(f"{table:<12} NO MANIFEST (never loaded, or the load did not commit)")
        continue
    problems = lake.verify(manifest)
    counts = f"reported {manifest.source_reported_count} loaded {manifest.loaded_count} quarantined {manifest.quarantined_count}"
    verdict = "PROBLEM" if problems else "ok"
    print(f"{table:<12} {verdict:<8} {counts}  run {manifest.run_id[:8]}  committed {manifest.committed_at}")
    for problem in problems:
        print(f"    {problem}")
' "$@"
}

# The columns a source sends for TABLE on DAY (first 50 API records, or the first line of each landing
# file) against the table's raw contract:   source_columns orders 2026-11-21
source_columns() {
  SHOP_API_URL="${SHOP_API_URL:-http://127.0.0.1:${SHOP_DEMO_PORT:-8765}}" \
    SHOP_API_TOKEN="${SHOP_API_TOKEN:-demo-token}" .venv/bin/python -W ignore -c '
import json, os, sys
from datetime import date
from pathlib import Path
import httpx
from pipeline_project.contracts import RAW_CONTRACTS
from pipeline_project.ingestion import LANDING_TABLES
from pipeline_project.sources import day_filter, landing_files
table, day = sys.argv[1], date.fromisoformat(sys.argv[2])
if table in LANDING_TABLES:
    files = landing_files(Path(os.environ["LANDING_DIR"]), table, day)
    records = [next((json.loads(line) for line in path.open() if line.strip()), {}) for path in files]
else:
    response = httpx.get(
        os.environ["SHOP_API_URL"].rstrip("/") + f"/v1/{table}",
        params={**day_filter(table, day), "limit": 50},
        headers={"Authorization": "Bearer " + os.environ["SHOP_API_TOKEN"]},
        timeout=30,
    )
    response.raise_for_status()
    records = response.json()["data"]
seen = {}
for record in records:
    for name, value in record.items():
        seen.setdefault(name, type(value).__name__)
contract = RAW_CONTRACTS[table].columns
print(f"{len(records)} record(s) read")
print("unexpected (not in the contract):", {name: kind for name, kind in seen.items() if name not in contract})
print("missing (in the contract, not sent):", [name for name in contract if name not in seen])
print("JSON types sent:", seen)
' "$1" "$2"
}

# Read-only SQL against the warehouse. "Could not set lock on file" means a run is writing it right now.
wh() {
  .venv/bin/python -c 'import duckdb, sys; print(duckdb.connect(sys.argv[1], read_only=True).sql(sys.argv[2]))' \
    "$PIPELINE_WAREHOUSE_PATH" "$1"
}

# SQL over the lake's Parquet files, without opening the warehouse (works while a run holds its lock).
lake_sql() {
  .venv/bin/python -c 'import duckdb, sys; print(duckdb.sql(sys.argv[1]))' "$1"
}

# Who holds and who waits for the `duckdb_warehouse` pool (one slot: one warehouse writer at a time).
pool_status() {
  .venv/bin/python -W ignore -c '
import dagster as dg
info = dg.DagsterInstance.get().event_log_storage.get_concurrency_info("duckdb_warehouse")
print(f"duckdb_warehouse: {len(info.claimed_slots)} of {info.slot_count} slot(s) taken")
for slot in info.claimed_slots:
    print(f"    held by run {slot.run_id} step {slot.step_key}")
for step in info.pending_steps:
    print(f"    waiting: run {step.run_id} step {step.step_key}")
'
}

# The rows a failing dbt test found (first 20), using the SQL dbt compiled for that run:
#   dbt_failing_rows RUN_ID TEST_NAME      (TEST_NAME = the check name, e.g. unique_stg_orders_order_id)
dbt_failing_rows() {
  local alias file
  alias=$(jq -r --arg test "$2" '.nodes[] | select(.resource_type == "test" and .name == $test) | .alias' \
    dbt_project/target/manifest.json)
  file=$(find dbt_project/target/shop_dbt_assets-"${1:0:7}"-*/compiled -name "$alias.sql" 2>/dev/null | head -n 1)
  if [ -z "$alias" ] || [ -z "$file" ]; then
    echo "no compiled SQL for test '$2' of run $1 under dbt_project/target/" >&2
    return 1
  fi
  wh "select * from ($(cat "$file")) limit 20"
}

# Open incidents in the alert outbox: one per stale asset, failing check, failing job partition or channel.
open_incidents() {
  sqlite3 -readonly -header -column "$ALERT_DIR/outbox.sqlite" \
    "select subject, kind, severity, datetime(opened_at, 'unixepoch') as opened_utc
     from incidents where resolved_at is null order by opened_at"
}

# The last N alerts (default 20) written by the log channel, one line each (UTC time, status, text).
alerts_log() {
  tail -n "${1:-20}" "$ALERT_DIR/alerts.log" | jq -r '"\(.logged_at | todate) \(.text)"'
}

echo "on-call helpers loaded: state $STATE, warehouse $PIPELINE_WAREHOUSE_PATH, alerts $ALERT_DIR"
