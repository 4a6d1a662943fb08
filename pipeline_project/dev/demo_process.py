"""Starting, watching, restarting and stopping the bundled demo shop source as a child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

from pipeline_project.ops.wait import stop_process
from pipeline_project.settings import DEMO_TOKEN


class DemoSourceProcess:
    """`python -m demo_source serve` in the background, stopped on exit.

    The first start lands the web-event files of the window (with `landing_dir`); a `restart` serves again
    on the same port without landing them again (the landing sensor would take files dropped a second time
    for new deliveries).
    """

    def __init__(
        self, landing_dir: Path | None, end_date: date, days: int, port: int = 0, log_path: Path | None = None
    ):
        self.landing_dir = landing_dir
        self.end_date = end_date
        self.days = days
        self.port = port
        self.log_path = log_path
        self.token = os.environ.get("SHOP_API_TOKEN") or DEMO_TOKEN
        self.process: subprocess.Popen | None = None
        self.url: str | None = None

    def _args(self, land: bool) -> list[str]:
        args = [sys.executable, "-m", "demo_source", "serve", "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--end-date", self.end_date.isoformat(), "--days", str(self.days)]
        if land and self.landing_dir is not None:
            args += ["--landing-dir", str(self.landing_dir)]
        return args

    @property
    def args(self) -> list[str]:
        return self._args(land=True)

    def start(self, land: bool = True) -> str:
        env = {**os.environ, "SHOP_API_TOKEN": self.token}
        stderr = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(self._args(land), stdout=subprocess.PIPE, stderr=stderr, env=env, text=True)
        finally:
            if self.log_path:
                stderr.close()
        line = self.process.stdout.readline().strip()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"the demo source did not start (see {self.log_path}): {line!r}")
        self.url = line.split(" ", 1)[1]
        self.port = int(self.url.rsplit(":", 1)[1])  # a restart keeps the port, also when it was chosen freely
        return self.url

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def exit_status(self) -> int | None:
        """None while it runs, else how it ended (negative: killed by that signal)."""
        return None if self.process is None else self.process.poll()

    def restart(self) -> str:
        """Serve again on the same port, without landing the files again."""
        self.stop()
        return self.start(land=False)

    def export_settings(self) -> None:
        """Point this process's source settings (what the code location reads) at the running demo source."""
        os.environ["SHOP_API_URL"] = self.url
        os.environ["SHOP_API_TOKEN"] = self.token

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> DemoSourceProcess:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def describe_exit(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with status {status}"
