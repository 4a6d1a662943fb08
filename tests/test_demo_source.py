"""Tests of the demo shop source (demo_source): generator, HTTP API, landing files, CLI.

Everything runs against a real server on 127.0.0.1 (port 0) with a real httpx client and real files.
Served JSON and landed files are checked against the generator's public API and, for the ground truth
and the referential rules, against recomputations written here from the spec.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from demo_source import DemoShopServer, Faults, ShopWorld, write_landing_files
from demo_source.checksum import key_checksum, key_hash, key_text
from demo_source.encoding import encode_array, encode_lines
from demo_source.ledger import LATE_ARRIVAL_DELAY

REPO_ROOT = Path(__file__).resolve().parents[1]
DAY = date(2026, 11, 20)
DAY_START = datetime(2026, 11, 20)
NEXT_DAY_START = DAY_START + timedelta(days=1)
# The shared server's clock: long enough after DAY that every order of DAY has finished its life (30 days
# at most, plus a day for late arrivals), so what it serves of DAY is the world's final state.
SETTLED = NEXT_DAY_START + timedelta(days=40)
SETTLED_FAULTS = Faults(as_of=f"{SETTLED.isoformat()}Z")
TOKEN = "s3cret-test-token"
API_TABLES = {
    "customers": "customer_id",
    "products": "product_id",
    "orders": "order_id",
    "order_items": "order_item_id",
    "payments": "payment_id",
}
ORDER_STATUSES = {"placed", "paid", "shipped", "delivered", "cancelled", "refunded"}
FINAL_STATUSES = {"placed", "delivered", "cancelled", "refunded"}
BILLABLE = {"paid", "shipped", "delivered", "refunded"}
EVENT_TYPES = {"page_view", "product_view", "add_to_cart", "checkout_started", "purchase"}

# Run in this process and in a fresh interpreter (with another hash seed): same bytes means the world is
# deterministic across processes, bad records included.
DIGEST_SCRIPT = """
import hashlib
from datetime import UTC, date, datetime, timedelta

import orjson

from demo_source import ShopWorld


