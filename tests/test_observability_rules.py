"""The Prometheus rules: valid (`promtool check rules`) and unit-tested (`promtool test rules`: each alert
has a test that makes it fire and one that keeps it quiet), and every metric they use is exported."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from pipeline_project.settings import REPO_ROOT

RULES_DIR = REPO_ROOT / "pipeline_project" / "observability" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package `prometheus`; .ci/run installs it)"
)


@needs_promtool
def test_the_rules_are_valid():
    result = subprocess.run([PROMTOOL, "check", "rules", "rules.yml"], cwd=RULES_DIR, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_the_rule_unit_tests_pass():
    result = subprocess.run(
        [PROMTOOL, "test", "rules", "rules_test.yml"], cwd=RULES_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_test_that_fires_it_and_one_that_keeps_it_quiet():
    rules = yaml.safe_load((RULES_DIR / "rules.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    tests = yaml.safe_load((RULES_DIR / "rules_test.yml").read_text())["tests"]
    fired, quiet = set(), set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alerts == fired, f"alerts never made to fire: {alerts - fired}"
    assert alerts == quiet, f"alerts never shown to stay quiet: {alerts - quiet}"
    assert all(
        rule.get("annotations", {}).get("runbook") for g in rules["groups"] for rule in g["rules"] if "alert" in rule
    )
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert (REPO_ROOT / rule["annotations"]["runbook"]).is_file(), rule["annotations"]["runbook"]
