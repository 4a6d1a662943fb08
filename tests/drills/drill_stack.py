"""One real stack for all drills: `make dev` itself (the supervised demo source, the Dagster webserver, daemon
and code server of the real code location) on free ports in a temporary state directory, with the alert
channels pointed at loopback receivers (webhook and Slack), the sensors and the freshness daemon at a 2 s
interval, run monitoring polling every second, short waits between step retries, and a copy of the dbt
project (PIPELINE_DBT_PROJECT_DIR) that drills may break. Runs are launched through the webserver, as the UI
and `oncall rerun` launch them; the faults go in through the demo source's knobs, the dbt copy and the
instance's event log. Every wait goes through `pipeline_project.ops.wait.wait_until`."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import yaml
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID

from pipeline_project.dev.runtime import DevRuntime
from pipeline_project.ops.wait import wait_until
from pipeline_project.ops.webserver import Webserver
from pipeline_project.settings import REPO_ROOT

from receivers import Received, WebhookReceiver, free_port

BIN = Path(sys.executable).parent
# The alert sensors' and the freshness daemon's interval (production: 30 s): alerts and resolve notices arrive
# within seconds, and the daemon does not take a core of the 2-core machine.
INTERVAL_SECONDS = 3
STARTUP_SECONDS = 240
RUN_SECONDS = 240
ALERT_SECONDS = 120
SCALE = "0.05"
# The secret parts of the settings: no alert, log or command output may contain them.
TOKEN = f"drill-token-{secrets.token_hex(8)}"
WEBHOOK_SECRET = f"hook-{secrets.token_hex(8)}"
SLACK_SECRET = f"slack-{secrets.token_hex(8)}"
INHERITED_PREFIXES = ("PIPELINE_", "SHOP_", "DAGSTER_", "LANDING_", "ALERT_", "FRESHNESS_")


@dataclass
class Stack:
    root: Path
    webhook: WebhookReceiver
    slack: WebhookReceiver
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    runtime: DevRuntime | None = None
    instance: dg.DagsterInstance | None = None
    consumed: set[str] = field(default_factory=set)
    timings: dict[str, float] = field(default_factory=dict)

    # ---------------------------------------------------------------- set-up
    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def dbt_project(self) -> Path:
        return self.root / "dbt_project"

    @property
    def day(self) -> str:
        """The day every drill works on: yesterday (UTC), the last partition and the demo source's last day."""
        return (datetime.now(UTC).date() - timedelta(days=1)).isoformat()

    @property
    def day_date(self):
        return datetime.fromisoformat(self.day).date()

    @property
    def secrets(self) -> tuple[str, ...]:
        return (TOKEN, WEBHOOK_SECRET, SLACK_SECRET)

    def start(self) -> None:
        home = self.state / "dagster_home"
        home.mkdir(parents=True)
        config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
        config["run_monitoring"]["poll_interval_seconds"] = 1  # a timed-out run is failed within a second
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        shutil.copytree(REPO_ROOT / "dbt_project", self.dbt_project, ignore=shutil.ignore_patterns("target", "logs"))
        (self.dbt_project / "target").mkdir()
        shutil.copy(REPO_ROOT / "dbt_project" / "target" / "manifest.json", self.dbt_project / "target")
        self.env = {
            **{key: value for key, value in os.environ.items() if not key.startswith(INHERITED_PREFIXES)},
            "PATH": f"{BIN}:{os.environ['PATH']}",  # `oncall`, as `make install` provides it
            "PIPELINE_STATE_DIR": str(self.state),
            # Everything else explicit, so that a developer's .env cannot leak into the drill.
            "PIPELINE_LAKE_DIR": str(self.state / "lake"),
            "PIPELINE_WAREHOUSE_PATH": str(self.state / "warehouse.duckdb"),
            "LANDING_DIR": str(self.state / "landing"),
            "DAGSTER_HOME": str(home),
            "ALERT_DIR": str(self.state / "alerts"),
            "PIPELINE_DBT_PROJECT_DIR": str(self.dbt_project),
            "DAGSTER_PORT": str(free_port()),
            "SHOP_DEMO_PORT": str(free_port()),
            "SHOP_DEMO_SCALE": SCALE,
            "SHOP_DEMO_DAYS": "0",  # no landing files: the landing sensor starts no run (no drill needs one)
            "SHOP_API_URL": "",
            "SHOP_API_TOKEN": TOKEN,
            "DAGSTER_WEBSERVER_URL": "",
            "ALERT_WEBHOOK_URL": f"{self.webhook.url}/alerts/{WEBHOOK_SECRET}",
            "ALERT_SLACK_WEBHOOK_URL": f"{self.slack.url}/services/{SLACK_SECRET}",
            "ALERT_SENSOR_INTERVAL_SECONDS": str(INTERVAL_SECONDS),
            "FRESHNESS_DAEMON_INTERVAL_SECONDS": str(INTERVAL_SECONDS),
            "PIPELINE_RETRY_DELAY_SCALE": "0.02",
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
        # The instance's storage exists before the daemon opens it (two processes creating SQLite storage race).
        with self.environment():
            self.instance = dg.DagsterInstance.from_config(str(home))
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline_project.dev.stack"],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=(self.root / "make-dev.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.runtime = wait_until(self._serving, STARTUP_SECONDS, "make dev serving the UI with the code location")
        self.timings["stack_start"] = time.monotonic() - started

    def keep_partial_parse(self, run_id: str) -> None:
        """dagster-dbt seeds each dbt invocation with target/partial_parse.msgpack, as `make manifest` leaves it
        in the repository: seeded with the parse of a run in this environment, later invocations re-parse only
        the files a drill changes (the repository's own parse is for other paths, so dbt would discard it)."""
        [invocation] = (self.dbt_project / "target").glob(f"shop_dbt_assets-{run_id[:7]}-*")
        shutil.copy(invocation / "partial_parse.msgpack", self.dbt_project / "target" / "partial_parse.msgpack")

    def _serving(self) -> DevRuntime | None:
        assert self.process.poll() is None, f"make dev exited:\n{self.log()[-4000:]}"
        runtime = DevRuntime.running(self.state)
        if runtime is None or runtime.dagster_pid is None:
            return None
        try:
            Webserver(runtime.webserver_url, timeout_seconds=10).job_location("shop_pipeline")
        except Exception:
            return None
        return runtime

    def log(self) -> str:
        return (self.root / "make-dev.log").read_text(errors="replace")

    @contextmanager
    def environment(self):
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env)
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds so far of make dev's processes, each with the children it has waited for (the code
        server's include the finished run workers and their dbt)."""
        roles = {
            "code-server": "code_server",  # with the gRPC server it runs: sensor evaluations, run launches
            "api grpc": "code_server",
            "dagster-daemon": "daemon",
            "dagster-webserver": "webserver",
        }
        ticks = os.sysconf("SC_CLK_TCK")
        found: dict[str, float] = {}
        pids = {self.runtime.pid: "make_dev", self.runtime.source_pid: "demo_source"}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                cmdline = (stat.parent / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            pid = int(stat.parent.name)
            role = pids.get(pid) or next((name for mark, name in roles.items() if mark in cmdline), None)
            if role and (pid in pids or int(fields[2]) == self.runtime.dagster_pid):
                found[role] = found.get(role, 0.0) + sum(int(value) for value in fields[11:15]) / ticks
        return {name: round(seconds, 1) for name, seconds in sorted(found.items())}

    def stop(self) -> None:
        """`make stop`, then nothing that make dev started may be left."""
        if self.runtime is not None:
            self.timings.update({f"cpu_{name}": seconds for name, seconds in self.cpu_by_process().items()})
        if self.instance is not None:
            self.instance.dispose()
        stopped = subprocess.run(
            ["make", "--no-print-directory", "stop", f"STATE_DIR={self.state}"],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if self.process is not None:
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not DevRuntime.running(self.state), "make stop left make dev running"

    # ---------------------------------------------------------------- runs
    @property
    def webserver(self) -> Webserver:
        return Webserver(self.runtime.webserver_url)

    def launch(self, job: str, assets: list[str] | None, tags: dict[str, str] | None = None) -> str:
        """Launch `job` (its `assets` only, if given) for the drill's day."""
        return self.webserver.launch(job, assets or (), [self.day], tags)

    def wait_run(self, run_id: str, timeout: float = RUN_SECONDS) -> dg.DagsterRun:
        def finished() -> dg.DagsterRun | None:
            run = self.instance.get_run_by_id(run_id)
            return run if run is not None and run.is_finished else None

        return wait_until(finished, timeout, f"run {run_id} finished", interval=1.0)

    def wait_idle(self, timeout: float = RUN_SECONDS) -> None:
        """No run queued or in progress (the landing sensor's runs at start-up, a stopped run's worker)."""
        unfinished = dg.RunsFilter(
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
                dg.DagsterRunStatus.CANCELING,
            ]
        )
        wait_until(lambda: not self.instance.get_runs(unfinished), timeout, "no run in flight", interval=1.0)

    # ---------------------------------------------------------------- faults
    def set_faults(self, **faults) -> None:
        response = httpx.put(
            f"{self.runtime.source_url}/admin/faults",
            json=faults,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        response.raise_for_status()

    @contextmanager
    def model_changed(self, model: str, old: str, new: str, prepend: str = ""):
        """A change to a model of the stack's dbt project, as a bad commit would make it; `revert` undoes it."""
        path = self.dbt_project / "models" / model
        original = path.read_text()
        assert old in original, f"{model} no longer contains {old!r}: update the drill"
        path.write_text(prepend + original.replace(old, new))
        try:
            yield lambda: path.write_text(original)
        finally:
            path.write_text(original)

    def age_last_materialization(self, asset: str, hours: float) -> None:
        """Record that `asset` was last materialized `hours` ago: the state a day without updates leaves (the
        drill cannot wait the 27 hours of a mart's window). A runless materialization with that timestamp is
        the asset's latest event, which the freshness daemon reads."""
        self.instance.report_dagster_event(
            DagsterEvent(
                event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                event_specific_data=StepMaterializationData(
                    dg.AssetMaterialization(asset_key=asset, metadata={"drill": f"aged by {hours} h"})
                ),
                job_name=RUNLESS_JOB_NAME,
            ),
            run_id=RUNLESS_RUN_ID,
            timestamp=time.time() - hours * 3600,
        )

    # ---------------------------------------------------------------- alerts
    def wait_alert(self, matches: Callable[[dict], bool], what: str, timeout: float = ALERT_SECONDS) -> Received:
        """The first request the webhook accepted that matches and that no drill took yet."""

        def arrived() -> Received | None:
            for request in self.webhook.received:
                key = request.headers.get("Idempotency-Key")
                if key not in self.consumed and matches(request.json()):
                    self.consumed.add(key)
                    return request
            return None

        return wait_until(arrived, timeout, what, interval=0.5, describe=lambda _: self._seen())

    def _seen(self) -> str:
        return json.dumps([(r.json()["action"], r.json()["kind"], r.json()["title"]) for r in self.webhook.received])

    def resolve_notice(self, incident_key: str, timeout: float = ALERT_SECONDS) -> Received:
        return self.wait_alert(
            lambda alert: alert["action"] == "resolve" and alert["incident_key"] == incident_key,
            f"the resolve notice of {incident_key}",
            timeout,
        )

    def alert_of_run(self, kind: str, run_id: str) -> Received:
        return self.wait_alert(
            lambda alert: (
                alert["action"] == "trigger" and alert["kind"] == kind and alert["details"].get("run_id") == run_id
            ),
            f"a {kind} alert about run {run_id}",
        )

    def texts(self) -> str:
        """Everything that left the stack as text: webhook and Slack bodies, the alert log, make dev's console."""
        alerts_log = self.state / "alerts" / "alerts.log"
        bodies = [request.body.decode() for request in (*self.webhook.received, *self.slack.received)]
        return "\n".join([*bodies, alerts_log.read_text() if alerts_log.exists() else "", self.log()])
