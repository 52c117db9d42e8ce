"""Head boxes from COCO-17 keypoints, the face-visibility rule, and the crop geometry shared by training and inference.

Street cameras see small, side-on faces. The face is located from the facial keypoints (nose, eyes, ears) when the
pose model found them, and from the shoulders otherwise (seed design, Neuralet's face-mask detector on pose
keypoints: https://github.com/neuralet/smart-social-distancing). Only a *visible* face is classified: at least
``min_face_keypoints`` of the five facial keypoints above ``keypoint_min_score`` (and both eyes, when
``require_both_eyes``), a face at least ``min_face_px`` wide, inside the detection area.

Every crop the classifier ever sees, at training time (from annotated face boxes) and at inference time (from
keypoints), is cut by :func:`crop_box` + :func:`cut_crops`: a square around the face centre whose side is the face
size times the model's ``crop_margin``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.paths import ASSETS
from schemas.coco17 import (
    FACE_KEYPOINTS,
    LEFT_EAR,
    LEFT_EYE,
    LEFT_SHOULDER,
    NOSE,
    RIGHT_EAR,
    RIGHT_EYE,
    RIGHT_SHOULDER,
)

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

# Face-size ratios (anthropometric averages; the face box spans cheek to cheek, brow to chin, like the annotated
# boxes of the andrewmvd face-mask set): inter-pupil distance ~6.3 cm vs face width ~14 cm -> 2.2;
# ear to ear ~15 cm -> 0.95; eye line to nose tip ~4.5 cm vs face height ~17 cm -> 3.5;
# shoulder width ~40 cm -> 0.35. Each measure only shrinks when the head turns, so the largest estimate wins.
EYE_TO_FACE = 2.2
EAR_TO_FACE = 0.95
EYE_NOSE_TO_FACE = 3.5
SHOULDER_TO_FACE = 0.35
# The facial keypoints sit in the upper half of the face; the mask covers the lower half. Shift the centre down.
FACE_CENTER_SHIFT = 0.12
# Without a visible face the head sits above the shoulder line by about one face height.
HEAD_ABOVE_SHOULDERS = 1.0


@dataclass(frozen=True, slots=True)
class FaceRules:
    """When a face is visible enough to classify.

    Attributes:
        keypoint_min_score: A keypoint counts as visible above this confidence (0-1).
        min_face_keypoints: At least this many of nose, eyes, ears visible (seed design: 3).
        require_both_eyes: Also require both eyes visible (rejects profiles, where masks are ambiguous).
        min_face_px: Minimum face box side in original-frame pixels (seed design: 16x16).
        area_margin: Detection-area margin as a fraction of the frame side on each edge: a face whose
            centre lies in the margin is not classified (people entering or leaving are cut by the frame edge).
        max_nested_overlap: A face box covered by a larger visible face box over more than this fraction of its
            own area is not classified: on close-up cameras the pose model sometimes adds a second, spurious
            person whose facial keypoints land on the real face (seen on ``single_unmasked.mp4``).
        gate_model_path: The face gate (:mod:`pipeline.facegate`): YuNet runs on each head crop, and crops without
            a face near their centre never vote. null turns the gate off (every crop that passes the keypoint rules
            votes).
        gate_input_px: Side of the square YuNet input the crop is resized to (pixels, multiple of 32, 32-640).
        gate_min_score: A crop votes only if its face score (YuNet) reaches this (0-1); 0 lets every crop vote.
        usable_min_score: ... and only if the classifier's usable-face score (``usable_score``, see
            :class:`pipeline.onnx_models.MaskClassifier`) reaches this (0-1); 0 turns this check off.

    ``gate_min_score`` 0.6 and ``usable_min_score`` 0.1 were chosen on person-level results (``bench/revote.py``,
    the labelled people of ``data/labels/people``): of the settings with no wrong decision on any labelled shared
    video, the one that decides the most people. The crop-level mark for the usable score of
    docs/experiments/face-gate.md, 0.5, left undecided people whose crops the detector had already passed (coverage
    0.43 against 0.50).
    """

    keypoint_min_score: float = 0.5
    min_face_keypoints: int = 3
    require_both_eyes: bool = True
    min_face_px: float = 16.0
    area_margin: float = 0.02
    max_nested_overlap: float = 0.5
    gate_model_path: Path | None = ASSETS / "face_detection_yunet_2023mar.onnx"
    gate_input_px: int = 128
    gate_min_score: float = 0.6
    usable_min_score: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.keypoint_min_score <= 1.0:
            msg = f"keypoint_min_score must be in [0, 1], got {self.keypoint_min_score}"
            raise ValueError(msg)
        if not 1 <= self.min_face_keypoints <= len(FACE_KEYPOINTS):
            msg = f"min_face_keypoints must be in [1, {len(FACE_KEYPOINTS)}], got {self.min_face_keypoints}"
            raise ValueError(msg)
        if not 0.0 < self.max_nested_overlap <= 1.0:
            msg = f"max_nested_overlap must be in (0, 1], got {self.max_nested_overlap}"
            raise ValueError(msg)
        if not (32 <= self.gate_input_px <= 640 and self.gate_input_px % 32 == 0):
            msg = f"gate_input_px must be a multiple of 32 in [32, 640], got {self.gate_input_px}"
            raise ValueError(msg)
        for name in ("gate_min_score", "usable_min_score"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                msg = f"{name} must be in [0, 1], got {getattr(self, name)}"
                raise ValueError(msg)
        if self.min_face_px < 1:
            msg = f"min_face_px must be >= 1, got {self.min_face_px}"
            raise ValueError(msg)
        if not 0.0 <= self.area_margin < 0.5:
            msg = f"area_margin must be in [0, 0.5), got {self.area_margin}"
            raise ValueError(msg)


def _check_keypoints(keypoints: FloatArray) -> FloatArray:
    kp = np.asarray(keypoints, dtype=np.float32)
    if kp.ndim != 3 or kp.shape[1:] != (17, 3):
        msg = f"keypoints must have shape (N, 17, 3), got {kp.shape}"
        raise ValueError(msg)
    return kp


def head_boxes(keypoints: FloatArray, keypoint_min_score: float = 0.5) -> tuple[FloatArray, BoolArray]:
    """Square head (face) boxes from COCO-17 keypoints.

    The face centre is the mean of the visible facial keypoints, shifted down by ``FACE_CENTER_SHIFT`` face sizes;
    the face size is the largest of the estimates from eye distance, ear distance, eye-to-nose height and the
    facial keypoints' spread. Without any visible facial keypoint the box is placed above the shoulders
    (``SHOULDER_TO_FACE`` times the shoulder width), for display and tracking only.

    Args:
        keypoints: `(N, 17, 3)` float32 `(x_px, y_px, conf)`, COCO-17 order, original-frame pixels.
        keypoint_min_score: Confidence above which a keypoint is used.

    Returns:
        `(bbox_xyxy, from_face)`: `(N, 4)` float32 square boxes in original-frame pixels (NaN-free; a person
        without facial or shoulder keypoints gets a zero-size box at the origin), and `(N,)` bool, True where the
        box came from facial keypoints.

    Raises:
        ValueError: If ``keypoints`` is not `(N, 17, 3)`.
    """
    kp = _check_keypoints(keypoints)
    n = len(kp)
    boxes = np.zeros((n, 4), np.float32)
    from_face = np.zeros(n, bool)
    for i in range(n):
        xy, vis = kp[i, :, :2], kp[i, :, 2] > keypoint_min_score
        face = [j for j in FACE_KEYPOINTS if vis[j]]
        if face:
            size = 0.0
            if vis[LEFT_EYE] and vis[RIGHT_EYE]:
                size = max(size, EYE_TO_FACE * float(np.linalg.norm(xy[LEFT_EYE] - xy[RIGHT_EYE])))
            if vis[LEFT_EAR] and vis[RIGHT_EAR]:
                size = max(size, EAR_TO_FACE * float(np.linalg.norm(xy[LEFT_EAR] - xy[RIGHT_EAR])))
            eyes = [j for j in (LEFT_EYE, RIGHT_EYE) if vis[j]]
            if vis[NOSE] and eyes:
                eye_y = float(np.mean(xy[eyes, 1]))
                size = max(size, EYE_NOSE_TO_FACE * abs(float(xy[NOSE, 1]) - eye_y))
            if len(face) >= 2:
                spread = xy[face].max(axis=0) - xy[face].min(axis=0)
                size = max(size, float(spread.max()) * 1.1)
            if vis[LEFT_SHOULDER] and vis[RIGHT_SHOULDER] and size == 0.0:
                size = SHOULDER_TO_FACE * float(np.linalg.norm(xy[LEFT_SHOULDER] - xy[RIGHT_SHOULDER]))
            cx, cy = xy[face].mean(axis=0)
            cy += FACE_CENTER_SHIFT * size
            from_face[i] = size > 0.0
        elif vis[LEFT_SHOULDER] and vis[RIGHT_SHOULDER]:
            size = SHOULDER_TO_FACE * float(np.linalg.norm(xy[LEFT_SHOULDER] - xy[RIGHT_SHOULDER]))
            cx, cy = (xy[LEFT_SHOULDER] + xy[RIGHT_SHOULDER]) / 2.0
            cy -= HEAD_ABOVE_SHOULDERS * size
        else:
            continue
        half = size / 2.0
        boxes[i] = (cx - half, cy - half, cx + half, cy + half)
    return boxes, from_face


def face_visible(
    keypoints: FloatArray,
    bbox_xyxy: FloatArray,
    frame_wh: tuple[int, int],
    rules: FaceRules,
) -> BoolArray:
    """Which faces may be classified: the facial-keypoint rule, the minimum face size and the detection area.

    Args:
        keypoints: `(N, 17, 3)` float32 `(x_px, y_px, conf)`, original-frame pixels.
        bbox_xyxy: `(N, 4)` float32 face boxes from :func:`head_boxes`, original-frame pixels.
        frame_wh: `(width_px, height_px)` of the original frame.
        rules: The thresholds.

    Returns:
        `(N,)` bool.

    Raises:
        ValueError: If the shapes disagree.
    """
    kp = _check_keypoints(keypoints)
    boxes = np.asarray(bbox_xyxy, np.float32)
    if boxes.shape != (len(kp), 4):
        msg = f"bbox_xyxy must have shape ({len(kp)}, 4), got {boxes.shape}"
        raise ValueError(msg)
    vis = kp[:, :, 2] > rules.keypoint_min_score
    ok = vis[:, list(FACE_KEYPOINTS)].sum(axis=1) >= rules.min_face_keypoints
    if rules.require_both_eyes:
        ok &= vis[:, LEFT_EYE] & vis[:, RIGHT_EYE]
    side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    ok &= side >= rules.min_face_px
    w, h = frame_wh
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    mx, my = rules.area_margin * w, rules.area_margin * h
    ok &= (cx >= mx) & (cx <= w - mx) & (cy >= my) & (cy <= h - my)
    return ok & ~nested_faces(boxes, ok, rules.max_nested_overlap)


def nested_faces(bbox_xyxy: FloatArray, candidates: BoolArray, max_overlap: float) -> BoolArray:
    """Faces lying inside a larger candidate face: one head gives one face.

    Args:
        bbox_xyxy: `(N, 4)` float32 face boxes, original-frame pixels.
        candidates: `(N,)` bool, the faces that passed the other rules.
        max_overlap: Intersection over the smaller box's own area above which the smaller face is dropped
            (equal areas: the later row is dropped).

    Returns:
        `(N,)` bool, True for candidate faces to drop.
    """
    boxes = np.asarray(bbox_xyxy, np.float32)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    drop = np.zeros(len(boxes), bool)
    idx = np.flatnonzero(candidates)
    for i in idx:
        for j in idx:
            if i == j or area[i] > area[j] or (area[i] == area[j] and i < j) or area[i] <= 0:
                continue
            iw = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
            ih = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
            if iw > 0 and ih > 0 and iw * ih / area[i] > max_overlap:
                drop[i] = True
                break
    return drop


def crop_box(face_xyxy: FloatArray, margin: float) -> FloatArray:
    """The square region cut for the classifier around face boxes.

    The same function serves annotated face boxes (training) and keypoint head boxes (inference): a square centred
    on the face box whose side is ``max(width, height) * margin``.

    Args:
        face_xyxy: `(N, 4)` float32 face boxes, original-frame pixels.
        margin: Crop side over face side (>= 1).

    Returns:
        `(N, 4)` float32 square boxes, original-frame pixels (may extend past the frame).

    Raises:
        ValueError: If ``margin < 1`` or the boxes are not `(N, 4)`.
    """
    boxes = np.asarray(face_xyxy, np.float32).reshape(-1, 4) if np.size(face_xyxy) else np.zeros((0, 4), np.float32)
    if margin < 1.0:
        msg = f"crop margin must be >= 1, got {margin}"
        raise ValueError(msg)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * margin / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1).astype(np.float32)


def cut_crops(frame_bgr: npt.NDArray[np.uint8], boxes_xyxy: FloatArray, out_px: int) -> npt.NDArray[np.uint8]:
    """Cut square crops from a full-resolution frame and resize them for the classifier.

    Parts of a box outside the frame are filled with grey (114), as the letterbox does. Downscaling uses
    ``INTER_AREA``, upscaling ``INTER_LINEAR``.

    Args:
        frame_bgr: `(H, W, 3)` uint8 BGR frame (OpenCV order), original resolution.
        boxes_xyxy: `(N, 4)` float32 crop boxes from :func:`crop_box`, original-frame pixels.
        out_px: Side of the output crops in pixels.

    Returns:
        `(N, out_px, out_px, 3)` uint8 **RGB** crops.

    Raises:
        ValueError: If the frame is not `(H, W, 3)` uint8 or ``out_px < 1``.
    """
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
        msg = f"frame must be (H, W, 3) uint8, got {frame_bgr.shape} {frame_bgr.dtype}"
        raise ValueError(msg)
    if out_px < 1:
        msg = f"out_px must be >= 1, got {out_px}"
        raise ValueError(msg)
    boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
    out = np.empty((len(boxes), out_px, out_px, 3), np.uint8)
    h, w = frame_bgr.shape[:2]
    for i, (x0, y0, x1, y1) in enumerate(np.round(boxes).astype(np.int64)):
        side = max(int(x1 - x0), int(y1 - y0), 1)
        x1, y1 = x0 + side, y0 + side
        patch = np.full((side, side, 3), 114, np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = frame_bgr[sy0:sy1, sx0:sx1]
        interp = cv2.INTER_AREA if side > out_px else cv2.INTER_LINEAR
        out[i] = cv2.cvtColor(cv2.resize(patch, (out_px, out_px), interpolation=interp), cv2.COLOR_BGR2RGB)
    return out
