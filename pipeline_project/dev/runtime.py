"""What a running `make dev` serves and which processes it started: `<PIPELINE_STATE_DIR>/dev.json`.

`make dev` writes it when everything is up and again after it restarts the demo source; `make stop` reads it
to stop exactly those processes; `oncall env` and `oncall source-health` read it to reach the UI and the demo
source where they really are (DAGSTER_PORT and SHOP_DEMO_PORT may have moved them). It holds no secret.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

RUNTIME_FILE = "dev.json"


def runtime_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / RUNTIME_FILE


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    # A zombie has exited; only its parent has not collected it yet.
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class DevRuntime:
    pid: int  # the `make dev` supervisor (python -m pipeline_project.dev.stack)
    webserver_url: str
    read_only: bool = False
    dagster_pid: int | None = None  # leader of the process group of `dagster dev` (webserver, daemon, code server)
    source_url: str | None = None  # the demo source make dev supervises; None when a real API is configured
    source_pid: int | None = None
    source_restarts: int = 0
    source_last_restart: str | None = None  # ISO 8601, UTC
    source_last_exit: str | None = None  # how the demo source ended before its last restart
    started_at: str | None = None

    @property
    def alive(self) -> bool:
        return process_alive(self.pid)

    def write(self, state_dir: str | Path) -> None:
        path = runtime_path(state_dir)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def read(cls, state_dir: str | Path) -> DevRuntime | None:
        """The runtime file of a `make dev` of this state directory, if there is one (alive or not)."""
        try:
            return cls(**json.loads(runtime_path(state_dir).read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    @classmethod
    def running(cls, state_dir: str | Path) -> DevRuntime | None:
        """The runtime of a `make dev` that is running now, else None."""
        runtime = cls.read(state_dir)
        return runtime if runtime is not None and runtime.alive else None
