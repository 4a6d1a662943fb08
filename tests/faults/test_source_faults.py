"""A source that stalls, cuts its pages short, miscounts them or answers 200 with the wrong thing (the demo
API's fault knobs, and a bare socket for what no HTTP server does, on 127.0.0.1).

Every test first commits a clean partition, then extracts it again against the fault. A fault the client can
ride out (a body cut once) loads the same rows; one it cannot fails the partition with a message naming the
endpoint (never the token) and leaves the committed partition byte for byte as it was, whatever pages had
already arrived; once the source behaves, the partition reloads and reconciles to the clean data. Records
carrying garbage (nulls, impossible dates, control characters, text in a numeric column) are quarantined with
the rule they broke while the rest loads, and fetched = loaded + quarantined.
"""

import hashlib
import socket
import threading
import time
from dataclasses import asdict
from datetime import date, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from demo_source import DemoShopServer, Faults, ShopWorld
from pipeline_project.ingest.api_assets import api_read, load_api_partition
from pipeline_project.ingest.asset_checks import reconciliation_result
from pipeline_project.ingest.loading import load_partition
from pipeline_project.ingest.source_errors import SourceError
from pipeline_project.ingest.sources import ShopApiClient
from pipeline_project.lake.partition_writer import LINEAGE_SCHEMA
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import QUARANTINE_REASON, RAW_CONTRACTS, REJECTED_VALUES

from harness import TOKEN

DAY = date(2026, 3, 14)
TABLE = "orders"
PAGE_SIZE = 50
READ_TIMEOUT = 0.3
ATTEMPTS = 3


@pytest.fixture
def source():
    with DemoShopServer(ShopWorld(scale=0.1), token=TOKEN) as server:
        yield server


@pytest.fixture
def lake(source, tmp_path) -> Lake:
    """A lake holding a clean, committed partition of TABLE on DAY."""
    lake = Lake(tmp_path / "lake")
    manifest = _load(lake, source.url)
    assert manifest.reconciled and manifest.loaded_count == source.world.record_counts(DAY)[TABLE] > PAGE_SIZE
    source.set_faults(Faults())
    return lake


def _requests_during(source: DemoShopServer, action):
    """The /v1 requests the source received while `action` ran, and what it returned."""
    before = source.request_count
    result = action()
    return source.request_count - before, result


def _client(url: str, **options) -> ShopApiClient:
    options = {"timeout_seconds": READ_TIMEOUT, "max_attempts": ATTEMPTS, **options}
    return ShopApiClient(url, TOKEN, page_size=PAGE_SIZE, max_backoff_seconds=0.05, **options)


def _load(lake: Lake, url: str, table: str = TABLE, day: date = DAY, **options):
    contract = RAW_CONTRACTS[table]
    with _client(url, **options) as client:
        return load_api_partition(lake, client, contract, day, "test-run").manifest


