"""Letterboxing frames to the pose model's input and mapping results back to original-frame pixels.

The letterbox keeps the aspect ratio and pads to a multiple of ``stride`` (32 for YOLO models) rather than to a
square: a 16:9 frame at 640 px becomes 384x640 instead of 640x640 (docs/FACTS.md: 1.7x faster on CPU). Padding is split
evenly and filled with grey 114, as Ultralytics does (https://github.com/ultralytics/ultralytics, ``LetterBox``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
PAD_VALUE = 114


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How one frame was letterboxed.

    Attributes:
        scale: Resize factor applied (input_px / original_px).
        pad_px: `(pad_x, pad_y)` added on the left and top, model-input pixels.
        input_hw: `(height, width)` of the model input.
    """

    scale: float
    pad_px: tuple[float, float]
    input_hw: tuple[int, int]


def default_pose_input_px(frame_wh: tuple[int, int]) -> int:
    """The pose input size for a camera without ``pose_input_px``: 640 up to 640 px frames, else 1280.

    docs/FACTS.md (YOLO11n-pose on CCTV): letterboxing a 1080p or 768x576 view to 640 px loses most small people
    (PETS09: 1.2 of 6.1 people per frame at 640, 5.4 at 1280); a close 640x360 street camera needs no more than 640.
    """
    return 640 if max(frame_wh) <= 640 else 1280


def letterbox_shape(frame_hw: tuple[int, int], input_px: int, stride: int = 32) -> tuple[int, int]:
    """Model-input `(height, width)` for a frame: longest side ``input_px``, each side rounded up to ``stride``.

    Raises:
        ValueError: If a size is not positive or ``input_px`` is not a multiple of ``stride``.
    """
    h, w = frame_hw
    if h <= 0 or w <= 0 or input_px <= 0:
        msg = f"frame size and input_px must be positive, got frame_hw={frame_hw}, input_px={input_px}"
        raise ValueError(msg)
    if input_px % stride:
        msg = f"input_px must be a multiple of {stride}, got {input_px}"
        raise ValueError(msg)
    scale = input_px / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    return (-(-nh // stride) * stride, -(-nw // stride) * stride)


def letterbox(
    frame_bgr: npt.NDArray[np.uint8], input_px: int, stride: int = 32
) -> tuple[npt.NDArray[np.uint8], Letterbox]:
    """Resize keeping the aspect ratio and pad to a stride multiple.

    Args:
        frame_bgr: `(H, W, 3)` uint8 frame.
        input_px: Longest side of the model input, pixels (multiple of ``stride``).
        stride: Model stride.

    Returns:
        The `(h, w, 3)` uint8 model input (same channel order as the frame) and the :class:`Letterbox` used.

    Raises:
        ValueError: If the frame is not `(H, W, 3)` uint8, or as :func:`letterbox_shape`.
    """
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
        msg = f"frame must be (H, W, 3) uint8, got {frame_bgr.shape} {frame_bgr.dtype}"
        raise ValueError(msg)
    h, w = frame_bgr.shape[:2]
    ih, iw = letterbox_shape((h, w), input_px, stride)
    scale = input_px / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(frame_bgr, (nw, nh), interpolation=interp) if (nh, nw) != (h, w) else frame_bgr
    top, left = (ih - nh) // 2, (iw - nw) // 2
    out = cv2.copyMakeBorder(
        resized, top, ih - nh - top, left, iw - nw - left, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
    )
    return out, Letterbox(scale=scale, pad_px=(float(left), float(top)), input_hw=(ih, iw))


def unletterbox_points(points_xy: FloatArray, lb: Letterbox) -> FloatArray:
    """Map `(..., 2)` float32 points from model-input pixels to original-frame pixels.

    Raises:
        ValueError: If the last axis is not 2 or the scale is not positive.
    """
    pts = np.asarray(points_xy, np.float32)
    if pts.shape[-1:] != (2,):
        msg = f"points must have a last axis of 2, got shape {pts.shape}"
        raise ValueError(msg)
    if lb.scale <= 0:
        msg = f"letterbox scale must be > 0, got {lb.scale}"
        raise ValueError(msg)
    return ((pts - np.asarray(lb.pad_px, np.float32)) / np.float32(lb.scale)).astype(np.float32)


def unletterbox_boxes(bbox_xyxy: FloatArray, lb: Letterbox) -> FloatArray:
    """Map `(N, 4)` float32 boxes from model-input pixels to original-frame pixels (`N == 0` gives `(0, 4)`).

    Raises:
        ValueError: If the boxes are not `(N, 4)`.
    """
    boxes = np.asarray(bbox_xyxy, np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        msg = f"bbox_xyxy must have shape (N, 4), got {boxes.shape}"
        raise ValueError(msg)
    return unletterbox_points(boxes.reshape(-1, 2, 2), lb).reshape(-1, 4)
