"""The on-call CLI the runbooks use: `oncall COMMAND [ARGS]` (installed by `make install`; `oncall -h` lists
the commands). Every command only reads, except `rerun` (launches a run through the webserver, as the UI's
button does), `lake-repair` (completes a raw-layer commit a killed writer left pending) and `dagster` (the
dagster CLI, which does what it is asked). Nothing any command prints contains the value of a secret."""
