"""`maskwatch rollup` on a real Kafka-protocol broker: camera statistics in, district statistics out, across its own
restart."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import pytest

from pipeline.config import KafkaConfig
from pipeline.sinks import KafkaSink, Record, ensure_topics
from pipeline.stats_reader import format_district_table, latest_districts, read_topic
from schemas.messages import DistrictStats
from services.rollup import run_rollup
from tests.test_district import MIN, T0, Camera

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[1]


def _publish(cfg: KafkaConfig, records: list) -> None:
    sink = KafkaSink(cfg.model_copy(update={"outbox_path": cfg.outbox_path.with_name("cameras-outbox.jsonl")}))
    sink.write([Record(cfg.stats_topic, r.camera_id, r.encode()) for r in records])
    sink.close()


def _rollup_for(cfg: KafkaConfig, n: float, timeout_s: float = 30.0) -> list[DistrictStats]:
    """Run the roll-up in a thread for ``n`` seconds, then stop it (its flush publishes the open windows); returns
    what it published."""
    out: list[DistrictStats] = []
    stop = threading.Event()
    # The records are from 2023: a frozen clock keeps the wall-clock rule from publishing them before all are read.
    t = threading.Thread(target=run_rollup, args=(cfg, 3600.0, stop, 0.2, out.extend, lambda: T0), daemon=True)
    t.start()
    time.sleep(n)  # the consumer reads the topic from the beginning within a few polls
    stop.set()
    t.join(timeout_s)
    assert not t.is_alive(), "rollup did not stop"
    return out


def test_rollup_pools_districts_from_the_topic_and_resumes_without_publishing_twice(broker, tmp_path):
    cfg = KafkaConfig(bootstrap_servers=broker, decisions_topic="r.decisions", stats_topic="r.camera-stats",
                      district_stats_topic="r.district-stats", outbox_path=tmp_path / "rollup-outbox.jsonl")
    ensure_topics(cfg)
    a, b, c = Camera("a", "north"), Camera("b", "north"), Camera("c", "south")
    _publish(cfg, [a.window(0, 2, 0), b.window(0, 0, 18), c.window(0, 1, 1), a.window(1, 1, 0)])

    first = _rollup_for(cfg, 3)
    assert sorted((r.district, r.window_start_ns, r.revision) for r in first) == [
        ("north", T0, 0), ("north", T0 + MIN, 0), ("south", T0, 0)]
    north0 = next(r for r in first if r.district == "north" and r.window_start_ns == T0)
    assert (north0.people, north0.masked, north0.unmasked, north0.cameras) == (20, 2, 18, 2)
    assert north0.mask_fraction == pytest.approx(0.1)  # pooled: 2 of 20
    for _, value in read_topic(cfg, cfg.district_stats_topic):
        jsonschema.validate(json.loads(value), DistrictStats.json_schema())
    latest = latest_districts(cfg)
    assert (latest["north"].window_start_ns, latest["north"].total_people) == (T0 + MIN, 21)
    assert latest["south"].total_people == 2
    assert "north" in format_district_table(latest)

    # Restarted: it reads its own latest records back and replays the camera topic; nothing is published twice.
    assert _rollup_for(cfg, 3) == []
    _publish(cfg, [b.window(1, 0, 1), a.window(2, 3, 0), c.window(1, 0, 0)])
    again = _rollup_for(cfg, 3)
    assert sorted((r.district, r.window_start_ns, r.revision) for r in again) == [
        ("north", T0 + 2 * MIN, 0), ("south", T0 + MIN, 0)]
    north2 = next(r for r in again if r.district == "north")
    assert (north2.people, north2.total_people, north2.total_masked) == (3, 25, 6)  # exact after the replay
    # b's minute-1 record came after minute 1 was published by the first run: it counts in the totals only.

    table = subprocess.run(
        [sys.executable, "-m", "maskwatch.cli", "stats", "--kafka-bootstrap", broker, "--by", "district",
         "--topic", cfg.district_stats_topic], capture_output=True, text=True, cwd=REPO, timeout=60, check=True)
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["district", "cameras", "running"]
    assert "coverage (decided/face)" in lines[0]
    north = next(line for line in lines if line.startswith("north"))
    assert north.split()[:4] == ["north", "2", "2", "25"]
    assert "100% (25/25)" in north  # everyone of these cameras had a face and was decided
    assert "LOW" not in north


def test_readers_and_the_rollup_upgrade_records_from_before_the_coverage_fields(broker, tmp_path):
    from pipeline.district import DistrictRollup
    from pipeline.stats_reader import latest_stats, read_decisions
    from tests.test_district import COVERAGE
    from tests.test_schemas import DECISION

    cfg = KafkaConfig(bootstrap_servers=broker, decisions_topic="u.decisions", stats_topic="u.camera-stats",
                      district_stats_topic="u.district-stats", outbox_path=tmp_path / "rollup-outbox.jsonl")
    ensure_topics(cfg)

    def old(value: dict, version: int, drop: set[str]) -> bytes:
        return json.dumps({k: v for k, v in value.items() if k not in drop} | {"schema_version": version}).encode()

    a = Camera("a", "north")
    minute0, minute1 = a.window(0, 2, 1, 1), a.window(1, 1, 0, 2)
    (district0,) = DistrictRollup(lateness_s=0).add(minute0)
    sink = KafkaSink(cfg.model_copy(update={"outbox_path": tmp_path / "old-outbox.jsonl"}))
    sink.write([Record(cfg.stats_topic, "a", old(r.to_dict(), 6, COVERAGE)) for r in (minute0, minute1)]
               + [Record(cfg.district_stats_topic, "north", old(district0.to_dict(), 1, COVERAGE)),
                  Record(cfg.decisions_topic, "cam", old(DECISION.to_dict(), 3, {"face_px_median"}))])
    sink.close()
    cam = latest_stats(cfg)["a"]
    assert (cam.schema_version, cam.total_decided, cam.total_people_with_face, cam.total_coverage) == (8, 4, 0, None)
    north = latest_districts(cfg)["north"]
    assert (north.schema_version, north.decided, north.coverage, north.low_coverage) == (2, 3, None, False)
    (decision,) = read_decisions(cfg)
    assert (decision.schema_version, decision.face_px_median) == (4, None)
    # The roll-up resumes after its upgraded record of minute 0 and pools the upgraded camera record of minute 1:
    # the camera's decided people stand for its unknown people with a face.
    (rec,) = _rollup_for(cfg, 3)
    assert (rec.window_start_ns, rec.decided, rec.people_with_face, rec.coverage) == (T0 + MIN, 1, 1, 1.0)
    assert (rec.total_decided, rec.total_people_with_face, rec.total_coverage) == (4, 4, 1.0)
