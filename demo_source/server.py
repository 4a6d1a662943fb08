"""The demo shop's HTTP API: a real server over a `ShopWorld`, with its clock and switchable faults.

This module owns the transport of the demo source: routes, bearer-token auth, the fault schedule per
request, responses, and the HTTP server itself. What a request asks for is parsed in queries.py, pages and
control figures are rendered in listings.py, and the fault knobs (`Faults`) that let tests and demos make
the upstream misbehave are in faults.py. It holds no data of its own: every listing is the world as of the
server's clock (`Faults.as_of`, else the wall clock, per request), encoded once and cached.

    GET /health                                            200 {"status": "ok"}, no auth
    GET /v1/orders|order_items|payments?date=YYYY-MM-DD    by the date of ordered_at / paid_at
    GET /v1/orders|order_items|payments?updated_since=..[&updated_before=..]   the change feed:
        records whose updated_at is in [since, before), any date (before: default the clock, <= 31 days)
    GET /v1/customers|products?updated_since=..&updated_before=..   ISO timestamps, [since, before);
        with dimensions="current_state" the latest versions only, updated_before optional
        all /v1 lists: limit (1..10000, default 1000), cursor (opaque, from the previous page),
        fields=<primary key> (keys-only records)
        -> {"data": [...], "next_cursor": str | null, "total": N} and header X-Total-Count: N (distinct keys)
    GET /v1/<table>/control?<the listing's filters>        the listing's control figures:
        {"table", "count", "key_checksum" (decimal string, see checksum.py), "amount_total", "as_of"}
    GET /admin/faults, PUT /admin/faults                   read / replace the Faults (JSON)

Everything but /health needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import contextlib
import email.utils
import hmac
import logging
import socket
import socketserver
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import orjson

from demo_source.encoding import JSON_OPTIONS, encode_array
from demo_source.faults import Faults, _clock
from demo_source.listings import MONEY_COLUMNS, _amount, _control_figures, _Listing, _page
from demo_source.queries import API_TABLES, BadRequest, _parse_request, _Query
from demo_source.vocabulary import DAILY_TABLES, PRIMARY_KEYS
from demo_source.world import ShopWorld

log = logging.getLogger(__name__)

DIMENSION_MODES = ("daily_versions", "current_state")
MAX_BODY_BYTES = 64 * 1024


class DemoShopServer:
    """The shop's API on a `ThreadingHTTPServer` in a background thread.

    Use as a context manager or call start() / stop(). `url` is valid once started; `request_count` is
    the number of /v1 requests received (whatever their outcome), which tests use to see retries.
    `dimensions` is how customers and products are served: "daily_versions" (each day's partition of
    versions) or "current_state" (only the latest version of each, as of the clock).
    """

    def __init__(
        self,
        world: ShopWorld,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        dimensions: str = "daily_versions",
    ) -> None:
        if not token:
            raise ValueError("token must be a non-empty string")
        if dimensions not in DIMENSION_MODES:
            raise ValueError(f"dimensions must be one of {', '.join(DIMENSION_MODES)}, got {dimensions!r}")
        self.world = world
        self.host = host
        self.port = port
        self.dimensions = dimensions
        self._expected_auth = f"Bearer {token}".encode()
        self._faults = faults or Faults()
        self._lock = threading.Lock()
        self._request_count = 0
        self._requests_since_faults = 0
        self._listings: OrderedDict[tuple, _Listing] = OrderedDict()
        self._listings_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------- lifecycle

    def start(self) -> DemoShopServer:
        """Bind and serve in a daemon thread. Raises OSError when the address is unavailable."""
        if self._httpd is not None:
            raise RuntimeError("server already started")
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.shop = self
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="demo-shop-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections, so that clients see the server go away."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> DemoShopServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    @property
    def request_count(self) -> int:
        with self._lock:
            return self._request_count

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def set_faults(self, faults: Faults) -> None:
        """Replace the faults; their request schedule restarts from the next request."""
        with self._lock:
            self._faults = faults
            self._requests_since_faults = 0

    # -------------------------------------------------------------------------------- requests

    def _authorized(self, handler: BaseHTTPRequestHandler) -> bool:
        given = handler.headers.get("Authorization", "").encode("latin-1", "replace")
        return hmac.compare_digest(given, self._expected_auth)

    def _unauthorized(self, handler: _Handler) -> None:
        reason = "invalid bearer token" if handler.headers.get("Authorization") else "missing bearer token"
        handler.send_json(
            HTTPStatus.UNAUTHORIZED,
            {"error": f"{reason}; send 'Authorization: Bearer <token>'"},
            {"WWW-Authenticate": 'Bearer realm="demo-shop"'},
        )

    def _handle_v1(self, handler: _Handler, resource: str, query_string: str) -> None:
        with self._lock:
            self._request_count += 1
            self._requests_since_faults += 1
            sequence = self._requests_since_faults
            faults = self._faults
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if faults.outage:
            handler.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "service unavailable (simulated outage)"})
            return
        if not self._authorized(handler):
            self._unauthorized(handler)
            return
        table, _, endpoint = resource.partition("/")
        if table not in API_TABLES or endpoint not in ("", "control"):
            handler.send_json(HTTPStatus.NOT_FOUND, {"error": f"unknown resource /v1/{resource}"})
            return
        if faults.rate_limit_every and sequence % faults.rate_limit_every == 0:
            retry_after = f"{faults.retry_after_seconds:g}"
            handler.send_json(
                HTTPStatus.TOO_MANY_REQUESTS,
                {"error": f"rate limit exceeded; retry after {retry_after} s"},
                {"Retry-After": retry_after},
            )
            return
        if faults.error_rate and sequence % max(1, round(1 / faults.error_rate)) == 0:
            handler.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error (simulated)"})
            return
        clock = _clock(faults)
        try:
            request = _parse_request(table, query_string, endpoint == "control", clock, self.dimensions)
        except BadRequest as exc:
            handler.send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        listing = self._listing(request.query, faults, clock)
        truncated = bool(faults.truncate_every) and sequence % faults.truncate_every == 0
        if endpoint == "control":
            count, checksum, amount_total = _control_figures(listing, table, faults)
            body = orjson.dumps(
                {
                    "table": table,
                    "count": count,
                    "key_checksum": str(checksum),
                    "amount_total": amount_total,
                    "as_of": clock,
                },
                option=JSON_OPTIONS,
            )
            (handler.send_truncated_body if truncated else handler.send_body)(HTTPStatus.OK, body)
            return
        body, total = _page(listing, request, faults)
        headers = {"X-Total-Count": total}
        if truncated:
            handler.send_truncated_body(HTTPStatus.OK, body, headers)
        elif faults.malformed_body:
            _send_malformed(handler, faults.malformed_body, body, headers)
        else:
            handler.send_body(HTTPStatus.OK, body, headers)

    def _handle_admin_faults(self, handler: _Handler, method: str) -> None:
        if not self._authorized(handler):
            self._unauthorized(handler)
            return
        if method == "PUT":
            try:
                faults = Faults.from_dict(orjson.loads(handler.read_body()))
            except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
                handler.send_json(HTTPStatus.BAD_REQUEST, {"error": f"faults: {exc}"})
                return
            self.set_faults(faults)
        handler.send_json(HTTPStatus.OK, self.faults.to_dict())

    def _listing(self, query: _Query, faults: Faults, clock: datetime) -> _Listing:
        table = query.table
        late = faults.arrives_late if faults.late_arrival_rate and table in DAILY_TABLES else None
        settled = query.settles_at(late_arrivals=late is not None)
        # A settled listing is the same at any later clock, so it is cached once; a recent one per second.
        lateness = faults.late_arrival_rate if late else 0.0
        cache_key = (query, lateness, None if settled and clock >= settled else clock)
        # Serialising under the lock means concurrent first requests for a listing wait for one build
        # instead of all doing it.
        with self._listings_lock:
            listing = self._listings.get(cache_key)
            if listing is not None:
                self._listings.move_to_end(cache_key)
                return listing
            world = self.world
            if query.day is not None:
                records = world._partition(table, query.day, clock, late)
            elif table in DAILY_TABLES:
                records = world._changes(table, query.since, query.before, clock, late)
            elif query.current_state:
                records = world._current_versions(table, query.since, query.before, clock)
            else:
                records = world._versions_between(table, query.since, query.before, clock)
            key = PRIMARY_KEYS[table]
            amounts = [_amount(table, record) for record in records] if table in MONEY_COLUMNS else None
            listing = _Listing([record[key] for record in records], *encode_array(records), amounts)
            self._listings[cache_key] = listing
            if len(self._listings) > 16:
                self._listings.popitem(last=False)
            return listing


def _send_malformed(handler: _Handler, kind: str, listing: bytes, headers: dict[str, str]) -> None:
    """A 200 that is not the JSON listing: what a proxy, a maintenance page or a broken upstream sends."""
    if kind == "html":
        page = b"<!DOCTYPE html><html><body><h1>Down for maintenance</h1></body></html>"
        handler.send_body(HTTPStatus.OK, page, content_type="text/html; charset=utf-8")
    elif kind == "array":
        handler.send_body(HTTPStatus.OK, b"[]")
    elif kind == "text_plain":
        handler.send_body(HTTPStatus.OK, listing, headers, content_type="text/plain; charset=utf-8")
    else:
        handler.send_body(HTTPStatus.OK, listing[: len(listing) // 2], headers)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops connections when many clients start at once
    # Don't let stop() wait for handler threads: keep-alive clients may hold connections open.
    block_on_close = False
    shop: DemoShopServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can stall without a network.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def track(self, connection: socket.socket, active: bool) -> None:
        with self._connections_lock:
            if active:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # the client may have closed it already
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a paging client reuses one connection
    server_version = "DemoShop/1.0"
    timeout = 30  # idle keep-alive connections give their thread back
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle plus delayed ACKs can add 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, active=True)

    def finish(self) -> None:
        self.server.track(self.connection, active=False)
        super().finish()

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header: the source's own clock (`Faults.as_of` when set), as a real server's would be,
        so that a client keeping watermarks in the source's time sees the time the data is served at."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        clock = _clock(self.server.shop.faults).replace(tzinfo=UTC)
        return email.utils.format_datetime(clock, usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request access log on stderr."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        shop = self.server.shop
        parts = urlsplit(self.path)
        try:
            if parts.path == "/admin/faults":
                shop._handle_admin_faults(self, method)
            elif method != "GET":
                self.close_connection = True  # rather than read a body nobody wants
                self.send_json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method} not allowed here"}, {"Allow": "GET"})
            elif parts.path == "/health":
                self.send_json(HTTPStatus.OK, {"status": "ok"})
            elif parts.path.startswith("/v1/"):
                shop._handle_v1(self, parts.path[len("/v1/") :], parts.query)
            else:
                self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no route for {parts.path}"})
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            log.exception("demo shop server failed on %s %s", method, parts.path)
            self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body would be taken for the next request
            raise ValueError(f"request body over {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length)

    def send_json(self, status: HTTPStatus, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_body(status, orjson.dumps(payload), headers)

    def send_body(
        self,
        status: HTTPStatus,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self._send_head(status, len(body), headers, content_type)
        self.wfile.write(body)

    def send_truncated_body(self, status: HTTPStatus, body: bytes, headers: dict[str, str] | None = None) -> None:
        """Promise the whole body, send half of it and hang up (what a crashed upstream or a cut proxy does)."""
        self._send_head(status, len(body), headers, "application/json")
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True

    def _send_head(self, status: HTTPStatus, length: int, headers: dict[str, str] | None, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
