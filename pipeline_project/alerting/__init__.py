"""SLA monitoring and alerting: signals read from Dagster's event log become alerts in a durable outbox,
which a delivery sensor sends to the configured channels exactly once per incident."""
