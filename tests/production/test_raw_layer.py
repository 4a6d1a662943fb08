"""The raw layer's guarantees in both profiles: the embedded one (Parquet files, manifests, `flock`) and the
production one (DuckLake with its catalog in a real PostgreSQL, `pipeline_project.lake.ducklake_store`).

Each guarantee is broken on purpose: a load that does not reconcile, rows changed behind the ledger's back, two
writers of one partition at once, eight writers of different partitions at once, a writer killed inside its
commit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
from lakes import CATALOG_PASSWORD, catalog_env

from demo_source import DemoShopServer, Faults, ShopWorld
from pipeline_project.ingest.api_assets import api_read, load_api_partition
from pipeline_project.ingest.listing_filters import day_filter
from pipeline_project.ingest.loading import PartitionRead, load_partition
from pipeline_project.ingest.reconcile import CONTROL_ENDPOINT, ControlFigures
from pipeline_project.ingest.sources import ShopApiClient
from pipeline_project.lake.catalog import connect
from pipeline_project.lake.ducklake_store import DuckLakeStore
from pipeline_project.lake.raw_store import Lake, PartitionBusy
from pipeline_project.quality.contracts import RAW_CONTRACTS
from pipeline_project.transform.dbt_days import changed_days

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TOKEN = "production-test-token"
DAY = date(2026, 3, 14)
TABLE = "orders"
WORKER = Path(__file__).with_name("raw_worker.py")


@pytest.fixture(scope="module")
def source():
    with DemoShopServer(ShopWorld(scale=0.1), token=TOKEN) as server:
        yield server


@pytest.fixture(params=["embedded", "production"])
def store(request, tmp_path):
    if request.param == "embedded":
        yield Lake(tmp_path / "lake")
        return
    settings = request.getfixturevalue("ducklake")
    lake = DuckLakeStore(tmp_path / "scratch", settings)
    yield lake
    lake.close()


def client(server: DemoShopServer) -> ShopApiClient:
    return ShopApiClient(server.url, TOKEN, max_backoff_seconds=0.05)


def rows(store: Lake, table: str = TABLE, day: date = DAY) -> pl.DataFrame:
    """The committed data rows of a partition, in key order, without the lineage of the load."""
    key = RAW_CONTRACTS[table].primary_key
    if isinstance(store, DuckLakeStore):
        frame = store.connection.execute(f"select * from raw.{table} where _partition_date = ?", [day]).pl()
    else:
        frame = pl.read_parquet(store.data_path(table, day))
    return frame.drop("_batch_id", "_loaded_at", "_arrival").sort(key)


def load(store: Lake, server: DemoShopServer, run_id: str, day: date = DAY, table: str = TABLE):
    with client(server) as api:
        return load_api_partition(store, api, RAW_CONTRACTS[table], day, run_id)


def tamper(store: Lake) -> None:
    """Change one committed row behind the ledger's back."""
    if isinstance(store, DuckLakeStore):
        store.connection.execute(
            f"update raw.{TABLE} set order_status = 'tampered' where _partition_date = ? "
            f"and order_id = (select min(order_id) from raw.{TABLE} where _partition_date = ?)",
            [DAY, DAY],
        )
    else:
        path = store.data_path(TABLE, DAY)
        frame = pl.read_parquet(path)
        frame.with_columns(
            pl.when(pl.int_range(pl.len()) == 0)
            .then(pl.lit("tampered"))
            .otherwise(pl.col("order_status"))
            .alias("order_status")
        ).write_parquet(path)


def test_a_load_commits_reads_back_and_verifies(store, source):
    result = load(store, source, "run-1")
    assert result.committed
    manifest = store.read_manifest(TABLE, DAY)
    assert manifest.run_id == "run-1" and manifest.reconciled
    assert manifest.loaded_count == rows(store).height > 0
    verified, problems = store.read_verified(TABLE, DAY)
    assert problems == [] and verified.run_id == "run-1"
    assert store.committed_days(TABLE) == {DAY}
    first = rows(store)
    # Reloading the day leaves one version, equal in content: nothing duplicated.
    assert load(store, source, "run-2").committed
    assert store.read_manifest(TABLE, DAY).run_id == "run-2"
    assert rows(store).equals(first)
    assert rows(store).get_column("order_id").is_unique().all()


def test_both_profiles_commit_the_same_rows(source, tmp_path, ducklake):
    embedded, production = Lake(tmp_path / "lake"), DuckLakeStore(tmp_path / "scratch", ducklake)
    for table in ("orders", "payments", "customers"):
        assert load(embedded, source, "run-e", table=table).committed
        assert load(production, source, "run-p", table=table).committed
        assert rows(production, table).equals(rows(embedded, table)), table
        ledger = [store.read_manifest(table, DAY) for store in (embedded, production)]
        assert ledger[0].accounted == ledger[1].accounted and ledger[0].control == ledger[1].control
    production.close()


