"""A value of the wrong JSON type among good ones (a type change, "abc" in a numeric column).

The policy of `schema_drift`: a value that cannot be converted to its contract column's type quarantines its
row with the rule `<column>:dtype`, the values as sent kept in `_rejected_values`, and the rest of the batch
loads; a column none of whose values fits (its type changed wholesale) is breaking drift and fails the
partition. The unit tests build batches the way the sources do (`observed_frame`) and split them; the
end-to-end tests put garbage into the demo API's orders and into a landing file and check the data: exactly
the injected rows quarantined with the values as sent, the rest equal to a clean load, everything reconciled.
"""

import json
from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from demo_source import DemoShopServer, Faults, ShopWorld
from pipeline_project.ingest.api_assets import load_api_partition
from pipeline_project.ingest.asset_checks import reconciliation_result
from pipeline_project.ingest.extraction import observed_frame
from pipeline_project.ingest.landing_reader import iter_landing_batches
from pipeline_project.ingest.loading import PartitionRead, load_partition
from pipeline_project.ingest.sources import ShopApiClient
from pipeline_project.lake.partition_writer import LINEAGE_SCHEMA
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import QUARANTINE_REASON, RAW_CONTRACTS, REJECTED_VALUES, split_batch
from pipeline_project.quality.schema_drift import PartitionDriftWatch, SchemaDriftError, TypeChange, compare, conform

from harness import TOKEN

DAY = date(2026, 3, 14)
PAYMENTS = RAW_CONTRACTS["payments"]
WEB_EVENTS = RAW_CONTRACTS["web_events"]


def _payment(payment_id: int, **values) -> dict:
    return {
        "payment_id": payment_id,
        "order_id": 100 + payment_id,
        "payment_method": "card",
        "payment_status": "captured",
        "amount_cents": 1000 + payment_id,
        "paid_at": "2026-03-14T10:00:00.000000Z",
        "updated_at": "2026-03-14T10:00:00.000000Z",
    } | values


def _split(contract, records: list[dict]) -> tuple[pl.DataFrame, pl.DataFrame]:
    conformed = PartitionDriftWatch(contract, DAY.isoformat()).admit(observed_frame(records), "test batch")
    return split_batch(contract, conformed.frame, conformed.type_failures)


# ------------------------------------------------------------------------------------------------ unit
def test_observed_frame_keeps_every_value_of_a_mixed_column_as_sent():
    frame = observed_frame(
        [{"a": 1, "b": "x", "c": 1}, {"a": "1", "b": {"k": 1}, "c": True}, {"a": None, "b": "y", "c": 2}]
    )
    assert frame.schema == pl.Schema({"a": pl.Object, "b": pl.Object, "c": pl.Object})
    # Polars alone would read 1 and "1" as the same string, true as 1 and the object among strings as null.
    assert [frame.get_column(name).to_list() for name in "abc"] == [[1, "1", None], ["x", {"k": 1}, "y"], [1, True, 2]]
    single = observed_frame([{"a": 1, "b": None}, {"a": 2, "b": "x"}])
    assert single.schema == pl.Schema({"a": pl.Int64, "b": pl.String})


