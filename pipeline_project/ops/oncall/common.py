"""What every on-call command shares: settings, printing (always through `redact`), argument types, and
read-only handles on the Dagster instance and the alert outbox."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline_project.alerting.alert import parse_partitions
from pipeline_project.dev.environment import demo_source_wanted
from pipeline_project.dev.runtime import DevRuntime
from pipeline_project.secrets import redact
from pipeline_project.settings import DEMO_SOURCE_HOST, DEMO_TOKEN, demo_source_port, resolve_environment

if TYPE_CHECKING:
    import dagster as dg

TEXT_LIMIT = 600
METADATA_LIMIT = 2000
# The alerting resource's files under ALERT_DIR (`pipeline_project/alerting/resource.py`).
OUTBOX_FILE = "outbox.sqlite"
ALERT_LOG_FILE = "alerts.log"
HEARTBEAT_FILE = "heartbeat.json"
# The variable that holds the shop API's token: tools name it, never print its value.
TOKEN_VARIABLE = "SHOP_API_TOKEN"
RAW_PREFIX = "raw_"


class OncallError(Exception):
    """A command cannot show what it was asked for; the message names what is missing or wrong, and where."""


def say(text: str = "") -> None:
    print(redact(text), flush=True)


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [list(header), *[["-" if value is None else " ".join(str(value).split()) for value in row] for row in rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    for row in cells:
        say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def utc(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S") if timestamp else None


def clip(value: object, limit: int = TEXT_LIMIT) -> str:
    """A value (or a Dagster MetadataValue) as text of at most `limit` characters; further lines indented."""
    value = getattr(value, "value", value)
    text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value).strip()
    text = text if len(text) <= limit else " ".join(text.split())[: limit - 1] + "…"
    return text.replace("\n", "\n    ")


# ------------------------------------------------------------------------------------------ settings
def resolve_settings() -> DevRuntime | None:
    """The pipeline's settings as `make run` resolves them (environment, `.env`, defaults under `.state`),
    creating nothing; while a `make dev` of this state directory runs, the UI and demo source it serves
    (their ports may differ from the defaults). Returns that `make dev`'s runtime, if any."""
    resolve_environment(alert_settings=False)
    runtime = DevRuntime.running(os.environ["PIPELINE_STATE_DIR"])
    if runtime is not None:
        os.environ["DAGSTER_WEBSERVER_URL"] = runtime.webserver_url
    return runtime


def demo_source_url() -> str:
    """Where the demo source is: where a running `make dev` serves it, else its default address."""
    runtime = DevRuntime.running(os.environ["PIPELINE_STATE_DIR"])
    if runtime is not None and runtime.source_url:
        return runtime.source_url
    return f"http://{DEMO_SOURCE_HOST}:{demo_source_port()}"


def source_url() -> str:
    """The shop API the pipeline reads: SHOP_API_URL, else the demo source."""
    return demo_source_url() if demo_source_wanted() else os.environ["SHOP_API_URL"]


def is_demo_source() -> bool:
    """The demo source, whether SHOP_API_URL is empty or names it (as `eval "$(oncall env)"` exports it)."""
    return demo_source_wanted() or os.environ["SHOP_API_URL"].rstrip("/") == demo_source_url()


def source_token() -> str:
    """The token the pipeline sends (from the environment or `.env`; the demo's own for the demo source)."""
    token = os.environ.get(TOKEN_VARIABLE, "")
    return token or (DEMO_TOKEN if is_demo_source() else "")


def export_source_settings() -> None:
    """The shop API settings a run reads; with none configured, the demo source `make dev` serves."""
    if is_demo_source():
        os.environ["SHOP_API_URL"] = source_url()
        os.environ[TOKEN_VARIABLE] = source_token()


def raw_tables(assets: Sequence[str]) -> list[str]:
    """The raw-layer tables among asset names: `raw_<table>` is the asset of a table (`asset_checks.raw_asset_key`)."""
    return [name.removeprefix(RAW_PREFIX) for name in assets if name.startswith(RAW_PREFIX)]


# ------------------------------------------------------------------------------------------ argument types
def day_argument(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"DAY must be a date like 2026-11-21, not {text!r}") from None


def days_argument(text: str) -> tuple[str, ...]:
    try:
        days = parse_partitions(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"DAYS must be a day (2026-11-21), a range (2026-11-19...2026-11-21) or days separated by commas, "
            f"not {text!r}"
        ) from None
    if not days:
        raise argparse.ArgumentTypeError("DAYS names no day")
    return days


def table_argument(text: str) -> str:
    from pipeline_project.quality.contracts import RAW_CONTRACTS

    if text not in RAW_CONTRACTS:
        raise argparse.ArgumentTypeError(f"TABLE must be one of {', '.join(RAW_CONTRACTS)}, not {text!r}")
    return text


def count_argument(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"N must be a whole number of at least 1, not {text!r}")
    return int(text)


def names_argument(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.replace(" ", ",").split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected one or more names separated by commas")
    return names


# ------------------------------------------------------------------------------------------ Dagster instance
@contextmanager
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    import warnings

    import dagster as dg
    import yaml

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    home = Path(os.environ["DAGSTER_HOME"])
    config_path = home / "dagster.yaml"
    config = (yaml.safe_load(config_path.read_text()) if config_path.exists() else None) or {}
    # Opening a SQLite instance that never recorded a run would create its storage: refuse instead.
    if not {"storage", "run_storage"} & config.keys() and not (home / "history" / "runs.db").exists():
        raise OncallError(f"no Dagster runs recorded under DAGSTER_HOME={home}: run `make run` or `make dev` first")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def find_run(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun:
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise OncallError(f"no run {run_id} under DAGSTER_HOME={os.environ['DAGSTER_HOME']} (`runs` lists the latest)")
    return run


def partition_label(tags: dict[str, str]) -> str | None:
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
        PARTITION_NAME_TAG,
    )

    if partition := tags.get(PARTITION_NAME_TAG):
        return partition
    start, end = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    return (start if start == end else f"{start}...{end}") if start else None


# ------------------------------------------------------------------------------------------ alert outbox
@contextmanager
def outbox() -> Iterator[sqlite3.Connection]:
    """The alert outbox, opened read-only (the sensors own it; nothing here changes it)."""
    path = Path(os.environ["ALERT_DIR"]) / OUTBOX_FILE
    if not path.exists():
        raise OncallError(f"no alert outbox at {path}: no alert has been raised there yet (or ALERT_DIR is wrong)")
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        yield connection
    finally:
        connection.close()
