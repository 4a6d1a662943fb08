"""The raw layer's ledger records: the manifest of a committed partition load (`PartitionManifest`), written
to `manifests/<table>/date=YYYY-MM-DD.json`, and where change capture of a table resumes (`Watermark`).

The DuckLake store keeps the same records as rows of its ledger tables (`ducklake_store`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from pipeline_project.ingest.reconcile import Verdict
from pipeline_project.lake.dedupe import no_copies


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
