"""The shell side: `eval "$(oncall env [--incident KEY])"` exports what the runbooks use; `oncall dagster`
runs the dagster CLI with the pipeline's settings; `oncall heartbeat` is the monitoring dead-man check."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import NoReturn

from pipeline_project.dev.environment import prepare_environment
from pipeline_project.ops.oncall.common import (
    HEARTBEAT_FILE,
    TOKEN_VARIABLE,
    export_source_settings,
    raw_tables,
    say,
    source_url,
)
from pipeline_project.settings import REPO_ROOT

PATHS = (
    "PIPELINE_STATE_DIR",
    "PIPELINE_LAKE_DIR",
    "PIPELINE_WAREHOUSE_PATH",
    "LANDING_DIR",
    "DAGSTER_HOME",
    "PIPELINE_LOG_DIR",
    "ALERT_DIR",
)
# Everything `oncall env` exports (tests/test_alert_runbooks.py: the runbooks use nothing else).
EXPORTED = (*PATHS, "PIPELINE_DBT_PROJECT_DIR", "DAGSTER_WEBSERVER_URL", "SHOP_API_URL", "SHOP_API_TOKEN_VARIABLE")
INCIDENT_VARIABLES = (
    "INCIDENT",
    "ALERT_KIND",
    "JOB",
    "ASSET",
    "ASSETS",
    "TABLES",
    "PARTITIONS",
    "DAY",
    "RUN_ID",
    "CHECK",
    "CHANNEL",
)


def _export(name: str, value: object) -> None:
    say(f"export {name}={shlex.quote(str(value))}")


def incident_variables(reference: str) -> dict[str, str]:
    """What an incident's alert carries, as the variables the runbooks use."""
    from pipeline_project.ops.oncall.alerts import load_incident

    found = load_incident(reference)
    alert = found.alert
    details = alert.details
    link = alert.link or ""
    variables = {
        "INCIDENT": found.key,
        "ALERT_KIND": alert.kind.value,
        "JOB": alert.job or "",
        "ASSET": alert.asset or "",
        "ASSETS": ",".join(alert.assets),
        "TABLES": " ".join(raw_tables(alert.assets)),
        "PARTITIONS": " ".join(alert.partitions),
        "DAY": alert.partitions[-1] if alert.partitions else "",
        "RUN_ID": str(details.get("run_id") or (link.split("/runs/", 1)[1] if "/runs/" in link else "")),
        "CHECK": str(details.get("check", "")),
        "CHANNEL": str(details.get("channel", "")),
    }
    assert tuple(variables) == INCIDENT_VARIABLES
    return variables


def env(args: argparse.Namespace) -> int:
    say("# the pipeline's settings as `make run` and `make dev` resolve them; no secret value is printed")
    for name in PATHS:
        _export(name, os.environ[name])
    dbt_project = Path(os.environ.get("PIPELINE_DBT_PROJECT_DIR") or REPO_ROOT / "dbt_project").resolve()
    _export("PIPELINE_DBT_PROJECT_DIR", dbt_project)
    _export("DAGSTER_WEBSERVER_URL", os.environ["DAGSTER_WEBSERVER_URL"])
    _export("SHOP_API_URL", source_url())
    # The name of the variable that holds the source's token, never its value: tools read it from there.
    _export("SHOP_API_TOKEN_VARIABLE", TOKEN_VARIABLE)
    if args.incident:
        for name, value in incident_variables(args.incident).items():
            _export(name, value)
    return 0


def dagster(args: argparse.Namespace) -> NoReturn:
    # Not a read: the dagster CLI needs the instance's directory and settings, and the code location's.
    prepare_environment()
    export_source_settings()
    executable = Path(sys.executable).parent / "dagster"
    arguments = args.arguments[1:] if args.arguments[:1] == ["--"] else args.arguments
    os.execv(executable, [str(executable), *arguments])


def heartbeat(args: argparse.Namespace) -> int:
    import json

    from pipeline_project.ops.heartbeat import heartbeat_problem

    path = Path(os.environ["ALERT_DIR"]) / HEARTBEAT_FILE
    problem = heartbeat_problem(path, args.max_age_seconds)
    if problem:
        say(f"UNHEALTHY {problem}")
        return 1
    beat = json.loads(path.read_text())
    say(f"OK monitoring ticked {time.time() - beat['ticked_at']:.0f} s ago, {beat['pending_deliveries']} pending")
    return 0
