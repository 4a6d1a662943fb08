"""The on-call helpers the runbooks use: read-only looks at runs, checks, freshness, the raw layer, the
warehouse, the warehouse pool and the alert outbox, with the settings `make run` and `make dev` use.

    .venv/bin/python -m pipeline_project.local.oncall COMMAND [ARGS]
    alias oncall='.venv/bin/python -m pipeline_project.local.oncall'     (then: oncall COMMAND [ARGS])

    env                           the resolved paths as shell `export` lines:  eval "$(oncall env)"
    runs [N]                      the latest N runs (default 10): id, job, status, start (UTC), partition
    run-errors RUN_ID             each step failure, retry and the run failure, with the error and failure metadata
    run-checks RUN_ID [--all]     the failed asset checks of a run with their evidence (--all: passing ones too)
    freshness [ASSET ...]         freshness state and hours since the last materialization (default: every asset)
    lake-verify DAY [TABLE ...]   does each raw table's partition of DAY reconcile with its manifest (exit 1 if not)
    sql "SQL"                     SQL on the warehouse, opened read-only
    lake-sql "SQL"                SQL over the lake's Parquet files, without opening the warehouse
    source-columns TABLE DAY      the columns the source sends for TABLE on DAY, diffed against the raw contract
    pool                          who holds and who waits for the one `duckdb_warehouse` slot
    dbt-failing-rows RUN_ID TEST  the rows a failing dbt test found, with the SQL dbt compiled in that run
    incidents                     the open incidents of the alert outbox
    deliveries [--expired]        alert deliveries a channel has not accepted yet (--expired: given up)
    alerts-log [N] [--key KEY]    the last N alerts the log channel wrote (default 20), or those of one dedup key
    dagster [--] ARGS...          the dagster CLI with the source settings a run needs (locally: the demo source)

Settings come from `prepare_environment`, as for `make run`: the environment, then `.env`, then defaults under
`.state`. Every command only reads, except `dagster`, which does what it is asked. When what a command reads
is not there (no warehouse, no such run, no outbox, ...) it says what is missing, and where, and exits 1.
Nothing they print contains the value of a secret setting.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sqlite3
import sys
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import NoReturn

import dagster as dg
import duckdb
import polars as pl
import yaml
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

from pipeline_project.contracts import RAW_CONTRACTS
from pipeline_project.landing import LandingDay, incoming_files
from pipeline_project.local.environment import (
    DEMO_SOURCE_HOST,
    DEMO_TOKEN,
    demo_source_port,
    demo_source_wanted,
    prepare_environment,
)
from pipeline_project.policies import WAREHOUSE_POOL
from pipeline_project.raw_store import Lake
from pipeline_project.schema_drift import compare
from pipeline_project.secrets import redact
from pipeline_project.sources import (
    DATE_FILTERED,
    UPDATED_FILTERED,
    ExtractStats,
    ShopApiClient,
    SourceError,
    UnreadableLandingFile,
    iter_landing_batches,
    source_host,
)
from pipeline_project.warehouse import WarehouseLockedError, connect

# Short: the command is interactive, and the error names the process holding the warehouse.
WAREHOUSE_LOCK_WAIT_SECONDS = 5
RUN_ID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# The alerting resource's files under ALERT_DIR (`pipeline_project/alerting/resource.py`).
OUTBOX_FILE = "outbox.sqlite"
ALERT_LOG_FILE = "alerts.log"
SAMPLE_RECORDS = 50
FAILING_ROWS_SHOWN = 20
TEXT_LIMIT = 600
METADATA_LIMIT = 2000
RUN_PROBLEMS = {
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.STEP_UP_FOR_RETRY,
    dg.DagsterEventType.RUN_CANCELING,
    dg.DagsterEventType.RUN_CANCELED,
    dg.DagsterEventType.RUN_FAILURE,
}
# The metadata of a failed check that shows what failed (mart contracts, dbt tests, reconciliation, drift).
CHECK_EVIDENCE = (
    "fail/",
    "dagster_dbt/failed_row_count",
    "partitions_failing",
    "rows_checked",
    "schema_drift",
    "sample",
)
# Listing order of `freshness`: the stalest first.
FRESHNESS_RANK = {
    FreshnessState.FAIL: 0,
    FreshnessState.WARN: 1,
    FreshnessState.UNKNOWN: 2,
    None: 3,  # no state recorded: the freshness daemon has not evaluated the asset
    FreshnessState.PASS: 4,
    FreshnessState.NOT_APPLICABLE: 5,
}
API_TABLES = DATE_FILTERED | UPDATED_FILTERED
# LandingDay reads the archived files of a day without claiming anything under this name.
READER_ID = "oncall"


class OncallError(Exception):
    """A command cannot show what it was asked for; the message names what is missing or wrong, and where."""


def say(text: str) -> None:
    print(redact(text))


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [list(header), *[["-" if value is None else " ".join(str(value).split()) for value in row] for row in rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    for row in cells:
        say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def utc(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S") if timestamp else None


def clip(value: object, limit: int = TEXT_LIMIT) -> str:
    """A value (or a Dagster MetadataValue) as text of at most `limit` characters; further lines indented."""
    value = getattr(value, "value", value)
    text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value).strip()
    text = text if len(text) <= limit else " ".join(text.split())[: limit - 1] + "…"
    return text.replace("\n", "\n    ")


def export_source_settings() -> None:
    """The shop API settings a run reads; with none configured, the demo source `make dev` serves."""
    if demo_source_wanted():
        os.environ["SHOP_API_URL"] = f"http://{DEMO_SOURCE_HOST}:{demo_source_port()}"
        os.environ["SHOP_API_TOKEN"] = os.environ.get("SHOP_API_TOKEN") or DEMO_TOKEN


# ------------------------------------------------------------------------------------------ Dagster instance
@contextmanager
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    home = Path(os.environ["DAGSTER_HOME"])
    config_path = home / "dagster.yaml"
    config = (yaml.safe_load(config_path.read_text()) if config_path.exists() else None) or {}
    # Opening a SQLite instance that never recorded a run would create its storage: refuse instead.
    if not {"storage", "run_storage"} & config.keys() and not (home / "history" / "runs.db").exists():
        raise OncallError(f"no Dagster runs recorded under DAGSTER_HOME={home}: run `make run` or `make dev` first")
    with dg.DagsterInstance.get() as instance:
        yield instance


def find_run(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun:
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise OncallError(f"no run {run_id} under DAGSTER_HOME={os.environ['DAGSTER_HOME']} (`runs` lists the latest)")
    return run


def partition_label(tags: dict[str, str]) -> str | None:
    if partition := tags.get(PARTITION_NAME_TAG):
        return partition
    start, end = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    return (start if start == end else f"{start}...{end}") if start else None


def runs(args: argparse.Namespace) -> int:
    with dagster_instance() as instance:
        records = instance.get_run_records(limit=args.count)
    if not records:
        say("no runs recorded yet")
        return 0
    print_table(
        ("run id", "job", "status", "started (UTC)", "partition"),
        [
            (
                record.dagster_run.run_id,
                record.dagster_run.job_name,
                record.dagster_run.status.value,
                utc(record.start_time) or "not started",
                partition_label(record.dagster_run.tags),
            )
            for record in records
        ],
    )
    return 0


def run_errors(args: argparse.Namespace) -> int:
    with dagster_instance() as instance:
        run = find_run(instance, args.run_id)
        entries = instance.all_logs(run.run_id, of_type=RUN_PROBLEMS)
    partition = partition_label(run.tags) or "-"
    say(f"run {run.run_id}  job {run.job_name}  status {run.status.value}  partition {partition}")
    if not entries:
        say("no step failure, retry or run failure recorded")
    for entry in entries:
        event = entry.dagster_event
        data = event.event_specific_data
        error = getattr(data, "error", None)
        failure = getattr(data, "user_failure_data", None)  # a dg.Failure's own description and metadata
        text = failure.description if failure and failure.description else error.message if error else event.message
        say(f"{event.event_type_value} {entry.step_key or '(run)'}: {clip(text)}")
        while error is not None and error.cause is not None:
            error = error.cause
            say(f"    caused by: {clip(error.message)}")
        for name, value in (failure.metadata or {}).items() if failure else ():
            say(f"    {name}: {clip(value, METADATA_LIMIT)}")
    return 0


def run_checks(args: argparse.Namespace) -> int:
    with dagster_instance() as instance:
        run = find_run(instance, args.run_id)
        entries = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluations = [entry.dagster_event.event_specific_data for entry in entries]
    shown = [check for check in evaluations if args.all or not check.passed]
    if not shown:
        say(f"no failed check in run {run.run_id} ({len(evaluations)} evaluated; --all lists them)")
        return 0
    print_table(
        ("result", "severity", "asset", "check", "partition"),
        [
            ("pass" if c.passed else "FAIL", c.severity.value, c.asset_key.to_user_string(), c.check_name, c.partition)
            for c in shown
        ],
    )
    for check in shown:
        evidence = {name: value for name, value in check.metadata.items() if name.startswith(CHECK_EVIDENCE)}
        if not check.passed and evidence:
            say(f"{check.asset_key.to_user_string()} {check.check_name}:")
            for name, value in evidence.items():
                say(f"    {name}: {clip(value, METADATA_LIMIT)}")
    return 0


def freshness(args: argparse.Namespace) -> int:
    with dagster_instance() as instance:
        keys = [dg.AssetKey.from_user_string(name) for name in args.assets] or list(instance.get_asset_keys())
        states = instance.get_freshness_state_records(keys)
        latest = {
            record.asset_entry.asset_key: record.asset_entry.last_materialization
            for record in instance.get_asset_records(keys)
        }
    if not keys:
        say("no asset materialized yet")
        return 0
    now = time.time()
    rows = []
    for key in keys:
        state = states[key].freshness_state if key in states else None
        last = latest.get(key)
        age = f"{(now - last.timestamp) / 3600:.1f} h ago" if last else "never materialized"
        rows.append((FRESHNESS_RANK[state], key.to_user_string(), state.value if state else "no state yet", age))
    if not args.assets:
        rows.sort()
    print_table(("asset", "freshness", "last materialized"), [row[1:] for row in rows])
    return 0


def pool(args: argparse.Namespace) -> int:
    with dagster_instance() as instance:
        info = instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
    limit = "no limit set" if info.limit is None else f"{info.limit} slot(s)"
    say(f"{WAREHOUSE_POOL} ({limit}): {len(info.claimed_slots)} taken")
    for slot in info.claimed_slots:
        say(f"    held by run {slot.run_id} step {slot.step_key}")
    for step in info.pending_steps:
        if step.assigned_timestamp is None:
            say(
                f"    waiting since {step.enqueued_timestamp:%Y-%m-%d %H:%M:%S}: run {step.run_id} step {step.step_key}"
            )
    return 0


# ------------------------------------------------------------------------------------------ raw layer
def lake_verify(args: argparse.Namespace) -> int:
    lake = Lake(os.environ["PIPELINE_LAKE_DIR"])
    rows, problems = [], []
    for table in args.tables or RAW_CONTRACTS:
        manifest = lake.read_manifest(table, args.day)
        if manifest is None:
            rows.append((table, "NO MANIFEST", None, None, None, None, None, None))
            problems.append(f"{table}: no manifest: never loaded, or the load did not commit")
            continue
        try:
            found = lake.verify(manifest)
        except OSError as error:
            found = [f"its files cannot be read: {error}"]
        problems += [f"{table}: {problem}" for problem in found]
        rows.append(
            (
                table,
                "PROBLEM" if found else "ok",
                manifest.control.get("count"),
                manifest.loaded_count,
                manifest.quarantined_count,
                manifest.copies,
                manifest.run_id[:8],
                manifest.committed_at,
            )
        )
    say(f"raw partitions of {args.day} in {lake.root}")
    print_table(("table", "verdict", "source keys", "loaded", "quarantined", "copies", "run", "committed"), rows)
    for problem in problems:
        say(f"    {problem}")
    return 0 if all(row[1] == "ok" for row in rows) else 1


def source_samples(table: str, day: date) -> Iterator[tuple[str, pl.DataFrame, int | None]]:
    """(where, the first records it sends for the day, how many it reports) for the API or each landing file."""
    contract = RAW_CONTRACTS[table]
    stats = ExtractStats()
    if table in API_TABLES:
        demo = demo_source_wanted()
        export_source_settings()
        url, token = os.environ.get("SHOP_API_URL", ""), os.environ.get("SHOP_API_TOKEN", "")
        if not token:
            raise OncallError(f"SHOP_API_TOKEN is not set (the API at {source_host(url)} needs it)")
        try:
            with ShopApiClient(url, token, page_size=SAMPLE_RECORDS, max_attempts=1) as client:
                batch = next(client.iter_batches(contract, day, stats, SAMPLE_RECORDS))
        except SourceError as error:
            local = " (the demo source runs while `make dev` does)" if demo else ""
            raise OncallError(f"the shop API at {source_host(url)}: {error}{local}") from None
        yield f"{source_host(url)} {stats.source}", batch, stats.source_reported_count
        return
    landing_dir = Path(os.environ["LANDING_DIR"])
    archived = LandingDay(landing_dir, table, day, READER_ID).files()
    files = sorted({path.name: path for path in (*archived, *incoming_files(landing_dir, table, day))}.values())
    if not files:
        raise OncallError(f"no landing files of {table} for {day} (incoming or archived) under {landing_dir / table}")
    for path in files:
        try:
            batch = next(iter_landing_batches(contract, [path], ExtractStats(), SAMPLE_RECORDS))
        except UnreadableLandingFile as error:
            say(f"{path}: unreadable: {error}")
            continue
        yield str(path), batch, None


def source_columns(args: argparse.Namespace) -> int:
    contract = RAW_CONTRACTS[args.table]
    for where, batch, reported in source_samples(args.table, args.day):
        of_reported = f" of {reported} the source reports for the day" if reported is not None else ""
        say(f"{where}: {batch.height} record(s) read{of_reported}")
        if not batch.height:
            continue
        say("    sent: " + ", ".join(f"{name} ({dtype})" for name, dtype in batch.schema.items()))
        diff = compare(contract, batch)
        for line in diff.render().splitlines():
            say(f"    {line}")
        if diff:
            consequence = "fails the load" if diff.breaking else "loads; the schema_drift check fails"
            say(f"    {'breaking' if diff.breaking else 'additive'} drift: {consequence}")
    return 0


def lake_sql(args: argparse.Namespace) -> int:
    with duckdb.connect() as connection:
        show_query(connection, args.query)
    return 0


# ------------------------------------------------------------------------------------------ warehouse
@contextmanager
def warehouse() -> Iterator[duckdb.DuckDBPyConnection]:
    path = Path(os.environ["PIPELINE_WAREHOUSE_PATH"])
    if not path.exists():
        raise OncallError(f"no warehouse at {path}: run `make run` first")
    try:
        with connect(path, read_only=True, lock_wait_seconds=WAREHOUSE_LOCK_WAIT_SECONDS) as connection:
            yield connection
    except WarehouseLockedError as error:
        raise OncallError(
            f"{error}. A run's dbt build is writing it: retry when it is done, or query the raw layer with lake-sql"
        ) from None


def show_query(connection: duckdb.DuckDBPyConnection, query: str) -> None:
    try:
        relation = connection.sql(query)
        say("done (no result set)" if relation is None else str(relation))
    except duckdb.Error as error:
        raise OncallError(f"the query failed: {error}") from None


def sql(args: argparse.Namespace) -> int:
    with warehouse() as connection:
        show_query(connection, args.query)
    return 0


def compiled_test_sql(run_id: str, test: str) -> str:
    """The SQL dbt ran for `test` in the run's last dbt invocation (its run_results.json keeps it)."""
    from pipeline_project.project import dbt_project  # imported here: loading dagster_dbt takes seconds

    # dagster-dbt gives each invocation its own folder under the target path: `<op>-<run id[:7]>-<random>`.
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise OncallError(f"{run_id!r} is not a run id (the hexadecimal id at the end of the alert's run link)")
    target = dbt_project.project_dir / os.environ.get("DBT_TARGET_PATH", dbt_project.target_path)
    invocations = sorted(target.glob(f"*-{run_id[:7]}-*"), key=lambda path: path.stat().st_mtime, reverse=True)
    for invocation in invocations:
        results = invocation / "run_results.json"
        if not results.exists():
            continue
        for result in json.loads(results.read_text())["results"]:
            kind, _, name, *_ = result["unique_id"].split(".")  # test.<project>.<test name>[.<hash>]
            if kind == "test" and name == test and result.get("compiled_code"):
                return result["compiled_code"].strip().rstrip(";")
    raise OncallError(
        f"no compiled SQL for dbt test {test!r} of run {run_id} in {target}/*-{run_id[:7]}-*/run_results.json"
    )


