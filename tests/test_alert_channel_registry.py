"""The alert channel registry is the one place a channel is declared: the docs follow it, and a route naming an
unknown channel fails loading."""

import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import dagster as dg
import pytest

from pipeline_project import policies
from pipeline_project.alerting.channels import registered_channels
from pipeline_project.local import channel_docs
from pipeline_project.local.environment import REPO_ROOT
from pipeline_project.policies import AlertRoute, apply_sla_policies, check_alert_routes

KNOWN = "Known channels: webhook, slack, pagerduty, email, log"


def _run(script: str, **env: str) -> subprocess.CompletedProcess:
    """`script` in a fresh interpreter, as a code location would import the project."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


# (a) Routes are checked against the registry when the code location loads.


def test_a_route_naming_an_unknown_channel_fails_loading_the_definitions():
    loaded = _run(
        """
        from pipeline_project import policies
        policies.ALERT_ROUTES["data-platform-oncall"] = policies.AlertRoute(page=("pagerduy", "log"), notify=("log",))
        import pipeline_project.definitions
        """
    )
    assert loaded.returncode != 0
    last_line = loaded.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ValueError: alert routes (pipeline_project/policies.py): ")
    assert "route 'data-platform-oncall' names the unknown channel 'pagerduy' in its page list" in last_line
    assert KNOWN in last_line


def test_applying_the_catalogue_checks_every_route(monkeypatch):
    check_alert_routes()  # the routes as committed are fine
    monkeypatch.setitem(policies.ALERT_ROUTES, "analytics-engineering", AlertRoute(page=("log",), notify=("slak",)))
    with pytest.raises(ValueError, match="route 'analytics-engineering' names the unknown channel 'slak'") as caught:
        apply_sla_policies(dg.Definitions())
    assert KNOWN in str(caught.value)


def test_a_catalogue_group_naming_an_unknown_route_fails_too(monkeypatch):
    staging = replace(policies.SLA_CATALOGUE["staging"], alert_route="analytics-enginering")
    monkeypatch.setitem(policies.SLA_CATALOGUE, "staging", staging)
    with pytest.raises(ValueError, match="group 'staging' names the unknown route 'analytics-enginering'"):
        check_alert_routes()


# (c) The README's channel table and .env.example's channel block are the registry's.


@pytest.mark.parametrize("block", channel_docs.BLOCKS, ids=lambda block: block.path.name)
def test_the_generated_channel_docs_match_the_registry(block):
    differences = block.differences(registered_channels())
    assert differences == [], f"{block.path.name} is stale; run `make docs`:\n" + "\n".join(differences)
