"""The raw layer: one Parquet file per table and day, its quarantine, and a manifest committed last.

Layout under the lake root:
    raw/<table>/date=YYYY-MM-DD/data.parquet          rows that passed the contract (read by dbt)
    quarantine/<table>/date=YYYY-MM-DD/data.parquet   rows that failed it, with the rules they broke
    manifests/<table>/date=YYYY-MM-DD.json            counts, checksums and run id of the committed load

A record the source delivered more than once is written once: before the commit, repeated primary keys in
the temporary files are resolved and counted as `duplicates_dropped` (see `dedupe`).

A partition is written to temporary files next to its final place and moved there with `os.replace`, so
readers see either the previous version or the new one, never a half-written file, and a rerun replaces the
partition instead of appending to it. The manifest is replaced last: it describes a load only once the
data it describes is in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline_project.contracts import QUARANTINE_REASON, REJECTED_VALUES, RawTableContract
from pipeline_project.dedupe import drop_duplicates
from pipeline_project.sources import ExtractStats

LINEAGE_SCHEMA = {"_partition_date": pl.Date, "_batch_id": pl.String, "_loaded_at": pl.Datetime("us")}


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
    duplicates_dropped: int = 0

    @property
    def reconciled(self) -> bool:
        """Every record the source reported was fetched, and then loaded, quarantined or dropped as a duplicate."""
        return (
            self.source_reported_count is not None
            and self.source_reported_count
            == self.fetched_count
            == self.loaded_count + self.quarantined_count + self.duplicates_dropped
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_replace(tmp: Path, final: Path) -> None:
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    directory = os.open(final.parent, os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class Lake:
    """Paths and reads of the raw layer rooted at one directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def data_path(self, table: str, day: date) -> Path:
        return self.root / "raw" / table / f"date={day.isoformat()}" / "data.parquet"

    def quarantine_path(self, table: str, day: date) -> Path:
        return self.root / "quarantine" / table / f"date={day.isoformat()}" / "data.parquet"

    def manifest_path(self, table: str, day: date) -> Path:
        return self.root / "manifests" / table / f"date={day.isoformat()}.json"

    def read_manifest(self, table: str, day: date) -> PartitionManifest | None:
        path = self.manifest_path(table, day)
        if not path.exists():
            return None
        return PartitionManifest(**json.loads(path.read_text()))

    def verify(self, manifest: PartitionManifest) -> list[str]:
        """Problems that make a committed partition untrustworthy (empty when it checks out)."""
        problems = []
        if not manifest.reconciled:
            problems.append(
                f"source reported {manifest.source_reported_count}, fetched {manifest.fetched_count}, "
                f"loaded {manifest.loaded_count} + quarantined {manifest.quarantined_count} "
                f"+ duplicates dropped {manifest.duplicates_dropped}"
            )
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
            rows = pq.ParquetFile(path).metadata.num_rows
            if rows != expected_rows:
                problems.append(f"{label} file {name} holds {rows} rows, manifest says {expected_rows}")
        return problems

    def writer(self, contract: RawTableContract, day: date, run_id: str) -> PartitionWriter:
        return PartitionWriter(self, contract, day, run_id)


