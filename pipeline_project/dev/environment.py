"""The local state for `make run`, `make dev` and the tools: the directories and the Dagster instance settings
created under the defaults of `pipeline_project.settings`, and the dbt project parsed for them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline_project.settings import REPO_ROOT, resolve_environment


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
