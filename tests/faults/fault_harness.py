"""Harness of the crash and concurrency tests: materialize the pipeline in a child Python process, which a
test can SIGKILL for real (or arm with PIPELINE_FAULT_POINT to kill itself), and fingerprint what the lake
and the warehouse hold, so states before a crash, after it and after the rerun can be compared exactly.

Run as a script, this module is the child: it materializes the `shop_pipeline` job (or a selection of it)
for one partition on the Dagster instance in $DAGSTER_HOME, with the state locations and the source taken
from its environment like any run, and prints a JSON summary as its last line of stdout. Runs that need
not be killed (setting up a good state, the rerun) go through `run_here` in the test process instead, which
saves a child's start-up (~5-10 s of imports on 2 busy cores).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline_project.ops.wait import WaitTimeout, wait_until

REPO = Path(__file__).resolve().parents[2]
MARTS = ("daily_revenue", "customer_lifetime_value", "product_performance", "web_funnel")
LINEAGE = ("_batch_id", "_loaded_at")
MANIFEST_COUNTS = ("source_reported_count", "fetched_count", "loaded_count", "quarantined_count", "copies_dropped")
DIGEST = "select count(*), md5(coalesce(string_agg(r::varchar, '|' order by r::varchar), '')) from ({}) r"


@dataclass
class ChildRun:
    """How a child materialization ended: its exit status and, if it got that far, its summary."""

    returncode: int
    summary: dict | None
    stderr: str

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL


def clean_and_changed_worlds(scale: float) -> dict:
    """The demo world a good state is built from, and the same world with 3% bad records (a changed source)."""
    from demo_source import ShopWorld

    return {"clean": ShopWorld(scale=scale), "changed": ShopWorld(scale=scale, bad_record_rate=0.03)}


def write_instance_config(home: Path, max_runtime_seconds: int) -> dict:
    """The project's run monitoring settings (dagster.yaml), with a test-sized maximum runtime. Pools and
    run queues are left out: the raw layer's own lock is what the concurrency tests exercise."""
    project = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config = {
        "telemetry": project["telemetry"],
        "run_monitoring": {**project["run_monitoring"], "max_runtime_seconds": max_runtime_seconds},
    }
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return project


def child_env(state: Path, source_url: str, token: str, **settings: str) -> dict[str, str]:
    """The environment of a run against the state directory `state` and the shop API at `source_url`."""
    env = {name: value for name, value in os.environ.items() if name != "PIPELINE_FAULT_POINT"}
    env.update(
        PYTHONPATH=str(REPO),
        DAGSTER_HOME=str(state / "dagster_home"),
        PIPELINE_LAKE_DIR=str(state / "lake"),
        PIPELINE_WAREHOUSE_PATH=str(state / "warehouse.duckdb"),
        LANDING_DIR=str(state / "landing"),
        SHOP_API_URL=source_url,
        SHOP_API_TOKEN=token,
        **settings,
    )
    (state / "dagster_home").mkdir(parents=True, exist_ok=True)
    return env


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """Run with exactly `env` as os.environ (a dbt step writes into it), restored afterwards."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_here(env: dict[str, str], partition: str, assets: list[str] | None = None):
    """Materialize in this process, on the instance and state of `env`; returns the in-process result."""
    with environment(env):
        return _execute(partition, assets, ephemeral=False)


def _execute(partition: str, assets: list[str] | None, ephemeral: bool):
    import dagster as dg
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from pipeline_project.definitions import defs

    selection = None if assets is None else [dg.AssetKey(name) for name in assets]
    tags = {ASSET_PARTITION_RANGE_START_TAG: partition, ASSET_PARTITION_RANGE_END_TAG: partition}
    job = defs.resolve_job_def("shop_pipeline")
    if ephemeral:
        instance = dg.DagsterInstance.ephemeral()
    else:
        instance = dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"])
    with instance:
        return job.execute_in_process(instance=instance, asset_selection=selection, raise_on_error=False, tags=tags)


def start(env: dict[str, str], partition: str, assets: list[str] | None = None, file_size_limit: int | None = None):
    """Start a child materializing `assets` (None: the whole job) for `partition`, in its own process group."""
    spec = {"partition": partition, "assets": assets, "file_size_limit": file_size_limit}
    return subprocess.Popen(
        [sys.executable, str(Path(__file__)), json.dumps(spec)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = 180) -> ChildRun:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"child {process.pid} did not finish within {timeout} s:\n{stderr[-3000:]}") from None
    lines = stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    return ChildRun(process.returncode, summary, stderr)


def materialize(env: dict[str, str], partition: str, assets: list[str] | None = None, **options) -> ChildRun:
    return finish(start(env, partition, assets, **options))


def kill_when_file_appears(process: subprocess.Popen, marker: Path, timeout: float = 180) -> ChildRun:
    """SIGKILL the child's whole process group (dbt included) as soon as `marker` exists."""
    with suppress(WaitTimeout):
        wait_until(
            lambda: marker.exists() or process.poll() is not None, timeout, f"{marker.name} appeared", interval=0.05
        )
    os.killpg(process.pid, signal.SIGKILL)
    run = finish(process)
    if not marker.exists():
        raise AssertionError(f"{marker.name} never appeared (exit {run.returncode}):\n{run.stderr[-3000:]}")
    _wait_until_group_is_dead(process.pid, timeout)
    return run


