"""The dbt project handle. Kept in its own module so `dagster-dbt project prepare-and-package` can import it
without importing the assets that need the manifest it builds."""

from pathlib import Path

from dagster_dbt import DbtProject

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
# `dbt parse` runs here only under `dagster dev`/`dg dev`; everywhere else the manifest is built ahead of
# time (`make manifest`), so loading the code location never shells out to dbt.
dbt_project.prepare_if_dev()
