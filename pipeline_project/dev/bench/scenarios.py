"""What `make bench` measures: the day, the histories and scales of each part, the stages it splits a run
into, and the budget the ratios are held against."""

from __future__ import annotations

from datetime import date

END_DATE = date(2026, 3, 21)
HISTORIES = {"empty": 0, "history_90d": 90, "history_365d": 365}
FIXED_COST_SCALE = 0.001
MEMORY_SCENARIOS = {"7d_scale1": 1.0, "7d_scale10": 10.0}
EXTRACTION_SCALE = 10.0
PARTS = ("history", "fixed_cost", "memory", "extraction")
STAGES = ("extract", "validate", "dedupe", "write_raw")
BUDGET = {
    "one_day_after_history_max_ratio": 1.2,
    "dagster_share_max": 0.25,
    "pipeline_rss_growth_10x_max": 0.20,
    "dbt_duckdb_10x_max_mb": 1024,
    "extraction_over_stage_limit_min": 0.8,
}
DBT_STEP = "shop_dbt_assets"
