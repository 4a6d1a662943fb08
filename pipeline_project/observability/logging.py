"""JSON-lines logs: one JSON object per line, with the run, step, asset and partition it is about, and
every secret setting's value scrubbed (`secrets.redact`) from every field.

Two ways in, one format:
- Dagster runs: `dagster.yaml`'s `python_logs` attaches a `JsonLinesHandler` with `JsonFormatter` to every
  run's log manager (stderr, or `$PIPELINE_LOG_DIR/runs.jsonl` under `make run` and `make dev`), and names
  `pipeline_project` a managed logger, so warnings of the pipeline's own modules (the
  source client's retries) are captured into the run's event log too. Records from a run carry Dagster's
  metadata; the formatter lifts run id, job, step, the event type, and the asset and partition of asset
  events (a plain log line inside a step has its step, whose name is the asset's for single-asset steps,
  and the run's partition or partition range).
- Every other process of the pipeline (the exporter, the demo source, `make dev` itself) calls
  `configure_logging(process)` once at start. Dagster's own services (webserver, daemon, code server) are
  started by `make dev` with `--log-format json`.

Fields: `ts` (UTC, ISO 8601), `level`, `logger`, `process`, `pid`, `message`, and when known `run_id`,
`job`, `step`, `event`, `asset`, `check`, `partition`, `exc` (the traceback). Extra fields passed with
`logger.info(..., extra={"asset": ...})` are kept when they are JSON scalars.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pipeline_project.secrets import redact

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD_ATTRIBUTES = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_DAGSTER_ATTRIBUTES = {"dagster_meta", "dagster_event", "dagster_event_batch_metadata"}


def _partition_of_tags(tags: dict[str, str]) -> str | None:
    if partition := tags.get(PARTITION_TAG):
        return partition
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if start and end:
        return start if start == end else f"{start}..{end}"
    return None


def _dagster_context(meta: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = {
        "run_id": meta.get("run_id"),
        "job": meta.get("job_name"),
        "step": meta.get("step_key"),
        "partition": _partition_of_tags(dict(meta.get("job_tags") or {})),
    }
    event = meta.get("dagster_event")
    if event is not None:
        context["event"] = event.event_type_value
        try:
            asset_key, partition = event.asset_key, event.partition
        except Exception:  # an event whose data does not have the fields its type promises
            asset_key, partition = None, None
        data = event.event_specific_data
        # Check evaluations name their asset in their data. (Duck-typed: this module must not import
        # dagster, so the processes that only log stay light.)
        if asset_key is None and hasattr(getattr(data, "asset_key", None), "to_user_string"):
            asset_key, partition = data.asset_key, getattr(data, "partition", None)
        if isinstance(getattr(data, "check_name", None), str):
            context["check"] = data.check_name
        if asset_key is not None:
            context["asset"] = asset_key.to_user_string()
        if partition:
            context["partition"] = partition
    return context


def _scrub(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring for the fields)."""

    def __init__(self, process: str | None = None) -> None:
        super().__init__()
        self.process_name = process or Path(sys.argv[0]).name or "python"

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None)
        message = meta.get("orig_message", record.getMessage()) if isinstance(meta, dict) else record.getMessage()
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": self.process_name,
            "pid": record.process,
            "message": message,
        }
        if isinstance(meta, dict):
            payload.update({name: value for name, value in _dagster_context(meta).items() if value is not None})
        for name, value in record.__dict__.items():
            if name in _STANDARD_ATTRIBUTES or name in _DAGSTER_ATTRIBUTES or name in payload:
                continue
            if isinstance(value, str | int | float | bool) or value is None:
                payload[name] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exc"] = record.exc_text
        return json.dumps({name: _scrub(value) for name, value in payload.items()}, ensure_ascii=False, default=str)


RUNS_LOG_FILE = "runs.jsonl"


class JsonLinesHandler(logging.StreamHandler):
    """Where a run's JSON lines go: `$PIPELINE_LOG_DIR/runs.jsonl` when PIPELINE_LOG_DIR is set (`make run`
    and `make dev` set it, so their terminals keep their own progress lines and every run appends to one
    file), else stderr (a container's log). Each line is written whole with one write, in append mode."""

    def __init__(self) -> None:
        directory = os.environ.get("PIPELINE_LOG_DIR")
        self._path = Path(directory) / RUNS_LOG_FILE if directory else None
        self._file = None
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._path, "a", encoding="utf-8")  # noqa: SIM115
        super().__init__(self._file or sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        # Dagster closes the run's handlers when the run's steps are done, then still logs the run's last
        # engine events through them: those lines go to the file reopened, not to a "Logging error".
        if self._file is not None and self._file.closed:
            self._file = self.stream = open(self._path, "a", encoding="utf-8")  # noqa: SIM115
        super().emit(record)

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._file is not None:
                self._file.close()


def configure_logging(process: str, level: int | str = logging.INFO, stream: TextIO | None = None) -> logging.Handler:
    """Send this process's logs, as JSON lines, to stderr (or `stream`); replaces the root logger's handlers.

    `PIPELINE_LOG_LEVEL` (default INFO) overrides `level`.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(process))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(os.environ.get("PIPELINE_LOG_LEVEL") or level)
    logging.captureWarnings(True)
    return handler
