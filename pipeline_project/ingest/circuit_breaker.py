"""A circuit breaker: stop sending requests to a source that keeps failing, and fail fast instead.

What counts: every failed *attempt* (a transport error or a 5xx answer), not a request whose retries are
exhausted, so the bound below holds whatever the retry settings. Any other answer (2xx, 4xx, 429) shows
the source is up and closes the count. After `failure_threshold` consecutive failures the circuit opens:
requests fail at once with `CircuitOpenError` (no network call) until `cooldown_seconds` have passed.
Then it is half-open: one caller sends one probe request while the others keep failing fast; a probe
that succeeds closes the circuit, one that fails opens it for another cool-down.

So against a source that is down, one breaker sends at most
    failure_threshold + ceil(outage_seconds / cooldown_seconds)
requests, however many pages, partitions, tables and step retries ask. One breaker serves one source
host for one run (see `ShopApiResource`), so a run's assets and step retries share it.

The client records an attempt's outcome once its body has been read: a 200 whose body was cut short is a
failed attempt, as a 5xx is, so a source whose answers keep breaking off opens the circuit, and a half-open
probe answered that way reopens it.

A probe that ends without an outcome (the run was terminated, which raises a `BaseException` such as
dagster's `DagsterExecutionInterruptedError` or `KeyboardInterrupt` past every `except Exception`) proves
nothing about the source and must not hold the circuit half-open for good. So a probe is given up
- when the thread that sent it asks to send another request (a synchronous caller does not start a
  request while its previous one is in flight, so that one was abandoned): the new request is the probe;
- by anyone, once it has been in flight for `cooldown_seconds` (its thread died or hangs).
An abandoned probe adds one request to the bound above; giving it up after a cool-down keeps one probe per
cool-down.

The clock is wall time (`time.time`), because the error message tells an operator *when* it opened and
when it will try again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime


class CircuitOpenError(Exception):
    """A request was not sent because the circuit for its host is open."""


@dataclass(frozen=True)
class _Probe:
    thread: int
    sent_at: float


def _timestamp(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CircuitBreaker:
    """Consecutive-failure circuit breaker for one source host; thread-safe."""

    def __init__(
        self,
        host: str,
        failure_threshold: int = 5,
        cooldown_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold!r}")
        if cooldown_seconds <= 0:
            raise ValueError(f"cooldown_seconds must be positive, got {cooldown_seconds!r}")
        self.host = host
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive_failures = 0
        self._last_failure = ""
        self._opened_at: float | None = None
        self._probe: _Probe | None = None

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._opened_at is not None

    def before_request(self) -> None:
        """Raise CircuitOpenError unless a request may go out now (closed, or this is the half-open probe)."""
        with self._lock:
            if self._opened_at is None:
                return
            now = self._clock()
            probe = self._probe
            if probe is not None and (
                probe.thread == threading.get_ident() or now >= probe.sent_at + self.cooldown_seconds
            ):
                self._probe = None  # abandoned without an outcome (see the module docstring)
            retry_at = self._opened_at + self.cooldown_seconds
            if now >= retry_at and self._probe is None:
                self._probe = _Probe(threading.get_ident(), now)
                return
            waiting = "a probe request is in flight" if self._probe else f"next try at {_timestamp(retry_at)}"
            raise CircuitOpenError(
                f"circuit open for {self.host} since {_timestamp(self._opened_at)} after "
                f"{self._consecutive_failures} consecutive failed requests (last: {self._last_failure}); {waiting}"
            )

    def record_success(self) -> None:
        with self._lock:
            self._consecutive_failures = 0
            self._opened_at = None
            self._probe = None

    def record_failure(self, description: str) -> None:
        """Count a failed attempt; `description` (e.g. "HTTP 503") must not hold a credential or a URL."""
        with self._lock:
            self._consecutive_failures += 1
            self._last_failure = description
            if self._probe is not None or self._consecutive_failures >= self.failure_threshold:
                self._opened_at = self._clock()
            self._probe = None