def test_values_that_do_not_fit_their_column_quarantine_their_rows_with_the_values_as_sent():
    records = [
        _payment(1),
        _payment(2, amount_cents="abc"),  # text in an integer column
        _payment(3, payment_method=7),  # a number in a string column
        _payment(4, order_id={"id": 104}),  # an object where a scalar belongs
        _payment(5, paid_at="2026-02-30T10:00:00Z"),  # a timestamp that does not exist
        _payment(6, paid_at="14/03/2026"),  # a timestamp in another format
        _payment(7, amount_cents=True, payment_status=["captured"]),  # two misfits in one row
        _payment(8, amount_cents=12.5),  # a fraction in an integer column
        _payment(9, amount_cents=-1),  # fits its type, breaks a value rule: quarantined as before
        _payment(10),
    ]
    assert not compare(PAYMENTS, observed_frame(records))
    valid, quarantined = _split(PAYMENTS, records)

    clean, _ = _split(PAYMENTS, [_payment(1), _payment(10)])
    assert_frame_equal(valid, clean)
    assert quarantined.columns == [*PAYMENTS.columns, QUARANTINE_REASON, REJECTED_VALUES]
    rows = {row["payment_id"]: row for row in quarantined.iter_rows(named=True)}
    assert {key: (row[QUARANTINE_REASON], row[REJECTED_VALUES]) for key, row in rows.items()} == {
        2: ("amount_cents:dtype", '{"amount_cents":"abc"}'),
        3: ("payment_method:dtype", '{"payment_method":7}'),
        4: ("order_id:dtype", '{"order_id":{"id":104}}'),
        5: ("paid_at:dtype", '{"paid_at":"2026-02-30T10:00:00Z"}'),
        6: ("paid_at:dtype", '{"paid_at":"14/03/2026"}'),
        7: ("amount_cents:dtype; payment_status:dtype", '{"amount_cents":true,"payment_status":["captured"]}'),
        8: ("amount_cents:dtype", '{"amount_cents":12.5}'),
        9: ("amount_cents:greater_than_or_equal_to", None),
    }
    # A rejected value is null in its typed column; every other value of the row is kept as typed.
    assert (rows[2]["amount_cents"], rows[2]["order_id"], rows[4]["order_id"], rows[4]["amount_cents"]) == (
        None,
        102,
        None,
        1004,
    )
    # _rejected_values is JSON, and reading it back gives what the source sent.
    assert json.loads(rows[7][REJECTED_VALUES]) == {"amount_cents": True, "payment_status": ["captured"]}
    assert len(valid) + len(quarantined) == len(records)


def test_a_misfit_in_a_nullable_column_is_quarantined_too():
    event = {
        "event_id": "e1",
        "session_id": "s1",
        "customer_id": 3,
        "event_type": "page_view",
        "product_id": 5,
        "page_path": "/",
        "occurred_at": "2026-03-14T10:00:00.000000Z",
    }
    records = [
        event,
        {**event, "event_id": "e2", "customer_id": "guest"},
        {**event, "event_id": "e3", "product_id": None},
    ]
    valid, quarantined = _split(WEB_EVENTS, records)
    assert valid.get_column("event_id").to_list() == ["e1", "e3"]
    assert quarantined.select("event_id", QUARANTINE_REASON, REJECTED_VALUES).rows() == [
        ("e2", "customer_id:dtype", '{"customer_id":"guest"}')
    ]


def test_a_column_whose_type_changed_wholesale_is_still_breaking_drift():
    watch = PartitionDriftWatch(PAYMENTS, DAY.isoformat())
    all_text = [_payment(1, amount_cents="1001"), _payment(2, amount_cents="abc")]
    with pytest.raises(SchemaDriftError) as failure:
        watch.admit(observed_frame(all_text), "GET /v1/payments?date=2026-03-14")
    assert str(failure.value).endswith("~ amount_cents: Int64 -> String  type changed")

    # Several JSON types, none of them the contract's: no value shows the column still means what it did.
    none_fits = [
        _payment(1, amount_cents="abc"),
        _payment(2, amount_cents={"cents": 1}),
        _payment(3, amount_cents=None),
    ]
    diff = compare(PAYMENTS, observed_frame(none_fits))
    assert diff.breaking and diff.type_changed == (TypeChange("amount_cents", "Int64", "mixed(object, string)"),)
    # Given a schema only, a mixed column cannot be judged by its values and counts as changed.
    assert compare(PAYMENTS, observed_frame(none_fits).schema).type_changed == (
        TypeChange("amount_cents", "Int64", "Object"),
    )

    # Judged per batch: when the only non-null values of a column misfit, its type changed as far as it shows.
    guest = {"event_id": "e1", "session_id": "s1", "customer_id": "guest", "event_type": "page_view"}
    only = compare(WEB_EVENTS, observed_frame([guest, {**guest, "event_id": "e2", "customer_id": None}]))
    assert only.breaking and only.type_changed == (TypeChange("customer_id", "Int64", "String"),)

    # An all-null column is still not drift, and conform reports no type failure for it.
    nulls = [_payment(1, amount_cents=None), _payment(2, amount_cents=None)]
    assert not compare(PAYMENTS, observed_frame(nulls))
    assert conform(PAYMENTS, observed_frame(nulls)).type_failures.is_empty()


# -------------------------------------------------------------------------------------------- end to end
def _load_orders(lake: Lake, url: str):
    contract = RAW_CONTRACTS["orders"]
    with ShopApiClient(url, TOKEN, page_size=50, max_backoff_seconds=0.05) as client:
        return load_api_partition(lake, client, contract, DAY, "test-run").manifest


