"""The dbt project handle. Kept in its own module so `dagster-dbt project prepare-and-package` can import it
without importing the assets that need the manifest it builds."""

import os
from pathlib import Path

from dagster_dbt import DbtProject

from pipeline_project.settings import REPO_ROOT

# PIPELINE_DBT_PROJECT_DIR points the code location at another copy of the dbt project (with its parsed
# manifest in target/): the fault drills in tests/faults/ load the code location against a broken copy in
# a temporary directory, so the real project is never edited to inject a fault.
DBT_PROJECT_DIR = Path(os.environ.get("PIPELINE_DBT_PROJECT_DIR") or REPO_ROOT / "dbt_project").resolve()

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
# `dbt parse` runs here only under `dagster dev`/`dg dev`; everywhere else the manifest is built ahead of
# time (`make manifest`), so loading the code location never shells out to dbt.
dbt_project.prepare_if_dev()
