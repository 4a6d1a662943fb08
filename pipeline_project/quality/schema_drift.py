"""Schema drift: comparing what a source sends with its contract, and the policy that follows.

This module owns the comparison of the columns and types of every batch a source sends with the batch's raw
contract, the diff that describes the difference (`SchemaDiff`: every column that differs, not only the
first), the policy that decides whether the partition may load, and bringing an accepted batch into the
contract's shape.

Policy:
- Breaking drift fails the partition before anything of it is committed (`SchemaDriftError`; retrying
  cannot help): a required (non-nullable) column removed, a contract column renamed, or a contract column
  whose type changed wholesale (below). The previous committed partition stays as it was.
- Additive drift loads: columns the contract does not know are dropped, and a nullable column the source
  no longer sends loads as null. The partition's manifest records the diff, and the WARN check
  `schema_drift` of the ingestion asset fails with it in its metadata.
- Not drift: a column whose values are all null in a batch (observed type Null: sources report absent
  optional values per page as they please), and a batch without rows (JSON has no columns without records).

Types are judged per value, by the JSON type each value arrived as (`extraction.observed_frame` keeps a column
whose values mix JSON types as an Object column of the values as sent, so none is cast to another type). A
contract column expects one JSON type: integer for Int64, true/false for Boolean, string for String, and an
ISO string (`2026-03-14T10:00:00.000000Z`) for a timestamp. For each contract column of a batch:
- Type changed wholesale, breaking: the column has non-null values and none of them is of the expected JSON
  type (all strings where the contract says integer, numbers where it says string, floats where it says
  integer). One odd value in a batch of one record is wholesale too: nothing shows the column still works.
- Type failures, quarantined row by row: some non-null values are of the expected JSON type and others are
  not (a string "abc" among integers, a number or an object among strings), or a timestamp string that is
  not a valid ISO timestamp (a date that does not exist, another format). Such a row is quarantined with
  the rule `<column>:dtype`, and the values as sent are kept in its `_rejected_values` (a JSON object of
  column -> value) because the quarantine's columns have the contract's types; the rest of the batch loads.

Renames are a guess, marked `renamed?`: a removed and an added column of the same type are paired when their
names are similar (difflib ratio >= 0.6) or the added column stands where the removed one stood (the same
index in the source's column order as in the contract's). The best pairs are taken first (same position,
then name similarity); each column is paired at most once; the rest stay removed and added.

Every batch of a partition is compared, because a column can appear on a later page. The first breaking
diff aborts the partition. The partition's diff is every column added in any batch plus the optional
columns missing from every batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from difflib import SequenceMatcher

import orjson
import polars as pl

from pipeline_project.quality.contracts import RawTableContract

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"
SIMILAR_NAME_RATIO = 0.6


@dataclass(frozen=True)
class Column:
    """A column the source added, or a contract column it no longer sends."""

    name: str
    dtype: str
    required: bool = False


@dataclass(frozen=True)
class Rename:
    old: str
    new: str
    dtype: str


@dataclass(frozen=True)
class TypeChange:
    name: str
    expected: str
    observed: str


@dataclass(frozen=True)
class SchemaDiff:
    """How a batch's columns differ from its contract's; empty (falsy) when they match."""

    added: tuple[Column, ...] = ()
    removed: tuple[Column, ...] = ()
    renamed: tuple[Rename, ...] = ()
    type_changed: tuple[TypeChange, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.renamed or self.type_changed)

    @property
    def breaking(self) -> bool:
        """Whether loading would lose values of a contract column."""
        return bool(self.renamed or self.type_changed or any(column.required for column in self.removed))

    def render(self) -> str:
        """One line per differing column, breaking changes first."""
        lines = [f"> {rename.old} -> {rename.new} ({rename.dtype})  renamed?" for rename in self.renamed]
        lines += [
            f"~ {change.name}: {change.expected} -> {change.observed}  type changed" for change in self.type_changed
        ]
        lines += [
            f"- {column.name} ({column.dtype})  removed" + ("" if column.required else " (optional: loaded as null)")
            for column in self.removed
        ]
        lines += [f"+ {column.name} ({column.dtype})  added (not loaded)" for column in self.added]
        return "\n".join(lines) or "no schema drift"

    def to_metadata(self) -> dict:
        return {
            "breaking": self.breaking,
            "added": [asdict(column) for column in self.added],
            "removed": [asdict(column) for column in self.removed],
            "renamed": [asdict(rename) for rename in self.renamed],
            "type_changed": [asdict(change) for change in self.type_changed],
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping) -> SchemaDiff:
        """The diff `to_metadata` described; an empty mapping (a manifest from before drift was recorded) is none."""
        return cls(
            added=tuple(Column(**column) for column in metadata.get("added", ())),
            removed=tuple(Column(**column) for column in metadata.get("removed", ())),
            renamed=tuple(Rename(**rename) for rename in metadata.get("renamed", ())),
            type_changed=tuple(TypeChange(**change) for change in metadata.get("type_changed", ())),
        )


# The Python type (as orjson decodes JSON) of a value that fits each arrival type of a contract column.
JSON_TYPES: dict[pl.DataType, type] = {pl.Int64: int, pl.Boolean: bool, pl.String: str}


def _json_type_name(value: object) -> str:
    return {int: "integer", float: "number", bool: "boolean", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _mixed_type(expected: pl.DataType, values: pl.Series) -> str | None:
    """For an Object column (values of several JSON types): None when some value fits `expected`, else the
    types it holds, as the diff shows them (`mixed(object, string)`)."""
    present = {type(value) for value in values if value is not None}
    if JSON_TYPES.get(expected) in present:
        return None
    return f"mixed({', '.join(sorted({_json_type_name(value) for value in values if value is not None}))})"


def _type_change(expected: pl.DataType, observed: pl.DataType, batch: pl.DataFrame | None, name: str) -> str | None:
    """How a column's observed type differs wholesale from the contract's, or None when it does not."""
    if observed == expected or observed == pl.Null:
        return None
    if observed == pl.Object and batch is not None:
        return _mixed_type(expected, batch.get_column(name))
    return str(observed)


def _renames(
    removed: list[str], added: list[str], expected: dict[str, pl.DataType], observed: Mapping[str, pl.DataType]
) -> list[Rename]:
    contract_position = {name: index for index, name in enumerate(expected)}
    source_position = {name: index for index, name in enumerate(observed)}
    candidates = []
    for old in removed:
        for new in added:
            if observed[new] != expected[old]:
                continue
            same_position = contract_position[old] == source_position[new]
            similarity = SequenceMatcher(None, old, new).ratio()
            if same_position or similarity >= SIMILAR_NAME_RATIO:
                candidates.append((not same_position, -similarity, old, new))
    renames, paired = [], set()
    for *_, old, new in sorted(candidates):
        if old not in paired and new not in paired:
            paired |= {old, new}
            renames.append(Rename(old, new, str(expected[old])))
    return renames


def compare(contract: RawTableContract, observed: pl.DataFrame | Mapping[str, pl.DataType]) -> SchemaDiff:
    """Every difference between the columns a batch arrived with and its contract's (see the module docstring).

    Given a batch rather than its schema, a column of mixed JSON types is a type change only when none of its
    values fits the contract (otherwise its misfits are type failures of their rows, see `conform`)."""
    batch = observed if isinstance(observed, pl.DataFrame) else None
    observed = observed.schema if isinstance(observed, pl.DataFrame) else observed
    if not observed:
        return SchemaDiff()
    expected = contract.arrival_schema
    columns = contract.model.to_schema().columns
    missing = [name for name in expected if name not in observed]
    extra = [name for name in observed if name not in expected]
    renames = _renames(missing, extra, expected, observed)
    renamed = {name for rename in renames for name in (rename.old, rename.new)}
    changes = {
        name: _type_change(dtype, observed[name], batch, name) for name, dtype in expected.items() if name in observed
    }
    return SchemaDiff(
        added=tuple(Column(name, str(observed[name])) for name in extra if name not in renamed),
        removed=tuple(
            Column(name, str(expected[name]), required=not columns[name].nullable)
            for name in missing
            if name not in renamed
        ),
        renamed=tuple(renames),
        type_changed=tuple(
            TypeChange(name, str(expected[name]), change) for name, change in changes.items() if change is not None
        ),
    )


TYPE_FAILURES_SCHEMA = {"index": pl.UInt32, "column": pl.String, "value": pl.String}


@dataclass(frozen=True)
class Conformed:
    """A batch in its contract's shape, and the values that did not fit their column's type.

    `type_failures` has one row per (row index, column) whose value was set to null in `frame` because it
    could not be converted: `value` is the value as the source sent it, as JSON text. `contracts.split_batch`
    quarantines those rows with the rule `<column>:dtype`.
    """

    frame: pl.DataFrame
    type_failures: pl.DataFrame


def _fitting(name: str, dtype: pl.DataType, values: pl.Series) -> tuple[pl.Series, pl.DataFrame]:
    """An Object column's values of the expected JSON type (others null), and the others as type failures."""
    fits = JSON_TYPES.get(dtype)
    kept, failures = [], []
    for index, value in enumerate(values):
        fitting = value is None or type(value) is fits
        kept.append(value if fitting else None)
        if not fitting:
            failures.append((index, name, orjson.dumps(value).decode()))
    return pl.Series(name, kept, dtype=dtype), pl.DataFrame(failures, schema=TYPE_FAILURES_SCHEMA, orient="row")


