"""The deployment files agree with each other and with the code: deploy/Dockerfile, deploy/compose.yaml,
deploy/helm/values.yaml, deploy/dagster.yaml and deploy/workspace.yaml name the same module, code location,
port and environment variables, and secrets are never written into them.

No container engine or cluster runs on the project's machines, so none of these files is built or installed
here; `test_stack.py` runs the same processes (code server, webserver, daemon) from the same instance and
workspace files without containers."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from pipeline_project.alerting.resource import CHANNEL_SETTINGS
from pipeline_project.lake.catalog import DuckLakeSettings
from pipeline_project.secrets import SECRET_SETTINGS

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
MODULE = "pipeline_project.definitions"
LOCATION = "pipeline_project"


def dockerfile() -> dict:
    """The Dockerfile's instructions: CMD (exec form), EXPOSE, ENV, COPY sources and RUN lines."""
    text = (DEPLOY / "Dockerfile").read_text()
    logical = re.sub(r"\\\n\s*", " ", text)
    lines = [line.strip() for line in logical.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    parsed: dict = {"RUN": [], "COPY": [], "ENV": {}, "EXPOSE": []}
    for line in lines:
        instruction, _, rest = line.partition(" ")
        if instruction == "CMD":
            parsed["CMD"] = json.loads(rest)
        elif instruction == "EXPOSE":
            parsed["EXPOSE"] += [int(port) for port in rest.split()]
        elif instruction == "ENV":
            parsed["ENV"].update(dict(pair.split("=", 1) for pair in shlex.split(rest)))
        elif instruction in ("RUN", "COPY"):
            parsed[instruction].append(rest)
        elif instruction == "FROM":
            parsed["FROM"] = rest
    return parsed


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def load(name: str):
    return yaml.safe_load((DEPLOY / name).read_text())


def env_references(node) -> set[str]:
    """Every `{env: NAME}` in a Dagster YAML file."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_references(value) for value in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(env_references(value) for value in node)) if node else set()
    return set()


def required_by_code() -> set[str]:
    """The settings the code location reads with `dg.EnvVar` unconditionally: Dagster refuses to load a resource
    whose variable is missing, so every deployment must set them (empty where a feature is off)."""
    names = set(CHANNEL_SETTINGS.values())
    for source in ("pipeline_project/definitions.py", "pipeline_project/alerting/resource.py"):
        names |= set(re.findall(r'dg\.EnvVar(?:\.int)?\("([A-Z0-9_]+)"\)', (REPO / source).read_text()))
    conditional = {"LANDING_MAX_FILE_BYTES", "PIPELINE_WAREHOUSE_LOCK_WAIT_SECONDS"}  # only read when set
    return names - conditional


def production_settings() -> set[str]:
    return {f"PIPELINE_DUCKLAKE_{name}" for name in ("CATALOG", "DATA_PATH")} | {"PIPELINE_PROFILE"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return load("compose.yaml")


@pytest.fixture(scope="module")
def helm() -> dict:
    return load("helm/values.yaml")


def service_env(compose: dict, service: str) -> dict[str, str]:
    env = compose["services"][service]["environment"]
    merged: dict[str, str] = {}
    for part in env.get("<<", []):
        merged.update(part)
    merged.update({key: value for key, value in env.items() if key != "<<"})
    return {key: str(value) for key, value in merged.items()}


def test_the_image_serves_the_code_location_the_project_declares():
    image = dockerfile()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    local_workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    assert image["CMD"][:3] == ["dagster", "code-server", "start"]
    assert option(image["CMD"], "--module-name") == MODULE == project["code_location_target_module"]
    assert local_workspace["module_name"] == MODULE
    assert option(image["CMD"], "--location-name") == LOCATION == local_workspace["location_name"]
    assert [int(option(image["CMD"], "--port"))] == image["EXPOSE"]
    assert option(image["CMD"], "--host") == "0.0.0.0"
    assert image["FROM"].startswith("python:3.11")
    assert image["ENV"]["PIPELINE_PROFILE"] == "production"


def test_the_image_installs_the_lock_and_the_extensions_and_parses_dbt_at_build_time():
    image = dockerfile()
    runs = " ".join(image["RUN"])
    assert "--require-hashes --no-deps -r requirements.lock" in runs
    assert "python -m pipeline_project.lake.extensions" in runs
    assert "dbt parse" in runs
    for copy in image["COPY"]:
        *sources, _ = copy.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    home = image["ENV"]["DAGSTER_HOME"]
    assert any("deploy/dagster.yaml" in copy and copy.endswith(home + "/") for copy in image["COPY"])


def test_the_instance_is_on_postgres_with_a_queue_of_at_least_two_runs():
    instance = load("dagster.yaml")
    database = instance["storage"]["postgres"]["postgres_db"]
    assert database["scheme"] == "postgresql+psycopg2"
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert instance["concurrency"]["runs"]["max_concurrent_runs"] >= 2
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())
    for section in ("run_monitoring", "run_retries", "python_logs"):
        assert instance[section] == local[section], f"{section} differs from the repository's dagster.yaml"


def test_the_workspace_points_at_the_code_server_and_every_process_has_the_settings_it_reads(compose):
    workspace = load("workspace.yaml")["load_from"][0]["grpc_server"]
    assert workspace["location_name"] == LOCATION
    image = dockerfile()
    referenced = env_references(load("dagster.yaml")) | env_references(load("workspace.yaml"))
    for service in ("code-server", "webserver", "daemon"):
        env = service_env(compose, service)
        missing = referenced - set(env)
        assert not missing, f"{service} lacks {sorted(missing)}"
        assert env["DAGSTER_CODE_SERVER_HOST"] == "code-server"
        assert int(env["DAGSTER_CODE_SERVER_PORT"]) in image["EXPOSE"]
    code = compose["services"]["code-server"]
    assert code["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert [int(port) for port in code["expose"]] == image["EXPOSE"]
    workspace_path = image["ENV"]["DAGSTER_HOME"] + "/workspace.yaml"
    for service, program in (("webserver", "dagster-webserver"), ("daemon", "dagster-daemon")):
        command = compose["services"][service]["command"]
        assert command[0] == program and option(command, "--workspace") == workspace_path
        assert compose["services"][service]["image"] == code["image"]


def test_the_code_server_gets_every_setting_the_code_reads_and_no_secret_is_written_down(compose):
    env = service_env(compose, "code-server")
    assert required_by_code() | production_settings() <= set(env), sorted(required_by_code() - set(env))
    assert env["PIPELINE_PROFILE"] == "production"
    DuckLakeSettings(catalog=env["PIPELINE_DUCKLAKE_CATALOG"], data_path=env["PIPELINE_DUCKLAKE_DATA_PATH"])
    for name in (*SECRET_SETTINGS, "DAGSTER_PG_PASSWORD"):
        if name in env:
            assert re.fullmatch(r"\$\{[A-Z0-9_]+(:-|:\?)?[^}]*\}", env[name]), f"{name} is written into compose"
    assert compose["services"]["postgres"]["image"].startswith("postgres:")


def test_the_helm_values_run_the_same_image_command_port_and_settings(helm):
    image = dockerfile()
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    assert option(deployment["codeServerArgs"], "--module-name") == MODULE
    assert option(deployment["codeServerArgs"], "--location-name") == LOCATION
    assert [deployment["port"]] == image["EXPOSE"]
    env = {item["name"]: item.get("value") for item in deployment["env"]}
    secrets = set(SECRET_SETTINGS)
    assert not secrets & set(env), f"secrets as plain values: {sorted(secrets & set(env))}"
    assert {"pipeline-secrets"} == {secret["name"] for secret in deployment["envSecrets"]}
    assert (required_by_code() | production_settings()) - secrets <= set(env), sorted(
        (required_by_code() | production_settings()) - secrets - set(env)
    )
    assert env["PIPELINE_PROFILE"] == "production"
    assert helm["runLauncher"]["type"] == "K8sRunLauncher"
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    coordinator = helm["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "QueuedRunCoordinator"
    assert coordinator["config"]["queuedRunCoordinator"]["maxConcurrentRuns"] >= 2
    assert helm["postgresql"]["enabled"] is False and helm["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"


def test_the_new_settings_are_documented_and_the_secrets_registered():
    example = (REPO / ".env.example").read_text()
    configuration = (REPO / "docs" / "configuration.md").read_text()
    for name in (*production_settings(), "PIPELINE_DUCKLAKE_CATALOG_PASSWORD", "PIPELINE_S3_SECRET"):
        assert re.search(rf"^{name}=", example, re.MULTILINE), f"{name} is not in .env.example"
        assert f"`{name}`" in configuration, f"{name} is not in the settings table of docs/configuration.md"
    assert {"PIPELINE_DUCKLAKE_CATALOG_PASSWORD", "PIPELINE_S3_SECRET"} <= set(SECRET_SETTINGS)
