"""`make dev`: the metrics exporter, the demo source, then the Dagster webserver and daemon on 127.0.0.1, supervised
and stopped together.

    make dev              # python -m pipeline_project.dev.stack
    make serve-readonly   # ... --read-only: only the webserver, read-only (nothing can be launched or toggled)
    make stop             # ... --stop: stop what a `make dev` of this state directory started

Ports: the UI on DAGSTER_HOST:DAGSTER_PORT (127.0.0.1:3000; read-only 3001), the demo source on
127.0.0.1:SHOP_DEMO_PORT (8765). Links in alerts use DAGSTER_WEBSERVER_URL, which defaults to the UI's
address; a loopback URL on another port than the one served is corrected, with a notice.

What it starts, it watches: a demo source that dies is restarted on the same port (backing off while it
cannot start) and each restart is reported on the console, in the demo source's log and in
`<state>/dev.json`, which also names every process `make stop` stops and where the UI and the source are
(`oncall env` reads it). The code location keeps the source's address, so a restart needs nothing else.

The code server, the daemon and the webserver run in one process group of their own with default signal
handling (a child started from a non-interactive shell would otherwise inherit an ignored SIGINT, which
Dagster copies onto SIGTERM), so Ctrl-C here or `make stop` ends them all, and the demo source. They are
started separately rather than by `dagster dev`, which would have every run worker parse the dbt project
again: runs load the code location from the manifest `make dev` parsed first, as in a deployment.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from pipeline_project.dev.demo_process import DemoSourceProcess, describe_exit
from pipeline_project.dev.environment import demo_source_wanted, ensure_dbt_manifest, prepare_environment
from pipeline_project.dev.runtime import DevRuntime, process_alive, runtime_path
from pipeline_project.observability.logging import configure_logging
from pipeline_project.observability.process import ExporterProcess
from pipeline_project.settings import REPO_ROOT, dagster_host, dagster_port, demo_source_port, served_webserver_url

STOP_TIMEOUT_SECONDS = 30
WATCH_INTERVAL_SECONDS = 1.0
RESTART_BACKOFF_SECONDS = (1, 2, 4, 8, 15, 30)
# Days of web-event files the demo source drops at its first start (ending yesterday); SHOP_DEMO_DAYS overrides
# (0: none, the landing sensor then starts no run).
DEMO_SOURCE_DAYS = 7
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
CODE_SERVER_HOST = "127.0.0.1"
CODE_SERVER_START_SECONDS = 300


def say(text: str) -> None:
    print(f"make dev: {text}", flush=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _reset_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _group_alive(pgid: int) -> bool:
    """Some process of the group has not exited (zombies, which only wait to be collected, do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_group(pgid: int, grace_seconds: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM the process group, SIGKILL what is left of it after the grace period. Dagster's code servers
    outlive their parent and wait for a heartbeat timeout before exiting; the group ends them too."""
    deadline = time.monotonic() + grace_seconds
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _stop_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
    stop_group(process.pid, grace_seconds=5)
    process.wait()


def webserver_url_in_use(host: str, port: int) -> str:
    """DAGSTER_WEBSERVER_URL for the alerts: the configured one, unless it names this machine on another port."""
    served = served_webserver_url(host, port)
    configured = os.environ.get("DAGSTER_WEBSERVER_URL", "")
    parts = urlsplit(configured)
    if not configured or (parts.hostname in LOOPBACK_HOSTS and parts.port != port):
        if configured and configured.rstrip("/") != served:
            say(f"DAGSTER_WEBSERVER_URL={configured} is this machine on another port; alerts link {served}")
        os.environ["DAGSTER_WEBSERVER_URL"] = served
    return os.environ["DAGSTER_WEBSERVER_URL"]


class SupervisedSource:
    """The demo source, restarted on the same port when it dies, each restart reported and recorded."""

    def __init__(self, source: DemoSourceProcess, runtime: DevRuntime, state_dir: Path) -> None:
        self.source = source
        self.runtime = runtime
        self.state_dir = state_dir
        self._failed_restarts = 0
        self._next_attempt = 0.0

    def _log(self, text: str) -> None:
        say(text)
        if self.source.log_path:
            with self.source.log_path.open("a") as log:
                log.write(f"{_now()} make dev: {text}\n")

    def check(self) -> None:
        """Restart the source if it died (call it periodically)."""
        status = self.source.exit_status()
        if status is None or time.monotonic() < self._next_attempt:
            return
        if self._failed_restarts == 0:
            self.runtime.source_last_exit = describe_exit(status)
            self._log(f"the demo source (pid {self.source.pid}) {describe_exit(status)}; restarting it")
        try:
            self.source.restart()
        except (RuntimeError, OSError) as error:
            delay = RESTART_BACKOFF_SECONDS[min(self._failed_restarts, len(RESTART_BACKOFF_SECONDS) - 1)]
            self._failed_restarts += 1
            self._next_attempt = time.monotonic() + delay
            self._log(f"restarting the demo source failed ({error}); next attempt in {delay} s")
            return
        self._failed_restarts = 0
        self.runtime.source_restarts += 1
        self.runtime.source_last_restart = _now()
        self.runtime.source_pid = self.source.pid
        self.runtime.write(self.state_dir)
        self._log(
            f"restarted the demo source at {self.source.url} (pid {self.source.pid}, "
            f"restart {self.runtime.source_restarts} since make dev started)"
        )


@contextmanager
def demo_source(settings: dict[str, str], runtime: DevRuntime) -> Iterator[SupervisedSource]:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    days = int(os.environ.get("SHOP_DEMO_DAYS") or DEMO_SOURCE_DAYS)
    source = DemoSourceProcess(
        Path(settings["LANDING_DIR"]) if days else None,
        yesterday,
        days=max(days, 1),
        port=demo_source_port(),
        log_path=Path(settings["PIPELINE_LOG_DIR"]) / "demo_source.log",
    )
    source.start()
    try:
        source.export_settings()
        runtime.source_url, runtime.source_pid = source.url, source.pid
        say(f"demo shop source at {source.url} (SHOP_DEMO_PORT; restarted if it dies)")
        yield SupervisedSource(source, runtime, Path(settings["PIPELINE_STATE_DIR"]))
    finally:
        source.stop()


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _accepts(host: str, port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


def _code_location(state_dir: Path) -> tuple[list[str], Path]:
    """The code server of `workspace.yaml`'s module on a free loopback port, and a workspace file naming it.

    The webserver and the daemon share it, and its run workers load the code location like a deployment's:
    from the dbt manifest `make dev` parsed first (`dagster dev` would have every run worker parse the dbt
    project again, which costs each run many seconds)."""
    [entry] = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())["load_from"]
    module = entry["python_module"]
    port = _free_port(CODE_SERVER_HOST)
    workspace = state_dir / "dev-workspace.yaml"
    server = {"host": CODE_SERVER_HOST, "port": port, "location_name": module["location_name"]}
    workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": server}]}))
    command = ["code-server", "start", "-h", CODE_SERVER_HOST, "-p", str(port), "-m", module["module_name"]]
    command += ["-d", str(REPO_ROOT), "--location-name", module["location_name"]]
    return command, workspace


@contextmanager
def dagster_processes(read_only: bool, host: str, port: int, state_dir: Path) -> Iterator[list[subprocess.Popen]]:
    """The webserver (and, unless read-only, the code server and the daemon), in one process group that
    `make stop` and Ctrl-C end together; yields them, the group's leader first."""
    bin_dir = Path(sys.executable).parent
    if read_only:
        commands = [
            [str(bin_dir / "dagster-webserver"), "-w", "workspace.yaml", "-h", host, "-p", str(port), "--read-only"]
        ]
    else:
        code_server, workspace = _code_location(state_dir)
        commands = [
            [str(bin_dir / "dagster"), *code_server],
            [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)],
            [str(bin_dir / "dagster-webserver"), "-w", str(workspace), "-h", host, "-p", str(port)],
        ]
    commands = [[*command, "--log-format", "json"] for command in commands]  # JSON lines, like the run workers
    leader = subprocess.Popen(commands[0], cwd=REPO_ROOT, process_group=0, preexec_fn=_reset_signals)
    try:
        if not read_only:
            code_port = int(commands[0][commands[0].index("-p") + 1])
            deadline = time.monotonic() + CODE_SERVER_START_SECONDS
            while not _accepts(CODE_SERVER_HOST, code_port):
                if leader.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the code server did not start (exit status {leader.poll()})")
                time.sleep(0.5)

        members = [
            subprocess.Popen(command, cwd=REPO_ROOT, process_group=leader.pid, preexec_fn=_reset_signals)
            for command in commands[1:]
        ]
        yield [leader, *members]
    finally:
        _stop_group(leader)
        for member in locals().get("members", ()):
            member.wait()


def serve(read_only: bool) -> int:
    configure_logging("dev")
    settings = prepare_environment()
    ensure_dbt_manifest()
    state_dir = Path(settings["PIPELINE_STATE_DIR"])
    host, port = dagster_host(), dagster_port(read_only)
    running = DevRuntime.running(state_dir)
    if running is not None:
        say(f"already running (pid {running.pid}, UI {running.webserver_url}); `make stop` ends it")
        return 1
    runtime = DevRuntime(
        pid=os.getpid(), webserver_url=webserver_url_in_use(host, port), read_only=read_only, started_at=_now()
    )

    def shut_down(signum, frame) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGINT, shut_down)
    signal.signal(signal.SIGTERM, shut_down)
    with ExitStack() as services:
        services.callback(runtime_path(state_dir).unlink, missing_ok=True)
        if not read_only:
            # Prometheus metrics (METRICS_PORT, default 9108; 127.0.0.1): started first, so a busy port stops nothing.
            exporter = ExporterProcess(Path(settings["PIPELINE_LOG_DIR"]) / "exporter.log")
            say(f"Prometheus metrics at {exporter.start()}")
            services.callback(exporter.stop)
        source = None
        if demo_source_wanted() and not read_only:
            source = services.enter_context(demo_source(settings, runtime))
        dagster = services.enter_context(dagster_processes(read_only, host, port, state_dir))
        runtime.dagster_pid = dagster[0].pid
        runtime.write(state_dir)
        mode = " (read-only)" if read_only else ""
        say(f"Dagster UI{mode} on {served_webserver_url(host, port)} (DAGSTER_PORT; Ctrl-C or `make stop` ends it)")
        # If the code server, the daemon or the webserver exits, make dev stops everything and exits too.
        while all(process.poll() is None for process in dagster):
            if source is not None:
                source.check()
            time.sleep(WATCH_INTERVAL_SECONDS)
        ended = next(process for process in dagster if process.poll() is not None)
        say(f"{Path(ended.args[0]).name} exited with status {ended.returncode}; stopping everything")
        return ended.returncode or 1


