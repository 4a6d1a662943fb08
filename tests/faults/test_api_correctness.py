"""Extraction correctness against a source that fails, repeats itself and delivers late (the demo API's
fault knobs, on 127.0.0.1): the circuit breaker stops a run from hammering a source that is down, a record
delivered twice is loaded once and counted, the latest version wins, late records land in their own day on
the lookback rerun, and records sharing a timestamp across page cuts are each loaded exactly once."""

import re
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from demo_source import DemoShopServer, Faults, ShopWorld, write_landing_files
from demo_source.ledger import LATE_ARRIVAL_DELAY
from pipeline_project.definitions import defs
from pipeline_project.ingest.api_assets import api_read
from pipeline_project.ingest.asset_checks import raw_asset_key, reconciliation_result
from pipeline_project.ingest.assets import API_TABLES
from pipeline_project.ingest.circuit_breaker import CircuitBreaker
from pipeline_project.ingest.extraction import observed_frame
from pipeline_project.ingest.landing_reader import iter_landing_batches
from pipeline_project.ingest.listing_filters import day_filter
from pipeline_project.ingest.loading import PartitionRead, load_partition
from pipeline_project.ingest.reconcile import CONTROL_ENDPOINT, ControlFigures, key_text
from pipeline_project.ingest.source_errors import SourceError
from pipeline_project.ingest.sources import ShopApiClient, source_host
from pipeline_project.lake.partition_writer import LINEAGE_SCHEMA
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import QUARANTINE_REASON, RAW_CONTRACTS
from pipeline_project.quality.schema_drift import conform
from pipeline_project.resources import ShopApiResource

from harness import TOKEN

DAY = date(2026, 3, 14)
WORLD_SCALE = 0.1


class ManualClock:
    """Wall time that moves only when the test says so, to step through a breaker's cool-down."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 15, 2, 15, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def source():
    with DemoShopServer(ShopWorld(scale=WORLD_SCALE), token=TOKEN) as server:
        yield server


def _client(server, **options) -> ShopApiClient:
    options.setdefault("page_size", 50)
    return ShopApiClient(server.url, TOKEN, max_backoff_seconds=0.05, **options)


def _load(lake: Lake, client: ShopApiClient, table: str, day: date = DAY):
    contract = RAW_CONTRACTS[table]
    return load_partition(lake, contract, day, "test-run", api_read(client, contract, day_filter(table, day))).manifest


def _raw(lake: Lake, table: str, day: date = DAY) -> pl.DataFrame:
    return pl.read_parquet(lake.data_path(table, day)).drop(list(LINEAGE_SCHEMA))


def _served(world: ShopWorld, table: str, day: date = DAY) -> pl.DataFrame:
    """The day's records as the source holds them, typed like the raw layer, in primary-key order."""
    if table in ("customers", "products"):
        start = datetime(day.year, day.month, day.day)
        records = getattr(world, f"{table}_updated_between")(start, start + timedelta(days=1))
    else:
        records = getattr(world, f"{table}_on")(day)
    iso = [{k: f"{v.isoformat()}Z" if isinstance(v, datetime) else v for k, v in r.items()} for r in records]
    return conform(RAW_CONTRACTS[table], observed_frame(iso)).frame


# ------------------------------------------------------------------------------------- circuit breaker


def test_an_outage_opens_the_circuit_and_the_rest_of_the_run_fails_fast(source, tmp_path):
    source.set_faults(Faults(outage=True))
    threshold, attempts = 4, 3
    breaker = CircuitBreaker(source_host(source.url), failure_threshold=threshold, cooldown_seconds=600)
    lake = Lake(tmp_path / "lake")
    failures = []
    for table in API_TABLES:
        for day in (DAY, DAY + timedelta(days=1)):
            with _client(source, max_attempts=attempts, breaker=breaker) as client, pytest.raises(SourceError) as err:
                _load(lake, client, table, day)
            failures.append(err.value)

    # Without the breaker every partition would spend its attempts on its first page: 10 x 3 = 30 requests.
    # With it the bound is failure_threshold + one probe per elapsed cool-down = 4 + 0.
    assert len(failures) * attempts == 30
    assert source.request_count == threshold
    assert "GET /v1/customers/control answered HTTP 503" in str(failures[0])
    host = f"127.0.0.1:{source.port}"
    opened = re.compile(
        rf"GET /v1/\w+/control not sent: circuit open for {re.escape(host)} since (\S+) after 4 consecutive failed "
        r"requests \(last: HTTP 503\); next try at (\S+)$"
    )
    for failure in failures[1:]:
        match = opened.match(str(failure))
        assert match, str(failure)
        since, retry_at = (datetime.fromisoformat(moment) for moment in match.groups())
        assert retry_at - since == timedelta(seconds=600)
        assert failure.retryable, "an open circuit is worth retrying later, unlike a rejected token"
        assert TOKEN not in str(failure) and "?" not in str(failure) and "limit" not in str(failure)
    assert not list((tmp_path / "lake").rglob("*.parquet")), "no partition may be committed"


