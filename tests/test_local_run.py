"""`make run`'s entry point, as a user runs it: a fresh state directory, the demo source started and
stopped by the runner, a summary, and an exit status that tells whether every ERROR check passed."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipeline_project.dev.summary import format_summary, summarize_run

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_run_entry_point_materializes_everything_and_prints_a_summary(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PIPELINE_", "SHOP_", "DAGSTER_HOME", "LANDING_DIR"))
    }
    env.update(PIPELINE_STATE_DIR=str(tmp_path / "state"), SHOP_DEMO_SCALE="0.05")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline_project.dev.run", "--days", "1", "--end-date", "2026-03-15"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "starting the demo shop source" in out
    assert "materialized raw_orders 2026-03-15 100 rows" in out
    assert "OK: run" in out and "0 ERROR" in out
    for asset in ("raw_web_events", "daily_revenue", "customer_lifetime_value", "web_funnel"):
        assert f"\n{asset} " in out
    state = tmp_path / "state"
    assert (state / "logs" / "run.log").read_text().count("PASS") > 50
    with duckdb.connect(str(state / "warehouse.duckdb"), read_only=True) as connection:
        assert connection.execute("select orders_count from marts.daily_revenue").fetchall() == [(100,)]
    demo_processes = subprocess.run(["pgrep", "-f", f"landing-dir {state}"], capture_output=True, text=True)
    assert demo_processes.stdout.strip() == "", "the demo source outlived the run"


def test_summary_fails_the_run_when_an_error_check_fails():
    @dg.asset(check_specs=[dg.AssetCheckSpec("always_wrong", asset="numbers", blocking=True)])
    def numbers():
        return dg.MaterializeResult(
            metadata={"dagster/row_count": 3},
            check_results=[
                dg.AssetCheckResult(check_name="always_wrong", passed=False, severity=dg.AssetCheckSeverity.ERROR)
            ],
        )

    with dg.instance_for_test() as instance:
        result = dg.materialize([numbers], instance=instance, raise_on_error=False)
        summary = summarize_run(instance, result.run_id)
    assert not summary.ok
    assert summary.failed_error_checks == ["numbers:always_wrong"]
    table = format_summary(summary)
    assert "FAILED (ERROR) numbers:always_wrong" in table
    assert summary.assets["numbers"].rows == 3
