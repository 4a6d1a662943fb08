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

Links. Upstream writes below LANDING_DIR, so nothing there is trusted to be what its path says: every
operation here is relative to directory descriptors opened without following a link (`landing_fs` says how,
and why descriptors rather than checked paths).

A folder that is a link (or not a folder) fails the load with a `LandingLinkError` naming it, before anything
is moved; claimed files stay where they are for the next load, once someone has removed the link. A file that
is a link is rejected as `symlink`, in `incoming/` and in `archived/` alike. The one step that opens files by
path is the reader (`landing_reader.iter_landing_batches`, which refuses a link as the file itself): right before
every build the folders of the paths it gets are opened as above and each file checked to be a regular file,
so a planted link is refused; a folder swapped for a link between that check and the read (a race by someone
who can write the table folder) is not covered until the reader, too, opens files relative to a descriptor.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TypeVar

from pipeline_project.ingest.landing_fs import (
    LandingLinkError,
    closing,
    lstat,
    open_child,
    open_folder,
    opened_folder,
    read_regular,
    refusal,
    remove,
    sha256_of_regular_file,
)
from pipeline_project.ingest.landing_reader import UnreadableLandingFile
from pipeline_project.lake.file_lock import exclusive_lock

DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024
LOCK_WAIT_SECONDS = 300.0
REASON_SUFFIX = ".reason.json"
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=-]{0,199}\.jsonl$")
SAFE_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
SAFE_TABLE = re.compile(r"^[A-Za-z0-9_]{1,100}$")

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


def incoming_days(landing_dir: Path, table: str) -> list[str]:
    """The names in the table's `incoming/` folder (a day's folder each, if upstream follows the layout)."""
    with opened_folder(Path(landing_dir), (table, "incoming")) as folder:
        return sorted(os.listdir(folder)) if folder is not None else []


def incoming_files(landing_dir: Path, table: str, day: date) -> list[Path]:
    """What a load of the day would claim now (everything in its incoming folder but in-flight uploads)."""
    key = day.isoformat()
    with opened_folder(Path(landing_dir), (table, "incoming", key)) as folder:
        if folder is None:
            return []
        path = Path(landing_dir) / table / "incoming" / key
        return sorted(path / name for name in os.listdir(folder) if not is_in_flight(name))


def read_rejections(landing_dir: Path, table: str, day: date) -> list[Rejection]:
    """The reason files of the day's rejected files; a reason file that is a link (or not a file) is not read
    but reported as a rejection of its own, `unreadable_reason_file`, naming it."""
    key = day.isoformat()
    with opened_folder(Path(landing_dir), (table, "rejected", key)) as folder:
        if folder is None:
            return []
        path = Path(landing_dir) / table / "rejected" / key
        found = []
        for name in sorted(os.listdir(folder)):
            if not name.endswith(REASON_SUFFIX) or name.startswith("."):
                continue
            try:
                found.append(Rejection(**json.loads(read_regular(folder, name, path / name))))
            except LandingLinkError as refused:
                file = name.removesuffix(REASON_SUFFIX)
                found.append(Rejection("unreadable_reason_file", str(refused), file, None, None, None, "", ""))
        return found


