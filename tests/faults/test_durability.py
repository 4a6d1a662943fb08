"""A raw-layer commit is durable against power loss, not only against SIGKILL: the system calls of a real
commit, traced with strace in a child process, show every file fsynced before it is renamed into place, the
directory of each new name fsynced after the rename, every directory created fsynced into its parent before
the commit point, and the manifest renamed last. (A power cut keeps exactly what was fsynced, so this order
is what decides whether a committed manifest can describe files that are not on disk.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (.ci/run installs it)")

REPO = Path(__file__).resolve().parents[2]
COMMIT = textwrap.dedent(
    """
    import sys
    from datetime import date
    import polars as pl
    from pipeline_project.quality.contracts import RAW_CONTRACTS
    from pipeline_project.ingest.loading import PartitionRead, load_partition
    from pipeline_project.lake.raw_store import Lake
    from pipeline_project.ingest.reconcile import CONTROL_ENDPOINT, ControlFigures

    order = {"order_id": 1, "customer_id": 7, "order_status": "paid", "channel": "web", "currency": "USD",
             "ordered_at": "2026-03-14T10:00:00Z", "updated_at": "2026-03-14T10:05:00Z"}

    def batches(stats):
        stats.fetched_count = 1
        yield pl.DataFrame([order])

    read = PartitionRead(batches, control=lambda: ControlFigures.of_keys(CONTROL_ENDPOINT, ["1"]), attempts=1)
    print("COMMIT-START", flush=True)
    result = load_partition(Lake(sys.argv[1]), RAW_CONTRACTS["orders"], date(2026, 3, 14), "run-1", read)
    assert result.committed, result.manifest.verdict
    """
)
CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(?P<name>\w+)\((?P<args>.*)\)\s+=\s+(?P<result>-?\d+)")
QUOTED = re.compile(r'"([^"]*)"')
FD_PATH = re.compile(r"^\d+<(?P<path>[^>]*)>")


def traced_commit(lake: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(call, paths) of every mkdir, rename and fsync of a commit into a fresh lake, in order."""
    trace = lake.parent / "trace.txt"
    subprocess.run(
        [
            "strace",
            "-f",
            "-y",
            "-qq",
            "-o",
            str(trace),
            "-e",
            "trace=mkdir,mkdirat,rename,renameat,renameat2,fsync,fdatasync,write",
            sys.executable,
            "-c",
            COMMIT,
            str(lake),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    calls, started = [], False
    for line in trace.read_text().splitlines():
        match = CALL.match(line)
        if not match or int(match["result"]) < 0:
            continue
        name, args = match["name"], match["args"]
        if name == "write":
            started = started or "COMMIT-START" in args
            continue
        if not started:
            continue  # imports and the interpreter's own files
        if name in ("fsync", "fdatasync"):
            calls.append(("fsync", (FD_PATH.match(args)["path"],)))
        else:
            paths = tuple(p for p in QUOTED.findall(args))
            calls.append(("mkdir" if name.startswith("mkdir") else "rename", paths))
    return [(name, paths) for name, paths in calls if any(str(lake) in path for path in paths)]


def test_a_commit_makes_every_file_and_directory_durable_before_the_manifest_names_them(tmp_path):
    lake = tmp_path / "lake"
    lake.mkdir()
    calls = traced_commit(lake)
    renames = [index for index, (name, _) in enumerate(calls) if name == "rename"]
    assert renames, calls

    for index in renames:
        source, target = calls[index][1]
        assert ("fsync", (source,)) in calls[:index], f"{source} was renamed before its data was fsynced"
        next_rename = next((later for later in renames if later > index), len(calls))
        assert ("fsync", (str(Path(target).parent),)) in calls[index:next_rename], (
            f"the directory of {target} was not fsynced after the rename"
        )

    final = renames[-1]
    assert calls[final][1][1].endswith("manifests/orders/date=2026-03-14.json"), "the manifest is renamed last"
    pending = next(index for index in renames if calls[index][1][1].endswith(".json.pending"))
    data = next(index for index in renames if calls[index][1][1].endswith("raw/orders/date=2026-03-14/data.parquet"))
    assert pending < data < final, "pending manifest, then data, then the manifest"

    # Lock files live only while held and carry nothing to keep.
    created = [
        (index, paths[0])
        for index, (name, paths) in enumerate(calls)
        if name == "mkdir" and not Path(paths[0]).relative_to(lake).as_posix().startswith("locks")
    ]
    assert {Path(path).relative_to(lake).as_posix() for _, path in created} >= {
        "raw",
        "raw/orders",
        "raw/orders/date=2026-03-14",
        "quarantine",
        "manifests",
        "manifests/orders",
    }
    for index, path in created:
        assert ("fsync", (str(Path(path).parent),)) in calls[index:final], f"{path} was never made durable"
