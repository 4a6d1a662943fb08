"""A runbook as an executable procedure (the convention is in runbooks/README.md, "Runbooks are drilled"):

- every fenced block whose info string is `bash oncall <step>` is a step of the procedure, in document order;
  `<step>` is `setup`, `check`, `mitigate`, `rerun` or `verify`; plain ```bash blocks are examples, not run;
- `<INCIDENT>`, `<JOB>`, `<ASSETS>` and `<PARTITIONS>` in a step stand for what the alert carries;
- `check` steps look at the problem, so their commands may say "not healthy" (exit 1); a status of 2 or more
  (a usage error, a command that does not exist) fails the drill. Every other step must succeed;
- a Do-NOT bullet may end with `<!-- forbids: REGEX -->`: no step may match it.

`run_procedure` runs the steps with bash against a real stack: the `setup` step's exports carry over to the
later steps, the fault is removed (the provider recovers, the owner reverts the change) before the first
step that is neither `setup` nor `check`, and it ends when the verify steps passed and the resolve notice of
the incident arrived on the webhook.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline_project.settings import REPO_ROOT

STEPS = ("setup", "check", "mitigate", "rerun", "verify")
BLOCK = re.compile(r"^```bash oncall (?P<step>[a-z]+)\n(?P<code>.*?)^```$", re.M | re.S)
FORBIDS = re.compile(r"<!-- forbids: (?P<pattern>.+?) -->")
PLACEHOLDERS = {
    "<INCIDENT>": lambda alert: alert["incident_key"],
    "<JOB>": lambda alert: alert["job"] or "",
    "<ASSETS>": lambda alert: ",".join(alert["assets"]),
    "<PARTITIONS>": lambda alert: " ".join(alert["partitions"]),
}
# `check` steps: report commands that could not run at all, not those that found the problem.
CHECK_PRELUDE = """set -uo pipefail
trap 'status=$?; if [ $status -ge 2 ]; then echo "DRILL: \\"$BASH_COMMAND\\" exited $status" >&2; exit $status; fi' ERR
"""
STRICT_PRELUDE = "set -euo pipefail\n"
STEP_TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class Step:
    step: str
    code: str
    line: int


@dataclass
class Executed:
    step: Step
    command: str
    returncode: int
    output: str
    seconds: float
    cpu_seconds: float  # of every process the step ran


@dataclass
class Procedure:
    runbook: Path
    steps: list[Step]
    forbidden: list[str]
    executed: list[Executed] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "\n".join(item.output for item in self.executed)

    @property
    def cpu_seconds(self) -> float:
        return sum(item.cpu_seconds for item in self.executed)


def children_cpu_seconds() -> float:
    """CPU time of this process's children that have ended (and been waited for), user and system."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse(runbook: Path) -> Procedure:
    text = runbook.read_text()
    steps = [
        Step(match["step"], match["code"], text.count("\n", 0, match.start()) + 1) for match in BLOCK.finditer(text)
    ]
    unknown = [step for step in steps if step.step not in STEPS]
    assert not unknown, f"{runbook.name}: unknown steps {[s.step for s in unknown]} (one of {STEPS})"
    return Procedure(runbook, steps, [match["pattern"] for match in FORBIDS.finditer(text)])


def substitute(code: str, alert: dict) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        code = code.replace(placeholder, value(alert))
    return code


def _exports(output: str) -> dict[str, str]:
    """The environment `env -0` printed at the end of the setup step."""
    return dict(item.split("=", 1) for item in output.split("\0") if "=" in item)


def run_procedure(
    runbook: Path,
    alert: dict,
    env: dict[str, str],
    fix: Callable[[], None] | None = None,
    fix_delay: float = 0.0,
    log: Callable[[str], None] = print,
) -> Procedure:
    """Run the runbook's steps for `alert`; raise AssertionError at the first step that fails."""
    procedure = parse(runbook)
    assert procedure.steps, f"{runbook.name} has no executable step"
    shell_env = dict(env)
    fixed = fix is None
    fixer: threading.Timer | None = None
    for step in procedure.steps:
        command = substitute(step.code, alert)
        for pattern in procedure.forbidden:
            assert not re.search(pattern, command), (
                f"{runbook.name}:{step.line} runs what its Do-NOT list forbids: {pattern}"
            )
        if not fixed and step.step not in ("setup", "check"):
            fixer = threading.Timer(fix_delay, fix)
            fixer.start()
            fixed = True
        # A check that found the problem did its job: only a failure to run at all (status >= 2) counts.
        script = CHECK_PRELUDE + command + "\nexit 0\n" if step.step == "check" else STRICT_PRELUDE + command
        if step.step == "setup":
            script += '\nenv -0 > "$DRILL_EXPORTS"\n'
        exports = Path(env["PIPELINE_STATE_DIR"]).parent / "exports.env"
        started, cpu_before = time.monotonic(), children_cpu_seconds()
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=REPO_ROOT,
            env={**shell_env, "DRILL_EXPORTS": str(exports)},
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_SECONDS,
        )
        executed = Executed(
            step,
            command,
            result.returncode,
            result.stdout + result.stderr,
            time.monotonic() - started,
            children_cpu_seconds() - cpu_before,
        )
        procedure.executed.append(executed)
        where = f"{runbook.name}:{step.line} [{step.step}]"
        took = f"{executed.seconds:.1f} s ({executed.cpu_seconds:.1f} s CPU)"
        log(f"--- {where} {took}, exit {result.returncode}\n{command}")
        log(executed.output.rstrip())
        assert result.returncode == 0, f"{where} exited {result.returncode}:\n{command}\n{executed.output[-4000:]}"
        if step.step == "setup":
            shell_env = {key: value for key, value in _exports(exports.read_text()).items() if key != "DRILL_EXPORTS"}
            exports.unlink()
    if fixer is not None:
        fixer.join()
    assert fixed, f"{runbook.name}: no step after the checks, so the fault was never removed"
    return procedure


def missing_steps(procedure: Procedure, wanted=("setup", "check", "rerun", "verify")) -> list[str]:
    return [step for step in wanted if step not in {s.step for s in procedure.steps}]


def environ_without(prefixes: tuple[str, ...]) -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
