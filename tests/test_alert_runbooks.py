"""Every alert kind has a runbook an on-call stranger can follow, every alert links it, and every alert says
what to do: its failed selection, the root cause first, the commands to diagnose, rerun and verify it.

The runbooks themselves are executed procedures (their `bash oncall <step>` blocks, drilled by
`tests/drills`); here, without a stack, they are checked for what a drill cannot see: every alert kind has
the steps, the commands exist, the recovery checks depend on the alert, nothing is hard-coded, and the
Do-NOT lists say what a drill must never run."""

import re
import shlex

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType
from drills.runbook_procedure import missing_steps, parse

from pipeline_project.alerting.alert import (
    DIAGNOSE,
    RERUN,
    RUNBOOKS,
    VERIFY,
    AlertKind,
    job_label,
    parse_partitions,
    partitions_argument,
    rerun_command,
)
from pipeline_project.alerting.run_subjects import run_subject, subjects_resolved_by
from pipeline_project.alerting.signals import run_failure_signal
from pipeline_project.alerting.sla import SlaLookup
from pipeline_project.ops.oncall.cli import build_parser
from pipeline_project.ops.oncall.shell import EXPORTED, INCIDENT_VARIABLES
from pipeline_project.settings import REPO_ROOT

# The sections of the template in runbooks/README.md, in order.
TEMPLATE_SECTIONS = (
    "Is it real?",
    "Scope",
    "Causes, most likely first",
    "Safe rerun",
    "Do NOT",
    "Verify recovery",
    "Escalate",
    "Afterwards",
)
# What a runbook must not spell out: where things are depends on the settings (`oncall env` exports them).
HARD_CODED = re.compile(r":(3000|3001|8765)\b|127\.0\.0\.1|localhost|\.state/|\.venv/bin/python|dbt_project/target")
ONCALL_COMMANDS = set(build_parser()._subparsers._group_actions[0].choices)
DAY = "2026-11-21"


@pytest.mark.parametrize("kind", list(AlertKind), ids=str)
def test_each_alert_kind_has_a_runbook_that_follows_the_template(kind):
    path = REPO_ROOT / RUNBOOKS[kind]
    assert path.is_file(), f"{kind} alerts link {RUNBOOKS[kind]}, which does not exist"
    text = path.read_text()
    trigger = next((line for line in text.splitlines() if "Trigger" in line), "")
    assert f"`{kind.value}`" in trigger, f"{path.name} does not name the alert kind `{kind.value}` in its Trigger line"
    headings = re.findall(r"^## \d\. (.+)$", text, re.M)
    assert [next((s for s in TEMPLATE_SECTIONS if h.startswith(s)), h) for h in headings] == list(TEMPLATE_SECTIONS)
    assert re.search(r"\*\*Owner:\*\* team:[a-z-]+", text)
    assert re.search(r"\*\*Reviewed:\*\* \d{4}-\d{2}-\d{2}", text)
    assert re.search(r"\*\*Drilled:\*\* \d{4}-\d{2}-\d{2}", text), f"{path.name} has not been drilled"
    assert re.search(r"^\*\*TL;DR\*\*", text, re.M) and re.search(r"^\*\*Impact:\*\*", text, re.M)


@pytest.mark.parametrize("kind", list(AlertKind), ids=str)
def test_each_runbook_is_a_procedure_that_depends_on_the_alert(kind):
    path = REPO_ROOT / RUNBOOKS[kind]
    procedure = parse(path)
    assert not missing_steps(procedure), f"{path.name} lacks the steps {missing_steps(procedure)}"
    [setup] = [step for step in procedure.steps if step.step == "setup"]
    assert "oncall env --incident '<INCIDENT>'" in setup.code, "the setup does not take the alert's incident"
    verify = [step.code for step in procedure.steps if step.step == "verify"]
    assert any('oncall verify "$INCIDENT"' in code for code in verify), "recovery checks that ignore the alert"
    for step in procedure.steps:
        for line in step.code.splitlines():
            words = shlex.split(line, comments=True)
            for position, word in enumerate(words):
                if word == "oncall" and position + 1 < len(words):
                    assert words[position + 1] in ONCALL_COMMANDS, f"{path.name}:{step.line}: no command {line!r}"
    text = path.read_text()
    assert not HARD_CODED.search(text), f"{path.name} hard-codes {HARD_CODED.search(text)[0]!r}"
    # Every variable the page uses is one `oncall env --incident` exports (or a loop variable of its own).
    prose = re.sub(r"<!--.*?-->", "", text)  # the forbids markers are patterns, not commands
    own = set(re.findall(r"\bfor ([A-Z_]+) in\b", prose))
    used = set(re.findall(r"\$\{?([A-Z][A-Z_]+)", prose)) - own - {"PATH", "PWD", "HOME"}
    assert used <= {*EXPORTED, *INCIDENT_VARIABLES}, f"{path.name} uses {used - {*EXPORTED, *INCIDENT_VARIABLES}}"
    do_not = text.split("## 5. Do NOT", 1)[1].split("\n## ", 1)[0]
    assert procedure.forbidden and all(f"<!-- forbids: {p} -->" in do_not for p in procedure.forbidden)
    for pattern in procedure.forbidden:
        re.compile(pattern)
        assert not any(re.search(pattern, step.code) for step in procedure.steps), f"{path.name} runs {pattern}"


