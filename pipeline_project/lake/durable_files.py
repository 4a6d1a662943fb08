"""Durable file primitives of the raw layer's commit: renames, directories and their fsyncs, the staging name
of a file and its checksum.

Durable against power loss, not only against a killed process: every directory a writer creates is fsynced
into its parent before anything is put in it (`make_directories`), every file is fsynced before it is renamed,
and the directory holding the new name is fsynced after each rename (`fsync_replace`). A commit
(`partition_writer`) uses them in the order of its steps (a), (b), (c), so when the manifest's rename has
reached the disk, everything it describes has too. `tests/faults/test_durability.py` traces the system calls
of a real commit and checks this order.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def fsync_directory(path: Path) -> None:
    directory = os.open(path, os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def fsync_replace(tmp: Path, final: Path) -> None:
    """Rename a complete file into place durably: its data first, then the directory entry that names it."""
    fsync(tmp)
    os.replace(tmp, final)
    fsync_directory(final.parent)


def make_directories(path: Path) -> None:
    """Create `path` and its missing parents, each made durable in its parent before anything goes into it."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        fsync_directory(directory.parent)


def staged_path(final: Path, run_id: str) -> Path:
    """Where run `run_id` writes the next version of `final` (the same directory, so the move is a rename)."""
    return final.with_name(f".{final.name}.{run_id}.tmp")
