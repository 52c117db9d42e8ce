"""The sink actor: one Kafka producer (or JSON Lines file) shared by all camera shards."""

from __future__ import annotations

import ray

from cluster.config import KafkaConfig
from pipeline.sinks import JsonLinesSink, KafkaSink, Record


@ray.remote(max_restarts=0)
class SinkActor:
    """Writes records; Kafka when ``bootstrap_servers`` is set, else the JSON Lines file ``out_path``."""

    def __init__(self, cfg: KafkaConfig, out_path: str | None) -> None:
        self._sink = KafkaSink(cfg) if cfg.bootstrap_servers else JsonLinesSink(out_path or "-")
        self.count = 0

    def write(self, records: list[Record]) -> int:
        """Queue records for delivery; returns the number written so far."""
        self._sink.write(records)
        self.count += len(records)
        return self.count

    def flush(self) -> int:
        """Wait until every record is delivered (raises ``SinkError`` otherwise); returns the count."""
        if isinstance(self._sink, KafkaSink):
            self._sink.flush()
        return self.count

    def close(self, timeout_s: float | None = None) -> int:
        """Flush (waiting at most ``timeout_s``, default the configured flush timeout) and close."""
        if isinstance(self._sink, KafkaSink):
            self._sink.close(timeout_s)
        else:
            self._sink.close()
        return self.count
