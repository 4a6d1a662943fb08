"""The landing-file lifecycle: which files a day's partition is built from, and where each file ends up.

Layout under LANDING_DIR, per table (the day is always explicit in the path):

    <table>/incoming/YYYY-MM-DD/<name>.jsonl             upstream drops files here
    <table>/processing/YYYY-MM-DD/<run_id>/<name>.jsonl  claimed by run <run_id>
    <table>/processing/YYYY-MM-DD.lock                   held by the one step that is loading that day
    <table>/archived/YYYY-MM-DD/<name>.jsonl             loaded: part of the committed partition
    <table>/rejected/YYYY-MM-DD/<name>                   refused, with <name>.reason.json beside it

Upstream writes each file under a temporary name `.<anything>.tmp` in the day's incoming folder and renames
it into place, so a half-written file is never claimed. Files are identified by their name within their day:
a file delivered again under the same name replaces the earlier version once it is accepted, and a rejected
redelivery leaves an archived earlier version (and its rows) in place.

Loading a day (`LandingDay`):
1. Lock the day (`flock`, released by the kernel if the process dies), so two runs never build one day at
   once. Whoever holds the lock is the only live loader, so every other run's `processing/` folder for the
   day belongs to a run that died or gave up: its files are reclaimed, never lost.
2. Claim every file in `incoming/` with one `os.rename` into this run's `processing/` folder, then screen
   it there, where upstream can no longer swap it: unsafe names, symlinks (moved as links, never followed),
   anything that is not a regular file, and files over the size cap are rejected before any parsing.
3. Build the partition from all of the day's archived files plus the claimed ones, so a later file for a day
   adds to its earlier files' rows and a rerun gives the same rows. A file that turns out not to be JSON
   lines at all is rejected with the first bad line, and the partition is rebuilt without it.
4. After the partition's manifest is committed, move the claimed files to `archived/`. A crash before that
   leaves them in `processing/`, and the next load of the day reclaims them.

The lock is an advisory `flock`: every process that loads a landing directory must see the same locks (one
machine, or a shared filesystem with working `flock`, such as NFSv4). Lock files stay in place (tiny) because
removing a lock file that another process may be about to open is a race.

Empty files are accepted: an empty JSON-lines file holds no records (the demo source writes one for a quiet
window). Every rejection writes a reason file: reason, detail, file, size, sha256, first bad line, run id,
time; unsafe names are stored as `unsafe-name-<hash>`, the original name being kept in the reason file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TypeVar

from pipeline_project.file_lock import exclusive_lock
from pipeline_project.sources import UnreadableLandingFile

DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024
LOCK_WAIT_SECONDS = 300.0
REASON_SUFFIX = ".reason.json"
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=-]{0,199}\.jsonl$")
SAFE_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")

Loaded = TypeVar("Loaded")


def is_in_flight(name: str) -> bool:
    """A file upstream is still writing, by the convention `.<anything>.tmp`; it is left alone."""
    return name.startswith(".") and name.endswith(".tmp")


def is_safe_name(name: str) -> bool:
    return bool(SAFE_NAME.match(name)) and ".." not in name


class LandingDayBusy(Exception):
    """Another live process is loading the same table and day."""


@dataclass(frozen=True)
class Rejection:
    """What `<name>.reason.json` records about a refused file."""

    reason: str
    detail: str
    file: str
    size: int | None
    sha256: str | None
    first_bad_line: int | None
    run_id: str
    rejected_at: str


def incoming_files(landing_dir: Path, table: str, day: date) -> list[Path]:
    """What a load of the day would claim now (everything in its incoming folder but in-flight uploads)."""
    folder = Path(landing_dir) / table / "incoming" / day.isoformat()
    if not _is_real_directory(folder):
        return []
    return sorted(entry for entry in folder.iterdir() if not is_in_flight(entry.name))


def read_rejections(landing_dir: Path, table: str, day: date) -> list[Rejection]:
    """The reason files of the day's rejected files."""
    folder = Path(landing_dir) / table / "rejected" / day.isoformat()
    if not _is_real_directory(folder):
        return []
    return [Rejection(**json.loads(path.read_text())) for path in sorted(folder.glob(f"*{REASON_SUFFIX}"))]


