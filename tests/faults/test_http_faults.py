"""Extraction against a misbehaving source (the demo API's fault knobs, on 127.0.0.1): transient failures
are retried until every record is in, Retry-After is honoured but capped, and what cannot be retried
fails at once with a message that names the endpoint and never the token."""

import time
from datetime import date

import pytest

from demo_source import DemoShopServer, Faults, ShopWorld
from pipeline_project.ingest.api_assets import load_api_partition
from pipeline_project.ingest.source_errors import SourceError
from pipeline_project.ingest.sources import ShopApiClient
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import RAW_CONTRACTS

from harness import TOKEN

DAY = date(2026, 3, 14)
ORDER_ITEMS = RAW_CONTRACTS["order_items"]


@pytest.fixture
def source():
    with DemoShopServer(ShopWorld(scale=0.1), token=TOKEN) as server:
        yield server


def _client(server, token=TOKEN, **options) -> ShopApiClient:
    # Small pages, so a day takes several requests and faults hit mid-extraction.
    return ShopApiClient(server.url, token, page_size=100, max_backoff_seconds=0.05, **options)


def _load(server, tmp_path, client):
    with client:
        return load_api_partition(Lake(tmp_path / "lake"), client, ORDER_ITEMS, DAY, "fault-test").manifest


def test_server_errors_and_rate_limits_are_retried_until_every_record_is_loaded(source, tmp_path):
    source.set_faults(Faults(error_rate=0.25, rate_limit_every=3, retry_after_seconds=0.05))
    manifest = _load(source, tmp_path, _client(source))
    assert manifest.reconciled and manifest.copies == 0
    assert manifest.loaded_count == manifest.source_reported_count == source.world.record_counts(DAY)["order_items"]
    pages = -(-manifest.loaded_count // 100)
    assert source.request_count > pages, "no request was failed and retried"


def test_retry_after_is_honoured(source, tmp_path):
    source.set_faults(Faults(rate_limit_every=2, retry_after_seconds=0.3))
    started = time.monotonic()
    manifest = _load(source, tmp_path, _client(source))
    elapsed = time.monotonic() - started
    answered = -(-manifest.loaded_count // 100) + 2  # the pages and the control figures before and after
    throttled = source.request_count - answered
    assert throttled >= 2
    assert elapsed >= 0.3 * throttled * 0.9


def test_a_huge_retry_after_is_capped(source, tmp_path):
    source.set_faults(Faults(rate_limit_every=2, retry_after_seconds=3600))
    started = time.monotonic()
    manifest = _load(source, tmp_path, _client(source, max_retry_after_seconds=0.1))
    assert manifest.reconciled
    assert time.monotonic() - started < 30


def test_an_outage_fails_after_bounded_retries_naming_the_endpoint(source, tmp_path):
    source.set_faults(Faults(outage=True))
    started = time.monotonic()
    with pytest.raises(SourceError) as failure:
        _load(source, tmp_path, _client(source, max_attempts=3))
    assert time.monotonic() - started < 10
    assert source.request_count == 3
    assert "GET /v1/order_items/control answered HTTP 503" in str(failure.value)
    assert TOKEN not in str(failure.value)
    assert not Lake(tmp_path / "lake").data_path("order_items", DAY).exists(), "nothing may be committed"


def test_a_wrong_token_fails_at_once_without_retrying_and_without_leaking_it(source, tmp_path):
    wrong = "wrong-token-that-must-not-leak"
    with pytest.raises(SourceError) as failure:
        _load(source, tmp_path, _client(source, token=wrong))
    assert source.request_count == 1
    assert "GET /v1/order_items/control answered HTTP 401" in str(failure.value)
    assert wrong not in str(failure.value) and TOKEN not in str(failure.value)
