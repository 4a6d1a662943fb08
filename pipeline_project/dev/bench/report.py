"""What `make bench` tells and writes: a line per measured run, the ratios the budget is held against,
`bench/results.json`, and the table between the `bench` markers in docs/performance.md."""

from __future__ import annotations

import json

from pipeline_project.dev.bench.scenarios import MEMORY_SCENARIOS
from pipeline_project.settings import REPO_ROOT

RESULTS = REPO_ROOT / "bench" / "results.json"
PERFORMANCE_DOC = REPO_ROOT / "docs" / "performance.md"
TABLE_START, TABLE_END = "<!-- bench:start -->", "<!-- bench:end -->"


def say(text: str) -> None:
    print(text, flush=True)


def brief(run: dict) -> str:
    stages = run["stage_seconds"]
    return (
        f"{run['wall_seconds']:.2f} s (dbt {stages['dbt']:.2f}, orchestration {stages['orchestration']:.2f}, "
        f"RSS {run['peak_rss']['pipeline_process_mb']:.0f} / {run['peak_rss']['largest_child_mb']:.0f} MB)"
    )


def write_results(report: dict) -> None:
    """The ratios into the report, the report into bench/results.json and, once the report holds every part the
    table shows, the table into docs/performance.md."""
    report["ratios"] = ratios(report)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    say(f"wrote {RESULTS.relative_to(REPO_ROOT)}")
    say(json.dumps(report["ratios"], indent=2))
    if {"one_day_after_history", "fixed_cost", "memory"} <= report.keys():
        document = PERFORMANCE_DOC.read_text()
        before, rest = document.split(TABLE_START, 1)
        after = rest.split(TABLE_END, 1)[1]
        PERFORMANCE_DOC.write_text(f"{before}{TABLE_START}\n{format_table(report)}\n{TABLE_END}{after}")
        say(f"updated the table in {PERFORMANCE_DOC.relative_to(REPO_ROOT)}")


def ratios(report: dict) -> dict:
    out: dict = {}
    if "one_day_after_history" in report:
        fastest = report["one_day_after_history"]["fastest"]
        empty = fastest["empty"]["wall_seconds"]
        cpu = report["one_day_after_history"]["least_cpu_seconds"]
        for name in ("history_90d", "history_365d"):
            out[f"one_day_after_{name}_over_empty"] = round(fastest[name]["wall_seconds"] / empty, 3)
            out[f"one_day_after_{name}_over_empty_cpu"] = round(cpu[name] / cpu["empty"], 3)
    if "fixed_cost" in report:
        dagster = report["fixed_cost"]["fastest"]["dagster"]["wall_seconds"]
        bare = report["fixed_cost"]["fastest"]["bare"]["wall_seconds"]
        out["dagster_share_of_fixed_cost"] = round((dagster - bare) / dagster, 3)
        stock = report["fixed_cost"]["fastest"]["dagster_stock_sqlite"]["wall_seconds"]
        out["dagster_share_of_fixed_cost_stock_sqlite"] = round((stock - bare) / stock, 3)
        cpu = report["fixed_cost"]["least_cpu_seconds"]
        out["dagster_share_of_fixed_cost_cpu"] = round((cpu["dagster"] - cpu["bare"]) / cpu["dagster"], 3)
    if "memory" in report:
        one, ten = (report["memory"][name]["peak_rss"] for name in MEMORY_SCENARIOS)
        out["pipeline_rss_growth_10x_over_1x"] = round(ten["pipeline_process_mb"] / one["pipeline_process_mb"] - 1, 3)
        one_t, ten_t = (report["memory"][f"{name}_transform_only"]["peak_rss"] for name in MEMORY_SCENARIOS)
        out["pipeline_rss_growth_10x_over_1x_transformation_alone"] = round(
            ten_t["pipeline_process_mb"] / one_t["pipeline_process_mb"] - 1, 3
        )
        out["dbt_duckdb_10x_mb"] = max(ten["largest_child_mb"], ten_t["largest_child_mb"])
    if "extraction" in report:
        rates = report["extraction"]["rows_per_second"]
        out["extraction_10x_over_stage_limit"] = round(rates["full"] / rates["limit"], 3)
    return out


