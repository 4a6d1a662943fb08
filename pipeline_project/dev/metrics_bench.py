"""How long one scrape of the metrics exporter takes after 90 days of history (bench/metrics_scrape.json).

    python -m pipeline_project.dev.metrics_bench [--days 90] [--keep DIR]

It builds the history the exporter reads, in a temporary state directory, shaped like production:
- A Dagster instance (SQLite, as `make dev` uses) with, per day, the daily `shop_pipeline` run of all 19
  assets and their 85 checks (the real keys and check names), an `asset_checks` run of the checks, and a
  landing-file run of `raw_web_events`; every 15th day's daily run fails, every 10th day a WARN check and
  every 30th day an ERROR check fails; freshness goes WARN/FAIL and back a few times a week. The assets are
  stand-ins that do no work (so 90 days build in minutes): the instance holds the same kinds and numbers
  of events as real runs, which is what the exporter's queries cost. The runs execute now, one after
  another, so all of them fall inside the exporter's 24 h run lookback: its first scrape reads all 90
  days of runs, a worse case than production, where it reads one day's.
- The load ledger: one manifest per table and day (6 tables x 90 days), with scale-1 row counts,
  quarantined rows, and dropped copies per kind.
- The alert outbox: about three incidents a day, each raised and resolved on three channels, a few
  deliveries failing first.

The history is built on tmpfs (Dagster's SQLite storage opens a connection per event written) and copied
to the state directory on disk. Then it starts the exporter as `make dev` does (a separate process;
METRICS_CACHE_SECONDS=0, so every scrape collects) and times HTTP scrapes: the first (cold: it reads the
lookback's runs), then warm scrapes with nothing new, then a scrape after one more run finished.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

from pipeline_project.alerting.alert import Action, Alert, AlertKind, Severity
from pipeline_project.alerting.delivery import DeliveryReport, write_heartbeat
from pipeline_project.alerting.outbox import Outbox, Signal
from pipeline_project.lake.manifest import PartitionManifest
from pipeline_project.observability.process import ExporterProcess
from pipeline_project.settings import REPO_ROOT

RESULTS = REPO_ROOT / "bench" / "metrics_scrape.json"
END = date(2026, 3, 21)
# Scale-1 rows per day (README: ~2,000 orders and ~50,000 web events a day).
TABLE_ROWS = {
    "customers": 1500,
    "products": 500,
    "orders": 2000,
    "order_items": 5000,
    "payments": 2030,
    "web_events": 50000,
}
CHANNELS = ["webhook", "slack", "log"]


def production_shape() -> tuple[list[dg.AssetKey], list[dg.AssetCheckKey]]:
    from pipeline_project.definitions import defs

    graph = defs.resolve_asset_graph()
    return sorted(graph.materializable_asset_keys), sorted(graph.asset_check_keys, key=str)


def stand_in_definitions(asset_keys, check_keys) -> dg.Definitions:
    severity = {
        key: dg.AssetCheckSeverity.WARN
        if key.name in ("contract_warnings", "schema_drift", "landing_files_accepted")
        else dg.AssetCheckSeverity.ERROR
        for key in check_keys
    }

    @dg.multi_asset(
        specs=[dg.AssetSpec(key) for key in asset_keys],
        check_specs=[dg.AssetCheckSpec(key.name, asset=key.asset_key) for key in check_keys],
        can_subset=True,
    )
    def shop(context):
        day = int(context.run.tags["bench/day"])
        if context.run.tags.get("bench/fail") == "yes":
            raise RuntimeError("GET /v1/orders answered HTTP 503 (stand-in outage)")
        for key in sorted(context.selected_asset_keys):
            yield dg.MaterializeResult(asset_key=key, metadata={"rows": 1000 + day})
        for key in sorted(context.selected_asset_check_keys, key=str):
            failing = (key.name == "contract_warnings" and day % 10 == 0) or (
                key.name == "contract_errors" and day % 30 == 0
            )
            yield dg.AssetCheckResult(
                asset_key=key.asset_key, check_name=key.name, passed=not failing, severity=severity[key]
            )

    return dg.Definitions(
        assets=[shop],
        jobs=[
            dg.define_asset_job("shop_pipeline", selection=dg.AssetSelection.all()),
            dg.define_asset_job("asset_checks", selection=dg.AssetSelection.all_asset_checks()),
            dg.define_asset_job("__ASSET_JOB", selection=dg.AssetSelection.assets("raw_web_events").without_checks()),
        ],
    )


def build_instance(home: Path, days: int) -> dict[str, int]:
    asset_keys, check_keys = production_shape()
    defs = stand_in_definitions(asset_keys, check_keys)
    jobs = {name: defs.resolve_job_def(name) for name in ("shop_pipeline", "asset_checks", "__ASSET_JOB")}
    rng = random.Random(7)
    counts = {"runs": 0, "failed_runs": 0, "freshness_changes": 0}
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        for day in range(1, days + 1):
            fail = day % 15 == 0
            for name in ("shop_pipeline", "asset_checks", "__ASSET_JOB"):
                failing_run = fail and name == "shop_pipeline"
                jobs[name].execute_in_process(
                    instance=instance,
                    tags={"bench/day": str(day), "bench/fail": "yes" if failing_run else "no"},
                    raise_on_error=False,
                )
                counts["runs"] += 1
                counts["failed_runs"] += failing_run
            for key in rng.sample(asset_keys, 2 if day % 3 == 0 else 0):
                bad = FreshnessState.FAIL if day % 7 == 0 else FreshnessState.WARN
                for previous, new in ((FreshnessState.PASS, bad), (bad, FreshnessState.PASS)):
                    instance.report_runless_asset_event(
                        FreshnessStateChange(
                            key=key, previous_state=previous, new_state=new, state_change_timestamp=time.time()
                        )
                    )
                    counts["freshness_changes"] += 1
    return counts


def build_ledger(lake_dir: Path, days: int) -> int:
    rng = random.Random(11)
    written = 0
    for table, rows in TABLE_ROWS.items():
        directory = lake_dir / "manifests" / table
        directory.mkdir(parents=True, exist_ok=True)
        for offset in range(days):
            day = END - timedelta(days=offset)
            quarantined = rng.randint(0, 4)
            copies = {"identical": rng.randint(0, 6), "newer_version": rng.randint(0, 2), "older_version": 0}
            loaded = rows + rng.randint(-50, 50)
            total = loaded + quarantined + sum(copies.values())
            keys = {"count": loaded + quarantined, "key_checksum": "0", "amount_total": None}
            manifest = PartitionManifest(
                table=table,
                partition=day.isoformat(),
                run_id=f"bench-{offset:04d}",
                source_reported_count=total,
                fetched_count=total,
                loaded_count=loaded,
                quarantined_count=quarantined,
                quarantine_reasons={"order_id:not_null": quarantined} if quarantined else {},
                data_file=f"raw/{table}/date={day}/data.parquet",
                data_sha256="0" * 64,
                quarantine_file=f"quarantine/{table}/date={day}/data.parquet",
                quarantine_sha256="0" * 64,
                committed_at=datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC).isoformat(),
                stage_seconds={"extract": 1.2, "validate": 0.4, "write": 0.2},
                pages=max(rows // 5000, 1),
                bytes_read=rows * 180,
                copies_dropped=copies,
                accounted=keys,
                control={"kind": "control endpoint", **keys},
                verdict={"agrees": True},
            )
            record = asdict(manifest)
            (directory / f"date={day.isoformat()}.json").write_text(json.dumps(record, indent=2))
            written += 1
    return written


def build_outbox(alert_dir: Path, days: int) -> int:
    outbox = Outbox(alert_dir / "outbox.sqlite")
    rng = random.Random(13)
    event_id = 0
    for day in range(days):
        for incident in range(3):
            subject = f"check:daily_revenue:contract_warnings:{day}-{incident}"
            for firing in (True, False):
                event_id += 1
                alert = Alert(
                    dedup_key="",
                    incident_key="",
                    kind=AlertKind.CHECK_FAILED,
                    action=Action.TRIGGER,
                    severity=Severity.WARN,
                    title=f"daily_revenue · contract_warnings {'failed' if firing else 'passes again'}",
                    summary="stand-in",
                    runbook="runbooks/contract-check-failure.md",
                    owners=("team:analytics-engineering",),
                    route="analytics-engineering",
                )
                outbox.record(Signal(subject, firing, event_id, alert), CHANNELS)
        for delivery in outbox.claim_due(limit=1000, now=time.time() + 10**6):
            if rng.random() < 0.05:
                outbox.mark_failed(delivery, "HTTP 503")
            else:
                outbox.mark_delivered(delivery)
    write_heartbeat(alert_dir / "heartbeat.json", outbox, DeliveryReport())
    return len(outbox.deliveries())


def time_scrapes(state: Path, warm: int = 20) -> dict:
    env = {
        "DAGSTER_HOME": str(state / "dagster_home"),
        "PIPELINE_LAKE_DIR": str(state / "lake"),
        "ALERT_DIR": str(state / "alerts"),
        "METRICS_CACHE_SECONDS": "0",
    }

    def scrape(url: str) -> tuple[float, str]:
        started = time.perf_counter()
        text = httpx.get(url, timeout=120).raise_for_status().text
        return time.perf_counter() - started, text

    with ExporterProcess(state / "exporter.log", port=0, env=env) as exporter:
        cold, text = scrape(exporter.url)
        warm_times = [scrape(exporter.url)[0] for _ in range(warm)]
        asset_keys, check_keys = production_shape()
        defs = stand_in_definitions(asset_keys, check_keys)
        with dg.instance_for_test(temp_dir=str(state / "dagster_home")) as instance:
            defs.resolve_job_def("shop_pipeline").execute_in_process(
                instance=instance, tags={"bench/day": "91", "bench/fail": "no"}
            )
        after_run, _ = scrape(exporter.url)
    parts = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("pipeline_exporter_collector_duration_seconds{")
    }
    return {
        "first_scrape_seconds": round(cold, 3),
        "first_scrape_parts_seconds": {name: round(value, 3) for name, value in parts.items()},
        "warm_scrape_seconds_median": round(statistics.median(warm_times), 4),
        "warm_scrape_seconds_max": round(max(warm_times), 4),
        "scrape_after_one_new_run_seconds": round(after_run, 4),
        "series": sum(1 for line in text.splitlines() if line and not line.startswith("#")),
        "exposition_bytes": len(text.encode()),
    }


def _report(args: argparse.Namespace, state: Path, history: dict) -> int:
    result = {
        "days": history["days"],
        "history": history,
        "scrape": time_scrapes(state),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg()},
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["scrape"], indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--keep", type=Path, help="build the history here and keep it (default: a temp dir)")
    parser.add_argument("--report", type=Path, default=RESULTS)
    parser.add_argument("--measure-only", action="store_true", help="time scrapes of the history in --keep again")
    args = parser.parse_args(argv)
    if args.measure_only:
        if args.keep is None:
            parser.error("--measure-only needs --keep DIR (a history built before)")
        return _report(args, args.keep, json.loads((args.keep / "history.json").read_text()))
    state = args.keep or Path(tempfile.mkdtemp(prefix="metrics-bench-"))
    # Dagster's SQLite storage opens a connection per event written (~8 ms here): the history is built in
    # memory when /dev/shm exists, then copied to `state` on disk, where the scrapes are timed.
    shm = Path("/dev/shm")
    build = Path(tempfile.mkdtemp(prefix="metrics-bench-build-", dir=shm if shm.is_dir() else None))
    try:
        started = time.perf_counter()
        (build / "dagster_home").mkdir(parents=True, exist_ok=True)
        history = build_instance(build / "dagster_home", args.days)
        history["manifests"] = build_ledger(build / "lake", args.days)
        history["outbox_deliveries"] = build_outbox(build / "alerts", args.days)
        shutil.copytree(build, state, dirs_exist_ok=True)
        shutil.rmtree(build, ignore_errors=True)
        history["build_seconds"] = round(time.perf_counter() - started, 1)
        history["instance_bytes"] = sum(p.stat().st_size for p in (state / "dagster_home").rglob("*") if p.is_file())
        history["days"] = args.days
        (state / "history.json").write_text(json.dumps(history))
        print(f"history: {history}", flush=True)
        _report(args, state, history)
    finally:
        shutil.rmtree(build, ignore_errors=True)
        if args.keep is None:
            shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
