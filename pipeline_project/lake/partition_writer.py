"""Writing one partition of the raw layer: its batches streamed to temporary Parquet files with their lineage
(`LINEAGE_SCHEMA`), staged, then committed atomically next to the previous version (`raw_store`).

Writing a partition (`PartitionWriter`, used as a context manager; `Lake.writer` makes one):
1. Take the partition's lock (`.lock`, held until the writer closes, released by the kernel if the process
   dies), so two runs of one partition take turns and the second reads the source after the first has
   committed. The wait is bounded; the error names the partition and the holder's run id and PID.
2. Finish a commit that a dead writer left half done (see `raw_store`) and delete the temporary files of dead writers.
3. Stream the batches to temporary files next to their final place (`.data.parquet.<run id>.tmp`).
4. Stage (`stage`): close the temporary files, resolve duplicates, and compute what they account for.
5. Commit (`commit`), once the caller has compared that with the source: fsync and checksum the temporary
   files, then, holding the `.commit.lock`:
   a. write the new manifest to `<date>.json.pending` (atomically): from here on the new version is decided;
   b. move the data file, then the quarantine file into place with `os.replace`;
   c. move the pending manifest over the manifest.

Steps (b) and (c) are `Lake._move_into_place`, which the next reader or writer of the partition redoes
after a crash (`raw_store`); every step is made durable against power loss (`durable_files`).

A write that fails for lack of space (ENOSPC, EDQUOT, or EFBIG from a file size limit) raises `RawLayerFull`
naming the partition and the file; the temporary files are deleted and the previous version is untouched.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline_project.ingest.extraction import ExtractStats
from pipeline_project.ingest.reconcile import AccountedFigures, amount_of, key_checksum, key_texts
from pipeline_project.lake.dedupe import ARRIVAL, drop_duplicates
from pipeline_project.lake.durable_files import file_sha256, fsync, fsync_replace, make_directories, staged_path
from pipeline_project.lake.manifest import PartitionManifest
from pipeline_project.quality.contracts import QUARANTINE_REASON, REJECTED_VALUES, RawTableContract

if TYPE_CHECKING:
    from pipeline_project.lake.raw_store import Lake

LINEAGE_SCHEMA = {
    "_partition_date": pl.Date,
    "_batch_id": pl.String,
    "_loaded_at": pl.Datetime("us"),
    ARRIVAL: pl.Int64,
}
_OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class RawLayerFull(Exception):
    """A write of the raw layer failed for lack of space; nothing was committed."""


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
        self._tmp = {kind: staged_path(path, run_id) for kind, path in self._final.items()}
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
        tmp = staged_path(self.lake.manifest_path(self.contract.name, self.day), self.run_id)
        try:
            with self._writing(tmp):
                tmp.write_text(json.dumps(asdict(manifest), indent=2))
                fsync_replace(tmp, pending)
        finally:
            tmp.unlink(missing_ok=True)

    def commit(self, manifest: PartitionManifest) -> PartitionManifest:
        """Fsync and checksum the staged files, then move data, quarantine and manifest into place."""
        started = time.perf_counter()
        for tmp in self._tmp.values():
            with self._writing(tmp):
                fsync(tmp)
        checksums = {kind: file_sha256(tmp) for kind, tmp in self._tmp.items()}
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
