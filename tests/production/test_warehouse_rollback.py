"""dbt on DuckLake (the production profile's warehouse) and rolling a bad mart build back.

Two days of every table are committed to the DuckLake raw layer, `dbt build` (the project's own profile,
production target) builds the marts from its tables and they equal the ground truth. Then a build of a
broken copy of the project writes wrong marts; `make rollback-marts AS_OF=<before the bad build>` (the runbook
command in docs/deploy.md) puts back the marts of the last good build, in one transaction, raw layer untouched."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, date, datetime

import pytest
from lakes import CATALOG_PASSWORD, catalog_env, new_ducklake
from marts import REPO, dbt_build, load_days, mart_contents

from demo_source import DemoShopServer, ShopWorld
from pipeline_project.lake.catalog import connect
from pipeline_project.lake.ducklake_store import DuckLakeStore

from harness import assert_marts_equal_ground_truth

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TOKEN = "production-test-token"
DAYS = [date(2026, 3, 14), date(2026, 3, 15)]


@pytest.fixture(scope="module")
def ducklake(cluster, tmp_path_factory):
    return new_ducklake(cluster, tmp_path_factory.mktemp("warehouse"))


@pytest.fixture(scope="module")
def built(ducklake, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("built")
    world = ShopWorld(scale=0.1)
    store = DuckLakeStore(tmp_path / "scratch", ducklake)
    with DemoShopServer(world, token=TOKEN) as server:
        load_days(store, server.url, TOKEN, world, tmp_path / "landing", DAYS, "load")
    store.close()
    env = catalog_env(ducklake)
    good = dbt_build(env, REPO / "dbt_project", tmp_path / "good")
    assert good.returncode == 0, good.stdout[-4000:]
    assert CATALOG_PASSWORD not in good.stdout + good.stderr
    return {"world": world, "env": env}


def test_dbt_builds_the_marts_from_the_ducklake_and_they_equal_the_ground_truth(built, ducklake):
    connection = connect(ducklake, read_only=True)
    assert_marts_equal_ground_truth(connection, built["world"], DAYS, marts="lake.marts")
    connection.close()


def test_a_bad_mart_build_is_rolled_back_to_the_previous_snapshot(built, ducklake, tmp_path):
    connection = connect(ducklake)
    good = mart_contents(connection)
    raw_before = connection.execute("select count(*), sum(hash(o)) from lake.raw.orders o").fetchone()
    connection.close()

    broken = tmp_path / "broken_project"
    shutil.copytree(REPO / "dbt_project", broken, ignore=shutil.ignore_patterns("target", "logs"))
    model = broken / "models" / "marts" / "daily_revenue.sql"
    model.write_text(model.read_text().replace("as gross_revenue_cents,", "* 2 as gross_revenue_cents,", 1))
    before_bad_build = datetime.now(UTC)
    bad = dbt_build(built["env"], broken, tmp_path / "bad")
    # The wrong mart is caught by its own tests (net = gross - refunded fails), but it was written.
    assert "daily_revenue" in bad.stdout
    connection = connect(ducklake)
    assert mart_contents(connection)["daily_revenue"] != good["daily_revenue"], "the bad build changed nothing"
    connection.close()

    # The command docs/deploy.md gives the operator.
    rollback = subprocess.run(
        ["make", "--no-print-directory", "rollback-marts", f"AS_OF={before_bad_build.isoformat()}"],
        cwd=REPO,
        env={**os.environ, **built["env"]},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rollback.returncode == 0, rollback.stderr
    assert "restored 4 table(s)" in rollback.stdout, rollback.stdout
    connection = connect(ducklake, read_only=True)
    assert mart_contents(connection) == good
    assert connection.execute("select count(*), sum(hash(o)) from lake.raw.orders o").fetchone() == raw_before
    assert_marts_equal_ground_truth(connection, built["world"], DAYS, marts="lake.marts")
    connection.close()
