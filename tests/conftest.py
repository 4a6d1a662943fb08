"""Shared fixtures: a real demo source on 127.0.0.1, real state directories in tmp, a real Dagster instance."""

import os
import warnings
from pathlib import Path

import dagster as dg
import pytest

from demo_source import DemoShopServer, ShopWorld, write_landing_files

from harness import DAYS, TEST_SCALE, TOKEN

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh state directory wired into the environment the code location reads."""
    paths = {
        "PIPELINE_LAKE_DIR": tmp_path / "lake",
        "PIPELINE_WAREHOUSE_PATH": tmp_path / "warehouse.duckdb",
        "LANDING_DIR": tmp_path / "landing",
    }
    for name, path in paths.items():
        monkeypatch.setenv(name, str(path))
    (tmp_path / "lake").mkdir()
    (tmp_path / "landing").mkdir()
    return tmp_path


@pytest.fixture
def world() -> ShopWorld:
    return ShopWorld(scale=TEST_SCALE)


@pytest.fixture
def demo_source(world: ShopWorld, state_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """The demo shop API on a free loopback port plus the landing files of DAYS."""
    for day in DAYS:
        write_landing_files(state_dir / "landing", day, world)
    with DemoShopServer(world, token=TOKEN) as server:
        monkeypatch.setenv("SHOP_API_URL", server.url)
        monkeypatch.setenv("SHOP_API_TOKEN", TOKEN)
        yield server


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
