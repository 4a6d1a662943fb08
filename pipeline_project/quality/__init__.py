"""Data contracts and the checks built on them: the raw and mart contracts with the source table registry
(`contracts`), schema drift between the source and its contract (`schema_drift`), and the mart contract
checks that gate the marts (`mart_checks`)."""
