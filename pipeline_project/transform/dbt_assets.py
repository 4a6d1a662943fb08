"""dbt assets: the dbt project's sources, staging, intermediate and mart models and SCD2 history as assets.

One `dbt build` per run builds the models and runs every dbt test (each test is an asset check).
Each dbt source maps to its ingestion asset (`meta.dagster.asset_key` in `_sources.yml`), so the graph
runs source -> raw -> staging -> intermediate -> marts. Assets are grouped by layer; policies come from
the SLA catalogue.

The assets are daily-partitioned like ingestion, and a run's build processes only its days (see
`dbt_days`): the run's partition window plus every day whose raw partitions changed since the warehouse
last took the lake in. The days reach dbt in the environment (PIPELINE_DBT_DAYS, read by
`dbt_project/macros/run_days.sql`). A full refresh rebuilds every model from the whole raw layer: asked for
with the op config `full_refresh: true` or the run tag `pipeline/dbt_full_refresh=true` (backfills after a
model change), and done by itself when the warehouse has no watermark or the dbt project changed.
"""

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

import dagster as dg
from dagster import DagsterExecutionInterruptedError
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliInvocation, DbtProject, dbt_assets

from pipeline_project.catalog.partitions import daily_partitions
from pipeline_project.catalog.policies import DBT_GROUPS, op_policy
from pipeline_project.resources import LakeResource, ShopDbtCliResource, WarehouseResource
from pipeline_project.secrets import redact
from pipeline_project.transform import dbt_days
from pipeline_project.transform.project import dbt_project


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
# dbt errors that a retry cannot fix: the project itself does not parse or compile.
NON_RETRYABLE_DBT_ERRORS = re.compile(r"\b(Compilation|Parsing) Error\b")
FULL_REFRESH_TAG = "pipeline/dbt_full_refresh"
DAYS_ENV = "PIPELINE_DBT_DAYS"
# The pipe dbt writes its log to (see `_widen_stdout_pipe`); 1 MiB is Linux's limit for unprivileged processes.
PIPE_BYTES = 1 << 20


class DbtBuildConfig(dg.Config):
    full_refresh: bool = False


def build_shop_dbt_assets(project: DbtProject) -> dg.AssetsDefinition:
    """The dbt assets of `project`: the code location's are built over `pipeline_project.transform.project.dbt_project`,
    the fault tests build theirs over a copy of the project in a temporary directory."""

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        dagster_dbt_translator=translator,
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        retry_policy=_policy.retry,
        pool=_policy.pool,
    )
    def shop_dbt_assets(
        context: dg.AssetExecutionContext,
        config: DbtBuildConfig,
        dbt: ShopDbtCliResource,
        lake: LakeResource,
        warehouse: WarehouseResource,
    ):
        # dbt reads the lake and warehouse locations from the environment (profiles.yml, _sources.yml); hand
        # it the absolute paths this run resolved so it cannot disagree with the rest of the run.
        os.environ["PIPELINE_LAKE_DIR"] = str(lake.lake().root)
        os.environ["PIPELINE_WAREHOUSE_PATH"] = str(warehouse.resolved_path)
        builds_models = bool(context.selected_asset_keys)
        plan = _plan(context, config, project, lake, warehouse) if builds_models else None
        args = ["build", *(["--full-refresh"] if plan and plan.full_refresh else [])]
        if plan is None or plan.days is None:
            os.environ.pop(DAYS_ENV, None)
        else:
            os.environ[DAYS_ENV] = plan.env_value()
        invocation = dbt.cli(args, context=context, raise_on_error=False)
        _widen_stdout_pipe(invocation)
        try:
            yield from invocation.stream()
        except (DagsterExecutionInterruptedError, KeyboardInterrupt) as interrupt:
            raise _interrupted(invocation) from interrupt
        if not invocation.is_successful():
            _fail_unless_only_tests_failed(invocation)
        elif plan is not None and set(context.assets_def.keys) <= set(context.selected_asset_keys):
            # Every model was built for every day the lake changed since the watermark: move it on.
            dbt_days.write_watermark(
                warehouse, dbt_days.Watermark(plan.lake, dbt_days.project_digest(project.manifest_path))
            )

    return shop_dbt_assets


