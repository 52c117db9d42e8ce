"""The face gate (YuNet on head crops): real crops cut as the pipeline cuts them, the shipped file's checks."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from pipeline.camera import CameraPipeline
from pipeline.config import ClassifyConfig, parse_config
from pipeline.facegate import YUNET_SHA256, CropScorer, FaceGate, load_face_gate, sha256_file
from pipeline.headbox import FaceRules, crop_box, cut_crops
from pipeline.onnx_models import MaskClassifier
from schemas.errors import ModelError
from schemas.pose import Poses
from tests.conftest import SHARED_DATA, shared_video

# The pass marks docs/experiments/face-gate.md measured the shipped files at (2026-11-29). The defaults are chosen on
# person-level results since (bench/revote.py); these tests hold the detector and the usable head to their crop-level
# figures at these marks.
GATE_MIN, USABLE_MIN = 0.6, 0.5


@pytest.fixture(scope="module")
def gate() -> FaceGate:
    return load_face_gate(FaceRules().gate_model_path, FaceRules().gate_input_px)


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
    assert sha256_file(FaceRules().gate_model_path) == YUNET_SHA256


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
        FaceGate(FaceRules().gate_model_path, input_px=100)


def test_scorer_columns_and_gate_off():
    class Fixed:
        def predict_scores(self, crops):
            return np.tile(np.array([[0.25, 0.75]], np.float32), (len(crops), 1))

    crops = np.full((2, 96, 96, 3), 114, np.uint8)
    assert CropScorer(Fixed(), None).score(crops).tolist() == [[0.25, 1.0, 0.75], [0.25, 1.0, 0.75]]
    assert CropScorer(Fixed(), None).score(crops[:0]).shape == (0, 3)
    cfg = parse_config({"faces": {"gate_model_path": None, "gate_min_score": 0.7}})
    assert cfg.faces.gate_model_path is None
    assert cfg.faces.gate_min_score == 0.7


def test_camera_counts_rejected_faces_in_its_statistics():
    cam = CameraPipeline("cam", (640, 360), 1.6, faces=FaceRules(gate_min_score=0.6, usable_min_score=0.5))
    kp = np.array([[[100 + 10 * (j % 3), 60 + 12 * j, 0.9] for j in range(17)]], np.float32)
    for i in range(8):
        poses = Poses("cam", i, i, np.ones(1, np.float32), np.array([[50, 50, 150, 300]], np.float32), kp,
                      np.zeros(1, np.int64))
        cam.track(poses, i * 100_000_000)
    (tid,) = cam.tracker.alive_track_ids()
    # Rejected: not a face to the detector; not usable to the classifier. Kept: both pass.
    cam.add_scores([tid, tid, tid], np.array([[0.05, 0.2, 0.9], [0.1, 0.9, 0.3], [0.9, 0.8, 0.7]], np.float32))
    with pytest.raises(ValueError, match=r"\(1, 3\)"):
        cam.add_scores([tid], np.array([[0.5, 0.9]], np.float32))
    decisions, stats = cam.close(10**9)
    assert (decisions[0].faces_rejected, decisions[0].votes_no_mask, decisions[0].votes_mask) == (2, 0, 1)
    assert (stats[-1].faces_rejected, stats[-1].faces_classified) == (2, 1)


@pytest.fixture(scope="module")
def labelled_crowd_crops() -> tuple[np.ndarray, np.ndarray]:
    """The 510 hand-labelled crops of data/labels/face_gate_crops.csv (two masked-crowd videos), re-cut."""
    from maskwatch.training.usable import video_crops
    from tests.conftest import REPO

    shared_video("queue_hk_masked.mp4")  # skips with a clear message where ../shared is absent
    crops, label, _ = video_crops(REPO / "data" / "labels" / "face_gate_crops.csv", SHARED_DATA / "videos", 96)
    label = np.where(np.isin(label, ["not_a_face", "unusable"]), label, "face")  # with_mask, without_mask, ...
    assert [int((label == k).sum()) for k in ("face", "not_a_face", "unusable")] == [423, 65, 22]
    return crops, label


def test_gate_on_labelled_crowd_crops(gate, labelled_crowd_crops):
    """YuNet alone on the labelled crowd crops.

    Measured on 2026-11-29: 94.6% of faces kept, 80.0% of non-faces rejected (docs/experiments/face-gate.md).
    """
    crops, label = labelled_crowd_crops
    kept = gate.face_scores(crops) >= GATE_MIN
    assert kept[label == "face"].mean() >= 0.93
    assert 1 - kept[label == "not_a_face"].mean() >= 0.75


def test_detector_and_usable_head_on_labelled_crowd_crops(gate, labelled_crowd_crops):
    """What votes in `maskwatch run` at face-gate.md's pass marks: YuNet and the shipped classifier's usable output.

    The usable-face head never saw these two videos (it is trained on other videos' crops,
    data/labels/video_head_crops.csv). Measured on 2026-11-29: see docs/experiments/face-gate.md; the floors below
    hold the shipped files to it. Without the head, non-faces rejected fall to 0.80 and hidden mouths to 0.14.
    """
    crops, label = labelled_crowd_crops
    rules = FaceRules(gate_min_score=GATE_MIN, usable_min_score=USABLE_MIN)
    scores = CropScorer(MaskClassifier(ClassifyConfig().model_path, device="cpu"), gate).score(crops)
    kept = (scores[:, 1] >= rules.gate_min_score) & (scores[:, 2] >= rules.usable_min_score)
    assert kept[label == "face"].mean() >= 0.89
    assert 1 - kept[label == "not_a_face"].mean() >= 0.90
    # 9 of 22 where it was measured; 7 of 22 on an AMD EPYC host (2026-12-06): there two hidden mouths score 0.585 and
    # 0.528 on the usable output, 0.452 and 0.525 with ONNX Runtime's graph optimizations off. The floor is the share
    # on both hosts: the head's scores near the pass mark move with the CPU's kernels.
    assert 1 - kept[label == "unusable"].mean() >= 0.30
