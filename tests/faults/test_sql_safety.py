"""SQL parameterization (docs/reliability.md, the fault catalogue): values are bound, identifiers from an allowlist.

- A table name outside the allowlist never reaches SQL (`orders; drop table x` is rejected by name), and
  a mart check of an undeclared table fails with a clear error instead of reading it.
- A static scan of pipeline_project: every SQL string handed to `execute`/`executemany`/`executescript`/
  `sql`/`query` is a literal (or a module constant holding one); the only interpolation allowed is the
  quoted-identifier helpers of `pipeline_project.warehouse`. Places where the SQL itself is the input
  (an operator's query, dbt's compiled test) are listed with the reason.
- Injection payloads given as values (alert subjects, error text, partitions) are stored verbatim by the
  alert outbox and change nothing else.
"""

import ast
import json
import pickle
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipeline_project.alerting.alert import Action, Alert, AlertKind, Severity
from pipeline_project.alerting.outbox import DeliveryPolicy, Outbox, Signal
from pipeline_project.checks import build_mart_contract_check
from pipeline_project.contracts import MART_CONTRACTS, MartContract
from pipeline_project.resources import WarehouseResource
from pipeline_project.warehouse import UnknownTableError, mart_table, quote_identifier

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline_project"
SQL_METHODS = {"execute", "executemany", "executescript", "sql", "query"}
IDENTIFIER_HELPERS = {"mart_table", "quote_identifier"}
# (file, function) -> why the SQL there is not built from values. Each entry must still match its code.
SQL_IS_THE_INPUT = {
    (
        "ops/oncall/warehouse.py",
        "show_query",
    ): "an operator's own query, typed on the command line (read-only warehouse)",
    (
        "ops/oncall/warehouse.py",
        "dbt_failing_rows",
    ): "dbt's compiled SQL of a test, read from the run's run_results.json",
}
PAYLOADS = ["x'); drop table incidents; --", 'a"; delete from alerts; --', "2026-03-14' or '1'='1"]


@pytest.mark.parametrize("name", ["orders; drop table x", 'daily_revenue"; drop table marts.x; --', "", "orders"])
def test_tables_outside_the_allowlist_are_rejected_by_name(name):
    with pytest.raises(UnknownTableError, match="is not a known mart") as rejected:
        mart_table(name)
    assert repr(name) in str(rejected.value)


@pytest.mark.parametrize("name", ["orders; drop table x", 'x"y', "", "Orders", "a" * 64, "1st"])
def test_identifiers_that_would_need_quoting_rules_are_rejected(name):
    with pytest.raises(UnknownTableError, match="is not a valid warehouse identifier"):
        quote_identifier(name)


def test_known_marts_are_quoted():
    assert {mart_table(mart) for mart in MART_CONTRACTS} == {f'"marts"."{mart}"' for mart in MART_CONTRACTS}


