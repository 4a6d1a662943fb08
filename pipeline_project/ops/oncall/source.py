"""Is the shop API up, and does it accept the pipeline's credentials? Asked the way the pipeline asks it."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from pipeline_project.dev.runtime import DevRuntime
from pipeline_project.ops.oncall.common import TOKEN_VARIABLE, is_demo_source, say, source_token, source_url
from pipeline_project.ops.wait import WaitTimeout, wait_until

TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Probe:
    request: str
    status: int | None  # None: no HTTP answer
    seconds: float
    verdict: str  # "ok" or what is wrong, in words

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


def _probe(client: httpx.Client, path: str, params: dict[str, str], authenticated: bool) -> Probe:
    request = f"GET {path}" + (f"?{httpx.QueryParams(params)}" if params else "")
    headers = {"Authorization": f"Bearer {source_token()}"} if authenticated else {}
    started = time.monotonic()
    try:
        response = client.get(path, params=params, headers=headers)
    except httpx.ConnectError as error:
        reason = "connection refused: nothing listens there" if "refused" in str(error).lower() else str(error)
        return Probe(request, None, time.monotonic() - started, f"DOWN ({reason})")
    except httpx.TimeoutException:
        return Probe(request, None, time.monotonic() - started, f"DOWN (no answer within {TIMEOUT_SECONDS:.0f} s)")
    except httpx.TransportError as error:
        return Probe(request, None, time.monotonic() - started, f"DOWN ({type(error).__name__}: {error})")
    seconds = time.monotonic() - started
    status = response.status_code
    if status == 200 and "json" not in response.headers.get("Content-Type", ""):
        sent = response.headers.get("Content-Type", "no content type")
        verdict = f"UNAVAILABLE (200 with {sent}: a maintenance page?)"
    elif status == 200:
        verdict = "ok"
    elif status in (401, 403):
        verdict = f"CREDENTIALS REJECTED (HTTP {status}: the token in {TOKEN_VARIABLE} is wrong, expired or revoked)"
    elif status == 429:
        verdict = f"RATE LIMITED (HTTP 429, Retry-After {response.headers.get('Retry-After', '-')} s)"
    elif status >= 500:
        verdict = f"DOWN (HTTP {status})"
    else:
        verdict = f"HTTP {status}"
    return Probe(request, status, seconds, verdict)


def probe_source() -> list[Probe]:
    """/health (no credentials), then one authenticated page of orders of yesterday (UTC)."""
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    with httpx.Client(base_url=source_url(), timeout=TIMEOUT_SECONDS) as client:
        return [
            _probe(client, "/health", {}, authenticated=False),
            _probe(client, "/v1/orders", {"date": yesterday, "limit": "1"}, authenticated=True),
        ]


def _show(probes: list[Probe]) -> None:
    width = max(len(probe.request) for probe in probes)
    for probe in probes:
        status = "-" if probe.status is None else str(probe.status)
        say(f"  {probe.request:<{width}}  {status:>3}  {probe.seconds * 1000:6.0f} ms  {probe.verdict}")


def source_health(args: argparse.Namespace) -> int:
    demo = is_demo_source()
    token = "the demo source's own token" if demo and not os.environ.get(TOKEN_VARIABLE) else f"${TOKEN_VARIABLE}"
    say(f"shop API {source_url()} ({'the demo source; ' if demo else ''}credentials: {token})")
    runtime = DevRuntime.running(os.environ["PIPELINE_STATE_DIR"]) if demo else None
    if runtime is not None and runtime.source_restarts:
        say(
            f"  make dev restarted the demo source {runtime.source_restarts} time(s), last at "
            f"{runtime.source_last_restart} (it had {runtime.source_last_exit})"
        )
    probes = probe_source()
    _show(probes)
    if all(probe.ok for probe in probes):
        say("verdict: UP")
        return 0
    if not args.wait:
        say("verdict: NOT HEALTHY")
        return 1
    say(f"waiting up to {args.wait:.0f} s for the source to answer both requests ...")

    def healthy() -> list[Probe] | None:
        found = probe_source()
        return found if all(probe.ok for probe in found) else None

    try:
        probes = wait_until(
            healthy,
            timeout=args.wait,
            what=f"the shop API at {source_url()} healthy",
            interval=2.0,
        )
    except WaitTimeout as error:
        _show(probe_source())
        say(f"verdict: NOT HEALTHY ({error})")
        return 1
    _show(probes)
    say("verdict: UP")
    return 0
