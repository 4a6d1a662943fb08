"""Landing files under fault: every file dropped into `incoming/` ends in exactly one of `archived/` (its
records in the partition, bad records quarantined) or `rejected/` (with a reason file), whatever arrives
(oversized, symlinked, unsafely named, binary or truncated files), however often the sensor ticks, and even
when a run dies holding its claim. Each test ends with the invariants checked on the data itself."""

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from demo_source import ShopWorld, write_landing_files
from pipeline_project.ingest import landing_assets as ingestion
from pipeline_project.ingest.landing_zone import LandingDay, LandingDayBusy
from pipeline_project.ingest.sensors import landing_file_sensor
from pipeline_project.lake.raw_store import Lake
from pipeline_project.resources import LakeResource, LandingResource

from harness import DAYS, TEST_SCALE

DAY = DAYS[0]
TABLE = "web_events"
WEB_EVENTS = ingestion.build_landing_ingestion_asset(TABLE)
GOOD_LINE = (
    b'{"event_id":"e-extra-%d","session_id":"s-extra","customer_id":null,"event_type":"page_view",'
    b'"product_id":null,"page_path":"/","occurred_at":"%s"}\n'
)


def folder(state: Path, stage: str) -> Path:
    return state / "landing" / TABLE / stage / DAY.isoformat()


def land(state: Path, world: ShopWorld) -> dict[str, int]:
    """Drop the demo source's four files of DAY; return file name -> records in it."""
    return {path.name: record_lines(path.read_bytes()) for path in write_landing_files(state / "landing", DAY, world)}


def record_lines(content: bytes) -> int:
    return sum(1 for line in content.splitlines() if line.strip())


def extra_lines(count: int, start: int = 0) -> bytes:
    return b"".join(GOOD_LINE % (start + n, DAY.strftime("%Y-%m-%dT12:00:00Z").encode()) for n in range(count))


def materialize(instance, state: Path, max_file_bytes: int | None = None) -> dg.ExecuteInProcessResult:
    landing = LandingResource(directory=str(state / "landing"))
    if max_file_bytes is not None:
        landing = LandingResource(directory=str(state / "landing"), max_file_bytes=max_file_bytes)
    return dg.materialize(
        [WEB_EVENTS],
        partition_key=DAY.isoformat(),
        instance=instance,
        resources={"landing": landing, "lake": LakeResource(root=str(state / "lake"))},
    )


def raw_rows(state: Path) -> list[tuple]:
    """The partition's rows, lineage columns excluded, in file order."""
    lake = Lake(state / "lake")
    with duckdb.connect() as connection:
        return connection.execute(
            "select * exclude (_batch_id, _loaded_at) from read_parquet(?)", [str(lake.data_path(TABLE, DAY))]
        ).fetchall()


def quarantined_ids(state: Path) -> list[str | None]:
    with duckdb.connect() as connection:
        rows = connection.execute(
            "select event_id from read_parquet(?)", [str(Lake(state / "lake").quarantine_path(TABLE, DAY))]
        ).fetchall()
    return [event_id for (event_id,) in rows]


def quarantined_rows(state: Path) -> dict[str, list]:
    """The quarantine's reason and rejected values of the rows without a key (lines that are not records)."""
    with duckdb.connect() as connection:
        rows = connection.execute(
            "select _quarantine_reason, _rejected_values from read_parquet(?) where event_id is null",
            [str(Lake(state / "lake").quarantine_path(TABLE, DAY))],
        ).fetchall()
    return {"_quarantine_reason": [r for r, _ in rows], "_rejected_values": [v for _, v in rows]}


def reason(state: Path, stored_name: str) -> dict:
    return json.loads((folder(state, "rejected") / f"{stored_name}.reason.json").read_text())


def landing_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == ingestion.LANDING_FILES_CHECK]
    return evaluation


