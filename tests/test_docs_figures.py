"""Every policy figure the docs and runbooks quote is the one declared in code.

A runbook that says "the marts breach freshness 27 h after their last update" or "the step has been
retried 3 times" restates a declaration: the SLA catalogue (`pipeline_project/catalog/policies.py`), the source
client's and the circuit breaker's settings, the alert outbox's delivery policy, the sensors' intervals,
`dagster.yaml`. Each figure below is found in its document by a pattern around it and compared with the
declaration, so changing either without the other fails here. A sentence rewritten so that its pattern no
longer matches fails too, naming the pattern to update.

Figures set by Dagster itself (how often its freshness daemon evaluates, how many missed ticks a restarted
daemon catches up) are not declared in this repository and are not checked here.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pipeline_project.alerting.channels import SEND_DEADLINE_SECONDS
from pipeline_project.alerting.outbox import DeliveryPolicy
from pipeline_project.alerting.resource import AlertingResource
from pipeline_project.alerting.sensors import SENSOR_INTERVAL_SECONDS
from pipeline_project.catalog.partitions import LOOKBACK_DAYS
from pipeline_project.catalog.policies import (
    DBT_GROUPS,
    INGESTION_GROUP,
    RETRY_DELAY_SCALE,
    SLA_CATALOGUE,
    WAREHOUSE_POOL,
)
from pipeline_project.definitions import defs
from pipeline_project.ingest.sources import ShopApiClient
from pipeline_project.ops.oncall.cli import build_parser
from pipeline_project.resources import LakeResource, ShopApiResource
from pipeline_project.transform.warehouse import DEFAULT_LOCK_WAIT_SECONDS

REPO_ROOT = Path(__file__).resolve().parents[1]
# Settings that replace a declared default when set; the figures below are the defaults.
OVERRIDING_SETTINGS = ("PIPELINE_LOOKBACK_DAYS", "ALERT_SENSOR_INTERVAL_SECONDS", "PIPELINE_RETRY_DELAY_SCALE")


def _hours(window) -> int:
    return window.days * 24 + window.seconds // 3600


def _windows(group: str) -> tuple[int, int]:
    freshness = SLA_CATALOGUE[group].freshness
    return _hours(freshness.warn_window), _hours(freshness.fail_window)


def _retries(group: str) -> tuple[int, float]:
    retry = SLA_CATALOGUE[group].retry
    return retry.max_retries, retry.delay / RETRY_DELAY_SCALE


def _one(values: set):
    assert len(values) == 1, f"expected one declaration, found {values}"
    return values.pop()


def _default(callable_, parameter: str):
    return inspect.signature(callable_).parameters[parameter].default


DAGSTER_YAML = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
RULES = yaml.safe_load((REPO_ROOT / "pipeline_project/observability/prometheus/rules.yml").read_text())
MONITORING_DOWN = next(
    rule["expr"]
    for group in RULES["groups"]
    for rule in group["rules"]
    if rule.get("alert") == "PipelineMonitoringDown"
)
SCHEDULE_MINUTE, SCHEDULE_HOUR = (
    f"{int(field):02d}" for field in defs.get_schedule_def("shop_pipeline_schedule").cron_schedule.split()[:2]
)
LANDING_SENSOR_SECONDS = defs.get_sensor_def("landing_file_sensor").minimum_interval_seconds

INGESTION_WINDOWS = _windows(INGESTION_GROUP)
DBT_WINDOWS = _one({_windows(group) for group in DBT_GROUPS})
MART_FAIL_HOURS = _windows("marts")[1]
DELIVERY = DeliveryPolicy()
FALLBACK_AFTER_ATTEMPTS = _one(
    {DELIVERY.fallback_after_attempts, AlertingResource.model_fields["fallback_after_attempts"].default}
)
RETRY_BASE_SECONDS = _one({DELIVERY.base_backoff_seconds, AlertingResource.model_fields["retry_base_seconds"].default})
GIVE_UP_HOURS = DELIVERY.give_up_after_seconds / 3600
API = ShopApiResource.model_fields
WAREHOUSE_SLOTS = {1: "one"}[DAGSTER_YAML["concurrency"]["pools"]["default_limit"]]


@dataclass(frozen=True)
class Figure:
    document: str
    pattern: str  # a regex over the document with its whitespace collapsed; each group is one figure
    declared: tuple

    def __str__(self) -> str:
        return f"{self.document}: {self.pattern}"


FIGURES = (
    # Freshness windows: the SLA catalogue.
    Figure("runbooks/README.md", r"`raw_\*` warn (\d+) h / fail (\d+) h", INGESTION_WINDOWS),
    Figure("runbooks/README.md", r"dbt layers warn (\d+) h / fail (\d+) h", DBT_WINDOWS),
    Figure("runbooks/freshness-breach.md", r"\(`raw_\*`: warn (\d+) h, fail (\d+) h;", INGESTION_WINDOWS),
    Figure(
        "runbooks/freshness-breach.md",
        r"staging, intermediate, marts, snapshots: warn (\d+) h, fail (\d+) h\)",
        DBT_WINDOWS,
    ),
    Figure(
        "runbooks/schema-drift.md",
        r"The marts will breach freshness \((\d+) h after the last good load\)",
        (MART_FAIL_HOURS,),
    ),
    Figure("runbooks/source-unavailable.md", r"freshness (\d+) h after their last update", (MART_FAIL_HOURS,)),
    Figure("runbooks/source-unavailable.md", r"before the marts' (\d+) h freshness limit", (MART_FAIL_HOURS,)),
    Figure("runbooks/transformation-failure.md", r"Marts will breach freshness \((\d+) h\)", (MART_FAIL_HOURS,)),
    Figure("runbooks/transformation-timeout.md", r"Marts will breach freshness \((\d+) h\)", (MART_FAIL_HOURS,)),
    Figure("docs/operations.md", r"the drill cannot wait (\d+) h", (MART_FAIL_HOURS,)),
    # Step retries: the SLA catalogue (the rest of its table is checked by tests/test_readme.py).
    Figure(
        "docs/operations.md",
        r"\| ingestion \| (?:[^|]*\| ){5}(\d+), exponential \+ jitter from (\d+) s \|",
        _retries("ingestion"),
    ),
    Figure(
        "docs/operations.md",
        r"\| staging, intermediate, snapshots \| (?:[^|]*\| ){5}(\d+), exponential \+ jitter from (\d+) s \|",
        _one({_retries(group) for group in ("staging", "intermediate", "snapshots")}),
    ),
    Figure(
        "docs/operations.md",
        r"\| marts \| (?:[^|]*\| ){5}(\d+), exponential \+ jitter from (\d+) s \|",
        _retries("marts"),
    ),
    Figure("runbooks/source-unavailable.md", r"the step has been retried (\d+) times", (_retries(INGESTION_GROUP)[0],)),
    # The source client and the circuit breaker: ShopApiResource and ShopApiClient.
    Figure(
        "runbooks/source-unavailable.md",
        r"\((\d+) attempts, exponential backoff with jitter up to (\d+) s, `Retry-After` honoured up to (\d+) s\)",
        (
            API["max_attempts"].default,
            _default(ShopApiClient, "max_backoff_seconds"),
            _default(ShopApiClient, "max_retry_after_seconds"),
        ),
    ),
    Figure(
        "docs/reliability.md", r"`circuit_failure_threshold` \((\d+)\)", (API["circuit_failure_threshold"].default,)
    ),
    Figure("docs/reliability.md", r"`circuit_cooldown_seconds` \((\d+)\)", (API["circuit_cooldown_seconds"].default,)),
    Figure("docs/completeness.md", r"\(`reconcile_attempts`, (\d+)\)", (API["reconcile_attempts"].default,)),
    # Alert delivery: the outbox's DeliveryPolicy, the send deadline, the sensors' interval.
    Figure("runbooks/README.md", r"after (\d+) attempts \(or the channel rejected it\)", (FALLBACK_AFTER_ATTEMPTS,)),
    Figure(
        "runbooks/alert-delivery-failing.md",
        r"after (\d+) attempts \(at once if the receiver rejected it",
        (FALLBACK_AFTER_ATTEMPTS,),
    ),
    Figure("runbooks/alert-delivery-failing.md", r"Rows with `attempts` of (\d+) or more", (FALLBACK_AFTER_ATTEMPTS,)),
    Figure(
        "runbooks/alert-delivery-failing.md",
        r"this alert needs (\d+) failed attempts in a row",
        (FALLBACK_AFTER_ATTEMPTS,),
    ),
    Figure("docs/operations.md", r"a channel failed (\d+) attempts \(or rejected one\)", (FALLBACK_AFTER_ATTEMPTS,)),
    Figure("docs/operations.md", r"after (\d+) failures \(or a rejection\)", (FALLBACK_AFTER_ATTEMPTS,)),
    Figure("docs/reliability.md", r"After (\d+) failed attempts", (FALLBACK_AFTER_ATTEMPTS,)),
    Figure(
        "runbooks/alert-delivery-failing.md",
        r"\((\d+) s doubling to (\d+) min, ±20 %\) for (\d+) h",
        (RETRY_BASE_SECONDS, DELIVERY.max_backoff_seconds / 60, GIVE_UP_HOURS),
    ),
    Figure(
        "docs/operations.md",
        r"\((\d+) s doubling to (\d+) min\)",
        (RETRY_BASE_SECONDS, DELIVERY.max_backoff_seconds / 60),
    ),
    Figure("runbooks/alert-delivery-failing.md", r"After (\d+) h a delivery is given up", (GIVE_UP_HOURS,)),
    Figure("runbooks/alert-delivery-failing.md", r"Only deliveries that expired \((\d+) h\)", (GIVE_UP_HOURS,)),
    Figure("runbooks/alert-delivery-failing.md", r"created almost (\d+) h ago", (GIVE_UP_HOURS,)),
    Figure("docs/reliability.md", r"given up after (\d+) h only if the log has the alert", (GIVE_UP_HOURS,)),
    Figure(
        "runbooks/alert-delivery-failing.md",
        r"within about (\d+) minutes of recovery "
        r"\(the longest backoff, (\d+) min \+ 20 %, plus one (\d+) s sensor tick\)",
        (
            math.ceil((DELIVERY.max_backoff_seconds * 1.2 + SENSOR_INTERVAL_SECONDS) / 60),  # an upper bound
            DELIVERY.max_backoff_seconds / 60,
            SENSOR_INTERVAL_SECONDS,
        ),
    ),
    Figure(
        "docs/operations.md",
        r"claimed with a fresh token for (\d+) s, twice the (\d+) s deadline",
        (DELIVERY.claim_seconds, SEND_DEADLINE_SECONDS),
    ),
    Figure("docs/reliability.md", r"\(`SEND_DEADLINE_SECONDS`, (\d+) s,", (SEND_DEADLINE_SECONDS,)),
    Figure("docs/reliability.md", r"Once its claim expires \((\d+) s\)", (DELIVERY.claim_seconds,)),
    Figure("docs/operations.md", r"`ALERT_SENSOR_INTERVAL_SECONDS` \(default (\d+)\)", (SENSOR_INTERVAL_SECONDS,)),
    Figure(
        "runbooks/alert-delivery-failing.md", r"`alert_delivery` sensor \(every (\d+) s\)", (SENSOR_INTERVAL_SECONDS,)
    ),
    # Monitoring of monitoring: the heartbeat limit of `oncall heartbeat` and the Prometheus rule.
    Figure(
        "runbooks/alert-delivery-failing.md",
        r"older than (\d+) s means monitoring is down",
        (build_parser().parse_args(["heartbeat"]).max_age_seconds,),
    ),
    Figure(
        "docs/observability.md",
        r"heartbeat older than (\d+) s \(five missed (\d+) s ticks\)",
        (
            int(re.fullmatch(r"pipeline_monitoring_heartbeat_age_seconds > (\d+)", MONITORING_DOWN)[1]),
            SENSOR_INTERVAL_SECONDS,
        ),
    ),
    # Run monitoring, the pool: dagster.yaml.
    Figure(
        "runbooks/README.md",
        r"longer than (\d+) s \(`max_runtime_seconds` in `dagster.yaml`\)",
        (DAGSTER_YAML["run_monitoring"]["max_runtime_seconds"],),
    ),
    Figure(
        "docs/reliability.md",
        r"`max_runtime_seconds` \((\d+), `dagster.yaml`\)",
        (DAGSTER_YAML["run_monitoring"]["max_runtime_seconds"],),
    ),
    Figure("docs/operations.md", rf"The `{WAREHOUSE_POOL}` pool has (\w+) slot", (WAREHOUSE_SLOTS,)),
    Figure("runbooks/README.md", rf"which run holds the (\w+) `{WAREHOUSE_POOL}` slot", (WAREHOUSE_SLOTS,)),
    # Schedule and sensors: the definitions.
    Figure("runbooks/freshness-breach.md", r"for the last days at (\d\d):(\d\d) UTC", (SCHEDULE_HOUR, SCHEDULE_MINUTE)),
    Figure("docs/deploy.md", r"`shop_pipeline_schedule` \((\d\d):(\d\d) UTC\)", (SCHEDULE_HOUR, SCHEDULE_MINUTE)),
    Figure(
        "runbooks/freshness-breach.md", r"starts a run within (\d+) s of the files appearing", (LANDING_SENSOR_SECONDS,)
    ),
    Figure("runbooks/source-unavailable.md", r"starts a run for its day within (\d+) s", (LANDING_SENSOR_SECONDS,)),
    # Settings' defaults.
    Figure("docs/reliability.md", r"`PIPELINE_LOOKBACK_DAYS` days \(default (\d+)\)", (LOOKBACK_DAYS,)),
    Figure("docs/configuration.md", r"\| `PIPELINE_LOOKBACK_DAYS` \| [^|]* \| `(\d+)` \|", (LOOKBACK_DAYS,)),
    Figure(
        "docs/reliability.md",
        r"`PIPELINE_MAX_CLOCK_SKEW_MINUTES` \((\d+)\)",
        (LakeResource.model_fields["max_clock_skew_minutes"].default,),
    ),
    Figure(
        "docs/configuration.md",
        r"\| `PIPELINE_MAX_CLOCK_SKEW_MINUTES` \| [^|]* \| `(\d+)` \|",
        (LakeResource.model_fields["max_clock_skew_minutes"].default,),
    ),
    Figure(
        "docs/reliability.md", r"up to (\d+) s \(`PIPELINE_WAREHOUSE_LOCK_WAIT_SECONDS`\)", (DEFAULT_LOCK_WAIT_SECONDS,)
    ),
    Figure(
        "docs/configuration.md",
        r"\| `PIPELINE_WAREHOUSE_LOCK_WAIT_SECONDS` \| [^|]* \| `(\d+)` \|",
        (DEFAULT_LOCK_WAIT_SECONDS,),
    ),
)


def _text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@pytest.fixture(autouse=True)
def _declared_defaults_in_effect():
    overridden = [name for name in OVERRIDING_SETTINGS if os.environ.get(name)]
    if overridden:
        pytest.skip(f"{', '.join(overridden)} set: the code's defaults are not in effect")


@pytest.mark.parametrize("figure", FIGURES, ids=str)
def test_the_quoted_figure_is_the_declared_one(figure):
    text = re.sub(r"\s+", " ", (REPO_ROOT / figure.document).read_text())
    found = [match.groups() for match in re.finditer(figure.pattern, text)]
    assert found, f"{figure.document} no longer has {figure.pattern!r}: update the pattern here with the text"
    declared = tuple(_text(value) for value in figure.declared)
    assert all(groups == declared for groups in found), f"{figure.document} says {found}, the code declares {declared}"
