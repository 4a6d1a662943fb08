"""SLA monitoring and alerting: signals read from Dagster's event log become alerts in a durable outbox,
which a delivery sensor sends to the configured channels: one alert per incident, delivered to each of its
channels at least once (see `outbox` for what that means after a crash)."""
