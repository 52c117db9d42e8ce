"""A person's appearance as a colour histogram of the torso, for re-identification and for finding identity switches.

The embedding needs no weights: a hue-saturation-value histogram of the torso, the quadrilateral spanned by the
shoulder and hip keypoints (COCO-17), as the re-identification demo of norfair
(https://github.com/tryolabs/norfair/tree/master/demos/reid) uses a colour histogram of the person's box. The torso
is chosen over the whole box because it is the part of a person that is most often visible, stays the same colour
as they turn around (unlike face and hair), and holds little background. Two histograms are compared with the
Bhattacharyya distance (0 = the same colours, 1 = none in common), OpenCV's ``HISTCMP_BHATTACHARYYA``.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt

from schemas.coco17 import LEFT_HIP, LEFT_SHOULDER, RIGHT_HIP, RIGHT_SHOULDER

HIST_BINS = (8, 4, 4)
"""Bins of hue, saturation and value: coarse enough that a few hundred torso pixels fill them, fine enough to tell
a blue coat from a grey one."""
EMBEDDING_DIM = int(np.prod(HIST_BINS))
MIN_TORSO_PX = 6
"""A torso narrower or shorter than this (pixels) has no embedding: too few pixels for a histogram."""


def torso_boxes(keypoints: npt.NDArray[np.float32], min_score: float = 0.3) -> npt.NDArray[np.float32]:
    """The torso box of each person, from the shoulder and hip keypoints.

    The box spans the visible shoulders and hips, shrunk by a tenth of its width on each side (arms and background).
    Without a visible hip the torso reaches down one shoulder width below the shoulders.

    Args:
        keypoints: `(N, 17, 3)` float32 `(x_px, y_px, conf)`, COCO-17, original-frame pixels.
        min_score: Keypoint confidence above which a keypoint is used.

    Returns:
        `(N, 4)` float32 ``bbox_xyxy`` in original-frame pixels; all zeros where both shoulders are not visible.
    """
    kp = np.asarray(keypoints, np.float32).reshape(-1, 17, 3)
    out = np.zeros((len(kp), 4), np.float32)
    for i, p in enumerate(kp):
        if p[LEFT_SHOULDER, 2] <= min_score or p[RIGHT_SHOULDER, 2] <= min_score:
            continue
        sh = p[[LEFT_SHOULDER, RIGHT_SHOULDER], :2]
        hips = [p[j, :2] for j in (LEFT_HIP, RIGHT_HIP) if p[j, 2] > min_score]
        width = float(abs(sh[0, 0] - sh[1, 0]))
        below = sh + np.array([0.0, max(width, 1.0)], np.float32)  # one shoulder width down
        pts = np.vstack([sh, *hips]) if hips else np.vstack([sh, below])
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        shrink = 0.1 * (x1 - x0)
        out[i] = (x0 + shrink, y0, x1 - shrink, y1)
    return out


def torso_embeddings(
    frame_bgr: npt.NDArray[np.uint8], keypoints: npt.NDArray[np.float32], min_score: float = 0.3
) -> list[npt.NDArray[np.float32] | None]:
    """Colour-histogram embedding of each person's torso (:func:`torso_boxes`).

    Args:
        frame_bgr: `(H, W, 3)` uint8 BGR full-resolution frame.
        keypoints: `(N, 17, 3)` float32, original-frame pixels.
        min_score: Keypoint confidence above which a keypoint is used.

    Returns:
        One `(EMBEDDING_DIM,)` float32 histogram per person, summing to 1, or None where the torso is not visible
        or smaller than ``MIN_TORSO_PX`` once clipped to the frame.
    """
    h, w = frame_bgr.shape[:2]
    out: list[npt.NDArray[np.float32] | None] = []
    for x0, y0, x1, y1 in torso_boxes(keypoints, min_score):
        a, b = int(max(0.0, x0)), int(max(0.0, y0))
        c, d = int(min(float(w), x1)), int(min(float(h), y1))
        if c - a < MIN_TORSO_PX or d - b < MIN_TORSO_PX:
            out.append(None)
            continue
        hsv = cv2.cvtColor(frame_bgr[b:d, a:c], cv2.COLOR_BGR2HSV)
        hist = cv2.calcHist([hsv], [0, 1, 2], None, list(HIST_BINS), [0, 180, 0, 256, 0, 256]).ravel()
        out.append((hist / max(float(hist.sum()), 1.0)).astype(np.float32))
    return out


def histogram_distance(a: npt.NDArray[np.float32] | None, b: npt.NDArray[np.float32] | None) -> float:
    """Bhattacharyya distance of two embeddings (0-1); 1 when either is missing."""
    if a is None or b is None:
        return 1.0
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


def find_switch(
    embeddings: list[npt.NDArray[np.float32]], min_part: int = 3, min_distance: float = 0.4,
    distance: Callable[[npt.NDArray[np.float32], npt.NDArray[np.float32]], float] | None = None,
) -> int | None:
    """Where a track's appearance changes from one person to another, if it does.

    Each split point ``k`` (both parts at least ``min_part`` embeddings) divides the track's embeddings in two; the
    split whose parts' mean histograms are furthest apart is the candidate. It is a switch when that distance is at
    least ``min_distance`` and larger than twice the mean distance of each part's embeddings to its own mean (two
    groups, each tight). This is a two-cluster split constrained to be contiguous in time (a track passes from one
    person to the next; it does not alternate).

    Args:
        embeddings: The track's embeddings in frame order (frames without one left out): torso histograms, or
            the re-identification network's (:mod:`pipeline.reid`).
        min_part: Fewest embeddings on each side of a switch.
        min_distance: Smallest distance of the two parts' means.
        distance: Distance of two embeddings or means of them, 0-1 (None: :func:`histogram_distance`, for torso
            histograms; :func:`pipeline.reid.direction_distance` for the network's).

    Returns:
        The index of the first embedding of the second person, or None.
    """
    n = len(embeddings)
    if n < 2 * min_part:
        return None
    dist = distance or histogram_distance
    e = np.asarray(embeddings, np.float32)
    csum = np.cumsum(e, axis=0)
    best, best_k = 0.0, None
    for k in range(min_part, n - min_part + 1):
        left, right = csum[k - 1] / k, (csum[-1] - csum[k - 1]) / (n - k)
        d = dist(left, right)
        if d > best:
            best, best_k = d, k
    if best_k is None or best < min_distance:
        return None
    left, right = e[:best_k].mean(axis=0), e[best_k:].mean(axis=0)
    spread = max(np.mean([dist(x, left) for x in e[:best_k]]), np.mean([dist(x, right) for x in e[best_k:]]))
    return best_k if best > 2.0 * spread else None
