"""Named crash points for the crash-safety tests: a test-only hook, inert unless PIPELINE_FAULT_POINT is set.

A test sets `PIPELINE_FAULT_POINT=<name>` in the environment of a child process running the pipeline; when
that process reaches the point of that name it SIGKILLs itself, with no cleanup, no `finally` and no
`atexit`, as the kernel's OOM killer or a power cut would. The tests then prove that the previous good
state is still readable and that a rerun completes (docs/reliability.md, "Crashes").

With the variable unset or empty, `reached` costs one environment lookup and does nothing. A name that is
not a known point fails at the first point reached, naming the setting, so a misspelt test cannot pass by
never crashing. A deployment is unarmed by construction: only tests set the variable (no deploy/ file, no
setting of pipeline_project/settings.py, no .env.example line names it); tests/faults/test_crash_points.py
checks that every point, and the dbt post-hook, does nothing unarmed.

`mid_dbt` is reached inside dbt, which cannot signal from SQL: the macro `fault_point_mid_dbt`, a post-hook
on the mart models, writes `<warehouse>.mid_dbt.reached` once a mart has been rebuilt inside its still open
transaction and then blocks the build in a query; whoever armed the point (the test harness) SIGKILLs the
run's process group, dbt included, when that file appears.
"""

import os
import signal

SETTING = "PIPELINE_FAULT_POINT"
FAULT_POINTS = {
    "after_extract": "ingestion: a batch has been fetched from the source, nothing of it is written yet",
    "mid_write": "ingestion: the first batch is in the partition's temporary files, the rest is not",
    "after_data_before_manifest": "raw layer commit: the new data file is in place, its quarantine and "
    "manifest are not",
    "mid_dbt": "dbt: a mart was rebuilt inside its open transaction, not yet committed",
    "alert_sent_before_marked": "alert delivery: the channel accepted the alert, the outbox has not marked it",
}
MID_DBT_MARKER_SUFFIX = ".mid_dbt.reached"


class UnknownFaultPoint(ValueError):
    """PIPELINE_FAULT_POINT names no fault point."""


def reached(point: str) -> None:
    """SIGKILL this process if PIPELINE_FAULT_POINT names `point`."""
    armed = os.environ.get(SETTING)
    if not armed:
        return
    if armed not in FAULT_POINTS:
        raise UnknownFaultPoint(f"{SETTING}={armed!r} is not a fault point; expected one of {', '.join(FAULT_POINTS)}")
    if armed == point:
        os.kill(os.getpid(), signal.SIGKILL)
