"""`make bench`: the performance budget as ratios measured in one run, and where the time goes.

Every run below happens in a fresh process with its own state directory (`make run`'s settings, its own
Dagster instance); the demo source runs in this process, so a run's only child process is dbt and the
largest child's peak RSS is dbt's DuckDB. Absolute times vary two to three times between machines and with
whatever else the machine runs, so the budget is stated as ratios of runs made here, interleaved in rounds
(A, B, C, A, B, C, ...) so that a burst of load hits every side alike; each figure is the fastest round.

  - one day after history: the same day (END_DATE, scale 1) loaded on an empty state, after 90 days and
    after 365 days of history (generated cheaply, `history`, then built by one full dbt build). Budget:
    each at most 1.2x the empty one.
  - fixed cost: one nearly empty day (scale 0.001) through Dagster as `make run` does, and the same stages
    bare (the ingestion functions, one `dbt build` planned the same way, the contract checks). Budget:
    Dagster's share (dagster - bare) / dagster at most 25%. Also through Dagster with Dagster's own SQLite
    settings (`make run` tunes them, see `sqlite_instance`), to show what that tuning is worth.
  - memory: 7 days at scale 1 and at scale 10 through Dagster. Budget: the pipeline process's peak RSS grows
    at most 20% from 1x to 10x; dbt's DuckDB process peaks at most at 1 GB at 10x.

For each run: wall time, the split per stage (extract, validate, dedupe, write raw from this run's partition
manifests; the dbt step and dbt's own process; the checks; the rest is orchestration) and the five slowest
dbt nodes from dbt's run_results.json.

The modules: what is measured and the budget (`scenarios`), the measurement primitives (`measure`), one run
in its own process through Dagster (`runs`) or bare (`bare`), the four parts measured in rounds (`parts`), the
ratios, `bench/results.json` and the table in docs/performance.md (`report`); `python -m
pipeline_project.dev.bench` is the command line (`__main__`).
"""