def dbt_failing_rows(args: argparse.Namespace) -> int:
    query = compiled_test_sql(args.run_id, args.test)
    with warehouse() as connection:
        try:
            [(count,)] = connection.execute(f"select count(*) from ({query}) as failing").fetchall()
        except duckdb.Error as error:
            raise OncallError(f"the test's SQL no longer runs on the warehouse: {error}") from None
        say(f"{args.test}: {count} failing row(s) now" + (f"; the first {FAILING_ROWS_SHOWN}:" if count else ""))
        if count:
            show_query(connection, f"select * from ({query}) as failing limit {FAILING_ROWS_SHOWN}")
    return 0


# ------------------------------------------------------------------------------------------ alerts
@contextmanager
def outbox() -> Iterator[sqlite3.Connection]:
    path = Path(os.environ["ALERT_DIR"]) / OUTBOX_FILE
    if not path.exists():
        raise OncallError(f"no alert outbox at {path}: no alert has been raised there yet (or ALERT_DIR is wrong)")
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        yield connection
    finally:
        connection.close()


def incidents(args: argparse.Namespace) -> int:
    with outbox() as connection:
        rows = connection.execute(
            "select subject, kind, severity, opened_at from incidents where resolved_at is null order by opened_at"
        ).fetchall()
    if not rows:
        say("no open incident")
        return 0
    print_table(
        ("subject", "kind", "severity", "opened (UTC)"),
        [(subject, kind, severity, utc(opened)) for subject, kind, severity, opened in rows],
    )
    return 0


