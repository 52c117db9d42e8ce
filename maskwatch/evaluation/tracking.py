"""Tracking and counting metrics of person tracks against MOTChallenge ground truth, with py-motmetrics.

py-motmetrics (Heindl, https://github.com/cheind/py-motmetrics, MIT) implements the CLEAR MOT metrics (Bernardin &
Stiefelhagen 2008: MOTA, ID switches) and the identity metrics (Ristani et al. 2016: IDF1). Boxes match when their
intersection over union is at least ``min_iou`` (0.5, the MOTChallenge convention).

For maskwatch the figure that matters most is ``distinct_track_ids`` against ``gt_ids``: every track id becomes one
person in the camera's statistics, so fragmented tracks over-count people.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.mot import read_mot
from pipeline.voting import VotingRules

COUNTED_MIN_FRAMES = VotingRules().min_frames_tracked  # a track counts as a person from this many boxes


@dataclass(frozen=True, slots=True)
class TrackingMetrics:
    """Tracks vs ground truth over the ground truth's frames.

    Attributes:
        mota: Multiple Object Tracking Accuracy, ``1 - (misses + false_positives + id_switches) / gt_boxes``.
        idf1: Identity F1 (share of boxes matched to the right identity, Ristani et al. 2016).
        id_switches: Times a ground-truth person changed the track id matched to it.
        precision: Matched track boxes over all track boxes.
        recall: Matched ground-truth boxes over all ground-truth boxes.
        gt_boxes, track_boxes, misses, false_positives: Box counts over the evaluated frames.
        gt_ids: Distinct ground-truth identities.
        distinct_track_ids: Distinct track ids up to the last ground-truth frame.
        counted_track_ids: Track ids with at least ``min_track_frames`` boxes: the people the camera statistics
            count (``voting.min_frames_tracked`` drops shorter tracks).
        mostly_tracked: Ground-truth identities tracked for at least 80% of their life.
        frames: Frames evaluated (1 to the last ground-truth frame, or those with ground truth).
        min_iou: Box match threshold.
    """

    mota: float
    idf1: float
    id_switches: int
    precision: float
    recall: float
    gt_boxes: int
    track_boxes: int
    misses: int
    false_positives: int
    gt_ids: int
    distinct_track_ids: int
    counted_track_ids: int
    mostly_tracked: int
    frames: int
    min_iou: float
    min_track_frames: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    def format(self) -> str:
        """A short text table."""
        return "\n".join(
            [
                f"frames {self.frames}, ground truth {self.gt_ids} people / {self.gt_boxes} boxes, "
                f"tracks {self.distinct_track_ids} ids / {self.track_boxes} boxes (IoU >= {self.min_iou:g})",
                f"MOTA       {self.mota:.3f}",
                f"IDF1       {self.idf1:.3f}",
                f"ID switches {self.id_switches}",
                f"precision  {self.precision:.3f}",
                f"recall     {self.recall:.3f}",
                f"misses {self.misses}, false positives {self.false_positives}, "
                f"mostly tracked {self.mostly_tracked}/{self.gt_ids}",
                f"distinct track ids {self.distinct_track_ids} vs ground-truth ids {self.gt_ids}",
                f"people counted (tracks >= {self.min_track_frames} frames) {self.counted_track_ids}",
            ]
        )


def evaluate_tracks(
    tracks: npt.NDArray[np.float64], gt: npt.NDArray[np.float64], min_iou: float = 0.5,
    min_track_frames: int = COUNTED_MIN_FRAMES, gt_frames_only: bool = False,
) -> TrackingMetrics:
    """Compare tracks with ground truth, frame by frame.

    Args:
        tracks: `(M, 7)` rows ``frame, id, x, y, w, h, conf`` (:func:`pipeline.mot.read_mot`), pixels.
        gt: `(G, 7)` ground-truth rows, same layout; rows with ``conf == 0`` are ignored (MOTChallenge's
            "not considered" flag).
        min_iou: Minimum intersection over union for a track box to match a ground-truth box.
        min_track_frames: A track counts as a person with at least this many boxes (the default equals
            ``VotingRules.min_frames_tracked``).
        gt_frames_only: Evaluate only the frames that have ground-truth rows, for ground truth labelled every
            n-th frame (``data/labels/people``): track boxes on the frames between are then not false positives.
            An ID switch is then counted between two labelled frames.

    Returns:
        The metrics over frames 1 to the last ground-truth frame (only those with ground truth where
        ``gt_frames_only``); track rows on later frames are ignored. ``frames`` counts the frames evaluated.

    Raises:
        ValueError: If ``gt`` is empty or ``min_iou`` is not in (0, 1].
    """
    import motmetrics as mm

    if not 0 < min_iou <= 1:
        msg = f"min_iou must be in (0, 1], got {min_iou}"
        raise ValueError(msg)
    gt = gt[gt[:, 6] != 0]
    if len(gt) == 0:
        msg = "ground truth has no box to evaluate against"
        raise ValueError(msg)
    last = int(gt[:, 0].max())
    tracks = tracks[tracks[:, 0] <= last]
    ids, boxes_per_id = np.unique(tracks[:, 1], return_counts=True)  # counted over every frame up to the last
    acc = mm.MOTAccumulator(auto_id=False)
    gt_by_frame = {int(f): gt[gt[:, 0] == f] for f in np.unique(gt[:, 0])}
    tr_by_frame = {int(f): tracks[tracks[:, 0] == f] for f in np.unique(tracks[:, 0])}
    empty = np.zeros((0, 7))
    frames = sorted(gt_by_frame) if gt_frames_only else range(1, last + 1)
    for frame in frames:
        g, t = gt_by_frame.get(frame, empty), tr_by_frame.get(frame, empty)
        dist = mm.distances.iou_matrix(g[:, 2:6], t[:, 2:6], max_iou=1.0 - min_iou)
        acc.update(g[:, 1].astype(int).tolist(), t[:, 1].astype(int).tolist(), dist, frameid=frame)
    names = ["mota", "idf1", "num_switches", "precision", "recall", "num_objects", "num_predictions",
             "num_misses", "num_false_positives", "num_unique_objects", "mostly_tracked"]
    row = mm.metrics.create().compute(acc, metrics=names, name="tracks").iloc[0]
    return TrackingMetrics(
        mota=float(row["mota"]),
        idf1=float(row["idf1"]),
        id_switches=int(row["num_switches"]),
        precision=float(row["precision"]),
        recall=float(row["recall"]),
        gt_boxes=int(row["num_objects"]),
        track_boxes=int(row["num_predictions"]),
        misses=int(row["num_misses"]),
        false_positives=int(row["num_false_positives"]),
        gt_ids=int(row["num_unique_objects"]),
        distinct_track_ids=len(ids),
        counted_track_ids=int(np.sum(boxes_per_id >= min_track_frames)),
        mostly_tracked=int(row["mostly_tracked"]),
        frames=len(frames),
        min_iou=min_iou,
        min_track_frames=min_track_frames,
    )


def evaluate_files(
    tracks_path: str | Path, gt_path: str | Path, min_iou: float = 0.5,
    min_track_frames: int = COUNTED_MIN_FRAMES,
) -> TrackingMetrics:
    """:func:`evaluate_tracks` on two MOTChallenge files (errors name the file and line)."""
    return evaluate_tracks(read_mot(tracks_path), read_mot(gt_path), min_iou, min_track_frames)
