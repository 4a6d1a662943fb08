"""Which days a dbt build processes, so that a day's run costs the same however long the history.

The dbt models are incremental (see `dbt_project/macros/run_days.sql`): a build rebuilds the days it is
given and the customers and products those days touched. The days of a build are

    the run's partition window  ∪  the days of every raw partition committed since the warehouse last took
                                   the lake in (any table, any run),

which is the window plus the days of every raw partition this run committed (late changes re-commit older
partitions, e.g. the orders of a day whose order was refunded weeks later), and also what any other run
committed meanwhile without a dbt build of its own (the landing-file sensor's runs) or what a failed build
did not get to (its days stay pending until a build succeeds).

"Took in" is an index kept in the warehouse itself (`meta.dbt_lake_index`), so it always describes the
warehouse it sits in (a restored backup brings its own): when a build of every dbt model succeeds, the
signatures of the partitions it was planned from are recorded (`partition_signatures` of the raw layer: in
the embedded profile the (mtime, inode, size) of each manifest file, which every commit replaces, with
`pending` for a commit under way; in the production profile a hash of each ledger row). A partition changed
since then has a different signature and a removed one is missing. Neither depends on clocks (the lake may
be written by another machine). A new build of the project (models or macros changed) or a warehouse
without an index gets a full refresh instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from pipeline_project.lake.raw_store import PENDING_SIGNATURE, Lake, LakeIndex

if TYPE_CHECKING:
    from pipeline_project.resources import WarehouseResource

META_SCHEMA = "meta"
INDEX_TABLE = f"{META_SCHEMA}.dbt_lake_index"
BUILD_TABLE = f"{META_SCHEMA}.dbt_build"


@dataclass(frozen=True)
class Watermark:
    """What the warehouse has taken in: the raw partitions as they were when its last complete build was
    planned, by a project build whose models and macros hash to `project_digest`."""

    index: LakeIndex
    project_digest: str


def window_days(start: date, end_inclusive: date) -> list[date]:
    return [start + timedelta(days=offset) for offset in range((end_inclusive - start).days + 1)]


def changed_days(taken_in: LakeIndex, now: LakeIndex) -> set[date]:
    """Days with a partition committed, being committed or removed since `taken_in` was listed."""
    changed = {
        key[1] for key, signature in now.items() if signature == PENDING_SIGNATURE or taken_in.get(key) != signature
    }
    return changed | {day for _, day in taken_in.keys() - now.keys()}


def read_watermark(warehouse: WarehouseResource) -> Watermark | None:
    """The warehouse's watermark; None for a warehouse that has none (new, or built before there was one)."""
    if not warehouse.exists():
        return None
    with warehouse.connect(read_only=True) as connection:
        try:
            (digest,) = connection.execute(f"select project_digest from {BUILD_TABLE}").fetchone()
            rows = connection.execute(f"select table_name, day, signature from {INDEX_TABLE}").fetchall()
        except (duckdb.CatalogException, TypeError):
            return None
    return Watermark({(table, day): signature for table, day, signature in rows}, digest)


def write_watermark(warehouse: WarehouseResource, watermark: Watermark) -> None:
    with warehouse.connect(read_only=False) as connection:
        connection.execute("begin")
        connection.execute(f"create schema if not exists {META_SCHEMA}")
        connection.execute(
            f"create or replace table {BUILD_TABLE} as select ?::varchar as project_digest, now() as recorded_at",
            [watermark.project_digest],
        )
        connection.execute(f"create or replace table {INDEX_TABLE} (table_name varchar, day date, signature varchar)")
        entries = sorted(watermark.index.items())
        connection.execute(
            f"insert into {INDEX_TABLE} select unnest(?), unnest(?::date[]), unnest(?)",
            [[table for (table, _), _ in entries], [day for (_, day), _ in entries], [sig for _, sig in entries]],
        )
        connection.execute("commit")


@lru_cache(maxsize=8)
def project_digest(manifest_path: Path) -> str:
    """A hash of what decides the content of the incremental tables: every model's file and config, and the
    project's own macros. When it changes, the next build is a full refresh."""
    manifest = json.loads(Path(manifest_path).read_text())
    project = manifest["metadata"].get("project_name") or "shop"
    parts = []
    for unique_id, node in sorted(manifest["nodes"].items()):
        if node["resource_type"] in ("model", "snapshot"):
            parts.append(f"{unique_id}:{node['checksum']['checksum']}:{json.dumps(node['config'], sort_keys=True)}")
    for unique_id, macro in sorted(manifest["macros"].items()):
        if macro.get("package_name") == project:
            parts.append(f"{unique_id}:{hashlib.sha256(macro['macro_sql'].encode()).hexdigest()}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class BuildPlan:
    """What one dbt build does: a full refresh, or the given days (None: every day)."""

    full_refresh: bool
    days: tuple[date, ...] | None
    lake: LakeIndex
    reason: str

    def env_value(self) -> str | None:
        return None if self.days is None else ",".join(day.isoformat() for day in self.days)


def plan_build(
    *,
    window: list[date],
    lake: Lake,
    warehouse: WarehouseResource,
    digest: str,
    full_refresh_requested: bool,
) -> BuildPlan:
    """Decide the build: a full refresh when asked, when the warehouse has no watermark, or when the project
    changed since the watermark was recorded; otherwise the window plus the days the lake changed since."""
    index = lake.partition_signatures()
    if full_refresh_requested:
        return BuildPlan(True, None, index, "full refresh requested")
    mark = read_watermark(warehouse)
    if mark is None:
        return BuildPlan(True, None, index, "the warehouse has no watermark yet")
    if mark.project_digest != digest:
        return BuildPlan(True, None, index, "the dbt project changed since the last build")
    changed = changed_days(mark.index, index)
    days = tuple(sorted(set(window) | changed))
    return BuildPlan(False, days, index, f"{len(changed)} day(s) changed in the lake")
