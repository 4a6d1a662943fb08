"""The production profile end to end (`make test-production`): a throwaway PostgreSQL cluster holds the Dagster
instance and the DuckLake catalog; a code server, `dagster-webserver` and `dagster-daemon` run as separate
processes from the deploy/ files; 14 days are backfilled as one run per day through the queued run coordinator
(`raw_ingestion` job), then one `transform` run builds the marts with dbt on the DuckLake and runs their checks.

The queue starts two runs at a time (deploy/dagster.yaml); `make bench-production` first runs the same backfill
one run at a time for the comparison. Asserted: every run succeeded; the backfill's runs overlapped in time;
the marts equal the demo world's ground truth; every partition is committed once, reconciled and verified,
with exactly the source's records (nothing lost, nothing twice); the catalog's password appears in no log.
The wall times are printed and written to test-artifacts/production-backfill.json."""

from __future__ import annotations

import json
import os
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from lakes import CATALOG_PASSWORD, new_ducklake
from stack import REPO, Stack

from demo_source import DemoShopServer, ShopWorld, write_landing_files
from pipeline_project.lake.catalog import connect
from pipeline_project.lake.ducklake_store import DuckLakeStore
from pipeline_project.ops.wait import wait_until
from pipeline_project.quality.contracts import RAW_CONTRACTS

from harness import assert_marts_equal_ground_truth

TOKEN = "production-stack-token"
SCALE = 0.1
DAYS = [date(2026, 3, 1) + timedelta(days=n) for n in range(14)]
BACKFILL_TIMEOUT = 900
# `make bench-production` (PRODUCTION_MEASURE_SERIAL=1) first runs the same backfill one run at a time, to
# measure what the second run at a time buys; `make test-production` runs only the concurrent one.
MEASURE_SERIAL = os.environ.get("PRODUCTION_MEASURE_SERIAL") == "1"
pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(2400 if MEASURE_SERIAL else 1500)]

RUNS_QUERY = """query Runs($filter: RunsFilter) { runsOrError(filter: $filter) { ... on Runs {
  results { runId status startTime endTime tags { key value } } } } }"""
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def runs_of(stack: Stack, selection: dict) -> list[dict]:
    return stack.graphql(RUNS_QUERY, {"filter": selection})["runsOrError"]["results"]


def wait_for(stack: Stack, selection: dict, count: int, timeout: float = BACKFILL_TIMEOUT) -> list[dict]:
    """The runs `selection` (a RunsFilter) finds, once there are `count` of them and all have finished."""

    def finished() -> list[dict] | None:
        stack.check_alive()
        runs = runs_of(stack, selection)
        return runs if len(runs) >= count and all(run["status"] in TERMINAL for run in runs) else None

    def states(_) -> str:
        return f"{sorted(run['status'] for run in runs_of(stack, selection))}\n{stack.logs_text()[-6000:]}"

    return wait_until(finished, timeout, f"{count} runs finished", describe=states)


def most_at_once(runs: list[dict]) -> int:
    """The largest number of runs that were executing at the same moment."""
    moments = sorted([(run["startTime"], 1) for run in runs] + [(run["endTime"], -1) for run in runs])
    running = peak = 0
    for _, change in moments:
        running += change
        peak = max(peak, running)
    return peak


def timed_backfill(stack: Stack, days: list[date], label: str) -> tuple[list[dict], float]:
    """One `raw_ingestion` run per day, all submitted at once to the run queue, which starts as many at a time
    as it allows. (A backfill of the job would make one run of all the days: the ingestion assets' backfill
    policy is a single run, which `make run` and the schedule want.)"""
    started = time.monotonic()
    for day in days:
        stack.launch("raw_ingestion", {"dagster/partition": day.isoformat(), "production-test/backfill": label})
    runs = wait_for(stack, {"tags": [{"key": "production-test/backfill", "value": label}]}, len(days))
    return runs, time.monotonic() - started


