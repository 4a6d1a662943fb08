"""What an extraction yields and what it saw: records as polars frames of the columns and types the source
sent (`observed_frame`), and the counts and unreadable landing lines one extraction records (`ExtractStats`,
`BadLine`) for the load ledger.

Both kinds of source, the shop API (`sources`) and web-event landing files (`landing_reader`), yield batches
of at most `batch_rows` rows so memory does not grow with the size of a partition. Batches keep the columns
and types the source sent (polars infers them from every value), so that ingestion can compare them with
their contract (`schema_drift`). Nothing here writes anywhere; ingestion decides what to keep.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from types import NoneType

import polars as pl


@dataclass
class ExtractStats:
    """What one extraction saw, for the load ledger."""

    source_reported_count: int | None = None  # the listing's `total`: a claim, compared but never trusted
    fetched_count: int = 0  # records (or landing lines) received, copies and bad lines included
    pages: int = 0
    bytes_read: int = 0
    files: list[str] = field(default_factory=list)
    source: str = ""  # where the batch being read comes from: the endpoint or the landing file
    bad_lines: list[BadLine] = field(default_factory=list)  # landing lines that are not records, to quarantine


@dataclass(frozen=True)
class BadLine:
    """A landing-file line that is not a JSON object: quarantined alone, with its file and line number."""

    file: str
    line_number: int
    problem: str
    excerpt: str

    @property
    def reason(self) -> str:
        return f"line:{self.problem} ({self.file}:{self.line_number})"


def observed_frame(records: list[dict]) -> pl.DataFrame:
    """Records as the source sent them: every key any record has is a column, typed from all its values.

    A column whose non-null values are of more than one JSON type (a string among numbers, an object among
    strings) is an Object column of the values as sent: polars would cast them to a common type (1 -> "1",
    true -> 1) or set the misfits to null, and `schema_drift` judges such values one by one.
    """
    json_types: set[tuple[str, type]] = set()
    for record in records:
        json_types.update(zip(record, map(type, record.values()), strict=True))
    types_per_column = Counter(name for name, json_type in json_types if json_type is not NoneType)
    mixed = {name for name, count in types_per_column.items() if count > 1}
    if not mixed:
        return pl.DataFrame(records, infer_schema_length=None)
    # Polars infers a type for every column it is given, even one overridden as Object, so mixed columns are
    # built apart and put back in the order the source sent them.
    order = list(dict.fromkeys(itertools.chain.from_iterable(records)))
    frame = pl.DataFrame([pl.Series(name, [record.get(name) for record in records], dtype=pl.Object) for name in mixed])
    plain = pl.DataFrame(
        [{name: value for name, value in record.items() if name not in mixed} for record in records],
        infer_schema_length=None,
    )
    if plain.width:
        frame = pl.concat([plain, frame], how="horizontal")
    return frame.select(order)