def test_after_the_cooldown_one_probe_goes_out_and_a_recovered_source_is_read_completely(source, tmp_path):
    clock = ManualClock()
    breaker = CircuitBreaker(source_host(source.url), failure_threshold=2, cooldown_seconds=60, clock=clock)
    lake = Lake(tmp_path / "lake")
    source.set_faults(Faults(outage=True))
    with _client(source, max_attempts=2, breaker=breaker) as client:
        with pytest.raises(SourceError, match="answered HTTP 503"):
            _load(lake, client, "orders")
        assert source.request_count == 2 and breaker.is_open

        clock.advance(59)
        with pytest.raises(SourceError, match="circuit open"):
            _load(lake, client, "orders")
        assert source.request_count == 2, "no request before the cool-down has passed"

        clock.advance(1)
        with pytest.raises(SourceError, match="circuit open .* next try at 2026-03-15T02:17:00Z"):
            _load(lake, client, "orders")
        assert source.request_count == 3, "one probe after the cool-down; it failed, so the circuit reopened"

        source.set_faults(Faults())
        clock.advance(60)
        manifest = _load(lake, client, "orders")
    assert not breaker.is_open
    assert manifest.reconciled and manifest.copies == 0
    assert_frame_equal(_raw(lake, "orders"), _served(source.world, "orders"))
    assert source.request_count == 3 + 2 + manifest.pages, "the probe, the control figures twice, the pages"


def test_the_clients_of_one_run_share_the_breaker_of_its_resource(source, tmp_path):
    source.set_faults(Faults(outage=True))
    api = ShopApiResource(base_url=source.url, token=TOKEN, page_size=50, max_attempts=2, circuit_failure_threshold=2)
    lake = Lake(tmp_path / "lake")
    with dg.build_resources({"shop_api": api}) as resources:
        with resources.shop_api.client() as orders, pytest.raises(SourceError, match="answered HTTP 503"):
            _load(lake, orders, "orders")
        with resources.shop_api.client() as payments, pytest.raises(SourceError, match="circuit open"):
            _load(lake, payments, "payments")
    assert source.request_count == 2


# ------------------------------------------------------------------------------------------ duplicates


@pytest.mark.parametrize("table", API_TABLES)
def test_records_sent_twice_are_loaded_once_and_counted(source, tmp_path, table):
    faults = Faults(duplicate_rate=0.05)
    source.set_faults(faults)
    lake = Lake(tmp_path / "lake")
    with _client(source) as client:
        manifest = _load(lake, client, table)

    expected = _served(source.world, table)
    injected = faults.duplicates_in(expected.height)
    assert injected > 0
    assert manifest.source_reported_count == expected.height, "total counts distinct records, not the copies"
    assert manifest.fetched_count == expected.height + injected
    assert (manifest.loaded_count, manifest.quarantined_count) == (expected.height, 0)
    assert manifest.copies_dropped == {"identical": injected, "newer_version": 0, "older_version": 0}
    assert manifest.accounted["count"] == manifest.control["count"] == expected.height
    assert_frame_equal(_raw(lake, table).sort(RAW_CONTRACTS[table].primary_key), expected)

    check = reconciliation_result(table, lake, [DAY])
    assert check.passed
    assert {name: check.metadata[name].value for name in ("accounted_keys", "control_keys", "copies_dropped")} == {
        "accounted_keys": expected.height,
        "control_keys": expected.height,
        "copies_dropped": injected,
    }