def test_the_runbook_index_lists_every_alert_kind_and_the_drill_convention():
    index = (REPO_ROOT / "runbooks" / "README.md").read_text()
    for kind, runbook in RUNBOOKS.items():
        assert f"`{kind.value}`" in index and runbook.removeprefix("runbooks/") in index
    assert "```bash oncall <step>" in index and "<!-- forbids: REGEX -->" in index and "<INCIDENT>" in index


def test_commands_name_the_selection_in_one_form_oncall_parses():
    assert partitions_argument(["2026-11-21"]) == "2026-11-21"
    assert partitions_argument(["2026-11-21", "2026-11-19", "2026-11-20"]) == "2026-11-19...2026-11-21"
    assert partitions_argument(["2026-11-19", "2026-11-21"]) == "2026-11-19,2026-11-21"
    for days in (["2026-11-19", "2026-11-20", "2026-11-21"], ["2026-11-19", "2026-11-21"], [DAY]):
        assert list(parse_partitions(partitions_argument(days))) == days
    assert parse_partitions("2026-11-19..2026-11-20") == ("2026-11-19", "2026-11-20")  # Dagster's range label

    command = rerun_command("__ASSET_JOB", ["raw_payments", "raw_orders"], [DAY])
    assert command == f"oncall rerun --job __ASSET_JOB --assets raw_orders,raw_payments --partitions {DAY}"
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert (args.job, args.assets, args.partitions) == ("__ASSET_JOB", ("raw_orders", "raw_payments"), (DAY,))
    assert job_label("__ASSET_JOB") == job_label("__ephemeral_asset_job__") == "ad-hoc materialization"
    assert job_label("shop_pipeline") == "shop_pipeline"


def _flaky_source_asset():
    """An ingestion-like asset whose first attempt fails on the source and whose retry is refused by the open
    circuit breaker, as `sources.ShopApiClient` words it."""

    @dg.asset(
        name="raw_feed",
        partitions_def=dg.DailyPartitionsDefinition("2026-01-01"),
        retry_policy=dg.RetryPolicy(max_retries=1),
    )
    def raw_feed(context: dg.AssetExecutionContext):
        if context.retry_number == 0:
            raise dg.Failure(description="GET /v1/feed failed: ConnectError: [Errno 111] Connection refused")
        raise dg.Failure(
            description="GET /v1/feed not sent: circuit open for 127.0.0.1:9 since 2026-11-21T02:15:00Z after "
            "5 consecutive failed requests (last: ConnectError); next try at 2026-11-21T02:16:00Z"
        )

    @dg.asset(name="feed_mart", deps=[raw_feed])
    def feed_mart():
        return None

    return [raw_feed, feed_mart]


def test_a_run_alert_names_the_root_cause_the_failed_selection_and_what_to_do(instance):
    result = dg.materialize(_flaky_source_asset(), instance=instance, partition_key=DAY, raise_on_error=False)
    assert not result.success
    [record] = instance.get_records_for_run(result.run_id, of_type=DagsterEventType.RUN_FAILURE).records
    signal = run_failure_signal(record, result.dagster_run, instance, SlaLookup(), "http://127.0.0.1:3300")
    alert = signal.alert
    assert alert.title == f"ad-hoc materialization [{DAY}] failed: raw_feed"
    assert alert.summary.endswith("Root cause: GET /v1/feed failed: ConnectError: [Errno 111] Connection refused")
    assert alert.link == f"http://127.0.0.1:3300/runs/{result.run_id}"
    # The rerun covers what the run did not get done: the failed asset and the one skipped after it.
    assert (alert.job, alert.assets, alert.partitions) == ("__ephemeral_asset_job__", ("feed_mart", "raw_feed"), (DAY,))
    assert alert.details[DIAGNOSE] == f"oncall run-errors {result.run_id}"
    assert (
        alert.details[RERUN]
        == f"oncall rerun --job __ephemeral_asset_job__ --assets feed_mart,raw_feed --partitions {DAY}"
    )
    assert alert.details[VERIFY].startswith(f"oncall verify --assets feed_mart,raw_feed --partitions {DAY} --after ")
    assert signal.subject == run_subject("__ephemeral_asset_job__", DAY, ("raw_feed",))


def test_a_run_incident_resolves_only_when_its_failed_assets_are_materialized_again():
    def run(job="__ASSET_JOB", assets=None, **tags):
        selection = frozenset(dg.AssetKey(name) for name in assets) if assets else None
        return dg.DagsterRun(job_name=job, run_id="r", asset_selection=selection, tags=tags)

    failed = run_subject("__ASSET_JOB", DAY, ("raw_orders", "raw_payments"))
    day = {"dagster/partition": DAY}
    assert subjects_resolved_by(run(assets=["raw_web_events", "stg_web_events"], **day), [failed]) == []
    assert subjects_resolved_by(run(assets=["raw_orders"], **day), [failed]) == []
    assert subjects_resolved_by(run(job="shop_pipeline", **day), [failed]) == [], "another job"
    assert subjects_resolved_by(run(assets=["raw_orders", "raw_payments", "stg_orders"], **day), [failed]) == [failed]
    assert subjects_resolved_by(run(**day), [failed]) == [failed], "a run of every asset of the job"
    assert (
        subjects_resolved_by(
            run(assets=["raw_orders", "raw_payments"], **{"dagster/partition": "2026-11-22"}), [failed]
        )
        == []
    )
