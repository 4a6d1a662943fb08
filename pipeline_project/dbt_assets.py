"""dbt assets: the dbt project's sources, staging, intermediate and mart models and snapshot as assets.

One `dbt build` per run builds models and snapshots and runs every dbt test (each test is an asset check).
Each dbt source maps to its ingestion asset (`meta.dagster.asset_key` in `_sources.yml`), so the graph
runs source -> raw -> staging -> intermediate -> marts. Assets are grouped by layer; policies come from
the SLA catalogue.
"""

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, dbt_assets

from pipeline_project.policies import DBT_GROUPS, op_policy
from pipeline_project.project import dbt_project
from pipeline_project.resources import LakeResource, ShopDbtCliResource, WarehouseResource


class ShopDbtTranslator(DagsterDbtTranslator):
    """Model keys are the model names; groups are the project's layer folders (plus `snapshots`)."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] in ("model", "snapshot"):
            return dg.AssetKey(dbt_resource_props["name"])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] == "snapshot":
            return "snapshots"
        fqn = dbt_resource_props.get("fqn", [])
        return fqn[1] if len(fqn) > 2 and fqn[1] in DBT_GROUPS else None


translator = ShopDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))
_policy = op_policy(DBT_GROUPS)


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=translator,
    retry_policy=_policy.retry,
    pool=_policy.pool,
)
def shop_dbt_assets(
    context: dg.AssetExecutionContext, dbt: ShopDbtCliResource, lake: LakeResource, warehouse: WarehouseResource
):
    # dbt reads the lake and warehouse locations from the environment (profiles.yml, _sources.yml); hand
    # it the absolute paths this run resolved so it cannot disagree with the rest of the run.
    os.environ["PIPELINE_LAKE_DIR"] = str(lake.lake().root)
    os.environ["PIPELINE_WAREHOUSE_PATH"] = str(warehouse.resolved_path)
    invocation = dbt.cli(["build"], context=context, raise_on_error=False)
    yield from invocation.stream()
    if invocation.is_successful():
        return
    # A failing dbt test is a data problem, reported by its failed asset check; retrying the step would only
    # fail it again. A model or snapshot that did not build (or a dbt that did not run) fails the step,
    # which the retry policy retries.
    results = _run_results(invocation)
    not_built = [r for r in results if r["status"] == "error" and not r["unique_id"].startswith("test.")]
    failed_tests = [r for r in results if r["status"] in ("fail", "error") and r["unique_id"].startswith("test.")]
    if not_built or not failed_tests:
        messages = [f"{r['unique_id']}: {(r.get('message') or r['status']).splitlines()[0]}" for r in not_built]
        raise dg.Failure(
            description=f"dbt build failed: {'; '.join(messages) or 'dbt exited with an error, see the dbt log'}",
            metadata={"not_built": dg.MetadataValue.json([r["unique_id"] for r in not_built])},
        )


def _run_results(invocation) -> list[dict]:
    try:
        return invocation.get_artifact("run_results.json")["results"]
    except FileNotFoundError:
        return []
