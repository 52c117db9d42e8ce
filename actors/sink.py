"""The sink actor: one Kafka producer (or JSON Lines file) shared by all camera shards."""

from __future__ import annotations

import ray
from ray.util.metrics import Gauge

from pipeline.config import KafkaConfig
from pipeline.sinks import JsonLinesSink, KafkaSink, Record


# Restarted by Ray if its process dies (its node lost included); the outbox is on disk and re-sent by the new
# process. Records it held only in memory (sent, not yet acknowledged) are lost with the process: at most
# request_timeout_s of them. Writes in flight when it died are retried on the restarted actor (max_task_retries): a
# write may then reach Kafka twice, which readers already absorb (decisions are unique by decision_id, statistics are
# compacted by camera_id and ordered by window), and none is lost.
# enable_task_events=False: a write per frame that ends a track or a window, from every camera (see PoseActor).
@ray.remote(max_restarts=-1, max_task_retries=-1, enable_task_events=False)
class SinkActor:
    """Writes records; Kafka when ``bootstrap_servers`` is set, else the JSON Lines file ``out_path``."""

    def __init__(self, cfg: KafkaConfig, out_path: str | None) -> None:
        self._sink = KafkaSink(cfg) if cfg.bootstrap_servers else JsonLinesSink(out_path or "-")
        self.count = 0
        self._depth = Gauge("maskwatch_sink_outbox_records", "Records waiting in the Kafka outbox")
        self._age = Gauge("maskwatch_sink_outbox_age_seconds", "Age of the oldest record in the Kafka outbox")
        self._dropped = Gauge("maskwatch_sink_outbox_dropped_records", "Records refused by a full outbox")

    def write(self, records: list[Record]) -> int:
        """Queue records for delivery (never waits for the broker); returns the number written so far."""
        self._sink.write(records)
        self.count += len(records)
        if isinstance(self._sink, KafkaSink):
            self._depth.set(self._sink.outbox_depth)
            self._age.set(self._sink.outbox_age_s)
            self._dropped.set(self._sink.dropped)
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
