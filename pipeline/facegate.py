"""The face gate: does a head crop show a usable face? Only crops that do may vote.

Facial keypoints alone let non-faces through: on masked crowds the pose model gives nose and eye keypoints above 0.5
for backs of heads and out-of-focus dark blobs, and the mask classifier, which has never seen such crops, calls them
"no mask" with confidence. A face detector run on the classifier's own crop tells them apart: it finds a frontal or
three-quarter face (masked or not) and finds nothing on a back of a head.

The detector is YuNet (Wu, Peng, Yu, "YuNet: A Tiny Millisecond-level Face Detector", Machine Intelligence Research
20, 2023), the file ``face_detection_yunet_2023mar.onnx`` of OpenCV Zoo (MIT), run with OpenCV's own
``cv2.FaceDetectorYN``. It ships in ``maskwatch/assets`` (provenance and checksum in ``docs/experiments/
face-gate.md``); nothing is downloaded.

A crop's *face score* is the highest YuNet score among the faces whose centre lies within ``centre_radius`` (a
fraction of the crop side) of the crop centre, 0 when there is none: a neighbour's face at the edge of a crowded
crop does not vouch for the back of the head in its middle.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.onnx_models import MaskClassifier
from schemas.errors import ModelError

logger = logging.getLogger(__name__)

YUNET_FILE = "face_detection_yunet_2023mar.onnx"
SCORE_COLUMNS = 3
"""Columns of :meth:`CropScorer.score`: mask score, face score, usable-face score."""
# sha256 of OpenCV Zoo's release file (its Git LFS pointer, models/face_detection_yunet/, commit 966be4c).
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class FaceGate:
    """Face scores of head crops with YuNet (``cv2.FaceDetectorYN``), one crop at a time on the CPU.

    Args:
        model_path: The YuNet ``.onnx`` file.
        input_px: Crops are resized to this square side before detection (a multiple of 32; YuNet finds faces of
            about 10-300 px, and a face fills ``1 / crop_margin`` of the crop).
        centre_radius: Only faces whose centre lies within this fraction of the crop side from the crop centre
            count (0-0.5).
        score_floor: Detections below this score are not reported (their face score is 0); the pass mark itself
            is the caller's (``faces.gate_min_score``).
        expected_sha256: When given, the file must have this sha256 (the shipped file is checked this way).

    Raises:
        ModelError: If the file is missing, does not match ``expected_sha256``, or OpenCV cannot load it as YuNet.
        ValueError: If a setting is out of range.
    """

    def __init__(
        self,
        model_path: Path | str,
        input_px: int = 128,
        centre_radius: float = 0.25,
        score_floor: float = 0.3,
        expected_sha256: str | None = None,
    ) -> None:
        if input_px < 32 or input_px % 32:
            msg = f"face gate input_px must be a multiple of 32 and >= 32, got {input_px}"
            raise ValueError(msg)
        if not 0.0 < centre_radius <= 0.5:
            msg = f"face gate centre_radius must be in (0, 0.5], got {centre_radius}"
            raise ValueError(msg)
        self.path = Path(model_path)
        if not self.path.is_file():
            msg = f"face detector: model file not found: {self.path}"
            raise ModelError(msg)
        if expected_sha256 is not None and (got := sha256_file(self.path)) != expected_sha256:
            msg = f"face detector {self.path}: expected sha256 {expected_sha256}, got {got}"
            raise ModelError(msg)
        self.input_px = input_px
        self.centre_radius = centre_radius
        try:
            self._det = cv2.FaceDetectorYN.create(str(self.path), "", (input_px, input_px), score_floor, 0.3, 50)
            self._det.detect(np.zeros((input_px, input_px, 3), np.uint8))
        except cv2.error as exc:
            first = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else "cv2.error"
            msg = f"face detector {self.path}: not a YuNet model OpenCV can run ({first})"
            raise ModelError(msg) from exc

    def face_scores(self, crops_rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Face score of each crop.

        Args:
            crops_rgb: `(K, S, S, 3)` uint8 RGB square crops, as :func:`pipeline.headbox.cut_crops` returns.

        Returns:
            `(K,)` float32 in [0, 1]: the best YuNet score of a face near the crop centre, 0 where there is none.

        Raises:
            ValueError: If the crops are not `(K, S, S, 3)` uint8.
        """
        if crops_rgb.ndim != 4 or crops_rgb.shape[3] != 3 or crops_rgb.dtype != np.uint8:
            msg = f"crops must be (K, S, S, 3) uint8, got {crops_rgb.shape} {crops_rgb.dtype}"
            raise ValueError(msg)
        n, s = self.input_px, crops_rgb.shape[1]
        out = np.zeros(len(crops_rgb), np.float32)
        interp = cv2.INTER_LINEAR if s < n else cv2.INTER_AREA
        for i, crop in enumerate(crops_rgb):
            img = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
            if s != n:
                img = cv2.resize(img, (n, n), interpolation=interp)
            _, faces = self._det.detect(img)
            if faces is None:
                continue
            cx = faces[:, 0] + faces[:, 2] / 2
            cy = faces[:, 1] + faces[:, 3] / 2
            near = np.hypot(cx - n / 2, cy - n / 2) <= self.centre_radius * n
            if near.any():
                out[i] = float(faces[near, 14].max())
        return out


def load_face_gate(model_path: Path | str, input_px: int = 128) -> FaceGate:
    """The face gate from a file; a file named like the shipped one (:data:`YUNET_FILE`) must also match its sha256.

    Raises:
        ModelError: See :class:`FaceGate`.
    """
    expected = YUNET_SHA256 if Path(model_path).name == YUNET_FILE else None
    return FaceGate(model_path, input_px, expected_sha256=expected)


class CropScorer:
    """The classify stage on one batch of head crops: the mask classifier and, when there is one, the face gate.

    Args:
        classifier: The mask classifier.
        gate: The face gate, or None to give every crop face score 1.
    """

    def __init__(self, classifier: MaskClassifier, gate: FaceGate | None) -> None:
        self.classifier = classifier
        self.gate = gate

    def score(self, crops_rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Scores of `(K, S, S, 3)` uint8 RGB crops.

        Returns:
            `(K, 3)` float32: column 0 the mask score (probability of a mask worn correctly), column 1 the face
            score (:meth:`FaceGate.face_scores`; 1 without a gate), column 2 the classifier's usable-face score
            (:meth:`MaskClassifier.predict_scores`; 1 when the model has none). ``K == 0`` gives `(0, 3)`.
        """
        if len(crops_rgb) == 0:
            return np.zeros((0, SCORE_COLUMNS), np.float32)
        mask_usable = self.classifier.predict_scores(crops_rgb)
        face = self.gate.face_scores(crops_rgb) if self.gate is not None else np.ones(len(crops_rgb), np.float32)
        return np.stack([mask_usable[:, 0], face, mask_usable[:, 1]], axis=1).astype(np.float32)
