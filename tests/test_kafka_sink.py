import json

import jsonschema
import pytest

from pipeline.config import KafkaConfig
from pipeline.sinks import JsonLinesSink, KafkaSink, Record, ensure_topics
from pipeline.stats_reader import format_table, latest_stats, read_decisions, read_topic
from schemas.errors import SinkError
from schemas.messages import CameraStats, PersonDecision
from services.broker import free_port
from tests.test_schemas import DECISION, STATS

pytestmark = pytest.mark.kafka


def test_records_reach_kafka_keyed_by_camera_and_read_back(broker, tmp_path):
    cfg = KafkaConfig(bootstrap_servers=broker, decisions_topic="t.decisions", stats_topic="t.stats",
                      outbox_path=tmp_path / "outbox.jsonl")
    ensure_topics(cfg)
    ensure_topics(cfg)  # idempotent
    sink = KafkaSink(cfg)
    stats2 = CameraStats.decode({**json.loads(STATS.encode()), "camera_id": "cam-b"})
    sink.write([Record("t.decisions", "cam", DECISION.encode()), Record("t.decisions", "cam", DECISION.encode()),
                Record("t.stats", "cam", STATS.encode()), Record("t.stats", "cam-b", stats2.encode())])
    sink.close()
    assert sink.delivered == 4
    raw = read_topic(cfg, "t.decisions")
    assert [k for k, _ in raw] == ["cam", "cam"]
    for _, v in raw:
        jsonschema.validate(json.loads(v), PersonDecision.json_schema())
    assert read_decisions(cfg) == [DECISION]  # de-duplicated by decision_id (at-least-once)
    latest = latest_stats(cfg)
    assert set(latest) == {"cam", "cam-b"}
    table = format_table(latest)
    assert "cam-b" in table
    assert "50% [9%, 91%]" in table
    assert "100% (2/2)" in table  # coverage: decided / people with a face
    assert "LOW" not in table


def test_broker_down_is_a_one_line_error(tmp_path):
    port = free_port()
    cfg = KafkaConfig(bootstrap_servers=f"127.0.0.1:{port}", outbox_path=tmp_path / "o.jsonl")
    with pytest.raises(SinkError, match=rf"cannot reach Kafka broker at 127\.0\.0\.1:{port}"):
        KafkaSink(cfg)
    with pytest.raises(SinkError, match="cannot reach Kafka broker"):
        ensure_topics(cfg)


def test_outbox_is_replayed_at_start(broker, tmp_path):
    outbox = tmp_path / "outbox.jsonl"
    rec = Record("t.replay", "cam", DECISION.encode())
    outbox.write_text(rec.to_json_line() + "\n")
    cfg = KafkaConfig(bootstrap_servers=broker, decisions_topic="t.replay", stats_topic="t.replay-stats",
                      outbox_path=outbox)
    ensure_topics(cfg)
    KafkaSink(cfg).close()
    assert not outbox.exists()
    assert read_decisions(cfg) == [DECISION]


def test_json_lines_sink_writes_the_same_records(tmp_path):
    out = tmp_path / "r.jsonl"
    sink = JsonLinesSink(out)
    sink.write([Record("maskwatch.decisions", "cam", DECISION.encode())])
    sink.close()
    line = json.loads(out.read_text())
    assert line["topic"] == "maskwatch.decisions"
    assert line["key"] == "cam"
    assert PersonDecision.decode(line["value"]) == DECISION
    with pytest.raises(SinkError, match="cannot write results"):
        JsonLinesSink(tmp_path / "no" / "dir" / "r.jsonl")


