"""Schema drift: a source that changes the shape of its records is caught against the contract, batch by batch.

The unit tests compare frames with contracts and read the diff. The end-to-end tests drift the demo API's
`order_items` through `/admin/faults` and materialize `raw_order_items` on a real Dagster instance: additive
drift loads exactly the rows a clean source gives and warns; breaking drift fails the step without a retry,
names every changed column, and leaves the lake byte for byte as it was; once the source is fixed the rerun
loads and reconciles.
"""

import hashlib
import json
from datetime import date
from pathlib import Path

import dagster as dg
import httpx
import polars as pl
import pytest

from pipeline_project.definitions import defs
from pipeline_project.ingest.asset_checks import RECONCILIATION_CHECK, SCHEMA_DRIFT_CHECK, raw_asset_key
from pipeline_project.ingest.landing_reader import iter_landing_batches
from pipeline_project.ingest.loading import PartitionRead, load_partition
from pipeline_project.lake.partition_writer import LINEAGE_SCHEMA
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import RAW_CONTRACTS
from pipeline_project.quality.schema_drift import (
    Column,
    PartitionDriftWatch,
    Rename,
    SchemaDiff,
    SchemaDriftError,
    TypeChange,
    compare,
    conform,
)
from pipeline_project.resources import LakeResource, ShopApiResource

from harness import DAYS, TOKEN

ORDER_ITEMS = RAW_CONTRACTS["order_items"]
ITEM = {
    "order_item_id": 1,
    "order_id": 10,
    "product_id": 7,
    "quantity": 2,
    "unit_price_cents": 1999,
    "discount_cents": 0,
    "ordered_at": "2026-03-14T10:00:00.000000Z",
    "updated_at": "2026-03-14T10:00:00.000000Z",
}
BREAKING = {"drop": ["discount_cents"], "retype": {"quantity": "string"}, "rename": {"order_id": "order_ref"}}


def _schema(records: list[dict]) -> pl.Schema:
    return pl.DataFrame(records, infer_schema_length=None).schema


def _renamed(record: dict, old: str, new: str) -> dict:
    return {new if column == old else column: value for column, value in record.items()}


# ------------------------------------------------------------------------------------------- the diff
def test_the_diff_lists_every_added_removed_renamed_and_retyped_column():
    drifted = _renamed({**ITEM, "quantity": "2", "coupon_code": "X"}, "order_id", "order_ref")
    del drifted["discount_cents"], drifted["unit_price_cents"]

    diff = compare(ORDER_ITEMS, _schema([drifted]))

    assert diff.renamed == (Rename("order_id", "order_ref", "Int64"),)
    assert diff.type_changed == (TypeChange("quantity", "Int64", "String"),)
    assert diff.removed == (
        Column("unit_price_cents", "Int64", required=True),
        Column("discount_cents", "Int64", required=True),
    )
    assert diff.added == (Column("coupon_code", "String"),)
    assert diff.breaking
    assert diff.render().splitlines() == [
        "> order_id -> order_ref (Int64)  renamed?",
        "~ quantity: Int64 -> String  type changed",
        "- unit_price_cents (Int64)  removed",
        "- discount_cents (Int64)  removed",
        "+ coupon_code (String)  added (not loaded)",
    ]
    assert SchemaDiff.from_metadata(json.loads(json.dumps(diff.to_metadata()))) == diff


def test_all_null_columns_and_empty_batches_are_not_drift():
    nulls = {**ITEM, "discount_cents": None, "product_id": None}
    assert _schema([nulls])["discount_cents"] == pl.Null
    assert not compare(ORDER_ITEMS, _schema([nulls, nulls]))
    assert not compare(ORDER_ITEMS, pl.DataFrame().schema)
    assert compare(ORDER_ITEMS, _schema([ITEM])).render() == "no schema drift"


def test_a_rename_is_guessed_by_position_or_by_a_similar_name_of_the_same_type():
    orders = RAW_CONTRACTS["orders"]
    order = {
        "order_id": 1,
        "customer_id": 2,
        "order_status": "paid",
        "channel": "web",
        "currency": "EUR",
        "ordered_at": "2026-03-14T10:00:00Z",
        "updated_at": "2026-03-14T10:00:00Z",
    }
    # Names that are not alike (ratio 0.5), but the new column stands where the old one stood.
    in_place = compare(orders, _schema([_renamed(order, "customer_id", "client_id")]))
    assert in_place.renamed == (Rename("customer_id", "client_id", "Int64"),)
    assert not in_place.removed and not in_place.added

    # Moved to the end, but the names are alike.
    moved = {column: value for column, value in ITEM.items() if column != "unit_price_cents"} | {"price_cents": 1999}
    assert compare(ORDER_ITEMS, _schema([moved])).renamed == (Rename("unit_price_cents", "price_cents", "Int64"),)

    # Unlike names in another place, or another type: no guess, a removal and an addition.
    unrelated = {column: value for column, value in ITEM.items() if column != "discount_cents"} | {"gift_wrap": 0}
    retyped = _renamed({**ITEM, "order_id": "10"}, "order_id", "order_ref")
    for record, removed, added in ((unrelated, "discount_cents", "gift_wrap"), (retyped, "order_id", "order_ref")):
        diff = compare(ORDER_ITEMS, _schema([record]))
        assert not diff.renamed
        assert [c.name for c in diff.removed] == [removed] and [c.name for c in diff.added] == [added]