def test_a_landing_file_delivered_twice_loads_its_events_once(tmp_path):
    world = ShopWorld(scale=0.02)
    landing = tmp_path / "landing"
    files = write_landing_files(landing, DAY, world)
    relanded = files[2].with_name(f"{files[2].stem}-relanded.jsonl")
    relanded.write_bytes(files[2].read_bytes())
    repeated = len(relanded.read_bytes().splitlines())
    contract = RAW_CONTRACTS["web_events"]
    lake = Lake(tmp_path / "lake")
    read = PartitionRead(
        lambda stats: iter_landing_batches(contract, sorted([*files, relanded]), stats, batch_rows=100), attempts=1
    )
    manifest = load_partition(lake, contract, DAY, "test-run", read).manifest
    events = world.record_counts(DAY)["web_events"]
    assert manifest.reconciled and manifest.fetched_count == events + repeated
    assert manifest.loaded_count == events and manifest.copies_dropped["identical"] == repeated
    raw = _raw(lake, "web_events")
    assert raw.height == raw["event_id"].n_unique() == events


@pytest.mark.parametrize("skew_seconds", [90, -90], ids=["newer-copy-arrives-last", "stale-copy-arrives-last"])
def test_the_latest_version_of_a_record_sent_twice_wins_whatever_the_order_of_arrival(source, tmp_path, skew_seconds):
    faults = Faults(duplicate_rate=0.1, duplicate_skew_seconds=skew_seconds)
    source.set_faults(faults)
    lake = Lake(tmp_path / "lake")
    with _client(source, page_size=20) as client:
        manifest = _load(lake, client, "orders")

    served = _served(source.world, "orders")
    resent = [faults.is_duplicated(position) for position in range(served.height)]
    # The copy arrives after the original; only when it is the newer version may it replace the original.
    newer = timedelta(seconds=max(skew_seconds, 0))
    expected = served.with_columns(
        pl.when(pl.Series(resent))
        .then(pl.col("updated_at") + newer)
        .otherwise(pl.col("updated_at"))
        .alias("updated_at")
    )
    assert_frame_equal(_raw(lake, "orders").sort("order_id"), expected)
    assert manifest.reconciled and manifest.copies == sum(resent) > 0
    assert manifest.quarantined_count == 0


def _order(order_id: int, status: str, updated_at: str) -> dict:
    return {
        "order_id": order_id,
        "customer_id": 7,
        "order_status": status,
        "channel": "web",
        "currency": "USD",
        "ordered_at": "2026-03-14T10:00:00Z",
        "updated_at": updated_at,
    }


def _load_batches(lake: Lake, table: str, batches: list[list[dict]]):
    """Load hand-made source batches of one partition through the real writer, against control figures that
    name exactly the distinct keys of the batches (the source's truth for these tests); landing tables are
    reconciled by the lines read, as ingestion does."""
    contract = RAW_CONTRACTS[table]
    keys = {key_text(record[contract.primary_key]) for batch in batches for record in batch}

    def stream(stats):
        for batch in batches:
            stats.fetched_count += len(batch)
            yield observed_frame(batch)

    control = None if contract.from_landing_files else (lambda: ControlFigures.of_keys(CONTROL_ENDPOINT, keys))
    read = PartitionRead(stream, control=control, attempts=1)
    return load_partition(lake, contract, DAY, "test-run", read).manifest


def test_duplicates_resolve_across_batches_and_unresolvable_conflicts_are_quarantined(tmp_path):
    lake = Lake(tmp_path / "lake")
    t1, t2 = "2026-03-14T10:05:00Z", "2026-03-14T11:00:00Z"
    manifest = _load_batches(
        lake,
        "orders",
        [
            [_order(1, "paid", t1), _order(2, "paid", t1), _order(3, "paid", t1), _order(4, "paid", t1)],
            [
                _order(1, "paid", t1),  # an identical copy: dropped
                _order(2, "shipped", t2),  # a newer version in a later batch: replaces the written row
                _order(3, "unknown", t2),  # a newer version that breaks the contract: quarantined, old one dropped
                _order(4, "cancelled", t1),  # differs, same updated_at: neither can be trusted
                _order(5, "paid", t1),
            ],
        ],
    )
    loaded = _raw(lake, "orders").sort("order_id")
    assert loaded.select("order_id", "order_status").rows() == [(1, "paid"), (2, "shipped"), (5, "paid")]
    assert loaded.filter(pl.col("order_id") == 2)["updated_at"].item() == datetime(2026, 3, 14, 11, 0)
    quarantined = pl.read_parquet(lake.quarantine_path("orders", DAY)).sort("order_id", "order_status")
    assert quarantined.select("order_id", "order_status", QUARANTINE_REASON).rows() == [
        (3, "unknown", "order_status:isin"),
        (4, "cancelled", "order_id:conflicting_duplicate"),
        (4, "paid", "order_id:conflicting_duplicate"),
    ]
    assert (manifest.loaded_count, manifest.quarantined_count) == (3, 3)
    assert manifest.copies_dropped == {"identical": 1, "newer_version": 2, "older_version": 0}
    assert manifest.quarantine_reasons == {"order_id:conflicting_duplicate": 2, "order_status:isin": 1}
    assert manifest.accounted["count"] == 5
    assert manifest.reconciled and not lake.verify(manifest)


