"""Command line of the demo shop source: run the API (`serve`) or only drop web-event files (`land`).

    python -m demo_source serve [--host H] [--port P] [--token T] [--scale S]
        [--bad-record-rate R] [--dimensions daily_versions|current_state] [--landing-dir DIR]
        [--end-date YYYY-MM-DD] [--days N]
    python -m demo_source land --landing-dir DIR [--end-date] [--days] [--scale]
        [--bad-record-rate R]

`serve` lands the files first when --landing-dir is given, then prints exactly one line,
`READY http://HOST:PORT`, on stdout once it accepts connections, and exits 0 on SIGTERM or SIGINT.
Progress goes to stderr. Bad settings (including a port in use) give a one-line error naming the setting
and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import NoReturn

from demo_source.days import MAX_SCALE
from demo_source.landing import write_landing_files
from demo_source.server import DIMENSION_MODES, DemoShopServer
from demo_source.world import ShopWorld
from pipeline_project.observability.logging import configure_logging

PROG = "python -m demo_source"
DEFAULT_TOKEN = "demo-token"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage block; the contract here is one line naming the setting.
        self.exit(2, f"{PROG}: error: {message}\n")


def _number(parse: Callable[[str], float], low: float, high: float, low_open: bool = False) -> Callable:
    def convert(text: str) -> float:
        value = parse(text)
        if not (low < value if low_open else low <= value) or not value <= high:
            opening = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"must be in {opening}{low:g}, {high:g}], got {text}")
        return value

    convert.__name__ = parse.__name__  # argparse names the type in "invalid <type> value" messages
    return convert


_scale = _number(float, 0, MAX_SCALE, low_open=True)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a date as YYYY-MM-DD, got {text!r}") from None


def _build_parser() -> _Parser:
    parser = _Parser(prog=PROG, description="The demo shop: an HTTP API and a landing zone over generated data.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{serve,land}")

    def add_world_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--scale", type=_scale, help="volume multiplier (default: $SHOP_DEMO_SCALE or 1)")
        sub.add_argument("--bad-record-rate", type=_number(float, 0, 1), default=0.0, help="share of bad records")
        sub.add_argument("--end-date", type=_day, help="last day to land (default: yesterday, UTC)")
        sub.add_argument("--days", type=_number(int, 1, 3660), default=7, help="days to land, ending at --end-date")

    serve = commands.add_parser("serve", help="serve the API (landing files first, with --landing-dir)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_number(int, 0, 65_535), default=8765)
    serve.add_argument("--token", help=f"bearer token (default: $SHOP_API_TOKEN or {DEFAULT_TOKEN!r})")
    serve.add_argument("--landing-dir", type=Path, help="also write web-event files here before serving")
    serve.add_argument(
        "--dimensions",
        choices=DIMENSION_MODES,
        default=DIMENSION_MODES[0],
        help="customers and products as daily versions (default) or as their current state only",
    )
    add_world_options(serve)

    land = commands.add_parser("land", help="only write the web-event landing files")
    land.add_argument("--landing-dir", type=Path, required=True)
    add_world_options(land)
    return parser


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return 2


def _land(world: ShopWorld, landing_dir: Path, end_date: date, days: int) -> list[Path]:
    paths = []
    for offset in range(days - 1, -1, -1):
        day = end_date - timedelta(days=offset)
        paths += write_landing_files(landing_dir, day, world)
        logging.getLogger("demo_source").info("landed web events of %s in %s", day, landing_dir)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    configure_logging("demo_source")
    if args.scale is None:
        raw_scale = os.environ.get("SHOP_DEMO_SCALE", "1")
        try:
            args.scale = _scale(raw_scale)
        except (ValueError, argparse.ArgumentTypeError):
            return _fail(f"SHOP_DEMO_SCALE must be a number in (0, {MAX_SCALE:g}], got {raw_scale!r}")
    end_date = args.end_date or datetime.now(UTC).date() - timedelta(days=1)
    world = ShopWorld(scale=args.scale, bad_record_rate=args.bad_record_rate)

    stop = threading.Event()
    if args.command == "serve":
        # Set both explicitly: a shell starting us in the background with `&` leaves SIGINT ignored.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())

    if args.landing_dir is not None:
        try:
            paths = _land(world, args.landing_dir, end_date, args.days)
        except OSError as exc:
            return _fail(f"--landing-dir {args.landing_dir}: {exc.strerror or exc}")
        if args.command == "land":
            print("\n".join(str(path) for path in paths), flush=True)
    if args.command == "land" or stop.is_set():
        return 0

    token = args.token or os.environ.get("SHOP_API_TOKEN") or DEFAULT_TOKEN
    server = DemoShopServer(world, token, host=args.host, port=args.port, dimensions=args.dimensions)
    try:
        server.start()
    except OSError as exc:
        return _fail(f"--host/--port: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    print(f"READY {server.url}", flush=True)
    try:
        stop.wait()  # the signal handlers run in this thread and interrupt the wait
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