class LandingDay:
    """One run's load of one table's day of landing files (see the module docstring for the protocol)."""

    def __init__(
        self, landing_dir: Path, table: str, day: date, run_id: str, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    ) -> None:
        if not SAFE_RUN_ID.match(run_id):
            raise ValueError(f"run id {run_id!r} cannot name a processing folder")
        if not SAFE_TABLE.match(table):
            raise ValueError(f"table {table!r} cannot name a landing folder")
        if max_file_bytes <= 0:
            raise ValueError(f"LANDING_MAX_FILE_BYTES must be a positive number of bytes, not {max_file_bytes}")
        self.root = Path(landing_dir)
        self.table = table
        self.table_dir = self.root / table
        self.day = day
        self.run_id = run_id
        self.max_file_bytes = max_file_bytes
        self.key = key = day.isoformat()
        self.incoming = self.table_dir / "incoming" / key
        self.processing_root = self.table_dir / "processing" / key
        self.processing = self.processing_root / run_id
        self.archived = self.table_dir / "archived" / key
        self.rejected = self.table_dir / "rejected" / key
        self.lock_path = self.table_dir / "processing" / f"{key}.lock"
        self.rejections: list[Rejection] = []

    def _parts(self, folder: Path) -> tuple[str, ...]:
        return folder.relative_to(self.root).parts

    def _folder(self, folder: Path, create: bool = False):
        return opened_folder(self.root, self._parts(folder), create)

    @contextmanager
    def locked(self, wait_seconds: float = LOCK_WAIT_SECONDS) -> Iterator[LandingDay]:
        """Hold the day's lock, waiting at most `wait_seconds` for a live holder, whose run id the error names."""
        with ExitStack() as stack:
            processing = stack.enter_context(self._folder(self.lock_path.parent, create=True))
            try:
                stack.enter_context(
                    exclusive_lock(
                        Path(self.lock_path.name),
                        self.run_id,
                        wait_seconds,
                        busy=lambda holder: LandingDayBusy(
                            f"{self.table} {self.day}: landing files are being loaded by run {holder}; "
                            f"waited {wait_seconds:g} s for it to finish"
                        ),
                        dir_fd=processing,
                    )
                )
            except OSError as error:
                if error.errno == errno.ELOOP:
                    raise LandingLinkError(
                        f"{self.lock_path} is a symbolic link; landing paths are never followed"
                    ) from None
                raise
            yield self

    def check_folders(self) -> None:
        """Raise LandingLinkError if any folder of the day (or a claim folder in `processing/`) is a link."""
        for folder in (self.incoming, self.archived, self.rejected):
            with self._folder(folder):
                pass
        with self._folder(self.processing_root) as processing:
            for name in sorted(os.listdir(processing)) if processing is not None else []:
                info = lstat(processing, name)
                if info is not None and stat.S_ISLNK(info.st_mode):
                    raise refusal(self.processing_root / name, processing, name)

    def claim(self) -> None:
        """Take over the day's orphaned and incoming files into this run's folder and reject the unfit ones."""
        self.check_folders()  # before anything moves
        with ExitStack() as stack:
            day = closing(stack, open_folder(self.root, self._parts(self.processing_root), create=True))
            claimed = closing(stack, open_child(day, self.run_id, self.processing, create=True))
            for name in sorted(os.listdir(day)):
                info = lstat(day, name)
                if name == self.run_id or info is None or not stat.S_ISDIR(info.st_mode):
                    continue  # a link here was refused by check_folders; the lock file is not in this folder
                orphan = open_child(day, name, self.processing_root / name)
                if orphan is None:
                    continue
                try:
                    self._move_all(orphan, claimed)
                    empty = not os.listdir(orphan)
                finally:
                    os.close(orphan)
                if empty:
                    os.rmdir(name, dir_fd=day)
            incoming = closing(stack, open_folder(self.root, self._parts(self.incoming)))
            if incoming is not None:
                self._move_all(incoming, claimed, skip=is_in_flight)
            os.fsync(claimed)
            for name in sorted(os.listdir(claimed)):
                self._screen(claimed, name)

    @staticmethod
    def _move_all(source: int, target: int, skip: Callable[[str], bool] = lambda name: False) -> None:
        """Rename every entry into this run's folder; one already claimed under that name waits for the next load."""
        for name in sorted(os.listdir(source)):
            if skip(name) or lstat(target, name) is not None:
                continue
            try:
                os.rename(name, name, src_dir_fd=source, dst_dir_fd=target)  # a link is moved, never followed
            except FileNotFoundError:
                continue  # upstream withdrew it between the listing and the rename

    def _screen(self, folder: int, name: str) -> None:
        info = lstat(folder, name)
        if info is None:
            return
        if stat.S_ISLNK(info.st_mode):
            self._reject(folder, name, "symlink", "a symbolic link; links are never followed")
        elif not stat.S_ISREG(info.st_mode):
            self._reject(folder, name, "not_a_regular_file", "not a regular file")
        elif not is_safe_name(name):
            detail = "the name is not a plain `<letters, digits, _ . = ->.jsonl` file name"
            self._reject(folder, name, "unsafe_name", detail)
        elif info.st_size > self.max_file_bytes:
            detail = f"{info.st_size} bytes, over LANDING_MAX_FILE_BYTES={self.max_file_bytes}"
            self._reject(folder, name, "too_large", detail)

    def _screen_before_build(self) -> None:
        """What the reader is about to open by path: archived and claimed files that are regular files, in
        folders that are not links (see "Links" in the module docstring)."""
        with self._folder(self.archived) as archived:
            for name in sorted(os.listdir(archived)) if archived is not None else []:
                info = lstat(archived, name)
                if info is not None and stat.S_ISLNK(info.st_mode):
                    self._reject(archived, name, "symlink", "a symbolic link in archived/; links are never followed")
                elif info is not None and not stat.S_ISREG(info.st_mode):
                    self._reject(archived, name, "not_a_regular_file", "not a regular file (in archived/)")
        with self._folder(self.processing) as claimed:
            for name in sorted(os.listdir(claimed)) if claimed is not None else []:
                self._screen(claimed, name)

    def files(self) -> list[Path]:
        """The files the partition is built from: archived ones, replaced by newer claims of the same name."""
        by_name = {}
        for folder in (self.archived, self.processing):
            with self._folder(folder) as descriptor:
                if descriptor is not None:
                    by_name |= {name: folder / name for name in os.listdir(descriptor)}
        return [by_name[name] for name in sorted(by_name)]

    def load(self, build: Callable[[list[Path]], Loaded]) -> Loaded:
        """Build the partition from `files()`; a file that proves unreadable is rejected and the build restarts
        without it. Archives the claimed files once `build` has returned (it commits the partition)."""
        while True:
            self._screen_before_build()
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
        with ExitStack() as stack:
            processing = closing(stack, open_folder(self.root, self._parts(self.processing_root.parent)))
            day = closing(stack, open_child(processing, self.key, self.processing_root))
            claimed = closing(stack, open_child(day, self.run_id, self.processing))
            names = sorted(os.listdir(claimed))
            if names:
                archived = closing(stack, open_folder(self.root, self._parts(self.archived), create=True))
                rejected = closing(stack, open_folder(self.root, self._parts(self.rejected)))
                for name in names:
                    os.replace(name, name, src_dir_fd=claimed, dst_dir_fd=archived)
                    for superseded in (name, f"{name}{REASON_SUFFIX}") if rejected is not None else ():
                        remove(rejected, superseded)
                os.fsync(archived)
            os.rmdir(self.run_id, dir_fd=day)
            if not os.listdir(day):
                os.rmdir(self.key, dir_fd=processing)

    def reject(self, path: Path, reason: str, detail: str, first_bad_line: int | None = None) -> Rejection:
        """Move a claimed or archived file to `rejected/` with its reason file (written first, so a crash never
        leaves a bare file)."""
        path = Path(path)
        if path.parent not in (self.processing, self.archived):
            raise ValueError(f"{path} is neither a claimed nor an archived file of {self.table} {self.day}")
        with self._folder(path.parent) as folder:
            if folder is None:
                raise FileNotFoundError(f"{path.parent} does not exist")
            return self._reject(folder, path.name, reason, detail, first_bad_line)

    def _reject(self, folder: int, name: str, reason: str, detail: str, first_bad_line: int | None = None) -> Rejection:
        info = os.stat(name, dir_fd=folder, follow_symlinks=False)
        stored = name if is_safe_name(name) else self._unsafe_alias(name)
        rejection = Rejection(
            reason=reason,
            detail=detail,
            file=name,
            size=info.st_size,
            sha256=sha256_of_regular_file(folder, name) if stat.S_ISREG(info.st_mode) else None,
            first_bad_line=first_bad_line,
            run_id=self.run_id,
            rejected_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        with self._folder(self.rejected, create=True) as rejected:
            reason_name = f"{stored}{REASON_SUFFIX}"
            temporary = f".{reason_name}.{self.run_id}.tmp"
            remove(rejected, temporary)  # left by a crashed attempt of this run
            descriptor = os.open(
                temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=rejected
            )
            with os.fdopen(descriptor, "w") as handle:
                handle.write(json.dumps(asdict(rejection), indent=2))
            os.replace(temporary, reason_name, src_dir_fd=rejected, dst_dir_fd=rejected)
            remove(rejected, stored)  # an earlier rejected delivery of the same name
            os.rename(name, stored, src_dir_fd=folder, dst_dir_fd=rejected)
            os.fsync(rejected)
        self.rejections.append(rejection)
        return rejection

    @staticmethod
    def _unsafe_alias(name: str) -> str:
        return f"unsafe-name-{hashlib.sha256(name.encode(errors='surrogateescape')).hexdigest()[:16]}"
