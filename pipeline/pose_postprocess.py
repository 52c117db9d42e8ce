"""Decoding the raw output of a YOLO pose model (Ultralytics layout) into people with COCO-17 keypoints.

Output layout (Ultralytics YOLOv8/YOLO11 pose, ONNX export): `(B, 56, A)` float32 over ``A`` anchors, rows
``cx, cy, w, h, person_score, then 17 x (x, y, conf)``, all in model-input pixels, scores already sigmoid-activated.
NMS is not in the graph.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.letterbox import Letterbox, unletterbox_boxes, unletterbox_points
from schemas.coco17 import NUM_KEYPOINTS
from schemas.pose import NO_TRACK, Poses

FloatArray = npt.NDArray[np.float32]
POSE_ROWS = 5 + NUM_KEYPOINTS * 3  # 56
# Minimum person score. 0.15, not the usual 0.25: on PETS09 S2L1 at 1280 px it lifts recall 0.905 -> 0.925 and MOTA
# 0.848 -> 0.856 (bench/tune_tracking.py); the tracker's initialization_delay and voting's min_frames_tracked drop
# the flicker it lets in. The pipeline's default (``pose.conf_threshold``) is this constant.
CONF_THRESHOLD = 0.15
NMS_IOU = 0.45


def decode_poses(
    raw: FloatArray,
    lb: Letterbox,
    camera_id: str,
    frame_idx: int,
    pts_ns: int,
    conf_threshold: float = CONF_THRESHOLD,
    nms_iou: float = NMS_IOU,
) -> Poses:
    """:func:`decode_pose` of one image, as the frame's :class:`~schemas.pose.Poses` (``track_id`` all ``NO_TRACK``).

    Raises:
        ValueError: If ``raw`` is not `(56, A)`.
    """
    score, bbox_xyxy, keypoints = decode_pose(raw, lb, conf_threshold, nms_iou)
    track_id = np.full(len(score), NO_TRACK, np.int64)
    return Poses(camera_id, frame_idx, pts_ns, score, bbox_xyxy, keypoints, track_id)


def decode_pose(
    raw: FloatArray,
    lb: Letterbox,
    conf_threshold: float = CONF_THRESHOLD,
    nms_iou: float = NMS_IOU,
    max_people: int = 300,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Threshold, NMS and un-letterbox one image's raw pose output.

    Args:
        raw: `(56, A)` float32, one image of the model output, model-input pixels.
        lb: The letterbox applied to this image.
        conf_threshold: Minimum person score (0-1).
        nms_iou: IoU above which the lower-scored of two boxes is suppressed (OpenCV ``NMSBoxes``).
        max_people: Keep at most this many people, best first.

    Returns:
        `(score, bbox_xyxy, keypoints)`: `(N,)` float32, `(N, 4)` float32 and `(N, 17, 3)` float32 in
        original-frame pixels, sorted by descending score. Keypoint conf stays in 0-1, never NaN.

    Raises:
        ValueError: If ``raw`` is not `(56, A)`.
    """
    out = np.asarray(raw, np.float32)
    if out.ndim != 2 or out.shape[0] != POSE_ROWS:
        msg = f"raw pose output must have shape ({POSE_ROWS}, A), got {out.shape}"
        raise ValueError(msg)
    cand = out[:, out[4] > conf_threshold].T  # (M, 56)
    if len(cand) == 0:
        return np.zeros(0, np.float32), np.zeros((0, 4), np.float32), np.zeros((0, NUM_KEYPOINTS, 3), np.float32)
    cx, cy, w, h = cand[:, 0], cand[:, 1], cand[:, 2], cand[:, 3]
    xywh = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), cand[:, 4].tolist(), conf_threshold, nms_iou, top_k=max_people)
    keep = np.asarray(keep, np.int64).reshape(-1)
    keep = keep[np.argsort(-cand[keep, 4], kind="stable")]
    sel = cand[keep]
    boxes = np.stack(
        [sel[:, 0] - sel[:, 2] / 2, sel[:, 1] - sel[:, 3] / 2, sel[:, 0] + sel[:, 2] / 2, sel[:, 1] + sel[:, 3] / 2],
        axis=1,
    )
    kp = sel[:, 5:].reshape(-1, NUM_KEYPOINTS, 3).copy()
    kp[:, :, :2] = unletterbox_points(kp[:, :, :2], lb)
    kp[:, :, 2] = np.nan_to_num(np.clip(kp[:, :, 2], 0.0, 1.0))
    return sel[:, 4].astype(np.float32), unletterbox_boxes(boxes, lb), kp.astype(np.float32)