def _partition_state(lake: Lake, table: str = TABLE, day: date = DAY) -> dict:
    """The committed partition as readers see it: its manifest and the checksum of every file of it on disk."""
    manifest = lake.read_manifest(table, day)
    files = sorted(
        path for root in ("raw", "quarantine") for path in (lake.root / root / table).rglob("*") if path.is_file()
    )
    return {
        "manifest": manifest and asdict(manifest),
        "files": {str(path.relative_to(lake.root)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files},
    }


def _raw(lake: Lake, table: str = TABLE, day: date = DAY) -> pl.DataFrame:
    return pl.read_parquet(lake.data_path(table, day)).drop(list(LINEAGE_SCHEMA))


def _fails_leaving_the_partition_as_it_was(
    lake: Lake, url: str, table: str = TABLE, expected: type[Exception] = SourceError, **options
) -> Exception:
    before = _partition_state(lake, table)
    with pytest.raises(expected) as failure:
        _load(lake, url, table, **options)
    assert _partition_state(lake, table) == before, "a failed extraction must not change the committed partition"
    assert not list(lake.root.rglob("*.tmp")), "no temporary file may be left behind"
    assert TOKEN not in str(failure.value)
    return failure.value


def _recovers_to_the_clean_data(lake: Lake, source: DemoShopServer) -> None:
    clean = _raw(lake)
    source.set_faults(Faults())
    manifest = _load(lake, source.url)
    assert manifest.reconciled and (manifest.quarantined_count, manifest.copies) == (0, 0)
    assert manifest.source_reported_count == manifest.fetched_count == manifest.loaded_count == clean.height
    assert_frame_equal(_raw(lake), clean)
    assert reconciliation_result(TABLE, lake, [DAY]).passed


# -------------------------------------------------------------------------------------- slow source


def test_a_handler_slower_than_the_read_timeout_fails_in_bounded_time_and_commits_nothing(source, lake):
    source.set_faults(Faults(latency_ms=int(READ_TIMEOUT * 1000) + 700))
    started = time.monotonic()
    requests, failure = _requests_during(source, lambda: _fails_leaving_the_partition_as_it_was(lake, source.url))
    elapsed = time.monotonic() - started
    assert str(failure).startswith("GET /v1/orders/control failed: ReadTimeout")
    assert failure.retryable
    assert requests == ATTEMPTS, "each attempt timed out once; no more attempts than the policy"
    # Bounded by attempts x read timeout + backoff (capped at 0.05 s) + slack for a loaded machine.
    assert elapsed < ATTEMPTS * (READ_TIMEOUT + 0.05) + 2
    _recovers_to_the_clean_data(lake, source)


class SilentSocket:
    """A TCP listener on 127.0.0.1 that accepts connections and never sends a byte."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        self._listener.close()
        for connection in self.accepted:
            connection.close()
        self._thread.join(timeout=5)


def test_a_socket_that_accepts_and_never_answers_fails_in_bounded_time_and_commits_nothing(source, lake):
    with SilentSocket() as silent:
        started = time.monotonic()
        failure = _fails_leaving_the_partition_as_it_was(lake, silent.url)
        elapsed = time.monotonic() - started
        assert len(silent.accepted) == ATTEMPTS, "every attempt reconnects after its read timed out"
    assert str(failure).startswith("GET /v1/orders/control failed: ReadTimeout")
    assert elapsed < ATTEMPTS * (READ_TIMEOUT + 0.05) + 2
    _recovers_to_the_clean_data(lake, source)


# -------------------------------------------------------------------------- partial pages and counts


def test_a_body_cut_short_on_the_wire_is_retried_and_every_record_loads_once(source, lake):
    clean = _raw(lake)
    source.set_faults(Faults(truncate_every=2))
    requests, manifest = _requests_during(source, lambda: _load(lake, source.url))
    assert manifest.reconciled and (manifest.quarantined_count, manifest.copies) == (0, 0)
    assert manifest.fetched_count == manifest.loaded_count == clean.height
    pages = -(-clean.height // PAGE_SIZE)
    # Every even request is cut: the control figures before the read pass, each page is cut once and asked
    # again, and so are the control figures after it.
    assert manifest.pages == pages and requests == 2 * pages + 3
    assert_frame_equal(_raw(lake), clean)


def test_a_body_always_cut_short_fails_after_its_attempts_and_commits_nothing(source, lake):
    source.set_faults(Faults(truncate_every=1))
    requests, failure = _requests_during(source, lambda: _fails_leaving_the_partition_as_it_was(lake, source.url))
    assert str(failure).startswith("GET /v1/orders/control failed: RemoteProtocolError")
    assert failure.retryable and requests == ATTEMPTS
    _recovers_to_the_clean_data(lake, source)


def test_json_that_ends_early_is_retried_then_fails_and_commits_nothing(source, lake):
    source.set_faults(Faults(malformed_body="cut_json"))
    requests, failure = _requests_during(source, lambda: _fails_leaving_the_partition_as_it_was(lake, source.url))
    assert str(failure).startswith("GET /v1/orders answered 200 with ")
    assert "bytes that are not complete JSON" in str(failure)
    assert failure.retryable and requests == 1 + ATTEMPTS, "the control figures, then every attempt of page 1"
    _recovers_to_the_clean_data(lake, source)


def test_a_page_without_its_next_link_fails_the_partition_after_pages_had_arrived(source, lake):
    source.set_faults(Faults(omit_next_cursor_after=2))
    requests, failure = _requests_during(source, lambda: _fails_leaving_the_partition_as_it_was(lake, source.url))
    assert str(failure) == (
        "GET /v1/orders answered with a JSON object in which next_cursor is missing; "
        "expected a JSON object with data, next_cursor and total"
    )
    assert not failure.retryable, "a source that dropped a field of its API needs a person, not a retry"
    assert requests == 3, "the control figures and the first page were read, the second was rejected at once"
    _recovers_to_the_clean_data(lake, source)


@pytest.mark.parametrize("offset", [7, -7], ids=["fewer-records-than-reported", "more-records-than-reported"])
def test_a_wrong_total_decides_nothing_the_keys_reconcile_against_the_control_figures(source, lake, offset):
    # `total` is the listing's own claim: recorded, compared, never trusted. The records are all there, which
    # the control figures prove, so the partition loads; a total that agrees with a broken listing cannot
    # pass either (tests/faults/test_listing_loss.py).
    clean = _raw(lake)
    served = source.world.record_counts(DAY)[TABLE]
    source.set_faults(Faults(total_offset=offset))
    manifest = _load(lake, source.url)
    assert manifest.reconciled and manifest.source_reported_count == served + offset
    assert manifest.control["count"] == manifest.accounted["count"] == manifest.loaded_count == served
    assert_frame_equal(_raw(lake), clean)


def test_a_listing_whose_total_changes_between_pages_is_read_again(source, lake):
    contract = RAW_CONTRACTS[TABLE]
    clean = _raw(lake)
    reads = []

    def records_arrive_after_the_first_page(client, stats):
        reads.append(stats)
        for index, batch in enumerate(client.iter_batches(contract, DAY, stats, batch_rows=1)):
            if index == 0 and len(reads) == 1:
                source.set_faults(Faults(total_offset=3))
            yield batch

    with _client(source.url) as client:
        read = api_read(client, contract, {"date": DAY.isoformat()}, attempts=2)
        read.batches = lambda stats: records_arrive_after_the_first_page(client, stats)
        result = load_partition(lake, contract, DAY, "test-run", read)
    served = source.world.record_counts(DAY)[TABLE]
    assert len(reads) == 2, "the first read broke off when the total changed; the second read the listing whole"
    assert reads[0].pages == 2 and reads[1].source_reported_count == served + 3
    assert result.committed and result.manifest.reconciled and result.manifest.attempts == 2
    assert_frame_equal(_raw(lake), clean)


def test_a_listing_whose_total_keeps_changing_is_rejected_and_says_so(source, lake):
    contract = RAW_CONTRACTS[TABLE]
    before = _partition_state(lake)

    def total_moves_on_every_page(client, stats):
        source.set_faults(Faults())
        for index, batch in enumerate(client.iter_batches(contract, DAY, stats, batch_rows=1)):
            source.set_faults(Faults(total_offset=index + 1))
            yield batch

    with _client(source.url) as client:
        read = api_read(client, contract, {"date": DAY.isoformat()}, attempts=2)
        read.batches = lambda stats: total_moves_on_every_page(client, stats)
        result = load_partition(lake, contract, DAY, "test-run", read)
    served = source.world.record_counts(DAY)[TABLE]
    assert not result.committed and _partition_state(lake) == before and not list(lake.root.rglob("*.tmp"))
    assert result.manifest.verdict["problems"][0] == (
        f"the listing broke off: GET /v1/orders?date=2026-03-14: the listing changed while it was read "
        f"(page 2 reports {served + 1} records, the first page {served})"
    )
    assert lake.read_rejected(TABLE, DAY).verdict == result.manifest.verdict
    assert not reconciliation_result(TABLE, lake, [DAY]).passed
    _recovers_to_the_clean_data(lake, source)


# ---------------------------------------------------------------------- empty or unexpected 200


def test_a_day_with_no_records_commits_an_empty_reconciled_partition(source, tmp_path):
    lake = Lake(tmp_path / "lake")
    # The source's clock is before the day: nothing of it has arrived, so it answers an empty listing.
    source.set_faults(Faults(as_of="2026-03-13T00:00:00Z"))
    manifest = _load(lake, source.url)
    assert (manifest.source_reported_count, manifest.fetched_count, manifest.pages) == (0, 0, 1)
    assert (manifest.loaded_count, manifest.quarantined_count, manifest.copies) == (0, 0, 0)
    assert manifest.reconciled and not lake.verify(manifest)
    assert _raw(lake).is_empty() and _raw(lake).columns == RAW_CONTRACTS[TABLE].columns
    assert manifest.control["count"] == manifest.accounted["count"] == 0
    check = reconciliation_result(TABLE, lake, [DAY])
    assert check.passed and check.metadata["control_keys"].value == check.metadata["loaded_rows"].value == 0


@pytest.mark.parametrize(
    ("body", "what_arrived"),
    [
        ("html", "Content-Type 'text/html; charset=utf-8', not JSON: '<!DOCTYPE html><html><body><h1>Down for"),
        ("text_plain", "Content-Type 'text/plain; charset=utf-8', not JSON: '{\"data\":["),
        ("array", "a JSON list;"),
    ],
)
def test_a_200_that_is_not_a_listing_fails_at_once_with_a_shape_error_naming_the_endpoint(
    source, lake, body, what_arrived
):
    source.set_faults(Faults(malformed_body=body))
    requests, failure = _requests_during(source, lambda: _fails_leaving_the_partition_as_it_was(lake, source.url))
    assert str(failure).startswith(f"GET /v1/orders answered with {what_arrived}")
    assert str(failure).endswith("expected a JSON object with data, next_cursor and total")
    assert not failure.retryable and requests == 2, "the control figures, then one page: a wrong shape is not retried"
    _recovers_to_the_clean_data(lake, source)


# ----------------------------------------------------------------------------------- nulls and garbage
# Already covered elsewhere: a null customer_id, a status outside its set and a negative amount from the
# generator's bad records (tests/test_pipeline.py), broken landing lines (test_landing_files.py).
GARBAGE = {
    "payments": {
        "order_id": None,  # null in a required column
        "amount_cents": -5,  # a negative amount
        "paid_at": "2026-02-30T10:00:00Z",  # a date that does not exist
        "payment_method": "card\x1b[2J",  # an escape sequence in a value from a fixed set
    },
    "customers": {"full_name": "Ann\x00Lee", "city": "Berlin\x1b[31m"},  # control characters in free text
}
REASONS = {
    "order_id": "order_id:not_nullable",
    "amount_cents": "amount_cents:greater_than_or_equal_to",
    "paid_at": "paid_at:dtype",
    "payment_method": "payment_method:isin; payment_method:no_control_characters",
    "full_name": "full_name:no_control_characters",
    "city": "city:no_control_characters",
}


def _listing(world: ShopWorld, table: str) -> list[dict]:
    """The day's records of `table` in the order the source lists them (primary key ascending)."""
    if table == "customers":
        start = datetime(DAY.year, DAY.month, DAY.day)
        return world.customers_updated_between(start, start + timedelta(days=1))
    return getattr(world, f"{table}_on")(DAY)


@pytest.mark.parametrize("table", GARBAGE)
def test_rows_with_garbage_are_quarantined_with_their_reason_and_the_rest_loads(source, tmp_path, table):
    key = RAW_CONTRACTS[table].primary_key
    clean_lake, lake = Lake(tmp_path / "clean"), Lake(tmp_path / "lake")
    assert _load(clean_lake, source.url, table).reconciled
    faults = Faults(garbage_every=10, garbage={table: GARBAGE[table]})
    source.set_faults(faults)
    manifest = _load(lake, source.url, table)

    listing = _listing(source.world, table)
    bad = {
        record[key]: REASONS[column]
        for position, record in enumerate(listing)
        if (column := faults.garbage_at(table, position))
    }
    assert {faults.garbage_at(table, position) for position in range(len(listing))} - {None} == set(GARBAGE[table])
    assert manifest.source_reported_count == manifest.fetched_count == len(listing)
    assert (manifest.loaded_count, manifest.quarantined_count, manifest.copies) == (
        len(listing) - len(bad),
        len(bad),
        0,
    )
    assert manifest.reconciled and not lake.verify(manifest)
    quarantined = pl.read_parquet(lake.quarantine_path(table, DAY))
    assert dict(quarantined.select(key, QUARANTINE_REASON).iter_rows()) == bad
    assert manifest.quarantine_reasons == {reason: list(bad.values()).count(reason) for reason in set(bad.values())}
    # The rest loads exactly as from a clean source.
    assert_frame_equal(_raw(lake, table), _raw(clean_lake, table).filter(~pl.col(key).is_in(list(bad))))
    assert reconciliation_result(table, lake, [DAY]).passed


def test_text_in_a_numeric_column_quarantines_its_row_keeping_the_text_and_the_rest_loads(source, tmp_path):
    # Policy of `schema_drift`: "abc" among the integers of amount_cents is a type failure of its row; the
    # quarantine keeps the value as sent in _rejected_values, since its amount_cents column is an integer.
    clean_lake, lake = Lake(tmp_path / "clean"), Lake(tmp_path / "lake")
    assert _load(clean_lake, source.url, "payments").reconciled
    faults = Faults(garbage_every=10, garbage={"payments": {"amount_cents": "abc"}})
    source.set_faults(faults)
    manifest = _load(lake, source.url, "payments")

    listing = _listing(source.world, "payments")
    bad = [record["payment_id"] for position, record in enumerate(listing) if faults.garbage_at("payments", position)]
    assert bad and manifest.source_reported_count == manifest.fetched_count == len(listing)
    assert (manifest.loaded_count, manifest.quarantined_count, manifest.copies) == (
        len(listing) - len(bad),
        len(bad),
        0,
    )
    assert manifest.quarantine_reasons == {"amount_cents:dtype": len(bad)}
    quarantined = pl.read_parquet(lake.quarantine_path("payments", DAY)).sort("payment_id")
    assert quarantined.select("payment_id", QUARANTINE_REASON, REJECTED_VALUES, "amount_cents").rows() == [
        (payment_id, "amount_cents:dtype", '{"amount_cents":"abc"}', None) for payment_id in bad
    ]
    clean = _raw(clean_lake, "payments")
    assert_frame_equal(_raw(lake, "payments"), clean.filter(~pl.col("payment_id").is_in(bad)))
    # Apart from the rejected amount, a quarantined row holds what a clean source sent.
    assert_frame_equal(
        quarantined.select(clean.columns).drop("amount_cents"),
        clean.filter(pl.col("payment_id").is_in(bad)).drop("amount_cents"),
    )
    assert manifest.reconciled and not lake.verify(manifest)
    assert reconciliation_result("payments", lake, [DAY]).passed


def test_the_new_fault_settings_are_validated_with_the_setting_named():
    with pytest.raises(ValueError, match="malformed_body must be one of html, array, text_plain, cut_json or null"):
        Faults(malformed_body="xml")
    with pytest.raises(ValueError, match=r"truncate_every must be an integer in \[0, 1e\+06\]"):
        Faults(truncate_every=-1)
    with pytest.raises(ValueError, match="omit_next_cursor_after must be an integer"):
        Faults(omit_next_cursor_after=1.5)
    with pytest.raises(ValueError, match="total_offset must be an integer"):
        Faults(total_offset="3")
    with pytest.raises(ValueError, match="garbage.refunds: unknown table"):
        Faults(garbage={"refunds": {"amount_cents": -1}})
    with pytest.raises(ValueError, match="garbage.payments must be a non-empty object keyed by column name"):
        Faults(garbage={"payments": {}})


# ------------------------------------------------------------------ a committed file damaged afterwards


def test_a_truncated_data_file_is_reported_by_verification_and_fails_the_reconciliation_check(lake):
    manifest = lake.read_manifest(TABLE, DAY)
    data = lake.root / manifest.data_file
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    problems = lake.verify(manifest)
    assert problems[0] == f"data file {manifest.data_file} does not match the checksum in its manifest"
    assert problems[1].startswith(f"data file {manifest.data_file} is not a readable Parquet file: ")
    check = reconciliation_result(TABLE, lake, [DAY])
    assert not check.passed and check.metadata is not None
    assert "is not a readable Parquet file" in str(check.metadata)


# ------------------------------------------------------------------------------------------------ clocks


def test_records_stamped_in_the_future_are_quarantined_and_the_rest_loads(source, tmp_path):
    # A source whose clock runs ahead (or a bad value) would otherwise win every later comparison of versions.
    lake = Lake(tmp_path / "lake")
    faults = Faults(garbage_every=9, garbage={TABLE: {"updated_at": "2099-01-01T00:00:00Z"}})
    source.set_faults(faults)
    contract = RAW_CONTRACTS[TABLE]
    with _client(source.url) as client:
        result = load_api_partition(lake, client, contract, DAY, "test-run", not_after=datetime(2026, 12, 7, 12))
    listing = _listing(source.world, TABLE)
    future = {record["order_id"] for position, record in enumerate(listing) if faults.garbage_at(TABLE, position)}
    assert future and result.committed and result.manifest.reconciled
    quarantined = pl.read_parquet(lake.quarantine_path(TABLE, DAY))
    assert dict(quarantined.select("order_id", QUARANTINE_REASON).iter_rows()) == {
        order_id: "updated_at:in_future" for order_id in future
    }
    assert result.manifest.loaded_count == len(listing) - len(future)
    assert not set(_raw(lake)["order_id"]) & future


def test_without_a_bound_the_same_records_load_as_they_came(source, tmp_path):
    """The control case of the test above: nothing else quarantines these rows."""
    lake = Lake(tmp_path / "lake")
    source.set_faults(Faults(garbage_every=9, garbage={TABLE: {"updated_at": "2099-01-01T00:00:00Z"}}))
    with _client(source.url) as client:
        result = load_api_partition(lake, client, RAW_CONTRACTS[TABLE], DAY, "test-run")
    assert result.committed and result.manifest.quarantined_count == 0