def world_digest(scale, rate, day):
    world = ShopWorld(scale, rate)
    start = datetime(day.year, day.month, day.day)
    end = start + timedelta(days=1)
    parts = [
        world.customers_updated_between(start, end),
        world.products_updated_between(start, end),
        world.orders_on(day),
        world.order_items_on(day),
        world.payments_on(day),
        world.web_events_on(day),
        {table: sorted(world.bad_records(table, day).items()) for table in
         ("customers", "products", "orders", "order_items", "payments", "web_events")},
        world.ground_truth(day),
    ]
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_NAIVE_UTC)).hexdigest()
"""


def as_json(records: list[dict]) -> list[dict]:
    """Records as the API would render them (timestamps as ISO strings with Z)."""
    return orjson.loads(orjson.dumps(records, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z))


def ts(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value[:-1])


def day_params(table: str, day: date = DAY) -> dict[str, str]:
    if table in ("customers", "products"):
        start = datetime(day.year, day.month, day.day)
        return {
            "updated_since": f"{start.isoformat()}Z",
            "updated_before": f"{(start + timedelta(days=1)).isoformat()}Z",
        }
    return {"date": day.isoformat()}


def fetch_all(client: httpx.Client, table: str, params: dict[str, str], limit: int = 5000) -> list[dict]:
    """Every record of a query, following next_cursor; checks total and X-Total-Count on every page."""
    records: list[dict] = []
    cursor = None
    total = None
    while True:
        response = client.get(
            f"/v1/{table}", params={**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert int(response.headers["X-Total-Count"]) == body["total"]
        assert total in (None, body["total"])
        total = body["total"]
        assert len(body["data"]) <= limit
        records += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            assert len(records) == total
            return records


def order_id_of(day: date, n: int) -> int:
    """The id of the n-th (1-based) order of `day`."""
    return (day - date(2020, 1, 1)).days * 10_000_000 + n


def order_day(order_id: int) -> date:
    return date(2020, 1, 1) + timedelta(days=(order_id - 1) // 10_000_000)


def read_landing(paths: list[Path]) -> list[dict]:
    return [orjson.loads(line) for path in paths for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def world() -> ShopWorld:
    return ShopWorld(scale=1.0)


@pytest.fixture(scope="module")
def server(world: ShopWorld) -> Iterator[DemoShopServer]:
    with DemoShopServer(world, TOKEN, faults=SETTLED_FAULTS) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: DemoShopServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def landed(world: ShopWorld, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_landing_files(tmp_path_factory.mktemp("landing"), DAY, world)


# ----------------------------------------------------------------------------------- determinism


def test_a_day_regenerates_identically_in_another_instance() -> None:
    first, second = ShopWorld(1.0, bad_record_rate=0.01), ShopWorld(1.0, bad_record_rate=0.01)
    second.orders_on(DAY + timedelta(days=3))  # a different history of cached days must not matter
    for method in (
        "orders_on",
        "order_items_on",
        "payments_on",
        "web_events_on",
        "ground_truth",
        "record_counts",
    ):
        assert getattr(first, method)(DAY) == getattr(second, method)(DAY), method
    assert first.customers_updated_between(DAY_START, NEXT_DAY_START) == second.customers_updated_between(
        DAY_START, NEXT_DAY_START
    )
    for table in ("customers", "products", "orders", "order_items", "payments", "web_events"):
        assert first.bad_records(table, DAY) == second.bad_records(table, DAY)


def test_a_day_regenerates_identically_in_a_fresh_process() -> None:
    namespace: dict = {}
    exec(DIGEST_SCRIPT, namespace)
    expected = namespace["world_digest"](1.0, 0.01, DAY)
    script = DIGEST_SCRIPT + f"\nprint(world_digest(1.0, 0.01, date({DAY.year}, {DAY.month}, {DAY.day})))\n"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONHASHSEED": "4242"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_days_and_scales_differ_and_records_are_copies(world: ShopWorld) -> None:
    assert world.orders_on(DAY) != world.orders_on(DAY + timedelta(days=1))
    assert len(ShopWorld(0.5).orders_on(DAY)) == 1000 and len(world.orders_on(DAY)) == 2000
    handed_out = world.orders_on(DAY)
    handed_out[0]["order_status"] = "mutated"
    assert world.orders_on(DAY)[0]["order_status"] != "mutated"
    assert world.orders_on(date(2019, 12, 31)) == [] and world.ground_truth(date(2019, 12, 31))["events"] == 0


def test_records_follow_the_id_and_volume_rules(world: ShopWorld) -> None:
    day_index = (DAY - date(2020, 1, 1)).days
    orders = world.orders_on(DAY)
    assert [o["order_id"] for o in orders] == [day_index * 10_000_000 + n for n in range(1, 2001)]
    items = world.order_items_on(DAY)
    assert all(i["order_item_id"] // 100 == i["order_id"] and 1 <= i["order_item_id"] % 100 <= 5 for i in items)
    assert 2.2 < len(items) / len(orders) < 2.8
    assert all(p["payment_id"] // 10 == p["order_id"] for p in world.payments_on(DAY))
    customers = world.customers_updated_between(DAY_START, NEXT_DAY_START)
    new_ids = set(range(day_index * 150 + 1, day_index * 150 + 151))
    assert new_ids <= {c["customer_id"] for c in customers}
    products = world.products_updated_between(DAY_START, NEXT_DAY_START)
    assert [p["product_id"] for p in products] == list(range(1, 501))
    assert {p["updated_at"] for p in products} == {DAY_START + timedelta(minutes=5)}
    assert 49_000 < len(world.web_events_on(DAY)) < 51_000
    statuses = Counter(o["order_status"] for o in orders)  # final: every life has ended
    assert 0.77 < statuses["delivered"] / len(orders) < 0.83 and set(statuses) == FINAL_STATUSES
    for table, key in (
        ("order_items", "order_item_id"),
        ("payments", "payment_id"),
        ("web_events", "event_id"),
    ):
        keys = [r[key] for r in getattr(world, f"{table}_on")(DAY)]
        assert keys == sorted(keys) and len(keys) == len(set(keys)), table


def test_attributes_change_now_and_then(world: ShopWorld) -> None:
    """Stateless (entity, day) functions that still change over time: the input of the SCD2 snapshots."""
    small = ShopWorld(0.05)
    versions: dict[int, set[tuple]] = defaultdict(set)
    appearances: Counter[int] = Counter()
    for offset in range(60):
        start = DAY_START - timedelta(days=offset)
        for customer in small.customers_updated_between(start, start + timedelta(days=1)):
            versions[customer["customer_id"]].add((customer["loyalty_tier"], customer["city"], customer["email"]))
            appearances[customer["customer_id"]] += 1
    returning = [customer_id for customer_id, days in appearances.items() if days > 1]
    changed = [customer_id for customer_id in returning if len(versions[customer_id]) > 1]
    assert 0 < len(changed) < len(returning) / 2  # some customers change, most stay the same

    now = world.products_updated_between(DAY_START, NEXT_DAY_START)
    earlier = world.products_updated_between(DAY_START - timedelta(days=90), DAY_START - timedelta(days=89))
    repriced = [p for p, q in zip(now, earlier, strict=True) if p["unit_price_cents"] != q["unit_price_cents"]]
    assert 0 < len(repriced) < 500
    assert [(p["sku"], p["category"]) for p in now] == [(p["sku"], p["category"]) for p in earlier]


# ---------------------------------------------------------------------------------- life of an order

LIVES = (
    ["placed"],
    ["placed", "cancelled"],
    ["placed", "paid", "shipped", "delivered"],
    ["placed", "paid", "shipped", "delivered", "refunded"],
)


def test_order_lifecycles_are_ordered_and_bounded(world: ShopWorld) -> None:
    last_second = NEXT_DAY_START - timedelta(seconds=1)
    final = world.orders_on(DAY)
    for order in final:
        life = world.order_life(order["order_id"])
        statuses, times = [status for status, _ in life], [at for _, at in life]
        assert statuses in LIVES and times == sorted(times)
        assert (times[0], statuses[-1], times[-1]) == (order["ordered_at"], order["order_status"], order["updated_at"])
        if len(life) > 1:  # paid or failed 5-120 s later, but on the order's day like its payment
            assert times[1] - times[0] <= timedelta(seconds=120) and times[1] <= last_second
            assert times[1] - times[0] >= timedelta(seconds=5) or times[1] == last_second
        if len(life) > 2:
            assert timedelta(hours=6) <= times[2] - times[1] <= timedelta(days=3)
            assert timedelta(days=1) <= times[3] - times[2] <= timedelta(days=6)
        if len(life) > 4:
            assert times[3] + timedelta(days=1) <= times[4] <= times[0] + timedelta(days=30)
    assert {o["order_status"] for o in final} == FINAL_STATUSES
    assert world.order_life(0) == [] and world.order_life(order_id_of(DAY, 2001)) == []

    # As of any instant an order is its latest transition by then; before its ordered_at it does not exist.
    for as_of in (DAY_START + timedelta(hours=12), NEXT_DAY_START, DAY_START + timedelta(days=4, seconds=7)):
        expected = {}
        for order in final:
            reached = [(status, at) for status, at in world.order_life(order["order_id"]) if at <= as_of]
            if reached:
                expected[order["order_id"]] = reached[-1]
        served = {o["order_id"]: (o["order_status"], o["updated_at"]) for o in world.orders_on(DAY, as_of=as_of)}
        assert served == expected and len(served) > 0

    # Payments follow the lives: the capture (or failure) on the order's day, a refund on the day it happens.
    payments = {p["payment_id"]: p for p in world.payments_on(DAY)}
    refunded = [o for o in final if o["order_status"] == "refunded"]
    for order in final[:300] + refunded[:10]:
        life = dict(world.order_life(order["order_id"]))
        payment = payments.get(order["order_id"] * 10 + 1)
        if order["order_status"] == "placed":
            assert payment is None
            continue
        assert payment["paid_at"] == payment["updated_at"] == life.get("paid", life.get("cancelled"))
        assert payment["payment_status"] == ("failed" if order["order_status"] == "cancelled" else "captured")
        if order["order_status"] == "refunded":
            refund_day = life["refunded"].date()
            refund = {p["payment_id"]: p for p in world.payments_on(refund_day)}[order["order_id"] * 10 + 2]
            assert (refund["payment_status"], refund["paid_at"]) == ("refunded", life["refunded"])
            assert refund["amount_cents"] == payment["amount_cents"] and refund_day > DAY
            assert order["order_id"] * 10 + 2 not in payments
            # A payment exists from its paid_at on and never changes.
            assert order["order_id"] * 10 + 2 not in {
                p["payment_id"] for p in world.payments_on(refund_day, as_of=life["refunded"] - timedelta(seconds=1))
            }


def test_status_mix_as_of_the_orders_day_and_finally(world: ShopWorld) -> None:
    at_day_end = Counter(o["order_status"] for o in world.orders_on(DAY, as_of=NEXT_DAY_START))
    final = Counter(o["order_status"] for o in world.orders_on(DAY))
    share = {status: count / 2000 for status, count in final.items()}
    assert 0.03 < share["placed"] < 0.07 and 0.06 < share["cancelled"] < 0.10
    assert 0.77 < share["delivered"] < 0.85 and 0.05 < share["refunded"] < 0.09
    # At the end of its day nothing is delivered or refunded yet; a few early orders have shipped.
    assert set(at_day_end) == {"placed", "paid", "shipped", "cancelled"}
    assert at_day_end["placed"] == final["placed"] and at_day_end["cancelled"] == final["cancelled"]
    assert at_day_end["paid"] / 2000 > 0.75 and 0 < at_day_end["shipped"] / 2000 < 0.1


def test_a_days_truth_as_of_its_end_differs_from_its_final_truth_and_then_settles(world: ShopWorld) -> None:
    final = world.ground_truth(DAY)
    at_day_end = world.ground_truth(DAY, as_of=NEXT_DAY_START)
    assert at_day_end != final
    assert at_day_end["refunded_revenue_cents"] == 0 < final["refunded_revenue_cents"]
    assert at_day_end["net_revenue_cents"] > final["net_revenue_cents"]
    for column in ("orders_count", "billable_orders_count", "gross_revenue_cents", "customers_count", "events"):
        assert at_day_end[column] == final[column], column  # paid orders are billable; refunds come later
    two_weeks = world.ground_truth(DAY, as_of=NEXT_DAY_START + timedelta(days=14))
    assert 0 < two_weeks["refunded_revenue_cents"] < final["refunded_revenue_cents"]
    # 32 days after the day began (refunds come within 30 days of the order) the truth no longer changes.
    settled = DAY_START + timedelta(days=32)
    assert world.ground_truth(DAY, as_of=settled) == final
    assert world.orders_on(DAY, as_of=settled) == world.orders_on(DAY)
    assert world.record_counts(DAY, as_of=settled) == world.record_counts(DAY)
    midday = world.ground_truth(DAY, as_of=DAY_START + timedelta(hours=12))
    assert 0 < midday["orders_count"] < final["orders_count"] and 0 < midday["events"] < final["events"]
    before_the_day = world.record_counts(DAY, as_of=DAY_START - timedelta(seconds=1))
    assert before_the_day == dict.fromkeys((*API_TABLES, "web_events"), 0)


# ------------------------------------------------------------------------------------------ API


@pytest.mark.parametrize("table", list(API_TABLES))
def test_pagination_returns_every_record_exactly_once(
    table: str, world: ShopWorld, client: httpx.Client, server: DemoShopServer
) -> None:
    key = API_TABLES[table]
    expected = as_json(
        world.customers_updated_between(DAY_START, NEXT_DAY_START)
        if table == "customers"
        else world.products_updated_between(DAY_START, NEXT_DAY_START)
        if table == "products"
        else getattr(world, f"{table}_on")(DAY)
    )
    before = server.request_count
    served = fetch_all(client, table, day_params(table), limit=333)
    assert served == expected  # same records, same order, nothing repeated or skipped
    assert [r[key] for r in served] == sorted({r[key] for r in served})
    assert server.request_count - before == -(-len(expected) // 333)
    assert fetch_all(client, table, day_params(table), limit=10_000) == expected


def test_filters_select_by_date_and_update_range(world: ShopWorld, client: httpx.Client) -> None:
    for table, column in (("orders", "ordered_at"), ("order_items", "ordered_at"), ("payments", "paid_at")):
        assert {ts(r[column]).date() for r in fetch_all(client, table, {"date": DAY.isoformat()})} == {DAY}

    # A partial-day window, given with an explicit offset: exactly the versions updated inside it.
    since, before = DAY_START + timedelta(hours=6), DAY_START + timedelta(hours=12)
    params = {"updated_since": f"{since.isoformat()}+00:00", "updated_before": f"{before.isoformat()}Z"}
    customers = fetch_all(client, "customers", params)
    assert customers and all(since <= ts(c["updated_at"]) < before for c in customers)
    assert customers == as_json(world.customers_updated_between(since, before))
    # Products are all synced at 00:05, so a window after that holds none of that day's versions.
    assert fetch_all(client, "products", params) == []
    # A two-day window holds each customer once, in its latest version.
    two_days = fetch_all(
        client,
        "customers",
        day_params("customers", DAY - timedelta(days=1)) | {"updated_before": f"{NEXT_DAY_START.isoformat()}Z"},
    )
    assert len(two_days) == len({c["customer_id"] for c in two_days}) > len(customers)
    # The world starts in 2020: earlier days exist but are empty.
    assert fetch_all(client, "orders", {"date": "2019-06-01"}) == []


def test_auth_is_required_and_the_token_never_echoed(server: DemoShopServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as anonymous:
        assert anonymous.get("/health").json() == {"status": "ok"}
        responses = [
            anonymous.get("/v1/orders", params={"date": DAY.isoformat()}),
            anonymous.get("/v1/orders", params={"date": DAY.isoformat()}, headers={"Authorization": "Bearer wrong"}),
            anonymous.get("/v1/orders", params={"date": DAY.isoformat()}, headers={"Authorization": TOKEN}),
            anonymous.get("/admin/faults", headers={"Authorization": f"Bearer {TOKEN}x"}),
            anonymous.put("/admin/faults", json={"outage": True}),
        ]
    for response in responses:
        assert response.status_code == 401
        assert "error" in response.json()
        assert TOKEN not in response.text
    assert server.faults == SETTLED_FAULTS  # the unauthorised PUT changed nothing


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/v1/orders", {}, "date"),
        ("/v1/payments", {"date": "2026-02-30"}, "date"),
        ("/v1/orders", {"date": "20261120"}, "date"),
        ("/v1/orders", {"date": DAY.isoformat(), "limit": "0"}, "limit"),
        ("/v1/orders", {"date": DAY.isoformat(), "limit": "10001"}, "limit"),
        ("/v1/orders", {"date": DAY.isoformat(), "limit": "many"}, "limit"),
        ("/v1/orders", {"date": DAY.isoformat(), "cursor": "not-a-cursor"}, "cursor"),
        ("/v1/orders", {"date": DAY.isoformat(), "since": "2026-11-20"}, "since"),
        ("/v1/customers", {"updated_since": "2026-11-20T00:00:00Z"}, "updated_before"),
        (
            "/v1/customers",
            {"updated_since": "yesterday", "updated_before": "2026-11-21T00:00:00Z"},
            "updated_since",
        ),
        (
            "/v1/products",
            {"updated_since": "2026-11-21T00:00:00Z", "updated_before": "2026-11-20T00:00:00Z"},
            "updated_before",
        ),
        (
            "/v1/products",
            {"updated_since": "2026-01-01T00:00:00Z", "updated_before": "2026-11-20T00:00:00Z"},
            "updated_before",
        ),
        ("/v1/products", {"date": DAY.isoformat()}, "date"),
        ("/v1/orders", {"date": DAY.isoformat(), "updated_since": "2026-11-20T00:00:00Z"}, "updated_since"),
        ("/v1/orders", {"updated_before": "2026-11-20T00:00:00Z"}, "updated_since"),
        (
            "/v1/payments",
            {"updated_since": "2026-11-21T00:00:00Z", "updated_before": "2026-11-20T00:00:00Z"},
            "updated_before",
        ),
        (
            "/v1/order_items",
            {"updated_since": "2026-10-01T00:00:00Z", "updated_before": "2026-11-20T00:00:00Z"},
            "updated_before",
        ),
        ("/v1/orders", {"updated_since": "2027-11-20T00:00:00Z"}, "updated_since"),  # after the clock
        ("/v1/orders", {"updated_since": "2026-10-01T00:00:00Z"}, "updated_since"),  # 31 days before it at most
        ("/v1/orders", {"date": DAY.isoformat(), "fields": "order_status"}, "fields"),
        ("/v1/orders/control", {"date": DAY.isoformat(), "limit": "5"}, "limit"),
        ("/v1/payments/control", {"date": DAY.isoformat(), "fields": "payment_id"}, "fields"),
        ("/v1/customers/control", {"updated_since": "2026-11-20T00:00:00Z"}, "updated_before"),
    ],
)
def test_bad_parameters_get_400_naming_the_parameter(
    client: httpx.Client, path: str, params: dict[str, str], parameter: str
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 400
    assert parameter in response.json()["error"]


def test_cursor_of_another_query_and_unknown_paths_are_rejected(client: httpx.Client) -> None:
    first = client.get("/v1/orders", params={"date": DAY.isoformat(), "limit": 10}).json()
    reused = client.get("/v1/orders", params={"date": "2026-11-19", "cursor": first["next_cursor"]})
    assert reused.status_code == 400 and "cursor" in reused.json()["error"]
    assert client.get("/v1/refunds", params={"date": DAY.isoformat()}).status_code == 404
    assert client.get("/v1/orders/controls", params={"date": DAY.isoformat()}).status_code == 404
    assert client.get("/orders").status_code == 404


def test_ground_truth_matches_an_independent_recomputation(
    world: ShopWorld, client: httpx.Client, landed: list[Path]
) -> None:
    orders = fetch_all(client, "orders", {"date": DAY.isoformat()})
    totals: Counter[int] = Counter()
    quantities: Counter[int] = Counter()
    for item in fetch_all(client, "order_items", {"date": DAY.isoformat()}):
        totals[item["order_id"]] += item["quantity"] * item["unit_price_cents"] - item["discount_cents"]
        quantities[item["order_id"]] += item["quantity"]
    billable = [o["order_id"] for o in orders if o["order_status"] in BILLABLE]
    gross = sum(totals[i] for i in billable)
    refunded = sum(totals[o["order_id"]] for o in orders if o["order_status"] == "refunded")

    events = read_landing(landed)
    sessions_with: dict[str, set[str]] = defaultdict(set)
    for event in events:
        sessions_with[event["event_type"]].add(event["session_id"])

    assert world.ground_truth(DAY) == {
        "orders_count": len(orders),
        "billable_orders_count": len(billable),
        "items_sold": sum(quantities[i] for i in billable),
        "gross_revenue_cents": gross,
        "refunded_revenue_cents": refunded,
        "net_revenue_cents": gross - refunded,
        "customers_count": len({o["customer_id"] for o in orders}),
        "sessions": len({e["session_id"] for e in events}),
        "product_view_sessions": len(sessions_with["product_view"]),
        "add_to_cart_sessions": len(sessions_with["add_to_cart"]),
        "checkout_sessions": len(sessions_with["checkout_started"]),
        "purchase_sessions": len(sessions_with["purchase"]),
        "events": len(events),
    }
    assert gross > refunded > 0
    counts = world.record_counts(DAY)
    assert counts["orders"] == len(orders) and counts["web_events"] == len(events) and counts["products"] == 500


def test_a_day_is_referentially_complete(world: ShopWorld, client: httpx.Client, landed: list[Path]) -> None:
    customers = {c["customer_id"]: c for c in fetch_all(client, "customers", day_params("customers"))}
    product_ids = {p["product_id"] for p in fetch_all(client, "products", day_params("products"))}
    orders = {o["order_id"]: o for o in fetch_all(client, "orders", {"date": DAY.isoformat()})}
    items = fetch_all(client, "order_items", {"date": DAY.isoformat()})
    payments = fetch_all(client, "payments", {"date": DAY.isoformat()})

    last_activity: dict[int, datetime] = {}
    for order in orders.values():
        customer = customers[order["customer_id"]]  # every order's customer has a version that day
        assert ts(order["ordered_at"]) >= ts(customer["signup_at"])
        assert ts(order["ordered_at"]).date() == DAY and ts(order["updated_at"]) >= ts(order["ordered_at"])
        last_activity[customer["customer_id"]] = max(
            last_activity.get(customer["customer_id"], datetime.min), ts(order["ordered_at"])
        )
    for customer in customers.values():
        signup = ts(customer["signup_at"])
        expected = max(
            last_activity.get(customer["customer_id"], datetime.min),
            signup if signup.date() == DAY else datetime.min,
        )
        assert ts(customer["updated_at"]) == expected
        assert "@" in customer["email"] and customer["loyalty_tier"] in {
            "bronze",
            "silver",
            "gold",
            "platinum",
        }

    totals: Counter[int] = Counter()
    for item in items:
        assert item["product_id"] in product_ids
        assert item["ordered_at"] == orders[item["order_id"]]["ordered_at"]
        assert item["quantity"] > 0 and 0 <= item["discount_cents"] <= item["quantity"] * item["unit_price_cents"]
        totals[item["order_id"]] += item["quantity"] * item["unit_price_cents"] - item["discount_cents"]
    assert set(totals) == set(orders)  # every order has items

    payments_by_order: dict[int, list[str]] = defaultdict(list)
    refunds_of_earlier_orders: dict[date, list[dict]] = defaultdict(list)
    for payment in payments:
        assert ts(payment["paid_at"]).date() == DAY and payment["payment_id"] // 10 == payment["order_id"]
        order = orders.get(payment["order_id"])
        if order is None:  # a refund belongs to the day it happens, up to 30 days after its order's day
            assert payment["payment_status"] == "refunded" and payment["payment_id"] % 10 == 2
            refunds_of_earlier_orders[order_day(payment["order_id"])].append(payment)
            continue
        assert ts(payment["paid_at"]) >= ts(order["ordered_at"])
        assert payment["amount_cents"] == totals[payment["order_id"]]
        payments_by_order[payment["order_id"]].append(payment["payment_status"])
    # The day's own refunds come later, on the days they happen.
    expected_statuses = {"placed": [], "delivered": ["captured"], "cancelled": ["failed"], "refunded": ["captured"]}
    for order_id, order in orders.items():
        assert payments_by_order[order_id] == expected_statuses[order["order_status"]]
    assert set(refunds_of_earlier_orders) <= {DAY - timedelta(days=n) for n in range(2, 31)}
    for day in sorted(refunds_of_earlier_orders)[-3:]:  # the amounts of a few days' refunds
        order_totals: Counter[int] = Counter()
        for item in world.order_items_on(day):
            order_totals[item["order_id"]] += item["quantity"] * item["unit_price_cents"] - item["discount_cents"]
        assert all(p["amount_cents"] == order_totals[p["order_id"]] > 0 for p in refunds_of_earlier_orders[day])

    events = read_landing(landed)
    assert all(ts(e["occurred_at"]).date() == DAY for e in events)  # so every session is on one day
    assert all(e["session_id"].startswith("s-20261120-") and e["event_id"].startswith("e-20261120-") for e in events)
    assert len({e["event_id"] for e in events}) == len(events)
    for event in events:
        assert event["event_type"] in EVENT_TYPES
        has_product = event["event_type"] in ("product_view", "add_to_cart")
        assert (event["product_id"] is not None) == has_product
        assert event["product_id"] is None or event["product_id"] in product_ids
    # One purchase per order, by the order's customer at the order's time; browsing is anonymous.
    purchases = Counter((e["customer_id"], e["occurred_at"]) for e in events if e["event_type"] == "purchase")
    assert purchases == Counter((o["customer_id"], o["ordered_at"]) for o in orders.values())
    sessions: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        sessions[event["session_id"]].append(event)
    for session in sessions.values():
        assert len({e["customer_id"] for e in session}) == 1
        assert (session[0]["customer_id"] is not None) == any(e["event_type"] == "purchase" for e in session)


def test_landing_files_are_windowed_atomic_and_reproducible(world: ShopWorld, landed: list[Path]) -> None:
    directory = landed[0].parent
    assert [p.name for p in landed] == [f"events-{DAY.isoformat()}-{hour}.jsonl" for hour in ("00", "06", "12", "18")]
    assert directory.name == DAY.isoformat() and directory.parent.name == "incoming"
    assert directory.parents[1].name == "web_events"
    for path in landed:
        window_start = int(path.stem[-2:])
        lines = path.read_bytes().splitlines()
        events = [orjson.loads(line) for line in lines]
        assert events and all(window_start <= ts(e["occurred_at"]).hour < window_start + 6 for e in events)
        assert [e["event_id"] for e in events] == sorted(e["event_id"] for e in events)
        assert path.read_bytes().endswith(b"\n") and b"\n\n" not in path.read_bytes()
    # Together the windows hold exactly the day's events (ids follow sessions, so a session that straddles
    # a window boundary interleaves with the next file's first ids).
    assert sorted(read_landing(landed), key=lambda e: e["event_id"]) == as_json(world.web_events_on(DAY))

    before = {p: p.read_bytes() for p in landed}
    again = write_landing_files(directory.parents[2], DAY, ShopWorld(1.0))
    assert again == landed and {p: p.read_bytes() for p in again} == before
    assert sorted(directory.iterdir()) == sorted(landed)  # no temp files left behind


def test_bad_records_are_served_exactly_as_reported(tmp_path: Path) -> None:
    rate = 0.02
    world = ShopWorld(1.0, bad_record_rate=rate)
    broken_by_rule = {
        "orders": lambda r: (
            "order_status"
            if r["order_status"] not in ORDER_STATUSES
            else "customer_id"
            if r["customer_id"] is None
            else None
        ),
        "order_items": lambda r: "quantity" if r["quantity"] <= 0 else None,
        "payments": lambda r: "amount_cents" if r["amount_cents"] < 0 else None,
        "customers": lambda r: "email" if "@" not in r["email"] else None,
        "products": lambda r: "unit_price_cents" if r["unit_price_cents"] <= 0 else None,
    }
    with (
        DemoShopServer(world, TOKEN, faults=SETTLED_FAULTS) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client,
    ):
        for table, key in API_TABLES.items():
            served = fetch_all(client, table, day_params(table))
            found = {r[key]: broken_by_rule[table](r) for r in served if broken_by_rule[table](r)}
            reported = world.bad_records(table, DAY)
            assert found == reported, table
            assert abs(len(reported) - rate * len(served)) <= 1, table
    assert set(world.bad_records("orders", DAY).values()) == {"order_status", "customer_id"}

    events = read_landing(write_landing_files(tmp_path, DAY, world))
    found = {e["event_id"]: "event_type" for e in events if e["event_type"] not in EVENT_TYPES}
    assert found == world.bad_records("web_events", DAY) and found
    assert all(not ShopWorld(1.0).bad_records(table, DAY) for table in (*API_TABLES, "web_events"))


def test_encoding_survives_strings_that_look_like_object_boundaries() -> None:
    records = [{"id": 1, "note": "a},{b"}, {"id": 2, "at": DAY_START}, {"id": 3, "note": "}\n{"}]
    array, starts = encode_array(records)
    assert [orjson.loads(array[starts[i] : starts[i + 1] - 1]) for i in range(3)] == as_json(records)
    assert orjson.loads(array) == as_json(records)
    lines = b"".join(encode_lines(records))
    assert [orjson.loads(line) for line in lines.splitlines()] == as_json(records) and lines.endswith(b"\n")
    assert encode_lines([]) == []


# ------------------------------------------------------------------------ totals, control figures, keys


def iso(moment: datetime) -> str:
    return f"{moment.isoformat()}Z"


def walk(client: httpx.Client, table: str, params: dict[str, str], limit: int = 500) -> tuple[list[dict], int]:
    """Every record sent for a query, re-sent copies included, and the total (the same on every page)."""
    records: list[dict] = []
    totals = set()
    cursor = None
    while True:
        response = client.get(
            f"/v1/{table}", params={**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        totals |= {body["total"], int(response.headers["X-Total-Count"])}
        records += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            (total,) = totals
            return records, total


def md5_key_hash(text: str) -> int:
    return int.from_bytes(hashlib.md5(text.encode()).digest()[:8], "big")


def recomputed_control(table: str, records: list[dict]) -> dict:
    """The control figures of served records by DATA_SPEC.md, computed here without the server's code."""
    key = API_TABLES[table]

    def text(value: object) -> str:
        if type(value) is int:
            return str(value)
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))

    texts = {text(record[key]) for record in records}

    def amount(record: dict) -> int | None:
        columns = ("amount_cents",) if table == "payments" else ("quantity", "unit_price_cents", "discount_cents")
        values = [record[column] for column in columns]
        if not all(type(value) is int for value in values):
            return None
        return values[0] if table == "payments" else values[0] * values[1] - values[2]

    amounts = [amount(record) for record in records] if table in ("payments", "order_items") else None
    return {
        "count": len(texts),
        "key_checksum": str(sum(md5_key_hash(t) for t in texts) % 2**64),
        "amount_total": None if amounts is None else sum(a for a in amounts if a is not None),
    }


