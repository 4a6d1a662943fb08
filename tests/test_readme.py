"""The README stays true: its asset graph picture matches the code, its settings match .env.example."""

import re
from pathlib import Path

from pipeline_project.definitions import defs

REPO_ROOT = Path(__file__).resolve().parents[1]
README = (REPO_ROOT / "README.md").read_text()


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


def test_readme_documents_every_setting_in_env_example():
    settings = re.findall(r"^([A-Z_]+)=", (REPO_ROOT / ".env.example").read_text(), re.M)
    assert settings
    undocumented = [name for name in settings if f"`{name}`" not in README]
    assert not undocumented


def test_readme_shows_the_two_commands_and_the_test_command():
    for command in ("make run", "make dev", "make test"):
        assert command in README