def test_every_copy_dropped_is_classified_by_how_it_arrived(tmp_path):
    lake = Lake(tmp_path / "lake")
    t1, t2, t3 = "2026-03-14T10:05:00Z", "2026-03-14T11:00:00Z", "2026-03-14T12:00:00Z"
    manifest = _load_batches(
        lake,
        "orders",
        [
            [_order(1, "paid", t1), _order(2, "shipped", t2), _order(3, "paid", t1)],
            [
                _order(1, "paid", t1),  # identical re-send
                _order(1, "paid", t1),  # and another
                _order(2, "paid", t1),  # a stale copy after the newer version: older_version
                _order(3, "shipped", t2),  # the record changed while it was read: the first arrival is replaced
                _order(3, "delivered", t3),  # and changed again
            ],
        ],
    )
    assert manifest.copies_dropped == {"identical": 2, "newer_version": 2, "older_version": 1}
    assert _raw(lake, "orders").sort("order_id").select("order_id", "order_status").rows() == [
        (1, "paid"),
        (2, "shipped"),
        (3, "delivered"),
    ]
    assert manifest.fetched_count == manifest.loaded_count + manifest.quarantined_count + manifest.copies == 8


@pytest.mark.parametrize(
    "stamp", [None, "last tuesday", "2026-02-30T10:00:00Z"], ids=["missing", "not_a_timestamp", "impossible_date"]
)
def test_versions_that_cannot_be_ordered_are_all_quarantined_never_dropped(tmp_path, stamp):
    lake = Lake(tmp_path / "lake")
    unstamped = _order(1, "shipped", "2026-03-14T10:05:00Z") | {"updated_at": stamp}
    manifest = _load_batches(
        lake,
        "orders",
        [
            [_order(1, "paid", "2026-03-14T10:05:00Z"), _order(2, "paid", "2026-03-14T10:05:00Z")],
            [unstamped, unstamped, _order(2, "paid", "2026-03-14T10:05:00Z")],
        ],
    )
    assert _raw(lake, "orders")["order_id"].to_list() == [2]
    quarantined = pl.read_parquet(lake.quarantine_path("orders", DAY)).sort("order_status")
    assert quarantined["order_id"].to_list() == [1, 1], "both versions of order 1 are kept, with the reason"
    assert quarantined["order_status"].to_list() == ["paid", "shipped"]
    assert all("order_id:unorderable_versions" in reason for reason in quarantined[QUARANTINE_REASON])
    assert manifest.copies_dropped == {"identical": 2, "newer_version": 0, "older_version": 0}
    assert manifest.reconciled and manifest.accounted["count"] == 2


def test_events_without_updated_at_keep_identical_copies_once_and_quarantine_differing_ones(tmp_path):
    lake = Lake(tmp_path / "lake")

    def event(event_id: str, event_type: str) -> dict:
        return {
            "event_id": event_id,
            "session_id": "s-1",
            "customer_id": None,
            "event_type": event_type,
            "product_id": None,
            "page_path": "/",
            "occurred_at": "2026-03-14T10:00:00Z",
        }

    manifest = _load_batches(
        lake,
        "web_events",
        [[event("e-1", "page_view"), event("e-2", "page_view")], [event("e-1", "page_view"), event("e-2", "bogus")]],
    )
    assert _raw(lake, "web_events")["event_id"].to_list() == ["e-1"]
    reasons = pl.read_parquet(lake.quarantine_path("web_events", DAY)).sort("event_type")
    assert reasons.select("event_id", "event_type", QUARANTINE_REASON).rows() == [
        ("e-2", "bogus", "event_type:isin; event_id:conflicting_duplicate"),
        ("e-2", "page_view", "event_id:conflicting_duplicate"),
    ]
    assert (manifest.loaded_count, manifest.quarantined_count, manifest.copies) == (1, 2, 1)
    assert manifest.reconciled and not lake.verify(manifest)


