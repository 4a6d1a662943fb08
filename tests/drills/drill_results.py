"""The figures each drill records (`record`), which conftest.py prints after the run and writes to
test-artifacts/drills.json."""

RESULTS: dict[str, dict] = {}


def record(drill: str, **figures) -> None:
    RESULTS[drill] = figures
