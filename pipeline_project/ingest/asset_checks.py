"""The checks every ingestion asset carries, evaluated from what is on disk: `source_reconciled` (blocking:
every partition's load reconciled with the source and its files match their manifest) and `schema_drift`
(WARN: the additive drift committed partitions recorded), and the asset key they are checks of.
"""

from datetime import date

import dagster as dg

from pipeline_project.ingest.reconcile import Verdict
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.schema_drift import SchemaDiff

RECONCILIATION_CHECK = "source_reconciled"
SCHEMA_DRIFT_CHECK = "schema_drift"


def raw_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(f"raw_{table}")


def _partition_problems(lake: Lake, table: str, day: date) -> tuple[list[str], dict | None]:
    """Why a partition does not reconcile (empty when it does), and the keys its rejected load got wrong."""
    rejected = lake.read_rejected(table, day)
    if rejected is not None:
        verdict = Verdict.from_metadata(rejected.verdict)
        differing = {
            "missing_count": verdict.missing_count,
            "unexpected_count": verdict.unexpected_count,
            "missing_sample": verdict.missing_sample,
            "unexpected_sample": verdict.unexpected_sample,
        }
        return [f"the load of run {rejected.run_id} was not committed: {'; '.join(verdict.problems)}"], differing
    manifest, found = lake.read_verified(table, day)
    if manifest is None:
        return ["no load of this partition was committed"], None
    return found, None


def reconciliation_result(table: str, lake: Lake, days: list[date]) -> dg.AssetCheckResult:
    """Re-read each partition's ledger and files from disk: a load that did not reconcile, a partition never
    committed, or files that no longer match their manifest fail the check."""
    problems: dict[str, list[str]] = {}
    keys: dict[str, dict] = {}
    totals = {"accounted_keys": 0, "control_keys": 0, "loaded": 0, "quarantined": 0, "copies_dropped": 0}
    for day in sorted(set(days)):
        found, differing = _partition_problems(lake, table, day)
        if found:
            problems[day.isoformat()] = found
        if differing:
            keys[day.isoformat()] = differing
        manifest = lake.read_manifest(table, day)
        if manifest is not None:
            totals["accounted_keys"] += manifest.accounted.get("count", 0)
            totals["control_keys"] += manifest.control.get("count", 0)
            totals["loaded"] += manifest.loaded_count
            totals["quarantined"] += manifest.quarantined_count
            totals["copies_dropped"] += manifest.copies
    return dg.AssetCheckResult(
        asset_key=raw_asset_key(table),
        check_name=RECONCILIATION_CHECK,
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "partitions_checked": len(set(days)),
            "partitions_failing": dg.MetadataValue.json(problems),
            "keys_differing": dg.MetadataValue.json(keys),
            "missing_keys": sum(entry["missing_count"] or 0 for entry in keys.values()),
            "unexpected_keys": sum(entry["unexpected_count"] or 0 for entry in keys.values()),
            **{f"{name}_rows" if name in ("loaded", "quarantined") else name: count for name, count in totals.items()},
        },
        description=None if not problems else f"{len(problems)} partition(s) of raw_{table} do not reconcile",
    )


def schema_drift_result(table: str, lake: Lake, days: list[date]) -> dg.AssetCheckResult:
    """The additive drift the committed partitions recorded in their manifests (breaking drift commits none)."""
    drifted: dict[str, SchemaDiff] = {}
    for day in days:
        manifest = lake.read_manifest(table, day)
        if manifest is not None and (diff := SchemaDiff.from_metadata(manifest.schema_drift)):
            drifted[day.isoformat()] = diff
    return dg.AssetCheckResult(
        asset_key=raw_asset_key(table),
        check_name=SCHEMA_DRIFT_CHECK,
        passed=not drifted,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "partitions_checked": len(days),
            "partitions_drifted": len(drifted),
            SCHEMA_DRIFT_CHECK: dg.MetadataValue.json({day: diff.to_metadata() for day, diff in drifted.items()}),
            "diff": dg.MetadataValue.md(
                "\n\n".join(f"{day}:\n```\n{diff.render()}\n```" for day, diff in drifted.items()) or "no schema drift"
            ),
        },
        description=None
        if not drifted
        else f"raw_{table}: the source's columns differ from the contract in {len(drifted)} partition(s); "
        "loaded the contract's columns only",
    )
