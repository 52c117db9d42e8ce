"""Services beside the pipeline: the live dashboard, the district roll-up job, the Grafana dashboard generator and
the embedded Kafka-protocol broker for laptop runs and tests."""
