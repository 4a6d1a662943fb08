"""Running the pipeline on a laptop: environment defaults, the demo source process, `make run` and `make dev`.

Nothing in here is imported by the code location; it only prepares the environment the code location
reads and starts the processes around it.
"""