def _wait_until_group_is_dead(group: int, timeout: float) -> None:
    """Wait until every process of the group has exited (its files and locks are released at exit, before
    whoever adopted an orphan such as dbt gets round to reaping it)."""
    wait_until(
        lambda: not _living(group),
        timeout,
        f"every process of group {group} gone after SIGKILL",
        interval=0.05,
        describe=lambda _: f"alive: {_living(group)}",
    )


def _living(group: int) -> list[int]:
    return [pid for pid, state in _group_members(group) if state != "Z"]


def _group_members(group: int) -> list[tuple[int, str]]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == group:  # fields after the command: state, ppid, pgrp, ...
            members.append((int(stat.parent.name), fields[0]))
    return members


# ------------------------------------------------------------------------------------------ fingerprints


def _digest(connection, query: str) -> tuple[int, str]:
    return connection.execute(DIGEST.format(query)).fetchone()


def lake_fingerprint(lake_dir: Path, tables: tuple[str, ...]) -> dict[str, dict[str, object]]:
    """Per table: content digests of its raw data and quarantine (lineage columns excluded) and the counts
    in each of its partitions' manifests."""
    import duckdb

    root = Path(lake_dir)
    prints: dict[str, dict[str, object]] = {}
    with duckdb.connect() as connection:
        for table in tables:
            entries: dict[str, object] = {}
            for layer in ("raw", "quarantine"):
                files = [str(path) for path in sorted((root / layer / table).glob("*/*.parquet"))]
                query = f"select * exclude ({', '.join(LINEAGE)}) from read_parquet({files!r})"
                entries[layer] = _digest(connection, query) if files else (0, "")
            for path in sorted((root / "manifests" / table).glob("date=*.json")):
                if path.name.endswith(".rejected.json"):
                    continue
                manifest = json.loads(path.read_text())
                entries[path.stem] = tuple(str(manifest[name]) for name in MANIFEST_COUNTS)
            prints[table] = entries
    return prints


def warehouse_fingerprint(warehouse: Path) -> dict[str, tuple[int, str]]:
    """Row count and an order-independent digest of every mart, read as any consumer would (read-only)."""
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as connection:
        return {mart: _digest(connection, f"select * from marts.{mart}") for mart in MARTS}


def leftovers(state: Path) -> list[str]:
    """Temporary, pending and lock files anywhere in the lake: a finished run leaves none."""
    lake = state / "lake"
    return sorted(
        str(path.relative_to(lake))
        for path in lake.rglob("*")
        if (path.name.startswith(".") and ".tmp" in path.name) or path.suffix in (".pending", ".lock")
    )


# ------------------------------------------------------------------------------------------------ child


def _child(spec: dict) -> int:
    limit = spec["file_size_limit"]
    if limit is not None:
        # With SIGXFSZ ignored, a write past the limit fails with EFBIG instead of killing the process: the
        # same path through the code as a full disk (ENOSPC). The run's events stay in memory (ephemeral
        # instance), so only the lake's files meet the limit.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    result = _execute(spec["partition"], spec["assets"], ephemeral=limit is not None)
    errors = [
        event.step_failure_data.error.message
        for event in result.all_events
        if event.is_step_failure and event.step_failure_data.error is not None
    ]
    print(json.dumps({"run_id": result.run_id, "success": result.success, "errors": errors}))
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(_child(json.loads(sys.argv[1])))
