"""The drills share one stack (`drill_stack.Stack`): started once, with one good materialization of the drill's
day, and stopped with `make stop` at the end. Each drill's time from the alert to the verified recovery is
printed after the run and written to test-artifacts/drills.json."""

import json
import time

import pytest
from drill_stack import Stack

from pipeline_project.local.environment import REPO_ROOT

from receivers import WebhookReceiver

RESULTS: dict[str, dict] = {}


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    with WebhookReceiver() as webhook, WebhookReceiver() as slack:
        stack = Stack(root=tmp_path_factory.mktemp("drills"), webhook=webhook, slack=slack)
        try:
            stack.start()
            started = time.monotonic()
            baseline = stack.wait_run(stack.launch("shop_pipeline", None))
            assert baseline.status.value == "SUCCESS", f"the good run of {stack.day} failed: {baseline.run_id}"
            stack.wait_idle()
            stack.timings["baseline_run"] = time.monotonic() - started
            yield stack
        finally:
            stack.stop()
            for secret in stack.secrets:
                assert secret not in stack.texts(), "a secret left the stack in an alert, a log or the console"


def record(drill: str, **figures) -> None:
    RESULTS[drill] = figures


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    terminalreporter.section("drills: time from the alert to the verified recovery")
    for drill, figures in RESULTS.items():
        terminalreporter.write_line(
            f"{drill:<24} {figures['alert_to_recovery_seconds']:6.1f} s  "
            f"(fault to alert {figures['fault_to_alert_seconds']:.1f} s; {figures['steps']} runbook steps)"
        )
    artifacts = REPO_ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "drills.json").write_text(json.dumps(RESULTS, indent=2) + "\n")