class PartitionWriter:
    """Streams the batches of one partition to temporary Parquet files and commits them atomically."""

    def __init__(self, lake: Lake, contract: RawTableContract, day: date, run_id: str) -> None:
        self.lake = lake
        self.contract = contract
        self.day = day
        self.run_id = run_id
        self.loaded_at = datetime.now(UTC).replace(tzinfo=None)
        self.loaded_count = 0
        self.quarantined_count = 0
        self.reasons: dict[str, int] = {}
        self.write_seconds = 0.0
        self._final = {
            "data": lake.data_path(contract.name, day),
            "quarantine": lake.quarantine_path(contract.name, day),
        }
        self._tmp = {kind: path.with_name(f".{path.name}.{run_id}.tmp") for kind, path in self._final.items()}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._schemas: dict[str, pa.Schema] = {}

    def _with_lineage(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(
            pl.lit(self.day, dtype=pl.Date).alias("_partition_date"),
            pl.lit(self.run_id, dtype=pl.String).alias("_batch_id"),
            pl.lit(self.loaded_at, dtype=pl.Datetime("us")).alias("_loaded_at"),
        )

    def _schema(self, kind: str) -> pa.Schema:
        columns = {name: dtype for name, dtype in self.contract.arrival_schema.items()}
        for name in self.contract.timestamp_columns:
            columns[name] = pl.Datetime("us")
        if kind == "quarantine":
            columns[QUARANTINE_REASON] = pl.String
            columns[REJECTED_VALUES] = pl.String
        return pl.DataFrame(schema={**columns, **LINEAGE_SCHEMA}).to_arrow().schema

    def _writer(self, kind: str) -> pq.ParquetWriter:
        """The open temporary file of `kind`, created on first use (so an empty partition still gets one)."""
        if kind not in self._writers:
            self._tmp[kind].parent.mkdir(parents=True, exist_ok=True)
            self._schemas[kind] = self._schema(kind)
            self._writers[kind] = pq.ParquetWriter(self._tmp[kind], self._schemas[kind], compression="zstd")
        return self._writers[kind]

    def _write(self, kind: str, frame: pl.DataFrame) -> None:
        writer = self._writer(kind)
        writer.write_table(self._with_lineage(frame).to_arrow().cast(self._schemas[kind]))

    def __enter__(self) -> PartitionWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

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

    def abort(self) -> None:
        for writer in self._writers.values():
            writer.close()
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)

    def _drop_duplicates(self) -> int:
        """Resolve repeated primary keys in the closed temporary files; recount what they hold if any were."""
        dropped = drop_duplicates(self.contract, self._tmp["data"], self._tmp["quarantine"])
        if dropped:
            self.loaded_count = pq.ParquetFile(self._tmp["data"]).metadata.num_rows
            reasons = pl.read_parquet(self._tmp["quarantine"], columns=[QUARANTINE_REASON])
            self.quarantined_count = reasons.height
            self.reasons = dict(reasons.group_by(QUARANTINE_REASON).len().iter_rows())
        return dropped

    def commit(self, extracted: ExtractStats, stage_seconds: dict[str, float], schema_drift: dict) -> PartitionManifest:
        """Move data, then quarantine, then the manifest into place; return the manifest."""
        started = time.perf_counter()
        for kind in ("data", "quarantine"):
            self._writer(kind).close()
        dedupe_started = time.perf_counter()
        duplicates_dropped = self._drop_duplicates()
        dedupe_seconds = time.perf_counter() - dedupe_started
        checksums = {kind: _sha256(tmp) for kind, tmp in self._tmp.items()}
        for kind in ("data", "quarantine"):
            _fsync_replace(self._tmp[kind], self._final[kind])
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
            data_sha256=checksums["data"],
            quarantine_file=str(self._final["quarantine"].relative_to(self.lake.root)),
            quarantine_sha256=checksums["quarantine"],
            committed_at=datetime.now(UTC).isoformat(timespec="seconds"),
            pages=extracted.pages,
            bytes_read=extracted.bytes_read,
            source_files=extracted.files,
            schema_drift=schema_drift,
            duplicates_dropped=duplicates_dropped,
            stage_seconds={
                **stage_seconds,
                "dedupe": round(dedupe_seconds, 4),
                "write_raw": round(self.write_seconds + time.perf_counter() - started - dedupe_seconds, 4),
            },
        )
        path = self.lake.manifest_path(self.contract.name, self.day)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{self.run_id}.tmp")
        tmp.write_text(json.dumps(asdict(manifest), indent=2))
        _fsync_replace(tmp, path)
        return manifest
