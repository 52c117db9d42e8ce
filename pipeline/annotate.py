"""Drawing what the pipeline sees: head boxes, track ids and each track's running votes (the seed post's display)."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.voting import TrackVotes
from schemas.pose import NO_TRACK, Poses

COLORS = {"mask": (60, 180, 60), "no_mask": (40, 40, 220), "undecided": (200, 200, 200)}


def draw_frame(
    frame_bgr: npt.NDArray[np.uint8],
    poses: Poses,
    head_xyxy: npt.NDArray[np.float32],
    classified_rows: npt.NDArray[np.int64],
    votes: dict[int, TrackVotes],
) -> npt.NDArray[np.uint8]:
    """A copy of the frame with head boxes, ``#track_id`` and ``mask:N no:M`` above each tracked person.

    Args:
        frame_bgr: `(H, W, 3)` uint8 BGR frame.
        poses: The frame's tracked people.
        head_xyxy: `(N, 4)` float32 head boxes, original-frame pixels.
        classified_rows: Rows whose face was classified in this frame (drawn with a thicker box).
        votes: Running votes by track id.

    Returns:
        `(H, W, 3)` uint8 BGR annotated copy.
    """
    out = frame_bgr.copy()
    thick = set(classified_rows.tolist())
    for row, (box, tid) in enumerate(zip(head_xyxy, poses.track_id, strict=True)):
        if tid == NO_TRACK or box[2] <= box[0]:
            continue
        tv = votes.get(int(tid))
        label = "undecided" if tv is None else tv.decision
        color = COLORS[label]
        x0, y0, x1, y1 = (round(v) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), color, 2 if row in thick else 1)
        text = f"#{tid}" + ("" if tv is None else f" mask:{tv.votes_mask} no:{tv.votes_no_mask}")
        cv2.putText(out, text, (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    return out
