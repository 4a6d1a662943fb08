"""The Prometheus exporter: one process serving `/metrics` on 127.0.0.1:`METRICS_PORT` (default 9108).

    python -m pipeline_project.observability.exporter            # serve (make dev starts it)
    python -m pipeline_project.observability.exporter --once     # print one scrape and exit

It reads the Dagster instance (`DAGSTER_HOME`), the load ledger (`PIPELINE_LAKE_DIR`) and the alert outbox
and heartbeat (`ALERT_DIR`), and writes nothing. A scrape is cheap with a long history: every source is
read incrementally or in a few aggregate queries (see each module), and the whole result is cached for
`METRICS_CACHE_SECONDS` (default 10), so scrapes from several Prometheus servers, or a dashboard
refreshing, cost one collection per interval. Concurrent scrapes wait for the one collection under way.

A part that fails (the instance's database is locked, a file is unreadable) does not fail the scrape:
the other parts are still exported and `pipeline_exporter_collector_up{collector=...}` is 0 for that
part, with the (scrubbed) error logged. How long each part took is exported too.

Settings (environment, each with its default applied here): `METRICS_HOST` (127.0.0.1), `METRICS_PORT`
(9108), `METRICS_CACHE_SECONDS` (10), `METRICS_PARTITION_DAYS` (7: recent partitions per table with
their own series), `METRICS_RUN_LOOKBACK_HOURS` (24: finished runs counted when the exporter starts).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline_project.observability import freshness
from pipeline_project.observability.checks import CheckTracker
from pipeline_project.observability.ledger import LedgerReader
from pipeline_project.observability.logging import configure_logging
from pipeline_project.observability.monitoring import MonitoringReader
from pipeline_project.observability.runs import RunTracker
from pipeline_project.secrets import redact

log = logging.getLogger("pipeline_project.observability.exporter")  # also when run as __main__
DEFAULT_PORT = 9108


class SettingError(ValueError):
    """A setting has a value the exporter cannot use; the message names the setting."""


def _number(name: str, default: float, minimum: float, kind: type = float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingError(f"{name} must be {'a whole number' if kind is int else 'a number'}, got {raw!r}") from None
    if value < minimum:
        raise SettingError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


@dataclass(frozen=True)
class ExporterSettings:
    dagster_home: Path
    lake_dir: Path
    alert_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    cache_seconds: float = 10.0
    partition_days: int = 7
    run_lookback_hours: float = 24.0

    @classmethod
    def from_env(cls) -> ExporterSettings:
        state = Path(os.environ.get("PIPELINE_STATE_DIR") or ".state")
        port = int(_number("METRICS_PORT", DEFAULT_PORT, 0, int))
        if port > 65535:
            raise SettingError(f"METRICS_PORT must be a TCP port (0-65535), got {port}")
        return cls(
            dagster_home=Path(os.environ.get("DAGSTER_HOME") or state / "dagster_home"),
            lake_dir=Path(os.environ.get("PIPELINE_LAKE_DIR") or state / "lake"),
            alert_dir=Path(os.environ.get("ALERT_DIR") or state / "alerts"),
            host=os.environ.get("METRICS_HOST") or "127.0.0.1",
            port=port,
            cache_seconds=_number("METRICS_CACHE_SECONDS", 10.0, 0),
            partition_days=int(_number("METRICS_PARTITION_DAYS", 7, 1, int)),
            run_lookback_hours=_number("METRICS_RUN_LOOKBACK_HOURS", 24.0, 0),
        )


class PipelineCollector(Collector):
    """Everything the exporter exports, collected at most once per `cache_seconds`."""

    def __init__(self, settings: ExporterSettings, instance_factory: Callable[[], object]) -> None:
        self.settings = settings
        self._instance_factory = instance_factory
        self._instance = None
        self.runs = RunTracker(lookback_seconds=settings.run_lookback_hours * 3600)
        self.checks = CheckTracker()
        self.ledger = LedgerReader(settings.lake_dir, settings.partition_days)
        self.monitoring = MonitoringReader(settings.alert_dir)
        self._lock = threading.Lock()
        self._cached: list = []
        self._cached_at: float | None = None
        self._errors: Counter[str] = Counter()
        self._last_error: dict[str, str] = {}  # logged once per distinct error, not on every scrape
        self.last_durations: dict[str, float] = {}

    def describe(self) -> list:
        return []  # no collection at registration

    @property
    def instance(self):
        """The Dagster instance, opened at the first collection that needs it (retried while it fails, so
        the exporter may start before the instance exists)."""
        if self._instance is None:
            self._instance = self._instance_factory()
        return self._instance

    def close(self) -> None:
        if self._instance is not None:
            self._instance.dispose()

    def _parts(self) -> list[tuple[str, Callable[[], list]]]:
        def runs() -> list:
            self.checks.observe_runs(self.instance, self.runs.update(self.instance))
            return self.runs.families()

        def checks() -> list:
            self.checks.read_runs(self.instance)
            return self.checks.families(self.instance)

        return [
            ("runs", runs),
            ("checks", checks),
            ("freshness", lambda: freshness.families(self.instance)),
            ("ledger", self.ledger.families),
            ("monitoring", self.monitoring.families),
        ]

    def _collect_all(self) -> list:
        families: list = []
        up = GaugeMetricFamily(
            "pipeline_exporter_collector_up", "1 when the part was read in the last collection", labels=["collector"]
        )
        seconds = GaugeMetricFamily(
            "pipeline_exporter_collector_duration_seconds",
            "How long the part took in the last collection",
            labels=["collector"],
        )
        errors = CounterMetricFamily(
            "pipeline_exporter_collector_errors", "Collections in which the part failed", labels=["collector"]
        )
        for name, part in self._parts():
            started = time.perf_counter()
            try:
                families.extend(part())
                ok = True
                if self._last_error.pop(name, None) is not None:
                    log.info("collector %s reads again", name)
            except Exception as error:  # one unreadable source must not hide the others
                ok = False
                self._errors[name] += 1
                message = redact(f"{type(error).__name__}: {error}")
                if self._last_error.get(name) != message:
                    log.warning("collector %s failed: %s", name, message)
                    self._last_error[name] = message
            self.last_durations[name] = time.perf_counter() - started
            up.add_metric([name], 1.0 if ok else 0.0)
            seconds.add_metric([name], self.last_durations[name])
            errors.add_metric([name], self._errors[name])
        return [*families, up, seconds, errors]

    def collect(self):
        with self._lock:
            now = time.monotonic()
            if self._cached_at is None or now - self._cached_at >= self.settings.cache_seconds:
                self._cached = self._collect_all()
                self._cached_at = time.monotonic()
            return list(self._cached)


def build_registry(
    settings: ExporterSettings, instance_factory: Callable[[], object] | None = None
) -> tuple[CollectorRegistry, PipelineCollector]:
    registry = CollectorRegistry(auto_describe=False)
    collector = PipelineCollector(settings, instance_factory or (lambda: open_instance(settings)))
    registry.register(collector)
    return registry, collector


def open_instance(settings: ExporterSettings):
    """The instance at DAGSTER_HOME, once its storage exists: opening SQLite storage that does not exist yet
    creates it, and two processes creating it at once (the exporter and `dagster dev` starting together)
    can leave it with two schema heads; the exporter reads, so it waits for `make run` or `make dev`."""
    import dagster as dg

    home = settings.dagster_home.resolve()
    if not home.is_dir():
        raise FileNotFoundError(f"DAGSTER_HOME {home} does not exist yet (make run or make dev creates it)")
    config_path = home / "dagster.yaml"
    config = (yaml.safe_load(config_path.read_text()) if config_path.exists() else None) or {}
    external = any(key in config for key in ("storage", "run_storage", "event_log_storage"))
    if not external and not (home / "history" / "runs.db").exists():
        raise FileNotFoundError(f"the Dagster instance at {home} has no storage yet (make run or make dev creates it)")
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="print one scrape to stdout and exit")
    parser.add_argument("--port", type=int, help="overrides METRICS_PORT (0: any free port)")
    parser.add_argument("--exit-with-parent", action="store_true", help="stop when the starting process is gone")
    args = parser.parse_args(argv)
    configure_logging("exporter")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the instance's schema check at start-up
    try:
        settings = ExporterSettings.from_env()
    except SettingError as error:
        log.error("%s", error)
        return 2
    if args.port is not None:
        settings = ExporterSettings(**{**settings.__dict__, "port": args.port})
    registry, collector = build_registry(settings)
    if args.once:
        try:
            sys.stdout.write(generate_latest(registry).decode())
        finally:
            collector.close()
        return 0
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server, thread = start_http_server(settings.port, addr=settings.host, registry=registry)
    except OSError as error:
        log.error("cannot listen on %s:%s (METRICS_HOST/METRICS_PORT): %s", settings.host, settings.port, error)
        return 2
    url = f"http://{settings.host}:{server.server_port}/metrics"
    log.info("serving metrics on %s", url, extra={"url": url})
    print(f"READY {url}", flush=True)
    parent = os.getppid()
    try:
        # A child of `make dev` must not outlive it holding the port, however its parent ended.
        while not stop.wait(1.0):
            if args.exit_with_parent and os.getppid() != parent:
                log.info("the parent process %s is gone; stopping", parent)
                break
    finally:
        server.shutdown()
        server.server_close()
        collector.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
