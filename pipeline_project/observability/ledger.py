"""The load ledger as metrics: rows loaded, quarantined and dropped as copies per table and partition.

The ledger is one JSON manifest per table and day, `<PIPELINE_LAKE_DIR>/manifests/<table>/date=D.json`,
read with the raw layer's own parser (`manifest.PartitionManifest.from_json`), so "reconciled" means here what
it means to the blocking check: the source's control figures agreed with the keys the load accounted for.
Dropped copies are reported per kind (`identical`, `newer_version`, `older_version`). A manifest written
before reconciliation by key has no verdict and counts as not reconciled, as it does for the check. A load
that did not reconcile and was not committed leaves `date=D.rejected.json`: counted per table.

Bounded with a long history: a year of six tables is ~2,200 files. Each scrape lists the directories
(one `stat` per file) and parses only the files whose mtime or size changed since the last scrape; the
parsed counts are kept in memory. Per-partition series are exported only for the most recent
`partition_days` partitions of each table (the ones the schedule's lookback and backfills rewrite), so
the series count stays constant as history grows; the whole ledger is summarized per table (partitions,
partitions that do not reconcile, interrupted commits, unreadable manifests, last commit time).

Reading never writes: an interrupted commit (`.json.pending`) is counted, not completed (the next writer or
`Lake` reader of that partition finishes it).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily

from pipeline_project.lake.dedupe import CopyKind
from pipeline_project.lake.manifest import PartitionManifest

_MANIFEST_NAME = re.compile(r"^date=(\d{4}-\d{2}-\d{2})\.json$")
_PENDING_NAME = re.compile(r"^date=\d{4}-\d{2}-\d{2}\.json\.pending$")
_REJECTED_NAME = re.compile(r"^date=\d{4}-\d{2}-\d{2}\.rejected\.json$")
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


@dataclass(frozen=True)
class PartitionCounts:
    """What the ledger says about one committed partition load."""

    table: str
    partition: str
    loaded: int
    quarantined: int
    copies: dict[str, int]  # dedupe.CopyKind -> rows dropped
    reconciled: bool
    committed_at: float | None

    @classmethod
    def from_manifest(cls, manifest: PartitionManifest) -> PartitionCounts:
        committed_at = None
        try:
            committed_at = datetime.fromisoformat(manifest.committed_at).timestamp()
        except ValueError:
            committed_at = None
        return cls(
            manifest.table,
            manifest.partition,
            manifest.loaded_count,
            manifest.quarantined_count,
            {kind.value: manifest.copies_dropped.get(kind.value, 0) for kind in CopyKind},
            manifest.reconciled,
            committed_at,
        )


@dataclass
class _TableScan:
    partitions: dict[str, PartitionCounts]
    pending: int = 0
    rejected: int = 0
    unreadable: int = 0


class LedgerReader:
    """Reads the manifests under `lake_dir`, re-parsing only files that changed since the last read."""

    def __init__(self, lake_dir: Path | str, partition_days: int = 7) -> None:
        self.root = Path(lake_dir) / "manifests"
        self.partition_days = partition_days
        # path -> ((mtime_ns, size), counts or None when unreadable)
        self._cache: dict[str, tuple[tuple[int, int], PartitionCounts | None]] = {}
        self.files_parsed_last_scan = 0

    def _read(self, path: str, signature: tuple[int, int]) -> PartitionCounts | None:
        cached = self._cache.get(path)
        if cached and cached[0] == signature:
            return cached[1]
        self.files_parsed_last_scan += 1
        try:
            counts = PartitionCounts.from_manifest(PartitionManifest.from_json(Path(path).read_text()))
        except (OSError, ValueError, TypeError):
            counts = None
        self._cache[path] = (signature, counts)
        return counts

    def scan(self) -> dict[str, _TableScan]:
        self.files_parsed_last_scan = 0
        tables: dict[str, _TableScan] = {}
        seen: set[str] = set()
        try:
            table_dirs = [entry for entry in os.scandir(self.root) if entry.is_dir() and _TABLE_NAME.match(entry.name)]
        except FileNotFoundError:
            table_dirs = []
        for table_dir in table_dirs:
            scan = tables.setdefault(table_dir.name, _TableScan(partitions={}))
            with os.scandir(table_dir.path) as entries:
                for entry in entries:
                    if _PENDING_NAME.match(entry.name):
                        scan.pending += 1
                        continue
                    if _REJECTED_NAME.match(entry.name):
                        scan.rejected += 1
                        continue
                    match = _MANIFEST_NAME.match(entry.name)
                    if not match:
                        continue
                    try:
                        stat = entry.stat()
                    except FileNotFoundError:  # replaced between listing and stat
                        continue
                    seen.add(entry.path)
                    counts = self._read(entry.path, (stat.st_mtime_ns, stat.st_size))
                    if counts is None:
                        scan.unreadable += 1
                    else:
                        scan.partitions[counts.partition] = counts
        for path in set(self._cache) - seen:  # deleted manifests
            del self._cache[path]
        return tables

    def families(self) -> list[GaugeMetricFamily]:
        tables = self.scan()
        partition = ["table", "partition"]
        loaded = GaugeMetricFamily(
            "pipeline_partition_rows_loaded", "Rows committed to the raw layer (recent partitions)", labels=partition
        )
        quarantined = GaugeMetricFamily(
            "pipeline_partition_rows_quarantined", "Rows quarantined with the rule they broke", labels=partition
        )
        copies = GaugeMetricFamily(
            "pipeline_partition_rows_dropped_copies",
            "Rows dropped as repeated copies of a record, by kind (identical, newer_version, older_version)",
            labels=[*partition, "kind"],
        )
        reconciled = GaugeMetricFamily(
            "pipeline_partition_reconciled",
            "1 when the keys loaded plus quarantined agreed with the source's control figures",
            labels=partition,
        )
        table_partitions = GaugeMetricFamily(
            "pipeline_table_partitions", "Committed partitions in the ledger", labels=["table"]
        )
        unreconciled = GaugeMetricFamily(
            "pipeline_table_unreconciled_partitions",
            "Partitions anywhere in the ledger that do not reconcile",
            labels=["table"],
        )
        rejected = GaugeMetricFamily(
            "pipeline_table_rejected_loads",
            "Partitions whose last load did not reconcile and was not committed (a .rejected.json ledger entry)",
            labels=["table"],
        )
        pending = GaugeMetricFamily(
            "pipeline_table_pending_commits",
            "Partition commits in progress or interrupted (a .json.pending manifest)",
            labels=["table"],
        )
        unreadable = GaugeMetricFamily(
            "pipeline_table_unreadable_manifests", "Manifests that are not readable JSON objects", labels=["table"]
        )
        last_commit = GaugeMetricFamily(
            "pipeline_table_last_commit_timestamp_seconds",
            "When the table's most recent partition load was committed (Unix time)",
            labels=["table"],
        )
        for table, scan in sorted(tables.items()):
            table_partitions.add_metric([table], len(scan.partitions))
            unreconciled.add_metric([table], sum(not c.reconciled for c in scan.partitions.values()))
            pending.add_metric([table], scan.pending)
            rejected.add_metric([table], scan.rejected)
            unreadable.add_metric([table], scan.unreadable)
            commit_times = [c.committed_at for c in scan.partitions.values() if c.committed_at is not None]
            if commit_times:
                last_commit.add_metric([table], max(commit_times))
            recent = sorted(scan.partitions, reverse=True)[: self.partition_days]
            for key in recent:
                counts = scan.partitions[key]
                labels = [table, key]
                loaded.add_metric(labels, counts.loaded)
                quarantined.add_metric(labels, counts.quarantined)
                reconciled.add_metric(labels, int(counts.reconciled))
                for kind, value in counts.copies.items():
                    copies.add_metric([*labels, kind], value)
        return [
            *(loaded, quarantined, copies, reconciled),
            *(table_partitions, unreconciled, rejected, pending, unreadable, last_commit),
        ]
