"""The Grafana dashboard is built on the exporter's metric names: every panel's query names metrics the
exporter exports (read from a real scrape of an exporter over a real, empty instance) or series the
recording rules record, and every exported metric is on the dashboard or in an alert rule. It is ready for
provisioning: a uid, unique panel ids, a Prometheus data source variable used by every query."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline_project.observability.exporter import ExporterSettings, build_registry
from pipeline_project.settings import REPO_ROOT

OBSERVABILITY = REPO_ROOT / "pipeline_project" / "observability"
DASHBOARD = json.loads((OBSERVABILITY / "grafana" / "pipeline_health.json").read_text())
RULES = yaml.safe_load((OBSERVABILITY / "prometheus" / "rules.yml").read_text())
PANELS = [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def metric_names(expr: str) -> set[str]:
    """Series names in a PromQL expression: ours (pipeline_*), recorded (level:name:operation), and up."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    tokens = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_strings))
    return {t for t in tokens if t.startswith("pipeline_") or ":" in t or t == "up"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> set[str]:
    """Sample names of a real scrape (families are exported, empty, before anything happened)."""
    root = tmp_path_factory.mktemp("empty")
    with dg.instance_for_test(temp_dir=str(root)) as instance:
        settings = ExporterSettings(dagster_home=root, lake_dir=root / "lake", alert_dir=root / "alerts")
        registry, collector = build_registry(settings, lambda: instance)
        text = generate_latest(registry).decode()
    up = {s.labels["collector"]: s.value for s in collector.collect() for s in s.samples if s.name.endswith("_up")}
    assert set(up.values()) == {1.0}, up
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def recorded() -> set[str]:
    return {rule["record"] for group in RULES["groups"] for rule in group["rules"] if "record" in rule}


@pytest.mark.parametrize("panel", PANELS, ids=[panel["title"] for panel in PANELS])
def test_every_panel_queries_exported_or_recorded_series(panel, exported):
    assert panel["targets"], f"{panel['title']} has no query"
    for target in panel["targets"]:
        names = metric_names(target["expr"])
        assert names, f"{panel['title']}: {target['expr']} names no metric"
        unknown = names - exported - recorded() - {"up"}
        assert not unknown, f"{panel['title']}: {sorted(unknown)} are neither exported nor recorded"
        assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_every_exported_metric_is_on_the_dashboard_or_in_a_rule(exported):
    used = {name for panel in PANELS for target in panel["targets"] for name in metric_names(target["expr"])}
    used |= {name for g in RULES["groups"] for rule in g["rules"] for name in metric_names(rule["expr"])}
    histogram_parts = {name for name in exported if name.endswith(("_sum", "_count"))}
    assert exported - histogram_parts - used == set()


def test_recording_rules_used_by_the_dashboard_exist_and_the_dashboard_is_provisionable():
    assert DASHBOARD["uid"] == "pipeline-health" and DASHBOARD["title"]
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    [variable] = DASHBOARD["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == ("datasource", "datasource", "prometheus")
    provisioning = yaml.safe_load((OBSERVABILITY / "grafana" / "provisioning.yml").read_text())
    assert provisioning["apiVersion"] == 1 and provisioning["providers"][0]["type"] == "file"
    assert Path(provisioning["providers"][0]["options"]["path"]).is_absolute()


def test_the_prometheus_console_is_the_dashboards_health_view(exported):
    """The picture in docs/observability.md is this console: its graphs are dashboard queries, its figures name only
    exported or recorded series (and Prometheus' own ALERTS)."""
    console = (OBSERVABILITY / "prometheus" / "consoles" / "pipeline.html").read_text()
    dashboard_exprs = {target["expr"] for panel in PANELS for target in panel["targets"]}
    graphs = [expr.replace('\\"', '"') for expr in re.findall(r'graph\("\w+", "((?:[^"\\]|\\.)*)"', console)]
    assert len(graphs) == 4 and set(graphs) <= dashboard_exprs, set(graphs) - dashboard_exprs
    figures = [expr.replace('\\"', '"') for expr in re.findall(r'(?:query|range query) "((?:[^"\\]|\\.)*)"', console)]
    assert len(figures) >= 10
    for expr in figures:
        names = metric_names(expr)
        assert "ALERTS" in expr or names, expr
        assert not names - exported - recorded() - {"up"}, expr
