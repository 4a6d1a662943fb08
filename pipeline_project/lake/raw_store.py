"""The raw layer's store (`Lake`): one Parquet file per table and day, its quarantine, and a manifest committed
last; where they are, how they are read, and how a decided commit is moved into place.

Layout under the lake root:
    raw/<table>/date=YYYY-MM-DD/data.parquet          rows that passed the contract (read by dbt)
    quarantine/<table>/date=YYYY-MM-DD/data.parquet   rows that failed it, with the rules they broke
    manifests/<table>/date=YYYY-MM-DD.json            counts, checksums and run id of the committed load
    manifests/<table>/date=YYYY-MM-DD.json.pending    only while a commit is in progress (or was interrupted)
    manifests/<table>/date=YYYY-MM-DD.rejected.json   the last load that did not reconcile (nothing committed)
    manifests/<table>/watermark.json                  where change capture of the table resumes (`changes`)
    locks/<table>/date=YYYY-MM-DD.lock, .commit.lock  `flock` files, there only while held (see `file_lock`)

A record the source delivered more than once is written once: before the commit, repeated primary keys in
the temporary files are resolved and every copy dropped is counted by kind in `copies_dropped` (see
`dedupe`). A partition is committed only when what it accounts for agrees, key by key, with the source's
control figures (`reconcile`); a load that does not is staged, compared and thrown away, the previous
version stays, and `<date>.rejected.json` records what differed until a later load of the partition commits.

A partition is written by `partition_writer.PartitionWriter` (`Lake.writer`): its commit decides the new
version by writing the pending manifest (step (a) there), then `Lake` moves the files and the manifest into
place (steps (b) and (c), `_move_into_place`), each step made durable by `durable_files`. The manifest and the
watermark are the records of `manifest`.

A writer killed before (a) leaves the previous version untouched, plus temporary files that the next write
of the partition deletes. A writer killed after (a) leaves a pending manifest that fully describes the new
version (checksums, and the temporary files are named after its run id): the next reader or writer of the
partition redoes (b) and (c), which is idempotent, so a crash during that recovery is safe too. Commits only
roll forward, so data that dbt may already have read (it reads `data.parquet` directly) is never withdrawn;
between (b) and the roll-forward, dbt sees the complete new data file. Everything else reads through `Lake`,
which completes a pending commit before it reads a manifest: a manifest read here always describes the files.
`read_verified` checks the files against their manifest under the `.commit.lock`, so a commit by another run
cannot make a good partition look broken halfway through the check.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline_project import fault_points
from pipeline_project.ingest.reconcile import Verdict
from pipeline_project.lake.durable_files import file_sha256, fsync_replace, make_directories, staged_path
from pipeline_project.lake.file_lock import exclusive_lock
from pipeline_project.lake.manifest import PartitionManifest, Watermark
from pipeline_project.lake.partition_writer import PartitionWriter
from pipeline_project.quality.contracts import RawTableContract

# How long a writer waits for another live writer of the same partition (a whole partition load).
LOCK_WAIT_SECONDS = 300.0
PENDING_SUFFIX = ".pending"
_MANIFEST_NAME = re.compile(r"date=(\d{4}-\d{2}-\d{2})\.json(\.pending)?")


# (table, day) -> a signature of the partition's committed version, PENDING_SIGNATURE while a commit is under way
LakeIndex = dict[tuple[str, date], str]
PENDING_SIGNATURE = "pending"


class PartitionBusy(Exception):
    """Another live process held the partition's lock for longer than the writer would wait."""


class InterruptedCommitError(Exception):
    """A pending manifest cannot be completed: its files are neither staged nor in place."""


