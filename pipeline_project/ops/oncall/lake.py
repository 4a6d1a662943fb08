"""The raw layer: verification (read-only: it never completes a pending commit), the explicit repair that
does, SQL over the Parquet files, and the columns a source sends."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pipeline_project.lake.manifest import PartitionManifest
from pipeline_project.lake.raw_store import Lake
from pipeline_project.ops.oncall.common import (
    OncallError,
    print_table,
    say,
    source_token,
    source_url,
)
from pipeline_project.quality.contracts import RAW_CONTRACTS

SAMPLE_RECORDS = 50
# LandingDay reads the archived files of a day without claiming anything under this name.
READER_ID = "oncall"
OK, PROBLEM, PENDING, MISSING = "ok", "PROBLEM", "PENDING COMMIT", "NO MANIFEST"


@dataclass(frozen=True)
class PartitionState:
    table: str
    day: str
    verdict: str
    manifest: PartitionManifest | None
    problems: list[str]


def lake() -> Lake:
    return Lake(os.environ["PIPELINE_LAKE_DIR"])


def partition_states(raw: Lake, days: Sequence[str], tables: Sequence[str]) -> list[PartitionState]:
    """Each table's partition of each day, checked against its manifest without writing anything."""
    states = []
    for day in days:
        for table in tables:
            manifest, pending, problems = raw.inspect(table, date.fromisoformat(day))
            if pending is not None:
                problems = [
                    f"a commit of run {pending.run_id} was left pending (its writer was killed, or is still moving "
                    f"files): `oncall lake-repair {day} {table}` completes it",
                    *problems,
                ]
                verdict = PENDING
            elif manifest is None:
                verdict, problems = MISSING, ["no manifest: never loaded, or the load did not commit"]
            else:
                verdict = PROBLEM if problems else OK
            rejected = raw.read_rejected(table, date.fromisoformat(day))
            if rejected is not None:
                verdict, problems = PROBLEM, [_rejection(rejected), *problems]
            states.append(PartitionState(table, day, verdict, manifest, problems))
    return states


def _rejection(rejected: PartitionManifest) -> str:
    """What the ledger of a load that did not reconcile says, in one line."""
    verdict = rejected.verdict
    missing = f"; missing keys, e.g. {', '.join(verdict['missing_sample'])}" if verdict.get("missing_sample") else ""
    return (
        f"the last load (run {rejected.run_id}) did not reconcile and was not committed: "
        f"{'; '.join(verdict.get('problems', []))}{missing}"
    )


def show_partition_states(states: list[PartitionState], root: Path) -> None:
    days = sorted({state.day for state in states})
    say(f"raw partitions of {', '.join(days)} in {root}")
    rows = []
    for s in states:
        m = s.manifest
        counts = (
            (m.control.get("count"), m.loaded_count, m.quarantined_count, m.copies, m.run_id[:8]) if m else (None,) * 5
        )
        rows.append((s.table, *(([s.day]) if len(days) > 1 else []), s.verdict, *counts, m.committed_at if m else None))
    header = ("table", *(["day"] if len(days) > 1 else []), "verdict", "source keys", "loaded", "quarantined")
    print_table((*header, "copies", "run", "committed"), rows)
    for state in states:
        for problem in state.problems:
            say(f"    {state.table}{f' {state.day}' if len(days) > 1 else ''}: {problem}")


def lake_verify(args: argparse.Namespace) -> int:
    raw = lake()
    states = partition_states(raw, args.days, args.tables or list(RAW_CONTRACTS))
    show_partition_states(states, raw.root)
    return 0 if all(state.verdict == OK for state in states) else 1


def lake_repair(args: argparse.Namespace) -> int:
    """Roll forward the commits a killed writer left pending (the one command here that writes the lake)."""
    raw = lake()
    tables = args.tables or list(RAW_CONTRACTS)
    for day in args.days:
        for table in tables:
            pending = raw.pending_commit(table, date.fromisoformat(day))
            if pending is None:
                continue
            with raw.locked(table, date.fromisoformat(day), f"oncall lake-repair (pid {os.getpid()})", ".commit"):
                raw.complete_pending_commit(table, date.fromisoformat(day))
            say(f"{table} {day}: completed the commit of run {pending.run_id} (committed {pending.committed_at})")
    states = partition_states(raw, args.days, tables)
    show_partition_states(states, raw.root)
    return 0 if all(state.verdict == OK for state in states) else 1


def lake_sql(args: argparse.Namespace) -> int:
    import duckdb

    from pipeline_project.ops.oncall.warehouse import show_query

    with duckdb.connect() as connection:
        rows = show_query(connection, args.query)
    return 1 if args.expect_empty and rows else 0


def source_samples(table: str, day: date) -> Iterator[tuple[str, object, int | None]]:
    """(where, the first records it sends for the day, how many it reports) for the API or each landing file."""
    from pipeline_project.ingest.extraction import ExtractStats
    from pipeline_project.ingest.landing_reader import UnreadableLandingFile, iter_landing_batches
    from pipeline_project.ingest.landing_zone import LandingDay, incoming_files
    from pipeline_project.ingest.listing_filters import DATE_FILTERED, UPDATED_FILTERED
    from pipeline_project.ingest.source_errors import SourceError
    from pipeline_project.ingest.sources import ShopApiClient, source_host

    contract = RAW_CONTRACTS[table]
    if table in DATE_FILTERED | UPDATED_FILTERED:
        url, token, stats = source_url(), source_token(), ExtractStats()
        if not token:
            raise OncallError(f"SHOP_API_TOKEN is not set (the API at {source_host(url)} needs it)")
        try:
            with ShopApiClient(url, token, page_size=SAMPLE_RECORDS, max_attempts=1) as client:
                batch = next(client.iter_batches(contract, day, stats, SAMPLE_RECORDS))
        except SourceError as error:
            raise OncallError(f"the shop API at {source_host(url)}: {error} (`oncall source-health`)") from None
        yield f"{source_host(url)} {stats.source}", batch, stats.source_reported_count
        return
    landing_dir = Path(os.environ["LANDING_DIR"])
    archived = LandingDay(landing_dir, table, day, READER_ID).files()
    files = sorted({path.name: path for path in (*archived, *incoming_files(landing_dir, table, day))}.values())
    if not files:
        raise OncallError(f"no landing files of {table} for {day} (incoming or archived) under {landing_dir / table}")
    for path in files:
        try:
            batch = next(iter_landing_batches(contract, [path], ExtractStats(), SAMPLE_RECORDS))
        except UnreadableLandingFile as error:
            say(f"{path}: unreadable: {error}")
            continue
        yield str(path), batch, None


def source_columns(args: argparse.Namespace) -> int:
    from pipeline_project.quality.schema_drift import compare

    contract = RAW_CONTRACTS[args.table]
    breaking = False
    for where, batch, reported in source_samples(args.table, args.day):
        of_reported = f" of {reported} the source reports for the day" if reported is not None else ""
        say(f"{where}: {batch.height} record(s) read{of_reported}")
        if not batch.height:
            continue
        say("    sent: " + ", ".join(f"{name} ({dtype})" for name, dtype in batch.schema.items()))
        diff = compare(contract, batch)
        for line in diff.render().splitlines():
            say(f"    {line}")
        if diff:
            consequence = "fails the load" if diff.breaking else "loads; the schema_drift check fails"
            say(f"    {'breaking' if diff.breaking else 'additive'} drift: {consequence}")
            breaking |= diff.breaking
    return 1 if breaking else 0