def _raw(lake: Lake, table: str) -> pl.DataFrame:
    return pl.read_parquet(lake.data_path(table, DAY)).drop(list(LINEAGE_SCHEMA))


ORDER_GARBAGE = {
    "customer_id": "abc",
    "order_status": 3,
    "channel": {"name": "web"},
    "updated_at": "last tuesday",
}


def test_garbage_of_the_wrong_type_from_the_api_quarantines_exactly_its_rows(tmp_path):
    with DemoShopServer(ShopWorld(scale=0.1), token=TOKEN) as source:
        clean_lake, lake = Lake(tmp_path / "clean"), Lake(tmp_path / "lake")
        assert _load_orders(clean_lake, source.url).reconciled
        faults = Faults(garbage_every=7, garbage={"orders": ORDER_GARBAGE})
        source.set_faults(faults)
        manifest = _load_orders(lake, source.url)
        listing = source.world.orders_on(DAY)

    injected = {
        record["order_id"]: column
        for position, record in enumerate(listing)
        if (column := faults.garbage_at("orders", position))
    }
    assert set(injected.values()) == set(ORDER_GARBAGE)
    assert manifest.source_reported_count == manifest.fetched_count == len(listing)
    assert (manifest.loaded_count, manifest.quarantined_count, manifest.copies) == (
        len(listing) - len(injected),
        len(injected),
        0,
    )
    assert manifest.quarantine_reasons == {
        f"{column}:dtype": list(injected.values()).count(column) for column in ORDER_GARBAGE
    }
    quarantined = pl.read_parquet(lake.quarantine_path("orders", DAY))
    assert {
        order_id: (reason, json.loads(rejected))
        for order_id, reason, rejected in quarantined.select("order_id", QUARANTINE_REASON, REJECTED_VALUES).rows()
    } == {order_id: (f"{column}:dtype", {column: ORDER_GARBAGE[column]}) for order_id, column in injected.items()}
    clean = _raw(clean_lake, "orders")
    assert_frame_equal(_raw(lake, "orders"), clean.filter(~pl.col("order_id").is_in(list(injected))))
    assert manifest.reconciled and not lake.verify(manifest)
    assert reconciliation_result("orders", lake, [DAY]).passed


def test_garbage_of_the_wrong_type_in_a_landing_file_quarantines_its_lines(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    events = [
        {
            "event_id": f"e{number}",
            "session_id": "s1",
            "customer_id": number,
            "event_type": "page_view",
            "product_id": number if number % 2 == 0 else None,
            "page_path": f"/p/{number}",
            "occurred_at": f"2026-03-14T10:{number:02d}:00.000000Z",
        }
        for number in range(1, 21)
    ]
    garbage = {"e4": {"customer_id": "abc"}, "e9": {"page_path": 404}, "e16": {"product_id": [1, 2]}}
    sent = [event | garbage.get(event["event_id"], {}) for event in events]
    file = landing / "part-00.jsonl"
    file.write_bytes(b"".join(json.dumps(event).encode() + b"\n" for event in sent) + b"\n")
    lake = Lake(tmp_path / "lake")

    read = PartitionRead(lambda stats: iter_landing_batches(WEB_EVENTS, [file], stats, batch_rows=10), attempts=1)
    manifest = load_partition(lake, WEB_EVENTS, DAY, "landing", read).manifest

    assert manifest.fetched_count == manifest.control["count"] == 20, "the control figure of a file: its lines"
    assert (manifest.loaded_count, manifest.quarantined_count) == (17, 3)
    quarantined = pl.read_parquet(lake.quarantine_path("web_events", DAY))
    assert {
        event_id: (reason, json.loads(rejected))
        for event_id, reason, rejected in quarantined.select("event_id", QUARANTINE_REASON, REJECTED_VALUES).rows()
    } == {event_id: (f"{next(iter(values))}:dtype", values) for event_id, values in garbage.items()}
    clean = conform(WEB_EVENTS, observed_frame([e for e in events if e["event_id"] not in garbage])).frame
    assert_frame_equal(_raw(lake, "web_events"), clean)
    assert manifest.reconciled and reconciliation_result("web_events", lake, [DAY]).passed
