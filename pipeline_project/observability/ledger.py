"""The load ledger as metrics: rows loaded, quarantined and dropped as copies per table and partition.

The ledger is one JSON manifest per table and day, `<PIPELINE_LAKE_DIR>/manifests/<table>/date=D.json`
(`raw_store.PartitionManifest`). It is read as files, tolerantly: a missing count is 0, so manifests
written before a field existed (or after one was added) still read. Dropped copies are reported per kind
(`identical`, `newer_version`, `older_version`) when the manifest has `copies_dropped`; whatever part of
`duplicates_dropped` no kind accounts for (older manifests have only the total) is kind `unclassified`, so
the kinds of a partition always add up to its `duplicates_dropped`.

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

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily

COPY_KINDS = ("identical", "newer_version", "older_version")
UNCLASSIFIED = "unclassified"
_MANIFEST_NAME = re.compile(r"^date=(\d{4}-\d{2}-\d{2})\.json$")
_PENDING_NAME = re.compile(r"^date=\d{4}-\d{2}-\d{2}\.json\.pending$")
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def _count(value) -> int:
    """A count as written, or 0 when missing or not a number (tolerant reading)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(int(value), 0)


@dataclass(frozen=True)
class PartitionCounts:
    """What the ledger says about one committed partition load."""

    table: str
    partition: str
    loaded: int
    quarantined: int
    copies: dict[str, int]  # kind -> rows dropped; always sums to duplicates_dropped
    reconciled: bool
    committed_at: float | None

    @classmethod
    def from_manifest(cls, table: str, partition: str, manifest: dict) -> PartitionCounts:
        loaded, quarantined = _count(manifest.get("loaded_count")), _count(manifest.get("quarantined_count"))
        raw_kinds = manifest.get("copies_dropped")
        kinds = raw_kinds if isinstance(raw_kinds, dict) else {}
        copies = {kind: _count(kinds.get(kind)) for kind in COPY_KINDS}
        classified = sum(copies.values())
        total = _count(manifest["duplicates_dropped"]) if "duplicates_dropped" in manifest else classified
        if total > classified:
            copies[UNCLASSIFIED] = total - classified
        total = max(total, classified)
        reported, fetched = manifest.get("source_reported_count"), manifest.get("fetched_count")
        reconciled = (
            isinstance(reported, int)
            and not isinstance(reported, bool)
            and reported == _count(fetched) == loaded + quarantined + total
        )
        committed_at = None
        if isinstance(manifest.get("committed_at"), str):
            try:
                committed_at = datetime.fromisoformat(manifest["committed_at"]).timestamp()
            except ValueError:
                committed_at = None
        return cls(table, partition, loaded, quarantined, copies, reconciled, committed_at)


@dataclass
class _TableScan:
    partitions: dict[str, PartitionCounts]
    pending: int = 0
    unreadable: int = 0


class LedgerReader:
    """Reads the manifests under `lake_dir`, re-parsing only files that changed since the last read."""

    def __init__(self, lake_dir: Path | str, partition_days: int = 7) -> None:
        self.root = Path(lake_dir) / "manifests"
        self.partition_days = partition_days
        # path -> ((mtime_ns, size), counts or None when unreadable)
        self._cache: dict[str, tuple[tuple[int, int], PartitionCounts | None]] = {}
        self.files_parsed_last_scan = 0

    def _read(self, path: str, table: str, partition: str, signature: tuple[int, int]) -> PartitionCounts | None:
        cached = self._cache.get(path)
        if cached and cached[0] == signature:
            return cached[1]
        self.files_parsed_last_scan += 1
        try:
            with open(path, "rb") as handle:
                manifest = json.load(handle)
            counts = PartitionCounts.from_manifest(table, partition, manifest) if isinstance(manifest, dict) else None
        except (OSError, ValueError):
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
                    match = _MANIFEST_NAME.match(entry.name)
                    if not match:
                        continue
                    try:
                        stat = entry.stat()
                    except FileNotFoundError:  # replaced between listing and stat
                        continue
                    seen.add(entry.path)
                    counts = self._read(entry.path, table_dir.name, match.group(1), (stat.st_mtime_ns, stat.st_size))
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
            "Rows dropped as repeated copies of a record, by kind (identical, newer_version, older_version, "
            "unclassified)",
            labels=[*partition, "kind"],
        )
        reconciled = GaugeMetricFamily(
            "pipeline_partition_reconciled",
            "1 when source-reported = fetched = loaded + quarantined + copies dropped",
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
            *(table_partitions, unreconciled, pending, unreadable, last_commit),
        ]
