"""Symbolic links planted anywhere in a table's landing folders: the table folder itself, a stage folder
(`incoming/`, `processing/`, `archived/`, `rejected/`), a day's folder, a run's claim folder, the day's lock
file or a file in `archived/`. Each points into a directory outside the landing root that looks like a
landing layout full of records, so following it anywhere would read, move, write or delete something there.

Every test proves the outside untouched (the same entries, byte for byte, with unchanged modification times,
and unchanged access times where the filesystem records them, so not even listed or read), that none of its
records reached the raw layer, that no landed file was lost, and that the run failed with an error naming the
link, or rejected the linked file with a reason file."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipeline_project.ingest import landing_assets as ingestion
from pipeline_project.ingest.landing_fs import LandingLinkError
from pipeline_project.ingest.sensors import landing_file_sensor
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import RAW_CONTRACTS
from pipeline_project.resources import LakeResource, LandingResource

from harness import DAYS

DAY = DAYS[0]
KEY = DAY.isoformat()
TABLE = "web_events"
WEB_EVENTS = ingestion.build_landing_ingestion_asset(TABLE)
LINE = (
    b'{"event_id":"%s-%d","session_id":"s-1","customer_id":null,"event_type":"page_view",'
    b'"product_id":null,"page_path":"/","occurred_at":"' + DAY.strftime("%Y-%m-%dT12:00:00Z").encode() + b'"}\n'
)
LANDED = {"a.jsonl": 3, "b.jsonl": 2}


def lines(prefix: str, count: int) -> bytes:
    return b"".join(LINE % (prefix.encode(), n) for n in range(count))


# ------------------------------------------------------------------------------ the world outside the root


def build_outside(root: Path) -> Path:
    """A directory outside the landing root laid out like a table's landing folders, every file full of
    records whose ids start with `outside`."""
    for relative in (
        "victim.jsonl",
        f"incoming/{KEY}/victim.jsonl",
        f"processing/{KEY}/victim.jsonl",
        f"processing/{KEY}/run-own/victim.jsonl",
        f"archived/{KEY}/victim.jsonl",
        f"archived/{KEY}/a.jsonl",
        f"rejected/{KEY}/victim.jsonl",
        f"rejected/{KEY}/a.jsonl",
        f"rejected/{KEY}/a.jsonl.reason.json",
    ):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lines(f"outside-{relative.replace('/', '-')}", 4))
    return root


def _all_entries(root: Path) -> list[Path]:
    found = [root]
    for folder, folders, files in os.walk(root):
        found += [Path(folder) / name for name in (*folders, *files)]
    return sorted(found)


def atime_is_recorded(scratch: Path) -> bool:
    """Whether reading a file here moves its access time (relatime does after a write; noatime never)."""
    probe = scratch / "atime-probe"
    probe.write_bytes(b"x")
    info = os.stat(probe)
    os.utime(probe, ns=(info.st_mtime_ns - 10**9, info.st_mtime_ns))
    before = os.stat(probe).st_atime_ns
    probe.read_bytes()
    recorded = os.stat(probe).st_atime_ns != before
    probe.unlink()
    return recorded


class Untouched:
    """What is outside, taken before the run and compared after it: first by `lstat` alone (a listing or a
    read would move the access times that prove nothing else listed or read them), then by content."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries = _all_entries(root)
        self.contents = {p: p.read_bytes() for p in self.entries if p.is_file() and not p.is_symlink()}
        for path in self.entries:
            info = os.lstat(path)
            # An access time older than the modification time: any read or listing from now on moves it.
            os.utime(path, ns=(info.st_mtime_ns - 10**9, info.st_mtime_ns), follow_symlinks=False)
        self.with_atime = atime_is_recorded(root.parent)
        self.stamps = self._stamps()

    def _stamps(self) -> dict[Path, tuple]:
        stamps = {}
        for path in self.entries:
            info = os.lstat(path)
            stamps[path] = (info.st_mode, info.st_size, info.st_mtime_ns, info.st_atime_ns if self.with_atime else 0)
        return stamps

    def assert_untouched(self) -> None:
        after = self._stamps()
        changed = [str(p.relative_to(self.root)) for p in self.entries if after[p] != self.stamps[p]]
        assert not changed, f"outside the landing root, read, listed or written: {changed}"
        assert _all_entries(self.root) == self.entries, "entries outside the landing root were created or deleted"
        assert {p: p.read_bytes() for p in self.contents} == self.contents


