"""The four parts of `make bench`, each a set of runs interleaved in rounds so that a burst of load hits every
side alike: one day after history, the fixed cost through Dagster and bare, memory at 1x and 10x, and extraction
against its stage limit."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pipeline_project.dev.bench.report import brief, say
from pipeline_project.dev.bench.runs import measure_run, run_child
from pipeline_project.dev.bench.scenarios import (
    END_DATE,
    EXTRACTION_SCALE,
    FIXED_COST_SCALE,
    HISTORIES,
    MEMORY_SCENARIOS,
    STAGES,
)


def bench_history(workdir: Path, rounds: int) -> dict:
    states = {name: workdir / name for name in HISTORIES}
    histories = {}
    for name, days in HISTORIES.items():
        states[name].mkdir()
        if days:
            say(f"==> {name}: generating {days} days of history at scale 1 and building it")
            histories[name] = run_child({"task": "history", "state": str(states[name]), "days": days, "scale": 1.0})
            say(f"    {histories[name]}")
    runs: dict[str, list[dict]] = {name: [] for name in HISTORIES}
    for round_number in range(1, rounds + 1):
        for name in HISTORIES:
            run = measure_run(states[name], 1, 1.0, "dagster")
            runs[name].append(run)
            say(f"==> round {round_number}: one day after {name}: {brief(run)}")
    return {
        "histories": histories,
        "runs": runs,
        "fastest": {name: _fastest(runs[name]) for name in HISTORIES},
        "least_cpu_seconds": {name: _least_cpu(runs[name]) for name in HISTORIES},
    }


def bench_fixed_cost(workdir: Path, rounds: int) -> dict:
    runs: dict[str, list[dict]] = {"dagster": [], "bare": [], "dagster_stock_sqlite": []}
    for round_number in range(1, rounds + 1):
        for mode in runs:
            state = workdir / f"fixed-{mode}-{round_number}"
            state.mkdir()
            run = measure_run(state, 1, FIXED_COST_SCALE, mode)
            runs[mode].append(run)
            say(f"==> round {round_number}: fixed cost, {mode}: {brief(run)}")
    return {
        "runs": runs,
        "fastest": {mode: _fastest(runs[mode]) for mode in runs},
        "least_cpu_seconds": {mode: _least_cpu(runs[mode]) for mode in runs},
    }


def bench_memory(workdir: Path) -> dict:
    """7 days at 1x and at 10x, each followed by the transformation alone over the same days in a fresh
    process: ingestion holds the pipeline process's peak, the second run shows what dbt and the checks add."""
    results = {}
    for name, scale in MEMORY_SCENARIOS.items():
        state = workdir / name
        state.mkdir()
        results[name] = measure_run(state, 7, scale, "dagster")
        say(f"==> {name}: {brief(results[name])}")
        results[f"{name}_transform_only"] = measure_run(state, 7, scale, "dagster", transform_only=True)
        say(f"==> {name}, transformation alone: {brief(results[f'{name}_transform_only'])}")
    return results


def bench_extraction(workdir: Path, rounds: int) -> dict:
    """Extraction at 10x against its stage limit, in one process: one day of every table loaded as the assets
    load it (`full`), and the same pages and files only fetched and parsed, with no validation (`limit`).
    The demo source runs in this process and is warmed first, so neither side pays for building its listings."""
    import orjson

    from demo_source import DemoShopServer, ShopWorld, write_landing_files
    from pipeline_project.ingest.api_assets import load_api_partition
    from pipeline_project.ingest.extraction import ExtractStats
    from pipeline_project.ingest.landing_assets import load_landing_partition
    from pipeline_project.ingest.landing_zone import DEFAULT_MAX_FILE_BYTES
    from pipeline_project.ingest.listing_filters import day_filter
    from pipeline_project.ingest.sources import ShopApiClient
    from pipeline_project.lake.raw_store import Lake
    from pipeline_project.quality.contracts import API_TABLES, LANDING_TABLES, RAW_CONTRACTS

    token, day = "bench-token", END_DATE
    world = ShopWorld(scale=EXTRACTION_SCALE)
    files = write_landing_files(workdir / "extraction-files" / "web_events", day, world)

    def limit(client: ShopApiClient) -> int:
        rows = 0
        for table in API_TABLES:
            contract = RAW_CONTRACTS[table]
            for page in client._pages(contract, day_filter(table, day, client.dimensions), ExtractStats(), 1000):
                rows += len(page["data"])
        for path in files:
            with path.open("rb") as lines:
                rows += sum(1 for line in lines if orjson.loads(line))
        return rows

    def full(client: ShopApiClient, attempt: str) -> int:
        lake, landing = Lake(workdir / f"extraction-lake-{attempt}"), workdir / f"extraction-landing-{attempt}"
        rows = 0
        for table in API_TABLES:
            rows += load_api_partition(lake, client, RAW_CONTRACTS[table], day, attempt).manifest.fetched_count
        for table in LANDING_TABLES:
            target = landing / table / "incoming" / day.isoformat()
            target.mkdir(parents=True)
            for path in files:
                shutil.copy(path, target / path.name)
            manifest, _ = load_landing_partition(
                lake, landing, RAW_CONTRACTS[table], day, attempt, DEFAULT_MAX_FILE_BYTES
            )
            rows += manifest.fetched_count
        return rows

    measured: dict[str, list[float]] = {"limit": [], "full": []}
    rows: dict[str, int] = {}
    stages: dict[str, float] = {}
    with DemoShopServer(world, token=token) as server, ShopApiClient(server.url, token) as client:
        limit(client)  # warm the source's listings
        for round_number in range(1, rounds + 1):
            for side in measured:
                started = time.perf_counter()
                rows[side] = limit(client) if side == "limit" else full(client, f"round-{round_number}")
                measured[side].append(round(time.perf_counter() - started, 3))
            lake = Lake(workdir / f"extraction-lake-round-{round_number}")
            manifests = [lake.read_manifest(table, day) for table in (*API_TABLES, *LANDING_TABLES)]
            split = {stage: round(sum(m.stage_seconds.get(stage, 0.0) for m in manifests), 2) for stage in STAGES}
            if not stages or sum(split.values()) < sum(stages.values()):
                stages = split
            say(f"==> round {round_number}: extraction at {EXTRACTION_SCALE:g}x: {measured}")
    return {
        "scale": EXTRACTION_SCALE,
        "rows": rows,
        "seconds": measured,
        "rows_per_second": {side: round(rows[side] / min(seconds)) for side, seconds in measured.items()},
        "full_stage_seconds": stages,
    }


def _fastest(runs: list[dict]) -> dict:
    return min(runs, key=lambda run: run["wall_seconds"])


def _least_cpu(runs: list[dict]) -> float:
    return min(run["cpu_seconds"] for run in runs)
