"""The raw layer: one Parquet file per table and day, its quarantine, and a manifest committed last.

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

Writing a partition (`PartitionWriter`, used as a context manager):
1. Take the partition's lock (`.lock`, held until the writer closes, released by the kernel if the process
   dies), so two runs of one partition take turns and the second reads the source after the first has
   committed. The wait is bounded; the error names the partition and the holder's run id and PID.
2. Finish a commit that a dead writer left half done (below) and delete the temporary files of dead writers.
3. Stream the batches to temporary files next to their final place (`.data.parquet.<run id>.tmp`).
4. Stage (`stage`): close the temporary files, resolve duplicates, and compute what they account for.
5. Commit (`commit`), once the caller has compared that with the source: fsync and checksum the temporary
   files, then, holding the `.commit.lock`:
   a. write the new manifest to `<date>.json.pending` (atomically): from here on the new version is decided;
   b. move the data file, then the quarantine file into place with `os.replace`;
   c. move the pending manifest over the manifest.

Durable against power loss, not only against a killed process: every directory the writer creates is fsynced
into its parent before anything is put in it (`make_directories`), every file is fsynced before it is renamed,
and the directory holding the new name is fsynced after each rename (`_fsync_replace`), in the order (a), (b),
(c). So when the manifest's rename has reached the disk, everything it describes has too.
`tests/faults/test_durability.py` traces the system calls of a real commit and checks this order.

A writer killed before (a) leaves the previous version untouched, plus temporary files that the next write
of the partition deletes. A writer killed after (a) leaves a pending manifest that fully describes the new
version (checksums, and the temporary files are named after its run id): the next reader or writer of the
partition redoes (b) and (c), which is idempotent, so a crash during that recovery is safe too. Commits only
roll forward, so data that dbt may already have read (it reads `data.parquet` directly) is never withdrawn;
between (b) and the roll-forward, dbt sees the complete new data file. Everything else reads through `Lake`,
which completes a pending commit before it reads a manifest: a manifest read here always describes the files.
`read_verified` checks the files against their manifest under the `.commit.lock`, so a commit by another run
cannot make a good partition look broken halfway through the check.

A write that fails for lack of space (ENOSPC, EDQUOT, or EFBIG from a file size limit) raises `RawLayerFull`
naming the partition and the file; the temporary files are deleted and the previous version is untouched.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline_project import fault_points
from pipeline_project.ingest.extraction import ExtractStats
from pipeline_project.ingest.reconcile import AccountedFigures, Verdict, amount_of, key_checksum, key_texts
from pipeline_project.lake.dedupe import ARRIVAL, drop_duplicates, no_copies
from pipeline_project.lake.file_lock import exclusive_lock
from pipeline_project.quality.contracts import QUARANTINE_REASON, REJECTED_VALUES, RawTableContract

LINEAGE_SCHEMA = {
    "_partition_date": pl.Date,
    "_batch_id": pl.String,
    "_loaded_at": pl.Datetime("us"),
    ARRIVAL: pl.Int64,
}
# How long a writer waits for another live writer of the same partition (a whole partition load).
LOCK_WAIT_SECONDS = 300.0
PENDING_SUFFIX = ".pending"
_MANIFEST_NAME = re.compile(r"date=(\d{4}-\d{2}-\d{2})\.json(\.pending)?")
_OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


# (table, day) -> a signature of the partition's committed version, PENDING_SIGNATURE while a commit is under way
LakeIndex = dict[tuple[str, date], str]
PENDING_SIGNATURE = "pending"


class PartitionBusy(Exception):
    """Another live process held the partition's lock for longer than the writer would wait."""


class RawLayerFull(Exception):
    """A write of the raw layer failed for lack of space; nothing was committed."""


class InterruptedCommitError(Exception):
    """A pending manifest cannot be completed: its files are neither staged nor in place."""


@dataclass(frozen=True)
class Watermark:
    """Where change capture of a table resumes (`ingest.changes`)."""

    table: str
    since: str  # ISO 8601, the source's time: changes at or after it have not been captured yet
    run_id: str
    recorded_at: str  # our time

    @property
    def moment(self) -> datetime:
        return datetime.fromisoformat(self.since)


