"""What `make` runs on a laptop: `make run`, `make dev` (the supervised stack), the CI gate (`make check`),
the benchmarks, the alert drill, the demo source process and the generated documentation blocks.

Nothing in here is imported by the code location; it prepares the state directories the code location
reads (its defaults are `pipeline_project.settings`) and starts the processes around it.
"""