def test_conform_keeps_the_contract_columns_in_their_types_and_loads_a_missing_optional_column_as_null():
    web_events = RAW_CONTRACTS["web_events"]
    event = {
        "event_id": "e1",
        "session_id": "s1",
        "event_type": "page_view",
        "referrer": "https://example.com",
        "customer_id": None,
        "page_path": "/",
        "occurred_at": "2026-03-14T10:00:00.000000Z",
    }
    batch = pl.DataFrame([event])
    diff = compare(web_events, batch.schema)
    assert diff.removed == (Column("product_id", "Int64", required=False),)
    assert diff.added == (Column("referrer", "String"),)
    assert not diff.breaking

    conformed = conform(web_events, batch)
    assert conformed.type_failures.is_empty()
    typed = conformed.frame
    assert typed.columns == web_events.columns
    assert typed.schema["occurred_at"] == pl.Datetime("us") and typed.schema["customer_id"] == pl.Int64
    assert typed.row(0, named=True)["product_id"] is None


def test_a_partition_is_judged_on_all_its_batches():
    watch = PartitionDriftWatch(ORDER_ITEMS, "2026-03-14")
    watch.admit(pl.DataFrame([ITEM]), "page 1")
    watch.admit(pl.DataFrame([{**ITEM, "coupon_code": None}]), "page 2")
    watch.admit(pl.DataFrame([{**ITEM, "coupon_code": "X", "gift_wrap": True}]), "page 3")
    assert watch.diff == SchemaDiff(added=(Column("coupon_code", "String"), Column("gift_wrap", "Boolean")))

    with pytest.raises(SchemaDriftError) as failure:
        watch.admit(pl.DataFrame([{**ITEM, "quantity": 2.5}]), "GET /v1/order_items?date=2026-03-14")
    assert str(failure.value).startswith(
        "raw_order_items partition 2026-03-14: breaking schema drift in GET /v1/order_items?date=2026-03-14;"
    )
    assert str(failure.value).endswith("~ quantity: Int64 -> Float64  type changed")


def test_an_optional_column_counts_as_removed_only_when_no_batch_has_it():
    web_events = RAW_CONTRACTS["web_events"]
    event = {
        "event_id": "e1",
        "session_id": "s1",
        "customer_id": 3,
        "event_type": "page_view",
        "product_id": 5,
        "page_path": "/",
        "occurred_at": "2026-03-14T10:00:00.000000Z",
    }
    without_product = {column: value for column, value in event.items() if column != "product_id"}
    sometimes = PartitionDriftWatch(web_events, "2026-03-14")
    sometimes.admit(pl.DataFrame([without_product]), "file 1")
    sometimes.admit(pl.DataFrame([event]), "file 2")
    assert not sometimes.diff

    never = PartitionDriftWatch(web_events, "2026-03-14")
    never.admit(pl.DataFrame([without_product]), "file 1")
    assert never.diff == SchemaDiff(removed=(Column("product_id", "Int64", required=False),))


def test_breaking_drift_in_a_landing_file_names_the_file_and_commits_nothing(tmp_path):
    web_events = RAW_CONTRACTS["web_events"]
    day = date(2026, 3, 14)
    landing = tmp_path / "web_events" / day.isoformat()
    landing.mkdir(parents=True)
    good, drifted = landing / "part-00.jsonl", landing / "part-12.jsonl"
    line = {"event_id": "e1", "session_id": "s1", "customer_id": 3, "event_type": "page_view", "product_id": 5}
    good.write_text(json.dumps(line | {"page_path": "/", "occurred_at": "2026-03-14T01:00:00.000000Z"}) + "\n")
    drifted.write_text(json.dumps(line | {"path": "/", "occurred_at": 1773450000}) + "\n")
    lake = Lake(tmp_path / "lake")

    with pytest.raises(SchemaDriftError) as failure:
        load_partition(
            lake,
            web_events,
            day,
            "drift",
            PartitionRead(lambda stats: iter_landing_batches(web_events, [good, drifted], stats), attempts=1),
        )
    assert f"in landing file {drifted};" in str(failure.value)
    assert failure.value.diff.render().splitlines() == [
        "> page_path -> path (String)  renamed?",
        "~ occurred_at: String -> Int64  type changed",
    ]
    assert not [path for path in (tmp_path / "lake").rglob("*") if path.is_file()]