def test_a_load_that_does_not_reconcile_is_never_committed(store, source):
    assert load(store, source, "good").committed
    before = rows(store)
    contract = RAW_CONTRACTS[TABLE]
    with client(source) as api:
        honest = api_read(api, contract, day_filter(TABLE, DAY), attempts=1)
        # The source claims one record more than its listing holds: a record was lost on the way.
        claimed = api.control_figures(contract, day_filter(TABLE, DAY))
        lying = PartitionRead(
            honest.batches,
            control=lambda: ControlFigures(CONTROL_ENDPOINT, claimed.count + 1, claimed.key_checksum, None),
            attempts=2,
        )
        result = load_partition(store, contract, DAY, "bad", lying)
    assert not result.committed
    assert store.read_manifest(TABLE, DAY).run_id == "good"
    assert rows(store).equals(before)
    rejected = store.read_rejected(TABLE, DAY)
    assert rejected.run_id == "bad" and not rejected.reconciled
    assert store.read_verified(TABLE, DAY)[1] == []
    # The next good load commits and clears the rejected entry.
    assert load(store, source, "good-again").committed
    assert store.read_rejected(TABLE, DAY) is None


def test_rows_changed_behind_the_ledger_fail_verification(store, source):
    assert load(store, source, "run-1").committed
    tamper(store)
    manifest, problems = store.read_verified(TABLE, DAY)
    assert manifest.run_id == "run-1"
    assert len(problems) == 1 and "does not match" in problems[0], problems


def test_the_watermark_never_moves_backwards(store):
    later, earlier = datetime(2026, 3, 15, 12), datetime(2026, 3, 15, 6)
    assert store.read_watermark(TABLE) is None
    assert store.advance_watermark(TABLE, later, "fast").since == later.isoformat()
    assert store.advance_watermark(TABLE, earlier, "slow").run_id == "fast"
    assert store.read_watermark(TABLE).moment == later


def test_a_recommitted_partition_changes_its_signature_and_no_other(store, source):
    """What a dbt build takes in (`transform.dbt_days`): in both profiles, exactly the partitions committed
    since the signatures were listed."""
    other = DAY + timedelta(days=1)
    assert load(store, source, "run-1").committed and load(store, source, "run-1", day=other).committed
    listed = store.partition_signatures()
    assert set(listed) == {(TABLE, DAY), (TABLE, other)}
    assert changed_days(listed, store.partition_signatures()) == set()
    assert load(store, source, "run-2").committed
    assert changed_days(listed, store.partition_signatures()) == {DAY}


def test_a_change_capture_merge_carries_the_committed_rows(store, source):
    assert load(store, source, "day-load").committed
    before = rows(store)
    contract = RAW_CONTRACTS[TABLE]
    changed = (
        before.head(1)
        .with_columns(
            pl.col("updated_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"),
            pl.col("ordered_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"),
            pl.col("order_id").cast(pl.Int64),
        )
        .drop("_partition_date")
    )

    def records(stats):
        stats.fetched_count += changed.height
        yield changed

    with client(source) as api:
        merge = api_read(api, contract, day_filter(TABLE, DAY), records=records, attempts=1)
        result = load_partition(store, contract, DAY, "merge", merge)
    assert result.committed, result.manifest.verdict
    manifest = store.read_manifest(TABLE, DAY)
    assert manifest.run_id == "merge" and manifest.carried_count == before.height
    assert manifest.changes_merged == 1 and sum(manifest.copies_dropped.values()) == 1
    assert rows(store).equals(before)


# ------------------------------------------------------------------------------ production profile only


