"""SQL parameterization (docs/reliability.md, the fault catalogue): values are bound, identifiers from an allowlist.

- A table name outside the allowlist never reaches SQL (`orders; drop table x` is rejected by name), and
  a mart check of an undeclared table fails with a clear error instead of reading it.
- A static scan of pipeline_project: every SQL string handed to `execute`/`executemany`/`executescript`/
  `sql`/`query` is written in the code: literals, constants and local names bound only to them, and the
  results of the quoting helpers (`warehouse.quote_identifier`, `quote_literal`, `mart_table`), however
  combined. Places where the SQL itself is the input (an operator's query, dbt's compiled test) or is built
  in a way the scan cannot follow are listed with the reason.
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
from pipeline_project.quality.contracts import MART_CONTRACTS, MartContract
from pipeline_project.quality.mart_checks import build_mart_contract_check
from pipeline_project.resources import WarehouseResource
from pipeline_project.transform.warehouse import UnknownTableError, mart_table, quote_identifier

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline_project"
SQL_METHODS = {"execute", "executemany", "executescript", "sql", "query"}
# Functions whose result is quoted SQL whatever their arguments: the identifier and literal quoting of
# `pipeline_project.transform.warehouse`, the DuckLake store's relations built only from them, and int().
QUOTING_HELPERS = {"mart_table", "quote_identifier", "quote_literal", "_relation", "_staged_file", "int"}
# (file, function) -> why the SQL there is not built from values. Each entry must still match its code.
SQL_IS_THE_INPUT = {
    (
        "lake/catalog.py",
        "connect",
    ): "the secret's option names are the keys of a dict literal; every value is quote_literal",
    (
        "lake/ducklake_store.py",
        "digest",
    ): "callers pass a _relation or _staged_file and a fixed clause with ? placeholders",
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


def _is_helper_call(node: ast.expr) -> bool:
    if not isinstance(node, ast.Call):
        return False
    function = node.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
    return name in QUOTING_HELPERS


def _is_safe_sql(node: ast.expr | None, safe: set[str]) -> bool:
    """Whether `node` can only produce SQL written in the code: literals, names bound to such SQL (`safe`),
    quoting helpers' results, and f-strings, concatenations, joins, conditionals and collections of those."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.Name):
        return node.id in safe
    if isinstance(node, ast.JoinedStr):
        return all(
            isinstance(part, ast.Constant) or _is_safe_sql(part.value, safe)  # a FormattedValue otherwise
            for part in node.values
        )
    if _is_helper_call(node):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join":
        return _is_safe_sql(node.func.value, safe) and all(_is_safe_sql(arg, safe) for arg in node.args)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_safe_sql(node.left, safe) and _is_safe_sql(node.right, safe)
    if isinstance(node, ast.IfExp):
        return _is_safe_sql(node.body, safe) and _is_safe_sql(node.orelse, safe)
    if isinstance(node, ast.Subscript):
        return _is_safe_sql(node.value, safe)
    if isinstance(node, ast.List | ast.Tuple):
        return all(_is_safe_sql(element, safe) for element in node.elts)
    if isinstance(node, ast.Dict):
        return all(_is_safe_sql(part, safe) for part in (*node.keys, *node.values))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("items", "values"):
        return _is_safe_sql(node.func.value, safe)
    if isinstance(node, ast.ListComp | ast.GeneratorExp):
        return _is_safe_sql(node.elt, safe)  # the loop variables are not in `safe`
    if isinstance(node, ast.DictComp):
        return _is_safe_sql(node.value, safe)
    return False


def _safe_names(body: list[ast.stmt], safe: set[str]) -> set[str]:
    """`safe` plus every name a statement of `body` (not nested functions) binds only to safe SQL."""
    assigned: dict[str, list[ast.expr]] = {}
    for statement in body:
        for node in ast.walk(statement):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        assigned.setdefault(target.id, []).append(node.value)
            elif isinstance(node, ast.For):  # a loop over safe SQL binds its variables to safe SQL
                for target in ast.walk(node.target):
                    if isinstance(target, ast.Name):
                        assigned.setdefault(target.id, []).append(node.iter)
    safe = set(safe)
    while True:
        more = {name for name, values in assigned.items() if all(_is_safe_sql(value, safe) for value in values)}
        if more <= safe:
            return safe
        safe |= more


