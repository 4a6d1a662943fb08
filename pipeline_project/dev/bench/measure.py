"""The measurement primitives of a benchmark run: peak RSS and CPU time of this process and its children, the
RSS sampled over time and its peak per step window of a Dagster run, the extraction stages from the partition
manifests a run committed, and dbt's own timings from its target directory."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import threading
import time
from datetime import datetime
from pathlib import Path

from pipeline_project.dev.bench.scenarios import DBT_STEP, STAGES


def peak_rss_mb() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"pipeline_process_mb": round(own, 1), "largest_child_mb": round(children, 1)}


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (dbt): the run's work, however loaded the machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def stage_seconds_from_manifests(lake_root: Path, run_id: str) -> dict[str, float]:
    """Extraction stages of the partitions this run committed (older partitions belong to the history)."""
    totals = dict.fromkeys(STAGES, 0.0)
    source_rows = 0
    for manifest_path in (lake_root / "manifests").glob("*/date=*.json"):
        if manifest_path.name.endswith(".rejected.json"):
            continue
        manifest = json.loads(manifest_path.read_text())
        if manifest["run_id"] != run_id:
            continue
        source_rows += manifest["fetched_count"]
        for stage in totals:
            totals[stage] += manifest["stage_seconds"].get(stage, 0.0)
    return {**{k: round(v, 2) for k, v in totals.items()}, "source_rows": source_rows}


def dbt_artifacts(target: Path) -> dict:
    """From one dbt invocation's target directory: its own wall time (first to last log line), the time its
    nodes ran, and its five slowest nodes."""
    timestamps = []
    for line in (target / "dbt.log").read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError, KeyError):
                timestamps.append(datetime.fromisoformat(json.loads(line)["info"]["ts"].replace("Z", "+00:00")))
    run_results = json.loads((target / "run_results.json").read_text())
    nodes = sorted(run_results["results"], key=lambda result: result["execution_time"], reverse=True)
    return {
        "dbt_process_seconds": round((timestamps[-1] - timestamps[0]).total_seconds(), 2) if timestamps else None,
        "dbt_nodes_seconds": round(run_results["elapsed_time"], 2),
        "dbt_node_count": len(nodes),
        "slowest_dbt_nodes": [
            {"node": result["unique_id"].split(".", 2)[-1].split(".")[0], "seconds": round(result["execution_time"], 2)}
            for result in nodes[:5]
        ],
    }


class RssSampler(threading.Thread):
    """This process's resident memory every 50 ms, to tell which stage of a run its peak comes from."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.samples: list[tuple[float, float]] = []
        self._stopping = threading.Event()
        self._page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20

    def run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(OSError, ValueError):
                resident = int(Path("/proc/self/statm").read_text().split()[1])
                self.samples.append((time.time(), resident * self._page_mb))
            self._stopping.wait(0.05)

    def stop(self) -> None:
        self._stopping.set()
        self.join()

    def peaks(self, windows: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
        """Peak RSS (MB) within each named set of time windows, and before the first one."""
        first = min((start for spans in windows.values() for start, _ in spans), default=float("inf"))
        out = {"before_the_steps": max((mb for t, mb in self.samples if t < first), default=0.0)}
        for name, spans in windows.items():
            out[name] = max((mb for t, mb in self.samples if any(a <= t <= b for a, b in spans)), default=0.0)
        return {name: round(mb, 1) for name, mb in out.items()}


def step_windows(instance, run_id: str) -> dict[str, list[tuple[float, float]]]:
    from dagster import DagsterEventType

    started: dict[str, float] = {}
    windows: dict[str, list[tuple[float, float]]] = {"ingestion": [], "dbt": [], "checks": []}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            started[event.step_key] = record.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            kind = "dbt" if event.step_key == DBT_STEP else "checks" if "contract" in event.step_key else "ingestion"
            windows[kind].append((started.get(event.step_key, record.timestamp), record.timestamp))
    return windows
