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

from pipeline_project.alerting.channels import channel_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_TOKEN = "demo-token"
# Where `make dev` serves the demo source; SHOP_DEMO_PORT overrides the port.
DEMO_SOURCE_HOST = "127.0.0.1"
DEMO_SOURCE_PORT = 8765


def demo_source_port() -> int:
    return int(os.environ.get("SHOP_DEMO_PORT") or DEMO_SOURCE_PORT)


# Off unless set: an empty value turns a channel off (the log channel is always on). Every channel's settings,
# from the registry (`alerting/channels/`).
OPTIONAL_ALERT_SETTINGS = (*(setting.env for setting in channel_settings()), "ALERT_RUNBOOK_BASE_URL")


def prepare_environment(isolated_state: Path | None = None) -> dict[str, str]:
    """Load `.env`, fill in local defaults, create the state directories; return the settings used.

    With `isolated_state`, every path is put under that directory whatever `.env` or the environment say,
    so a throwaway run (the check gate, a benchmark) can never touch real state.
    """
    load_dotenv(REPO_ROOT / ".env", override=False)
    if isolated_state is not None:
        os.environ["PIPELINE_STATE_DIR"] = str(isolated_state)
    state = Path(os.environ.setdefault("PIPELINE_STATE_DIR", str(REPO_ROOT / ".state"))).resolve()
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
    os.environ.setdefault("DAGSTER_WEBSERVER_URL", "http://127.0.0.1:3000")
    for name in OPTIONAL_ALERT_SETTINGS:
        os.environ.setdefault(name, "")
    for name in ("PIPELINE_LAKE_DIR", "LANDING_DIR", "DAGSTER_HOME", "PIPELINE_LOG_DIR", "ALERT_DIR"):
        Path(os.environ[name]).mkdir(parents=True, exist_ok=True)
    instance_config = Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml"
    if not instance_config.exists():
        instance_config.symlink_to(REPO_ROOT / "dagster.yaml")
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    return {name: os.environ[name] for name in defaults}


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
