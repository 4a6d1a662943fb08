"""Every way a listing can lose records fails the completeness check, against a source whose paging is broken
on purpose while its control figures tell the truth (`misbehaving_source`, a real HTTP server on 127.0.0.1):
a page served in place of another, a page skipped, a record that moves across a page cut while the listing
is read, copies standing in for missing records, and a `total` that agrees with the broken listing.

For each, the load is not committed (the partition keeps its previous version byte for byte), the ledger
entry of the failed load names exactly the keys that went missing and the ones sent twice, and the blocking
`source_reconciled` check fails with those figures in its metadata. Without control figures, a keys-only
second pass at another page size catches the same losses; the check never passes on counts alone."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest
from misbehaving_source import MisbehavingSource, Misbehaviour

from pipeline_project.definitions import defs
from pipeline_project.ingest.api_assets import api_read
from pipeline_project.ingest.asset_checks import RECONCILIATION_CHECK, raw_asset_key, reconciliation_result
from pipeline_project.ingest.listing_filters import day_filter
from pipeline_project.ingest.loading import load_partition
from pipeline_project.ingest.sources import ShopApiClient
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import RAW_CONTRACTS

from harness import TOKEN

DAY = date(2026, 3, 14)
PAGE = 50


@pytest.fixture
def orders(world):
    return world.orders_on(DAY)


def _source(records, table="orders"):
    contract = RAW_CONTRACTS[table]
    amount = None
    if table == "payments":
        amount = lambda record: record["amount_cents"]  # noqa: E731
    return MisbehavingSource(table, contract.primary_key, records, TOKEN, amount)


def _load(lake: Lake, source: MisbehavingSource, control: str = "endpoint", run_id: str = "run-broken"):
    contract = RAW_CONTRACTS[source.table]
    with ShopApiClient(source.url, TOKEN, page_size=PAGE, max_backoff_seconds=0.01) as client:
        read = api_read(client, contract, day_filter(source.table, DAY), control)
        return load_partition(lake, contract, DAY, run_id, read)


def _files(lake: Lake, table: str = "orders") -> dict[str, bytes]:
    return {str(path.relative_to(lake.root)): path.read_bytes() for path in sorted(lake.root.rglob("*.parquet"))} | {
        "manifest": lake.manifest_path(table, DAY).read_bytes()
    }


def _keys_of_page(records, number: int) -> list[str]:
    return [str(record["order_id"]) for record in records[(number - 1) * PAGE : number * PAGE]]


def _expected_loss(records, fault: str) -> tuple[set[str], int]:
    """The keys the broken listing never sends, and how many of the keys it does send arrive twice."""
    if fault == "swap_page":
        return set(_keys_of_page(records, 2)), PAGE
    if fault == "skip_page":
        return set(_keys_of_page(records, 2)), 0
    if fault == "move_across_cut":
        return {str(records[PAGE + 1]["order_id"])}, 1
    half = len(records) - len(records) // 2
    return {str(record["order_id"]) for record in records[len(records) // 2 :]}, half


@pytest.mark.parametrize("total_agrees", [False, True], ids=["honest_total", "total_agrees_with_listing"])
@pytest.mark.parametrize("fault", ["swap_page", "skip_page", "move_across_cut", "copies_for_missing"])
def test_a_listing_that_loses_records_is_never_committed(tmp_path, orders, fault, total_agrees):
    lake = Lake(tmp_path / "lake")
    with _source(orders) as source:
        good = _load(lake, source, run_id="run-good")
        assert good.committed, good.manifest.verdict
        before = _files(lake)

        source.misbehaviour = Misbehaviour(fault=fault, page=2, total_agrees=total_agrees)
        broken = _load(lake, source)

    missing, resent = _expected_loss(sorted(orders, key=lambda r: r["order_id"]), fault)
    assert not broken.committed
    assert _files(lake) == before, "the previous version stays byte for byte"
    rejected = lake.read_rejected("orders", DAY)
    assert rejected is not None and rejected.run_id == "run-broken"
    verdict = rejected.verdict
    assert verdict["agrees"] is False
    assert verdict["missing_count"] == len(missing) and verdict["unexpected_count"] == 0
    assert set(verdict["missing_sample"]) <= missing and len(verdict["missing_sample"]) == min(10, len(missing))
    assert rejected.accounted["count"] == len(orders) - len(missing)
    assert rejected.control["count"] == len(orders)
    if fault == "copies_for_missing" and total_agrees:
        # A total of 100 distinct records cannot need a fourth page of 50: the listing is broken off there.
        assert verdict["problems"][0].startswith("the listing broke off: GET /v1/orders?date=2026-03-14: page 3")
        assert 0 < rejected.copies < resent
    else:
        assert rejected.copies == resent, "the copies that stood in for the lost records are counted, never trusted"

    check = reconciliation_result("orders", lake, [DAY])
    assert not check.passed
    assert check.metadata["missing_keys"].value == len(missing)
    assert check.metadata["keys_differing"].value[DAY.isoformat()]["missing_count"] == len(missing)


def test_without_a_control_endpoint_a_keys_only_second_pass_catches_the_loss(tmp_path, orders):
    lake = Lake(tmp_path / "lake")
    with _source(orders) as source:
        assert _load(lake, source, control="key_listing").committed
        source.misbehaviour = Misbehaviour(fault="swap_page", page=2, total_agrees=True)
        broken = _load(lake, source, control="key_listing")
        assert not any("/control" in request for request in source.requests), "no control endpoint was asked"
    assert not broken.committed
    assert broken.manifest.control["kind"] == "key listing"
    assert broken.manifest.verdict["missing_count"] == PAGE


def test_a_second_pass_broken_the_same_way_still_disagrees_at_another_page_size(tmp_path, orders):
    lake = Lake(tmp_path / "lake")
    with _source(orders) as source:
        source.misbehaviour = Misbehaviour(fault="swap_page", page=2, keys_pages_broken=True)
        broken = _load(lake, source, control="key_listing")
    assert not broken.committed, "the two passes lose different records, so they cannot agree"
    assert lake.read_manifest("orders", DAY) is None


def test_keys_the_source_cannot_name_are_reported_as_such(tmp_path, orders):
    lake = Lake(tmp_path / "lake")
    with _source(orders) as source:
        source.misbehaviour = Misbehaviour(fault="skip_page", page=3, keys_pages_broken=True)
        broken = _load(lake, source)
    verdict = broken.manifest.verdict
    assert not broken.committed and verdict["missing_count"] is None
    assert any("cannot be named" in problem for problem in verdict["problems"])
    assert any(f"{len(orders) - PAGE} distinct keys accounted for" in problem for problem in verdict["problems"])


def test_an_amount_the_listing_altered_fails_the_money_control_total(tmp_path, world):
    payments = world.payments_on(DAY)
    lake = Lake(tmp_path / "lake")
    with _source(payments, table="payments") as source:
        source.amount = lambda record: record["amount_cents"] + (1 if record is payments[0] else 0)
        result = _load(lake, source)
    assert not result.committed
    assert result.manifest.control["amount_total"] == result.manifest.accounted["amount_total"] + 1
    assert result.manifest.verdict["missing_count"] == 0 and result.manifest.verdict["unexpected_count"] == 0


def test_the_blocking_check_stops_the_run_and_names_the_loss(tmp_path, orders, state_dir, monkeypatch, instance):
    with _source(orders) as source:
        monkeypatch.setenv("SHOP_API_URL", source.url)
        monkeypatch.setenv("SHOP_API_TOKEN", TOKEN)
        source.misbehaviour = Misbehaviour(fault="copies_for_missing", total_agrees=True)
        result = defs.resolve_job_def("shop_pipeline").execute_in_process(
            instance=instance,
            asset_selection=[raw_asset_key("orders")],
            partition_key=DAY.isoformat(),
            raise_on_error=False,
        )
    assert not result.success
    evaluations = [
        event.asset_check_evaluation_data
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and event.asset_check_evaluation_data.check_name == RECONCILIATION_CHECK
    ]
    assert len(evaluations) == 1 and not evaluations[0].passed
    assert evaluations[0].metadata["missing_keys"].value == len(orders) // 2 + len(orders) % 2
    assert Lake(state_dir / "lake").read_manifest("orders", DAY) is None
