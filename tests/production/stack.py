"""The production deployment's processes, for real, without containers: a code server (the image's CMD from
deploy/Dockerfile), `dagster-webserver` and `dagster-daemon`, each a process of its own, on a Dagster instance in
PostgreSQL (deploy/dagster.yaml) with the workspace pointing at the code server (deploy/workspace.yaml), and the
pipeline in the production profile (DuckLake with its catalog in the same throwaway PostgreSQL cluster).

Only loopback addresses and free ports are used; every process is started in its own process group and
stopped by its PID when the stack closes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import httpx
import yaml
from postgres import Cluster

from pipeline_project.alerting.resource import CHANNEL_SETTINGS
from pipeline_project.lake.catalog import DuckLakeSettings
from pipeline_project.ops.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
LOCATION = "pipeline_project"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def image_command() -> list[str]:
    """The Dockerfile's CMD (exec form), the code server every deployment runs."""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("CMD "):
            return json.loads(line[4:])
    raise AssertionError("deploy/Dockerfile has no CMD")


def _replace_option(args: list[str], name: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(name) + 1] = value
    return args


class Stack:
    """Code server, webserver and daemon of the production profile, started from the deploy/ files."""

    def __init__(
        self,
        root: Path,
        cluster: Cluster,
        ducklake: DuckLakeSettings,
        source_url: str,
        token: str,
        max_concurrent_runs: int = 2,
    ) -> None:
        self.root = root
        self.home = root / "dagster_home"
        self.home.mkdir(parents=True)
        self.logs = root / "logs"
        self.logs.mkdir()
        self.landing = root / "landing"
        self.landing.mkdir()
        self.code_port, self.web_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.web_port}"
        instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
        instance["concurrency"]["runs"]["max_concurrent_runs"] = max_concurrent_runs
        (self.home / "dagster.yaml").write_text(yaml.safe_dump(instance, sort_keys=False))
        shutil.copyfile(DEPLOY / "workspace.yaml", self.home / "workspace.yaml")
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "DAGSTER_PG_HOST": cluster.host,
            "DAGSTER_PG_PORT": str(cluster.port),
            "DAGSTER_PG_USERNAME": cluster.user,
            "DAGSTER_PG_PASSWORD": cluster.password or "",
            "DAGSTER_PG_DB": "dagster",
            "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
            "DAGSTER_CODE_SERVER_PORT": str(self.code_port),
            "PIPELINE_PROFILE": "production",
            "PIPELINE_DUCKLAKE_CATALOG": ducklake.catalog,
            "PIPELINE_DUCKLAKE_DATA_PATH": ducklake.data_path,
            "PIPELINE_DUCKLAKE_CATALOG_PASSWORD": ducklake.password,
            "PIPELINE_LAKE_DIR": str(root / "scratch"),
            "PIPELINE_WAREHOUSE_PATH": str(root / "unused-warehouse.duckdb"),
            "PIPELINE_EXECUTOR": "in_process",
            "PIPELINE_LOG_DIR": str(self.logs),
            "SHOP_API_URL": source_url,
            "SHOP_API_TOKEN": token,
            "LANDING_DIR": str(self.landing),
            "ALERT_DIR": str(root / "alerts"),
            "DAGSTER_WEBSERVER_URL": self.url,
            "ALERT_RUNBOOK_BASE_URL": "",
            **{name: "" for name in CHANNEL_SETTINGS.values()},
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
        self.env.pop("PGPASSWORD", None)
        self.env.pop("PIPELINE_FAULT_POINT", None)
        self.processes: dict[str, subprocess.Popen] = {}

    # --- processes -----------------------------------------------------------------------------------------
    def _start(self, name: str, args: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("w")
        self.processes[name] = subprocess.Popen(
            args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start(self) -> Stack:
        code = _replace_option(image_command(), "--host", "127.0.0.1")
        code = _replace_option(code, "--port", str(self.code_port))
        self._start("code-server", [str(BIN / code[0]), *code[1:]])
        workspace = str(self.home / "workspace.yaml")
        self._start(
            "webserver",
            [str(BIN / "dagster-webserver"), "--host", "127.0.0.1", "--port", str(self.web_port), "-w", workspace],
        )
        self._start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace])
        self.wait_until_loaded()
        return self

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)

    def restart_daemon(self, max_concurrent_runs: int) -> None:
        """The run queue's limit is read when the daemon starts: change it and start the daemon again."""
        daemon = self.processes.pop("daemon")
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)
        instance = yaml.safe_load((self.home / "dagster.yaml").read_text())
        instance["concurrency"]["runs"]["max_concurrent_runs"] = max_concurrent_runs
        (self.home / "dagster.yaml").write_text(yaml.safe_dump(instance, sort_keys=False))
        self._start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(self.home / "workspace.yaml")])

    def logs_text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.logs.glob("*")) if path.is_file())

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]
                raise AssertionError(f"{name} exited with {process.returncode}:\n{tail}")

    # --- GraphQL -------------------------------------------------------------------------------------------
    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=120)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def wait_until_loaded(self, timeout: float = 240) -> None:
        """Until the webserver answers and has loaded the code location from the code server."""
        last = ""

        def loaded() -> bool:
            nonlocal last
            self.check_alive()
            try:
                data = self.graphql(
                    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                    "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
                )
                entries = data["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["loadStatus"] == "LOADED":
                    if entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation":
                        return True
                    last = str(entries[0]["locationOrLoadError"])
            except (httpx.HTTPError, AssertionError) as error:
                last = str(error)
            return False

        wait_until(
            loaded, timeout, "the code location loaded", describe=lambda _: f"{last}\n{self.logs_text()[-4000:]}"
        )

    def stop_sensor(self, name: str) -> None:
        data = self.graphql(
            """query Sensor($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
                 __typename ... on Sensor { id } } }""",
            {"selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "sensorName": name}},
        )
        sensor_id = data["sensorOrError"]["id"]
        self.graphql(
            "mutation Stop($id: String) { stopSensor(id: $id) { __typename } }",
            {"id": sensor_id},
        )

    def backfill(self, job: str, days: list[date]) -> str:
        data = self.graphql(
            """mutation Backfill($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
                 __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
            {
                "params": {
                    "selector": {
                        "partitionSetName": f"{job}_partition_set",
                        "repositorySelector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"},
                    },
                    "partitionNames": [day.isoformat() for day in days],
                    "fromFailure": False,
                }
            },
        )
        result = data["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        return result["backfillId"]

    def launch(self, job: str, tags: dict[str, str] | None = None) -> str:
        data = self.graphql(
            """mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
                 __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
            {
                "params": {
                    "selector": {
                        "repositoryLocationName": LOCATION,
                        "repositoryName": "__repository__",
                        "jobName": job,
                    },
                    "runConfigData": {},
                    "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
                }
            },
        )
        result = data["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]