def assert_invariants(state: Path, accepted: dict[str, int], rejected: set[str], quarantined: int = 0) -> None:
    """Raw rows = records of accepted files - quarantined; every file archived or rejected, exactly once."""
    rows = raw_rows(state)
    assert len(rows) == sum(accepted.values()) - quarantined
    assert len({row[0] for row in rows}) == len(rows), "an event was loaded twice"
    assert len(quarantined_ids(state)) == quarantined
    manifest = Lake(state / "lake").read_manifest(TABLE, DAY)
    assert manifest.source_files == sorted(accepted)
    assert manifest.reconciled and not Lake(state / "lake").verify(manifest)
    archived = {p.name for p in folder(state, "archived").iterdir()}
    rejected_files = {p.name for p in folder(state, "rejected").iterdir()} if rejected else set()
    assert archived == set(accepted)
    assert {n for n in rejected_files if not n.endswith(".reason.json")} == rejected
    assert {n.removesuffix(".reason.json") for n in rejected_files if n.endswith(".reason.json")} == rejected
    assert not [p for p in folder(state, "incoming").iterdir() if not p.name.startswith(".")]
    assert not list(folder(state, "processing").parent.glob(f"{DAY.isoformat()}/*/*")), "a file stayed claimed"


def test_an_oversized_file_is_rejected_before_it_is_parsed(state_dir, world, instance):
    accepted = land(state_dir, world)
    cap = max(path.stat().st_size for path in folder(state_dir, "incoming").iterdir())
    # Binary, so parsing it would have rejected it as malformed at line 1 instead.
    oversized = b"\x00\xff" * (cap // 2 + 1)
    (folder(state_dir, "incoming") / "huge.jsonl").write_bytes(oversized)

    result = materialize(instance, state_dir, max_file_bytes=cap)

    assert result.success
    found = reason(state_dir, "huge.jsonl")
    assert found["reason"] == "too_large" and f"LANDING_MAX_FILE_BYTES={cap}" in found["detail"]
    assert found["first_bad_line"] is None, "the file was parsed"
    assert found["size"] == len(oversized) and found["sha256"] == hashlib.sha256(oversized).hexdigest()
    assert found["file"] == "huge.jsonl" and found["run_id"] == result.run_id
    assert datetime.fromisoformat(found["rejected_at"])
    assert (folder(state_dir, "rejected") / "huge.jsonl").read_bytes() == oversized
    check = landing_check(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["rejected_files"].value[DAY.isoformat()][0]["reason"] == "too_large"
    assert_invariants(state_dir, accepted, rejected={"huge.jsonl"})
    assert len(raw_rows(state_dir)) == len(world.web_events_on(DAY))


def test_a_symlink_is_rejected_and_its_target_left_untouched(state_dir, world, instance, tmp_path):
    accepted = land(state_dir, world)
    target = tmp_path / "outside" / "secret.jsonl"
    target.parent.mkdir()
    target.write_bytes(extra_lines(5))
    (folder(state_dir, "incoming") / "link.jsonl").symlink_to(target)

    result = materialize(instance, state_dir)

    assert result.success
    moved = folder(state_dir, "rejected") / "link.jsonl"
    assert moved.is_symlink() and os.readlink(moved) == str(target)
    assert target.read_bytes() == extra_lines(5) and target.parent.iterdir().__next__() == target
    found = reason(state_dir, "link.jsonl")
    assert found["reason"] == "symlink" and found["sha256"] is None and found["first_bad_line"] is None
    assert not [row for row in raw_rows(state_dir) if row[0].startswith("e-extra")]
    assert_invariants(state_dir, accepted, rejected={"link.jsonl"})


def test_unsafe_names_and_nested_folders_are_rejected_under_safe_names(state_dir, world, instance):
    accepted = land(state_dir, world)
    unsafe = ["..\\..\\outside.jsonl", "double..dot.jsonl", "-rf.jsonl", "line\nbreak.jsonl"]
    for number, name in enumerate(unsafe):
        (folder(state_dir, "incoming") / name).write_bytes(extra_lines(3, start=10 * number))
    nested = folder(state_dir, "incoming") / "nested"
    nested.mkdir()
    (nested / "inner.jsonl").write_bytes(extra_lines(3, start=100))

    result = materialize(instance, state_dir)

    assert result.success
    reasons = [json.loads(p.read_text()) for p in folder(state_dir, "rejected").glob("*.reason.json")]
    by_file = {r["file"]: r["reason"] for r in reasons}
    assert by_file == {**dict.fromkeys(unsafe, "unsafe_name"), "nested": "not_a_regular_file"}
    stored = {p.name for p in folder(state_dir, "rejected").iterdir() if not p.name.endswith(".reason.json")}
    assert len(stored) == 5 and all(name.startswith("unsafe-name-") for name in stored)
    (nested_inner,) = folder(state_dir, "rejected").glob("unsafe-name-*/inner.jsonl")
    assert nested_inner.read_bytes() == extra_lines(3, start=100)
    assert not list(state_dir.rglob("outside.jsonl"))
    assert not [row for row in raw_rows(state_dir) if row[0].startswith("e-extra")]
    assert_invariants(state_dir, accepted, rejected=stored)


def test_a_binary_file_is_rejected_and_a_truncated_one_loads_all_but_its_cut_line(
    state_dir, world, instance, monkeypatch
):
    # Small batches, so the truncated file's bad line is found many batches after its good lines were read.
    monkeypatch.setattr(ingestion, "BATCH_ROWS", 500)
    accepted = land(state_dir, world)
    binary = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    complete = extra_lines(1_234)
    truncated = complete[: len(complete) - 40]
    (folder(state_dir, "incoming") / "image.jsonl").write_bytes(binary)
    (folder(state_dir, "incoming") / "truncated.jsonl").write_bytes(truncated)
    accepted["truncated.jsonl"] = 1_234

    result = materialize(instance, state_dir)

    assert result.success
    image = reason(state_dir, "image.jsonl")
    assert (image["reason"], image["first_bad_line"]) == ("binary", 1)
    assert {
        r["file"]: r["reason"] for r in landing_check(result).metadata["rejected_files"].value[DAY.isoformat()]
    } == {"image.jsonl": "binary"}
    assert_invariants(state_dir, accepted, rejected={"image.jsonl"}, quarantined=1)
    assert len([row for row in raw_rows(state_dir) if row[0].startswith("e-extra")]) == 1_233
    cut = quarantined_rows(state_dir)
    assert cut["_quarantine_reason"] == ["line:malformed_json (truncated.jsonl:1234)"]
    assert json.loads(cut["_rejected_values"][0])["line"] == truncated.splitlines()[-1].decode()
    manifest = Lake(state_dir / "lake").read_manifest(TABLE, DAY)
    assert manifest.fetched_count == sum(accepted.values()), "every line read is in the ledger"


def test_a_bad_line_is_quarantined_alone_with_its_file_and_line(state_dir, world, instance):
    accepted = land(state_dir, world)
    lines = [
        b"\xef\xbb\xbf" + (GOOD_LINE % (0, b"2026-03-14T12:00:00Z")).replace(b"\n", b"\r\n"),  # BOM and CRLF: fine
        b"not json at all\r\n",
        b"[1, 2, 3]\n",
        b"\xff\xfe not utf-8\n",
        GOOD_LINE % (1, b"2026-03-14T12:00:00Z"),
    ]
    (folder(state_dir, "incoming") / "mixed.jsonl").write_bytes(b"".join(lines))
    accepted["mixed.jsonl"] = len(lines)

    result = materialize(instance, state_dir)

    assert result.success and landing_check(result).passed
    assert_invariants(state_dir, accepted, rejected=set(), quarantined=3)
    assert sorted(quarantined_rows(state_dir)["_quarantine_reason"]) == [
        "line:json_list_not_object (mixed.jsonl:3)",
        "line:malformed_json (mixed.jsonl:2)",
        "line:not_utf8 (mixed.jsonl:4)",
    ]
    assert {row[0] for row in raw_rows(state_dir) if row[0].startswith("e-extra")} == {"e-extra-0", "e-extra-1"}


def test_bad_records_are_quarantined_and_their_file_archived(state_dir, instance):
    world = ShopWorld(scale=TEST_SCALE, bad_record_rate=0.03)
    accepted = land(state_dir, world)
    bad = world.bad_records(TABLE, DAY)
    assert bad
    # A blank line holds no record, and an empty file is a file with no records: both are accepted.
    first = sorted(folder(state_dir, "incoming").iterdir())[0]
    lines = first.read_bytes().splitlines(keepends=True)
    first.write_bytes(b"".join(lines[:2]) + b"\n" + b"".join(lines[2:]))
    (folder(state_dir, "incoming") / "quiet-window.jsonl").write_bytes(b"")
    accepted["quiet-window.jsonl"] = 0

    result = materialize(instance, state_dir)

    assert result.success and landing_check(result).passed
    assert set(quarantined_ids(state_dir)) == set(bad)
    assert not folder(state_dir, "rejected").exists()
    assert_invariants(state_dir, accepted, rejected=set(), quarantined=len(bad))


def _tick(instance, state: Path, cursor: str | None = None):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"landing": LandingResource(directory=str(state / "landing"))},
    )
    return landing_file_sensor(context), context.cursor


