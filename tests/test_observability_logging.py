"""Structured logs: a real ingestion run on an instance configured with the repository's dagster.yaml
`python_logs` puts the source client's retry warnings into the run's event log and writes JSON lines
with run, step, asset and partition ids; the other processes log JSON lines through `configure_logging`;
secrets never reach a line."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import dagster as dg
import pytest
import yaml

from demo_source import Faults
from pipeline_project.ingest.api_assets import build_api_ingestion_asset
from pipeline_project.observability.logging import RUNS_LOG_FILE, JsonFormatter, JsonLinesHandler, configure_logging
from pipeline_project.resources import LakeResource, ShopApiResource
from pipeline_project.settings import REPO_ROOT

from harness import DAYS, TOKEN

DAY = DAYS[0]
RAW_ORDERS = build_api_ingestion_asset("orders")


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture
def repo_python_logs() -> dict:
    return yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())["python_logs"]


def test_source_retry_warnings_reach_the_event_log_and_json_lines_carry_the_ids(
    demo_source, state_dir, repo_python_logs, capfd, monkeypatch
):
    # As under make run and make dev: the run's JSON lines go to $PIPELINE_LOG_DIR/runs.jsonl, not the terminal.
    monkeypatch.setenv("PIPELINE_LOG_DIR", str(state_dir / "logs"))
    demo_source.set_faults(Faults(rate_limit_every=2, retry_after_seconds=0.05))
    with dg.instance_for_test(overrides={"python_logs": repo_python_logs}) as instance:
        result = dg.materialize(
            [RAW_ORDERS],
            instance=instance,
            partition_key=DAY.isoformat(),
            resources={
                "shop_api": ShopApiResource(base_url=demo_source.url, token=TOKEN, page_size=50),
                "lake": LakeResource(root=str(state_dir / "lake")),
            },
        )
        assert result.success
        warnings = [
            entry
            for entry in instance.all_logs(result.run_id)
            if entry.level == logging.WARNING and "retrying in" in entry.user_message
        ]
    assert warnings, "no retry warning in the run's event log"
    assert all(entry.step_key == "raw_orders" for entry in warnings)

    assert not json_lines(capfd.readouterr().err)
    lines = json_lines((state_dir / "logs" / "runs.jsonl").read_text())
    retries = [line for line in lines if line["logger"] == "pipeline_project.ingest.sources"]
    assert len(retries) == len(warnings)
    first = retries[0]
    assert first["level"] == "WARNING" and first["message"].startswith("shop API request failed (HTTP 429)")
    assert (first["run_id"], first["step"], first["partition"]) == (result.run_id, "raw_orders", DAY.isoformat())
    assert first["process"] == "dagster-run"
    materialized = [line for line in lines if line.get("event") == "ASSET_MATERIALIZATION"]
    assert [(m["asset"], m["partition"], m["run_id"]) for m in materialized] == [
        ("raw_orders", DAY.isoformat(), result.run_id)
    ]
    checks = {line["check"]: line["asset"] for line in lines if line.get("event") == "ASSET_CHECK_EVALUATION"}
    assert checks == {"source_reconciled": "raw_orders", "schema_drift": "raw_orders"}


def test_run_json_lines_go_to_stderr_without_a_log_directory(monkeypatch):
    monkeypatch.delenv("PIPELINE_LOG_DIR", raising=False)
    handler = JsonLinesHandler()
    assert handler.stream is sys.stderr
    handler.close()


def test_every_field_is_scrubbed_of_secrets(monkeypatch):
    monkeypatch.setenv("SHOP_API_TOKEN", "canary-token-0a9f")
    monkeypatch.setenv("ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook/canary-hook-77")
    stream = io.StringIO()
    logger = logging.getLogger("pipeline_project.test_scrubbing")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError("the source rejected canary-token-0a9f")
        except RuntimeError:
            logger.exception(
                "posting to %s failed", "http://127.0.0.1:9/hook/canary-hook-77", extra={"asset": "canary-token-0a9f"}
            )
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "canary" not in output
    [line] = json_lines(output)
    assert line["message"] == "posting to *** failed" and line["asset"] == "***"
    assert "RuntimeError: the source rejected ***" in line["exc"]


def test_the_other_processes_log_json_lines_through_one_function(tmp_path):
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("exporter", stream=stream)
        logging.getLogger("pipeline_project.observability.exporter").info("serving", extra={"url": "http://x"})
        logging.getLogger("some.library").debug("not at INFO")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    [line] = json_lines(stream.getvalue())
    assert line["process"] == "exporter" and line["message"] == "serving" and line["url"] == "http://x"
    assert {"ts", "level", "logger", "pid"} <= set(line)

    # The demo source as make dev starts it: what it says while landing files is JSON on stderr.
    landed = subprocess.run(
        [sys.executable, "-m", "demo_source", "land", "--landing-dir", str(tmp_path), "--days", "1"]
        + ["--scale", "0.01", "--end-date", DAY.isoformat()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "SHOP_DEMO_SCALE": "1"},
    )
    [record] = json_lines(landed.stderr)
    assert record["process"] == "demo_source" and record["message"].startswith(f"landed web events of {DAY}")


def test_a_record_logged_after_dagster_closed_the_handler_still_reaches_the_file(monkeypatch, tmp_path, capsys):
    """Dagster closes a run's handlers when its steps are done and still logs the run's last engine events."""
    monkeypatch.setenv("PIPELINE_LOG_DIR", str(tmp_path))
    handler = JsonLinesHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.handle(logging.makeLogRecord({"msg": "steps finished", "levelno": logging.INFO}))
    handler.close()
    handler.handle(logging.makeLogRecord({"msg": "run finished", "levelno": logging.INFO}))
    handler.close()
    assert (tmp_path / RUNS_LOG_FILE).read_text().splitlines() == ["steps finished", "run finished"]
    assert "Logging error" not in capsys.readouterr().err
