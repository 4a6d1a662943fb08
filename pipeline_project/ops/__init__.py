"""Production tools for operating the pipeline: the on-call CLI (`oncall`), the monitoring heartbeat check
that runs outside Dagster (`heartbeat`), the client that launches runs through the Dagster webserver as the
UI does, and the one helper every wait in them goes through."""
