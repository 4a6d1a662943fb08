"""`make check`, the CI gate: green on a clean sample, still green (but listing it) when only a WARN rule
breaks, red with a JUnit failure when an ERROR contract is broken on purpose."""

import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import duckdb
import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]


def _gate(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "SHOP_", "DAGSTER_HOME", "LANDING"))}
    return subprocess.run(
        [sys.executable, "-m", "pipeline_project.dev.gate", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _junit(path: Path) -> tuple[ElementTree.Element, dict[str, ElementTree.Element]]:
    suite = ElementTree.parse(path).getroot()
    return suite, {f"{case.get('classname')}:{case.get('name')}": case for case in suite.iter("testcase")}


def test_gate_is_green_on_a_clean_sample_warns_on_warn_rules_and_fails_on_error_rules(tmp_path):
    state = tmp_path / "state"
    clean = _gate("--state-dir", str(state), "--days", "1", "--junit", str(tmp_path / "clean.xml"))
    assert clean.returncode == 0, clean.stdout[-3000:] + clean.stderr[-3000:]
    suite, cases = _junit(tmp_path / "clean.xml")
    assert suite.get("failures") == "0" and int(suite.get("tests")) > 50
    assert {"raw_orders:source_reconciled", "daily_revenue:contract_errors", "daily_revenue:contract_warnings"} <= set(
        cases
    )
    assert any(name.startswith("stg_orders:unique_stg_orders_order_id") for name in cases)
    assert "0 ERROR failures" in clean.stdout

    warehouse = state / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as connection:
        connection.execute("update marts.daily_revenue set average_order_value = 20000")
    warn_only = _gate("--state-dir", str(state), "--checks-only", "--junit", str(tmp_path / "warn.xml"))
    assert warn_only.returncode == 0, warn_only.stdout[-3000:]
    assert "FAIL   WARN     daily_revenue" in warn_only.stdout and "contract_warnings" in warn_only.stdout
    assert "0 ERROR failures, 1 WARN failures" in warn_only.stdout
    suite, cases = _junit(tmp_path / "warn.xml")
    assert suite.get("failures") == "0"
    assert "WARN check failed" in cases["daily_revenue:contract_warnings"].find("system-out").text

    with duckdb.connect(str(warehouse)) as connection:
        connection.execute("update marts.daily_revenue set net_revenue = net_revenue + 1")
    broken = _gate("--state-dir", str(state), "--checks-only", "--junit", str(tmp_path / "broken.xml"))
    assert broken.returncode == 1, broken.stdout[-3000:]
    assert "FAIL   ERROR    daily_revenue" in broken.stdout
    suite, cases = _junit(tmp_path / "broken.xml")
    failure = cases["daily_revenue:contract_errors"].find("failure")
    assert failure is not None and "fail/table:net_is_gross_minus_refunds=1" in failure.text
    dbt_failures = [
        name
        for name, case in cases.items()
        if name.startswith("daily_revenue:expression_is_true") and case.find("failure") is not None
    ]
    assert dbt_failures, "the dbt test net = gross - refunds should fail too"
    assert int(suite.get("failures")) == 1 + len(dbt_failures)
