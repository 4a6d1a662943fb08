"""Starting and stopping the bundled demo shop source as a child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

from pipeline_project.local.environment import DEMO_TOKEN


class DemoSourceProcess:
    """`python -m pipeline_project.demo_source serve` in the background, stopped on exit."""

    def __init__(self, landing_dir: Path, end_date: date, days: int, port: int = 0, log_path: Path | None = None):
        self.args = [
            sys.executable,
            "-m",
            "pipeline_project.demo_source",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--landing-dir",
            str(landing_dir),
            "--end-date",
            end_date.isoformat(),
            "--days",
            str(days),
        ]
        self.log_path = log_path
        self.token = os.environ.get("SHOP_API_TOKEN") or DEMO_TOKEN
        self.process: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self) -> str:
        env = {**os.environ, "SHOP_API_TOKEN": self.token}
        stderr = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=stderr, env=env, text=True)
        line = self.process.stdout.readline().strip()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"the demo source did not start (see {self.log_path}): {line!r}")
        self.url = line.split(" ", 1)[1]
        return self.url

    def export_settings(self) -> None:
        """Point this process's source settings (what the code location reads) at the running demo source."""
        os.environ["SHOP_API_URL"] = self.url
        os.environ["SHOP_API_TOKEN"] = self.token

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> DemoSourceProcess:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
