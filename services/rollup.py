"""``maskwatch rollup``: the district roll-up as a Kafka stream consumer (camera statistics in, district ones out).

It reads the compacted camera statistics topic by partition assignment from the beginning (no consumer group: the
state is rebuilt from the topics at every start), pools the records with :class:`pipeline.district.DistrictRollup`
and produces :class:`~schemas.messages.DistrictStats` records keyed by district to the compacted district topic
through :class:`pipeline.sinks.KafkaSink` (its own on-disk outbox while the broker is away). At start it reads its
own latest record per district back, so a restart does not publish a window twice; running totals are rebuilt
exactly from each camera's latest record.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pipeline.district import DistrictRollup
from pipeline.sinks import BOOTSTRAP_TIMEOUT_MS, KafkaSink, Record, broker_unreachable, ensure_topics, kafka_client_args
from pipeline.stats import DEFAULT_MIN_COVERAGE
from pipeline.stats_reader import current_values, latest_districts
from schemas.messages import CameraStats, DistrictStats

logger = logging.getLogger(__name__)


def run_rollup(
    cfg: Any,
    lateness_s: float = 10.0,
    stop: threading.Event | None = None,
    poll_s: float = 1.0,
    on_publish: Callable[[list[DistrictStats]], None] | None = None,
    clock: Callable[[], int] = time.time_ns,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
) -> int:
    """Consume camera statistics and publish district statistics until ``stop`` is set; returns records published.

    Args:
        cfg: A ``pipeline.config.KafkaConfig`` (``bootstrap_servers``, the three topic names, ``outbox_path``).
        lateness_s: :class:`DistrictRollup`'s wait for slower cameras, seconds.
        stop: Set it to end: pending windows are published and the sink flushed (records the broker does not take
            stay in the outbox for the next start).
        poll_s: Longest wait for new records before windows are checked against the wall clock.
        on_publish: Called with each batch of district records produced (tests, logs).
        clock: Wall clock, UTC epoch ns (:meth:`DistrictRollup.tick`).
        min_coverage: Pooled coverage (0-1) under which a district record is flagged ``low_coverage`` (config
            ``stats.min_coverage``).

    Raises:
        SinkError: If no broker answers at start.
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaTimeoutError

    stop = stop or threading.Event()
    ensure_topics(cfg)
    rollup = DistrictRollup(lateness_s, min_coverage)
    for last in latest_districts(cfg).values():
        rollup.resume(last)
    sink = KafkaSink(cfg)
    try:
        consumer = KafkaConsumer(
            **kafka_client_args(cfg), enable_auto_commit=False, bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS
        )
    except KafkaTimeoutError as exc:
        sink.close(timeout_s=1.0)
        raise broker_unreachable(cfg) from exc
    published = 0

    def publish(records: list[DistrictStats]) -> None:
        nonlocal published
        if records:
            sink.write([Record(cfg.district_stats_topic, r.district, r.encode()) for r in records])
            published += len(records)
            if on_publish is not None:
                on_publish(records)
        sink.retry()

    try:
        parts = consumer.partitions_for_topic(cfg.stats_topic) or set()
        tps = [TopicPartition(cfg.stats_topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        logger.info("rollup: %s -> %s, %d district(s) resumed", cfg.stats_topic, cfg.district_stats_topic,
                    len(rollup.districts))
        while not stop.is_set():
            out: list[DistrictStats] = []
            for batch in consumer.poll(timeout_ms=int(poll_s * 1000)).values():
                values = [m.value for m in batch]
                for obj in current_values(values, CameraStats.schema_version, CameraStats.upgrade):
                    out += rollup.add(CameraStats.decode(obj))
            out += rollup.tick(clock())
            publish(out)
        publish(rollup.flush())
    finally:
        consumer.close()
        sink.close()
    return published
