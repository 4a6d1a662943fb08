"""Which days a dbt build processes, so that a day's run costs the same however long the history.

The dbt models are incremental (see `dbt_project/macros/run_days.sql`): a build rebuilds the days it is
given and the customers and products those days touched. The days of a build are

    the run's partition window  ∪  the days of every raw partition committed since the warehouse last took
                                   the lake in (any table, any run),

which is the window plus the days of every raw partition this run committed (late changes re-commit older
partitions, e.g. the orders of a day whose order was refunded weeks later), and also what any other run
committed meanwhile without a dbt build of its own (the landing-file sensor's runs) or what a failed build
did not get to (its days stay pending until a build succeeds).

"Took in" is a watermark kept in the warehouse itself (`meta.dbt_lake_watermark`), so it always describes
the warehouse it sits in (a restored backup brings its own): when a build of every dbt model succeeds, the
time at which its days were listed is recorded. Listing the days costs a bounded amount however long the
history: every raw commit goes through a manifest (`raw_store`: a pending manifest is written, then moved
over `manifests/<table>/date=D.json`), which changes the mtime of its table's manifest directory; a
directory not modified since the watermark is skipped unread, and in the others only the names and mtimes
of the entries are read (a `stat` each, ~1 µs), never the manifests' contents. A new build of the project
(models or macros changed) or a warehouse without a watermark gets a full refresh instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import duckdb

from pipeline_project import warehouse

WATERMARK_SCHEMA = "meta"
WATERMARK_TABLE = f"{WATERMARK_SCHEMA}.dbt_lake_watermark"
# Manifests committed this close before the watermark are taken again: file times and the clock that made
# the watermark are the same clock, this only covers coarse file-time granularity.
MTIME_MARGIN_SECONDS = 2.0
_PARTITION = re.compile(r"date=(\d{4}-\d{2}-\d{2})")


@dataclass(frozen=True)
class Watermark:
    """What the warehouse has taken in: raw commits up to `listed_at` (epoch seconds), by a project build
    whose models and macros hash to `project_digest`."""

    listed_at: float
    project_digest: str


def window_days(start: date, end_inclusive: date) -> list[date]:
    return [start + timedelta(days=offset) for offset in range((end_inclusive - start).days + 1)]


def changed_lake_days(lake_root: Path, since: float) -> set[date]:
    """Days of the raw partitions (any table) committed, or being committed, since `since` (epoch seconds)."""
    since_ns = int((since - MTIME_MARGIN_SECONDS) * 1e9)
    days: set[date] = set()
    manifests = Path(lake_root) / "manifests"
    if not manifests.is_dir():
        return days
    with os.scandir(manifests) as tables:
        for table in tables:
            if not table.is_dir(follow_symlinks=False) or table.stat().st_mtime_ns < since_ns:
                continue
            with os.scandir(table.path) as entries:
                for entry in entries:
                    match = _PARTITION.search(entry.name)
                    if match and entry.stat(follow_symlinks=False).st_mtime_ns >= since_ns:
                        days.add(date.fromisoformat(match[1]))
    return days


def read_watermark(warehouse_path: Path, lock_wait_seconds: float) -> Watermark | None:
    """The warehouse's watermark; None for a warehouse that has none (new, or built before there was one)."""
    if not Path(warehouse_path).exists():
        return None
    with warehouse.connect(warehouse_path, read_only=True, lock_wait_seconds=lock_wait_seconds) as connection:
        try:
            row = connection.execute(f"select listed_at, project_digest from {WATERMARK_TABLE}").fetchone()
        except duckdb.CatalogException:
            return None
    return None if row is None else Watermark(float(row[0]), str(row[1]))


def write_watermark(warehouse_path: Path, watermark: Watermark, lock_wait_seconds: float) -> None:
    with warehouse.connect(warehouse_path, read_only=False, lock_wait_seconds=lock_wait_seconds) as connection:
        connection.execute(f"create schema if not exists {WATERMARK_SCHEMA}")
        connection.execute(
            f"create or replace table {WATERMARK_TABLE} as "
            "select ?::double as listed_at, ?::varchar as project_digest, ?::timestamp as listed_at_utc",
            [
                watermark.listed_at,
                watermark.project_digest,
                datetime.fromtimestamp(watermark.listed_at, UTC).replace(tzinfo=None),
            ],
        )


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
    """What one dbt build does: a full refresh, or the given days (None: every day, e.g. a checks-only run)."""

    full_refresh: bool
    days: tuple[date, ...] | None
    listed_at: float
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
    listed_at = time.time()
    if full_refresh_requested:
        return BuildPlan(True, None, listed_at, "full refresh requested")
    mark = read_watermark(warehouse_path, lock_wait_seconds)
    if mark is None:
        return BuildPlan(True, None, listed_at, "the warehouse has no watermark yet")
    if mark.project_digest != digest:
        return BuildPlan(True, None, listed_at, "the dbt project changed since the last build")
    changed = changed_lake_days(lake_root, mark.listed_at)
    days = tuple(sorted(set(window) | changed))
    return BuildPlan(False, days, listed_at, f"{len(changed)} day(s) changed in the lake")
