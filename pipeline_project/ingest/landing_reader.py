"""Reading web-event landing files (JSON lines) as batches of bounded size (`iter_landing_batches`).

Which files a partition is read from, and where each file ends up, is the landing zone's (`landing_zone`).
Here a file is read line by line: a line that is not a record is set aside to be quarantined (`BadLine`),
and a file that cannot be read as JSON lines at all (a symlink, not a regular file, too large, binary) is
refused whole (`UnreadableLandingFile`), which the landing zone turns into a rejection.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import orjson
import polars as pl

from pipeline_project.ingest.extraction import BadLine, ExtractStats, observed_frame
from pipeline_project.quality.contracts import BATCH_ROWS, RawTableContract


class UnreadableLandingFile(Exception):
    """A landing file that cannot be read as UTF-8 JSON lines at all: the message names the file, the line
    and why. (A file whose records merely break the contract is readable; those records are quarantined.)"""

    def __init__(self, path: Path, reason: str, detail: str, line_number: int | None = None) -> None:
        where = f" at line {line_number}" if line_number is not None else ""
        super().__init__(f"landing file {path.name}{where}: {detail}")
        self.path = path
        self.reason = reason
        self.detail = detail
        self.line_number = line_number


_BOM = b"\xef\xbb\xbf"
LINE_EXCERPT_BYTES = 1000
# As `git` and `file` do: a NUL byte near the start means the file is binary, not text.
BINARY_SNIFF_BYTES = 8192


def iter_landing_batches(
    contract: RawTableContract,
    files: list[Path],
    stats: ExtractStats,
    batch_rows: int = BATCH_ROWS,
    max_file_bytes: int | None = None,
    batch_bytes: int = 32 * 1024 * 1024,
) -> Iterator[pl.DataFrame]:
    """Yield the records of landing files as batches, line by line.

    Every non-blank line read counts in `stats.fetched_count`, which is the landing's control figure. A line
    that is not a JSON object (cut short, not UTF-8, a bare value) is not a record: it goes to
    `stats.bad_lines`, which the caller quarantines with the file name and line number, and the rest of the
    file loads. A UTF-8 byte-order mark and CRLF line ends are accepted. Batches are bounded by `batch_rows`
    lines and `batch_bytes` bytes, so memory is bounded by the batch, not the file. A file is never opened
    through a symlink; one over `max_file_bytes`, or one holding a NUL byte (binary, not JSON lines), is
    refused whole (UnreadableLandingFile) before any of it is loaded.
    """
    for path in files:
        stats.files.append(path.name)
        stats.source = f"landing file {path}"
        with _open_without_following(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            if max_file_bytes is not None and size > max_file_bytes:
                raise UnreadableLandingFile(path, "too_large", f"{size} bytes, over the cap of {max_file_bytes}")
            stats.bytes_read += size
            if b"\x00" in os.pread(handle.fileno(), BINARY_SNIFF_BYTES, 0):
                raise UnreadableLandingFile(path, "binary", "holds NUL bytes: not JSON lines", 1)
            line_number = 0
            while True:
                records: list[dict] = []
                batch_size = 0
                for line in handle:
                    line_number += 1
                    if line_number == 1 and line.startswith(_BOM):
                        line = line[len(_BOM) :]
                    if line.isspace() or not line:
                        continue
                    if b"\x00" in line:
                        raise UnreadableLandingFile(path, "binary", "holds NUL bytes: not JSON lines", line_number)
                    stats.fetched_count += 1
                    record = _json_line(path.name, line_number, line, stats)
                    if record is not None:
                        records.append(record)
                    batch_size += len(line)
                    if len(records) >= batch_rows or batch_size >= batch_bytes:
                        break
                else:
                    if records or stats.bad_lines:
                        yield observed_frame(records)
                    break
                yield observed_frame(records)
    if not files:
        yield observed_frame([])


def _json_line(file_name: str, line_number: int, line: bytes, stats: ExtractStats) -> dict | None:
    """The JSON object a line holds, or None after recording it as a bad line."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        problem = "not_utf8" if "utf-8" in str(error).lower() else "malformed_json"
    else:
        if isinstance(record, dict):
            return record
        problem = f"json_{type(record).__name__}_not_object"
    excerpt = line[:LINE_EXCERPT_BYTES].decode("utf-8", "replace").rstrip("\r\n")
    stats.bad_lines.append(BadLine(file_name, line_number, problem, excerpt))
    return None


def _open_without_following(path: Path):
    """Open a regular file for reading; a symlink is refused, and a FIFO cannot block the read (O_NONBLOCK)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnreadableLandingFile(path, "symlink", "is a symbolic link, which is never followed") from None
        raise
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise UnreadableLandingFile(path, "not_a_regular_file", "is not a regular file")
    return os.fdopen(descriptor, "rb")