def deliveries(args: argparse.Namespace) -> int:
    with outbox() as connection:
        if args.expired:
            rows = connection.execute(
                "select channel, dedup_key, attempts, expired_at, last_error from deliveries "
                "where expired_at is not null and delivered_at is null order by expired_at"
            ).fetchall()
        else:
            rows = connection.execute(
                "select channel, dedup_key, attempts, next_attempt_at, fell_back_at is not null, last_error "
                "from deliveries where delivered_at is null and expired_at is null order by channel, next_attempt_at"
            ).fetchall()
    if not rows:
        say("no expired delivery" if args.expired else "no pending delivery: every alert reached its channels")
        return 0
    if args.expired:
        header = ("channel", "dedup key", "attempts", "given up (UTC)", "last error")
        print_table(header, [(ch, key, n, utc(at), clip(error, 200)) for ch, key, n, at, error in rows])
        return 0
    per_channel = Counter(channel for channel, *_ in rows)
    say(f"{len(rows)} pending: " + ", ".join(f"{channel} {count}" for channel, count in per_channel.items()))
    print_table(
        ("channel", "dedup key", "attempts", "next try (UTC)", "in log", "last error"),
        [
            (ch, key, n, utc(next_at), "yes" if logged else "no", clip(error, 200))
            for ch, key, n, next_at, logged, error in rows
        ],
    )
    return 0


