"""Person tracks in the MOTChallenge text format, written by ``maskwatch run --tracks-out`` and read back by
``maskwatch eval-tracking``.

One line per tracked person per processed frame: ``frame,id,x,y,w,h,conf,-1,-1,-1`` where ``frame`` is 1-based
(``frame_idx + 1``), ``id`` is the track id, ``x,y`` the top-left corner and ``w,h`` the size of the person box in
pixels of the original frame, ``conf`` the detection score. Coordinates are 1-based like the frames (the
MOTChallenge convention: the top-left pixel is (1, 1); py-motmetrics' reader subtracts 1), so ``x = x1 + 1`` for a
0-based ``bbox_xyxy``. Layout of MOTChallenge 2D MOT 2015 results
(Leal-Taixé et al. 2015, https://motchallenge.net/instructions/): the last three fields are the unused world
coordinates. Ground-truth files of that benchmark use the same first seven fields (``conf`` 0 marks a box to ignore).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from schemas.pose import NO_TRACK, Poses

MOT_COLUMNS = ("frame", "id", "x", "y", "w", "h", "conf", "wx", "wy", "wz")


def mot_rows(poses: Poses) -> npt.NDArray[np.float64]:
    """MOTChallenge rows for the tracked people of one frame (rows with ``track_id == NO_TRACK`` are left out).

    Args:
        poses: One frame's people with ``track_id`` set; ``bbox_xyxy`` in original-frame pixels.

    Returns:
        `(M, 7)` float64 ``frame, id, x, y, w, h, conf``: frame and ``x, y`` 1-based, pixels (what :func:`read_mot`
        returns for the written lines, up to their rounding).
    """
    keep = poses.track_id != NO_TRACK
    box = poses.bbox_xyxy[keep].astype(np.float64)
    return np.column_stack([
        np.full(len(box), poses.frame_idx + 1.0), poses.track_id[keep], box[:, :2] + 1.0, box[:, 2:] - box[:, :2],
        poses.score[keep],
    ]).reshape(-1, 7)


def mot_lines(poses: Poses) -> list[str]:
    """:func:`mot_rows` as ``frame,id,x,y,w,h,conf,-1,-1,-1`` lines (no newline), pixels with 2 decimals."""
    rows = mot_rows(poses)
    return [f"{int(f)},{int(t)},{x:.2f},{y:.2f},{w:.2f},{h:.2f},{c:.4f},-1,-1,-1" for f, t, x, y, w, h, c in rows]


def write_mot_lines(fh: IO[str], lines: Iterable[str]) -> None:
    """Append lines (from :func:`mot_lines`) to an open text file."""
    for line in lines:
        fh.write(line + "\n")


def read_mot(path: str | Path) -> npt.NDArray[np.float64]:
    """Read a MOTChallenge tracks or ground-truth file.

    Args:
        path: Comma-separated text, one box per line, at least the 7 fields ``frame,id,x,y,w,h,conf``
            (further fields are ignored); blank lines are skipped.

    Returns:
        `(M, 7)` float64 array: frame (1-based), id, x, y, w, h (pixels), conf, in file order.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: Naming the file and line, if a line has fewer than 7 fields, a field that is not a number,
            a frame below 1 or a negative width/height.
    """
    path = Path(path)
    rows: list[list[float]] = []
    with path.open() as fh:
        for n, line in enumerate(fh, 1):
            text = line.strip()
            if not text:
                continue
            fields = text.split(",")
            if len(fields) < 7:
                msg = (f"{path}:{n}: expected at least 7 comma-separated fields "
                       f"(frame,id,x,y,w,h,conf), got {len(fields)}: {text!r}")
                raise ValueError(msg)
            try:
                row = [float(f) for f in fields[:7]]
            except ValueError:
                msg = f"{path}:{n}: expected numbers in frame,id,x,y,w,h,conf, got {text!r}"
                raise ValueError(msg) from None
            if row[0] < 1 or row[0] != int(row[0]):
                msg = f"{path}:{n}: frame must be an integer >= 1 (MOTChallenge frames are 1-based), got {fields[0]}"
                raise ValueError(msg)
            if row[4] < 0 or row[5] < 0:
                msg = f"{path}:{n}: width and height must be >= 0 px, got w={fields[4]} h={fields[5]}"
                raise ValueError(msg)
            rows.append(row)
    return np.asarray(rows, np.float64).reshape(-1, 7)
