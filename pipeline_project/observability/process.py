"""The exporter as a child process (of `make dev`): started on 127.0.0.1, ready when it says so, stopped
with its parent; its JSON-lines log goes to a file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline_project.ops.wait import stop_process


class ExporterProcess:
    """`python -m pipeline_project.observability.exporter` in the background, bound to loopback unless
    METRICS_HOST says otherwise."""

    def __init__(self, log_path: Path, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.args = [sys.executable, "-m", "pipeline_project.observability.exporter", "--exit-with-parent"]
        if port is not None:
            self.args += ["--port", str(port)]
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self) -> str:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=self.env, text=True
            )
        line = self.process.stdout.readline().strip()
        if not line.startswith("READY "):
            self.stop()
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise RuntimeError(f"the metrics exporter did not start (log: {self.log_path}): {tail[0]}")
        self.url = line.split(" ", 1)[1]
        return self.url

    def stop(self) -> None:
        stop_process(self.process)
        if self.process and self.process.stdout:
            self.process.stdout.close()

    def __enter__(self) -> ExporterProcess:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
