"""An exclusive advisory lock on a file (`flock`), released by the kernel when its holder dies.

Used wherever one live process at a time may do something to a piece of the pipeline's state (a day of
landing files, a raw partition). The holder writes a description of itself (run id, PID) into the lock
file, so a process that gives up waiting can say whom it waited for.

A lock file either stays in place (tiny) or, with `remove_when_released`, is deleted by its holder just
before the lock is released, so that a directory of data holds no lock files between runs. Removal is safe
because whoever acquires a lock then checks that the file it locked is still the one at the path: a waiter
that locked a file its holder had just deleted lets go and starts over on the path's current file.

With `dir_fd`, `path` is a name in the directory open as `dir_fd`, and the lock file is created, checked and
removed relative to that descriptor (the landing lifecycle uses this so that no symbolic link on the way
is followed); the directory must exist.

`flock` is advisory and per open file: every process that touches the state must take the same lock, on
one machine or on a shared filesystem with working `flock` (such as NFSv4). Two opens in one process
exclude each other too.
"""

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

POLL_SECONDS = 0.2


@contextmanager
def exclusive_lock(
    path: Path,
    holder: str,
    wait_seconds: float,
    busy: Callable[[str], Exception],
    remove_when_released: bool = False,
    dir_fd: int | None = None,
) -> Iterator[None]:
    """Hold the lock on `path`, waiting at most `wait_seconds` for a live holder; then raise
    `busy(<what the holder wrote into the lock file>)`."""
    deadline = time.monotonic() + wait_seconds
    descriptor = _acquire(path, deadline, busy, dir_fd)
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, holder.encode(), 0)
        yield
    finally:
        if remove_when_released:
            os.unlink(path, dir_fd=dir_fd)  # still this descriptor's file: nobody else holds the lock to replace it
        os.close(descriptor)  # releases the lock


def _acquire(path: Path, deadline: float, busy: Callable[[str], Exception], dir_fd: int | None) -> int:
    """An open descriptor of the file now at `path`, locked."""
    while True:
        if dir_fd is None:
            path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
        try:
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise busy(os.pread(descriptor, 200, 0).decode(errors="replace").strip() or "unknown") from None
                    time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            if _is_current(descriptor, path, dir_fd):
                return descriptor
        except BaseException:
            os.close(descriptor)
            raise
        os.close(descriptor)  # its holder removed it while we waited: lock the path's new file instead


def _is_current(descriptor: int, path: Path, dir_fd: int | None) -> bool:
    try:
        current = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    locked = os.fstat(descriptor)
    return (locked.st_dev, locked.st_ino) == (current.st_dev, current.st_ino)