def _plan(
    context: dg.AssetExecutionContext,
    config: DbtBuildConfig,
    project: DbtProject,
    lake: LakeResource,
    warehouse: WarehouseResource,
) -> dbt_days.BuildPlan:
    window: list[date] = []
    if context.has_partition_key or context.has_partition_key_range:
        start, end = context.partition_time_window
        window = dbt_days.window_days(start.date(), end.date() - timedelta(days=1))
    plan = dbt_days.plan_build(
        window=window,
        lake=lake.lake(),
        warehouse=warehouse,
        digest=dbt_days.project_digest(project.manifest_path),
        full_refresh_requested=config.full_refresh or context.run.tags.get(FULL_REFRESH_TAG) == "true",
    )
    if plan.full_refresh:
        context.log.info(f"dbt build: full refresh ({plan.reason})")
    else:
        listed = ", ".join(day.isoformat() for day in plan.days[:10]) + (" ..." if len(plan.days) > 10 else "")
        context.log.info(f"dbt build of {len(plan.days)} day(s) ({len(window)} in the window, {plan.reason}): {listed}")
    return plan


def _widen_stdout_pipe(invocation: DbtCliInvocation) -> None:
    """Let dbt write its whole log without waiting for Dagster to store the events of it.

    dagster-dbt turns dbt's stdout into Dagster events as it reads it, and storing an event (three for each
    dbt test: planned, output, evaluation) can take longer than dbt takes to run a test. Through a pipe of
    the default 64 KiB, dbt then waits for Dagster to catch up, and the two costs add up. A build writes about
    200 KB; with a 1 MiB pipe dbt runs at its own pace while Dagster stores events on the other core. (Linux
    only; elsewhere the pipe keeps its size.)
    """
    stdout = invocation.process.stdout
    if stdout is None or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _fail_unless_only_tests_failed(invocation: DbtCliInvocation) -> None:
    """Fail the step when a model or snapshot did not build or dbt did not run at all.

    A failing dbt test is a data problem, reported by its failed asset check (its downstream models are
    skipped and keep their previous tables); a retry would only fail it again, so it is left to the blocking
    check, which fails the step without a retry. A project that does not compile does not get better on a
    retry either: that failure is final. Anything else (a model that errored, a warehouse locked by another
    process) is retried by the policy.
    """
    results = _run_results(invocation)
    not_built = [r for r in results if r["status"] == "error" and not r["unique_id"].startswith("test.")]
    failed_tests = [r for r in results if r["status"] in ("fail", "error") and r["unique_id"].startswith("test.")]
    if failed_tests and not not_built:
        return
    node_errors = [f"{r['unique_id']}: {_first_line(r.get('message') or r['status'])}" for r in not_built]
    dbt_errors = _dbt_error_messages(invocation)
    errors = node_errors or dbt_errors or [f"dbt exited with code {invocation.process.returncode}, see the dbt log"]
    deterministic = [e for e in dbt_errors if NON_RETRYABLE_DBT_ERRORS.search(e)]
    raise dg.Failure(
        description=f"dbt build failed: {'; '.join(errors)}",
        metadata={
            "not_built": dg.MetadataValue.json([r["unique_id"] for r in not_built]),
            "dbt_exit_code": invocation.process.returncode,
            "dbt_errors": dg.MetadataValue.md("\n\n".join(dbt_errors) or "none logged"),
        },
        allow_retries=not (deterministic and not node_errors),
    )


def _interrupted(invocation: DbtCliInvocation) -> dg.Failure:
    """The run is being terminated (its max runtime, or by hand) and dagster-dbt has interrupted dbt, which
    cancelled its query: DuckDB rolled the model's transaction back, so its previous table stands.

    Under a retry policy Dagster retries an interrupted step in the same run worker, which would run the
    same query again after the run was declared failed, holding the warehouse pool slot and DuckDB's lock
    against the next run. The failure is final instead.
    """
    return dg.Failure(
        description=(
            f"dbt build interrupted because the run was terminated; dbt cancelled its queries and exited with "
            f"code {invocation.process.returncode}, and the model it was building keeps its previous table"
        ),
        metadata={"dbt_exit_code": invocation.process.returncode},
        allow_retries=False,
    )


shop_dbt_assets = build_shop_dbt_assets(dbt_project)


def _run_results(invocation: DbtCliInvocation) -> list[dict]:
    try:
        return invocation.get_artifact("run_results.json")["results"]
    except FileNotFoundError:
        return []


def _dbt_error_messages(invocation: DbtCliInvocation) -> list[str]:
    """The error-level messages of dbt's structured log of this invocation (dbt's own words for the failure)."""
    log = invocation.target_path / "dbt.log"
    if not log.exists():
        return []
    messages = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            info = json.loads(line)["info"]
        except (ValueError, KeyError, TypeError):
            continue
        if info.get("level") == "error" and info.get("msg", "").strip():
            messages.append(redact(info["msg"].strip()))
    return messages


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
