"""Reliable data pipelines on Dagster: a code location for an online shop's analytics, end to end."""
