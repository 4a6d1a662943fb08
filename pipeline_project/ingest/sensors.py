"""Sensors that turn outside events into runs: files arriving in a day's `incoming/` folder become a run of
that day's partition. The sensor only looks; claiming files is the run's job (`landing`), so a file is
processed once however often the sensor ticks."""

import hashlib
import json
import os
from datetime import date

import dagster as dg

from pipeline_project.catalog.partitions import daily_partitions
from pipeline_project.ingest.asset_checks import raw_asset_key
from pipeline_project.ingest.assets import LANDING_TABLES
from pipeline_project.ingest.landing_fs import LandingLinkError
from pipeline_project.ingest.landing_zone import incoming_days, incoming_files
from pipeline_project.resources import LandingResource


def _fingerprint(paths) -> str:
    """Names, sizes, times and inodes: a file delivered again under the same name is a new fingerprint."""
    listing = []
    for path in paths:
        info = os.lstat(path)
        listing.append((path.name, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino))
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


@dg.sensor(
    name="landing_file_sensor",
    description="Requests a run of a landing-file asset's partition when files arrive in that day's incoming folder.",
    asset_selection=[raw_asset_key(table) for table in LANDING_TABLES],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def landing_file_sensor(context: dg.SensorEvaluationContext, landing: LandingResource):
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    valid_keys = set(daily_partitions.get_partition_keys())
    requests = []
    waiting: dict[str, str] = {}
    for table in LANDING_TABLES:
        try:
            days = incoming_days(landing.path, table)
        except LandingLinkError as refused:  # the table folder or its incoming/ is a link: never followed
            context.log.warning(f"{refused}; nothing in it is loaded")
            continue
        for name in days:
            day_dir = landing.path / table / "incoming" / name
            if name not in valid_keys:
                context.log.warning(f"{day_dir} is not a folder named after a partition's day; nothing in it is loaded")
                continue
            try:
                files = incoming_files(landing.path, table, date.fromisoformat(name))
            except LandingLinkError as refused:
                context.log.warning(f"{refused}; nothing in it is loaded")
                continue
            if not files:
                continue
            fingerprint = _fingerprint(files)
            cursor_key = f"{table}/{day_dir.name}"
            waiting[cursor_key] = fingerprint
            if seen.get(cursor_key) == fingerprint:
                continue
            requests.append(
                dg.RunRequest(
                    run_key=f"{cursor_key}:{fingerprint}",
                    partition_key=day_dir.name,
                    asset_selection=[raw_asset_key(table)],
                    tags={"landing/files": str(len(files))},
                )
            )
    # Only days that still have files waiting are remembered, so the cursor does not grow without bound.
    context.update_cursor(json.dumps(waiting, sort_keys=True))
    if not requests:
        return dg.SkipReason("no new or changed files in the landing folders")
    return requests
