"""Every setting's default, applied by the code location itself, so plain `dagster dev` (or `dg dev`, or a
`.env` copied from `.env.example` with empty values) behaves like `make dev`.

Settings already present in the environment (or in `.env`) win; defaults fill the rest under one git-ignored
state directory (`PIPELINE_STATE_DIR`, default `.state/` at the repository root), as absolute paths so that
dbt, which runs from its own project directory, resolves them the same way, whatever the working directory.
Nothing is created here (`dev/environment.py` creates the directories for `make run` and `make dev`).
"""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import load_dotenv

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_TOKEN = "demo-token"
# Where `make dev` serves the demo source; SHOP_DEMO_PORT overrides the port.
DEMO_SOURCE_HOST = "127.0.0.1"
DEMO_SOURCE_PORT = 8765
# Where `make dev` serves the Dagster UI (DAGSTER_HOST, DAGSTER_PORT override them; `make serve-readonly`: 3001).
DAGSTER_DEFAULT_HOST = "127.0.0.1"
DAGSTER_DEFAULT_PORT = 3000


def demo_source_port() -> int:
    return int(os.environ.get("SHOP_DEMO_PORT") or DEMO_SOURCE_PORT)


def dagster_host() -> str:
    return os.environ.get("DAGSTER_HOST") or DAGSTER_DEFAULT_HOST


def dagster_port(read_only: bool = False) -> int:
    return int(os.environ.get("DAGSTER_PORT") or DAGSTER_DEFAULT_PORT + read_only)


def served_webserver_url(host: str, port: int | str) -> str:
    """The URL people open for a webserver bound to host:port (a wildcard bind is reached on loopback)."""
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"


def optional_alert_settings() -> tuple[str, ...]:
    """Off unless set: an empty value turns a channel off (the log channel is always on). Every channel's
    settings, from the registry (`alerting/channels/`)."""
    from pipeline_project.alerting.channels import channel_settings  # imports dagster: only when needed

    return (*(setting.env for setting in channel_settings()), "ALERT_RUNBOOK_BASE_URL")


def __getattr__(name: str):
    # OPTIONAL_ALERT_SETTINGS on first use, so that tools that never load the code location start fast.
    if name == "OPTIONAL_ALERT_SETTINGS":
        return optional_alert_settings()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_environment(
    isolated_state: Path | None = None, alert_settings: bool = True, instance_home: bool = True
) -> dict[str, str]:
    """Load `.env` and fill in the defaults in os.environ, creating nothing; return the paths used.

    `instance_home=False` leaves DAGSTER_HOME alone: the code location's process already has its instance.

    With `isolated_state`, every path is put under that directory whatever `.env` or the environment say,
    so a throwaway run (the check gate, a benchmark) can never touch real state. `alert_settings=False` leaves
    the optional alert settings alone (only the code location needs them present, if empty).
    """
    load_dotenv(REPO_ROOT / ".env", override=False)
    if isolated_state is not None:
        os.environ["PIPELINE_STATE_DIR"] = str(isolated_state)
    state = Path(os.environ.get("PIPELINE_STATE_DIR") or REPO_ROOT / ".state").resolve()
    defaults = {
        "PIPELINE_STATE_DIR": state,
        "PIPELINE_LAKE_DIR": state / "lake",
        "PIPELINE_WAREHOUSE_PATH": state / "warehouse.duckdb",
        "DAGSTER_HOME": state / "dagster_home",
        "LANDING_DIR": state / "landing",
        "PIPELINE_LOG_DIR": state / "logs",
        "ALERT_DIR": state / "alerts",
    }
    if not instance_home:
        del defaults["DAGSTER_HOME"]
    for name, default in defaults.items():
        configured = None if isolated_state is not None else os.environ.get(name)
        os.environ[name] = str(Path(configured or default).resolve())
    # Links in alerts point at the webserver in use: unless configured (a proxy, a public name), the one
    # `make dev` serves on DAGSTER_HOST:DAGSTER_PORT.
    if not os.environ.get("DAGSTER_WEBSERVER_URL"):
        os.environ["DAGSTER_WEBSERVER_URL"] = served_webserver_url(dagster_host(), dagster_port())
    for name in optional_alert_settings() if alert_settings else ():
        os.environ.setdefault(name, "")
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    return {name: os.environ[name] for name in defaults}
