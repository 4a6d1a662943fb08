"""`make check`: the CI gate. Materialize a small sample, run every asset check, fail on any ERROR.

Dagster has no command that fails a build on a failed asset check (dagster#17606); this is that command.
By default it materializes a small sample (2 days at scale 0.05 from the demo source) into a temporary
state directory; that run executes every check: the ingestion reconciliation checks, every dbt test and
the mart contracts. With `--checks-only --state-dir DIR` it runs the `asset_checks` job (dbt tests and
mart contracts) against an existing warehouse without materializing anything.

It prints one line per check (pass/fail, severity, the key metadata), writes a JUnit XML report, and
exits 1 when any ERROR-severity check failed or the run itself failed. WARN failures are listed but never
fail the build. Freshness is left to the daemon: a sample materialized a second ago is always fresh.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

from pipeline_project.settings import REPO_ROOT

DEFAULT_JUNIT = REPO_ROOT / "test-artifacts" / "asset-checks.xml"
KEY_METADATA_PREFIXES = ("fail/", "dagster_dbt/failed_row_count", "partitions_failing", "rows_checked")


@dataclass(frozen=True)
class CheckOutcome:
    asset: str
    check: str
    passed: bool
    severity: str
    details: str

    @property
    def blocks_build(self) -> bool:
        return not self.passed and self.severity == "ERROR"


def _details(metadata: dict) -> str:
    shown = []
    for key, entry in sorted(metadata.items()):
        value = getattr(entry, "value", entry)
        if key.startswith(KEY_METADATA_PREFIXES) and value not in ({}, [], None):
            shown.append(f"{key}={value}")
    return ", ".join(shown)


def check_outcomes(instance, run_id: str) -> list[CheckOutcome]:
    from dagster import DagsterEventType

    outcomes = []
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.dagster_event.event_specific_data
        outcomes.append(
            CheckOutcome(
                asset=evaluation.asset_key.to_user_string(),
                check=evaluation.check_name,
                passed=evaluation.passed,
                severity=evaluation.severity.value,
                details=_details(evaluation.metadata),
            )
        )
    return sorted(outcomes, key=lambda o: (o.passed, o.severity != "ERROR", o.asset, o.check))


def format_outcomes(outcomes: list[CheckOutcome]) -> str:
    lines = [f"{'result':<7}{'severity':<9}{'asset':<26}check"]
    for outcome in outcomes:
        result = "pass" if outcome.passed else "FAIL"
        line = f"{result:<7}{outcome.severity:<9}{outcome.asset:<26}{outcome.check}"
        lines.append(line + (f"  [{outcome.details}]" if outcome.details and not outcome.passed else ""))
    return "\n".join(lines)


def write_junit(outcomes: list[CheckOutcome], path: Path, run_failure: str | None) -> None:
    suite = ElementTree.Element(
        "testsuite",
        name="asset-checks",
        tests=str(len(outcomes) + (1 if run_failure else 0)),
        failures=str(sum(o.blocks_build for o in outcomes) + (1 if run_failure else 0)),
    )
    for outcome in outcomes:
        case = ElementTree.SubElement(suite, "testcase", classname=outcome.asset, name=outcome.check)
        properties = ElementTree.SubElement(case, "properties")
        ElementTree.SubElement(properties, "property", name="severity", value=outcome.severity)
        if outcome.blocks_build:
            failure = ElementTree.SubElement(case, "failure", message=f"{outcome.check} failed (ERROR)")
            failure.text = outcome.details
        elif not outcome.passed:
            ElementTree.SubElement(case, "system-out").text = f"WARN check failed: {outcome.details}"
    if run_failure:
        case = ElementTree.SubElement(suite, "testcase", classname="run", name="run succeeded")
        ElementTree.SubElement(case, "failure", message="the run failed").text = run_failure
    path.parent.mkdir(parents=True, exist_ok=True)
    ElementTree.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def gate(state_dir: Path, days: int, scale: float, checks_only: bool, junit: Path) -> int:
    import dagster as dg

    from pipeline_project.dev.demo_process import DemoSourceProcess
    from pipeline_project.dev.environment import ensure_dbt_manifest, prepare_environment
    from pipeline_project.dev.run import execute_job, run_pipeline

    settings = prepare_environment(isolated_state=state_dir)
    ensure_dbt_manifest()
    log_path = Path(settings["PIPELINE_LOG_DIR"]) / "check.log"
    instance = dg.DagsterInstance.get()
    progress = lambda line: print(line, file=sys.__stdout__, flush=True)  # noqa: E731
    if checks_only:
        print(f"==> running every asset check against {settings['PIPELINE_WAREHOUSE_PATH']}", flush=True)
        summary, _ = execute_job(instance, "asset_checks", {}, log_path, progress)
    else:
        os.environ["SHOP_DEMO_SCALE"] = str(scale)
        os.environ.pop("SHOP_API_URL", None)
        end_date = datetime.now(UTC).date() - timedelta(days=1)
        print(f"==> materializing a sample ({days} day(s) at scale {scale}) into {state_dir}", flush=True)
        with DemoSourceProcess(Path(settings["LANDING_DIR"]), end_date, days, log_path=log_path) as source:
            source.export_settings()
            summary, _ = run_pipeline(instance, days, end_date, log_path, progress)
    outcomes = check_outcomes(instance, summary.run_id)
    # A run that failed only because blocking checks failed has no other error: those checks are the report.
    run_failure = summary.first_error
    if not outcomes and run_failure is None:
        run_failure = "no asset check was evaluated"
    write_junit(outcomes, junit, run_failure)
    print()
    print(format_outcomes(outcomes))
    blocking = [o for o in outcomes if o.blocks_build]
    warned = [o for o in outcomes if not o.passed and not o.blocks_build]
    print(
        f"\n{len(outcomes)} checks: {sum(o.passed for o in outcomes)} passed, {len(blocking)} ERROR failures, "
        f"{len(warned)} WARN failures. JUnit report: {junit}"
    )
    if run_failure:
        print(f"FAILED: {run_failure}")
    return 1 if blocking or run_failure else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--state-dir", type=Path, help="keep the sample here (default: a temporary directory)")
    parser.add_argument("--checks-only", action="store_true", help="check the warehouse in --state-dir as it is")
    parser.add_argument("--junit", type=Path, default=DEFAULT_JUNIT)
    args = parser.parse_args(argv)
    if args.checks_only and not args.state_dir:
        parser.error("--checks-only needs --state-dir (the state to check)")
    warnings.filterwarnings("ignore", module="dagster")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if args.state_dir:
        args.state_dir.mkdir(parents=True, exist_ok=True)
        return gate(args.state_dir.resolve(), args.days, args.scale, args.checks_only, args.junit.resolve())
    with tempfile.TemporaryDirectory(prefix="asset-check-gate-") as state:
        return gate(Path(state), args.days, args.scale, False, args.junit.resolve())


if __name__ == "__main__":
    sys.exit(main())
