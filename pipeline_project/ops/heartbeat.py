"""Is monitoring itself alive? A check to run from outside Dagster (cron, a load balancer probe): exits 0
when the alert delivery sensor ticked recently, 1 otherwise. Prometheus reads the same heartbeat through
the exporter (`pipeline_monitoring_heartbeat_age_seconds`, alert `PipelineMonitoringDown`; see
`pipeline_project/observability/`).

    python -m pipeline_project.ops.heartbeat --max-age-seconds 300

If the daemon is down, nothing inside Dagster can alert, so this is the dead-man switch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def heartbeat_problem(path: Path, max_age_seconds: float, now: float | None = None) -> str | None:
    """None when the heartbeat is fresh, else what is wrong with it."""
    now = time.time() if now is None else now
    try:
        beat = json.loads(path.read_text())
        age = now - float(beat["ticked_at"])
    except FileNotFoundError:
        return f"no heartbeat at {path}: the alert_delivery sensor has never ticked (is the daemon running?)"
    except (ValueError, KeyError, TypeError) as error:
        return f"unreadable heartbeat at {path}: {error}"
    if age > max_age_seconds:
        return f"heartbeat at {path} is {age:.0f} s old (limit {max_age_seconds:.0f} s): monitoring is not running"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = Path(os.environ.get("ALERT_DIR") or Path(os.environ.get("PIPELINE_STATE_DIR", ".state")) / "alerts")
    parser.add_argument("--path", type=Path, default=default_dir / "heartbeat.json")
    parser.add_argument("--max-age-seconds", type=float, default=300.0)
    args = parser.parse_args(argv)
    problem = heartbeat_problem(args.path, args.max_age_seconds)
    if problem:
        print(f"UNHEALTHY {problem}", file=sys.stderr)
        return 1
    beat = json.loads(args.path.read_text())
    print(f"OK monitoring ticked {time.time() - beat['ticked_at']:.0f} s ago, {beat['pending_deliveries']} pending")
    return 0


if __name__ == "__main__":
    sys.exit(main())
