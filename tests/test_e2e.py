"""End to end, as a user runs it: `maskwatch run` on real videos through local Ray into a local broker, read back."""

import json
import os
import subprocess
import sys

import jsonschema
import pytest

from pipeline.config import Config, KafkaConfig
from pipeline.onnx_models import MaskClassifier
from pipeline.stats_reader import latest_stats, read_decisions
from schemas.messages import PersonDecision
from tests.conftest import REPO, pose_model, shared_video

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.kafka]
MASKWATCH = [sys.executable, "-m", "maskwatch.cli"]


def maskwatch(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([*MASKWATCH, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


@pytest.fixture(scope="module")
def three_cameras(broker):
    """One run, three real videos as three cameras, into the broker."""
    pose_model()
    videos = {
        "street-5": shared_video("street_5_masked.mp4"),
        "single-unmasked": shared_video("single_unmasked.mp4"),
        "towncentre": shared_video("towncentre_cctv_10s.mp4"),
    }
    args = []
    for cid, path in videos.items():
        args += ["--source", str(path), "--camera-id", cid]
    proc = maskwatch("run", *args, "--kafka-bootstrap", broker, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    cfg = KafkaConfig(bootstrap_servers=broker)
    # The broker is the test session's: other tests' cameras share its topics.
    decisions = [d for d in read_decisions(cfg) if d.camera_id in videos]
    for d in decisions:
        jsonschema.validate(json.loads(d.encode()), PersonDecision.json_schema())
    return summary, decisions, {c: s for c, s in latest_stats(cfg).items() if c in videos}


def _by_camera(decisions, camera_id):
    return [d for d in decisions if d.camera_id == camera_id]


def test_street_5_masked_people_decided_mask(three_cameras):
    _, decisions, _ = three_cameras
    street = _by_camera(decisions, "street-5")
    kinds = [d.decision for d in street]
    assert 4 <= len(street) <= 6, kinds
    assert kinds.count("mask") >= 4, kinds
    assert "no_mask" not in kinds, kinds


def test_single_unmasked_person_decided_no_mask(three_cameras):
    _, decisions, _ = three_cameras
    kinds = [d.decision for d in _by_camera(decisions, "single-unmasked")]
    assert kinds.count("no_mask") == 1, kinds
    assert "mask" not in kinds, kinds


def test_towncentre_has_no_mask_decisions(three_cameras):
    _, decisions, _ = three_cameras
    town = _by_camera(decisions, "towncentre")
    assert len(town) >= 5  # a busy street: people are found and tracked
    assert "mask" not in [d.decision for d in town]


def test_statistics_for_every_camera_match_the_decisions(three_cameras):
    summary, decisions, stats = three_cameras
    assert set(stats) == {"street-5", "single-unmasked", "towncentre"}
    for cid, s in stats.items():
        mine = _by_camera(decisions, cid)
        assert s.final
        assert s.total_people == len(mine)
        assert s.total_masked == sum(d.decision == "mask" for d in mine)
        assert s.frames_processed > 0
        # How much the fraction rests on, from the same decisions: people with a face, decided, their face heights.
        with_face = [d for d in mine if d.faces_classified + d.faces_rejected >= 1]  # the face rules saw a face
        classified = [d for d in mine if d.faces_classified >= 1]  # ... and the gate passed one of its crops
        assert (s.total_people_with_face, s.total_decided) == (
            len(with_face), sum(d.decision != "undecided" for d in mine))
        assert all(d.face_px_median is not None and d.face_px_median >= 16 for d in classified)  # min_face_px
        assert all(d.face_px_median is None for d in mine if d.faces_classified == 0)
        if with_face:
            assert s.total_coverage == round(s.total_decided / len(with_face), 6)
        if classified:
            assert s.total_face_px_median is not None
            assert min(d.face_px_median for d in classified) - 1 <= s.total_face_px_median <= max(
                d.face_px_median for d in classified) + 1
        assert s.frames_dropped == 0
        # The shipped classifier's held-out counts correct the fraction (Rogan-Gladen, Lang-Reiczigel interval).
        assert (s.classifier_sensitivity, s.classifier_specificity) == tuple(
            MaskClassifier(Config().classify.model_path, device="cpu").metadata[f"maskwatch.{k}"]
            for k in ("sensitivity", "specificity"))
        if s.total_masked + s.total_unmasked:
            lo, est, hi = (s.total_corrected_mask_fraction_low, s.total_corrected_mask_fraction,
                           s.total_corrected_mask_fraction_high)
            assert 0 <= lo <= est <= hi <= 1
    assert {c["camera_id"] for c in summary["cameras"]} == set(stats)
    assert summary["records"] >= len(decisions) + len(stats)


def test_stats_command_prints_the_table(three_cameras, broker):
    proc = maskwatch("stats", "--kafka-bootstrap", broker, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["camera_id", "people"]
    assert "coverage (decided/face)" in lines[0]
    assert {ln.split()[0] for ln in lines[1:]} >= {"street-5", "single-unmasked", "towncentre"}  # shared broker


def test_json_lines_output_and_annotated_video_without_kafka(tmp_path):
    pose_model()
    video = shared_video("single_masked.mp4")
    out, ann = tmp_path / "r.jsonl", tmp_path / "ann.mp4"
    proc = maskwatch("run", "--source", str(video), "--out", str(out), "--annotate", str(ann), "--target-fps", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(x) for x in out.read_text().splitlines()]
    topics = {r["topic"] for r in records}
    assert topics == {"maskwatch.decisions", "maskwatch.camera-stats"}
    assert all(r["key"] == "single_masked" for r in records)
    import cv2

    cap = cv2.VideoCapture(str(ann))
    ok, frame = cap.read()
    assert ok
    assert frame.shape[:2] == (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) > 10


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--source", "/no/such/video.mp4"], "source file not found: /no/such/video.mp4"),
        (["run", "--source", "rtsp://127.0.0.1:9/cam"], "cannot open rtsp://127.0.0.1:9/cam"),
        (["run", "--config", "CFG_UNKNOWN_KEY"], "unknown config key 'pose.max_batch'"),
        (["run", "--source", "VIDEO", "--kafka-bootstrap", "127.0.0.1:9"], "cannot reach Kafka broker at 127.0.0.1:9"),
        (["run", "--config", "CFG_BAD_MODEL", "--source", "VIDEO"], "is not a loadable ONNX model"),
        (["run", "--config", "CFG_WRONG_MODEL", "--source", "VIDEO"], "expected one input (B, 3, H, W)"),
        (["stats", "--kafka-bootstrap", "127.0.0.1:9"], "cannot reach Kafka broker at 127.0.0.1:9"),
    ],
)
def test_user_errors_are_one_line_without_traceback(tmp_path, args, expected):
    video = shared_video("single_masked.mp4")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("pose:\n  max_batch: 4\n")
    bad_model = tmp_path / "bad.onnx"
    bad_model.write_bytes(b"\x08\x07garbage" * 50)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"pose:\n  model_path: {bad_model}\n")
    wrong = tmp_path / "wrong.yaml"  # a real ONNX file of another layout: our mask classifier as a pose model
    wrong.write_text(f"pose:\n  model_path: {REPO / 'maskwatch' / 'assets' / 'mask_classifier.onnx'}\n")
    subst = {"CFG_UNKNOWN_KEY": str(unknown), "CFG_BAD_MODEL": str(bad), "CFG_WRONG_MODEL": str(wrong),
             "VIDEO": str(video)}
    proc = maskwatch(*[subst.get(a, a) for a in args], timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert err[0].startswith("maskwatch: error: "), proc.stderr
    assert expected in err[0]
    assert "Traceback" not in proc.stderr
