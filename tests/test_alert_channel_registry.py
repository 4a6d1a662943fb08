"""The alert channel registry is the one place a channel is declared: the resource, the secrets, the local
defaults, the route check and the docs all follow it, and a route naming an unknown channel fails loading."""

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import dagster as dg
import pytest

from pipeline_project.alerting.channels import channel_names, channel_settings, registered_channels
from pipeline_project.alerting.resource import AlertingResource, alerting_resource_from_env
from pipeline_project.catalog import policies
from pipeline_project.catalog.policies import AlertRoute, apply_sla_policies, check_alert_routes
from pipeline_project.dev import channel_docs
from pipeline_project.secrets import SECRET_SETTINGS
from pipeline_project.settings import OPTIONAL_ALERT_SETTINGS, REPO_ROOT

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


@pytest.mark.slow
def test_a_route_naming_an_unknown_channel_fails_loading_the_definitions():
    loaded = _run(
        """
        from pipeline_project.catalog import policies
        policies.ALERT_ROUTES["data-platform-oncall"] = policies.AlertRoute(page=("pagerduy", "log"), notify=("log",))
        import pipeline_project.definitions
        """
    )
    assert loaded.returncode != 0
    last_line = loaded.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ValueError: alert routes (pipeline_project/catalog/policies.py): ")
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


# (b) Secrets: every setting a channel marks secret is redacted and read through dg.EnvVar only.


def test_every_secret_channel_setting_is_a_secret_setting():
    secret = [setting.env for setting in channel_settings() if setting.secret]
    assert {
        "ALERT_WEBHOOK_URL",
        "ALERT_SLACK_WEBHOOK_URL",
        "ALERT_PAGERDUTY_ROUTING_KEY",
        "ALERT_SMTP_PASSWORD",
    } <= set(secret)
    assert [env for env in secret if env not in SECRET_SETTINGS] == []


def test_the_resource_has_a_field_per_channel_setting_read_through_env_var():
    resource = alerting_resource_from_env()
    for setting in channel_settings():
        assert setting.field in AlertingResource.model_fields, setting.env
        value = resource.__dict__[setting.field]
        assert isinstance(value, dg.EnvVar) and value.env_var_name == setting.env
    assert set(OPTIONAL_ALERT_SETTINGS) >= {setting.env for setting in channel_settings()}


# (c) The channel table of docs/operations.md and .env.example's channel block are the registry's; the route tables name
# the channels of ALERT_ROUTES.


@pytest.mark.parametrize("block", channel_docs.BLOCKS, ids=lambda block: block.path.name)
def test_the_generated_channel_docs_match_the_registry(block):
    differences = block.differences(registered_channels())
    assert differences == [], f"{block.path.name} is stale; run `make docs`:\n" + "\n".join(differences)


def test_the_runbook_index_routes_name_the_channels_of_alert_routes():
    """runbooks/README.md lists each route's channels by hand, like docs/operations.md (tests/test_readme.py)."""
    index = (REPO_ROOT / "runbooks" / "README.md").read_text()
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")] for line in index.splitlines() if line.startswith("|")
    ]
    for name, route in policies.ALERT_ROUTES.items():
        row = next((cells for cells in rows if cells[0].startswith(f"`{name}`")), None)
        assert row is not None, f"runbooks/README.md has no row for the route {name}"
        assert ", ".join(route.page) in row and ", ".join(route.notify) in row, (name, row)


# (d) A new channel is one module plus one line in the registry.

THROWAWAY_CHANNEL = '''
"""A test-only channel, declared the way the real ones are: an SMS gateway that remembers what it sent."""

from pipeline_project.alerting.channels import SEND_DEADLINE_SECONDS, ChannelSpec, Setting, one_line


class SmsChannel:
    name = "sms"

    def __init__(self, api_key: str, number: str) -> None:
        self.api_key, self.number, self.sent = api_key, number, []

    def send(self, alert, *, deadline_seconds: float = SEND_DEADLINE_SECONDS) -> None:
        self.sent.append(one_line(alert, 160))


CHANNEL = ChannelSpec(
    name=SmsChannel.name,
    sends="a text message",
    settings=(
        Setting("ALERT_SMS_API_KEY", "SMS gateway API key", secret=True, required=True),
        Setting("ALERT_SMS_NUMBER", "Phone number to text", required=True),
    ),
    build=lambda settings: SmsChannel(settings["ALERT_SMS_API_KEY"], settings["ALERT_SMS_NUMBER"]),
)
'''

