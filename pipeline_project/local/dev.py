"""`make dev`: the demo source, then the Dagster webserver and daemon on 127.0.0.1, stopped together.

`make serve-readonly` (`--read-only`): only the webserver, in read-only mode (nothing can be launched or
switched on or off), for showing the pipeline to people who should not operate it.

`dagster dev` runs in its own process group with default signal handling (a child started from a
non-interactive shell would otherwise inherit an ignored SIGINT, which Dagster copies onto SIGTERM), so
Ctrl-C here or `make stop` ends the webserver, the daemon, the code server and the demo source.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline_project.local.demo_process import DemoSourceProcess
from pipeline_project.local.environment import (
    REPO_ROOT,
    demo_source_port,
    demo_source_wanted,
    ensure_dbt_manifest,
    prepare_environment,
)
from pipeline_project.observability.logging import configure_logging
from pipeline_project.observability.process import ExporterProcess

PID_FILE_NAME = "dev.pid"
STOP_TIMEOUT_SECONDS = 30


def _reset_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop_group(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--read-only", action="store_true", help="webserver only, no launching or toggling")
    args = parser.parse_args(argv)
    configure_logging("dev")
    settings = prepare_environment()
    ensure_dbt_manifest()
    host = os.environ.get("DAGSTER_HOST", "127.0.0.1")
    port = os.environ.get("DAGSTER_PORT", "3001" if args.read_only else "3000")
    pid_file = Path(settings["PIPELINE_STATE_DIR"]) / PID_FILE_NAME
    source = None
    # Prometheus metrics (METRICS_PORT, default 9108; 127.0.0.1): started first, so a busy port stops nothing.
    exporter = None if args.read_only else ExporterProcess(Path(settings["PIPELINE_LOG_DIR"]) / "exporter.log")
    if exporter:
        print(f"Prometheus metrics at {exporter.start()}", flush=True)
    if demo_source_wanted() and not args.read_only:
        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        source = DemoSourceProcess(
            Path(settings["LANDING_DIR"]),
            yesterday,
            days=7,
            port=demo_source_port(),
            log_path=Path(settings["PIPELINE_LOG_DIR"]) / "demo_source.log",
        )
        source.start()
        source.export_settings()
        print(f"demo shop source at {os.environ['SHOP_API_URL']}", flush=True)
    bin_dir = Path(sys.executable).parent
    command = (
        [str(bin_dir / "dagster-webserver"), "-w", "workspace.yaml", "-h", host, "-p", port, "--read-only"]
        if args.read_only
        else [str(bin_dir / "dagster"), "dev", "-w", "workspace.yaml", "-h", host, "-p", port]
    ) + ["--log-format", "json"]
    dagster = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        start_new_session=True,
        preexec_fn=_reset_signals,
    )
    pid_file.write_text(str(os.getpid()))

    def shut_down(signum, frame) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGINT, shut_down)
    signal.signal(signal.SIGTERM, shut_down)
    mode = " (read-only)" if args.read_only else ""
    print(f"Dagster UI{mode} on http://{host}:{port} (Ctrl-C or `make stop` to stop everything)", flush=True)
    try:
        return dagster.wait()
    finally:
        _stop_group(dagster)
        if source:
            source.stop()
        if exporter:
            exporter.stop()
        pid_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
