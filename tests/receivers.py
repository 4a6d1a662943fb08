"""Real alert receivers on 127.0.0.1 for tests: an HTTP webhook endpoint and an SMTP server, both with
switchable failures, recording what they accepted.

Failure responses echo the request path and the start of the body, as careless servers do, so tests can
prove that a channel's error messages do not repeat the secrets it sent.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Received:
    path: str
    headers: httpx.Headers
    body: bytes
    received_at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return json.loads(self.body)


class _Recorder:
    """A thread-safe record of accepted items that tests can wait on."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._items: list = []

    def add(self, item) -> None:
        with self._condition:
            self._items.append(item)
            self._condition.notify_all()

    def snapshot(self) -> list:
        with self._condition:
            return list(self._items)

    def wait_for(self, count: int, timeout: float, what: str) -> list:
        with self._condition:
            if not self._condition.wait_for(lambda: len(self._items) >= count, timeout):
                raise AssertionError(
                    f"expected {count} {what} within {timeout} s, got {len(self._items)}: {self._items}"
                )
            return list(self._items)


class WebhookReceiver:
    """An HTTP server on a free loopback port that records the POSTs it answers with a 2xx status.

    `status_code` is the success status (PagerDuty answers 202). `fail_next(n, status)` answers the next n
    requests with `status`; `set_status(status)` answers every request with it until `set_status(None)`;
    `set_delay(seconds)` holds every answer back (a request held past the client's timeout is still
    recorded when answered, as a real server would have processed it).
    """

    def __init__(self, status_code: int = 200) -> None:
        self.status_code = status_code
        self._recorder = _Recorder()
        self._lock = threading.Lock()
        self._attempts = 0
        self._failures_left = 0
        self._failure_status = 500
        self._forced_status: int | None = None
        self._delay_seconds = 0.0
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer((HOST, 0), _WebhookHandler)
        self._server.daemon_threads = True
        self._server.receiver = self
        self._thread = threading.Thread(target=self._serve, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}"

    @property
    def received(self) -> list[Received]:
        return self._recorder.snapshot()

    @property
    def attempts(self) -> int:
        with self._lock:
            return self._attempts

    def fail_next(self, count: int, status: int = 500) -> None:
        with self._lock:
            self._failures_left, self._failure_status = count, status

    def set_status(self, status: int | None) -> None:
        with self._lock:
            self._forced_status = status

    def set_delay(self, seconds: float) -> None:
        with self._lock:
            self._delay_seconds = seconds

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        return self._recorder.wait_for(count, timeout, "webhook requests")

    def _next_answer(self) -> tuple[int, float]:
        with self._lock:
            self._attempts += 1
            if self._failures_left > 0:
                self._failures_left -= 1
                return self._failure_status, self._delay_seconds
            return self._forced_status or self.status_code, self._delay_seconds

    def _serve(self) -> None:
        # A short poll interval keeps shutdown quick; tests open and close many receivers.
        self._server.serve_forever(poll_interval=0.05)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _WebhookHandler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def do_POST(self) -> None:
        receiver: WebhookReceiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, delay = receiver._next_answer()
        if delay and receiver._closing.wait(delay):
            return
        if 200 <= status < 300:
            # Recorded before the answer goes out, so a sender that saw its 2xx finds its request here.
            receiver._recorder.add(Received(self.path, httpx.Headers(self.headers.items()), body))
            answer = b'{"status": "success", "message": "Event processed"}'
        else:
            answer = f"rejected POST {self.path}: {body[:200].decode(errors='replace')}".encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if 200 <= status < 300 else "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args) -> None:
        """Silent: the test asserts on what was received, not on an access log."""


@dataclass(frozen=True)
class ReceivedEmail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    authenticated_as: str | None


class SmtpReceiver:
    """A real SMTP server (aiosmtpd) on a free loopback port that records the messages it accepts.

    With `username`/`password` it offers AUTH (PLAIN or LOGIN), rejects other credentials with 535 and
    records who logged in as `authenticated_as`. With `tls_context` it requires STARTTLS (and offers AUTH
    only after it), or with `implicit_tls=True` speaks TLS from the first byte (SMTPS).
    `fail_next(n, reply)` answers the next n DATA commands with `reply`; `set_delay(seconds)` holds every
    DATA answer back.
    """

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
    ) -> None:
        self.host = HOST
        self.port = free_port()
        self._recorder = _Recorder()
        self._lock = threading.Lock()
        self._failures_left = 0
        self._failure_reply = ""
        self._delay_seconds = 0.0
        starttls = tls_context is not None and not implicit_tls
        self._controller = Controller(
            _SmtpHandler(self),
            hostname=HOST,
            port=self.port,
            ssl_context=tls_context if implicit_tls else None,
            tls_context=tls_context if starttls else None,
            require_starttls=starttls,
            auth_require_tls=starttls,
            authenticator=_authenticator(username, password) if username is not None else None,
        )

    @property
    def messages(self) -> list[ReceivedEmail]:
        return self._recorder.snapshot()

    def fail_next(self, count: int, reply: str = "451 4.3.0 Try again later") -> None:
        with self._lock:
            self._failures_left, self._failure_reply = count, reply

    def set_delay(self, seconds: float) -> None:
        with self._lock:
            self._delay_seconds = seconds

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedEmail]:
        return self._recorder.wait_for(count, timeout, "emails")

    def _next_reply(self) -> tuple[str | None, float]:
        with self._lock:
            if self._failures_left > 0:
                self._failures_left -= 1
                return self._failure_reply, self._delay_seconds
            return None, self._delay_seconds

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._controller.stop()


class _SmtpHandler:
    def __init__(self, receiver: SmtpReceiver) -> None:
        self._receiver = receiver

    async def handle_DATA(self, server, session, envelope) -> str:
        failure, delay = self._receiver._next_reply()
        if delay:
            await asyncio.sleep(delay)
        if failure:
            return failure
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        self._receiver._recorder.add(
            ReceivedEmail(envelope.mail_from, tuple(envelope.rcpt_tos), message, session.auth_data)
        )
        return "250 2.0.0 Message accepted for delivery"


def _authenticator(username: str, password: str | None) -> Callable[..., AuthResult]:
    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
        accepted = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == username
            and auth_data.password.decode() == password
        )
        # handled=False lets aiosmtpd answer a rejected login with 535 itself.
        return AuthResult(success=accepted, handled=False, auth_data=username if accepted else None)

    return authenticate


def free_port() -> int:
    """A loopback port nothing listens on (for the receiver to take, or for a refused connection)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class LoopbackTls:
    """A self-signed certificate for 127.0.0.1: the server's context and a client context trusting it."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def loopback_tls(directory: Path) -> LoopbackTls:
    """Make a certificate for 127.0.0.1 with the openssl command line tool (the lock has no crypto library)."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={HOST}"]
        + ["-addext", f"subjectAltName=IP:{HOST}", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return LoopbackTls(server=server, client=ssl.create_default_context(cafile=str(cert)))