def _is_real_directory(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _sha256_of_regular_file(path: Path) -> str | None:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        digest = hashlib.sha256()
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
        return digest.hexdigest()


def _remove(path: Path) -> None:
    if _is_real_directory(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class LandingDay:
    """One run's load of one table's day of landing files (see the module docstring for the protocol)."""

    def __init__(
        self, landing_dir: Path, table: str, day: date, run_id: str, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    ) -> None:
        if not SAFE_RUN_ID.match(run_id):
            raise ValueError(f"run id {run_id!r} cannot name a processing folder")
        if max_file_bytes <= 0:
            raise ValueError(f"LANDING_MAX_FILE_BYTES must be a positive number of bytes, not {max_file_bytes}")
        self.table_dir = Path(landing_dir) / table
        self.day = day
        self.run_id = run_id
        self.max_file_bytes = max_file_bytes
        key = day.isoformat()
        self.incoming = self.table_dir / "incoming" / key
        self.processing_root = self.table_dir / "processing" / key
        self.processing = self.processing_root / run_id
        self.archived = self.table_dir / "archived" / key
        self.rejected = self.table_dir / "rejected" / key
        self.lock_path = self.table_dir / "processing" / f"{key}.lock"
        self.rejections: list[Rejection] = []

    @contextmanager
    def locked(self, wait_seconds: float = LOCK_WAIT_SECONDS) -> Iterator[LandingDay]:
        """Hold the day's lock, waiting at most `wait_seconds` for a live holder, whose run id the error names."""
        with exclusive_lock(
            self.lock_path,
            self.run_id,
            wait_seconds,
            busy=lambda holder: LandingDayBusy(
                f"{self.table_dir.name} {self.day}: landing files are being loaded by run {holder}; "
                f"waited {wait_seconds:g} s for it to finish"
            ),
        ):
            yield self

    def claim(self) -> None:
        """Take over the day's orphaned and incoming files into this run's folder and reject the unfit ones."""
        if self.incoming.is_symlink():
            raise ValueError(f"{self.incoming} is a symbolic link; landing folders are never followed")
        self.processing.mkdir(parents=True, exist_ok=True)
        for orphan_folder in sorted(p for p in self.processing_root.iterdir() if p != self.processing):
            if not _is_real_directory(orphan_folder):
                continue
            self._move_all(orphan_folder)
            if not any(orphan_folder.iterdir()):
                orphan_folder.rmdir()
        if self.incoming.is_dir():
            self._move_all(self.incoming, skip=is_in_flight)
        _fsync_directory(self.processing)
        for entry in sorted(self.processing.iterdir()):
            self._screen(entry)

    def _move_all(self, source: Path, skip: Callable[[str], bool] = lambda name: False) -> None:
        """Rename every entry into this run's folder; one already claimed under that name waits for the next load."""
        for entry in sorted(source.iterdir()):
            target = self.processing / entry.name
            if skip(entry.name) or os.path.lexists(target):
                continue
            try:
                os.rename(entry, target)
            except FileNotFoundError:
                continue  # upstream withdrew it between the listing and the rename

    def _screen(self, path: Path) -> None:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            self.reject(path, "symlink", "a symbolic link; links are never followed")
        elif not stat.S_ISREG(info.st_mode):
            self.reject(path, "not_a_regular_file", "not a regular file")
        elif not is_safe_name(path.name):
            self.reject(path, "unsafe_name", "the name is not a plain `<letters, digits, _ . = ->.jsonl` file name")
        elif info.st_size > self.max_file_bytes:
            self.reject(path, "too_large", f"{info.st_size} bytes, over LANDING_MAX_FILE_BYTES={self.max_file_bytes}")

    def files(self) -> list[Path]:
        """The files the partition is built from: archived ones, replaced by newer claims of the same name."""
        by_name = {}
        for folder in (self.archived, self.processing):
            if folder.is_dir():
                by_name |= {path.name: path for path in folder.iterdir()}
        return [by_name[name] for name in sorted(by_name)]

    def load(self, build: Callable[[list[Path]], Loaded]) -> Loaded:
        """Build the partition from `files()`; a file that proves unreadable is rejected and the build restarts
        without it. Archives the claimed files once `build` has returned (it commits the partition)."""
        while True:
            files = self.files()
            try:
                loaded = build(files)
            except UnreadableLandingFile as unreadable:
                if unreadable.path not in files:
                    raise
                self.reject(unreadable.path, unreadable.reason, unreadable.detail, unreadable.line_number)
                continue
            self._archive()
            return loaded

    def _archive(self) -> None:
        claimed = sorted(self.processing.iterdir())
        if claimed:
            self.archived.mkdir(parents=True, exist_ok=True)
        for path in claimed:
            os.replace(path, self.archived / path.name)
            for superseded in (self.rejected / path.name, self.rejected / f"{path.name}{REASON_SUFFIX}"):
                _remove(superseded)
        if claimed:
            _fsync_directory(self.archived)
        self.processing.rmdir()
        if not any(self.processing_root.iterdir()):
            self.processing_root.rmdir()

    def reject(self, path: Path, reason: str, detail: str, first_bad_line: int | None = None) -> Rejection:
        """Move a file to `rejected/` with its reason file (written first, so a crash never leaves a bare file)."""
        info = os.lstat(path)
        original = path.name
        stored = original if is_safe_name(original) else self._unsafe_alias(original)
        rejection = Rejection(
            reason=reason,
            detail=detail,
            file=original,
            size=info.st_size,
            sha256=_sha256_of_regular_file(path) if stat.S_ISREG(info.st_mode) else None,
            first_bad_line=first_bad_line,
            run_id=self.run_id,
            rejected_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self.rejected.mkdir(parents=True, exist_ok=True)
        reason_path = self.rejected / f"{stored}{REASON_SUFFIX}"
        temporary = reason_path.with_name(f".{reason_path.name}.{self.run_id}.tmp")
        temporary.write_text(json.dumps(asdict(rejection), indent=2))
        os.replace(temporary, reason_path)
        target = self.rejected / stored
        _remove(target)  # an earlier rejected delivery of the same name
        os.rename(path, target)
        _fsync_directory(self.rejected)
        self.rejections.append(rejection)
        return rejection

    @staticmethod
    def _unsafe_alias(name: str) -> str:
        return f"unsafe-name-{hashlib.sha256(name.encode(errors='surrogateescape')).hexdigest()[:16]}"
