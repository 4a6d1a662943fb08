"""A shop API that loses records in ways the demo source's fault knobs cannot: a real HTTP server on
127.0.0.1 serving one table from a fixed list of records, whose paging is broken on purpose while its
control endpoint keeps telling the truth.

It speaks the API the pipeline expects (`GET /v1/<table>?...&limit=&cursor=`, `{"data", "next_cursor",
"total"}`, `GET /v1/<table>/control`, `fields=<key>` for keys-only listings) and pages by offset, the way
many real APIs do, so that one broken listing can:

- `swap_page`: serve the page after a given one in its place (that page's records are lost, the next page's
  sent twice);
- `skip_page`: hand out a cursor that jumps over a page;
- `move_across_cut`: after the first page, move a record from a later page to the front of the ordering, as
  an update does to a listing ordered by a mutable column: it is never sent, and the record that slides
  over the page cut is sent twice;
- `copies_for_missing`: send copies of the first half of the records in place of the second half;
- `total_agrees`: make `total` count what the broken listing actually holds, so the listing agrees with
  itself and only an independent control figure can tell;
- `cursor_stuck`, `cursor_cycle`, `endless`: from the given page on, hand back the cursor just used, the
  cursor of the page before, or a fresh cursor past the end, forever (a listing that never ends).

The control figures are computed here from the true records with the checksum as documented for sources
(MD5 of the key's text, first 8 bytes big-endian, summed modulo 2**64), independently of the pipeline's
own implementation. `keys_pages_broken` decides whether keys-only listings are broken the same way (a
source whose second pass repeats the fault) or served correctly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

FAULTS = (
    "swap_page",
    "skip_page",
    "move_across_cut",
    "copies_for_missing",
    "cursor_stuck",
    "cursor_cycle",
    "endless",
)


def documented_checksum(keys) -> int:
    def key_text(value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))

    texts = {key_text(key) for key in keys}
    return sum(int.from_bytes(hashlib.md5(text.encode()).digest()[:8], "big") for text in texts) % 2**64


@dataclass
class Misbehaviour:
    fault: str | None = None
    page: int = 1  # the page (1-based) the fault hits: swapped away, skipped, or the one after the move
    total_agrees: bool = False
    keys_pages_broken: bool = False


class MisbehavingSource:
    """One table served from `records` (sorted by `key`) with `Misbehaviour`; use as a context manager."""

    def __init__(self, table: str, key: str, records: list[dict], token: str, amount=None) -> None:
        self.table = table
        self.key = key
        self.records = sorted(records, key=lambda record: record[key])
        self.token = token
        self.amount = amount
        self.misbehaviour = Misbehaviour()
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> MisbehavingSource:
        source = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without NODELAY, Nagle and delayed ACKs stall each page 40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                with source._lock:
                    source.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {source.token}":
                    self._send(HTTPStatus.UNAUTHORIZED, {"error": "bad token"})
                elif parts.path == f"/v1/{source.table}/control":
                    self._send(HTTPStatus.OK, source.control())
                elif parts.path == f"/v1/{source.table}":
                    self._send(HTTPStatus.OK, source.page(dict(parse_qsl(parts.query))))
                else:
                    self._send(HTTPStatus.NOT_FOUND, {"error": "no such path"})

            def _send(self, status: HTTPStatus, payload: dict) -> None:
                body = orjson.dumps(payload, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def control(self) -> dict:
        amounts = [self.amount(record) for record in self.records] if self.amount else None
        return {
            "table": self.table,
            "count": len({record[self.key] for record in self.records}),
            "key_checksum": str(documented_checksum(record[self.key] for record in self.records)),
            "amount_total": None if amounts is None else sum(amounts),
        }

    def page(self, params: dict[str, str]) -> dict:
        limit = int(params.get("limit", "1000"))
        keys_only = params.get("fields") == self.key
        broken = not keys_only or self.misbehaviour.keys_pages_broken
        offset = _offset(params["cursor"]) if "cursor" in params else 0
        rows, next_offset = self._rows(offset, limit, broken)
        total = len(self.records)
        if self.misbehaviour.total_agrees and broken:
            total = self._distinct_served(limit)
        return {
            "data": [{self.key: row[self.key]} for row in rows] if keys_only else rows,
            "next_cursor": None if next_offset is None else _cursor(next_offset),
            "total": total,
        }

    def _rows(self, offset: int, limit: int, broken: bool) -> tuple[list[dict], int | None]:
        """The page at `offset` and the offset its cursor points to (None on the last page)."""
        ordering = self._ordering(offset, limit) if broken else self.records
        fault = self.misbehaviour.fault if broken else None
        number = offset // limit + 1
        if fault == "swap_page" and number == self.misbehaviour.page:
            rows = ordering[offset + limit : offset + 2 * limit]
        elif fault == "copies_for_missing":
            half = len(ordering) // 2
            rows = (ordering[:half] + ordering[: len(ordering) - half])[offset : offset + limit]
        else:
            rows = ordering[offset : offset + limit]
        next_offset = offset + limit
        if fault == "skip_page" and number + 1 == self.misbehaviour.page:
            next_offset += limit
        if number >= self.misbehaviour.page and fault in ("cursor_stuck", "cursor_cycle", "endless"):
            return rows, {"cursor_stuck": offset, "cursor_cycle": offset - limit, "endless": next_offset}[fault]
        return rows, next_offset if next_offset < len(ordering) else None

    def _distinct_served(self, limit: int) -> int:
        """The distinct keys the broken listing sends (what a self-consistent but wrong `total` says)."""
        keys: set = set()
        offset: int | None = 0
        while offset is not None:
            rows, offset = self._rows(offset, limit, broken=True)
            keys.update(row[self.key] for row in rows)
        return len(keys)

    def _ordering(self, offset: int, limit: int) -> list[dict]:
        """The listing's order as the page at `offset` sees it: after the first page, the record that opens
        the fault's page moves to the front (a mutable sort column changed under the listing)."""
        if self.misbehaviour.fault != "move_across_cut" or offset == 0:
            return self.records
        moved_index = (self.misbehaviour.page - 1) * limit + 1
        moved = self.records[moved_index]
        return [moved, *self.records[:moved_index], *self.records[moved_index + 1 :]]


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode()


def _offset(cursor: str) -> int:
    return int(base64.urlsafe_b64decode(cursor).decode())
