"""A long history for the benchmark, generated cheaply: the demo world's records written straight to the lake.

Going through the pipeline (HTTP pages, landing files, contract checks) costs about two seconds per day at
scale 1; a year of it would take the benchmark a quarter of an hour. The raw layer it produces is what
matters to the transformations, and that is the same records of the same deterministic world: here each
day's records are taken from `ShopWorld` and committed with the lake's own partition writer (data file,
quarantine file and manifest, as a run commits them), by a few worker processes. Only the lineage columns
(`_batch_id`, `_loaded_at`) and the manifests' timings differ from a history the pipeline loaded.
"""

from __future__ import annotations

import multiprocessing
from datetime import date, datetime, time, timedelta
from pathlib import Path

import polars as pl

RUN_ID = "generated-history"


def _day_tables(world, day: date) -> dict[str, list]:
    start, end = datetime.combine(day, time.min), datetime.combine(day + timedelta(days=1), time.min)
    return {
        "customers": world.customers_updated_between(start, end),
        "products": world.products_updated_between(start, end),
        "orders": world.orders_on(day),
        "order_items": world.order_items_on(day),
        "payments": world.payments_on(day),
        "web_events": world.web_events_on(day),
    }


def _write_days(args: tuple[str, float, list[date]]) -> int:
    from demo_source import ShopWorld
    from pipeline_project.ingest.extraction import ExtractStats
    from pipeline_project.lake.raw_store import Lake
    from pipeline_project.quality.contracts import RAW_CONTRACTS

    lake_root, scale, days = args
    lake, world, written = Lake(lake_root), ShopWorld(scale=scale), 0
    for day in days:
        for table, records in _day_tables(world, day).items():
            contract = RAW_CONTRACTS[table]
            schema = {name: dtype for name, dtype in contract.arrival_schema.items()}
            schema.update({name: pl.Datetime("us") for name in contract.timestamp_columns})
            frame = pl.DataFrame(records, schema=schema, orient="row" if not records else None)
            with lake.writer(contract, day, RUN_ID) as writer:
                writer.append(frame, pl.DataFrame())
                stats = ExtractStats(source_reported_count=frame.height, fetched_count=frame.height)
                manifest, _ = writer.stage(stats, {"extract": 0.0, "validate": 0.0}, {})
                writer.commit(manifest)
            written += frame.height
    return written


def generate_history(lake_root: Path, last_day: date, days: int, scale: float, workers: int = 2) -> int:
    """Commit `days` days of the demo world ending at `last_day` to the lake; return the rows written."""
    all_days = [last_day - timedelta(days=offset) for offset in range(days)]
    chunks = [(str(lake_root), scale, all_days[worker::workers]) for worker in range(workers)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return sum(pool.map(_write_days, chunks))
