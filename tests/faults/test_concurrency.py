"""The raw layer under concurrency and a full disk (docs/reliability.md, the fault catalogue): two runs of one
partition at once take turns on the partition's lock and leave one correct result; a writer that waits too
long names the partition and the holder; a disk that fills up mid-write fails the run with an error naming
the partition and the file, and leaves the previous version intact."""

import re
from pathlib import Path

import dagster as dg
import pytest
from fault_harness import (
    child_env,
    clean_and_changed_worlds,
    finish,
    lake_fingerprint,
    leftovers,
    materialize,
    run_here,
    start,
)

from demo_source import DemoShopServer, Faults
from pipeline_project.lake.raw_store import Lake, PartitionBusy
from pipeline_project.quality.contracts import RAW_CONTRACTS

from harness import DAYS, TEST_SCALE, TOKEN

DAY = DAYS[0]
TABLE = "orders"
ASSET = f"raw_{TABLE}"
# Every response of the slow source takes this long, so each load holds the partition for seconds and the
# two runs, started together, certainly overlap.
SLOW_RESPONSE_MS = 4000
# Below the size of the orders partition's data file (~15 KB), above the lock and manifest files.
FILE_SIZE_LIMIT = 4096


@pytest.fixture(scope="module")
def worlds():
    return clean_and_changed_worlds(TEST_SCALE)


@pytest.fixture(scope="module")
def sources(worlds):
    with (
        DemoShopServer(worlds["clean"], token=TOKEN, faults=Faults(latency_ms=SLOW_RESPONSE_MS)) as slow,
        DemoShopServer(worlds["clean"], token=TOKEN) as clean,
        DemoShopServer(worlds["changed"], token=TOKEN) as changed,
    ):
        yield {"slow": slow, "clean": clean, "changed": changed}


def new_state(path: Path) -> Path:
    (path / "lake").mkdir(parents=True)
    (path / "landing").mkdir()
    return path


def clean_run(path: Path, source: DemoShopServer) -> dict:
    """What a single, undisturbed run of the partition leaves in the lake."""
    state = new_state(path)
    assert run_here(child_env(state, source.url, TOKEN), DAY.isoformat(), [ASSET]).success
    return lake_fingerprint(state / "lake", (TABLE,))[TABLE]


def step_window(home: Path, run_id: str) -> tuple[float, float]:
    """When the run's ingestion step started and finished, from the run's event log."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        events = {
            event.dagster_event_type: event.timestamp for event in instance.all_logs(run_id) if event.step_key == ASSET
        }
    return events[dg.DagsterEventType.STEP_START], events[dg.DagsterEventType.STEP_SUCCESS]


@pytest.mark.slow
def test_two_runs_of_one_partition_at_once_take_turns_and_leave_one_correct_result(tmp_path, sources):
    state = new_state(tmp_path / "state")
    # One instance per run: the runs meet only in the lake.
    homes = [state / "dagster_home_1", state / "dagster_home_2"]
    for home in homes:
        home.mkdir()
    children = [
        start({**child_env(state, sources["slow"].url, TOKEN), "DAGSTER_HOME": str(home)}, DAY.isoformat(), [ASSET])
        for home in homes
    ]
    runs = [finish(child) for child in children]

    assert [run.returncode for run in runs] == [0, 0], [run.stderr[-2000:] for run in runs]
    windows = [step_window(home, run.summary["run_id"]) for home, run in zip(homes, runs, strict=True)]
    (first_start, first_end), (second_start, second_end) = sorted(windows, key=lambda window: window[1])
    assert second_start < first_end, "the two runs were loading the partition at the same time"
    # The later run took the lock only once the earlier one had committed, then waited on the slow source.
    assert second_end - first_end >= SLOW_RESPONSE_MS / 1000 / 2, (windows, "the loads were not serialized")
    lake = Lake(state / "lake")
    manifest, problems = lake.read_verified(TABLE, DAY)
    assert problems == [] and manifest.reconciled
    last_to_finish = runs[windows.index((second_start, second_end))]
    assert manifest.run_id == last_to_finish.summary["run_id"]
    assert lake_fingerprint(state / "lake", (TABLE,))[TABLE] == clean_run(tmp_path / "single", sources["clean"])
    assert leftovers(state) == []


def test_a_writer_that_waits_too_long_names_the_partition_and_the_holder(tmp_path):
    lake = Lake(tmp_path / "lake", lock_wait_seconds=0.3)
    contract = RAW_CONTRACTS[TABLE]
    busy = pytest.raises(PartitionBusy, match=f"raw_{TABLE} {DAY}: the partition is locked by run holding-run \\(pid ")
    with lake.writer(contract, DAY, "holding-run"), busy, lake.writer(contract, DAY, "waiting-run"):
        pass
    with lake.writer(contract, DAY, "after-release") as writer:
        assert writer.run_id == "after-release", "the lock is free again once its holder closed"


@pytest.mark.slow
def test_a_full_disk_fails_the_run_clearly_and_keeps_the_previous_partition(tmp_path, sources):
    state = new_state(tmp_path / "state")
    env = child_env(state, sources["clean"].url, TOKEN)
    assert run_here(env, DAY.isoformat(), [ASSET]).success
    previous = lake_fingerprint(state / "lake", (TABLE,))
    changed_env = child_env(state, sources["changed"].url, TOKEN)

    full = materialize(changed_env, DAY.isoformat(), [ASSET], file_size_limit=FILE_SIZE_LIMIT)

    assert full.returncode == 1, full.stderr[-3000:]
    [error] = full.summary["errors"]
    partition = f"{TABLE}/date={DAY}"
    staged_file = rf"{re.escape(str(state / 'lake'))}/(raw|quarantine)/{partition}/\.data\.parquet\.[\w-]+\.tmp"
    assert re.search(
        rf"raw_{TABLE} {DAY}: could not write {staged_file}: File too large; nothing was committed, "
        "the partition keeps its previous version",
        error,
    ), error
    assert lake_fingerprint(state / "lake", (TABLE,)) == previous
    assert leftovers(state) == []
    manifest, problems = Lake(state / "lake").read_verified(TABLE, DAY)
    assert problems == [] and manifest.reconciled

    assert run_here(changed_env, DAY.isoformat(), [ASSET]).success
    assert lake_fingerprint(state / "lake", (TABLE,))[TABLE] == clean_run(tmp_path / "single", sources["changed"])
