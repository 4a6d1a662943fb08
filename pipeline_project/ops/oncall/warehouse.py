"""The warehouse, read-only, and what dbt recorded of a run (its results, its log, a failing test's rows)."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from pipeline_project.ops.oncall.common import OncallError, clip, print_table, say
from pipeline_project.settings import REPO_ROOT
from pipeline_project.transform.warehouse import WarehouseLockedError, connect

# Short: the command is interactive, and the error names the process holding the warehouse.
WAREHOUSE_LOCK_WAIT_SECONDS = 5
RUN_ID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
FAILING_ROWS_SHOWN = 20
# dagster-dbt gives each dbt invocation of a run its own folder under the target path: `<op>-<run id[:7]>-<random>`.
DBT_OK = {"success", "pass"}
# dbt's states of a node that has begun and not ended (RunningStatus); any other last state is an outcome.
DBT_RUNNING = {"started", "compiling", "executing"}


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


def show_query(connection: duckdb.DuckDBPyConnection, query: str) -> int:
    """Print the query's result; return how many rows it has."""
    try:
        relation = connection.sql(query)
        say("done (no result set)" if relation is None else str(relation))
        return 0 if relation is None else len(relation.fetchall())
    except duckdb.Error as error:
        raise OncallError(f"the query failed: {error}") from None


def sql(args: argparse.Namespace) -> int:
    with warehouse() as connection:
        rows = show_query(connection, args.query)
    return 1 if args.expect_empty and rows else 0


def dbt_target() -> Path:
    """The dbt project's target directory, as `pipeline_project.transform.project` resolves it (without importing
    dagster_dbt, which takes seconds)."""
    project_dir = Path(os.environ.get("PIPELINE_DBT_PROJECT_DIR") or REPO_ROOT / "dbt_project").resolve()
    return project_dir / os.environ.get("DBT_TARGET_PATH", "target")


def dbt_invocations(run_id: str) -> list[Path]:
    """The run's dbt invocation folders, the latest first (a retried step has one per attempt)."""
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise OncallError(f"{run_id!r} is not a run id (the hexadecimal id at the end of the alert's run link)")
    return sorted(dbt_target().glob(f"*-{run_id[:7]}-*"), key=lambda path: path.stat().st_mtime, reverse=True)


def compiled_test_sql(run_id: str, test: str) -> str:
    """The SQL dbt ran for `test` in the run's last dbt invocation (its run_results.json keeps it)."""
    for invocation in dbt_invocations(run_id):
        results = invocation / "run_results.json"
        if not results.exists():
            continue
        for result in json.loads(results.read_text())["results"]:
            kind, _, name, *_ = result["unique_id"].split(".")  # test.<project>.<test name>[.<hash>]
            if kind == "test" and name == test and result.get("compiled_code"):
                return result["compiled_code"].strip().rstrip(";")
    raise OncallError(
        f"no compiled SQL for dbt test {test!r} of run {run_id} in {dbt_target()}/*-{run_id[:7]}-*/run_results.json"
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


@dataclass
class LoggedNode:
    """What dbt's JSON debug log says about one node: its last state, when it ran, its last error message."""

    unique_id: str
    status: str = ""
    started_at: str = ""
    finished_at: str = ""
    error: str = ""

    @property
    def seconds(self) -> float | None:
        if not (self.started_at and self.finished_at):
            return None
        return (datetime.fromisoformat(self.finished_at) - datetime.fromisoformat(self.started_at)).total_seconds()


def _log_nodes(log: Path) -> dict[str, LoggedNode]:
    nodes: dict[str, LoggedNode] = {}
    if not log.exists():
        return nodes
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        info = event.get("data", {}).get("node_info")
        if not info or not info.get("unique_id"):
            continue
        node = nodes.setdefault(info["unique_id"], LoggedNode(info["unique_id"]))
        node.status = info.get("node_status") or node.status
        node.started_at = info.get("node_started_at") or node.started_at
        node.finished_at = info.get("node_finished_at") or node.finished_at
        message = event.get("info", {}).get("msg", "")
        if "Error" in message and not message.startswith("DuckDB adapter"):
            node.error = " ".join(message.split())
    return nodes


def dbt_results(args: argparse.Namespace) -> int:
    """What dbt did in a run's last invocation: counts by status, what failed or was skipped (with dbt's
    message), what started and never finished, and the slowest nodes. An interrupted dbt (a run stopped for
    its runtime) writes no results: its log tells the same."""
    invocations = dbt_invocations(args.run_id)
    if not invocations:
        raise OncallError(f"no dbt invocation of run {args.run_id} under {dbt_target()} (did the run reach dbt?)")
    invocation = invocations[0]
    say(f"dbt invocation {invocation.name} ({len(invocations)} in this run: one per attempt)")
    results_path = invocation / "run_results.json"
    results = json.loads(results_path.read_text())["results"] if results_path.exists() else []
    logged = _log_nodes(invocation / "dbt.log")
    if results:
        outcomes = [(r["status"], r["unique_id"], r.get("message") or "", r.get("execution_time")) for r in results]
    else:
        say("no results written (dbt was interrupted or killed): from dbt's log")
        outcomes = [(n.status, n.unique_id, n.error, n.seconds) for n in logged.values() if n.status not in DBT_RUNNING]
    if outcomes:
        counts = Counter(status for status, *_ in outcomes)
        say("status: " + ", ".join(f"{status} {count}" for status, count in counts.most_common()))
    for status, unique_id, message, seconds in outcomes:
        if status not in DBT_OK:
            took = f" (after {seconds:.1f} s)" if seconds else ""
            say(f"  {status:<8} {unique_id}: {clip(message, 300)}{took}")
    for node in sorted(logged.values(), key=lambda n: n.started_at):
        if node.status in DBT_RUNNING:
            say(f"  started {node.started_at} and never finished: {node.unique_id}")
    if args.slowest and outcomes:
        slowest = sorted(outcomes, key=lambda outcome: -(outcome[3] or 0))[: args.slowest]
        print_table(("seconds", "node"), [(f"{seconds or 0:.1f}", unique_id) for _, unique_id, _, seconds in slowest])
    return 0
