"""Decoding the raw output of a YOLO pose model (Ultralytics layout) into people with COCO-17 keypoints.

Output layout (Ultralytics YOLOv8/YOLO11 pose, ONNX export): `(B, 56, A)` float32 over ``A`` anchors, rows
``cx, cy, w, h, person_score, then 17 x (x, y, conf)``, all in model-input pixels, scores already sigmoid-activated.
NMS is not in the graph.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.headbox import head_boxes
from pipeline.letterbox import Letterbox, unletterbox_boxes, unletterbox_points
from schemas.coco17 import FACE_KEYPOINTS, LEFT_HIP, LEFT_SHOULDER, NUM_KEYPOINTS, RIGHT_HIP, RIGHT_SHOULDER
from schemas.pose import NO_TRACK, Poses

FloatArray = npt.NDArray[np.float32]
POSE_ROWS = 5 + NUM_KEYPOINTS * 3  # 56
# Minimum person score. 0.15, not the usual 0.25: on PETS09 S2L1 at 1280 px it lifts recall 0.905 -> 0.925 and MOTA
# 0.848 -> 0.856 (bench/tune_tracking.py); the tracker's initialization_delay and voting's min_frames_tracked drop
# the flicker it lets in. The pipeline's default (``pose.conf_threshold``) is this constant.
CONF_THRESHOLD = 0.15
NMS_IOU = 0.45
# A detection is a person only with at least MIN_KEYPOINTS keypoints above PERSON_KEYPOINT_CONF. Fragments with one
# confident keypoint (a shoulder beside a close-up face on single_unmasked, counted there as a second person) go;
# measured with min 2: PETS09 S2L1 MOTA 0.855 -> 0.858, IDF1 0.891 -> 0.892; on the labelled shared videos
# unmatched tracks 18 -> 13, tracks per person 1.13 -> 1.12, people found 102 -> 101, the decisions unchanged.
MIN_KEYPOINTS = 2
PERSON_KEYPOINT_CONF = 0.5
# Object keypoint similarity above which the lower-scored of two people is the same person detected twice (a whole
# body and a head-and-shoulders box on one person, seen on the crowded queues of ../shared/data). See oks_nms.
OKS_NMS = 0.7
# COCO-17 per-keypoint standard deviations of the OKS (COCO keypoint evaluation, cocoapi ``COCOeval.kpt_oks_sigmas``).
COCO_SIGMAS = np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87,
                        0.89, 0.89], np.float32) / 10.0
# One head is one person (oks_nms). A lower-scored person is a second detection of a kept person's head when
# both have head boxes from facial keypoints overlapping by more than NESTED_HEAD_OVERLAP of the smaller one (the
# face gate's own nesting mark, FaceRules.max_nested_overlap), or when its facial keypoints above HEAD_KEYPOINT_CONF
# all lie inside the kept head box grown by HEAD_MARGIN of its side on each side (head boxes end at the ears). Seen
# on single_unmasked: a half-face box beside a close-up face, counted as a second person.
NESTED_HEAD_OVERLAP = 0.5
HEAD_KEYPOINT_CONF = 0.5
HEAD_MARGIN = 0.15
# A person shows a head or a torso: at least BODY_MIN_PART confident (> PERSON_KEYPOINT_CONF) facial keypoints, or
# as many of the shoulders and hips. Seen on single_mask_on_off: raised hands holding a mask before the face make a
# second "person" of two wrists, one shoulder and at most a nose on the mask (looked at frame by frame), counted as a
# second person in two shots. See has_head_or_torso.
BODY_MIN_PART = 2
OKS_MIN_KEYPOINTS = 3  # keypoints seen in both people (conf > OKS_KEYPOINT_CONF) for the similarity to count
OKS_KEYPOINT_CONF = 0.3


def keypoint_similarity(a: FloatArray, b: FloatArray, area_px2: float | npt.NDArray[np.float32]) -> float:
    """Object keypoint similarity (OKS) of two people, over the keypoints both show.

    ``mean_i exp(-d_i^2 / (2 * area * (2 sigma_i)^2))`` over the keypoints with conf above ``OKS_KEYPOINT_CONF`` in
    both, with the COCO keypoint evaluation's per-keypoint sigmas (Lin et al. 2014; cocoapi ``computeOks``), the
    box area standing in for the segment area. 0 when fewer than ``OKS_MIN_KEYPOINTS`` are shared.

    Where both show at least two facial keypoints, the result is the smaller of that and the same similarity over
    the facial keypoints alone: two people are one only if their heads are one. (A person standing right behind
    another, body hidden, gets body keypoints on the front person's body; only the heads tell them apart.)

    Args:
        a: `(17, 3)` float32 `(x_px, y_px, conf)`.
        b: `(17, 3)`, or `(K, 17, 3)` to compare ``a`` with K people at once.
        area_px2: The reference box area, square pixels (a scalar, or `(K,)` with ``b`` of K people).

    Returns:
        The similarity (0-1), or `(K,)` float32 of them when ``b`` holds K people.
    """
    bb = np.asarray(b, np.float32)
    many = bb.ndim == 3
    bb = bb.reshape(-1, NUM_KEYPOINTS, 3)
    area = np.maximum(np.broadcast_to(np.asarray(area_px2, np.float32), (len(bb),)), 1.0)
    both = (a[None, :, 2] > OKS_KEYPOINT_CONF) & (bb[:, :, 2] > OKS_KEYPOINT_CONF)  # (K, 17)
    d2 = ((a[None, :, :2] - bb[:, :, :2]) ** 2).sum(axis=2)
    sim = np.exp(-d2 / (2.0 * area[:, None] * (2.0 * COCO_SIGMAS[None]) ** 2))
    n = both.sum(axis=1)
    out = np.where(n >= OKS_MIN_KEYPOINTS, (sim * both).sum(axis=1) / np.maximum(n, 1), 0.0)
    face = both[:, : len(FACE_KEYPOINTS)]
    nf = face.sum(axis=1)
    face_sim = (sim[:, : len(FACE_KEYPOINTS)] * face).sum(axis=1) / np.maximum(nf, 1)
    out = np.where(nf >= 2, np.minimum(out, face_sim), out).astype(np.float32)
    return out if many else float(out[0])


def oks_nms(bbox_xyxy: FloatArray, keypoints: FloatArray, threshold: float = OKS_NMS) -> npt.NDArray[np.int64]:
    """Keypoint NMS: rows to keep of people sorted by descending score.

    A lower-scored person is the same person detected twice, and is dropped, when either holds against a kept,
    higher-scored person:

    - their keypoint similarity (:func:`keypoint_similarity`, area of the higher-scored box) exceeds ``threshold``.
      Box NMS misses such pairs when one box covers the whole body and the other only head and shoulders (their
      IoU is low). Greedy OKS NMS as in the top-down pose estimators (e.g. HRNet's ``oks_nms``, Sun et al. 2019);
    - they share a head (one head is one person): the kept person has a head box from facial keypoints
      (:func:`pipeline.headbox.head_boxes`), and either the lower-scored one's face-derived head box overlaps it
      by more than ``NESTED_HEAD_OVERLAP`` of the smaller box, or its facial keypoints above
      ``HEAD_KEYPOINT_CONF`` (at least one) all lie inside it, grown by ``HEAD_MARGIN`` of its side. This catches
      a second, shifted detection of a close-up face whose keypoints are too far apart for the similarity.

    Args:
        bbox_xyxy: `(N, 4)` float32 boxes, pixels, best first.
        keypoints: `(N, 17, 3)` float32, the same pixels.
        threshold: OKS above which the lower-scored person is dropped (1 keeps everyone: both rules off).

    Returns:
        `(K,)` int64 indices kept, ascending.
    """
    n = len(bbox_xyxy)
    if threshold >= 1.0 or n < 2:
        return np.arange(n, dtype=np.int64)
    area = (bbox_xyxy[:, 2] - bbox_xyxy[:, 0]) * (bbox_xyxy[:, 3] - bbox_xyxy[:, 1])
    heads, from_face = head_boxes(keypoints, HEAD_KEYPOINT_CONF)
    keep = [0]
    for i in range(1, n):
        if float(keypoint_similarity(keypoints[i], keypoints[keep], area[keep]).max()) > threshold:
            continue
        if _same_head(keypoints[i], heads[i], bool(from_face[i]), heads[keep], from_face[keep]):
            continue
        keep.append(i)
    return np.asarray(keep, np.int64)


def _same_head(kp: FloatArray, head: FloatArray, from_face: bool, heads: FloatArray,
               kept_face: npt.NDArray[np.bool_]) -> bool:
    """Whether a person's head (``kp`` `(17, 3)`, ``head`` `(4,)`) is one of the kept face-derived heads `(K, 4)`."""
    h = heads[kept_face]
    if len(h) == 0:
        return False
    if from_face:
        iw = np.minimum(h[:, 2], head[2]) - np.maximum(h[:, 0], head[0])
        ih = np.minimum(h[:, 3], head[3]) - np.maximum(h[:, 1], head[1])
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        area = (h[:, 2] - h[:, 0]) * (h[:, 3] - h[:, 1])
        smaller = np.maximum(np.minimum(area, (head[2] - head[0]) * (head[3] - head[1])), 1e-6)
        if (inter / smaller > NESTED_HEAD_OVERLAP).any():
            return True
    face = kp[: len(FACE_KEYPOINTS)]
    pts = face[face[:, 2] > HEAD_KEYPOINT_CONF, :2]
    if len(pts) == 0:
        return False
    m = HEAD_MARGIN * (h[:, 2:3] - h[:, 0:1])  # (K, 1)
    inside = ((pts[None, :, 0] >= h[:, None, 0] - m) & (pts[None, :, 0] <= h[:, None, 2] + m)
              & (pts[None, :, 1] >= h[:, None, 1] - m) & (pts[None, :, 1] <= h[:, None, 3] + m))  # (K, P)
    return bool(inside.all(axis=1).any())


def has_head_or_torso(keypoints: FloatArray) -> npt.NDArray[np.bool_]:
    """Which detections show a head or a torso: ``BODY_MIN_PART`` facial keypoints, or as many of the shoulders and
    hips, with conf above ``PERSON_KEYPOINT_CONF``.

    Args:
        keypoints: `(N, 17, 3)` float32 `(x_px, y_px, conf)`.

    Returns:
        `(N,)` bool.
    """
    sure = keypoints[:, :, 2] > PERSON_KEYPOINT_CONF
    torso = sure[:, [LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_HIP, RIGHT_HIP]].sum(axis=1)
    return (sure[:, : len(FACE_KEYPOINTS)].sum(axis=1) >= BODY_MIN_PART) | (torso >= BODY_MIN_PART)


def keep_people(bbox_xyxy: FloatArray, keypoints: FloatArray, oks_threshold: float = OKS_NMS,
                min_keypoints: int = MIN_KEYPOINTS, head_or_torso: bool = True) -> npt.NDArray[np.int64]:
    """Rows of detections (sorted by descending score) that are people, each once.

    A detection needs at least ``min_keypoints`` keypoints with conf above ``PERSON_KEYPOINT_CONF`` and, with
    ``head_or_torso``, a head or a torso (:func:`has_head_or_torso`); the rest go through keypoint NMS
    (:func:`oks_nms`).

    Args:
        bbox_xyxy: `(N, 4)` float32 boxes, pixels, best first.
        keypoints: `(N, 17, 3)` float32, the same pixels.
        oks_threshold: :func:`oks_nms`'s threshold (1: no keypoint NMS).
        min_keypoints: 0 keeps detections without any confident keypoint.
        head_or_torso: False keeps detections of limbs alone.

    Returns:
        `(K,)` int64 indices kept, ascending.
    """
    person = (keypoints[:, :, 2] > PERSON_KEYPOINT_CONF).sum(axis=1) >= min_keypoints
    if head_or_torso:
        person &= has_head_or_torso(keypoints)
    ok = np.flatnonzero(person)
    return ok[oks_nms(bbox_xyxy[ok], keypoints[ok], oks_threshold)]


def decode_poses(
    raw: FloatArray,
    lb: Letterbox,
    camera_id: str,
    frame_idx: int,
    pts_ns: int,
    conf_threshold: float = CONF_THRESHOLD,
    nms_iou: float = NMS_IOU,
    oks_threshold: float = OKS_NMS,
    min_keypoints: int = MIN_KEYPOINTS,
    head_or_torso: bool = True,
) -> Poses:
    """:func:`decode_pose` of one image, as the frame's :class:`~schemas.pose.Poses` (``track_id`` all ``NO_TRACK``).

    Raises:
        ValueError: If ``raw`` is not `(56, A)`.
    """
    score, bbox_xyxy, keypoints = decode_pose(raw, lb, conf_threshold, nms_iou, oks_threshold=oks_threshold,
                                              min_keypoints=min_keypoints, head_or_torso=head_or_torso)
    track_id = np.full(len(score), NO_TRACK, np.int64)
    return Poses(camera_id, frame_idx, pts_ns, score, bbox_xyxy, keypoints, track_id)


def decode_pose(
    raw: FloatArray,
    lb: Letterbox,
    conf_threshold: float = CONF_THRESHOLD,
    nms_iou: float = NMS_IOU,
    max_people: int = 300,
    oks_threshold: float = OKS_NMS,
    min_keypoints: int = MIN_KEYPOINTS,
    head_or_torso: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Threshold, box NMS, un-letterbox and :func:`keep_people` (keypoint NMS) one image's raw pose output.

    Args:
        raw: `(56, A)` float32, one image of the model output, model-input pixels.
        lb: The letterbox applied to this image.
        conf_threshold: Minimum person score (0-1).
        nms_iou: IoU above which the lower-scored of two boxes is suppressed (OpenCV ``NMSBoxes``).
        max_people: Keep at most this many people, best first.
        oks_threshold: Keypoint similarity above which the lower-scored of two people is dropped (1: no keypoint
            NMS).
        min_keypoints: Keypoints with conf above ``PERSON_KEYPOINT_CONF`` a detection needs to be a person.
        head_or_torso: Whether a person needs a head or a torso (:func:`has_head_or_torso`).

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
    boxes = unletterbox_boxes(boxes, lb)
    keep = keep_people(boxes, kp, oks_threshold, min_keypoints, head_or_torso)
    return sel[keep, 4].astype(np.float32), boxes[keep], kp[keep].astype(np.float32)
