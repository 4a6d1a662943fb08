"""From the source to a committed raw partition: the shop API client (`sources`) with its listing filters
(`listing_filters`), response bodies (`api_responses`) and errors and retry policy (`source_errors`) behind its
circuit breaker, the landing-file reader (`landing_reader`) and the batches both yield (`extraction`), the
landing zone of dropped files (`landing_zone`) on file operations that never follow a link (`landing_fs`), one
partition's load reconciled against the source's control figures (`loading`, `reconcile`), change capture by
watermark (`changes`), and what is built on them: the ingestion assets (`assets`) of the API tables
(`api_assets`) and of the landing tables (`landing_assets`), what they share (`ingestion_step`), their checks
(`asset_checks`) and the landing-file sensor (`sensors`)."""
