"""`make bench`: end-to-end throughput, memory and where the time goes, written to bench/results.json.

Each scenario runs in a fresh process (so peak RSS is that scenario's own) against its own state
directory and its own demo source process:
  - 7 days at scale 1 and at scale 10, through Dagster exactly as `make run` does;
  - the fixed cost: one nearly empty day, through Dagster and with the same stages run bare (the
    ingestion functions called directly, the dbt CLI, the contract checks) to show what Dagster adds.
Timings are wall-clock on whatever machine runs it; the README table quotes one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from pipeline_project.local.environment import REPO_ROOT

END_DATE = date(2026, 3, 21)
RESULTS = REPO_ROOT / "bench" / "results.json"
README = REPO_ROOT / "README.md"
TABLE_START, TABLE_END = "<!-- bench:start -->", "<!-- bench:end -->"
SCENARIOS = {
    "7d_scale1": {"days": 7, "scale": 1.0, "mode": "dagster"},
    "7d_scale10": {"days": 7, "scale": 10.0, "mode": "dagster"},
    "fixed_cost_dagster": {"days": 1, "scale": 0.001, "mode": "dagster"},
    "fixed_cost_bare": {"days": 1, "scale": 0.001, "mode": "bare"},
}


def _peak_rss_mb() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"pipeline_process_mb": round(own, 1), "largest_child_mb": round(children, 1)}


def _stage_seconds_from_manifests(lake_root: Path) -> dict[str, float]:
    totals = {"extract": 0.0, "validate": 0.0, "dedupe": 0.0, "write_raw": 0.0}
    source_rows = 0
    for manifest_path in (lake_root / "manifests").glob("*/date=*.json"):
        if manifest_path.name.endswith(".rejected.json"):
            continue
        manifest = json.loads(manifest_path.read_text())
        source_rows += manifest["fetched_count"]
        for stage in totals:
            totals[stage] += manifest["stage_seconds"].get(stage, 0.0)
    return {**{k: round(v, 2) for k, v in totals.items()}, "source_rows": source_rows}


def _run_dagster(days: int) -> dict:
    import dagster as dg

    from pipeline_project.local.run import run_pipeline

    with dg.instance_for_test() as instance:
        summary, seconds = run_pipeline(
            instance, days, END_DATE, Path(os.environ["PIPELINE_LOG_DIR"]) / "run.log", progress=lambda line: None
        )
    if not summary.ok:
        raise RuntimeError(f"benchmark run failed: {summary.first_error or summary.failed_error_checks}")
    dbt_seconds = summary.step_seconds.get("shop_dbt_assets", 0.0)
    check_seconds = sum(s for step, s in summary.step_seconds.items() if step.endswith("_contract"))
    return {"wall_seconds": round(seconds, 2), "dbt": round(dbt_seconds, 2), "checks": round(check_seconds, 2)}


def _run_bare(days: int) -> dict:
    """The same stages without Dagster: ingestion functions, the dbt CLI, the contract checks."""
    from pipeline_project import warehouse
    from pipeline_project.checks import count_failures
    from pipeline_project.contracts import MART_CONTRACTS, RAW_CONTRACTS, failure_cases
    from pipeline_project.ingestion import API_TABLES, LANDING_TABLES, load_api_partition, load_landing_partition
    from pipeline_project.landing import DEFAULT_MAX_FILE_BYTES
    from pipeline_project.raw_store import Lake
    from pipeline_project.sources import ShopApiClient

    started = time.monotonic()
    lake = Lake(os.environ["PIPELINE_LAKE_DIR"])
    landing = Path(os.environ["LANDING_DIR"])
    day_list = [END_DATE - timedelta(days=offset) for offset in range(days)]
    with ShopApiClient(os.environ["SHOP_API_URL"], os.environ["SHOP_API_TOKEN"]) as client:
        for day in day_list:
            for table in API_TABLES:
                contract = RAW_CONTRACTS[table]
                load_api_partition(lake, client, contract, day, "bare")
            for table in LANDING_TABLES:
                load_landing_partition(lake, landing, RAW_CONTRACTS[table], day, "bare", DEFAULT_MAX_FILE_BYTES)
    dbt_started = time.monotonic()
    subprocess.run(
        [str(Path(sys.executable).parent / "dbt"), "build", "--quiet", "--profiles-dir", "."],
        cwd=REPO_ROOT / "dbt_project",
        check=True,
    )
    checks_started = time.monotonic()
    with warehouse.connect(os.environ["PIPELINE_WAREHOUSE_PATH"], read_only=True) as connection:
        for contract in MART_CONTRACTS.values():
            frame = connection.sql(f"select * from {warehouse.mart_table(contract.mart)}").pl()
            if count_failures(contract, failure_cases(contract.model, frame))["ERROR"]:
                raise RuntimeError(f"contract of {contract.mart} failed in the bare run")
    finished = time.monotonic()
    return {
        "wall_seconds": round(finished - started, 2),
        "dbt": round(checks_started - dbt_started, 2),
        "checks": round(finished - checks_started, 2),
    }


def run_scenario(name: str) -> dict:
    """Run one scenario in this process (called in a fresh subprocess by `main`)."""
    scenario = SCENARIOS[name]
    os.environ["SHOP_DEMO_SCALE"] = str(scenario["scale"])
    from pipeline_project.local.demo_process import DemoSourceProcess
    from pipeline_project.local.environment import ensure_dbt_manifest, prepare_environment

    settings = prepare_environment(isolated_state=Path(os.environ["PIPELINE_STATE_DIR"]))
    ensure_dbt_manifest(force=True)
    landing_started = time.monotonic()
    with DemoSourceProcess(Path(settings["LANDING_DIR"]), END_DATE, scenario["days"]) as source:
        landing_seconds = time.monotonic() - landing_started
        source.export_settings()
        timings = _run_dagster(scenario["days"]) if scenario["mode"] == "dagster" else _run_bare(scenario["days"])
    stages = _stage_seconds_from_manifests(Path(settings["PIPELINE_LAKE_DIR"]))
    source_rows = stages.pop("source_rows")
    measured = sum(stages.values()) + timings["dbt"] + timings["checks"]
    return {
        **scenario,
        "source_rows": source_rows,
        "wall_seconds": timings["wall_seconds"],
        "source_rows_per_second": round(source_rows / timings["wall_seconds"]),
        "source_rows_per_minute": round(60 * source_rows / timings["wall_seconds"]),
        "stage_seconds": {
            **stages,
            "dbt": timings["dbt"],
            "checks": timings["checks"],
            "orchestration_overhead": round(timings["wall_seconds"] - measured, 2),
        },
        "landing_files_written_seconds": round(landing_seconds, 2),
        "peak_rss": _peak_rss_mb(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), help="run one scenario here and print JSON")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=None)
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(run_scenario(args.scenario)))
        return 0

    results = {}
    for name in args.only or SCENARIOS:
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as state:
            print(f"==> {name}", flush=True)
            env = {**os.environ, "PIPELINE_STATE_DIR": state}
            output = subprocess.run(
                [sys.executable, "-m", "pipeline_project.local.bench", "--scenario", name],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results[name] = json.loads(output.strip().splitlines()[-1])
            print(json.dumps(results[name], indent=2), flush=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "scenarios": results,
    }
    if "fixed_cost_dagster" in results and "fixed_cost_bare" in results:
        dagster_wall = results["fixed_cost_dagster"]["wall_seconds"]
        bare_wall = results["fixed_cost_bare"]["wall_seconds"]
        report["fixed_cost"] = {
            "dagster_seconds": dagster_wall,
            "bare_seconds": bare_wall,
            "dagster_share": round((dagster_wall - bare_wall) / dagster_wall, 3),
        }
    if "7d_scale1" in results and "7d_scale10" in results:
        one, ten = (results[name]["peak_rss"] for name in ("7d_scale1", "7d_scale10"))
        report["memory"] = {
            "pipeline_process_1x_mb": one["pipeline_process_mb"],
            "pipeline_process_10x_mb": ten["pipeline_process_mb"],
            "pipeline_process_growth_10x_over_1x": round(
                ten["pipeline_process_mb"] / one["pipeline_process_mb"] - 1, 3
            ),
            "dbt_duckdb_1x_mb": one["largest_child_mb"],
            "dbt_duckdb_10x_mb": ten["largest_child_mb"],
        }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")
    if set(SCENARIOS) <= set(results):
        readme = README.read_text()
        before, rest = readme.split(TABLE_START, 1)
        after = rest.split(TABLE_END, 1)[1]
        README.write_text(f"{before}{TABLE_START}\n{format_table(report)}\n{TABLE_END}{after}")
        print("updated the table in README.md")
    return 0


def format_table(report: dict) -> str:
    """The README's summary of a full benchmark report."""
    scenarios = report["scenarios"]
    lines = [
        "| scenario | source rows | wall s | rows/min | extract | validate | write raw | dbt | checks "
        "| orchestration | peak RSS pipeline / dbt MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in scenarios.items():
        stages = result["stage_seconds"]
        rss = result["peak_rss"]
        lines.append(
            f"| {name} | {result['source_rows']:,} | {result['wall_seconds']} | {result['source_rows_per_minute']:,} "
            f"| {stages['extract']} | {stages['validate']} | {stages['write_raw']} | {stages['dbt']} "
            f"| {stages['checks']} | {stages['orchestration_overhead']} "
            f"| {rss['pipeline_process_mb']:.0f} / {rss['largest_child_mb']:.0f} |"
        )
    fixed = report["fixed_cost"]
    memory = report["memory"]
    lines += [
        "",
        f"Fixed cost of a run (one nearly empty day, every stage): {fixed['dagster_seconds']} s through Dagster, "
        f"{fixed['bare_seconds']} s bare; Dagster's share {fixed['dagster_share']:.0%}.",
        f"Peak RSS of the pipeline process, 1x -> 10x: {memory['pipeline_process_1x_mb']:.0f} -> "
        f"{memory['pipeline_process_10x_mb']:.0f} MB ({memory['pipeline_process_growth_10x_over_1x']:+.0%}); "
        f"dbt's DuckDB process: {memory['dbt_duckdb_1x_mb']:.0f} -> {memory['dbt_duckdb_10x_mb']:.0f} MB "
        f"(memory_limit 1GB). Measured {report['measured_at']} on {report['machine']['cpus']} CPUs.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
