"""The demo shop's landing zone: web events dropped as JSON-lines files, the way a tracking vendor would.

This module owns the file layout and how files appear in it:
`<landing_dir>/web_events/incoming/YYYY-MM-DD/events-YYYY-MM-DD-HH.jsonl` for HH in 00, 06, 12, 18, each
holding the day's events with occurred_at in [HH:00, HH+6:00), one JSON object per line in event_id order.
Files appear atomically (a reader sees the old file or the new one, never half of one), and rewriting a
day gives byte-identical files, so landing a day twice is harmless.
"""

from __future__ import annotations

import os
import tempfile
from datetime import date
from pathlib import Path

from demo_source.encoding import encode_lines
from demo_source.records import gc_paused
from demo_source.world import ShopWorld

WINDOW_HOURS = 6


def landing_path(landing_dir: Path, day: date, hour: int) -> Path:
    day_folder = Path(landing_dir) / "web_events" / "incoming" / day.isoformat()
    return day_folder / f"events-{day.isoformat()}-{hour:02d}.jsonl"


def write_landing_files(landing_dir: Path, day: date, world: ShopWorld) -> list[Path]:
    """Write the four web-event files of `day` (an empty window still gets an empty file); return them."""
    windows: list[list[dict]] = [[] for _ in range(24 // WINDOW_HOURS)]
    with gc_paused():  # half a million short-lived dicts at scale 10
        # Rows are tuples in WEB_EVENT_COLUMNS order, sorted by event_id.
        for (
            event_id,
            session_id,
            customer_id,
            event_type,
            product_id,
            page_path,
            occurred_at,
        ) in world._web_event_rows(day):
            windows[occurred_at.hour // WINDOW_HOURS].append(
                {
                    "event_id": event_id,
                    "session_id": session_id,
                    "customer_id": customer_id,
                    "event_type": event_type,
                    "product_id": product_id,
                    "page_path": page_path,
                    "occurred_at": occurred_at,
                }
            )
        contents = [encode_lines(events) for events in windows]
    paths = []
    for index, chunks in enumerate(contents):
        path = landing_path(landing_dir, day, index * WINDOW_HOURS)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, chunks)
        paths.append(path)
    _fsync_directory(paths[0].parent)  # make the renames themselves durable
    return paths


def _write_atomically(path: Path, chunks: list[bytes | memoryview]) -> None:
    # The temp file lives in the target directory (os.replace must not cross filesystems) and starts with
    # a dot, so readers globbing events-*.jsonl never pick up a half-written file.
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.writelines(chunks)
            file.flush()
            os.fchmod(file.fileno(), 0o644)  # mkstemp's 0600 would hide the file from other readers
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
