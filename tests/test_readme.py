"""The README and the docs stay true: the README's asset graph matches the code and it shows the commands;
docs/configuration.md documents every setting of .env.example; docs/operations.md's SLA, alert-kind and route
tables match the SLA catalogue and the alerting code; `make test-fast`, the quick lane the README gives, selects
its tests."""

import re
import subprocess
from pathlib import Path

import pytest

from pipeline_project.alerting.alert import RUNBOOKS
from pipeline_project.catalog.policies import ALERT_ROUTES, SLA_CATALOGUE
from pipeline_project.definitions import defs

REPO_ROOT = Path(__file__).resolve().parents[1]
README = (REPO_ROOT / "README.md").read_text()
CONFIGURATION = (REPO_ROOT / "docs" / "configuration.md").read_text()
OPERATIONS = (REPO_ROOT / "docs" / "operations.md").read_text()


def _mermaid_edges() -> set[tuple[str, str]]:
    block = re.search(r"```mermaid\n(.*?)```", README, re.S).group(1)
    edges = set()
    for line in block.splitlines():
        if "-->" not in line:
            continue
        left, right = (side.strip() for side in line.split("-->"))
        for parent in left.split("&"):
            for child in right.split("&"):
                edges.add((parent.strip(), child.strip()))
    return edges


def test_readme_graph_has_every_asset_dependency_and_no_other():
    graph = defs.resolve_asset_graph()
    code_edges = {
        (parent.to_user_string(), key.to_user_string())
        for key in graph.get_all_asset_keys()
        for parent in graph.get(key).parent_keys
    }
    readme_edges = {(p, c) for p, c in _mermaid_edges() if p not in ("api", "files")}
    assert readme_edges == code_edges


def test_docs_document_every_setting_in_env_example():
    """The settings table of docs/configuration.md; the alert channels' settings are in the generated channel
    table of docs/operations.md, which the configuration table points to for `ALERT_*`."""
    settings = re.findall(r"^([A-Z_]+)=", (REPO_ROOT / ".env.example").read_text(), re.M)
    assert settings
    assert "| `ALERT_*` |" in CONFIGURATION
    undocumented = [
        name
        for name in settings
        if f"`{name}`" not in (CONFIGURATION + OPERATIONS if name.startswith("ALERT_") else CONFIGURATION)
    ]
    assert not undocumented


def test_readme_shows_the_two_commands_and_the_test_command():
    for command in ("make run", "make dev", "make test", ".ci/run"):
        assert command in README


@pytest.mark.slow
def test_make_test_fast_runs_its_pytest_command_on_workers_without_the_slow_tests():
    """The quick lane's own command line (from `make -n`), collecting only: the worker option parses (pytest-xdist
    is installed), the marker expression is a known marker, and it leaves the slow tests, drills and production
    tests out."""
    recipe = subprocess.run(
        ["make", "-n", "--no-print-directory", "test-fast"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    [command] = [line for line in recipe.splitlines() if " -m pytest " in line]
    collected = subprocess.run(
        ["bash", "-c", f"{command} --collect-only -q -p no:cacheprovider"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    selected = [line for line in collected.stdout.splitlines() if "::" in line]
    assert selected
    assert not [test for test in selected if test.startswith(("tests/drills/", "tests/production/"))]
    assert not [test for test in selected if test.startswith("tests/test_pipeline.py::test_marts_equal_the_generators")]
    assert re.search(r"\d+/\d+ tests collected \(\d+ deselected\)", collected.stdout)


def _table_after(document: str, marker: str) -> list[list[str]]:
    """The body rows of the first Markdown table at or after `marker`, as lists of cell texts."""
    lines = document[document.index(marker) :].splitlines()
    first = next(index for index, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[first + 2 :]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    return table


def _hours(window) -> str:
    return f"{window.days * 24 + window.seconds // 3600} h"


def test_operations_sla_table_matches_the_catalogue():
    documented = {}
    for groups, freshness, owner, severity, route, runbook, *_, pool in _table_after(
        OPERATIONS, "## Policies, declared once"
    ):
        for group in groups.split(", "):
            documented[group] = (freshness, owner, severity, route, runbook, pool)
    expected = {
        group: (
            f"{_hours(policy.freshness.warn_window)} / {_hours(policy.freshness.fail_window)}",
            ", ".join(policy.owners),
            policy.severity,
            policy.alert_route,
            policy.runbook,
            policy.pool or "—",
        )
        for group, policy in SLA_CATALOGUE.items()
    }
    assert documented == expected


def test_operations_alert_kinds_and_routes_match_the_code():
    kinds = {row[0].strip("`"): row[-1] for row in _table_after(OPERATIONS, "| Alert kind |")}
    assert kinds == {kind.value: runbook for kind, runbook in RUNBOOKS.items()}
    routes = {row[0]: (row[1], row[2]) for row in _table_after(OPERATIONS, "| Route |")}
    assert routes == {name: (", ".join(route.page), ", ".join(route.notify)) for name, route in ALERT_ROUTES.items()}