def test_two_sensor_ticks_process_each_file_once(state_dir, world, instance):
    accepted = land(state_dir, world)
    (request,), cursor = _tick(instance, state_dir)
    again, _ = _tick(instance, state_dir, cursor)
    assert isinstance(again, dg.SkipReason)
    (lost_cursor,), _ = _tick(instance, state_dir)
    assert lost_cursor.run_key == request.run_key, "a tick that lost its cursor must ask for the same run"
    assert request.partition_key == DAY.isoformat()

    first = materialize(instance, state_dir)
    rows_after_first = raw_rows(state_dir)
    # A second run for the same files (as if a run key had slipped through) finds nothing left to claim.
    second = materialize(instance, state_dir)

    assert first.success and second.success
    claims = [e for e in (first, second) for e in e.asset_materializations_for_node(f"raw_{TABLE}")]
    assert [len(e.metadata["landing_files"].value) for e in claims] == [4, 4]
    assert raw_rows(state_dir) == rows_after_first
    assert isinstance(_tick(instance, state_dir, cursor)[0], dg.SkipReason)
    assert_invariants(state_dir, accepted, rejected=set())
    assert len(rows_after_first) == len(world.web_events_on(DAY))


CLAIM_AND_DIE = """
import os, signal, sys
from datetime import date
from pipeline_project.ingest.landing_zone import LandingDay
day = LandingDay(sys.argv[1], "web_events", date.fromisoformat(sys.argv[2]), "run-that-died")
with day.locked():
    day.claim()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_files_claimed_by_a_run_that_died_are_loaded_by_the_next_run(state_dir, world, instance):
    accepted = land(state_dir, world)
    died = subprocess.run(
        [sys.executable, "-c", CLAIM_AND_DIE, str(state_dir / "landing"), DAY.isoformat()], capture_output=True
    )
    assert died.returncode == -9, died.stderr
    stranded = folder(state_dir, "processing") / "run-that-died"
    assert sorted(p.name for p in stranded.iterdir()) == sorted(accepted)
    assert isinstance(_tick(instance, state_dir)[0], dg.SkipReason), "nothing is left in incoming"

    result = materialize(instance, state_dir)

    assert result.success
    assert not stranded.exists()
    assert_invariants(state_dir, accepted, rejected=set())
    assert len(raw_rows(state_dir)) == len(world.web_events_on(DAY))


def test_a_later_file_for_a_loaded_day_adds_to_its_rows_and_reruns_are_identical(state_dir, world, instance):
    accepted = land(state_dir, world)
    late_name = sorted(accepted)[-1]
    late = folder(state_dir, "incoming") / late_name
    held_back = late.read_bytes()
    late.unlink()
    assert materialize(instance, state_dir).success
    assert len(raw_rows(state_dir)) == sum(n for name, n in accepted.items() if name != late_name)

    late.write_bytes(held_back)
    assert materialize(instance, state_dir).success
    after_late_file = raw_rows(state_dir)
    assert_invariants(state_dir, accepted, rejected=set())
    assert len(after_late_file) == len(world.web_events_on(DAY))

    land(state_dir, world)  # the whole day delivered again, byte for byte: replaces, never duplicates
    assert materialize(instance, state_dir).success
    assert raw_rows(state_dir) == after_late_file
    assert_invariants(state_dir, accepted, rejected=set())


def test_a_day_being_loaded_by_a_live_run_is_not_claimed_twice(state_dir, world):
    accepted = land(state_dir, world)
    holder = LandingDay(state_dir / "landing", TABLE, DAY, "run-holding-the-day")
    waiting = LandingDay(state_dir / "landing", TABLE, DAY, "run-arriving-second")
    busy = pytest.raises(LandingDayBusy, match="being loaded by run run-holding-the-day")
    with holder.locked(), busy, waiting.locked(wait_seconds=0.3):
        waiting.claim()
    assert sorted(p.name for p in folder(state_dir, "incoming").iterdir()) == sorted(accepted)
    assert not (folder(state_dir, "processing") / "run-arriving-second").exists()
