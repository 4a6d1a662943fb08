"""A throwaway Prometheus on loopback that scrapes the exporter with the repository's rules: for looking
at the metrics on a laptop (`make prometheus`), for the end-to-end test, and for the picture in docs/observability.md.

    python -m pipeline_project.observability.prometheus_server   # http://127.0.0.1:9090, data in .state/prometheus

It runs Debian's `prometheus` binary (or PROMETHEUS_BINARY) with `prometheus/prometheus.yml` adapted: the
target is 127.0.0.1:`METRICS_PORT`, the rules are `prometheus/rules.yml`, the console templates are
`prometheus/consoles/` (the health view, `/consoles/pipeline.html`). Production Prometheus servers use
`prometheus.yml` and `rules.yml` as they are.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import yaml

from pipeline_project.ops.wait import WaitTimeout, stop_process, wait_until

PROMETHEUS_DIR = Path(__file__).resolve().parent / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
CONSOLES = PROMETHEUS_DIR / "consoles"


def prometheus_binary() -> str | None:
    return os.environ.get("PROMETHEUS_BINARY") or shutil.which("prometheus")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape_config(target: str, interval: str) -> dict:
    """The repository's prometheus.yml with this target and interval, and absolute rule paths."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"].update({"scrape_interval": interval, "evaluation_interval": interval})
    config["rule_files"] = [str(RULES)]
    [job] = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    job.pop("scrape_interval", None)
    job.pop("scrape_timeout", None)  # at most the interval: Prometheus' default
    return config


class PrometheusServer:
    """`prometheus` on 127.0.0.1:`port` (a free one by default) with its data in `workdir`."""

    def __init__(self, workdir: Path, target: str, interval: str = "1s", port: int | None = None) -> None:
        binary = prometheus_binary()
        if binary is None:
            raise FileNotFoundError("prometheus is not installed (Debian: apt-get install prometheus)")
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        workdir.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump(scrape_config(target, interval)))
        self.args = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--web.console.templates={CONSOLES}",
            f"--web.console.libraries={CONSOLES}",
            "--storage.tsdb.retention.time=2d",
        ]
        self.log_path = workdir / "prometheus.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> str:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            wait_until(self._ready, timeout, "prometheus ready", interval=0.2)
        except WaitTimeout as timed_out:
            self.stop()
            raise RuntimeError(f"{timed_out}: {self.log_path.read_text()[-2000:]}") from None
        return self.url

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def api(self, path: str, **params) -> dict:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def alerts(self) -> list[dict]:
        return self.api("alerts")["alerts"]

    def stop(self) -> None:
        stop_process(self.process, timeout=20)

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def main() -> int:
    state = Path(os.environ.get("PIPELINE_STATE_DIR") or ".state")
    port = os.environ.get("METRICS_PORT") or "9108"
    server = PrometheusServer(state / "prometheus", f"127.0.0.1:{port}", interval="15s", port=9090)
    server.start()
    print(f"Prometheus on {server.url} scraping 127.0.0.1:{port}; health view {server.url}/consoles/pipeline.html")
    print(f"alerts: {server.url}/classic/alerts (Ctrl-C to stop)", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
