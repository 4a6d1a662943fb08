"""The landing-file sensor asks for one run per day whose files appeared or changed, and only once."""

import os
from datetime import date

import dagster as dg

from demo_source import write_landing_files
from pipeline_project.ingest.sensors import landing_file_sensor
from pipeline_project.resources import LandingResource

from harness import DAYS


def _tick(instance, landing_dir, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"landing": LandingResource(directory=str(landing_dir))}
    )
    return landing_file_sensor(context), context.cursor


def test_new_files_become_one_run_per_day_and_a_second_tick_asks_for_nothing(state_dir, world, instance):
    landing = state_dir / "landing"
    for day in DAYS:
        write_landing_files(landing, day, world)
    (landing / "web_events" / "incoming" / "not-a-date").mkdir()

    requests, cursor = _tick(instance, landing)
    assert sorted(r.partition_key for r in requests) == [d.isoformat() for d in DAYS]
    assert all(r.asset_selection == [dg.AssetKey("raw_web_events")] for r in requests)
    assert len({r.run_key for r in requests}) == len(DAYS)

    again, cursor = _tick(instance, landing, cursor)
    assert isinstance(again, dg.SkipReason)

    changed = sorted((landing / "web_events" / "incoming" / DAYS[0].isoformat()).glob("*.jsonl"))[0]
    with changed.open("a") as handle:
        handle.write("\n")
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 1_000_000))
    after_change, _ = _tick(instance, landing, cursor)
    assert [r.partition_key for r in after_change] == [DAYS[0].isoformat()]


def test_days_outside_the_partitions_are_ignored(state_dir, world, instance):
    landing = state_dir / "landing"
    write_landing_files(landing, date(2020, 1, 2), world)
    result, _ = _tick(instance, landing)
    assert isinstance(result, dg.SkipReason)
