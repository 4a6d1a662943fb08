"""The `oncall` command line: commands, their arguments, and errors as one line on stderr with exit status 1.

    oncall env [--incident KEY]      the settings the runbooks use as shell exports:  eval "$(oncall env)"
                                     (with an incident: INCIDENT, JOB, ASSETS, TABLES, PARTITIONS, DAY, RUN_ID, ...)
    incidents                        the open incidents of the alert outbox (their keys)
    incident KEY                     one incident: its alert, its failed selection and its commands
    rerun KEY | --job J --assets A [--partitions P]
                                     rerun exactly the failed selection through the webserver, wait, report
    verify KEY | --assets A [--partitions P] [--after T] [--check C] [--fresh] | --channel CH  [--wait S]
                                     is it recovered: materialized since the alert, checks passing, raw
                                     partitions reconciled, fresh again, the incident resolved (exit 1 if not)
    source-health [--wait S]         the shop API's /health and one authenticated page, with the pipeline's token
    runs [N]                         the latest N runs (default 10): id, job, status, start (UTC), partition
    run-errors RUN_ID                each step failure, retry and the run failure, with the error and metadata
    run-checks RUN_ID [--all]        the failed asset checks of a run with their evidence (--all: passing too)
    run-stopped RUN_ID [--wait S]    is everything of a finished run over: its processes (worker, dbt) on this
                                     host and the re-executions run retries launched of it
    freshness [ASSET ...]            freshness state and hours since the last materialization
    daemons                          the daemon's heartbeats and the schedules' and sensors' state (exit 1: down)
    pool                             who holds and who waits for the one `duckdb_warehouse` slot
    lake-verify DAYS [TABLE ...]     does each raw partition reconcile with its manifest (read-only; exit 1 if not)
    lake-repair DAYS [TABLE ...]     complete the raw-layer commits a killed writer left pending
    sql "SQL" / lake-sql "SQL"       read-only SQL on the warehouse / over the lake's Parquet files
                                     (--expect-empty: exit 1 if the result has rows)
    source-columns TABLE DAY         the columns the source sends for TABLE on DAY against the contract (exit 1:
                                     breaking drift)
    dbt-results RUN_ID [--slowest N] what dbt built, failed, skipped or never finished in a run
    dbt-failing-rows RUN_ID TEST     the rows a failing dbt test finds, with the SQL dbt compiled in that run
    deliveries [--channel CH] [--expired]   alert deliveries not accepted yet (--expired: given up)
    alerts-log [N] [--key KEY] [--commands] the last N alerts the log channel wrote
    heartbeat [--max-age-seconds S]  is monitoring alive (the alert_delivery sensor's heartbeat)
    dagster [--] ARGS...             the dagster CLI with the source settings a run needs

Settings come from the environment, then `.env`, then the defaults under `.state` (as for `make run`); while
a `make dev` of that state directory runs, its UI and demo source are used wherever their ports are. A
command that finds nothing to read says what is missing, and where, and exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from pipeline_project.ops.oncall.common import (
    OncallError,
    count_argument,
    day_argument,
    days_argument,
    names_argument,
    resolve_settings,
    table_argument,
)
from pipeline_project.secrets import redact


def _handler(target: str) -> Callable[[argparse.Namespace], int]:
    """`module:function` of this package, imported when the command runs (most commands need no Dagster)."""
    module, function = target.split(":")
    return getattr(importlib.import_module(f"pipeline_project.ops.oncall.{module}"), function)


def _after(text: str):
    from pipeline_project.ops.oncall.recovery import after_argument

    try:
        return after_argument(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--after must be an ISO 8601 time, not {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oncall", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, target: str, text: str) -> argparse.ArgumentParser:
        subparser = commands.add_parser(name, description=text, help=text)
        subparser.set_defaults(handler=target)
        return subparser

    def selection(subparser: argparse.ArgumentParser) -> None:
        subparser.add_argument("incident", nargs="?", metavar="INCIDENT", help="the incident key an alert carries")
        subparser.add_argument("--assets", type=names_argument, help="asset names, comma-separated")
        subparser.add_argument("--partitions", type=days_argument, help="DAY, FIRST...LAST or DAY,DAY")

    env = command("env", "shell:env", 'the settings the runbooks use as shell exports: eval "$(oncall env)"')
    env.add_argument("--incident", metavar="KEY", help="also export what this incident's alert carries")
    command("incidents", "alerts:incidents", "the open incidents of the alert outbox")
    command("incident", "alerts:incident", "one incident, its alert and its commands").add_argument("incident")
    rerun = command("rerun", "recovery:rerun", "rerun exactly an incident's failed selection, wait and report")
    selection(rerun)
    rerun.add_argument("--job", help="the job to run it in (an incident resolves by the same job)")
    rerun.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the run (default 3600)")
    rerun.add_argument("--no-wait", action="store_true", help="launch and return")
    rerun.add_argument(
        "--force", action="store_true", help="launch although a run of the same days is in flight or it is resolved"
    )
    verify = command("verify", "recovery:verify", "is an incident's selection recovered (exit 1 if not)")
    selection(verify)
    verify.add_argument("--after", type=_after, help="materialized after this time (ISO 8601)")
    verify.add_argument("--check", help="this check of the asset passes")
    verify.add_argument("--fresh", action="store_true", help="the asset's freshness is PASS")
    verify.add_argument("--channel", help="every alert reached this channel")
    verify.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait up to this long for it")
    health = command("source-health", "source:source_health", "is the shop API up and does it take the token")
    health.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait up to this long for it")
    command("runs", "runs:runs", "the latest runs").add_argument("count", nargs="?", type=count_argument, default=10)
    command("run-errors", "runs:run_errors", "what went wrong in one run").add_argument("run_id")
    checks = command("run-checks", "runs:run_checks", "the failed asset checks of one run, with their evidence")
    checks.add_argument("run_id")
    checks.add_argument("--all", action="store_true", help="list the passing checks too")
    ages = command("freshness", "runs:freshness", "freshness state and age of assets (default: all, stalest first)")
    ages.add_argument("assets", nargs="*", metavar="ASSET")
    stopped = command("run-stopped", "runs:run_stopped", "is everything of a finished run over (exit 1 if not)")
    stopped.add_argument("run_id")
    stopped.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait up to this long for it")
    command("daemons", "runs:daemons", "the daemon's heartbeats, schedules and sensors")
    command("pool", "runs:pool", "who holds and who waits for the warehouse pool")
    for name, target, text in (
        ("lake-verify", "lake:lake_verify", "does each raw partition of the days reconcile (read-only)"),
        ("lake-repair", "lake:lake_repair", "complete the raw-layer commits a killed writer left pending"),
    ):
        lake = command(name, target, text)
        lake.add_argument("days", type=days_argument, metavar="DAYS")
        lake.add_argument("tables", nargs="*", type=table_argument, metavar="TABLE")
    for name, target, text in (
        ("sql", "warehouse:sql", "SQL on the warehouse, read-only"),
        ("lake-sql", "lake:lake_sql", "SQL over the lake's Parquet files"),
    ):
        query = command(name, target, text)
        query.add_argument("query", metavar="SQL")
        query.add_argument("--expect-empty", action="store_true", help="exit 1 if the result has rows")
    columns = command("source-columns", "lake:source_columns", "the columns a source sends, against the contract")
    columns.add_argument("table", type=table_argument, metavar="TABLE")
    columns.add_argument("day", type=day_argument)
    results = command("dbt-results", "warehouse:dbt_results", "what dbt built, failed or never finished in a run")
    results.add_argument("run_id")
    results.add_argument("--slowest", type=count_argument, default=0, metavar="N", help="also the N slowest nodes")
    failing = command("dbt-failing-rows", "warehouse:dbt_failing_rows", "the rows a failing dbt test found")
    failing.add_argument("run_id")
    failing.add_argument("test", help="the check name, e.g. unique_stg_orders_order_id")
    deliveries = command("deliveries", "alerts:deliveries", "alert deliveries not accepted yet")
    deliveries.add_argument("--channel", help="only this channel's")
    deliveries.add_argument("--expired", action="store_true", help="the deliveries given up after 24 h instead")
    log = command("alerts-log", "alerts:alerts_log", "the last alerts the log channel wrote")
    log.add_argument("count", nargs="?", type=count_argument, default=20)
    log.add_argument("--key", help="only the alerts with this dedup or incident key")
    log.add_argument("--commands", action="store_true", help="with the commands each alert carries")
    beat = command("heartbeat", "shell:heartbeat", "is monitoring alive")
    beat.add_argument("--max-age-seconds", type=float, default=300.0)
    command("dagster", "shell:dagster", "the dagster CLI with the pipeline's settings").add_argument(
        "arguments", nargs=argparse.REMAINDER
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `dagster --version` and the like: options after `dagster` are the dagster CLI's, not ours.
    args, extra = parser.parse_known_args(argv)
    if args.command == "dagster":
        args.arguments += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        resolve_settings()
        return _handler(args.handler)(args)
    except OncallError as error:
        print(f"oncall {args.command}: {redact(str(error))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
