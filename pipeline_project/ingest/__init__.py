"""From the source to a committed raw partition: the shop API client (`sources`) behind its circuit breaker,
the landing zone of dropped files (`landing_zone`), one partition's load reconciled against the source's
control figures (`loading`, `reconcile`), change capture by watermark (`changes`), and the ingestion assets,
checks and landing-file sensor built on them (`assets`, `sensors`)."""
