"""The client's edges are bounded and leak nothing, against sources that misbehave below the API: real
sockets on 127.0.0.1 that trickle a body a byte at a time, declare a length they do not mean, send one huge
record or a compressed body that inflates without bound, and listings whose cursors never end. Every test
asserts on what was loaded (nothing) and on the error; none waits for an unbounded source."""

from __future__ import annotations

import contextlib
import gzip
import logging
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable
from datetime import date

import pytest
from misbehaving_source import MisbehavingSource, Misbehaviour

from pipeline_project.ingest.api_assets import load_api_partition
from pipeline_project.ingest.extraction import ExtractStats
from pipeline_project.ingest.listing_filters import day_filter
from pipeline_project.ingest.source_errors import SourceError
from pipeline_project.ingest.sources import ERROR_DETAIL_CHARS, ShopApiClient
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import RAW_CONTRACTS
from pipeline_project.secrets import scrub_urls

from harness import TOKEN

DAY = date(2026, 3, 14)
ORDERS = RAW_CONTRACTS["orders"]
SECRET_TOKEN = "tok-7Qz9-secret-value-4242"


class RawServer:
    """Answers every connection on a loopback port with `respond(connection)`: any bytes, at any pace."""

    def __init__(self, respond: Callable[[socket.socket], None]) -> None:
        self.respond = respond
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            with contextlib.suppress(OSError):  # the client hung up, as it should
                self.respond(connection)

    def close(self) -> None:
        self.listener.close()


def head(length: int | None, extra: str = "") -> bytes:
    declared = f"Content-Length: {length}\r\n" if length is not None else ""
    return f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{declared}{extra}\r\n".encode()


def client(url: str, **options) -> ShopApiClient:
    return ShopApiClient(url, TOKEN, max_attempts=1, **options)


def first_page(api: ShopApiClient) -> dict:
    return next(api._pages(ORDERS, day_filter("orders", DAY), ExtractStats(), 50))


@pytest.fixture
def raw_server():
    servers = []

    def start(respond):
        server = RawServer(respond)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def test_a_body_that_trickles_in_is_cut_at_the_response_deadline(raw_server):
    def trickle(connection):
        connection.sendall(head(1000))
        for _ in range(60):
            connection.sendall(b" ")
            time.sleep(0.3)

    server = raw_server(trickle)
    started = time.monotonic()
    api = client(server.url, timeout_seconds=1.0, response_deadline_seconds=2.0)
    with api, pytest.raises(SourceError) as err:
        first_page(api)
    elapsed = time.monotonic() - started
    assert elapsed < 4.0, "each read came within its timeout, but the whole response has a deadline"
    assert "ResponseDeadlineExceeded" in str(err.value) and "not complete after 2 s" in str(err.value)


def test_a_declared_length_over_the_cap_is_refused_before_the_body_is_read(raw_server):
    sent = []

    def liar(connection):
        connection.sendall(head(50 * 1024**3))
        sent.append(connection.send(b"{" * 1024))

    server = raw_server(liar)
    with client(server.url, max_response_bytes=1024 * 1024) as api, pytest.raises(SourceError) as err:
        first_page(api)
    assert "a body of 53687091200 bytes declared, over the cap of 1048576 bytes" in str(err.value)
    assert not err.value.retryable


@pytest.mark.parametrize("declared", [True, False], ids=["honest_length", "no_length"])
def test_one_huge_record_over_the_cap_is_refused(raw_server, declared):
    body = b'{"data":[{"order_id":1,"note":"' + b"x" * (3 * 1024 * 1024) + b'"}],"next_cursor":null,"total":1}'

    def huge(connection):
        connection.sendall(head(len(body)) if declared else head(None, "Connection: close\r\n"))
        connection.sendall(body)

    server = raw_server(huge)
    tracemalloc.start()
    with client(server.url, max_response_bytes=1024 * 1024) as api, pytest.raises(SourceError) as err:
        first_page(api)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "over the cap of 1048576 bytes" in str(err.value)
    assert peak < 3 * 1024 * 1024, "the body was never held whole"