def _is(pid: int | None, marker: str) -> bool:
    """The process is alive and still the one we started (pids are reused)."""
    if not process_alive(pid):
        return False
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not process_alive(pid)


def stop() -> int:
    """Stop the `make dev` of this state directory and whatever it started that is still running."""
    settings = prepare_environment()
    state_dir = Path(settings["PIPELINE_STATE_DIR"])
    runtime = DevRuntime.read(state_dir)
    if runtime is None:
        print("make dev is not running")
        return 0
    status = 0
    if _is(runtime.pid, "pipeline_project.dev.stack"):
        print(f"stopping make dev (pid {runtime.pid})")
        os.kill(runtime.pid, signal.SIGTERM)
        if not _wait_gone(runtime.pid, 2 * STOP_TIMEOUT_SECONDS):
            print(f"make dev (pid {runtime.pid}) is still running after {2 * STOP_TIMEOUT_SECONDS} s")
            return 1
    else:
        print(f"make dev (pid {runtime.pid}) is not running; stopping what it left behind")
    # Whatever outlived its supervisor (it was killed, or did not finish stopping).
    if runtime.dagster_pid and _group_alive(runtime.dagster_pid):
        print(f"stopping the Dagster processes left in group {runtime.dagster_pid}")
        stop_group(runtime.dagster_pid)
    if _is(runtime.source_pid, "demo_source"):
        print(f"stopping the demo source (pid {runtime.source_pid})")
        os.kill(runtime.source_pid, signal.SIGTERM)
        if not _wait_gone(runtime.source_pid, 10):
            os.kill(runtime.source_pid, signal.SIGKILL)
            status = 1
    runtime_path(state_dir).unlink(missing_ok=True)
    print("stopped")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--read-only", action="store_true", help="webserver only, no launching or toggling")
    mode.add_argument("--stop", action="store_true", help="stop the make dev of this state directory")
    args = parser.parse_args(argv)
    return stop() if args.stop else serve(args.read_only)


if __name__ == "__main__":
    sys.exit(main())
