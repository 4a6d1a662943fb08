"""`make run`: materialize the whole asset graph for the last N days against the demo source, print a summary.

Usage: python -m pipeline_project.dev.run [--days 7] [--end-date YYYY-MM-DD] [--full-refresh]
Exit status 0 when the run succeeded and no ERROR check failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
import uuid
import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pipeline_project.dev.environment import demo_source_wanted, ensure_dbt_manifest, prepare_environment

RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _progress_event_types() -> set:
    from dagster import DagsterEventType

    return {
        DagsterEventType.STEP_START,
        DagsterEventType.STEP_SUCCESS,
        DagsterEventType.STEP_FAILURE,
        DagsterEventType.STEP_UP_FOR_RETRY,
        DagsterEventType.ASSET_MATERIALIZATION,
        DagsterEventType.ASSET_CHECK_EVALUATION,
    }


def _progress_line(event, started: float) -> str | None:
    from dagster import DagsterEventType

    elapsed = f"[{time.monotonic() - started:6.1f}s]"
    kind = event.event_type
    if kind == DagsterEventType.STEP_START:
        return f"{elapsed} start  {event.step_key}"
    if kind == DagsterEventType.STEP_SUCCESS:
        return f"{elapsed} done   {event.step_key}"
    if kind == DagsterEventType.STEP_FAILURE:
        return f"{elapsed} FAILED {event.step_key}"
    if kind == DagsterEventType.STEP_UP_FOR_RETRY:
        return f"{elapsed} retry  {event.step_key}"
    if kind == DagsterEventType.ASSET_MATERIALIZATION:
        materialization = event.event_specific_data.materialization
        rows = materialization.metadata.get("dagster/row_count")
        partition = f" {materialization.partition}" if materialization.partition else ""
        count = f" {getattr(rows, 'value', rows):,} rows" if rows is not None else ""
        return f"{elapsed}   materialized {materialization.asset_key.to_user_string()}{partition}{count}"
    if kind == DagsterEventType.ASSET_CHECK_EVALUATION and not event.event_specific_data.passed:
        evaluation = event.event_specific_data
        return (
            f"{elapsed}   check failed ({evaluation.severity.value}) "
            f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        )
    return None


def run_pipeline(
    instance,
    days: int,
    end_date: date,
    log_path: Path,
    progress=print,
    *,
    full_refresh: bool = False,
    asset_selection: list[str] | None = None,
):
    """Materialize every asset (or `asset_selection`) for the `days` partitions ending at `end_date`; return
    (RunSummary, seconds). With `full_refresh`, the dbt build rebuilds every model from the whole raw layer."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from pipeline_project.transform.dbt_assets import FULL_REFRESH_TAG

    start_date = end_date - timedelta(days=days - 1)
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: start_date.isoformat(),
        ASSET_PARTITION_RANGE_END_TAG: end_date.isoformat(),
        **({FULL_REFRESH_TAG: "true"} if full_refresh else {}),
    }
    return execute_job(instance, "shop_pipeline", tags, log_path, progress, asset_selection=asset_selection)


def execute_job(
    instance,
    job_name: str,
    tags: dict[str, str],
    log_path: Path,
    progress=print,
    *,
    asset_selection: list[str] | None = None,
):
    """Run one job of the code location in this process; return (RunSummary, seconds).

    What the run writes to stdout (dbt's own log lines) goes to `log_path`; `progress` gets one line per
    step, materialization and failed check while the run goes on. A local SQLite instance stores the run's
    events without a disk sync per event (`sqlite_instance`; PIPELINE_SQLITE_STOCK=1 keeps Dagster's own
    settings).
    """
    import dagster as dg

    from pipeline_project.definitions import defs
    from pipeline_project.dev import sqlite_instance
    from pipeline_project.dev.summary import summarize_run

    if os.environ.get(sqlite_instance.STOCK_SETTING) != "1":
        sqlite_instance.install()
    job = defs.resolve_job_def(job_name)
    run_id = str(uuid.uuid4())
    outcome: dict = {}

    def execute() -> None:
        try:
            outcome["result"] = job.execute_in_process(
                run_config=RUN_CONFIG,
                instance=instance,
                run_id=run_id,
                raise_on_error=False,
                tags=tags,
                asset_selection=None if asset_selection is None else [dg.AssetKey(key) for key in asset_selection],
            )
        except Exception as error:  # re-raised below, once the progress loop has ended
            outcome["error"] = error

    worker = threading.Thread(target=execute, name=f"{job_name}-run")
    started = time.monotonic()
    cursor = None
    # Only the events a progress line is made of are read back: a run stores ~300 events, most of them
    # planned and output events of dbt tests, and reading them costs the run's own thread time.
    progress_events = _progress_event_types()
    with log_path.open("a") as log, contextlib.redirect_stdout(log):
        worker.start()
        while True:
            finished = not worker.is_alive()
            if instance.has_run(run_id):
                connection = instance.get_records_for_run(run_id, cursor=cursor, of_type=progress_events)
                cursor = connection.cursor
                for record in connection.records:
                    event = record.event_log_entry.dagster_event
                    if event and (line := _progress_line(event, started)):
                        progress(line)
            if finished:
                break
            time.sleep(0.5)
    if "error" in outcome:
        raise outcome["error"]
    return summarize_run(instance, run_id), time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=int(os.environ.get("DAYS", "7")))
    parser.add_argument("--end-date", type=date.fromisoformat, default=None, help="default: yesterday (UTC)")
    parser.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild every dbt model from the whole raw layer (after a change to the dbt project, or to repair)",
    )
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days must be at least 1")
    end_date = args.end_date or (datetime.now(UTC).date() - timedelta(days=1))

    warnings.filterwarnings("ignore", module="dagster")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    settings = prepare_environment()
    print(f"==> state directory {settings['PIPELINE_STATE_DIR']}", flush=True)
    print("==> preparing the dbt manifest", flush=True)
    ensure_dbt_manifest()

    with contextlib.ExitStack() as stack:
        if demo_source_wanted():
            from pipeline_project.dev.demo_process import DemoSourceProcess

            print(
                f"==> starting the demo shop source and writing {args.days} day(s) of landing files",
                flush=True,
            )
            source = stack.enter_context(
                DemoSourceProcess(
                    Path(os.environ["LANDING_DIR"]),
                    end_date,
                    args.days,
                    log_path=Path(os.environ["PIPELINE_LOG_DIR"]) / "demo_source.log",
                )
            )
            source.export_settings()
            print(f"    demo source at {source.url}", flush=True)
        else:
            print(f"==> using the configured source {os.environ['SHOP_API_URL']}", flush=True)
        log_path = Path(os.environ["PIPELINE_LOG_DIR"]) / "run.log"
        print(
            f"==> materializing {args.days} day(s) ending {end_date} (whole asset graph; dbt log: {log_path})",
            flush=True,
        )
        import dagster as dg

        from pipeline_project.dev.summary import format_summary

        console = sys.stdout
        summary, seconds = run_pipeline(
            dg.DagsterInstance.get(),
            args.days,
            end_date,
            log_path,
            progress=lambda line: print(line, file=console, flush=True),
            full_refresh=args.full_refresh,
        )
    print()
    print(format_summary(summary))
    verdict = "OK" if summary.ok else "FAILED"
    print(
        f"\n{verdict}: run {summary.run_id} in {seconds:.1f}s "
        f"({len(summary.failed_error_checks)} ERROR and {len(summary.failed_warn_checks)} WARN check failures)"
    )
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
