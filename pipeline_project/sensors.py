"""Sensors that turn outside events into runs: new or changed landing files become runs of their partition."""

import hashlib
import json
from datetime import date

import dagster as dg

from pipeline_project.ingestion import LANDING_TABLES, raw_asset_key
from pipeline_project.partitions import daily_partitions
from pipeline_project.resources import LandingResource
from pipeline_project.sources import landing_files


def _fingerprint(paths) -> str:
    listing = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


@dg.sensor(
    name="landing_file_sensor",
    description="Requests a run of a landing-file asset's partition when that day's files appear or change.",
    asset_selection=[raw_asset_key(table) for table in LANDING_TABLES],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def landing_file_sensor(context: dg.SensorEvaluationContext, landing: LandingResource):
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    valid_keys = set(daily_partitions.get_partition_keys())
    requests = []
    for table in LANDING_TABLES:
        table_dir = landing.path / table
        if not table_dir.is_dir():
            continue
        for day_dir in sorted(p for p in table_dir.iterdir() if p.is_dir()):
            if day_dir.name not in valid_keys:
                continue
            files = landing_files(landing.path, table, date.fromisoformat(day_dir.name))
            if not files:
                continue
            fingerprint = _fingerprint(files)
            cursor_key = f"{table}/{day_dir.name}"
            if seen.get(cursor_key) == fingerprint:
                continue
            seen[cursor_key] = fingerprint
            requests.append(
                dg.RunRequest(
                    run_key=f"{cursor_key}:{fingerprint}",
                    partition_key=day_dir.name,
                    asset_selection=[raw_asset_key(table)],
                    tags={"landing/files": str(len(files))},
                )
            )
    context.update_cursor(json.dumps(seen, sort_keys=True))
    if not requests:
        return dg.SkipReason("no new or changed landing files")
    return requests