def conform(contract: RawTableContract, batch: pl.DataFrame) -> Conformed:
    """A batch without breaking drift in its contract's shape: the contract's columns in its order and types.

    Columns the contract does not know are dropped, missing optional ones are null, and ISO timestamps are
    parsed. A value that cannot be converted to its column's type (a misfit in a column of mixed JSON types,
    an unparseable timestamp) becomes null and is listed in `type_failures` with the value as sent.
    """
    expected = contract.arrival_schema
    failures = [pl.DataFrame(schema=TYPE_FAILURES_SCHEMA)]
    columns = []
    for name, dtype in expected.items():
        if name not in batch.schema:
            columns.append(pl.Series(name, [None] * batch.height, dtype=dtype))
        elif batch.schema[name] == pl.Object:
            column, misfits = _fitting(name, dtype, batch.get_column(name))
            columns.append(column)
            failures.append(misfits)
        else:
            columns.append(batch.get_column(name).cast(dtype))
    typed = pl.DataFrame(columns, height=batch.height)
    parsed = typed.with_columns(
        pl.col(name).str.to_datetime(TIMESTAMP_FORMAT, time_unit="us", strict=False)
        for name in contract.timestamp_columns
    )
    for name in contract.timestamp_columns:
        unparseable = typed.with_row_index("index").filter(pl.col(name).is_not_null() & parsed[name].is_null())
        failures.append(
            unparseable.select(
                "index",
                pl.lit(name).alias("column"),
                pl.col(name)
                .map_elements(lambda text: orjson.dumps(text).decode(), return_dtype=pl.String)
                .alias("value"),
            )
        )
    return Conformed(parsed, pl.concat(failures))


