"""A secret canary: a recognisable fake token is the API's bearer token while extraction succeeds through
retries, and then the source rejects it. It must appear nowhere the pipeline writes: the event log
(messages, metadata, errors), logs, files."""

import logging

from dagster._serdes import serialize_value

from pipeline_project.definitions import defs
from pipeline_project.demo_source import DemoShopServer, Faults, ShopWorld
from pipeline_project.ingestion import raw_asset_key

from conftest import DAYS

CANARY = "canary-7f3c9e1d-never-log-me"


def _materialize_orders(instance, day):
    return defs.resolve_job_def("shop_pipeline").execute_in_process(
        instance=instance,
        partition_key=day.isoformat(),
        asset_selection=[raw_asset_key("orders")],
        raise_on_error=False,
    )


def test_the_token_never_reaches_events_logs_or_files(state_dir, instance, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SHOP_API_TOKEN", CANARY)
    with DemoShopServer(ShopWorld(scale=0.05), token=CANARY) as server:
        monkeypatch.setenv("SHOP_API_URL", server.url)
        server.set_faults(Faults(error_rate=0.5, rate_limit_every=3, retry_after_seconds=0.01))
        retried = _materialize_orders(instance, DAYS[0])
    with DemoShopServer(ShopWorld(scale=0.05), token="the-token-the-source-expects") as server:
        monkeypatch.setenv("SHOP_API_URL", server.url)
        rejected = _materialize_orders(instance, DAYS[1])
        assert server.request_count == 1, "a rejected token is neither retried by the client nor by the step"
    assert retried.success and not rejected.success

    written = [serialize_value(record) for run in (retried, rejected) for record in instance.all_logs(run.run_id)]
    assert any("answered HTTP 401" in text for text in written), "the failure should be in the event log"
    assert not [text for text in written if CANARY in text]
    assert CANARY not in caplog.text
    for path in state_dir.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), f"token written to {path}"