def alerts_log(args: argparse.Namespace) -> int:
    path = Path(os.environ["ALERT_DIR"]) / ALERT_LOG_FILE
    if not path.exists():
        raise OncallError(f"no alert log at {path}: the log channel has not written an alert there yet")
    last: deque[dict] = deque(maxlen=args.count)
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = {"text": f"(line {number} is not JSON) {line.strip()}"}
            if args.key is None or record.get("dedup_key") == args.key:
                last.append(record)
    if args.key is not None and not last:
        raise OncallError(f"no alert with dedup key {args.key!r} in {path}")
    for record in last:
        say(f"{utc(record.get('logged_at')) or '-'}  {record.get('text', '')}")
    return 0


# ------------------------------------------------------------------------------------------ shell and dagster CLI
def env(args: argparse.Namespace) -> int:
    for name in (*prepare_environment(), "DAGSTER_WEBSERVER_URL"):
        say(f"export {name}={shlex.quote(os.environ[name])}")
    return 0


def dagster(args: argparse.Namespace) -> NoReturn:
    export_source_settings()
    executable = Path(sys.executable).parent / "dagster"
    arguments = args.arguments[1:] if args.arguments[:1] == ["--"] else args.arguments
    os.execv(executable, [str(executable), *arguments])


def day_argument(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"DAY must be a date like 2026-11-21, not {text!r}") from None


