"""What the pipeline is made of, declared once: the daily partitions and lookback window (`partitions`) and
the SLA catalogue with the freshness, retry and pool policies every asset gets (`policies`)."""