def test_broker_lost_mid_run_keeps_every_record_in_the_outbox(tmp_path):
    # The broker stops after the first records: flush must not raise kafka-python's KafkaTimeoutError past the
    # outbox; every record is either delivered or in the outbox, and the error names the outbox.
    from services.broker import start_broker, stop_broker

    port = free_port()
    proc = start_broker(port)
    try:
        cfg = KafkaConfig(bootstrap_servers=f"127.0.0.1:{port}", decisions_topic="t.lost", stats_topic="t.lost-s",
                          outbox_path=tmp_path / "outbox.jsonl", flush_timeout_s=3, request_timeout_s=2)
        ensure_topics(cfg)
        sink = KafkaSink(cfg)
        sink.write([Record("t.lost", "cam", DECISION.encode())] * 5)
        sink.flush()
        assert sink.delivered == 5
    finally:
        stop_broker(proc.pid)
    sink.write([Record("t.lost", "cam", DECISION.encode())] * 7)
    with pytest.raises(SinkError, match="kept in outbox"):
        sink.flush()
    kept = (tmp_path / "outbox.jsonl").read_text().splitlines()
    assert sink.delivered + len(kept) == 12
    assert all(Record.from_json_line(line).topic == "t.lost" for line in kept)
    # kafka-python 3.0's producer.close() flushes first and times out while records wait for a broker that is gone;
    # close() logs that, closes the producer without sending, tries the outbox once more and reports what is left.
    # (An unclosed producer's __del__ raising at garbage collection fails the suite: pyproject's filterwarnings.)
    with pytest.raises(SinkError, match="kept in outbox"):
        sink.close(timeout_s=1)
    assert len((tmp_path / "outbox.jsonl").read_text().splitlines()) == len(kept)


def test_broker_away_then_back_outbox_resent_in_order_while_running(tmp_path):
    """The broker goes away mid-run and comes back on the same address: no record is lost, every record after the
    outage started waits in the fsynced outbox, and the outbox drains in order while writes go on."""
    import time

    from services.broker import start_broker, stop_broker

    def rec(seq: int) -> Record:
        return Record("t.away", f"cam-{seq % 2}", json.dumps({"seq": seq}).encode())

    def seqs(cfg) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {"cam-0": [], "cam-1": []}
        for key, value in read_topic(cfg, "t.away"):
            out[key].append(json.loads(value)["seq"])
        return out

    port = free_port()
    cfg = KafkaConfig(bootstrap_servers=f"127.0.0.1:{port}", decisions_topic="t.away", stats_topic="t.away-s",
                      outbox_path=tmp_path / "outbox.jsonl", flush_timeout_s=3, request_timeout_s=2,
                      retry_interval_s=0.5, retry_flush_timeout_s=2)
    proc = start_broker(port)
    try:
        ensure_topics(cfg)
        sink = KafkaSink(cfg)
        sink.write([rec(i) for i in range(10)])
        sink.flush()
        first_life = seqs(cfg)
    finally:
        stop_broker(proc.pid)
    assert sorted(first_life["cam-0"] + first_life["cam-1"]) == list(range(10))
    # Away: writes go on, bounded by the send timeout and one re-send attempt; records wait in the outbox.
    slowest = 0.0
    for i in range(10, 40):
        t0 = time.monotonic()
        sink.write([rec(i)])
        slowest = max(slowest, time.monotonic() - t0)
        time.sleep(0.15)  # 4.5 s in all: longer than request_timeout_s, so no record waits only in memory
    depth_while_away = sink.outbox_depth
    assert depth_while_away == 30, depth_while_away
    assert sink.outbox_age_s > 0
    assert slowest < 1.0 + cfg.retry_flush_timeout_s + 1.0, slowest
    proc = start_broker(port)  # back on the same address (in-memory storage: its topics are created again)
    try:
        ensure_topics(cfg)
        deadline = time.monotonic() + 60
        i = 40
        while sink.outbox_depth and time.monotonic() < deadline:
            sink.write([rec(i)])
            i += 1
            time.sleep(0.2)
        assert sink.outbox_depth == 0, sink.outbox_depth
        sink.close()
        second_life = seqs(cfg)
    finally:
        stop_broker(proc.pid)
    assert not (tmp_path / "outbox.jsonl").exists()
    for key in ("cam-0", "cam-1"):
        got = first_life[key] + second_life[key]
        assert sorted(set(got)) == [s for s in range(i) if f"cam-{s % 2}" == key]  # nothing lost
        first_seen = list(dict.fromkeys(got))
        assert first_seen == sorted(first_seen), key  # in order per key (camera), across the outage
        assert got[-1] == max(got), key  # a re-sent duplicate never lands after a newer record (compacted topics)
