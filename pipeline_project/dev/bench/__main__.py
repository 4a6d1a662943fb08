"""`python -m pipeline_project.dev.bench` (`make bench`): the command line, and the entry point of the child
processes each measured run happens in (`--task`)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pipeline_project.dev import bench
from pipeline_project.dev.bench.parts import bench_extraction, bench_fixed_cost, bench_history, bench_memory
from pipeline_project.dev.bench.report import RESULTS, write_results
from pipeline_project.dev.bench.runs import build_history, run_once
from pipeline_project.dev.bench.scenarios import BUDGET, PARTS


def main() -> int:
    parser = argparse.ArgumentParser(description=bench.__doc__.splitlines()[0])
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the interleaved runs (default 4)")
    parser.add_argument(
        "--only", nargs="*", choices=PARTS, default=None, help="measure these parts again, keep the others' figures"
    )
    parser.add_argument("--keep", type=Path, help="keep the state directories under this directory")
    args = parser.parse_args()
    if args.task:
        task = json.loads(args.task)
        if task["task"] == "run":
            run = run_once(Path(task["state"]), task["days"], task["mode"], task.get("transform_only", False))
            print(json.dumps(run))
        else:
            print(json.dumps(build_history(Path(task["state"]), task["days"], task["scale"])))
        return 0

    parts = args.only or list(PARTS)
    workdir = Path(tempfile.mkdtemp(prefix="bench-", dir=args.keep))
    # --only measures some parts again; the other parts' figures of the last report stay.
    report: dict = json.loads(RESULTS.read_text()) if args.only and RESULTS.exists() else {}
    report.update(
        {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rounds": args.rounds,
            "budget": BUDGET,
        }
    )
    try:
        if "history" in parts:
            report["one_day_after_history"] = bench_history(workdir, args.rounds)
        if "fixed_cost" in parts:
            report["fixed_cost"] = bench_fixed_cost(workdir, args.rounds)
        if "memory" in parts:
            report["memory"] = bench_memory(workdir)
        if "extraction" in parts:
            report["extraction"] = bench_extraction(workdir, args.rounds)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    write_results(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