def test_a_compressed_body_that_inflates_without_bound_is_refused_at_the_cap(raw_server):
    bomb = gzip.compress(b"[" + b" " * (200 * 1024 * 1024) + b"]", compresslevel=9)
    assert len(bomb) < 1024 * 1024

    def inflating(connection):
        connection.sendall(head(len(bomb), "Content-Encoding: gzip\r\n") + bomb)

    server = raw_server(inflating)
    tracemalloc.start()
    with client(server.url, max_response_bytes=4 * 1024 * 1024) as api, pytest.raises(SourceError) as err:
        first_page(api)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "a body over the cap of 4194304 bytes" in str(err.value) and "encoding gzip" in str(err.value)
    assert peak < 16 * 1024 * 1024, "decompression stopped at the cap instead of inflating 200 MB"


@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        ("cursor_stuck", "links back to a page already read"),
        ("cursor_cycle", "links back to a page already read"),
        ("endless", "links to another page, but 200 records fit in 4 page(s) of 50"),
    ],
)
def test_a_listing_that_never_ends_is_broken_off_and_not_committed(tmp_path, world, fault, problem):
    orders = world.orders_on(DAY)
    lake = Lake(tmp_path / "lake")
    with MisbehavingSource("orders", "order_id", orders, TOKEN) as source:
        source.misbehaviour = Misbehaviour(fault=fault, page=2)
        with ShopApiClient(source.url, TOKEN, page_size=50) as api:
            result = load_api_partition(lake, api, ORDERS, DAY, "run-endless")
        requests = len([r for r in source.requests if "/control" not in r and "fields=" not in r])
    assert not result.committed and lake.read_manifest("orders", DAY) is None
    assert problem in result.manifest.verdict["problems"][0]
    assert "GET /v1/orders?date=2026-03-14" in result.manifest.verdict["problems"][0]
    assert requests <= 2 * 5, "two attempts of at most total / limit + 1 pages each"


def test_no_log_line_carries_a_query_string_userinfo_or_the_token(tmp_path, world, caplog):
    orders = world.orders_on(DAY)
    failures = iter([503, 503])

    with MisbehavingSource("orders", "order_id", orders, TOKEN) as source:
        answer = source.page

        def failing_then_fine(params):
            status = next(failures, None)
            if status is not None:
                raise ConnectionResetError(f"simulated {status} for {TOKEN}")
            return answer(params)

        source.page = failing_then_fine
        api = ShopApiClient(source.url, TOKEN, page_size=50, max_backoff_seconds=0.01)
        with caplog.at_level(logging.DEBUG), api:
            result = load_api_partition(Lake(tmp_path / "lake"), api, ORDERS, DAY, "run-logs")
    assert result.committed
    messages = [record.getMessage() for record in caplog.records]
    assert any("retrying" in message for message in messages), "the retries were logged"
    assert any("HTTP Request" in message for message in messages), "httpx's own lines were captured"
    for message in messages:
        assert "?" not in message and "date=" not in message, message
        assert TOKEN not in message and "user:" not in message, message


def test_a_source_url_with_user_information_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="SHOP_API_URL must not carry user information"):
        ShopApiClient(f"http://user:{TOKEN}@127.0.0.1:9", TOKEN)


def test_urls_in_library_log_lines_lose_userinfo_and_query():
    url = f"http://user:{TOKEN}@127.0.0.1:8765/v1/orders?date=2026-03-14&token={TOKEN}"
    line = f'HTTP Request: GET {url} "HTTP/1.1 200"'
    assert scrub_urls(line) == 'HTTP Request: GET http://127.0.0.1:8765/… "HTTP/1.1 200"'


@pytest.mark.parametrize("cut_at", [1, 5, len(SECRET_TOKEN) - 1])
def test_an_error_body_echoing_the_token_across_the_cut_leaks_no_part_of_it(raw_server, cut_at):
    """The token is redacted before the error text is cut to ERROR_DETAIL_CHARS, so a token straddling the
    cut leaves no prefix behind (cut first, the prefix would no longer match the token and stay readable)."""
    body = ("x" * (ERROR_DETAIL_CHARS - cut_at) + SECRET_TOKEN + " was not accepted").encode()

    def respond(connection: socket.socket) -> None:
        connection.sendall(
            f"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    server = raw_server(respond)
    with ShopApiClient(server.url, SECRET_TOKEN, max_attempts=1) as api, pytest.raises(SourceError) as failed:
        first_page(api)
    message = str(failed.value)
    assert "answered HTTP 401: x" in message and "*" in message
    assert not [n for n in range(4, len(SECRET_TOKEN) + 1) if SECRET_TOKEN[:n] in message], message