class SchemaDriftError(Exception):
    """A source's batch breaks its contract's schema; the message names the table, partition, source and diff."""

    def __init__(self, table: str, partition: str, source: str, diff: SchemaDiff) -> None:
        self.table = table
        self.partition = partition
        self.source = source
        self.diff = diff
        super().__init__(
            f"raw_{table} partition {partition}: breaking schema drift in {source}; nothing of the partition was "
            f"committed and retrying cannot help until the source or the contract changes. "
            f"Columns that differ from the contract:\n{diff.render()}"
        )


class PartitionDriftWatch:
    """Compares every batch of one partition with the contract and keeps the partition's diff."""

    def __init__(self, contract: RawTableContract, partition: str) -> None:
        self.contract = contract
        self.partition = partition
        self._diffs: list[SchemaDiff] = []

    def admit(self, batch: pl.DataFrame, source: str) -> Conformed:
        """The batch in the contract's shape with its type failures; raises SchemaDriftError when its drift is
        breaking."""
        if batch.height:
            diff = compare(self.contract, batch)
            if diff.breaking:
                raise SchemaDriftError(self.contract.name, self.partition, source, diff)
            self._diffs.append(diff)
        return conform(self.contract, batch)

    @property
    def diff(self) -> SchemaDiff:
        """Every column added in any batch (with its first non-null type) and optional columns missing from all."""
        added: dict[str, Column] = {}
        for diff in self._diffs:
            for column in diff.added:
                if column.name not in added or added[column.name].dtype == str(pl.Null):
                    added[column.name] = column
        missing_everywhere = [
            column
            for column in (self._diffs[0].removed if self._diffs else ())
            if all(column in d.removed for d in self._diffs)
        ]
        return SchemaDiff(added=tuple(added.values()), removed=tuple(missing_everywhere))
