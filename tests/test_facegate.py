"""The face gate (YuNet on head crops): real crops cut as the pipeline cuts them, the shipped file's checks."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from cluster.config import ClassifyConfig, parse_config
from pipeline.camera import CameraPipeline
from pipeline.facegate import YUNET_SHA256, CropScorer, FaceGate, load_face_gate, sha256_file
from pipeline.headbox import FaceRules, crop_box, cut_crops
from schemas.errors import ModelError
from schemas.pose import Poses
from tests.conftest import SHARED_DATA, shared_video

GATE_MIN = FaceRules().gate_min_score


@pytest.fixture(scope="module")
def gate() -> FaceGate:
    return load_face_gate(ClassifyConfig().face_detector_path, ClassifyConfig().face_detector_input_px)


def _video_frame(name: str, frame_idx: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(shared_video(name)))
    try:
        for _ in range(frame_idx + 1):
            ok, frame = cap.read()
            assert ok, f"{name} has no frame {frame_idx}"
        return frame
    finally:
        cap.release()


def test_shipped_detector_is_opencv_zoo_yunet():
    assert sha256_file(ClassifyConfig().face_detector_path) == YUNET_SHA256


def test_back_of_head_rejected_and_dark_masked_face_kept(gate):
    # queue_dark_masks.mp4 frame 6: crop boxes from `maskwatch dataset extract` (tracks 4 and 3 of that run).
    # Track 4 is the back of a grey-haired head that the pose model gives facial keypoints; track 3 a woman in a
    # dark grey mask, facing the camera.
    frame = _video_frame("queue_dark_masks.mp4", 6)
    boxes = np.array([[895.2, 116.7, 1069.9, 291.4], [436.5, 311.4, 633.2, 508.1]], np.float32)
    scores = gate.face_scores(cut_crops(frame, boxes, 96))
    assert scores[0] < GATE_MIN, f"back of a head passed the gate with face score {scores[0]:.2f}"
    assert scores[1] >= GATE_MIN, f"masked face rejected with face score {scores[1]:.2f}"


def test_small_masked_face_kept(gate):
    # andrewmvd_dev maksssksksss11.jpg, box 10: a 15x16 px face in a surgical mask (annotated with_mask).
    path = SHARED_DATA / "detection" / "andrewmvd_dev" / "images" / "maksssksksss11.jpg"
    if not path.is_file():
        pytest.skip(f"needs {path} (../shared/data is not beside this checkout)")
    image = cv2.imread(str(path))
    crop = cut_crops(image, crop_box(np.array([[266, 45, 281, 61]], np.float32), 1.6), 96)
    assert gate.face_scores(crop)[0] >= GATE_MIN


def test_face_off_centre_does_not_vouch_for_the_crop(gate):
    # The same real face, moved from the centre of the crop to its corner: a neighbour's face at the edge of a
    # crowded crop must not let the crop through.
    frame = _video_frame("queue_dark_masks.mp4", 6)
    face = cut_crops(frame, np.array([[436.5, 311.4, 633.2, 508.1]], np.float32), 48)[0]
    centred = np.full((1, 96, 96, 3), 114, np.uint8)
    centred[0, 24:72, 24:72] = face
    corner = np.full((1, 96, 96, 3), 114, np.uint8)
    corner[0, :48, :48] = face
    assert gate.face_scores(centred)[0] >= GATE_MIN
    assert gate.face_scores(corner)[0] == 0.0


def test_uniform_crops_have_no_face(gate):
    crops = np.stack([np.full((96, 96, 3), v, np.uint8) for v in (0, 114, 255)])
    assert gate.face_scores(crops).tolist() == [0.0, 0.0, 0.0]
    assert gate.face_scores(np.zeros((0, 96, 96, 3), np.uint8)).shape == (0,)
    with pytest.raises(ValueError, match="uint8"):
        gate.face_scores(np.zeros((1, 96, 96, 3), np.float32))


def test_wrong_files_are_one_line_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        FaceGate(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a YuNet model"):
        FaceGate(junk)
    # A file named like the shipped one must be the shipped one.
    renamed = tmp_path / "face_detection_yunet_2023mar.onnx"
    shutil.copy(ClassifyConfig().model_path, renamed)
    with pytest.raises(ModelError, match=f"expected sha256 {YUNET_SHA256}"):
        load_face_gate(renamed)
    with pytest.raises(ValueError, match="multiple of 32"):
        FaceGate(ClassifyConfig().face_detector_path, input_px=100)


def test_scorer_columns_and_gate_off():
    class Fixed:
        def predict(self, crops):
            return np.full(len(crops), 0.25, np.float32)

    crops = np.full((2, 96, 96, 3), 114, np.uint8)
    assert CropScorer(Fixed(), None).score(crops).tolist() == [[0.25, 1.0], [0.25, 1.0]]
    assert CropScorer(Fixed(), None).score(crops[:0]).shape == (0, 2)
    cfg = parse_config({"classify": {"face_detector_path": None}, "faces": {"gate_min_score": 0.7}})
    assert cfg.classify.face_detector_path is None
    assert cfg.faces.gate_min_score == 0.7


def test_camera_counts_rejected_faces_in_its_statistics():
    cam = CameraPipeline("cam", (640, 360), 1.6, faces=FaceRules(gate_min_score=0.6))
    kp = np.array([[[100 + 10 * (j % 3), 60 + 12 * j, 0.9] for j in range(17)]], np.float32)
    for i in range(8):
        poses = Poses("cam", i, i, np.ones(1, np.float32), np.array([[50, 50, 150, 300]], np.float32), kp,
                      np.zeros(1, np.int64))
        cam.track(poses, i * 100_000_000)
    (tid,) = cam.tracker.alive_track_ids()
    cam.add_scores([tid, tid], np.array([[0.05, 0.2], [0.9, 0.8]], np.float32))
    with pytest.raises(ValueError, match=r"\(1, 2\)"):
        cam.add_scores([tid], np.array([0.5], np.float32))
    decisions, stats = cam.close(10**9)
    assert (decisions[0].faces_rejected, decisions[0].votes_no_mask, decisions[0].votes_mask) == (1, 0, 1)
    assert (stats[-1].faces_rejected, stats[-1].faces_classified) == (1, 1)


def test_gate_on_labelled_crowd_crops(gate):
    """The face gate on the 510 hand-labelled crops of data/labels/face_gate_crops.csv (two masked-crowd videos).

    Measured on 2026-11-29: 94.6% of faces kept, 80.0% of non-faces rejected (maskwatch/assets/FACE_GATE.md). The
    floors below hold the gate to that; neither reaches the issue's 97% / 95% targets yet.
    """
    import csv

    from tests.conftest import REPO

    rows = list(csv.DictReader((REPO / "data" / "labels" / "face_gate_crops.csv").open()))
    kept: dict[str, list[bool]] = {"face": [], "not_a_face": [], "unusable": []}
    for video in sorted({r["video"] for r in rows}):
        by_frame: dict[int, list[dict[str, str]]] = {}
        for r in rows:
            if r["video"] == video:
                by_frame.setdefault(int(r["frame_idx"]), []).append(r)
        cap = cv2.VideoCapture(str(shared_video(video)))
        try:
            for idx in range(max(by_frame) + 1):
                ok, frame = cap.read()
                assert ok, f"{video}: no frame {idx}"
                if idx in by_frame:
                    boxes = np.array([[float(r[k]) for k in ("crop_x1", "crop_y1", "crop_x2", "crop_y2")]
                                      for r in by_frame[idx]], np.float32)
                    scores = gate.face_scores(cut_crops(frame, boxes, 96))
                    for r, s in zip(by_frame[idx], scores, strict=True):
                        label = r["label"] if r["label"] in kept else "face"  # with_mask, without_mask, ...
                        kept[label].append(bool(s >= GATE_MIN))
        finally:
            cap.release()
    assert [len(v) for v in kept.values()] == [423, 65, 22]
    assert np.mean(kept["face"]) >= 0.93
    assert 1 - np.mean(kept["not_a_face"]) >= 0.75