WITH_THE_THROWAWAY_CHANNEL = """
import json

from pipeline_project.alerting import channels

channels.CHANNEL_MODULES = (*channels.CHANNEL_MODULES, "sms_channel")  # the one line in the registry

import dagster as dg

from pipeline_project import secrets, settings

from pipeline_project.catalog import policies
from pipeline_project.alerting.resource import AlertingResource, alerting_resource_from_env
from pipeline_project.dev import channel_docs

seen = {"fields": [field for field in AlertingResource.model_fields if field.startswith("sms_")]}
resource = alerting_resource_from_env()
seen["env_vars"] = [resource.__dict__[field].env_var_name for field in seen["fields"]]
with dg.build_resources({"alerting": resource}) as resources:
    built = resources.alerting.channels()
    seen["channels"] = list(built)
    seen["number"] = built["sms"].number
seen["secret"] = "ALERT_SMS_API_KEY" in secrets.SECRET_SETTINGS
seen["redacted"] = secrets.redact("the gateway said: bad key sms-secret-key-0000")
seen["local_defaults"] = [name for name in settings.OPTIONAL_ALERT_SETTINGS if "SMS" in name]
routes = dict(policies.ALERT_ROUTES)
routes["data-platform-oncall"] = policies.AlertRoute(page=("sms", "log"), notify=("log",))
policies.check_alert_routes(routes)
routes["data-platform-oncall"] = policies.AlertRoute(page=("smss", "log"), notify=("log",))
try:
    policies.check_alert_routes(routes)
except ValueError as error:
    seen["typo"] = str(error)
seen["docs"] = [line for block in channel_docs.BLOCKS for line in block.differences(channels.registered_channels())]
print(json.dumps(seen))
"""


@pytest.mark.slow
def test_a_new_channel_is_one_module_and_one_registry_line(tmp_path):
    (tmp_path / "sms_channel.py").write_text(THROWAWAY_CHANNEL)
    settings = {setting.env: "" for setting in channel_settings()}
    run = _run(
        WITH_THE_THROWAWAY_CHANNEL,
        PYTHONPATH=str(tmp_path),
        **settings,
        ALERT_SMS_API_KEY="sms-secret-key-0000",
        ALERT_SMS_NUMBER="+15550100",
        ALERT_DIR=str(tmp_path / "alerts"),
        DAGSTER_WEBSERVER_URL="http://127.0.0.1:3000",
        ALERT_RUNBOOK_BASE_URL="",
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])

    assert seen["fields"] == ["sms_api_key", "sms_number"]
    assert seen["env_vars"] == ["ALERT_SMS_API_KEY", "ALERT_SMS_NUMBER"]
    assert seen["channels"] == ["log", "sms"] and seen["number"] == "+15550100"
    assert seen["secret"] and seen["redacted"] == "the gateway said: bad key ***"
    assert seen["local_defaults"] == ["ALERT_SMS_API_KEY", "ALERT_SMS_NUMBER"]
    assert "route 'data-platform-oncall' names the unknown channel 'smss'" in seen["typo"]
    assert "Known channels: webhook, slack, pagerduty, email, log, sms" in seen["typo"]
    # The docs follow too: until `make docs` is run, the check names the rows the new channel needs.
    assert (
        "missing: | sms | **`ALERT_SMS_API_KEY`** (secret), **`ALERT_SMS_NUMBER`** | a text message |" in seen["docs"]
    )
    assert "missing: ALERT_SMS_API_KEY=" in seen["docs"]
    assert channel_names() == ("webhook", "slack", "pagerduty", "email", "log"), "the registry here is untouched"
