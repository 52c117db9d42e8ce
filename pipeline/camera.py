"""Everything one camera keeps between frames: tracker, face rules, votes, windows. Pure; the actors host many.

Per processed frame the host calls, in order: :meth:`CameraPipeline.track` (poses in original-frame pixels ->
track ids, head boxes, which faces to classify and the crop boxes to cut from the full frame), then
:meth:`CameraPipeline.add_scores` with the classifier's scores for those faces, then :meth:`CameraPipeline.collect`
(tracks that ended -> decisions; windows that closed -> statistics). At the end of the stream :meth:`close`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.facegate import SCORE_COLUMNS
from pipeline.headbox import FaceRules, crop_box, face_visible, head_boxes
from pipeline.prevalence import ClassifierValidation
from pipeline.stats import DEFAULT_MIN_COVERAGE, CameraCounters, CameraWindows
from pipeline.tracking import CameraTracker, TrackerParams
from pipeline.voting import TrackLedger, VotingRules
from schemas.messages import CameraState, CameraStats, EndedBy, PersonDecision
from schemas.pose import NO_TRACK, Poses

FloatArray = npt.NDArray[np.float32]

STAGES = ("decode", "letterbox", "tracking", "reid_network", "crop", "voting", "emit")
"""Stages of a camera's own work whose CPU time the host counts in :attr:`CameraPipeline.stage_cpu_s`: decode
(reading and decoding the stream, sampled-out frames included), letterbox (the pose input), tracking (tracker, head
boxes, face rules), reid_network (the re-identification network's calls during tracking: a model call), crop
(cutting the classifier's crops), voting (scores into votes, decisions, windows), emit (encoding the decisions and
statistics and handing them to the sink)."""


@dataclass(frozen=True, slots=True)
class TrackedFrame:
    """One frame after tracking.

    Attributes:
        poses: The frame's people with ``track_id`` set (``NO_TRACK`` while a track initialises).
        head_xyxy: `(N, 4)` float32 head (face) boxes, original-frame pixels.
        classify_rows: `(K,)` int64 rows of ``poses`` whose face is visible and tracked: classify these.
        crop_xyxy: `(K, 4)` float32 square crop boxes for those rows, original-frame pixels.
    """

    poses: Poses
    head_xyxy: FloatArray
    classify_rows: npt.NDArray[np.int64]
    crop_xyxy: FloatArray

    @property
    def classify_track_ids(self) -> list[int]:
        """Track ids of the faces to classify, in ``classify_rows`` order."""
        return [int(t) for t in self.poses.track_id[self.classify_rows]]

    @property
    def classify_face_px(self) -> list[float]:
        """Head-box heights, original-frame pixels, of the faces to classify, in ``classify_rows`` order."""
        heads = self.head_xyxy[self.classify_rows]
        return (heads[:, 3] - heads[:, 1]).astype(float).tolist()


class CameraPipeline:
    """Per-camera state and rules.

    Args:
        camera_id: Camera.
        frame_wh: `(width_px, height_px)` of the camera's frames.
        crop_margin: Crop side over face side; must equal the classifier's training margin.
        tracker: Tracker settings.
        faces: Face-visibility rules.
        voting: Voting rules.
        window_s: Statistics window, seconds.
        validation: The classifier's validation counts, for the corrected mask fraction (None: not corrected).
        district: The camera's district, carried in its statistics records (None: none).
        min_coverage: Coverage (decided / people with a face, 0-1) under which a statistics record is flagged
            ``low_coverage`` (config ``stats.min_coverage``).
        counters: The camera's counters, owned by its loop (:class:`pipeline.camera_loop.CameraRun`) and carried
            in its statistics records (None: new ones).
    """

    def __init__(
        self,
        camera_id: str,
        frame_wh: tuple[int, int],
        crop_margin: float,
        tracker: TrackerParams | None = None,
        faces: FaceRules | None = None,
        voting: VotingRules | None = None,
        window_s: float = 60.0,
        validation: ClassifierValidation | None = None,
        district: str | None = None,
        min_coverage: float = DEFAULT_MIN_COVERAGE,
        counters: CameraCounters | None = None,
    ) -> None:
        self.camera_id = camera_id
        self.frame_wh = frame_wh
        self.crop_margin = crop_margin
        self.faces = faces or FaceRules()
        self.tracker = CameraTracker(frame_wh, tracker)
        self.ledger = TrackLedger(camera_id, voting)
        if self.ledger.rules.splits:  # cutting tracks in two needs their embeddings
            self.ledger.embedding_distance = self.tracker.emit_embeddings()
        self.windows = CameraWindows(camera_id, window_s, validation, district, min_coverage, counters)
        self.counters = self.windows.counters
        self.pose_latency_s: float | None = None  # decode to pose result of the latest frame (metrics), seconds
        # CPU seconds (thread time) per stage of STAGES since the metrics last took them (metrics; the host adds).
        self.stage_cpu_s: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._alive: set[int] = set()

    def track(self, poses: Poses, capture_time_ns: int, frame_bgr: npt.NDArray[np.uint8] | None = None) -> TrackedFrame:
        """Track this frame's people and choose the faces to classify.

        Args:
            poses: The frame's people (``track_id`` ignored), original-frame pixels.
            capture_time_ns: UTC epoch ns of the frame.
            frame_bgr: The full-resolution `(H, W, 3)` uint8 BGR frame, for camera-motion compensation (None: the
                tracker assumes a fixed camera).

        Raises:
            ValueError: If ``poses`` belongs to another camera or frames go backwards.
        """
        if poses.camera_id != self.camera_id:
            msg = f"poses of camera {poses.camera_id!r} sent to camera {self.camera_id!r}"
            raise ValueError(msg)
        track_id = self.tracker.step(poses.frame_idx, poses.keypoints, poses.bbox_xyxy, frame_bgr)
        tracked = poses.with_track_ids(track_id)
        seen = np.flatnonzero(track_id != NO_TRACK)
        embs = self.tracker.last_embeddings
        self.ledger.observe(track_id[seen].tolist(), poses.frame_idx, capture_time_ns,
                            None if embs is None else [embs[i] for i in seen])
        self.counters.frames_processed += 1
        heads, from_face = head_boxes(poses.keypoints, self.faces.keypoint_min_score)
        ok = from_face & face_visible(poses.keypoints, heads, self.frame_wh, self.faces) & (track_id != NO_TRACK)
        rows = np.flatnonzero(ok).astype(np.int64)
        return TrackedFrame(tracked, heads, rows, crop_box(heads[rows], self.crop_margin))

    def add_scores(self, track_ids: list[int], scores: npt.NDArray[np.float32],
                   face_px: list[float] | None = None) -> None:
        """Add the classify stage's scores for the faces chosen by :meth:`track`.

        Args:
            track_ids: The faces' tracks (:attr:`TrackedFrame.classify_track_ids`).
            scores: `(K, 3)` float32 from :meth:`pipeline.facegate.CropScorer.score`: mask score, face score and
                usable-face score. A face score below ``faces.gate_min_score`` or a usable-face score below
                ``faces.usable_min_score`` rejects the crop: no vote, counted in ``faces_rejected``.
            face_px: The faces' head-box heights, original-frame pixels (:attr:`TrackedFrame.classify_face_px`);
                those of accepted crops make each person's ``face_px_median``. None: not known (null medians).

        Raises:
            ValueError: If ``scores`` is not `(len(track_ids), 3)`, ``face_px`` not of ``len(track_ids)``, or a
                track is unknown.
        """
        sc = np.asarray(scores, np.float32)
        if sc.shape != (len(track_ids), SCORE_COLUMNS):
            msg = (f"scores must have shape ({len(track_ids)}, {SCORE_COLUMNS}) (mask, face and usable-face "
                   f"scores), got {sc.shape}")
            raise ValueError(msg)
        accepted = (sc[:, 1] >= self.faces.gate_min_score) & (sc[:, 2] >= self.faces.usable_min_score)
        self.ledger.add_scores(track_ids, sc[:, 0].tolist(), accepted.tolist(),
                               None if face_px is None else [float(h) for h in face_px])
        self.counters.faces_classified += int(accepted.sum())
        self.counters.faces_rejected += int((~accepted).sum())

    def collect(self, now_ns: int) -> tuple[list[PersonDecision], list[CameraStats]]:
        """Decisions for tracks the tracker dropped since the last call, and statistics of closed windows."""
        alive = self.tracker.alive_track_ids()
        ended = self._alive - alive
        self._alive = alive
        decisions = self.ledger.end(ended) if ended else []
        self.counters.open_tracks = len(self.ledger)
        return decisions, self.windows.add(decisions, now_ns)

    def close(self, now_ns: int, ended_by: EndedBy = "end_of_source", state: CameraState = "ended",
              ) -> tuple[list[PersonDecision], list[CameraStats]]:
        """End of stream, shutdown or removal: every live track ends (``ended_by``); the final statistics record,
        whose ``camera_state`` is ``state``."""
        decisions = self.ledger.end(ended_by=ended_by)
        self.counters.open_tracks = 0
        self.counters.camera_state = state
        stats = self.windows.add(decisions, now_ns)
        stats.append(self.windows.close(now_ns))
        return decisions, stats