def test_a_check_of_a_table_outside_the_allowlist_fails_before_any_sql(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute("create schema marts")
        connection.execute("create table marts.payroll as select range as salary from range(3)")
    undeclared = MartContract("payroll", MART_CONTRACTS["daily_revenue"].model)
    with pytest.raises(UnknownTableError, match=r"'payroll' is not a known mart \(known: customer_lifetime_value"):
        list(build_mart_contract_check(undeclared)(warehouse=WarehouseResource(path=str(path))))
    with duckdb.connect(str(path), read_only=True) as connection:
        assert connection.execute("select count(*) from marts.payroll").fetchone() == (3,)


def _parse_files(paths: list[Path]) -> dict[Path, ast.Module]:
    """The files' syntax trees, parsed by a fresh interpreter: CPython 3.11.7's ast.parse can fail with
    "AST constructor recursion depth mismatch" in a process where other tests ran before."""
    script = (
        "import ast, pickle, sys; "
        "sys.stdout.buffer.write(pickle.dumps([ast.parse(open(p).read(), p) for p in sys.argv[1:]]))"
    )
    parsed = subprocess.run([sys.executable, "-c", script, *map(str, paths)], capture_output=True, check=True)
    return dict(zip(paths, pickle.loads(parsed.stdout), strict=True))


def _string_constants(tree: ast.Module) -> set[str]:
    return {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def _is_identifier_helper(node: ast.expr) -> bool:
    if not isinstance(node, ast.Call):
        return False
    function = node.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
    return name in IDENTIFIER_HELPERS


def _is_safe_sql(node: ast.expr, constants: set[str]) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.Name):
        return node.id in constants
    if isinstance(node, ast.JoinedStr):
        return all(
            isinstance(part, ast.Constant)
            or _is_identifier_helper(part.value)  # a FormattedValue otherwise
            or (isinstance(part.value, ast.Name) and part.value.id in constants)
            for part in node.values
        )
    return False


def _sql_calls(node: ast.AST, function: str = "<module>"):
    """(innermost enclosing function, call, SQL argument) for every call of a SQL method."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _sql_calls(child, child.name)
            continue
        if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and child.func.attr in SQL_METHODS:
            sql = child.args[0] if child.args else next((k.value for k in child.keywords if k.arg == "query"), None)
            if sql is not None:
                yield function, child, sql
        yield from _sql_calls(child, function)


def test_no_sql_is_built_from_values():
    unsafe, exempt_used, scanned = [], set(), 0
    for path, tree in _parse_files(sorted(PACKAGE.rglob("*.py"))).items():
        relative = path.relative_to(PACKAGE).as_posix()
        constants = _string_constants(tree)
        for function, call, sql in _sql_calls(tree):
            scanned += 1
            if _is_safe_sql(sql, constants):
                continue
            if (relative, function) in SQL_IS_THE_INPUT:
                exempt_used.add((relative, function))
                continue
            unsafe.append(f"{relative}:{call.lineno} in {function}(): {ast.unparse(sql)[:120]}")
    assert scanned >= 20, "the scan found the project's SQL calls (outbox, checks)"
    assert not unsafe, "SQL built from values; bind them with ? or use warehouse.mart_table:\n" + "\n".join(unsafe)
    for relative, function in set(SQL_IS_THE_INPUT) - exempt_used:
        assert not (PACKAGE / relative).exists(), f"stale exemption: {relative} {function}() no longer builds SQL"


def test_the_scan_flags_interpolated_values():
    flagged = """
def load(connection, key, table):
    connection.execute(f"delete from t where k = '{key}'")
    connection.sql("select * from " + table)
    connection.execute("select * from t where k = '%s'" % key)
    connection.execute("select * from {}".format(table))
    connection.execute(f"select * from {mart_table(table)} where k = '{key}'")
    connection.execute(f"select * from t where {SCHEMA} and k = '{key}'")
"""
    safe = """
SCHEMA = "create table t (k text)"
PENDING = "done_at is null"
def load(connection, key, mart):
    connection.executescript(SCHEMA)
    connection.execute("select * from t where k = ?", [key])
    connection.sql(f"select * from {mart_table(mart)}")
    connection.execute(f"select * from t where {PENDING}")
"""
    assert [
        _is_safe_sql(sql, _string_constants(ast.parse(flagged))) for _, _, sql in _sql_calls(ast.parse(flagged))
    ] == [False] * 6
    tree = ast.parse(safe)
    assert [_is_safe_sql(sql, _string_constants(tree)) for _, _, sql in _sql_calls(tree)] == [True] * 4


def _alert(payload: str) -> Alert:
    return Alert(
        dedup_key="",
        incident_key="",
        kind=AlertKind.TRANSFORMATION_FAILED,
        action=Action.TRIGGER,
        severity=Severity.ERROR,
        title=f"run failed: {payload}",
        summary=payload,
        runbook="runbooks/transformation-failure.md",
        asset=payload,
        partition=payload,
        details={"error": payload},
    )


def test_injection_payloads_as_values_are_stored_verbatim(tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite", DeliveryPolicy(base_backoff_seconds=0.0))
    for event_id, payload in enumerate(PAYLOADS):
        outbox.record(Signal(f"run:{payload}", True, event_id, _alert(payload)), ["webhook"])
    for delivery, payload in zip(outbox.claim_due(), PAYLOADS, strict=True):
        assert outbox.mark_failed(delivery, f"HTTP 500: {payload}") == "retry"

    rows = outbox.deliveries()
    assert len(rows) == len(PAYLOADS)
    assert sorted(row["last_error"] for row in rows) == sorted(f"HTTP 500: {payload}" for payload in PAYLOADS)
    stored = [Alert.from_json(json.loads(row["payload"])) for row in rows]
    assert sorted(alert.summary for alert in stored) == sorted(PAYLOADS)
    assert sorted(alert.partition for alert in stored) == sorted(PAYLOADS)
    assert sorted(outbox.open_subjects("run:")) == sorted(f"run:{payload}" for payload in PAYLOADS)
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        tables = {name for (name,) in db.execute("select name from sqlite_master where type = 'table'")}
        assert tables == {"incidents", "alerts", "deliveries", "sender_lease"}
        assert db.execute("select count(*) from incidents").fetchone() == (len(PAYLOADS),)
