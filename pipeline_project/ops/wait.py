"""Waiting for something to become true, the one way every tool and drill here does it: poll, with a
deadline, and fail with what was awaited and what was seen last; and waiting for a child process to stop."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """What was awaited did not happen in time; the message says what it was and what was seen last."""


def wait_until(
    check: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 1.0,
    describe: Callable[[T], str] | None = None,
) -> T:
    """Call `check` until it returns something truthy, and return that; after `timeout` seconds raise
    WaitTimeout naming `what` (and the last value, through `describe` if given)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            last = describe(value) if describe else repr(value)
            raise WaitTimeout(f"{what}: still not the case after {timeout:.0f} s (last seen: {last})")
        time.sleep(min(interval, remaining))


def stop_process(process: subprocess.Popen | None, timeout: float = 10) -> None:
    """Ask a child process to stop (SIGTERM), give it `timeout` seconds, then kill it; nothing if it is gone."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
