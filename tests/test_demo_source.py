"""Tests of the demo shop source (pipeline_project.demo_source): generator, HTTP API, landing files, CLI.

Everything runs against a real server on 127.0.0.1 (port 0) with a real httpx client and real files.
Served JSON and landed files are checked against the generator's public API and, for the ground truth
and the referential rules, against recomputations written here from the spec.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from pipeline_project.demo_source import DemoShopServer, Faults, ShopWorld, write_landing_files
from pipeline_project.demo_source.encoding import encode_array, encode_lines

REPO_ROOT = Path(__file__).resolve().parents[1]
DAY = date(2026, 11, 20)
DAY_START = datetime(2026, 11, 20)
NEXT_DAY_START = DAY_START + timedelta(days=1)
TOKEN = "s3cret-test-token"
API_TABLES = {
    "customers": "customer_id",
    "products": "product_id",
    "orders": "order_id",
    "order_items": "order_item_id",
    "payments": "payment_id",
}
ORDER_STATUSES = {"placed", "paid", "shipped", "delivered", "cancelled", "refunded"}
BILLABLE = {"paid", "shipped", "delivered", "refunded"}
EVENT_TYPES = {"page_view", "product_view", "add_to_cart", "checkout_started", "purchase"}

# Run in this process and in a fresh interpreter (with another hash seed): same bytes means the world is
# deterministic across processes, bad records included.
DIGEST_SCRIPT = """
import hashlib
from datetime import date, datetime, timedelta

import orjson

from pipeline_project.demo_source import ShopWorld


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


def read_landing(paths: list[Path]) -> list[dict]:
    return [orjson.loads(line) for path in paths for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def world() -> ShopWorld:
    return ShopWorld(scale=1.0)


@pytest.fixture(scope="module")
def server(world: ShopWorld) -> Iterator[DemoShopServer]:
    with DemoShopServer(world, TOKEN) as running:
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
    statuses = Counter(o["order_status"] for o in orders)
    assert 0.35 < statuses["delivered"] / len(orders) < 0.45 and set(statuses) == ORDER_STATUSES
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
    assert server.faults == Faults()  # the unauthorised PUT changed nothing


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


def test_a_day_is_referentially_complete(client: httpx.Client, landed: list[Path]) -> None:
    customers = {c["customer_id"]: c for c in fetch_all(client, "customers", day_params("customers"))}
    product_ids = {p["product_id"] for p in fetch_all(client, "products", day_params("products"))}
    orders = {o["order_id"]: o for o in fetch_all(client, "orders", {"date": DAY.isoformat()})}
    items = fetch_all(client, "order_items", {"date": DAY.isoformat()})
    payments = fetch_all(client, "payments", {"date": DAY.isoformat()})

    last_activity: dict[int, datetime] = {}
    for order in orders.values():
        customer = customers[order["customer_id"]]  # every order's customer has a version that day
        assert ts(order["ordered_at"]) >= ts(customer["signup_at"])
        assert ts(order["ordered_at"]).date() == ts(order["updated_at"]).date() == DAY
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

    payments_by_order: dict[int, list[dict]] = defaultdict(list)
    for payment in payments:
        order = orders[payment["order_id"]]
        assert ts(payment["paid_at"]).date() == DAY and ts(payment["paid_at"]) >= ts(order["ordered_at"])
        assert payment["amount_cents"] == totals[payment["order_id"]]
        payments_by_order[payment["order_id"]].append(payment)
    expected_statuses = {
        "placed": [],
        "paid": ["captured"],
        "shipped": ["captured"],
        "delivered": ["captured"],
        "cancelled": ["failed"],
        "refunded": ["captured", "refunded"],
    }
    for order_id, order in orders.items():
        assert [p["payment_status"] for p in payments_by_order[order_id]] == expected_statuses[order["order_status"]]

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
        DemoShopServer(world, TOKEN) as server,
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
        [sys.executable, "-m", "pipeline_project.demo_source", *args],
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
        "--end-date", DAY.isoformat(), "--days", "2",
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
        ]
        for args, setting in cases:
            process = start_cli(*args)
            stdout, stderr = process.communicate(timeout=60)
            assert process.returncode == 2, (args, stderr)
            assert stdout == "" and len(stderr.strip().splitlines()) == 1 and setting in stderr, (
                args,
                stderr,
            )