# ------------------------------------------------------------------------ late arrivals and cursor ties


def _scheduled_run(instance, at: datetime, selection: list[dg.AssetKey]) -> dg.ExecuteInProcessResult:
    """Evaluate the daily schedule at `at` and execute the run it requests, restricted to `selection`."""
    schedule = defs.resolve_schedule_def("shop_pipeline_schedule")
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=at)
    (request,) = schedule.evaluate_tick(context).run_requests
    return defs.resolve_job_def("shop_pipeline").execute_in_process(
        instance=instance, tags=request.tags, asset_selection=selection, raise_on_error=False
    )


def test_late_orders_are_missed_first_and_land_in_their_own_day_on_the_lookback_rerun(state_dir, instance, monkeypatch):
    world = ShopWorld(scale=WORLD_SCALE)
    first_run, second_run = datetime(2026, 3, 15, 2, 15, tzinfo=UTC), datetime(2026, 3, 16, 2, 15, tzinfo=UTC)
    faults = Faults(late_arrival_rate=0.1, as_of=first_run.isoformat())
    orders = world.orders_on(DAY)
    late = {o["order_id"] for o in orders if faults.arrives_late(o["order_id"])}
    not_yet_arrived = {
        o["order_id"]
        for o in orders
        if o["order_id"] in late and o["ordered_at"] + LATE_ARRIVAL_DELAY > first_run.replace(tzinfo=None)
    }
    assert not_yet_arrived, "the scenario needs orders that reach the source after the first run"
    lake = Lake(state_dir / "lake")
    with DemoShopServer(world, token=TOKEN, faults=faults) as server:
        monkeypatch.setenv("SHOP_API_URL", server.url)
        monkeypatch.setenv("SHOP_API_TOKEN", TOKEN)
        first = _scheduled_run(instance, first_run, [raw_asset_key("orders")])
        assert first.success
        first_ids = set(_raw(lake, "orders")["order_id"].to_list())
        assert first_ids == {o["order_id"] for o in orders} - not_yet_arrived
        assert lake.read_manifest("orders", DAY).reconciled

        server.set_faults(Faults(late_arrival_rate=0.1, as_of=second_run.isoformat()))
        second = _scheduled_run(instance, second_run, [raw_asset_key("orders")])
    assert second.success
    assert {m.partition for m in second.asset_materializations_for_node("raw_orders")} >= {DAY.isoformat()}
    rerun = _raw(lake, "orders")
    assert rerun.height == rerun["order_id"].n_unique() == len(orders)
    arrived_late = rerun.filter(pl.col("order_id").is_in(list(late)))
    assert (arrived_late["updated_at"].dt.date() >= DAY + timedelta(days=1)).all(), "stamped when they arrived"
    with duckdb.connect() as connection:
        partitions = connection.execute(
            "select _partition_date, count(*), count(distinct order_id) from read_parquet(?) "
            "where order_id in (select unnest(?)) group by all",
            [str(lake.root / "raw/orders/*/*.parquet"), [o["order_id"] for o in orders]],
        ).fetchall()
    assert partitions == [(DAY, len(orders), len(orders))], "each of the day's orders once, in its own partition"


@pytest.mark.parametrize("duplicate_rate", [0, 1 / 7], ids=["exclusive-cursor", "cursor-overlapping-each-cut"])
def test_records_sharing_updated_at_across_page_cuts_are_each_loaded_once(source, tmp_path, duplicate_rate):
    # All 500 products carry the same updated_at (the nightly sync); 7 per page puts a tie on every cut.
    faults = Faults(duplicate_rate=duplicate_rate)
    source.set_faults(faults)
    lake = Lake(tmp_path / "lake")
    with _client(source, page_size=7) as client:
        manifest = _load(lake, client, "products")
    expected = _served(source.world, "products")
    assert expected["updated_at"].n_unique() == 1 and expected.height == 500
    assert_frame_equal(_raw(lake, "products").sort("product_id"), expected)
    assert manifest.reconciled and manifest.copies == faults.duplicates_in(500)
    assert manifest.pages == 72 and source.request_count == 72 + 2, "the pages and the control figures twice"


def test_fault_settings_are_validated_with_the_setting_named():
    with pytest.raises(ValueError, match="as_of must be an ISO 8601 timestamp"):
        Faults(as_of="yesterday")
    with pytest.raises(ValueError, match="duplicate_rate must be a number in"):
        Faults(duplicate_rate=1.5)
