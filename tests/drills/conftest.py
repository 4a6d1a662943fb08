"""The drills share one stack (`drill_stack.Stack`): started once, with one good materialization of the drill's
day, and stopped with `make stop` at the end. Each drill's time from the alert to the verified recovery is
printed after the run and written to test-artifacts/drills.json."""

import json
import time

import pytest
from drill_results import RESULTS
from drill_stack import Stack
from runbook_procedure import children_cpu_seconds

from pipeline_project.settings import REPO_ROOT

from receivers import WebhookReceiver

SESSION: dict[str, float] = {}


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    started, cpu_before = time.monotonic(), children_cpu_seconds()
    with WebhookReceiver() as webhook, WebhookReceiver() as slack:
        stack = Stack(root=tmp_path_factory.mktemp("drills"), webhook=webhook, slack=slack)
        try:
            stack.start()
            started = time.monotonic()
            baseline = stack.wait_run(stack.launch("shop_pipeline", None))
            assert baseline.status.value == "SUCCESS", f"the good run of {stack.day} failed: {baseline.run_id}"
            stack.keep_partial_parse(baseline.run_id)
            stack.wait_idle()
            stack.timings["baseline_run"] = time.monotonic() - started
            yield stack
        finally:
            stack.stop()
            SESSION.update(
                {name: round(seconds, 1) for name, seconds in stack.timings.items()},
                wall_seconds=round(time.monotonic() - started, 1),
                # Every process the drills started, make dev's included (it has been waited for by now).
                all_processes_cpu_seconds=round(children_cpu_seconds() - cpu_before, 1),
            )
            for secret in stack.secrets:
                assert secret not in stack.texts(), "a secret left the stack in an alert, a log or the console"


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    terminalreporter.section("drills: time from the alert to the verified recovery")
    for drill, figures in RESULTS.items():
        terminalreporter.write_line(
            f"{drill:<24} {figures['alert_to_recovery_seconds']:6.1f} s  (fault to alert "
            f"{figures['fault_to_alert_seconds']:.1f} s; {figures['steps']} runbook steps, "
            f"{figures['runbook_seconds']:.1f} s, {figures['runbook_cpu_seconds']:.1f} s CPU)"
        )
    if SESSION:
        terminalreporter.write_line(
            f"stack start {SESSION.get('stack_start', 0):.1f} s, good run {SESSION.get('baseline_run', 0):.1f} s; "
            f"all drills {SESSION['wall_seconds']:.1f} s, "
            f"{SESSION['all_processes_cpu_seconds']:.1f} s CPU in all processes"
        )
        by_process = ", ".join(
            f"{name[4:]} {seconds:.1f} s" for name, seconds in SESSION.items() if name.startswith("cpu_")
        )
        terminalreporter.write_line(f"CPU of make dev's processes (with the runs they started): {by_process}")
    artifacts = REPO_ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "drills.json").write_text(json.dumps({"drills": RESULTS, "session": SESSION}, indent=2) + "\n")