# ---------------------------------------------------------------------------------- the landing side


def table_dir(state: Path) -> Path:
    return state / "landing" / TABLE


def land(state: Path) -> dict[str, bytes]:
    incoming = table_dir(state) / "incoming" / KEY
    incoming.mkdir(parents=True, exist_ok=True)
    landed = {name: lines(f"landed-{name}", count) for name, count in LANDED.items()}
    for name, content in landed.items():
        (incoming / name).write_bytes(content)
    return landed


def plant(state: Path, relative: str, target: Path) -> Path:
    """Replace `<table>/<relative>` (whatever is there) by a symbolic link to `target`."""
    link = table_dir(state) / relative if relative else table_dir(state)
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=target.is_dir())
    return link


def still_landed(state: Path, landed: dict[str, bytes]) -> None:
    """Every landed file is still waiting, byte for byte, in incoming/ or a claim folder of processing/."""
    folders = [table_dir(state) / "incoming" / KEY]
    processing = table_dir(state) / "processing" / KEY
    if not processing.parent.is_symlink() and not processing.is_symlink() and processing.is_dir():
        folders += [p for p in processing.iterdir() if p.is_dir() and not p.is_symlink()]
    waiting = {}
    for folder in folders:
        waiting |= {p.name: p.read_bytes() for p in folder.iterdir()}
    assert waiting == landed


def raw_ids(state: Path) -> list[str]:
    path = Lake(state / "lake").data_path(TABLE, DAY)
    with duckdb.connect() as connection:
        return [row[0] for row in connection.execute("select event_id from read_parquet(?)", [str(path)]).fetchall()]


def materialize(instance, state: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [WEB_EVENTS],
        partition_key=KEY,
        instance=instance,
        resources={
            "landing": LandingResource(directory=str(state / "landing")),
            "lake": LakeResource(root=str(state / "lake")),
        },
        raise_on_error=False,
    )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    (failure,) = result.get_step_failure_events()
    data = failure.step_failure_data
    return " ".join(
        filter(None, [data.error.to_string() if data.error else "", getattr(data.user_failure_data, "description", "")])
    )


# --------------------------------------------------------------------------------------------- tests

FOLDER_LINKS = [
    "",  # the table folder itself
    "incoming",
    f"incoming/{KEY}",
    "processing",
    f"processing/{KEY}",
    f"processing/{KEY}.lock",
    "archived",
    f"archived/{KEY}",
    "rejected",
    f"rejected/{KEY}",
]


@pytest.mark.parametrize("relative", FOLDER_LINKS, ids=lambda r: r.replace(KEY, "DAY") or "table")
def test_a_linked_landing_folder_fails_the_run_naming_it_and_nothing_outside_is_touched(
    state_dir, instance, tmp_path, relative
):
    outside = build_outside(tmp_path / "outside")
    # Where the link replaces the table, incoming/ or the day's incoming folder, there is nothing else landed.
    landed = {} if relative in ("", "incoming", f"incoming/{KEY}") else land(state_dir)
    if relative.startswith("rejected"):
        (table_dir(state_dir) / "incoming" / KEY / "-unsafe name.jsonl").write_bytes(lines("unsafe", 1))
        landed["-unsafe name.jsonl"] = lines("unsafe", 1)
    target = outside / "victim.jsonl" if relative.endswith(".lock") else outside / relative
    link = plant(state_dir, relative, target)
    untouched = Untouched(outside)

    result = materialize(instance, state_dir)

    assert not result.success
    assert f"{link} is a symbolic link; landing paths are never followed" in failure_text(result)
    assert len(result.get_step_failure_events()) == 1, "a link does not go away on its own: no step retries"
    untouched.assert_untouched()
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert not Lake(state_dir / "lake").data_path(TABLE, DAY).exists(), "nothing may be committed"
    if landed:
        still_landed(state_dir, landed)


@pytest.mark.parametrize("run_folder", ["run-own", "run-that-died"])
def test_a_linked_claim_folder_in_processing_is_refused(state_dir, tmp_path, run_folder):
    """A run's own claim folder, or one of a run that died, planted as a link (a run id is known here)."""
    outside = build_outside(tmp_path / "outside")
    landed = land(state_dir)
    link = plant(state_dir, f"processing/{KEY}/{run_folder}", outside / "processing" / KEY / "run-own")
    untouched = Untouched(outside)

    refused = f"^{re.escape(str(link))} is a symbolic link; landing paths are never followed$"
    with pytest.raises(LandingLinkError, match=refused):
        ingestion.load_landing_partition(
            Lake(state_dir / "lake"), state_dir / "landing", RAW_CONTRACTS[TABLE], DAY, "run-own", 1 << 20
        )

    untouched.assert_untouched()
    still_landed(state_dir, landed)
    assert not Lake(state_dir / "lake").data_path(TABLE, DAY).exists()


