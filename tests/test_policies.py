"""Every materializable asset carries the SLA catalogue's policies; warehouse writers share one pool."""

from pathlib import Path

import dagster as dg

from pipeline_project.catalog.policies import SLA_CATALOGUE, WAREHOUSE_POOL
from pipeline_project.definitions import defs

REPO_ROOT = Path(__file__).resolve().parents[1]


def _materializable_nodes():
    graph = defs.resolve_asset_graph()
    return [graph.get(key) for key in graph.materializable_asset_keys]


def test_every_group_is_in_the_catalogue():
    groups = {node.group_name for node in _materializable_nodes()}
    assert groups <= set(SLA_CATALOGUE), f"groups without an SLA entry: {groups - set(SLA_CATALOGUE)}"


def test_every_materializable_asset_has_freshness_owner_and_an_existing_runbook():
    missing = []
    for node in _materializable_nodes():
        name = node.key.to_user_string()
        if node.freshness_policy is None:
            missing.append(f"{name}: freshness policy")
        if not node.owners:
            missing.append(f"{name}: owner")
        runbook = node.metadata.get("runbook")
        if not runbook or not (REPO_ROOT / str(runbook)).is_file():
            missing.append(f"{name}: runbook {runbook!r}")
    assert not missing, missing


def test_every_op_has_a_retry_policy_with_backoff():
    for assets_def in defs.resolve_asset_graph().assets_defs:
        if not assets_def.is_executable:
            continue
        policy = assets_def.node_def.retry_policy
        assert policy is not None, assets_def.node_def.name
        assert policy.max_retries >= 1
        assert policy.backoff == dg.Backoff.EXPONENTIAL and policy.jitter is not None


def test_duckdb_writers_and_readers_share_the_warehouse_pool():
    graph = defs.resolve_asset_graph()
    touched_groups = {}
    for assets_def in graph.assets_defs:
        if not assets_def.is_executable:
            continue
        keys = set(assets_def.keys) | {check.asset_key for check in assets_def.check_keys}
        touched_groups[assets_def.node_def.name] = (
            {graph.get(key).group_name for key in keys},
            assets_def.node_def.pool,
        )
    for op_name, (groups, pool) in touched_groups.items():
        expected = None if groups == {"ingestion"} else WAREHOUSE_POOL
        assert pool == expected, f"{op_name} touches {groups} but runs in pool {pool!r}"
    assert any(pool == WAREHOUSE_POOL for _, pool in touched_groups.values())


def test_instance_limits_pools_to_one_slot():
    instance_config = (REPO_ROOT / "dagster.yaml").read_text()
    assert "default_limit: 1" in instance_config
