"""What a 200 from the shop API must carry: a body in an encoding the client accepts, inflated without ever
producing more than a cap (`DECOMPRESSORS`), that is a listing page (`listing_page`) or control figures
(`control_body`); otherwise UnreadableBody (cut short: worth another attempt) or UnexpectedResponse (the
wrong content type or shape: another attempt would get the same) says what arrived instead.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import httpx
import orjson

from pipeline_project.ingest.source_errors import UnexpectedResponse, UnreadableBody


def _identity():
    return lambda data, limit: [data]


def _inflating(wbits: int):
    """A decompressor that never produces more than `limit` bytes from one call (a bomb stops at the cap)."""
    decompressor = zlib.decompressobj(wbits)

    def decompress(data: bytes, limit: int) -> Iterator[bytes]:
        while data:
            chunk = decompressor.decompress(data, limit)
            yield chunk
            if len(chunk) >= limit:
                return  # the caller refuses the body: it is over the cap
            data = decompressor.unconsumed_tail

    return decompress


DECOMPRESSORS = {
    "identity": _identity,
    "gzip": lambda: _inflating(16 + zlib.MAX_WBITS),
    "deflate": lambda: _inflating(zlib.MAX_WBITS),
}


def _json_object(headers: httpx.Headers, content: bytes) -> dict:
    """The JSON object a 200 carries, or UnreadableBody / UnexpectedResponse saying what arrived instead."""
    content_type = headers.get("Content-Type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        excerpt = content[:80].decode("utf-8", "replace")
        raise UnexpectedResponse(f"Content-Type {content_type or '(none)'!r}, not JSON: {excerpt!r}")
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError as err:
        raise UnreadableBody(f"{len(content)} bytes that are not complete JSON ({err})") from None
    if not isinstance(body, dict):
        raise UnexpectedResponse(f"a JSON {type(body).__name__}")
    return body


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def listing_page(headers: httpx.Headers, content: bytes) -> dict:
    """The page a 200 carries, or UnreadableBody / UnexpectedResponse saying what arrived instead."""
    page = _json_object(headers, content)
    problems = [f"{name} is missing" for name in ("data", "next_cursor", "total") if name not in page]
    data, cursor, total = page.get("data", []), page.get("next_cursor"), page.get("total", 0)
    if not isinstance(data, list) or not all(isinstance(record, dict) for record in data):
        problems.append("data is not a list of objects")
    if not (cursor is None or (isinstance(cursor, str) and cursor)):
        problems.append("next_cursor is neither a non-empty string nor null")
    if not _is_count(total):
        problems.append(f"total is not a non-negative integer ({str(total)[:40]!r})")
    if problems:
        raise UnexpectedResponse(f"a JSON object in which {', '.join(problems)}")
    return page


def control_body(headers: httpx.Headers, content: bytes) -> dict:
    """The control figures a 200 carries, or UnexpectedResponse saying what is wrong with them."""
    body = _json_object(headers, content)
    problems = []
    if not _is_count(body.get("count")):
        problems.append(f"count is not a non-negative integer ({str(body.get('count'))[:40]!r})")
    checksum = body.get("key_checksum")
    if not (isinstance(checksum, str) and checksum.isdigit() and int(checksum) < 2**64):
        problems.append(f"key_checksum is not a decimal string of a 64-bit number ({str(checksum)[:40]!r})")
    amount = body.get("amount_total")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)):
        problems.append(f"amount_total is neither an integer nor null ({str(amount)[:40]!r})")
    if problems:
        raise UnexpectedResponse(f"a JSON object in which {', '.join(problems)}")
    return body