def _module_constants(trees: dict[Path, ast.Module]) -> dict[str, set[str]]:
    """Per module (dotted name), its module-level names bound only to safe SQL, imported ones included."""
    modules = {
        "pipeline_project." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts): tree
        for path, tree in trees.items()
    }
    constants: dict[str, set[str]] = dict.fromkeys(modules, set())
    for _ in range(3):  # constants imported from modules that import constants
        for module, tree in modules.items():
            imported = {
                alias.asname or alias.name
                for node in tree.body
                if isinstance(node, ast.ImportFrom) and node.module in constants
                for alias in node.names
                if alias.name in constants[node.module]
            }
            own = [node for node in tree.body if isinstance(node, ast.Assign)]
            constants[module] = _safe_names(own, imported)
    return constants


def _sql_calls(node: ast.AST, safe: set[str], function: str = "<module>"):
    """(innermost enclosing function, call, SQL argument, the names safe there) for every call of a SQL
    method; a nested function sees the safe names of the functions around it."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _sql_calls(child, _safe_names(child.body, safe), child.name)
            continue
        if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and child.func.attr in SQL_METHODS:
            sql = child.args[0] if child.args else next((k.value for k in child.keywords if k.arg == "query"), None)
            if sql is not None:
                yield function, child, sql, safe
        yield from _sql_calls(child, safe, function)


def test_no_sql_is_built_from_values():
    unsafe, exempt_used, scanned = [], set(), 0
    trees = _parse_files(sorted(PACKAGE.rglob("*.py")))
    constants = _module_constants(trees)
    for path, tree in trees.items():
        relative = path.relative_to(PACKAGE).as_posix()
        module = "pipeline_project." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for function, call, sql, safe in _sql_calls(tree, constants[module]):
            scanned += 1
            if _is_safe_sql(sql, safe):
                continue
            if (relative, function) in SQL_IS_THE_INPUT:
                exempt_used.add((relative, function))
                continue
            unsafe.append(f"{relative}:{call.lineno} in {function}(): {ast.unparse(sql)[:120]}")
    assert scanned >= 20, "the scan found the project's SQL calls (outbox, checks)"
    assert not unsafe, "SQL built from values; bind them with ? or use warehouse.mart_table:\n" + "\n".join(unsafe)
    for relative, function in set(SQL_IS_THE_INPUT) - exempt_used:
        assert not (PACKAGE / relative).exists(), f"stale exemption: {relative} {function}() no longer builds SQL"


def _scan(source: str) -> list[bool]:
    tree = ast.parse(source)
    constants = _safe_names([node for node in tree.body if isinstance(node, ast.Assign)], set())
    return [_is_safe_sql(sql, safe) for _, _, sql, safe in _sql_calls(tree, constants)]


def test_the_scan_flags_interpolated_values():
    flagged = """
def load(connection, key, table, columns):
    connection.execute(f"delete from t where k = '{key}'")
    connection.sql("select * from " + table)
    connection.execute("select * from t where k = '%s'" % key)
    connection.execute("select * from {}".format(table))
    connection.execute(f"select * from {mart_table(table)} where k = '{key}'")
    connection.execute(f"select * from t where {SCHEMA} and k = '{key}'")
    relation = table
    connection.execute(f"select * from {relation}")
    listed = ", ".join(f'"{name}"' for name in columns)
    connection.execute(f"select {listed} from t")
    connection.execute(f"select * from {quote_identifier(table) if key else table}")
    def nested(connection):
        connection.execute(f"select * from {relation}")
    for name, kind in {"a": key}.items():
        connection.execute(f"create table {name} ({kind})")
"""
    safe = """
SCHEMA = "create table t (k text)"
PENDING = "done_at is null"
TABLE = f"{SCHEMA}_copy"
COLUMNS = {"a": "k text", "b": "v text"}
def load(connection, key, mart, columns, paths):
    connection.executescript(SCHEMA)
    connection.execute("select * from t where k = ?", [key])
    connection.sql(f"select * from {mart_table(mart)}")
    connection.execute(f"select * from t where {PENDING}")
    relation = quote_identifier(mart)
    staged = {kind: quote_literal(path) for kind, path in paths.items()}
    listed = ", ".join(quote_identifier(name) for name in columns)
    connection.execute(f"select {listed} from {relation} join read_parquet({staged['data']}) using (k)")
    connection.execute(f"select * from {TABLE if key else relation} at (version => {int(key)})")
    def nested(connection):
        connection.execute(f"delete from {relation} where k = ?", [key])
    for table, columns in COLUMNS.items():
        connection.execute(f"create table {quote_identifier(table)} ({columns})")
"""
    assert _scan(flagged) == [False] * 11
    assert _scan(safe) == [True] * 8


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