def test_the_checksum_of_known_keys() -> None:
    # (key, its key_text, the literal hash): the hashes were computed once with hashlib, e.g.
    # md5(b"1") = c4ca4238a0b92382..., so key_hash(1) = 0xc4ca4238a0b92382 = 14180219187711517570.
    known = [
        (1, "1", 14180219187711517570),
        (25150000001, "25150000001", 5612035127170498301),
        ("e-20261120-00000001", "e-20261120-00000001", 6615764679063097870),
        (None, "null", 4009933873399061218),
        (1.5, "1.5", 6919891270253167948),
        (True, "true", 12909204420003040873),
    ]
    for value, text, expected in known:
        assert key_text(value) == text and key_hash(value) == md5_key_hash(text) == expected, value
    assert key_text({"k": [1], "a": None}) == '{"k":[1],"a":null}' and key_text("a b") == "a b"
    # Distinct keys count once (1 and "1" are the same key text); the sum wraps at 2**64.
    assert key_checksum([1, 25150000001, None, 1, "1"]) == 5355444114571525473
    assert 14180219187711517570 + 5612035127170498301 + 4009933873399061218 == 5355444114571525473 + 2**64
    assert key_checksum([]) == 0


def test_total_counts_distinct_records_not_resent_copies(world: ShopWorld) -> None:
    expected = as_json(world.orders_on(DAY))
    with (
        DemoShopServer(world, TOKEN, faults=Faults(as_of=iso(SETTLED), duplicate_rate=0.1)) as source,
        httpx.Client(base_url=source.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client,
    ):
        sent, total = walk(client, "orders", {"date": DAY.isoformat()}, limit=300)
        assert total == len(expected) == len({r["order_id"] for r in sent}) < len(sent)
        assert len(sent) - total == Faults(duplicate_rate=0.1).duplicates_in(total)
        source.set_faults(Faults(as_of=iso(SETTLED), duplicate_rate=0.1, total_offset=-3))
        assert walk(client, "orders", {"date": DAY.isoformat()}, limit=300)[1] == len(expected) - 3


def test_a_settled_listing_is_the_same_at_any_later_clock_and_a_recent_one_is_not(world: ShopWorld) -> None:
    params = {"date": DAY.isoformat(), "limit": 10_000}
    with (
        DemoShopServer(world, TOKEN, faults=SETTLED_FAULTS) as source,
        httpx.Client(base_url=source.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client,
    ):
        settled = client.get("/v1/orders", params=params).content
        source.set_faults(Faults(as_of=iso(SETTLED + timedelta(days=400))))
        assert client.get("/v1/orders", params=params).content == settled
        bodies = []
        for hours in (48, 54):
            source.set_faults(Faults(as_of=iso(NEXT_DAY_START + timedelta(hours=hours))))
            bodies.append(client.get("/v1/orders", params=params).content)
        assert len(set(bodies)) == 2 and settled not in bodies


def test_control_figures_equal_a_recomputation_over_the_listing() -> None:
    small = ShopWorld(0.1)
    clock = NEXT_DAY_START + timedelta(hours=6, seconds=17)  # lives half over, late orders partly arrived
    garbage = {
        "orders": {"order_id": 5, "channel": None},
        "order_items": {"quantity": True, "order_item_id": None, "unit_price_cents": 1.5},
        "payments": {"amount_cents": "12", "payment_id": None},
        "customers": {"email": "\u0007"},
    }
    base = {"as_of": iso(clock), "late_arrival_rate": 0.2, "garbage_every": 7, "garbage": garbage}
    queries = [
        ("orders", {"date": DAY.isoformat()}),
        ("order_items", {"date": DAY.isoformat()}),
        ("payments", {"date": DAY.isoformat()}),
        ("payments", {"updated_since": iso(DAY_START - timedelta(days=9))}),
        ("orders", {"updated_since": iso(DAY_START + timedelta(hours=12)), "updated_before": iso(clock)}),
        ("customers", day_params("customers")),
        ("products", day_params("products")),
    ]
    with (
        DemoShopServer(small, TOKEN, faults=Faults(**base)) as source,
        httpx.Client(base_url=source.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client,
    ):
        figures = []
        for table, params in queries:
            records, total = walk(client, table, params, limit=97)
            control = client.get(f"/v1/{table}/control", params=params)
            assert control.status_code == 200 and control.headers["Content-Type"] == "application/json"
            expected = {"table": table, **recomputed_control(table, records), "as_of": iso(clock)}
            assert control.json() == expected, (table, params)
            assert len(records) == total >= expected["count"] > 0
            figures.append(control.json())
        # The garbage key 5 stands for several records, and late orders have not all arrived yet.
        assert figures[0]["count"] < walk(client, "orders", {"date": DAY.isoformat()})[1] < 200
        assert figures[1]["amount_total"] > 0 and figures[2]["amount_total"] > 0

        # Re-sent copies and the other listing-shape faults change the listing, never its control figures.
        source.set_faults(
            Faults(
                **base,
                duplicate_rate=0.1,
                total_offset=5,
                omit_next_cursor_after=1,
                malformed_body="html",
                schema_drift={"payments": {"drop": ["amount_cents"]}, "orders": {"rename": {"order_id": "id"}}},
            )
        )
        for (table, params), expected in zip(queries, figures, strict=True):
            assert client.get(f"/v1/{table}/control", params=params).json() == expected
        # Transport faults apply to control figures as to any /v1 request.
        params = queries[0][1]
        source.set_faults(Faults(**base, rate_limit_every=1))
        assert client.get("/v1/orders/control", params=params).status_code == 429
        source.set_faults(Faults(**base, outage=True))
        assert client.get("/v1/orders/control", params=params).status_code == 503
        source.set_faults(Faults(**base, truncate_every=1))
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/v1/orders/control", params=params)


@pytest.mark.parametrize(
    ("table", "params"),
    [
        *((table, day_params(table)) for table in API_TABLES),
        ("payments", {"updated_since": iso(DAY_START), "updated_before": iso(NEXT_DAY_START + timedelta(days=2))}),
    ],
)
def test_keys_only_pages_are_the_keys_of_the_full_pages(world: ShopWorld, table: str, params: dict[str, str]) -> None:
    key = API_TABLES[table]
    other = {"customers": "email", "products": "sku", "orders": "channel"}.get(table, "updated_at")
    faults = Faults(
        as_of=iso(SETTLED), duplicate_rate=0.05, garbage_every=9, garbage={table: {key: None, other: "garbage"}}
    )
    with (
        DemoShopServer(world, TOKEN, faults=faults) as source,
        httpx.Client(base_url=source.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client,
    ):
        cursor: dict[str, str] = {}
        pages = nulls = 0
        while True:
            full = client.get(f"/v1/{table}", params={**params, "limit": 333, **cursor})
            keys = client.get(f"/v1/{table}", params={**params, "limit": 333, "fields": key, **cursor})
            assert keys.status_code == full.status_code == 200
            assert keys.json() == {**full.json(), "data": [{key: record[key]} for record in full.json()["data"]]}
            assert keys.headers["X-Total-Count"] == full.headers["X-Total-Count"]
            nulls += sum(record[key] is None for record in keys.json()["data"])  # garbage in the key shows
            pages += 1
            if full.json()["next_cursor"] is None:
                break
            cursor = {"cursor": full.json()["next_cursor"]}
        assert pages > 1 and nulls > 0
        control = client.get(f"/v1/{table}/control", params=params).json()
        assert control["count"] <= full.json()["total"]


# ----------------------------------------------------------------------------------- change feed


def spec_listing(world: ShopWorld, faults: Faults, table: str, day: date, clock: datetime) -> list[dict]:
    """A date listing at `clock` by the spec: a late order (with its items and payments) is served as it
    stood LATE_ARRIVAL_DELAY earlier, its updated_at that much later."""
    on = getattr(world, f"{table}_on")
    on_time = [r for r in on(day, as_of=clock) if not faults.arrives_late(r["order_id"])]
    late = [
        r | {"updated_at": r["updated_at"] + LATE_ARRIVAL_DELAY}
        for r in on(day, as_of=clock - LATE_ARRIVAL_DELAY)
        if faults.arrives_late(r["order_id"])
    ]
    return sorted(on_time + late, key=lambda r: r[API_TABLES[table]])


def spec_changes(listings: dict[date, list[dict]], table: str, since: datetime, before: datetime) -> list[dict]:
    """The change feed by the spec: every date's records (`listings`, each day's spec_listing at the
    clock) whose updated_at is in [since, before)."""
    changed = [record for records in listings.values() for record in records if since <= record["updated_at"] < before]
    return as_json(sorted(changed, key=lambda r: r[API_TABLES[table]]))


@pytest.mark.parametrize("late_arrival_rate", [0.0, 0.2], ids=["on-time", "late-arrivals"])
def test_the_change_feed_returns_exactly_the_records_changed_in_the_window(late_arrival_rate: float) -> None:
    small = ShopWorld(0.1)
    clock = DAY_START + timedelta(days=3, hours=7, seconds=13)
    faults = Faults(as_of=iso(clock), late_arrival_rate=late_arrival_rate)
    windows = [
        (DAY_START, NEXT_DAY_START),
        (DAY_START + timedelta(hours=13, seconds=1), clock),
        (clock - timedelta(days=8), clock),
    ]
    with (
        DemoShopServer(small, TOKEN, faults=faults) as source,
        httpx.Client(base_url=source.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client,
    ):
        # Every day whose orders can change inside the windows: 30 days of a life, a day of late arrival.
        first_day = windows[-1][0].date() - timedelta(days=32)
        days = [first_day + timedelta(days=n) for n in range((clock.date() - first_day).days + 1)]
        for table in ("orders", "order_items", "payments"):
            listings = {day: spec_listing(small, faults, table, day, clock) for day in days}
            for since, before in windows:
                params = {"updated_since": iso(since), "updated_before": iso(before)}
                served = fetch_all(client, table, params, limit=700)
                assert served == spec_changes(listings, table, since, before), (table, since, before)
                assert served and all(since <= ts(r["updated_at"]) < before for r in served)
                if not late_arrival_rate:
                    assert served == as_json(small.changed_between(table, since, before, as_of=clock))
            # Without updated_before the window ends at the clock.
            assert fetch_all(client, table, {"updated_since": iso(windows[1][0])}) == fetch_all(
                client, table, {"updated_since": iso(windows[1][0]), "updated_before": iso(clock)}
            )
        # Orders of many days change inside a day: placed, paid, shipped, delivered, refunded.
        statuses = {r["order_status"] for r in fetch_all(client, "orders", day_params("customers", DAY))}
        assert statuses == ORDER_STATUSES


def test_a_refund_is_a_change_of_the_day_it_happens(world: ShopWorld, client: httpx.Client) -> None:
    order = next(o for o in world.orders_on(DAY) if o["order_status"] == "refunded")
    refunded_at = dict(world.order_life(order["order_id"]))["refunded"]
    refund_day = refunded_at.date()
    assert refund_day > DAY
    refund_id = order["order_id"] * 10 + 2
    window = day_params("customers", refund_day)  # the refund day's [00:00, 24:00)
    payments = {p["payment_id"]: p for p in fetch_all(client, "payments", window)}
    assert ts(payments[refund_id]["paid_at"]) == ts(payments[refund_id]["updated_at"]) == refunded_at
    orders = {o["order_id"]: o for o in fetch_all(client, "orders", window)}
    assert orders[order["order_id"]]["order_status"] == "refunded"
    assert ts(orders[order["order_id"]]["updated_at"]) == refunded_at
    assert refund_id in {p["payment_id"] for p in fetch_all(client, "payments", {"date": refund_day.isoformat()})}
    assert refund_id not in {p["payment_id"] for p in fetch_all(client, "payments", {"date": DAY.isoformat()})}


def test_change_feed_cursors_stay_bound_to_their_query_and_window() -> None:
    small = ShopWorld(0.1)
    clock = DAY_START + timedelta(days=3)
    since = iso(DAY_START)
    with (
        DemoShopServer(small, TOKEN, faults=Faults(as_of=iso(clock))) as source,
        httpx.Client(base_url=source.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client,
    ):
        first = client.get("/v1/orders", params={"updated_since": since, "limit": 100}).json()
        cursor = first["next_cursor"]
        for params in (
            {"updated_since": iso(DAY_START + timedelta(seconds=1))},
            {"updated_since": since, "updated_before": iso(clock)},
            {"date": DAY.isoformat()},
        ):
            reused = client.get("/v1/orders", params={**params, "cursor": cursor})
            assert reused.status_code == 400 and "cursor" in reused.json()["error"]
        # The window of a listing without updated_before ends at its first page's clock, whatever the
        # clock says when the later pages are asked for.
        later = clock + timedelta(hours=6)
        source.set_faults(Faults(as_of=iso(later)))
        rest: list[dict] = []
        while cursor:
            page = client.get("/v1/orders", params={"updated_since": since, "limit": 100, "cursor": cursor}).json()
            rest += page["data"]
            cursor = page["next_cursor"]
        assert rest and all(ts(r["updated_at"]) < clock for r in rest)
        last_key = first["data"][-1]["order_id"]
        expected = small.changed_between("orders", DAY_START, clock, as_of=later)
        assert rest == as_json([r for r in expected if r["order_id"] > last_key])


# ------------------------------------------------------------------------------- current state


def test_current_state_lists_each_record_under_its_latest_update_only() -> None:
    small = ShopWorld(0.1)
    clock = DAY_START + timedelta(hours=14, seconds=9)
    days = 4
    with (
        DemoShopServer(small, TOKEN, faults=Faults(as_of=iso(clock)), dimensions="current_state") as source,
        httpx.Client(base_url=source.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client,
    ):
        windows = [(clock - timedelta(days=n + 1), clock - timedelta(days=n)) for n in range(days)]
        listed: dict[int, dict] = {}
        for since, before in windows:
            params = {"updated_since": iso(since), "updated_before": iso(before)}
            customers = fetch_all(client, "customers", params)
            assert customers and all(since <= ts(c["updated_at"]) < before for c in customers)
            assert not set(listed) & {c["customer_id"] for c in customers}  # one window per customer
            listed |= {c["customer_id"]: c for c in customers}
            assert customers == as_json(small.current_versions_between("customers", since, before, as_of=clock))
            control = client.get("/v1/customers/control", params=params).json()
            assert control == {"table": "customers", **recomputed_control("customers", customers), "as_of": iso(clock)}
            keys = fetch_all(client, "customers", params | {"fields": "customer_id"})
            assert keys == [{"customer_id": c["customer_id"]} for c in customers]
        # updated_before is optional here: the window then ends at the clock.
        whole = fetch_all(client, "customers", {"updated_since": iso(windows[-1][0])})
        assert whole == [listed[customer_id] for customer_id in sorted(listed)]

        # Independently: a customer's current version is the one of its latest activity (signup or order)
        # at or before the clock; no activity of a listed customer falls after its listed updated_at.
        latest: dict[int, datetime] = {}
        for n in range(days + 1):
            day = (clock - timedelta(days=days - n)).date()
            for order in small.orders_on(day, as_of=clock):
                latest[order["customer_id"]] = max(latest.get(order["customer_id"], datetime.min), order["ordered_at"])
            start = datetime(day.year, day.month, day.day)
            for customer in small.customers_updated_between(start, start + timedelta(days=1)):
                if start <= customer["signup_at"] <= clock:
                    latest.setdefault(customer["customer_id"], customer["signup_at"])
        recent = {cid: at for cid, at in latest.items() if windows[-1][0] <= at < clock}
        assert {cid: ts(c["updated_at"]) for cid, c in listed.items()} == recent
        # The version itself is the customer's daily version of that day.
        for customer in list(listed.values())[::25]:
            at = ts(customer["updated_at"])
            start = datetime(at.year, at.month, at.day)
            (daily,) = [
                c
                for c in small.customers_updated_between(start, start + timedelta(days=1))
                if c["customer_id"] == customer["customer_id"]
            ]
            assert as_json([daily])[0] | {"updated_at": customer["updated_at"]} == customer

        # Products: all 500 at the latest nightly sync, and nothing in older windows.
        synced = DAY_START + timedelta(minutes=5)
        products = fetch_all(client, "products", {"updated_since": iso(synced), "updated_before": iso(clock)})
        assert len(products) == 500 and {ts(p["updated_at"]) for p in products} == {synced}
        assert (
            fetch_all(
                client, "products", {"updated_since": iso(synced - timedelta(days=3)), "updated_before": iso(synced)}
            )
            == []
        )

        too_far = client.get("/v1/customers", params={"updated_since": iso(clock - timedelta(days=367))})
        assert too_far.status_code == 400 and "updated_since" in too_far.json()["error"]
        assert source.dimensions == "current_state"
    with pytest.raises(ValueError, match="dimensions"):
        DemoShopServer(small, TOKEN, dimensions="latest")


# ---------------------------------------------------------------------------------------- faults


def test_faults_rate_limit_errors_latency_and_outage(world: ShopWorld) -> None:
    with (
        DemoShopServer(world, TOKEN) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client,
    ):

        def orders() -> httpx.Response:
            return client.get("/v1/orders", params={"date": DAY.isoformat(), "limit": 1})

        put = client.put("/admin/faults", json={"rate_limit_every": 3, "retry_after_seconds": 0.25})
        assert put.status_code == 200 and put.json()["rate_limit_every"] == 3
        statuses = [orders() for _ in range(6)]
        assert [r.status_code for r in statuses] == [200, 200, 429, 200, 200, 429]
        assert statuses[2].headers["Retry-After"] == "0.25" and "error" in statuses[2].json()

        client.put("/admin/faults", json={"error_rate": 0.5})
        assert [orders().status_code for _ in range(4)] == [200, 500, 200, 500]

        client.put("/admin/faults", json={"latency_ms": 150})
        started = time.perf_counter()
        assert orders().status_code == 200 and time.perf_counter() - started >= 0.15

        assert client.put("/admin/faults", json={"outage": True}).json()["outage"] is True
        outage = orders()
        assert outage.status_code == 503 and "error" in outage.json()
        assert client.get("/health").status_code == 200
        assert client.get("/admin/faults").json() == {**Faults().to_dict(), "outage": True}

        bad_put = client.put("/admin/faults", json={"error_rate": 2})
        assert bad_put.status_code == 400 and "error_rate" in bad_put.json()["error"]
        assert client.put("/admin/faults", json={"retry": 1}).status_code == 400
        assert server.faults.outage is True  # a rejected PUT leaves the faults alone

        assert client.put("/admin/faults", json={}).json() == Faults().to_dict()
        assert orders().status_code == 200
        assert server.request_count == 6 + 4 + 1 + 1 + 1  # /v1 requests only, whatever their outcome


def test_stop_drops_open_keep_alive_connections(world: ShopWorld) -> None:
    server = DemoShopServer(world, TOKEN).start()
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/health").status_code == 200  # leaves a pooled keep-alive connection
        server.stop()
        with pytest.raises(httpx.TransportError):
            client.get("/health")


# ------------------------------------------------------------------------------------------- CLI


def start_cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("SHOP_API_TOKEN", None)
    return subprocess.Popen(
        [sys.executable, "-m", "demo_source", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_line(process: subprocess.Popen, timeout: float = 30) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "no output from the CLI in time"
    return process.stdout.readline()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serve_prints_ready_serves_and_exits_cleanly(tmp_path: Path, stop_signal: signal.Signals) -> None:
    process = start_cli(
        "serve", "--port", "0", "--token", "cli-token", "--scale", "0.05", "--landing-dir", str(tmp_path),
        "--end-date", DAY.isoformat(), "--days", "2", "--dimensions", "current_state",
    )  # fmt: skip
    try:
        line = read_line(process)
        assert line.startswith("READY http://127.0.0.1:") and line.endswith("\n")
        url = line.split()[1]
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
        served = httpx.get(
            f"{url}/v1/orders",
            params={"date": DAY.isoformat()},
            headers={"Authorization": "Bearer cli-token"},
        )
        assert served.json()["total"] == len(ShopWorld(0.05).orders_on(DAY))
        # Current state, served as of the wall clock: updated_before may be left out.
        an_hour_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
        current = httpx.get(
            f"{url}/v1/customers",
            params={"updated_since": iso(an_hour_ago)},
            headers={"Authorization": "Bearer cli-token"},
        )
        assert current.status_code == 200 and all(ts(c["updated_at"]) >= an_hour_ago for c in current.json()["data"])
        for day in (DAY - timedelta(days=1), DAY):
            assert len(list((tmp_path / "web_events" / "incoming" / day.isoformat()).glob("events-*.jsonl"))) == 4
        process.send_signal(stop_signal)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read() == ""  # READY was the only line on stdout
    finally:
        process.kill()
        process.wait()


def test_cli_land_writes_the_same_files_as_the_library(tmp_path: Path) -> None:
    process = start_cli(
        "land",
        "--landing-dir",
        str(tmp_path / "cli"),
        "--end-date",
        DAY.isoformat(),
        "--days",
        "1",
        "--scale",
        "0.05",
    )
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    cli_paths = [Path(line) for line in stdout.splitlines()]
    library_paths = write_landing_files(tmp_path / "lib", DAY, ShopWorld(0.05))
    assert [p.read_bytes() for p in cli_paths] == [p.read_bytes() for p in library_paths]


def test_cli_errors_are_one_line_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cases = [
            (("serve", "--port", port, "--scale", "0.05"), "--port"),
            (("serve", "--scale", "1000"), "--scale"),
            (("land", "--landing-dir", "/proc/forbidden", "--scale", "0.05", "--days", "1"), "--landing-dir"),
            (("serve", "--end-date", "tomorrow"), "--end-date"),
            (("serve", "--dimensions", "latest", "--scale", "0.05"), "--dimensions"),
        ]
        for args, setting in cases:
            process = start_cli(*args)
            stdout, stderr = process.communicate(timeout=60)
            assert process.returncode == 2, (args, stderr)
            assert stdout == "" and len(stderr.strip().splitlines()) == 1 and setting in stderr, (
                args,
                stderr,
            )