def format_table(report: dict) -> str:
    """The summary of a full benchmark report in docs/performance.md: the budget, then the split per stage."""
    r = report["ratios"]
    history = report["one_day_after_history"]["fastest"]
    fixed = report["fixed_cost"]["fastest"]
    memory = report["memory"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    def history_row(name: str, label: str) -> str:
        wall, cpu = r[f"one_day_after_{name}_over_empty"], r[f"one_day_after_{name}_over_empty_cpu"]
        return (
            f"| one day after {label} of history / on empty history | <= 1.2x | {wall:.2f}x "
            f"({history[name]['wall_seconds']} s / {history['empty']['wall_seconds']} s); CPU time {cpu:.2f}x "
            f"| {verdict(wall <= 1.2)} |"
        )

    growth = r["pipeline_rss_growth_10x_over_1x"]
    lines = [
        "| budget (ratios from one `make bench`) | target | measured | |",
        "|---|---|---|---|",
        history_row("history_90d", "90 days"),
        history_row("history_365d", "365 days"),
        "| Dagster's share of the fixed cost over the same stages bare | <= 25% "
        f"| {r['dagster_share_of_fixed_cost']:.0%} "
        f"({fixed['dagster']['wall_seconds']} s vs {fixed['bare']['wall_seconds']} s); CPU time "
        f"{r['dagster_share_of_fixed_cost_cpu']:.0%}; with Dagster's stock SQLite settings "
        f"{r['dagster_share_of_fixed_cost_stock_sqlite']:.0%} | {verdict(r['dagster_share_of_fixed_cost'] <= 0.25)} |",
        f"| pipeline process peak RSS, 7 days at 10x over 1x | <= +20% | {growth:+.0%} "
        f"({memory['7d_scale1']['peak_rss']['pipeline_process_mb']:.0f} -> "
        f"{memory['7d_scale10']['peak_rss']['pipeline_process_mb']:.0f} MB, at ingestion); transformation "
        f"alone {r['pipeline_rss_growth_10x_over_1x_transformation_alone']:+.0%} | {verdict(growth <= 0.2)} |",
        f"| dbt's DuckDB peak RSS at 10x | <= 1 GB | {r['dbt_duckdb_10x_mb']:.0f} MB "
        f"| {verdict(r['dbt_duckdb_10x_mb'] <= 1024)} |",
    ]
    if "extraction" in report:
        rates = report["extraction"]["rows_per_second"]
        share = r["extraction_10x_over_stage_limit"]
        split = ", ".join(
            f"{stage} {seconds} s" for stage, seconds in report["extraction"]["full_stage_seconds"].items()
        )
        lines.append(
            f"| extraction at 10x over the stage limit (the same pages and files fetched and parsed, no "
            f"validation) | >= 80% | {share:.0%} ({rates['full']:,} vs {rates['limit']:,} rows/s; {split}) "
            f"| {verdict(share >= 0.8)} |"
        )
    lines += [
        "",
        "| run (fastest of the rounds) | wall s | CPU s | extract | validate | dedupe | write raw "
        "| dbt step (dbt process) | checks | orchestration |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = {
        "one day, empty history": history["empty"],
        "one day after 90 days": history["history_90d"],
        "one day after 365 days": history["history_365d"],
        "fixed cost, Dagster": fixed["dagster"],
        "fixed cost, bare": fixed["bare"],
        "fixed cost, Dagster, stock SQLite": fixed["dagster_stock_sqlite"],
        "7 days at 1x": memory["7d_scale1"],
        "7 days at 10x": memory["7d_scale10"],
    }
    for name, run in rows.items():
        s = run["stage_seconds"]
        lines.append(
            f"| {name} | {run['wall_seconds']} | {run.get('cpu_seconds', '')} | {s['extract']} | {s['validate']} "
            f"| {s['dedupe']} | {s['write_raw']} | {s['dbt']} ({run['dbt_process_seconds']}) | {s['checks']} "
            f"| {s['orchestration']} |"
        )
    slowest = ", ".join(f"{n['node']} {n['seconds']} s" for n in history["history_365d"]["slowest_dbt_nodes"])
    lines += [
        "",
        f"Slowest dbt nodes, one day after 365 days: {slowest}. Measured {report['measured_at']} on "
        f"{report['machine']['cpus']} CPUs, fastest of {report['rounds']} interleaved rounds; "
        "details in `bench/results.json`, analysis in [docs/performance.md](docs/performance.md).",
    ]
    return "\n".join(lines)
