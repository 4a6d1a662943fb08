"""An exclusive advisory lock on a file (`flock`), released by the kernel when its holder dies.

Used wherever one live process at a time may do something to a piece of the pipeline's state (a day of
landing files, a raw partition). The holder writes a description of itself (run id, PID) into the lock
file, so a process that gives up waiting can say whom it waited for. Lock files stay in place (tiny):
removing a lock file that another process may be about to open is a race.

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
def exclusive_lock(path: Path, holder: str, wait_seconds: float, busy: Callable[[str], Exception]) -> Iterator[None]:
    """Hold the lock on `path`, waiting at most `wait_seconds` for a live holder; then raise
    `busy(<what the holder wrote into the lock file>)`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    current = os.pread(descriptor, 200, 0).decode(errors="replace").strip() or "unknown"
                    raise busy(current) from None
                time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, holder.encode(), 0)
        yield
    finally:
        os.close(descriptor)  # releases the lock
