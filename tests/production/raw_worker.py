"""A writer of the raw layer in a process of its own, for the production profile's concurrency and crash
tests: `python raw_worker.py '<json spec>'` loads partitions of one API table from a source and prints one JSON
line per partition; the catalog comes from the environment (PIPELINE_DUCKLAKE_*). Armed with
PIPELINE_FAULT_POINT in its environment, it SIGKILLs itself at that point."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path

from pipeline_project.ingest.api_assets import load_api_partition
from pipeline_project.ingest.sources import ShopApiClient
from pipeline_project.lake.catalog import DuckLakeSettings
from pipeline_project.lake.ducklake_store import DuckLakeStore
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import RAW_CONTRACTS


def main(spec: dict) -> None:
    if spec["profile"] == "production":
        lake = DuckLakeStore(spec["scratch"], DuckLakeSettings.from_env(), spec.get("lock_wait", 300.0))
    else:
        lake = Lake(Path(spec["scratch"]), spec.get("lock_wait", 300.0))
    contract = RAW_CONTRACTS[spec["table"]]
    with ShopApiClient(spec["source_url"], spec["token"], max_backoff_seconds=0.05) as client:
        for day in spec["days"]:
            result = load_api_partition(lake, client, contract, date.fromisoformat(day), spec["run_id"])
            print(json.dumps({"day": day, "committed": result.committed, "loaded": result.manifest.loaded_count}))
            sys.stdout.flush()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