def _worker(env: dict[str, str], scratch: Path, url: str, run_id: str, days: list[date], **extra) -> subprocess.Popen:
    spec = {
        "profile": "production",
        "scratch": str(scratch),
        "source_url": url,
        "token": TOKEN,
        "table": TABLE,
        "run_id": run_id,
        "days": [day.isoformat() for day in days],
        **extra,
    }
    return subprocess.Popen(
        [sys.executable, str(WORKER), json.dumps(spec)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_writers_of_one_partition_take_turns_and_leave_one_correct_version(ducklake, tmp_path):
    env = catalog_env(ducklake)
    world = ShopWorld(scale=0.1)
    with DemoShopServer(world, token=TOKEN, faults=Faults(latency_ms=1500)) as slow:
        writers = [_worker(env, tmp_path / f"scratch-{n}", slow.url, f"writer-{n}", [DAY]) for n in (1, 2)]
        outputs = [writer.communicate(timeout=180) for writer in writers]
    for writer, (out, err) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, err
        assert json.loads(out)["committed"]
    store = DuckLakeStore(tmp_path / "reader", ducklake)
    manifest, problems = store.read_verified(TABLE, DAY)
    assert problems == []
    assert manifest.run_id in {"writer-1", "writer-2"}
    committed = rows(store)
    assert committed.height == manifest.loaded_count
    assert committed.get_column("order_id").is_unique().all(), "one version: no row twice"
    assert committed.get_column("order_id").sort().to_list() == sorted(r["order_id"] for r in world.orders_on(DAY))
    runs = store.connection.execute(
        f"select distinct _batch_id from raw.{TABLE} where _partition_date = ?", [DAY]
    ).fetchall()
    assert runs == [(manifest.run_id,)], "every row is of the version the ledger names"
    store.close()


def test_a_writer_that_waits_too_long_names_the_holder(ducklake, tmp_path, source):
    holder = DuckLakeStore(tmp_path / "a", ducklake)
    waiter = DuckLakeStore(tmp_path / "b", ducklake, lock_wait_seconds=1)
    with holder.locked(TABLE, DAY, f"run holder-run (pid {os.getpid()})"):
        started = time.monotonic()
        with pytest.raises(PartitionBusy, match=r"locked by run holder-run \(pid \d+\)"):
            load(waiter, source, "waiter")
        assert time.monotonic() - started < 10
    assert load(waiter, source, "waiter").committed
    for store in (holder, waiter):
        store.close()


def test_eight_writers_of_different_partitions_commit_concurrently(ducklake, tmp_path, source):
    env = catalog_env(ducklake)
    days = [DAY + timedelta(days=n) for n in range(8)]
    writers = [
        _worker(env, tmp_path / f"scratch-{n}", source.url, f"writer-{n}", days[n * 2 : n * 2 + 2]) for n in range(4)
    ]
    started = time.monotonic()
    outputs = [writer.communicate(timeout=300) for writer in writers]
    elapsed = time.monotonic() - started
    for writer, (out, err) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, err
        assert all(json.loads(line)["committed"] for line in out.splitlines())
    store = DuckLakeStore(tmp_path / "reader", ducklake)
    assert store.committed_days(TABLE) == set(days)
    for day in days:
        manifest, problems = store.read_verified(TABLE, day)
        assert problems == [], (day, problems)
        assert rows(store, day=day).height == manifest.loaded_count
    print(f"8 partitions from 4 processes committed in {elapsed:.1f} s")
    store.close()


def test_a_writer_killed_inside_its_commit_leaves_the_previous_version(ducklake, tmp_path, source):
    env = catalog_env(ducklake)
    first = _worker(env, tmp_path / "scratch", source.url, "good", [DAY])
    assert first.wait(timeout=120) == 0, first.stderr.read()
    store = DuckLakeStore(tmp_path / "reader", ducklake)
    before = rows(store)
    killed = _worker(
        {**env, "PIPELINE_FAULT_POINT": "after_data_before_manifest"}, tmp_path / "scratch", source.url, "killed", [DAY]
    )
    killed.wait(timeout=120)
    assert killed.returncode == -9, killed.stderr.read()
    assert list((tmp_path / "scratch").rglob("*.tmp")), "the killed writer left its staged files"
    manifest, problems = store.read_verified(TABLE, DAY)
    assert problems == [] and manifest.run_id == "good"
    assert rows(store).equals(before)
    # PostgreSQL ended the dead writer's session, so its turn is free: the next writer, which would give up
    # after waiting 5 s for it, commits and deletes what the dead one left.
    rerun = _worker(env, tmp_path / "scratch", source.url, "rerun", [DAY], lock_wait=5)
    assert rerun.wait(timeout=120) == 0, rerun.stderr.read()
    assert store.read_verified(TABLE, DAY)[0].run_id == "rerun"
    assert not list((tmp_path / "scratch").rglob("*.tmp"))
    store.close()


def test_the_catalog_password_is_required_and_never_shown(ducklake, tmp_path):
    wrong = type(ducklake)(**{**ducklake.__dict__, "password": "not-the-password"})
    os.environ.pop("PGPASSWORD", None)
    with pytest.raises(duckdb.Error) as failure:
        connect(wrong)
    assert "not-the-password" not in str(failure.value)
    assert CATALOG_PASSWORD not in str(failure.value)
