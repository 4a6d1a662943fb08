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
manifests it was planned from are recorded, each as the (mtime, inode, size) of its file. Every raw commit
ends by moving a new manifest over `manifests/<table>/date=D.json` (`raw_store`), a new file, so a
partition changed since then has a different signature, a partition being committed has a `.pending`
manifest, and a removed one is missing. Finding the changed days reads only directory entries and their
`stat` (a few microseconds each: ~5 ms for a year of six tables), never a manifest's contents, and does not
depend on clocks (the lake may be written by another machine). A new build of the project (models or
macros changed) or a warehouse without an index gets a full refresh instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import duckdb

from pipeline_project import warehouse

META_SCHEMA = "meta"
INDEX_TABLE = f"{META_SCHEMA}.dbt_lake_index"
BUILD_TABLE = f"{META_SCHEMA}.dbt_build"
PENDING = "pending"
_MANIFEST = re.compile(r"date=(\d{4}-\d{2}-\d{2})\.json(\.pending)?")

# (table, day) -> signature of its manifest file, or PENDING while a commit is in progress
LakeIndex = dict[tuple[str, date], str]


@dataclass(frozen=True)
class Watermark:
    """What the warehouse has taken in: the raw partitions as they were when its last complete build was
    planned, by a project build whose models and macros hash to `project_digest`."""

    index: LakeIndex
    project_digest: str


def window_days(start: date, end_inclusive: date) -> list[date]:
    return [start + timedelta(days=offset) for offset in range((end_inclusive - start).days + 1)]


def list_lake(lake_root: Path) -> LakeIndex:
    """The signature of every committed partition's manifest (PENDING where a commit is under way)."""
    index: LakeIndex = {}
    manifests = Path(lake_root) / "manifests"
    if not manifests.is_dir():
        return index
    with os.scandir(manifests) as tables:
        for table in tables:
            if not table.is_dir(follow_symlinks=False):
                continue
            with os.scandir(table.path) as entries:
                for entry in entries:
                    match = _MANIFEST.fullmatch(entry.name)
                    if match is None:
                        continue
                    key = (table.name, date.fromisoformat(match[1]))
                    if match[2]:
                        index[key] = PENDING
                    elif index.get(key) != PENDING:
                        info = entry.stat(follow_symlinks=False)
                        index[key] = f"{info.st_mtime_ns}:{info.st_ino}:{info.st_size}"
    return index


def changed_days(taken_in: LakeIndex, now: LakeIndex) -> set[date]:
    """Days with a partition committed, being committed or removed since `taken_in` was listed."""
    changed = {key[1] for key, signature in now.items() if signature == PENDING or taken_in.get(key) != signature}
    return changed | {day for _, day in taken_in.keys() - now.keys()}


def read_watermark(warehouse_path: Path, lock_wait_seconds: float) -> Watermark | None:
    """The warehouse's watermark; None for a warehouse that has none (new, or built before there was one)."""
    if not Path(warehouse_path).exists():
        return None
    with warehouse.connect(warehouse_path, read_only=True, lock_wait_seconds=lock_wait_seconds) as connection:
        try:
            (digest,) = connection.execute(f"select project_digest from {BUILD_TABLE}").fetchone()
            rows = connection.execute(f"select table_name, day, signature from {INDEX_TABLE}").fetchall()
        except (duckdb.CatalogException, TypeError):
            return None
    return Watermark({(table, day): signature for table, day, signature in rows}, digest)


def write_watermark(warehouse_path: Path, watermark: Watermark, lock_wait_seconds: float) -> None:
    with warehouse.connect(warehouse_path, read_only=False, lock_wait_seconds=lock_wait_seconds) as connection:
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
    lake_root: Path,
    warehouse_path: Path,
    digest: str,
    full_refresh_requested: bool,
    lock_wait_seconds: float,
) -> BuildPlan:
    """Decide the build: a full refresh when asked, when the warehouse has no watermark, or when the project
    changed since the watermark was recorded; otherwise the window plus the days the lake changed since."""
    lake = list_lake(lake_root)
    if full_refresh_requested:
        return BuildPlan(True, None, lake, "full refresh requested")
    mark = read_watermark(warehouse_path, lock_wait_seconds)
    if mark is None:
        return BuildPlan(True, None, lake, "the warehouse has no watermark yet")
    if mark.project_digest != digest:
        return BuildPlan(True, None, lake, "the dbt project changed since the last build")
    changed = changed_days(mark.index, lake)
    days = tuple(sorted(set(window) | changed))
    return BuildPlan(False, days, lake, f"{len(changed)} day(s) changed in the lake")