@pytest.fixture(scope="module")
def production(cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    cluster.psql("create database dagster")
    ducklake = new_ducklake(cluster, root)
    world = ShopWorld(scale=SCALE)
    with DemoShopServer(world, token=TOKEN) as source:
        stack = Stack(root, cluster, ducklake, source.url, TOKEN, max_concurrent_runs=1 if MEASURE_SERIAL else 2)
        try:
            stack.start()
            # The backfill loads the landing files itself; the sensor would request runs of the same days.
            stack.stop_sensor("landing_file_sensor")
            for day in DAYS:
                write_landing_files(stack.landing, day, world)
            serial_runs, serial_seconds = [], None
            if MEASURE_SERIAL:
                serial_runs, serial_seconds = timed_backfill(stack, DAYS, "serial")
                stack.restart_daemon(max_concurrent_runs=2)
            concurrent_runs, concurrent_seconds = timed_backfill(stack, DAYS, "concurrent")
            # The dbt assets are daily-partitioned: the transform run covers the backfilled days.
            transform = stack.launch(
                "transform",
                {
                    "dagster/asset_partition_range_start": str(DAYS[0]),
                    "dagster/asset_partition_range_end": str(DAYS[-1]),
                },
            )
            (transform_run,) = wait_for(stack, {"runIds": [transform]}, 1)
        finally:
            stack.stop()
    data = Path(ducklake.data_path)
    figures = {
        "days": len(DAYS),
        "scale": SCALE,
        "concurrent_seconds": round(concurrent_seconds, 1),
        "concurrent_most_at_once": most_at_once(concurrent_runs),
        "run_seconds": sorted(round(run["endTime"] - run["startTime"], 1) for run in concurrent_runs),
        "transform_seconds": round(transform_run["endTime"] - transform_run["startTime"], 1),
        "ducklake_data_bytes": sum(path.stat().st_size for path in data.rglob("*") if path.is_file()),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if MEASURE_SERIAL:
        figures.update(
            serial_seconds=round(serial_seconds, 1),
            serial_most_at_once=most_at_once(serial_runs),
            speedup=round(serial_seconds / concurrent_seconds, 2),
        )
    print(f"\n14-day backfill: {json.dumps(figures)}")
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "production-backfill.json").write_text(json.dumps(figures, indent=2) + "\n")
    return {
        "world": world,
        "ducklake": ducklake,
        "root": root,
        "runs": {"serial": serial_runs, "concurrent": concurrent_runs, "transform": [transform_run]},
        "figures": figures,
        "logs": stack.logs_text()
        + "\n".join(path.read_text(errors="replace") for path in (root / "logs").glob("*.jsonl")),
    }


def test_every_run_succeeded(production):
    for kind, runs in production["runs"].items():
        failed = [(run["runId"], run["status"]) for run in runs if run["status"] != "SUCCESS"]
        errors = [
            line[:2000]
            for line in production["logs"].splitlines()
            if any(run_id in line for run_id, _ in failed) and ("FAILURE" in line or "rror" in line)
        ]
        assert not failed, f"{kind}: {failed}\n" + "\n".join(errors[-10:])
    partitions = sorted(
        tag["value"]
        for run in production["runs"]["concurrent"]
        for tag in run["tags"]
        if tag["key"] == "dagster/partition"
    )
    assert partitions == [day.isoformat() for day in DAYS], "one run per day"


def test_the_queue_ran_two_runs_at_a_time_and_they_overlapped(production):
    assert production["figures"]["concurrent_most_at_once"] == 2, "the backfill's runs did not overlap"
    if MEASURE_SERIAL:
        assert production["figures"]["serial_most_at_once"] == 1


def test_the_marts_equal_the_ground_truth(production):
    connection = connect(production["ducklake"], read_only=True)
    try:
        assert_marts_equal_ground_truth(connection, production["world"], DAYS, marts="lake.marts")
    finally:
        connection.close()


def test_every_partition_is_committed_once_with_exactly_the_sources_records(production, tmp_path):
    world: ShopWorld = production["world"]
    store = DuckLakeStore(tmp_path, production["ducklake"])
    connection = store.connection
    try:
        for table in RAW_CONTRACTS:
            key = RAW_CONTRACTS[table].primary_key
            assert store.committed_days(table) == set(DAYS), table
            for day in DAYS:
                manifest, problems = store.read_verified(table, day)
                assert problems == [], (table, day, problems)
                assert manifest.reconciled and store.read_rejected(table, day) is None
                assert manifest.quarantined_count == 0
                counted = connection.execute(
                    f'select count(*), count(distinct "{key}") from lake.raw.{table} where _partition_date = ?', [day]
                ).fetchone()
                expected = world.record_counts(day)[table]
                assert counted == (expected, expected) == (manifest.loaded_count, manifest.loaded_count), (table, day)
            (total,) = connection.execute(f"select count(*) from lake.raw.{table}").fetchone()
            assert total == sum(world.record_counts(day)[table] for day in DAYS), table
            (ledger_rows,) = connection.execute(
                "select count(*) from lake.ledger.manifests where table_name = ?", [table]
            ).fetchone()
            assert ledger_rows == len(DAYS), f"{table}: one ledger row per partition"
    finally:
        store.close()


def test_the_catalog_password_is_in_no_log(production):
    assert production["logs"], "no logs were captured"
    assert CATALOG_PASSWORD not in production["logs"]


def test_every_process_wrote_its_log(production):
    names = {path.name for path in Path(production["root"], "logs").iterdir()}
    assert {"code-server.log", "webserver.log", "daemon.log"} <= names
