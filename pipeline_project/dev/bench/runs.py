"""One measured run, each in a fresh process with its own state directory. The parent's side: `measure_run`
starts the demo source and the child process (`run_child`, `python -m pipeline_project.dev.bench --task`). The
child's side: `run_once` runs the pipeline through Dagster as `make run` does or bare, `build_history` builds a
generated history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from pipeline_project.dev.bench import measure
from pipeline_project.dev.bench.bare import build_bare, run_bare
from pipeline_project.dev.bench.scenarios import DBT_STEP, END_DATE
from pipeline_project.settings import REPO_ROOT


def _run_dagster(days: int, transform_only: bool = False) -> dict:
    import dagster as dg

    from pipeline_project.dev.run import run_pipeline
    from pipeline_project.transform.dbt_assets import shop_dbt_assets

    selection = [key.to_user_string() for key in shop_dbt_assets.keys] if transform_only else None
    sampler = measure.RssSampler()
    sampler.start()
    with dg.DagsterInstance.get() as instance:
        summary, seconds = run_pipeline(
            instance,
            days,
            END_DATE,
            Path(os.environ["PIPELINE_LOG_DIR"]) / "run.log",
            progress=lambda line: None,
            asset_selection=selection,
        )
        sampler.stop()
        rss_by_stage = sampler.peaks(measure.step_windows(instance, summary.run_id))
    if not summary.ok:
        raise RuntimeError(f"benchmark run failed: {summary.first_error or summary.failed_error_checks}")
    [target] = (REPO_ROOT / "dbt_project" / "target").glob(f"{DBT_STEP}-{summary.run_id[:7]}-*")
    return {
        "run_id": summary.run_id,
        "wall_seconds": round(seconds, 2),
        "dbt": round(summary.step_seconds.get(DBT_STEP, 0.0), 2),
        "checks": round(sum(s for step, s in summary.step_seconds.items() if step.endswith("_contract")), 2),
        "rss_mb_by_stage": rss_by_stage,
        **measure.dbt_artifacts(target),
    }


def _prepare(state: Path) -> dict[str, str]:
    from pipeline_project.dev.environment import ensure_dbt_manifest, prepare_environment

    settings = prepare_environment(isolated_state=state)
    # dbt reuses a parse made in the run's own environment (partial parsing); a parse made for another state
    # directory would be redone inside the timed run.
    ensure_dbt_manifest(force=True)
    return settings


def run_once(state: Path, days: int, mode: str, transform_only: bool = False) -> dict:
    """One run in this process (a fresh subprocess of `main`), against the source in SHOP_API_URL; with
    `transform_only`, the dbt assets and the mart contracts alone (what the raw layer holds already)."""
    settings = _prepare(state)
    cpu_before = measure.cpu_seconds()
    timings = _run_dagster(days, transform_only) if mode == "dagster" else run_bare(days)
    cpu_seconds = round(measure.cpu_seconds() - cpu_before, 2)
    stages = measure.stage_seconds_from_manifests(Path(settings["PIPELINE_LAKE_DIR"]), timings["run_id"])
    source_rows = stages.pop("source_rows")
    measured = sum(stages.values()) + timings["dbt"] + timings["checks"]
    return {
        "mode": mode,
        "days": days,
        "source_rows": source_rows,
        "wall_seconds": timings["wall_seconds"],
        "cpu_seconds": cpu_seconds,
        "stage_seconds": {
            **stages,
            "dbt": timings["dbt"],
            "checks": timings["checks"],
            "orchestration": round(timings["wall_seconds"] - measured, 2),
        },
        "dbt_process_seconds": timings["dbt_process_seconds"],
        "dbt_nodes_seconds": timings["dbt_nodes_seconds"],
        "dbt_node_count": timings["dbt_node_count"],
        "slowest_dbt_nodes": timings["slowest_dbt_nodes"],
        "peak_rss": measure.peak_rss_mb(),
        **({"rss_mb_by_stage": timings["rss_mb_by_stage"]} if "rss_mb_by_stage" in timings else {}),
    }


def build_history(state: Path, days: int, scale: float) -> dict:
    """`days` days of history before END_DATE in the lake (generated), built into the warehouse by one full dbt
    build, with the watermark a Dagster build leaves."""
    from pipeline_project.dev.history import generate_history
    from pipeline_project.transform.project import dbt_project

    settings = _prepare(state)
    started = time.monotonic()
    rows = generate_history(Path(settings["PIPELINE_LAKE_DIR"]), END_DATE - timedelta(days=1), days, scale)
    generated = time.monotonic()
    build_bare([], dbt_project.manifest_path, state / "dbt-target" / "history", full_refresh=True)
    built = time.monotonic()
    return {
        "days": days,
        "rows": rows,
        "generate_seconds": round(generated - started, 1),
        "full_build_seconds": round(built - generated, 1),
        "peak_rss": measure.peak_rss_mb(),
    }


def run_child(task: dict, env: dict[str, str] | None = None) -> dict:
    child = subprocess.run(
        [sys.executable, "-m", "pipeline_project.dev.bench", "--task", json.dumps(task)],
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
    )
    if child.returncode != 0:
        raise RuntimeError(f"benchmark task {task} failed with exit code {child.returncode}:\n{child.stderr[-4000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def measure_run(state: Path, days: int, scale: float, mode: str, transform_only: bool = False) -> dict:
    """A run of `days` days ending at END_DATE against a demo source of `scale` (started here). Modes: dagster,
    bare, dagster_stock_sqlite (Dagster with its own SQLite settings, see `sqlite_instance`)."""
    from pipeline_project.dev.demo_process import DemoSourceProcess
    from pipeline_project.dev.sqlite_instance import STOCK_SETTING

    landing = state / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("SHOP_DEMO_SCALE")
    os.environ["SHOP_DEMO_SCALE"] = str(scale)
    try:
        with DemoSourceProcess(landing, END_DATE, days) as source:
            env = {**os.environ, "SHOP_API_URL": source.url, "SHOP_API_TOKEN": source.token}
            env[STOCK_SETTING] = "1" if mode == "dagster_stock_sqlite" else ""
            task = {
                "task": "run",
                "state": str(state),
                "days": days,
                "mode": "bare" if mode == "bare" else "dagster",
                "transform_only": transform_only,
            }
            return {"scale": scale, **run_child(task, env), "mode": mode}
    finally:
        if previous is None:
            os.environ.pop("SHOP_DEMO_SCALE", None)
        else:
            os.environ["SHOP_DEMO_SCALE"] = previous