@dataclass
class PartitionManifest:
    """The ledger entry of one committed partition load."""

    table: str
    partition: str
    run_id: str
    source_reported_count: int | None
    fetched_count: int
    loaded_count: int
    quarantined_count: int
    quarantine_reasons: dict[str, int]
    data_file: str
    data_sha256: str
    quarantine_file: str
    quarantine_sha256: str
    committed_at: str
    stage_seconds: dict[str, float] = field(default_factory=dict)
    pages: int = 0
    bytes_read: int = 0
    source_files: list[str] = field(default_factory=list)
    schema_drift: dict = field(default_factory=dict)  # schema_drift.SchemaDiff.to_metadata() of the load
    copies_dropped: dict[str, int] = field(default_factory=no_copies)  # dedupe.CopyKind -> rows
    accounted: dict = field(default_factory=dict)  # reconcile.AccountedFigures.to_metadata()
    control: dict = field(default_factory=dict)  # reconcile.ControlFigures.to_metadata(), the source's figures
    verdict: dict = field(default_factory=dict)  # reconcile.Verdict.to_metadata() of the comparison
    changes_merged: int = 0  # records of change capture merged into the partition (`changes`)
    carried_count: int = 0  # rows of the previous version carried into this one by such a merge
    attempts: int = 1  # reads of the source this load took (a read that raced a change is read again)

    @classmethod
    def from_json(cls, text: str) -> PartitionManifest:
        """A manifest as written; one from before reconciliation by key has no verdict and does not reconcile."""
        fields = json.loads(text)
        fields.pop("duplicates_dropped", None)
        return cls(**fields)

    @property
    def copies(self) -> int:
        return sum(self.copies_dropped.values())

    @property
    def reconciled(self) -> bool:
        """The source's control figures agreed with what the load accounted for, and every record that
        arrived was loaded, quarantined or dropped as a classified copy."""
        return Verdict.from_metadata(self.verdict).agrees and not self.ledger_problems()

    def ledger_problems(self) -> list[str]:
        arrived = self.loaded_count + self.quarantined_count + self.copies
        if self.fetched_count + self.carried_count != arrived:
            return [
                f"{self.fetched_count + self.carried_count} records arrived but {self.loaded_count} loaded + "
                f"{self.quarantined_count} quarantined + {self.copies} copies dropped = {arrived}"
            ]
        return []


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(path: Path) -> None:
    directory = os.open(path, os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _fsync_replace(tmp: Path, final: Path) -> None:
    """Rename a complete file into place durably: its data first, then the directory entry that names it."""
    _fsync(tmp)
    os.replace(tmp, final)
    _fsync_directory(final.parent)


def make_directories(path: Path) -> None:
    """Create `path` and its missing parents, each made durable in its parent before anything goes into it."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        _fsync_directory(directory.parent)


def _staged(final: Path, run_id: str) -> Path:
    """Where run `run_id` writes the next version of `final` (the same directory, so the move is a rename)."""
    return final.with_name(f".{final.name}.{run_id}.tmp")


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
            staged = _staged(final, manifest.run_id)
            if staged.exists():
                _fsync_replace(staged, final)
            elif recovering and (not final.exists() or _sha256(final) != expected_sha):
                raise InterruptedCommitError(
                    f"raw_{manifest.table} {manifest.partition}: the interrupted commit of run {manifest.run_id} "
                    f"cannot be completed: {name} is neither staged nor in place; see "
                    f"{self.pending_manifest_path(manifest.table, day)}"
                )
            if kind == "data":
                fault_points.reached("after_data_before_manifest")
        _fsync_replace(self.pending_manifest_path(manifest.table, day), self.manifest_path(manifest.table, day))

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
            if _sha256(path) != expected_sha:
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
        tmp = _staged(path, manifest.run_id)
        tmp.write_text(json.dumps(asdict(manifest), indent=2))
        _fsync_replace(tmp, path)

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


class PartitionWriter:
    """Streams the batches of one partition to temporary Parquet files and commits them atomically.

    Use it as a context manager: entering takes the partition's lock and clears what dead writers left."""

    def __init__(self, lake: Lake, contract: RawTableContract, day: date, run_id: str) -> None:
        self.lake = lake
        self.contract = contract
        self.day = day
        self.run_id = run_id
        self.holder = f"run {run_id} (pid {os.getpid()})"
        self.loaded_at = datetime.now(UTC).replace(tzinfo=None)
        self.loaded_count = 0
        self.quarantined_count = 0
        self.reasons: dict[str, int] = {}
        self.write_seconds = 0.0
        self._final = {
            "data": lake.data_path(contract.name, day),
            "quarantine": lake.quarantine_path(contract.name, day),
        }
        self._tmp = {kind: _staged(path, run_id) for kind, path in self._final.items()}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._schemas: dict[str, pa.Schema] = {}
        self._held: ExitStack | None = None
        self._decided = False  # the pending manifest is written: the temporary files belong to it
        self.next_arrival = 0  # after the carried rows' arrivals, where a merge's records start

    def _with_lineage(self, frame: pl.DataFrame, kind: str) -> pl.DataFrame:
        """The frame with this load's lineage, in the file's column order; `_arrival` is the caller's (the
        row's position in what the source delivered), null where unknown."""
        if ARRIVAL not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.Int64).alias(ARRIVAL))
        return frame.with_columns(
            pl.lit(self.day, dtype=pl.Date).alias("_partition_date"),
            pl.lit(self.run_id, dtype=pl.String).alias("_batch_id"),
            pl.lit(self.loaded_at, dtype=pl.Datetime("us")).alias("_loaded_at"),
        ).select(self._schemas[kind].names)

    def _schema(self, kind: str) -> pa.Schema:
        columns = {name: dtype for name, dtype in self.contract.arrival_schema.items()}
        for name in self.contract.timestamp_columns:
            columns[name] = pl.Datetime("us")
        if kind == "quarantine":
            columns[QUARANTINE_REASON] = pl.String
            columns[REJECTED_VALUES] = pl.String
        return pl.DataFrame(schema={**columns, **LINEAGE_SCHEMA}).to_arrow().schema

    @contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """Turn running out of space while writing `path` into an error that says so and names the partition."""
        try:
            yield
        except OSError as error:
            if error.errno not in _OUT_OF_SPACE:
                raise
            raise RawLayerFull(
                f"raw_{self.contract.name} {self.day}: could not write {path}: {os.strerror(error.errno)}; "
                "nothing was committed, the partition keeps its previous version"
            ) from error

    def _writer(self, kind: str) -> pq.ParquetWriter:
        """The open temporary file of `kind`, created on first use (so an empty partition still gets one)."""
        if self._held is None:
            raise RuntimeError("PartitionWriter writes only inside `with`, which holds the partition's lock")
        if kind not in self._writers:
            make_directories(self._tmp[kind].parent)
            self._schemas[kind] = self._schema(kind)
            with self._writing(self._tmp[kind]):
                self._writers[kind] = pq.ParquetWriter(self._tmp[kind], self._schemas[kind], compression="zstd")
        return self._writers[kind]

    def _write(self, kind: str, frame: pl.DataFrame) -> None:
        writer = self._writer(kind)
        with self._writing(self._tmp[kind]):
            writer.write_table(self._with_lineage(frame, kind).to_arrow().cast(self._schemas[kind]))

    def __enter__(self) -> PartitionWriter:
        table = self.contract.name
        with ExitStack() as held:
            held.enter_context(self.lake.locked(table, self.day, self.holder))
            with self.lake.locked(table, self.day, self.holder, ".commit"):
                self.lake.complete_pending_commit(table, self.day)
            self._remove_leftovers()
            self._held = held.pop_all()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                self.abort()
        finally:
            if self._held is not None:
                self._held.close()
                self._held = None

    def _remove_leftovers(self) -> None:
        """Delete the temporary files of writers that died (only dead ones can have any: we hold the lock)."""
        manifest = self.lake.manifest_path(self.contract.name, self.day)
        for final in (*self._final.values(), manifest):
            for leftover in final.parent.glob(f".{final.name}.*.tmp*"):
                leftover.unlink(missing_ok=True)

    def append(self, valid: pl.DataFrame, quarantined: pl.DataFrame) -> None:
        started = time.perf_counter()
        if valid.height:
            self._write("data", valid)
            self.loaded_count += valid.height
        if quarantined.height:
            self._write("quarantine", quarantined)
            self.quarantined_count += quarantined.height
            for reason, count in quarantined.group_by(QUARANTINE_REASON).len().iter_rows():
                self.reasons[reason] = self.reasons.get(reason, 0) + count
        self.write_seconds += time.perf_counter() - started

    def quarantine_unreadable(self, reasons_and_values: list[tuple[str, str]]) -> None:
        """Quarantine things that arrived but are not records (landing lines that are not JSON objects): every
        contract column null, the reason and what arrived (as JSON) in their own columns."""
        contract_columns = {name: dtype for name, dtype in self.contract.arrival_schema.items()}
        for name in self.contract.timestamp_columns:
            contract_columns[name] = pl.Datetime("us")
        rows = pl.DataFrame(
            {
                **{name: [None] * len(reasons_and_values) for name in contract_columns},
                QUARANTINE_REASON: [reason for reason, _ in reasons_and_values],
                REJECTED_VALUES: [values for _, values in reasons_and_values],
            },
            schema={**contract_columns, QUARANTINE_REASON: pl.String, REJECTED_VALUES: pl.String},
        )
        self.append(rows.clear().drop(QUARANTINE_REASON, REJECTED_VALUES), rows)

    def abort(self) -> None:
        for writer in self._writers.values():
            with suppress(OSError):  # a full disk fails the footer too; the file is deleted right after
                writer.close()
        if self._decided:
            return  # the next reader or writer completes the commit from the pending manifest
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)

    def carry_over(self) -> int:
        """Write the committed version's rows (data and quarantine, lineage as it was) into this version, so
        that records merged in by change capture replace their older versions and nothing else changes."""
        carried = 0
        for kind in ("data", "quarantine"):
            for batch in self._committed_batches(kind):
                frame = pl.from_arrow(batch)
                writer = self._writer(kind)
                if ARRIVAL not in frame.columns:  # a version written before arrivals were recorded
                    frame = frame.with_columns(pl.lit(None, dtype=pl.Int64).alias(ARRIVAL))
                self.next_arrival = max(self.next_arrival, (frame.get_column(ARRIVAL).max() or -1) + 1)
                with self._writing(self._tmp[kind]):
                    writer.write_table(frame.select(self._schemas[kind].names).to_arrow().cast(self._schemas[kind]))
                carried += frame.height
                if kind == "data":
                    self.loaded_count += frame.height
                else:
                    self.quarantined_count += frame.height
                    for reason, count in frame.group_by(QUARANTINE_REASON).len().iter_rows():
                        self.reasons[reason] = self.reasons.get(reason, 0) + count
        return carried

    def _committed_batches(self, kind: str) -> Iterator[pa.RecordBatch]:
        """The committed version's rows of `kind` (the production profile reads them from DuckLake instead)."""
        path = self._final[kind]
        if path.exists():
            yield from pq.ParquetFile(path).iter_batches(batch_size=50_000)

    def _drop_duplicates(self) -> dict[str, int]:
        """Resolve repeated primary keys in the closed temporary files; recount what they hold if any were."""
        copies = drop_duplicates(self.contract, self._tmp["data"], self._tmp["quarantine"])
        if any(copies.values()):
            self.loaded_count = pq.ParquetFile(self._tmp["data"]).metadata.num_rows
            reasons = pl.read_parquet(self._tmp["quarantine"], columns=[QUARANTINE_REASON])
            self.quarantined_count = reasons.height
            self.reasons = dict(reasons.group_by(QUARANTINE_REASON).len().iter_rows())
        return copies

    def _accounted(self) -> AccountedFigures:
        """The distinct keys the staged files account for, with their checksum (not for landing files, whose
        control figure is the lines read) and amount total."""
        key = self.contract.primary_key
        amount = self.contract.amount_expression
        amount_columns = [] if amount is None else amount.meta.root_names()
        data = pl.read_parquet(self._tmp["data"], columns=[key, *amount_columns])
        quarantine = pl.read_parquet(self._tmp["quarantine"], columns=[key, REJECTED_VALUES, *amount_columns])
        keyless = quarantine.get_column(key).null_count()
        total = None if amount is None else (amount_of(data, amount) or 0) + (amount_of(quarantine, amount) or 0)
        if self.contract.from_landing_files:
            count = pl.concat([data.select(key), quarantine.select(key)]).get_column(key).drop_nulls().n_unique()
            return AccountedFigures(count, 0, total, frozenset(), keyless)
        keys = frozenset(key_texts(data, key)) | frozenset(key_texts(quarantine, key, REJECTED_VALUES))
        return AccountedFigures(len(keys), key_checksum(keys), total, keys, keyless)

    def stage(
        self, extracted: ExtractStats, stage_seconds: dict[str, float], schema_drift: dict, carried: int = 0
    ) -> tuple[PartitionManifest, AccountedFigures]:
        """Close the temporary files, drop copies and compute what they account for; the manifest returned is
        not committed (its checksums are filled in by `commit`)."""
        started = time.perf_counter()
        for kind in ("data", "quarantine"):
            writer = self._writer(kind)
            with self._writing(self._tmp[kind]):
                writer.close()
        dedupe_started = time.perf_counter()
        with self._writing(self._tmp["data"].parent):
            copies = self._drop_duplicates()
        dedupe_seconds = time.perf_counter() - dedupe_started
        reconcile_started = time.perf_counter()
        accounted = self._accounted()
        manifest = PartitionManifest(
            table=self.contract.name,
            partition=self.day.isoformat(),
            run_id=self.run_id,
            source_reported_count=extracted.source_reported_count,
            fetched_count=extracted.fetched_count,
            loaded_count=self.loaded_count,
            quarantined_count=self.quarantined_count,
            quarantine_reasons=dict(sorted(self.reasons.items())),
            data_file=str(self._final["data"].relative_to(self.lake.root)),
            data_sha256="",
            quarantine_file=str(self._final["quarantine"].relative_to(self.lake.root)),
            quarantine_sha256="",
            committed_at="",
            pages=extracted.pages,
            bytes_read=extracted.bytes_read,
            source_files=extracted.files,
            schema_drift=schema_drift,
            copies_dropped=copies,
            accounted=accounted.to_metadata(),
            carried_count=carried,
            stage_seconds={
                **stage_seconds,
                "dedupe": round(dedupe_seconds, 4),
                "reconcile": round(time.perf_counter() - reconcile_started, 4),
                "write_raw": round(self.write_seconds + dedupe_started - started, 4),
            },
        )
        return manifest, accounted

    def _write_pending(self, manifest: PartitionManifest) -> None:
        pending = self.lake.pending_manifest_path(self.contract.name, self.day)
        make_directories(pending.parent)
        tmp = _staged(self.lake.manifest_path(self.contract.name, self.day), self.run_id)
        try:
            with self._writing(tmp):
                tmp.write_text(json.dumps(asdict(manifest), indent=2))
                _fsync_replace(tmp, pending)
        finally:
            tmp.unlink(missing_ok=True)

    def commit(self, manifest: PartitionManifest) -> PartitionManifest:
        """Fsync and checksum the staged files, then move data, quarantine and manifest into place."""
        started = time.perf_counter()
        for tmp in self._tmp.values():
            with self._writing(tmp):
                _fsync(tmp)
        checksums = {kind: _sha256(tmp) for kind, tmp in self._tmp.items()}
        manifest.data_sha256 = checksums["data"]
        manifest.quarantine_sha256 = checksums["quarantine"]
        manifest.committed_at = datetime.now(UTC).isoformat(timespec="seconds")
        manifest.stage_seconds["write_raw"] = round(
            manifest.stage_seconds["write_raw"] + time.perf_counter() - started, 4
        )
        with self.lake.locked(self.contract.name, self.day, self.holder, ".commit"):
            self._write_pending(manifest)
            self._decided = True
            self.lake._move_into_place(manifest)
            self.lake.rejected_path(self.contract.name, self.day).unlink(missing_ok=True)
        return manifest