def table_argument(text: str) -> str:
    if text not in RAW_CONTRACTS:
        raise argparse.ArgumentTypeError(f"TABLE must be one of {', '.join(RAW_CONTRACTS)}, not {text!r}")
    return text


def count_argument(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"N must be a whole number of at least 1, not {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oncall", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        subparser = commands.add_parser(name, description=text)
        subparser.set_defaults(handler=handler)
        return subparser

    command("env", env, 'the resolved paths as shell export lines: eval "$(oncall env)"')
    command("runs", runs, "the latest runs").add_argument("count", nargs="?", type=count_argument, default=10)
    command("run-errors", run_errors, "what went wrong in one run").add_argument("run_id")
    checks = command("run-checks", run_checks, "the failed asset checks of one run, with their evidence")
    checks.add_argument("run_id")
    checks.add_argument("--all", action="store_true", help="list the passing checks too")
    ages = command("freshness", freshness, "freshness state and age of assets (default: every asset, stalest first)")
    ages.add_argument("assets", nargs="*", metavar="ASSET")
    verify = command("lake-verify", lake_verify, "does each raw partition of a day reconcile with its manifest")
    verify.add_argument("day", type=day_argument)
    verify.add_argument("tables", nargs="*", type=table_argument, metavar="TABLE")
    command("sql", sql, "SQL on the warehouse, read-only").add_argument("query", metavar="SQL")
    command("lake-sql", lake_sql, "SQL over the lake's Parquet files").add_argument("query", metavar="SQL")
    columns = command("source-columns", source_columns, "the columns a source sends, against the raw contract")
    columns.add_argument("table", type=table_argument, metavar="TABLE")
    columns.add_argument("day", type=day_argument)
    command("pool", pool, f"who holds and who waits for the {WAREHOUSE_POOL} pool")
    failing = command("dbt-failing-rows", dbt_failing_rows, "the rows a failing dbt test found")
    failing.add_argument("run_id")
    failing.add_argument("test", help="the check name, e.g. unique_stg_orders_order_id")
    command("incidents", incidents, "the open incidents of the alert outbox")
    command("deliveries", deliveries, "alert deliveries not accepted yet").add_argument(
        "--expired", action="store_true", help="the deliveries given up after 24 h instead"
    )
    log = command("alerts-log", alerts_log, "the last alerts the log channel wrote")
    log.add_argument("count", nargs="?", type=count_argument, default=20)
    log.add_argument("--key", help="only the alert with this dedup key")
    command("dagster", dagster, "the dagster CLI with the pipeline's settings").add_argument(
        "arguments", nargs=argparse.REMAINDER
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `dagster --version` and the like: options after `dagster` are the dagster CLI's, not ours.
    args, extra = parser.parse_known_args(argv)
    if args.command == "dagster":
        args.arguments += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    prepare_environment()
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    try:
        return args.handler(args)
    except OncallError as error:
        print(f"oncall {args.command}: {redact(str(error))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
