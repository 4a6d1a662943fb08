"""The circuit breaker at its edges: a half-open probe interrupted by something that is not an `Exception`
(the run being terminated) must not leave the breaker stuck open, and a 200 whose body was cut short counts
as a failed attempt, not as a source that is up.

The interrupted probe goes through the real `ShopApiClient` (its HTTP transport answers in memory), so the
test proves what a run would see, not only what the breaker's methods do."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

import httpx
import pytest
from dagster._core.errors import DagsterExecutionInterruptedError

from pipeline_project.ingest.circuit_breaker import CircuitBreaker, CircuitOpenError
from pipeline_project.ingest.extraction import ExtractStats
from pipeline_project.ingest.source_errors import SourceError
from pipeline_project.ingest.sources import ShopApiClient
from pipeline_project.quality.contracts import RAW_CONTRACTS

DAY = date(2026, 3, 14)
EMPTY_PAGE = b'{"data": [], "next_cursor": null, "total": 0}'
TRUNCATED_PAGE = b'{"data": [{"order_id": 1, "customer'


class ManualClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 15, 2, 15, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Source:
    """An in-memory HTTP source: answers 503 while down, an empty page while up; or interrupts the caller."""

    def __init__(self) -> None:
        self.down = True
        self.interrupt_next = False
        self.requests = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.interrupt_next:
            self.interrupt_next = False
            # What dagster raises in the step's thread when the run is terminated mid-request.
            raise DagsterExecutionInterruptedError("run terminated")
        return _answer(503, b"down") if self.down else _answer(200, EMPTY_PAGE)


def _answer(status: int, body: bytes) -> httpx.Response:
    """A response whose body is streamed, as from a socket (the client reads bodies as they arrive)."""
    return httpx.Response(status, stream=httpx.ByteStream(body), headers={"Content-Type": "application/json"})


def _client(source: Source, breaker: CircuitBreaker) -> ShopApiClient:
    client = ShopApiClient("http://shop.test", "token", max_attempts=1, breaker=breaker)
    client._client = httpx.Client(base_url="http://shop.test", transport=httpx.MockTransport(source.handle))
    return client


def _read_day(client: ShopApiClient) -> ExtractStats:
    stats = ExtractStats()
    list(client.iter_batches(RAW_CONTRACTS["orders"], DAY, stats))
    return stats


def test_a_probe_interrupted_by_run_termination_does_not_leave_the_breaker_stuck():
    clock, source = ManualClock(), Source()
    breaker = CircuitBreaker("shop.test", failure_threshold=2, cooldown_seconds=60, clock=clock)
    with _client(source, breaker) as client:
        for _ in range(2):
            with pytest.raises(SourceError, match="HTTP 503"):
                _read_day(client)
        assert breaker.is_open and source.requests == 2

        clock.advance(60)
        source.interrupt_next = True
        with pytest.raises(DagsterExecutionInterruptedError):
            _read_day(client)
        assert source.requests == 3, "the probe went out and was interrupted"

        # The source is back. The interrupted probe settled nothing: the next request of this thread is the
        # probe (before the fix every request failed fast with "a probe request is in flight", for good).
        source.down = False
        stats = _read_day(client)
    assert stats.pages == 1 and source.requests == 4
    assert not breaker.is_open


def test_a_probe_abandoned_by_another_thread_is_given_up_after_one_cooldown():
    clock = ManualClock()
    breaker = CircuitBreaker("shop.test", failure_threshold=1, cooldown_seconds=60, clock=clock)
    breaker.before_request()
    breaker.record_failure("HTTP 503")
    clock.advance(60)

    def probe_and_die() -> None:
        breaker.before_request()  # the probe; its thread ends without recording anything

    thread = threading.Thread(target=probe_and_die)
    thread.start()
    thread.join()
    with pytest.raises(CircuitOpenError, match="a probe request is in flight"):
        breaker.before_request()
    clock.advance(59)
    with pytest.raises(CircuitOpenError, match="a probe request is in flight"):
        breaker.before_request()
    clock.advance(1)
    breaker.before_request()  # one cool-down later the abandoned probe is given up; this is the new probe
    breaker.record_success()
    assert not breaker.is_open


class Truncating(Source):
    """Up, but every 200 it sends is cut short: JSON that ends early under a matching Content-Length."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return _answer(503, b"down") if self.down else _answer(200, TRUNCATED_PAGE)


def test_a_200_whose_body_was_cut_short_counts_as_a_failure():
    source = Truncating()
    source.down = False
    breaker = CircuitBreaker("shop.test", failure_threshold=3, cooldown_seconds=60, clock=ManualClock())
    with _client(source, breaker) as client:
        for _ in range(3):
            with pytest.raises(SourceError, match="bytes that are not complete JSON"):
                _read_day(client)
        assert breaker.is_open, "three cut-short bodies in a row are three failed attempts"
        with pytest.raises(SourceError, match=r"after 3 consecutive failed requests \(last: UnreadableBody\)"):
            _read_day(client)
    assert source.requests == 3, "no request once the circuit is open"


def test_a_half_open_probe_answered_by_a_cut_short_200_reopens_the_circuit():
    clock, source = ManualClock(), Truncating()
    breaker = CircuitBreaker("shop.test", failure_threshold=2, cooldown_seconds=60, clock=clock)
    with _client(source, breaker) as client:
        for _ in range(2):
            with pytest.raises(SourceError, match="HTTP 503"):
                _read_day(client)
        clock.advance(60)
        source.down = False
        with pytest.raises(SourceError, match="not complete JSON"):
            _read_day(client)
        assert breaker.is_open
        with pytest.raises(SourceError, match="next try at 2026-03-15T02:17:00Z"):
            _read_day(client)
    assert source.requests == 3


def test_a_readable_body_is_a_success():
    source = Source()
    breaker = CircuitBreaker("shop.test", failure_threshold=2, cooldown_seconds=60, clock=ManualClock())
    with _client(source, breaker) as client:
        with pytest.raises(SourceError, match="HTTP 503"):
            _read_day(client)
        source.down = False
        _read_day(client)
        source.down = True
        with pytest.raises(SourceError, match="HTTP 503"):
            _read_day(client)
    assert not breaker.is_open, "the readable 200 reset the count"