# -------------------------------------------------------------------------------- end to end
def _put_faults(server, faults: dict) -> httpx.Response:
    return httpx.put(f"{server.url}/admin/faults", json=faults, headers={"Authorization": f"Bearer {TOKEN}"})


def _materialize(instance, server, state_dir: Path, day: date) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [defs.get_assets_def(raw_asset_key("order_items"))],
        instance=instance,
        partition_key=day.isoformat(),
        resources={
            "shop_api": ShopApiResource(base_url=server.url, token=TOKEN, page_size=100),
            "lake": LakeResource(root=str(state_dir / "lake")),
        },
        raise_on_error=False,
    )


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def _loaded_rows(state_dir: Path, day: date) -> pl.DataFrame:
    data = pl.read_parquet(Lake(state_dir / "lake").data_path("order_items", day))
    return data.drop(list(LINEAGE_SCHEMA)).sort("order_item_id")


def _lake_files(state_dir: Path) -> dict[str, str]:
    return {
        str(path.relative_to(state_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in (state_dir / "lake").rglob("*")
        if path.is_file()
    }


def test_the_fault_knob_rejects_a_malformed_drift_with_a_reason(demo_source):
    answer = _put_faults(demo_source, {"schema_drift": {"order_items": {"retype": {"quantity": "decimal"}}}})
    assert answer.status_code == 400
    assert (
        answer.json()["error"]
        == "faults: schema_drift.order_items.retype.quantity must be one of string, float, got 'decimal'"
    )
    assert _put_faults(demo_source, {"schema_drift": {"invoices": {}}}).status_code == 400
    assert not demo_source.faults.schema_drift


def test_additive_drift_loads_the_same_rows_and_warns(demo_source, state_dir, instance):
    day = DAYS[0]
    clean = _materialize(instance, demo_source, state_dir, day)
    assert clean.success
    assert _checks(clean)[SCHEMA_DRIFT_CHECK].passed
    clean_rows = _loaded_rows(state_dir, day)
    assert clean_rows.height == demo_source.world.record_counts(day)["order_items"]

    assert _put_faults(demo_source, {"schema_drift": {"order_items": {"add": {"coupon_code": "X"}}}}).status_code == 200
    drifted = _materialize(instance, demo_source, state_dir, day)

    assert drifted.success
    assert _loaded_rows(state_dir, day).equals(clean_rows)
    checks = _checks(drifted)
    assert checks[RECONCILIATION_CHECK].passed
    warning = checks[SCHEMA_DRIFT_CHECK]
    assert not warning.passed and warning.severity == dg.AssetCheckSeverity.WARN
    added = [{"name": "coupon_code", "dtype": "String", "required": False}]
    assert warning.metadata[SCHEMA_DRIFT_CHECK].value == {
        day.isoformat(): {"breaking": False, "added": added, "removed": [], "renamed": [], "type_changed": []}
    }
    assert "+ coupon_code (String)  added (not loaded)" in warning.metadata["diff"].value
    assert Lake(state_dir / "lake").read_manifest("order_items", day).schema_drift["added"] == added


def test_breaking_drift_fails_before_writing_and_the_fixed_source_reloads(demo_source, state_dir, instance):
    loaded, never_loaded = DAYS
    assert _materialize(instance, demo_source, state_dir, loaded).success
    before = _lake_files(state_dir)
    assert _put_faults(demo_source, {"schema_drift": {"order_items": BREAKING}}).status_code == 200

    for day in (loaded, never_loaded):
        failed = _materialize(instance, demo_source, state_dir, day)
        assert not failed.success
        [failure] = failed.get_step_failure_events()
        message = failure.step_failure_data.user_failure_data.description
        assert message.startswith(
            f"raw_order_items partition {day.isoformat()}: breaking schema drift in "
            f"GET /v1/order_items?date={day.isoformat()};"
        )
        assert message.splitlines()[-3:] == [
            "> order_id -> order_ref (Int64)  renamed?",
            "~ quantity: Int64 -> String  type changed",
            "- discount_cents (Int64)  removed",
        ]
        metadata = failure.step_failure_data.user_failure_data.metadata
        assert metadata[SCHEMA_DRIFT_CHECK].value["breaking"] is True
        assert metadata["partition"].value == day.isoformat()
        assert not failed.filter_events(lambda event: event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY)
        assert _lake_files(state_dir) == before, "the lake changed: a file was written, replaced or left behind"

    assert _put_faults(demo_source, {}).status_code == 200
    for day in (loaded, never_loaded):
        rerun = _materialize(instance, demo_source, state_dir, day)
        assert rerun.success
        checks = _checks(rerun)
        assert checks[RECONCILIATION_CHECK].passed and checks[SCHEMA_DRIFT_CHECK].passed
        manifest = Lake(state_dir / "lake").read_manifest("order_items", day)
        assert manifest.reconciled
        assert manifest.loaded_count == demo_source.world.record_counts(day)["order_items"]
