"""The exporter as a real process on a free loopback port, reading real state: a Dagster instance with a
real ingestion run against the demo source (retried through 429s, with duplicated records), a failed run,
a freshness FAIL, the raw layer's manifests, an alert outbox with a failing channel, and the heartbeat.
Every assertion is on scraped values."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import httpx
import pytest
import yaml
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange
from prometheus_client.parser import text_string_to_metric_families

from demo_source import DemoShopServer, Faults, ShopWorld
from pipeline_project.alerting.delivery import DeliveryReport, write_heartbeat
from pipeline_project.alerting.outbox import Outbox
from pipeline_project.alerting.signals import delivery_failing_signal
from pipeline_project.ingest.api_assets import build_api_ingestion_asset
from pipeline_project.lake.raw_store import Lake
from pipeline_project.observability.exporter import ExporterSettings, SettingError, build_registry
from pipeline_project.observability.process import ExporterProcess
from pipeline_project.resources import LakeResource, ShopApiResource
from pipeline_project.settings import REPO_ROOT

from harness import DAYS, TEST_SCALE, TOKEN

DAY = DAYS[0]
RAW_ORDERS = build_api_ingestion_asset("orders")
Samples = dict[tuple[str, frozenset], float]


@dg.asset
def broken_feed() -> None:
    raise RuntimeError("the feed's upstream is down")


def scrape(url: str) -> Samples:
    text = httpx.get(url, timeout=30).raise_for_status().text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def samples_of(registry) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value for family in registry.collect() for s in family.samples}


def series(samples: Samples, name: str) -> dict[frozenset, float]:
    return {labels: v for (sample, labels), v in samples.items() if sample == name}


@dataclass
class ObservedState:
    root: Path
    env: dict[str, str]
    orders_manifest: object
    webhook_failures: int


def write_manifest(lake_dir: Path, day: date, fields: dict) -> Path:
    """A manifest of orders on `day`, as a writer left it."""
    path = lake_dir / "manifests" / "orders" / f"date={day.isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**fields, "table": "orders", "partition": day.isoformat()}))
    return path


@pytest.fixture(scope="module")
def observed(tmp_path_factory) -> ObservedState:
    root = tmp_path_factory.mktemp("observed")
    home, lake_dir, alert_dir = root / "dagster_home", root / "lake", root / "alerts"
    home.mkdir()
    python_logs = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())["python_logs"]
    with (
        DemoShopServer(ShopWorld(scale=TEST_SCALE), token=TOKEN) as server,
        dg.instance_for_test(temp_dir=str(home), overrides={"python_logs": python_logs}) as instance,
    ):
        server.set_faults(Faults(rate_limit_every=3, retry_after_seconds=0.05, duplicate_rate=0.05))
        good = dg.materialize(
            [RAW_ORDERS],
            instance=instance,
            partition_key=DAY.isoformat(),
            resources={
                "shop_api": ShopApiResource(base_url=server.url, token=TOKEN, page_size=100),
                "lake": LakeResource(root=str(lake_dir)),
            },
        )
        assert good.success
        assert not dg.materialize([broken_feed], instance=instance, raise_on_error=False).success
        instance.report_runless_asset_event(
            FreshnessStateChange(
                key=dg.AssetKey("raw_orders"),
                previous_state=FreshnessState.PASS,
                new_state=FreshnessState.FAIL,
                state_change_timestamp=time.time(),
            )
        )
    lake = Lake(lake_dir)
    manifest = lake.read_manifest("orders", DAY)
    assert manifest.copies > 0, "the source sent no duplicates"
    # A day with copies of every kind, one written before reconciliation by key (no verdict: it does not
    # reconcile), and a load that did not reconcile and was not committed.
    day_before = asdict(manifest) | {
        "partition": (DAY - timedelta(days=1)).isoformat(),
        "loaded_count": 100,
        "copies_dropped": {"identical": 3, "newer_version": 1, "older_version": 1},
        "fetched_count": 100 + manifest.quarantined_count + 5,
        "committed_at": "2026-03-14T02:20:00+00:00",
    }
    write_manifest(lake_dir, DAY - timedelta(days=1), day_before)
    old = {name: value for name, value in asdict(manifest).items() if name not in ("verdict", "control", "accounted")}
    write_manifest(lake_dir, DAY - timedelta(days=2), old | {"duplicates_dropped": 0})
    lake.record_rejected(replace(manifest, partition=(DAY - timedelta(days=3)).isoformat(), run_id="run-rejected"))
    # The outbox: one alert to two channels; the webhook fails twice, the log accepts it.
    outbox = Outbox(alert_dir / "outbox.sqlite")
    outbox.record(delivery_failing_signal("slack", "k", "refused", firing=True, event_id=1), ["webhook", "log"])
    for _ in range(2):
        for delivery in outbox.claim_due(now=time.time() + 3600):
            if delivery.channel == "webhook":
                outbox.mark_failed(delivery, "HTTP 503")
            else:
                outbox.mark_delivered(delivery)
    write_heartbeat(alert_dir / "heartbeat.json", outbox, DeliveryReport())
    env = {
        "DAGSTER_HOME": str(home),
        "PIPELINE_LAKE_DIR": str(lake_dir),
        "ALERT_DIR": str(alert_dir),
        "METRICS_CACHE_SECONDS": "0.5",
        "METRICS_PARTITION_DAYS": "2",
        "SHOP_API_TOKEN": TOKEN,
    }
    return ObservedState(root, env, manifest, webhook_failures=2)


@pytest.fixture(scope="module")
def exporter(observed):
    with ExporterProcess(observed.root / "exporter.log", port=0, env=observed.env) as process:
        yield process


def test_runs_checks_and_freshness_are_scraped_from_the_instance(exporter):
    samples = scrape(exporter.url)
    job = "__ephemeral_asset_job__"
    # raw_orders succeeded, broken_feed failed
    assert value(samples, "pipeline_runs_total", dagster_job=job, status="success") == 1
    assert value(samples, "pipeline_runs_total", dagster_job=job, status="failure") == 1
    assert value(samples, "pipeline_runs_total", dagster_job=job, status="canceled") == 0
    assert value(samples, "pipeline_run_duration_seconds_count", dagster_job=job, status="success") == 1
    assert value(samples, "pipeline_run_duration_seconds_bucket", dagster_job=job, status="failure", le="+Inf") == 1
    assert value(samples, "pipeline_run_last_success_timestamp_seconds", dagster_job=job) > time.time() - 600
    checks = series(samples, "pipeline_asset_check_passed")
    assert checks[frozenset({"asset": "raw_orders", "check": "source_reconciled", "severity": "ERROR"}.items())] == 1
    assert value(samples, "pipeline_asset_check_evaluations_total", severity="ERROR", outcome="passed") >= 1
    assert value(samples, "pipeline_asset_check_evaluations_total", severity="ERROR", outcome="failed") == 0
    assert value(samples, "pipeline_asset_freshness_state", asset="raw_orders", state="FAIL") == 1
    assert value(samples, "pipeline_asset_freshness_state", asset="raw_orders", state="PASS") == 0
    assert 0 < value(samples, "pipeline_asset_freshness_lag_seconds", asset="raw_orders") < 600
    assert all(value(samples, "pipeline_exporter_collector_up", collector=c) == 1 for c in ("runs", "checks"))


def test_the_ledger_is_scraped_per_table_and_partition_with_copies_per_kind(exporter, observed):
    samples = scrape(exporter.url)
    manifest = observed.orders_manifest
    day, before, oldest = DAY.isoformat(), (DAY - timedelta(days=1)).isoformat(), (DAY - timedelta(days=2)).isoformat()
    assert value(samples, "pipeline_partition_rows_loaded", table="orders", partition=day) == manifest.loaded_count
    assert value(samples, "pipeline_partition_rows_quarantined", table="orders", partition=day) == 0
    assert value(samples, "pipeline_partition_reconciled", table="orders", partition=day) == 1
    copies = "pipeline_partition_rows_dropped_copies"
    kinds = ("identical", "newer_version", "older_version")
    assert [value(samples, copies, table="orders", partition=day, kind=k) for k in kinds] == [
        manifest.copies_dropped[k] for k in kinds
    ]
    assert [value(samples, copies, table="orders", partition=before, kind=k) for k in kinds] == [3, 1, 1]
    assert value(samples, "pipeline_partition_reconciled", table="orders", partition=before) == 1
    # METRICS_PARTITION_DAYS=2: the oldest partition has no series of its own but counts in the table's.
    assert (
        "pipeline_partition_rows_loaded",
        frozenset({"table": "orders", "partition": oldest}.items()),
    ) not in samples
    assert value(samples, "pipeline_table_partitions", table="orders") == 3
    assert value(samples, "pipeline_table_unreconciled_partitions", table="orders") == 1  # the old one: no verdict
    assert value(samples, "pipeline_table_rejected_loads", table="orders") == 1
    assert value(samples, "pipeline_table_last_commit_timestamp_seconds", table="orders") > time.time() - 600


def test_the_outbox_backlog_delivery_failures_and_heartbeat_are_scraped(exporter, observed):
    samples = scrape(exporter.url)
    assert value(samples, "pipeline_alert_outbox_pending") == 1
    assert value(samples, "pipeline_alert_deliveries", channel="webhook", state="pending") == 1
    assert value(samples, "pipeline_alert_deliveries", channel="log", state="delivered") == 1
    assert value(samples, "pipeline_alert_delivery_failures_total", channel="webhook") == observed.webhook_failures
    assert value(samples, "pipeline_alert_delivery_failures_total", channel="log") == 0
    assert value(samples, "pipeline_alert_incidents_open", kind="alert_delivery_failing") == 1
    assert 0 < value(samples, "pipeline_alert_outbox_oldest_pending_age_seconds") < 600
    assert 0 <= value(samples, "pipeline_monitoring_heartbeat_age_seconds") < 600


def test_a_scrape_sees_changes_once_the_cache_expires(exporter, observed):
    heartbeat = Path(observed.env["ALERT_DIR"]) / "heartbeat.json"
    heartbeat.write_text(json.dumps({"ticked_at": time.time() - 7200}))
    time.sleep(0.6)
    assert value(scrape(exporter.url), "pipeline_monitoring_heartbeat_age_seconds") >= 7200
    heartbeat.unlink()
    time.sleep(0.6)
    assert math.isinf(value(scrape(exporter.url), "pipeline_monitoring_heartbeat_age_seconds"))


def test_scrapes_within_the_cache_window_cost_no_collection(tmp_path):
    settings = ExporterSettings(tmp_path / "missing", tmp_path, tmp_path, cache_seconds=1.5)
    registry, collector = build_registry(settings, lambda: None)
    heartbeat = tmp_path / "heartbeat.json"
    heartbeat.write_text(json.dumps({"ticked_at": time.time()}))
    collector._parts = lambda: [("monitoring", collector.monitoring.families)]  # the part under test
    age = "pipeline_monitoring_heartbeat_age_seconds"
    first = samples_of(registry)
    heartbeat.unlink()
    assert samples_of(registry) == first
    time.sleep(1.6)
    assert math.isinf(value(samples_of(registry), age))


def test_the_exporter_listens_on_loopback_and_logs_json_without_secrets(exporter, observed):
    assert exporter.url.startswith("http://127.0.0.1:")
    lines = (observed.root / "exporter.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(r["message"].startswith("serving metrics on http://127.0.0.1:") for r in records)
    assert all(r["process"] == "exporter" for r in records)
    assert TOKEN not in "\n".join(lines)


def test_a_part_that_cannot_be_read_is_reported_and_the_rest_still_scraped(tmp_path):
    settings = ExporterSettings(dagster_home=tmp_path / "missing", lake_dir=tmp_path, alert_dir=tmp_path)

    def no_instance():
        raise FileNotFoundError(f"DAGSTER_HOME {tmp_path / 'missing'} does not exist yet")

    registry, _ = build_registry(settings, no_instance)
    samples = samples_of(registry)
    assert value(samples, "pipeline_exporter_collector_up", collector="runs") == 0
    assert value(samples, "pipeline_exporter_collector_errors_total", collector="freshness") == 1
    assert value(samples, "pipeline_exporter_collector_up", collector="ledger") == 1
    assert math.isinf(value(samples, "pipeline_monitoring_heartbeat_age_seconds"))


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("METRICS_PORT", "http", "METRICS_PORT must be a whole number, got 'http'"),
        ("METRICS_PORT", "70000", "METRICS_PORT must be a TCP port (0-65535), got 70000"),
        ("METRICS_CACHE_SECONDS", "-1", "METRICS_CACHE_SECONDS must be at least 0, got '-1'"),
        ("METRICS_PARTITION_DAYS", "0", "METRICS_PARTITION_DAYS must be at least 1, got '0'"),
    ],
)
def test_settings_have_defaults_and_bad_values_name_the_setting(monkeypatch, name, raw, message):
    for setting in ("METRICS_HOST", "METRICS_PORT", "METRICS_CACHE_SECONDS", "METRICS_PARTITION_DAYS"):
        monkeypatch.delenv(setting, raising=False)
    defaults = ExporterSettings.from_env()
    assert (defaults.host, defaults.port, defaults.cache_seconds, defaults.partition_days) == ("127.0.0.1", 9108, 10, 7)
    monkeypatch.setenv(name, raw)
    with pytest.raises(SettingError) as error:
        ExporterSettings.from_env()
    assert str(error.value) == message
    assert os.environ[name] == raw