def test_after_the_link_is_removed_the_waiting_files_load(state_dir, instance, tmp_path):
    outside = build_outside(tmp_path / "outside")
    landed = land(state_dir)
    link = plant(state_dir, f"archived/{KEY}", outside / "archived" / KEY)
    untouched = Untouched(outside)
    assert not materialize(instance, state_dir).success

    link.unlink()
    result = materialize(instance, state_dir)

    assert result.success
    assert sorted(raw_ids(state_dir)) == sorted(
        f"landed-{name}-{n}" for name, count in LANDED.items() for n in range(count)
    )
    assert sorted(p.name for p in (table_dir(state_dir) / "archived" / KEY).iterdir()) == sorted(landed)
    untouched.assert_untouched()


def test_a_file_in_archived_that_links_elsewhere_is_rejected_and_its_target_never_read(state_dir, instance, tmp_path):
    landed = land(state_dir)
    assert materialize(instance, state_dir).success
    outside = build_outside(tmp_path / "outside")
    archived = table_dir(state_dir) / "archived" / KEY
    (archived / "a.jsonl").unlink()
    (archived / "a.jsonl").symlink_to(outside / "victim.jsonl")
    (archived / "planted.jsonl").symlink_to(outside / "archived" / KEY / "victim.jsonl")
    untouched = Untouched(outside)
    (table_dir(state_dir) / "incoming" / KEY).mkdir(parents=True, exist_ok=True)
    (table_dir(state_dir) / "incoming" / KEY / "c.jsonl").write_bytes(lines("landed-c.jsonl", 2))

    result = materialize(instance, state_dir)

    assert result.success
    untouched.assert_untouched()
    ids = raw_ids(state_dir)
    assert not [i for i in ids if i.startswith("outside")]
    assert sorted(ids) == sorted([f"landed-b.jsonl-{n}" for n in range(2)] + [f"landed-c.jsonl-{n}" for n in range(2)])
    rejected = table_dir(state_dir) / "rejected" / KEY
    for name in ("a.jsonl", "planted.jsonl"):
        reason = json.loads((rejected / f"{name}.reason.json").read_text())
        assert (reason["reason"], reason["file"], reason["sha256"]) == ("symlink", name, None)
        assert (rejected / name).is_symlink(), "the link itself is moved, never what it points to"
    assert sorted(p.name for p in archived.iterdir()) == ["b.jsonl", "c.jsonl"]
    assert landed["b.jsonl"] == (archived / "b.jsonl").read_bytes()


@pytest.mark.parametrize("relative", ["", "incoming", f"incoming/{KEY}"], ids=["table", "incoming", "incoming-DAY"])
def test_the_sensor_never_lists_through_a_linked_folder(state_dir, instance, tmp_path, relative):
    outside = build_outside(tmp_path / "outside")
    plant(state_dir, relative, outside / relative)
    untouched = Untouched(outside)

    context = dg.build_sensor_context(
        instance=instance, resources={"landing": LandingResource(directory=str(state_dir / "landing"))}
    )
    outcome = landing_file_sensor(context)

    assert isinstance(outcome, dg.SkipReason), "no run may be asked for files behind a link"
    untouched.assert_untouched()


def test_the_landing_check_reports_a_linked_reason_file_without_reading_it(state_dir, tmp_path):
    outside = build_outside(tmp_path / "outside")
    rejected = table_dir(state_dir) / "rejected" / KEY
    rejected.mkdir(parents=True)
    link = rejected / "a.jsonl.reason.json"
    link.symlink_to(outside / "rejected" / KEY / "a.jsonl.reason.json")
    untouched = Untouched(outside)

    check = ingestion.landing_files_result(TABLE, state_dir / "landing", [DAY, date(2026, 3, 15)])

    assert not check.passed
    (found,) = check.metadata["rejected_files"].value[KEY]
    assert found["file"] == "a.jsonl" and found["reason"] == "unreadable_reason_file"
    assert found["detail"] == f"{link} is a symbolic link; landing paths are never followed"
    untouched.assert_untouched()