class Lake:
    """Paths and reads of the raw layer rooted at one directory."""

    def __init__(self, root: str | Path, lock_wait_seconds: float = LOCK_WAIT_SECONDS) -> None:
        self.root = Path(root).resolve()
        self.lock_wait_seconds = lock_wait_seconds

    def data_path(self, table: str, day: date) -> Path:
        return self.root / "raw" / table / f"date={day.isoformat()}" / "data.parquet"

    def quarantine_path(self, table: str, day: date) -> Path:
        return self.root / "quarantine" / table / f"date={day.isoformat()}" / "data.parquet"

    def manifest_path(self, table: str, day: date) -> Path:
        return self.root / "manifests" / table / f"date={day.isoformat()}.json"

    def pending_manifest_path(self, table: str, day: date) -> Path:
        path = self.manifest_path(table, day)
        return path.with_name(f"{path.name}{PENDING_SUFFIX}")

    def lock_path(self, table: str, day: date, kind: str = "") -> Path:
        return self.root / "locks" / table / f"date={day.isoformat()}{kind}.lock"

    @contextmanager
    def locked(self, table: str, day: date, holder: str, kind: str = "") -> Iterator[None]:
        """Hold one of the partition's locks: the writer's (`kind=""`) or the commit's (`kind=".commit"`)."""
        with exclusive_lock(
            self.lock_path(table, day, kind),
            holder,
            self.lock_wait_seconds,
            busy=lambda current: PartitionBusy(
                f"raw_{table} {day}: the partition is locked by {current}; "
                f"waited {self.lock_wait_seconds:g} s for it to finish"
            ),
            remove_when_released=True,
        ):
            yield

    def read_manifest(self, table: str, day: date) -> PartitionManifest | None:
        """The committed manifest, after completing a commit a dead writer left pending."""
        if self.pending_manifest_path(table, day).exists():
            with self.locked(table, day, f"a reader (pid {os.getpid()})", ".commit"):
                self.complete_pending_commit(table, day)
        return self._read_manifest(table, day)

    def _read_manifest(self, table: str, day: date) -> PartitionManifest | None:
        path = self.manifest_path(table, day)
        if not path.exists():
            return None
        return PartitionManifest.from_json(path.read_text())

    def read_verified(self, table: str, day: date) -> tuple[PartitionManifest | None, list[str]]:
        """The committed manifest and the problems of its files, read while no commit can interleave."""
        with self.locked(table, day, f"a reader (pid {os.getpid()})", ".commit"):
            self.complete_pending_commit(table, day)
            manifest = self._read_manifest(table, day)
            return manifest, ([] if manifest is None else self.verify(manifest))

    # ---- Read-only access (on-call tools): nothing below takes a lock, creates, moves or deletes a file.
    def peek_manifest(self, table: str, day: date) -> PartitionManifest | None:
        """The committed manifest as it is on disk. Unlike `read_manifest`, a commit left pending is not
        completed: `pending_commit` tells whether there is one."""
        return self._read_manifest(table, day)

    def pending_commit(self, table: str, day: date) -> PartitionManifest | None:
        """The manifest of a commit that was decided but not finished (its writer is still moving files, or
        was killed), without acting on it; None when there is none."""
        try:
            return PartitionManifest.from_json(self.pending_manifest_path(table, day).read_text())
        except FileNotFoundError:
            return None

    def inspect(
        self, table: str, day: date, attempts: int = 3
    ) -> tuple[PartitionManifest | None, PartitionManifest | None, list[str]]:
        """(committed manifest, pending commit, problems of the committed files), read without locking: if a
        commit changes the manifest while its files are being checked, the reading is taken again."""
        for _ in range(attempts):
            manifest = self.peek_manifest(table, day)
            try:
                problems = [] if manifest is None else self.verify(manifest)
            except OSError as error:
                problems = [f"its files cannot be read: {error}"]
            pending = self.pending_commit(table, day)
            if self.peek_manifest(table, day) == manifest:
                break
        return manifest, pending, problems

    def complete_pending_commit(self, table: str, day: date) -> None:
        """Roll forward the commit whose pending manifest is left (the caller holds the commit lock)."""
        pending = self.pending_manifest_path(table, day)
        if pending.exists():
            self._move_into_place(PartitionManifest.from_json(pending.read_text()), recovering=True)

    def _move_into_place(self, manifest: PartitionManifest, recovering: bool = False) -> None:
        """Steps (b) and (c) of a commit: staged files, then the pending manifest, replace the current ones."""
        day = date.fromisoformat(manifest.partition)
        for kind, name, expected_sha in (
            ("data", manifest.data_file, manifest.data_sha256),
            ("quarantine", manifest.quarantine_file, manifest.quarantine_sha256),
        ):
            final = self.root / name
            staged = staged_path(final, manifest.run_id)
            if staged.exists():
                fsync_replace(staged, final)
            elif recovering and (not final.exists() or file_sha256(final) != expected_sha):
                raise InterruptedCommitError(
                    f"raw_{manifest.table} {manifest.partition}: the interrupted commit of run {manifest.run_id} "
                    f"cannot be completed: {name} is neither staged nor in place; see "
                    f"{self.pending_manifest_path(manifest.table, day)}"
                )
            if kind == "data":
                fault_points.reached("after_data_before_manifest")
        fsync_replace(self.pending_manifest_path(manifest.table, day), self.manifest_path(manifest.table, day))

    def verify(self, manifest: PartitionManifest) -> list[str]:
        """Problems that make a committed partition untrustworthy (empty when it checks out)."""
        problems = [*Verdict.from_metadata(manifest.verdict).problems, *manifest.ledger_problems()]
        for label, name, expected_sha, expected_rows in (
            ("data", manifest.data_file, manifest.data_sha256, manifest.loaded_count),
            ("quarantine", manifest.quarantine_file, manifest.quarantine_sha256, manifest.quarantined_count),
        ):
            path = self.root / name
            if not path.exists():
                problems.append(f"{label} file {name} is missing")
                continue
            if file_sha256(path) != expected_sha:
                problems.append(f"{label} file {name} does not match the checksum in its manifest")
            try:
                rows = pq.ParquetFile(path).metadata.num_rows
            except pa.ArrowException as error:
                problems.append(f"{label} file {name} is not a readable Parquet file: {error}")
                continue
            if rows != expected_rows:
                problems.append(f"{label} file {name} holds {rows} rows, manifest says {expected_rows}")
        return problems

    def data_location(self, manifest: PartitionManifest) -> str:
        """Where the partition's committed data is, for people reading its metadata."""
        return str(self.root / manifest.data_file)

    def writer(self, contract: RawTableContract, day: date, run_id: str) -> PartitionWriter:
        return PartitionWriter(self, contract, day, run_id)

    def rejected_path(self, table: str, day: date) -> Path:
        path = self.manifest_path(table, day)
        return path.with_name(path.name.replace(".json", ".rejected.json"))

    def record_rejected(self, manifest: PartitionManifest) -> None:
        """Keep the ledger entry of a load that did not reconcile (and was not committed) beside the partition."""
        path = self.rejected_path(manifest.table, date.fromisoformat(manifest.partition))
        make_directories(path.parent)
        tmp = staged_path(path, manifest.run_id)
        tmp.write_text(json.dumps(asdict(manifest), indent=2))
        fsync_replace(tmp, path)

    def read_rejected(self, table: str, day: date) -> PartitionManifest | None:
        """The last load of the partition that did not reconcile, if no load has committed since."""
        path = self.rejected_path(table, day)
        return PartitionManifest.from_json(path.read_text()) if path.exists() else None

    def watermark_path(self, table: str) -> Path:
        return self.root / "manifests" / table / "watermark.json"

    def read_watermark(self, table: str) -> Watermark | None:
        path = self.watermark_path(table)
        return Watermark(**json.loads(path.read_text())) if path.exists() else None

    def advance_watermark(self, table: str, moment: datetime, run_id: str) -> Watermark:
        """Move the table's watermark to `moment` (never backwards: a slower concurrent run cannot undo a
        faster one)."""
        path = self.watermark_path(table)
        path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(
            self.root / "locks" / table / "watermark.lock",
            f"run {run_id} (pid {os.getpid()})",
            self.lock_wait_seconds,
            busy=lambda holder: TimeoutError(f"raw_{table}: the watermark is locked by {holder}"),
            remove_when_released=True,
        ):
            current = self.read_watermark(table)
            if current is not None and current.moment >= moment:
                return current
            mark = Watermark(table, moment.isoformat(), run_id, datetime.now(UTC).isoformat(timespec="seconds"))
            tmp = path.with_name(f".{path.name}.{run_id}.tmp")
            tmp.write_text(json.dumps(asdict(mark), indent=2))
            os.replace(tmp, path)
            return mark

    def partition_signatures(self) -> LakeIndex:
        """Every partition's signature: the (mtime, inode, size) of its manifest file, which each commit replaces
        with a new file. Reads directory entries and their `stat` only (~5 ms for a year of six tables)."""
        index: LakeIndex = {}
        manifests = self.root / "manifests"
        if not manifests.is_dir():
            return index
        with os.scandir(manifests) as tables:
            for table in tables:
                if not table.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(table.path) as entries:
                    for entry in entries:
                        match = _MANIFEST_NAME.fullmatch(entry.name)
                        if match is None:
                            continue
                        key = (table.name, date.fromisoformat(match[1]))
                        if match[2]:
                            index[key] = PENDING_SIGNATURE
                        elif index.get(key) != PENDING_SIGNATURE:
                            info = entry.stat(follow_symlinks=False)
                            index[key] = f"{info.st_mtime_ns}:{info.st_ino}:{info.st_size}"
        return index

    def committed_days(self, table: str) -> set[date]:
        """The days of `table` that have a committed partition."""
        folder = self.root / "manifests" / table
        return {
            date.fromisoformat(path.name[len("date=") : -len(".json")])
            for path in folder.glob("date=*.json")
            if not path.name.endswith(".rejected.json")
        }
