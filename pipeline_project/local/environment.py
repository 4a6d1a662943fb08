"""The local environment: every setting has a default under one git-ignored state directory.

Settings already present in the environment (or in `.env`) win; defaults fill the rest, as absolute paths
so that dbt, which runs from its own project directory, resolves them the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dotenv import load_dotenv

REPO_ROOT = Path(__file__).resolve().parents[2]
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


def resolve_environment(isolated_state: Path | None = None, alert_settings: bool = True) -> dict[str, str]:
    """Load `.env` and fill in the local defaults in os.environ, creating nothing; return the paths used.

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
        "LANDING_DIR": state / "landing",
        "DAGSTER_HOME": state / "dagster_home",
        "PIPELINE_LOG_DIR": state / "logs",
        "ALERT_DIR": state / "alerts",
    }
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


def prepare_environment(isolated_state: Path | None = None) -> dict[str, str]:
    """`resolve_environment`, then create the state directories and the Dagster instance's settings."""
    settings = resolve_environment(isolated_state)
    for name in ("PIPELINE_LAKE_DIR", "LANDING_DIR", "DAGSTER_HOME", "PIPELINE_LOG_DIR", "ALERT_DIR"):
        Path(os.environ[name]).mkdir(parents=True, exist_ok=True)
    instance_config = Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml"
    if not instance_config.exists():
        instance_config.symlink_to(REPO_ROOT / "dagster.yaml")
    return settings


def demo_source_wanted() -> bool:
    """The bundled demo source runs unless a real API is configured."""
    return not os.environ.get("SHOP_API_URL")


def ensure_dbt_manifest(force: bool = False) -> None:
    """Parse the dbt project so the code location can load without shelling out to dbt.

    Parsing in the environment runs will use lets dbt reuse the parse (partial parsing) at run time;
    a parse under a different warehouse path would be thrown away ("profile has changed").
    """
    manifest = REPO_ROOT / "dbt_project" / "target" / "manifest.json"
    if manifest.exists() and not force:
        return
    dbt = Path(sys.executable).parent / "dbt"
    subprocess.run(
        [str(dbt), "parse", "--quiet", "--project-dir", "dbt_project", "--profiles-dir", "dbt_project"],
        cwd=REPO_ROOT,
        check=True,
    )


if __name__ == "__main__":
    prepare_environment()
    ensure_dbt_manifest(force=True)
