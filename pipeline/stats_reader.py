"""Reading the statistics topics back: latest record per camera or per district, printed as a table."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pipeline.sinks import BOOTSTRAP_TIMEOUT_MS, broker_unreachable, kafka_client_args
from schemas.errors import SinkError
from schemas.messages import CameraStats, DistrictStats, PersonDecision

logger = logging.getLogger(__name__)


def read_topic(cfg: Any, topic: str, timeout_s: float = 10.0) -> list[tuple[str, bytes]]:
    """Every record of ``topic`` from the beginning to its current end, as `(key, value)` pairs.

    Reads by partition assignment (no consumer group, nothing committed).

    Raises:
        SinkError: If no broker answers or the topic does not exist.
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaTimeoutError

    try:
        consumer = KafkaConsumer(
            **kafka_client_args(cfg), enable_auto_commit=False, bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS
        )
    except KafkaTimeoutError as exc:
        raise broker_unreachable(cfg) from exc
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            msg = f"Kafka topic {topic!r} does not exist at {cfg.bootstrap_servers}"
            raise SinkError(msg)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend((m.key.decode() if m.key else "", m.value) for m in batch)
        return out
    finally:
        consumer.close()


def current_values(
    values: list[bytes], version: int, upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The values of this ``schema_version``, parsed once (``upgrade`` first brings older versions it knows up to
    date); records of other versions and values that are not a JSON object are skipped."""
    out = []
    for v in values:
        try:
            obj = json.loads(v)
        except ValueError:
            continue
        if isinstance(obj, dict) and upgrade is not None:
            obj = upgrade(obj)
        if isinstance(obj, dict) and obj.get("schema_version") == version:
            out.append(obj)
    if len(out) < len(values):
        logger.info("skipped %d record(s) of another schema version or not JSON", len(values) - len(out))
    return out


def latest_stats(cfg: Any, timeout_s: float = 10.0) -> dict[str, CameraStats]:
    """The latest statistics record per camera (what a compacted topic keeps); records of earlier schema versions
    (4-6) are upgraded (:meth:`CameraStats.upgrade`), older ones skipped."""
    return _latest(cfg, cfg.stats_topic, CameraStats, lambda s: s.camera_id, timeout_s)


def latest_districts(cfg: Any, timeout_s: float = 10.0) -> dict[str, DistrictStats]:
    """The latest district record per district (latest window, highest revision) of ``cfg.district_stats_topic``;
    records of earlier schema versions are upgraded (:meth:`DistrictStats.upgrade`).

    Raises:
        SinkError: If no broker answers or the topic does not exist.
    """
    return _latest(cfg, cfg.district_stats_topic, DistrictStats, lambda d: d.district, timeout_s)


def _latest(cfg: Any, topic: str, cls: Any, key: Callable[[Any], str], timeout_s: float) -> dict[str, Any]:
    """Per ``key``, the record of ``topic`` that went furthest (``progress``), upgraded to ``cls``'s version."""
    latest: dict[str, Any] = {}
    values = [v for _, v in read_topic(cfg, topic, timeout_s)]
    for value in current_values(values, cls.schema_version, cls.upgrade):
        rec = cls.decode(value)
        prev = latest.get(key(rec))
        if prev is None or rec.progress >= prev.progress:
            latest[key(rec)] = rec
    return latest


def read_decisions(cfg: Any, timeout_s: float = 10.0) -> list[PersonDecision]:
    """All decisions, de-duplicated by ``decision_id`` (delivery is at least once); records of the previous schema
    version are upgraded (:meth:`PersonDecision.upgrade`), older ones skipped."""
    seen: dict[str, PersonDecision] = {}
    values = [v for _, v in read_topic(cfg, cfg.decisions_topic, timeout_s)]
    for value in current_values(values, PersonDecision.schema_version, PersonDecision.upgrade):
        d = PersonDecision.decode(value)
        seen[d.decision_id] = d
    return list(seen.values())


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


LOW_FLAG = "LOW"
"""Printed after a coverage under ``stats.min_coverage`` (the record's ``total_low_coverage``)."""
COVERAGE_NOTE = (f"coverage: people decided / people whose face was seen; {LOW_FLAG}: under "
                 "stats.min_coverage, or people but no face: the mask fraction rests on too few of them")


def _coverage(r: CameraStats | DistrictStats) -> str:
    """The running coverage as ``"40% (4/10)"`` (decided / people with a face), with :data:`LOW_FLAG` after it when
    the record flags it."""
    text = f"{_pct(r.total_coverage)} ({r.total_decided}/{r.total_people_with_face})"
    return f"{text} {LOW_FLAG}" if r.total_low_coverage else text


def _px(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


def _with_note(table: str, records: list[CameraStats] | list[DistrictStats]) -> str:
    return table + (f"\n{COVERAGE_NOTE}" if any(r.total_low_coverage for r in records) else "")


def format_table(stats: dict[str, CameraStats]) -> str:
    """A text table: one row per camera, running totals, the mask fraction with its Wilson 95% interval, the
    coverage it rests on (people decided / people with a face, flagged ``LOW`` under ``stats.min_coverage``), the
    fraction corrected for the classifier's errors with its Lang–Reiczigel 95% interval and the median face height
    (pixels). A note under the table explains the flag when a row carries it."""
    head = ("camera_id", "people", "masked", "unmasked", "undecided", "mask fraction [95% CI]",
            "coverage (decided/face)", "corrected [95% CI]", "face px", "frames", "dropped", "updated (UTC)")
    rows: list[tuple[str, ...]] = [head]
    for cid in sorted(stats):
        s = stats[cid]
        ci = f"{_pct(s.total_mask_fraction)} [{_pct(s.total_mask_fraction_low)}, {_pct(s.total_mask_fraction_high)}]"
        cc = (f"{_pct(s.total_corrected_mask_fraction)} [{_pct(s.total_corrected_mask_fraction_low)}, "
              f"{_pct(s.total_corrected_mask_fraction_high)}]")
        when = datetime.fromtimestamp(min(s.window_end_ns, time.time_ns()) / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append((cid, str(s.total_people), str(s.total_masked), str(s.total_unmasked), str(s.total_undecided),
                     ci if s.total_mask_fraction is not None else "-", _coverage(s),
                     cc if s.total_corrected_mask_fraction is not None else "-", _px(s.total_face_px_median),
                     str(s.frames_processed), str(s.frames_dropped), when))
    return _with_note(_text_table(rows), list(stats.values()))


def _text_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def format_district_table(latest: dict[str, DistrictStats]) -> str:
    """A text table: one row per district, running totals pooled over its cameras, the mask fraction with its
    Wilson 95% interval, the pooled coverage (flagged ``LOW`` under ``stats.min_coverage``), the corrected fraction
    with its Lang–Reiczigel 95% interval and the pooled median face height (pixels)."""
    head = ("district", "cameras", "running", "people", "masked", "unmasked", "undecided", "mask fraction [95% CI]",
            "coverage (decided/face)", "corrected [95% CI]", "face px", "window (UTC)")
    rows: list[tuple[str, ...]] = [head]
    for name in sorted(latest):
        d = latest[name]
        ci = (f"{_pct(d.total_mask_fraction)} [{_pct(d.total_mask_fraction_low)}, "
              f"{_pct(d.total_mask_fraction_high)}]" if d.total_mask_fraction is not None else "-")
        cc = (f"{_pct(d.total_corrected_mask_fraction)} [{_pct(d.total_corrected_mask_fraction_low)}, "
              f"{_pct(d.total_corrected_mask_fraction_high)}]" if d.total_corrected_mask_fraction is not None else "-")
        when = datetime.fromtimestamp(d.window_start_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append((name, str(d.cameras_total), str(d.cameras_running), str(d.total_people), str(d.total_masked),
                     str(d.total_unmasked), str(d.total_undecided), ci, _coverage(d), cc,
                     _px(d.total_face_px_median), when))
    return _with_note(_text_table(rows), list(latest.values()))
