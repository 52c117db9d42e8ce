"""One norfair tracker per camera, on COCO-17 keypoints with a Kalman filter.

norfair (Tryolabs, https://github.com/tryolabs/norfair) matches detections to tracks by a distance function. The
default, ``keypoints_voting_height``, is norfair's keypoint-voting scheme (``create_keypoints_voting_distance``:
distance ``1 / (1 + number of keypoints that match)``, a keypoint matching when both its scores exceed
``detection_threshold`` and it lies within a radius of the track's estimate) with the radius scaled to the
*person*: ``keypoint_height_frac`` x the detection's box height. One camera sees people from 40 px to 400 px tall
(near and far), and a radius fixed to the frame is either too loose for the far ones (identity swaps in a crowd) or
too tight for the near ones (fragmented tracks). Measured with ``bench/tune_tracking.py`` on PETS09 S2L1 and on the
shared street videos (see docs/validation.md). ``keypoints_voting`` (radius = ``keypoint_dist_frac`` x the frame's
longest side) and ``mean_euclidean`` remain available.

A moving camera (handheld, PTZ panning) shifts everyone in the frame at once, faster than the match radius allows,
and tracks break or jump to a neighbour. :class:`CameraMotion` estimates the camera's motion with norfair's
``MotionEstimator`` (sparse optical flow of background corners, a homography per frame; people masked out) and the
tracker then matches in the scene's coordinates (norfair's ``coord_transformations``). ``camera_motion="auto"``
estimates on every frame but compensates only once the camera is seen to move.

Edited footage (news, a PTZ preset jump) cuts from one view to another: the people before and after a cut are not
the same, but a tracker would match them. :class:`ShotCuts` finds cuts, and the tracker then ends every track and
starts afresh (track ids keep increasing).

A person who is occluded, turns away or is missed for a while comes back as a new track. Re-identification
(norfair's ReID) gives them their old id when the new track's person crop looks like a track lost nearby: the
embedding is :mod:`pipeline.reid`'s network (cosine distance), computed only for the new track and the lost tracks
it is compared with (:class:`PersonCrop`), so it costs little. A track whose person left through the frame's edge is
not a candidate: on PETS09 S2L1 people leave and others enter at the same edges, and re-identifying them merged two
people (IDF1 0.892 -> 0.867); with the edge rule IDF1 rose to 0.926 (docs/validation.md, "Re-identification").

The opposite failure, a track that passes to the neighbour who steps into its person's place, is what
:class:`AppearanceGate` stops: the same network checks a track's match after a miss and every ``appearance_every``
frames, and refuses one that no longer looks like the track (``appearance_gate``, on by default).

Camera-motion compensation is off by default: on the two hand-held crowd videos of ``../shared/data``
(``queue_hk_masked``, ``queue_dark_masks``), where people fill most of the frame, ``auto`` counted more people than
``off`` (docs/validation.md, "Camera motion").
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import cv2
import numpy as np
import numpy.typing as npt
from norfair import Detection, Tracker
from norfair.camera_motion import CoordinatesTransformation, MotionEstimator
from norfair.distances import create_keypoints_voting_distance

from pipeline.appearance import histogram_distance, torso_embeddings
from pipeline.reid import REID_MODEL, ReidNet, cosine_distance, direction_distance, load_reid_net, person_crop
from schemas.pose import NO_TRACK

FloatArray = npt.NDArray[np.float32]


class _NorfairNotices(logging.Filter):
    """norfair logs root-level warnings for every tracker with a non-vectorised distance (the keypoint-voting
    distance is scalar by design: per-keypoint thresholds) and for every frame whose camera motion it cannot
    estimate (too few background corners: a plain wall, a dark frame; the last estimate is kept). Both are expected
    here, so they are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("You are using a scalar distance function",
                                               "The homography couldn't be computed"))


logging.getLogger().addFilter(_NorfairNotices())
logger = logging.getLogger(__name__)
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class TrackerParams:
    """norfair tracker settings, thresholds relative to the frame.

    Attributes:
        distance: ``keypoints_voting_height`` (keypoint voting, radius scaled to the person's box height),
            ``keypoints_voting`` (norfair ``create_keypoints_voting_distance``, radius scaled to the frame) or
            ``mean_euclidean``.
        keypoint_height_frac: keypoints_voting_height: keypoint match radius as a fraction of the person's box height.
        keypoint_dist_frac: keypoints_voting: keypoint match radius as a fraction of the longest frame side.
        euclidean_dist_frac: mean_euclidean: distance threshold as a fraction of the longest frame side.
        distance_threshold: keypoints_voting*: max distance ``1 / (1 + matched keypoints)`` (0.75 = 1 keypoint).
        detection_threshold: Keypoints below this confidence are ignored by the tracker.
        initialization_delay: Frames a track must match before it gets an id (filters flicker).
        hit_counter_max: Frames a track survives without a match (in source frames: ``period`` scales it).
        camera_motion: ``auto`` (compensate once the camera is seen to move), ``on`` or ``off`` (the default).
        motion_px: Side of the downscaled grey frame the camera motion is estimated on (longest side, pixels).
        moving_frac: ``auto``: the camera moves once the frame centre has moved more than this fraction of the
            frame's longest side since the estimator's reference frame.
        cut_distance: A shot cut is a Bhattacharyya distance of consecutive frames' hue-saturation histograms above
            this (0-1; 1 turns cut detection off) ...
        cut_ratio: ... and above this many times the median distance of the previous frames (see :class:`ShotCuts`).
        reid_hit_counter_max: Re-identification (norfair's ReID): a track that lost its person is kept this many more
            frames after ``hit_counter_max`` (in source frames, like it), and a new track whose person matches a lost
            or coasting track (``reid_*`` below) takes its id back. While kept, the track is not yet decided. 0 turns
            re-identification off. Default 10: chosen on PETS09 S2L1 (``bench/tune_tracking.py --grid reid-net``:
            IDF1 0.892 without, 0.926 with; 1 frame gave 0.901, 10 gave 0.926, 30 0.922, 60 0.892), and checked on the
            labelled shared videos (``bench/decisions.py``; docs/validation.md).
        reid_model: The re-identification network's OpenVINO IR (:mod:`pipeline.reid`; default: the bundled
            ``person-reidentification-retail-0288``). None: torso colour histograms instead (:mod:`pipeline.appearance`;
            on PETS09 they lowered IDF1 at every setting tried).
        reid_distance_threshold: Largest embedding distance that re-identifies: cosine distance (0-1) of the
            network's embeddings, or the Bhattacharyya distance of torso histograms without ``reid_model``. Default
            0.35 (0.3-0.4 gave the same IDF1 on PETS09; one person 10-60 frames apart: median 0.28; two people
            near each other: median 0.84).
        reid_max_move_frac: ... and the new track must start within this fraction of the frame's longest side of
            where the lost one was last seen ...
        reid_exit_margin_frac: ... and the lost track's last box must not reach within this fraction of the frame's
            longest side of its edge: that person left the view, and a person entering there is someone else. On
            PETS09 S2L1 0.02 and 0 gave IDF1 0.926 and 0.927; without the rule re-identification lowered IDF1 (0.867
            at 1 frame, threshold 0.3). 0 missed a man who left crowd_toward_camera with his box 0.8 px from the edge:
            a partial detection of someone else took his id (and voted for him) 100 frames later.
        appearance_gate: A detection whose appearance is further than this from a track's is not matched to it,
            however close its keypoints (a track passing to a neighbour): the cosine distance (0-1) of the
            re-identification network's embedding to the track's last ``GATE_REFERENCES`` checked ones, checked when
            the track missed a frame and at least every ``appearance_every`` frames (:class:`AppearanceGate`). 1, or
            no ``reid_model``, turns the gate off. Default 0.75: with ``voting.min_frames_tracked`` 4, pooled
            tracks per person on the 13 labelled videos 1.15 -> 1.13 and people found 107 -> 109, decisions the
            same (``bench/revote.py --grid counted --set tracking.appearance_gate=0.75``; held out by video 1.14 ->
            1.12). It costs the network's calls: a check per matched person every ``appearance_every`` frames.
            (It was off for a while: tests/test_multinode.py failed with it on, and then without it too; the cause
            was that test's spinning inference threads.) Measured at 0.75: on PETS09 S2L1
            (``bench/tune_tracking.py --frames --grid gate-net``) 0.6-0.8 kept MOTA 0.855-0.858 and IDF1 0.925-0.927,
            0.5 lowered IDF1 to 0.867-0.888; between 0.6 and 0.75 on the labelled videos (``bench/decisions.py``), 0.6
            split people who turned around (office_2: 2 tracks for 1) and 0.75 took crowd_toward_camera from 1.45 to
            1.32 tracks per person, the other videos as without (docs/validation.md). A gate on torso histograms lowered
            IDF1 on PETS09 at every setting tried (0.727-0.888) and was removed.
        appearance_every: With ``reid_model``: a track's match is checked against its appearance at least every this
            many source frames (and always after a missed frame); each check costs one network call per person.

    The defaults were tuned with ``bench/tune_tracking.py`` on PETS09 S2L1 (MOTA 0.858, IDF1 0.927, 19 ids for 19
    people) and checked on the close street videos, where a radius tied to the frame fragments tracks of near
    people. ``camera_motion`` is off by default: on the two hand-held crowd videos ``auto`` over-counted people (40
    vs 32, 14 vs 11; docs/validation.md); on fixed cameras it changes nothing.

    Raises:
        ValueError: If a setting is out of range.
    """

    distance: Literal["keypoints_voting_height", "keypoints_voting", "mean_euclidean"] = "keypoints_voting_height"
    keypoint_height_frac: float = 0.25
    keypoint_dist_frac: float = 1 / 20
    euclidean_dist_frac: float = 1 / 10
    distance_threshold: float = 0.75
    detection_threshold: float = 0.3
    initialization_delay: int = 3
    hit_counter_max: int = 60
    camera_motion: Literal["auto", "on", "off"] = "off"
    motion_px: int = 320
    moving_frac: float = 0.02
    cut_distance: float = 0.25
    cut_ratio: float = 3.0
    reid_hit_counter_max: int = 10
    reid_model: Path | None = REID_MODEL
    reid_distance_threshold: float = 0.35
    reid_max_move_frac: float = 0.25
    reid_exit_margin_frac: float = 0.02
    appearance_gate: float = 0.75
    appearance_every: int = 10

    def __post_init__(self) -> None:
        ranges = {  # name: (low, high, low inclusive)
            "keypoint_height_frac": (0.0, 2.0, False), "keypoint_dist_frac": (0.0, 1.0, False),
            "euclidean_dist_frac": (0.0, 1.0, False), "distance_threshold": (0.0, float("inf"), False),
            "detection_threshold": (0.0, 1.0, True), "initialization_delay": (0, float("inf"), True),
            "hit_counter_max": (1, float("inf"), True), "motion_px": (64, 1920, True),
            "moving_frac": (0.0, 1.0, False), "cut_distance": (0.0, 1.0, False), "cut_ratio": (1.0, float("inf"), True),
            "reid_hit_counter_max": (0, float("inf"), True), "reid_distance_threshold": (0.0, 1.0, False),
            "reid_max_move_frac": (0.0, 2.0, False), "reid_exit_margin_frac": (0.0, 0.5, True),
            "appearance_gate": (0.0, 1.0, False), "appearance_every": (1, float("inf"), True),
        }
        for name, (low, high, closed) in ranges.items():
            v = getattr(self, name)
            if not ((v >= low) if closed else (v > low)) or v > high:
                bracket = "[" if closed else "("
                msg = f"tracking {name} must be in {bracket}{low}, {high}], got {v}"
                raise ValueError(msg)


def _recent_detections(obj: Any) -> list[Any]:
    """A norfair TrackedObject's last detection and the past detections it keeps."""
    return [obj.last_detection, *getattr(obj, "past_detections", [])]


def _embeddings_of(obj: Any) -> list[Any]:
    """A norfair TrackedObject's recent torso embeddings (:func:`_recent_detections` that have one)."""
    return [d.embedding for d in _recent_detections(obj) if d.embedding is not None]


def appearance_distance(detection: Any, tracked_object: Any) -> float:
    """Smallest torso-histogram distance of a detection to a track's recent detections (1 when either has none)."""
    if detection.embedding is None:
        return 1.0
    embs = _embeddings_of(tracked_object)
    return min((histogram_distance(detection.embedding, e) for e in embs), default=1.0)


class PersonCrop:
    """A detection's person crop, kept with it while norfair holds the detection; its re-identification embedding
    is computed on first use (:meth:`embedding`), so only the crops ReID compares cost a network call.

    Args:
        frame_bgr: `(H, W, 3)` uint8 BGR frame.
        bbox_xyxy: `(4,)` the person's box, original-frame pixels (clipped to the frame).
        net: The embedding network.
    """

    MAX_HEIGHT_PX = 256  # a taller crop is kept downscaled to the network's input height

    __slots__ = ("_crop", "_embedding", "_net")

    def __init__(self, frame_bgr: npt.NDArray[np.uint8], bbox_xyxy: FloatArray, net: ReidNet) -> None:
        crop = person_crop(frame_bgr, bbox_xyxy)
        if crop.shape[0] > self.MAX_HEIGHT_PX:
            scale = self.MAX_HEIGHT_PX / crop.shape[0]
            # Down to half the size, bilinear is within a grey level or two of area averaging and 5x faster on
            # such crops (OpenCV's area resize at a fractional scale took 0.31 ms a crop, bilinear 0.06: issue 26);
            # a larger downscale averages, as bilinear would alias.
            crop = cv2.resize(crop, (max(2, round(crop.shape[1] * scale)), self.MAX_HEIGHT_PX),
                              interpolation=cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA)
        self._crop: npt.NDArray[np.uint8] | None = crop.copy()
        self._embedding: FloatArray | None = None
        self._net = net

    def has_embedding(self) -> bool:
        """Whether :meth:`embedding` was computed already (it costs nothing now)."""
        return self._embedding is not None

    def embedding(self) -> FloatArray:
        """`(256,)` float32 unit-length embedding (:meth:`pipeline.reid.ReidNet.embed`)."""
        if self._embedding is None:
            assert self._crop is not None
            h, w = self._crop.shape[:2]
            self._embedding = self._net.embed(self._crop, np.array([[0, 0, w, h]], np.float32))[0]
            self._crop = None  # the embedding is all that is needed from now on
        return self._embedding


class DetectionInfo(NamedTuple):
    """What the tracker keeps in a norfair ``Detection.data``."""

    height_px: float  # the person's height (the keypoint match radius scales with it)
    bbox_xyxy: tuple[float, float, float, float]  # original-frame pixels
    crop: PersonCrop | None  # for the re-identification network (None: no network, or no frame)
    frame_idx: int = -1  # the frame it was detected in

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox_xyxy
        return (x0 + x1) / 2.0, (y0 + y1) / 2.0


def _touches_edge(bbox_xyxy: tuple[float, float, float, float], frame_wh: tuple[int, int], margin_px: float) -> bool:
    x0, y0, x1, y1 = bbox_xyxy
    return x0 <= margin_px or y0 <= margin_px or x1 >= frame_wh[0] - margin_px or y1 >= frame_wh[1] - margin_px


def reid_distance(max_move_px: float, frame_wh: tuple[int, int] = (0, 0), exit_margin_px: float = -1.0,
                  ) -> Callable[[Any, Any], float]:
    """norfair ReID distance: a new (initialising) track against a track that lost its person (or is coasting).

    1 (no match) when the old track's last box touches the frame's edge (within ``exit_margin_px``; negative: never)
    or the new track starts more than ``max_move_px`` from where the old one was last detected. Otherwise the
    smallest distance of the new track's detection to the old track's recent ones (its last detection and the past
    detections norfair keeps): cosine distance of :mod:`pipeline.reid` embeddings where the detections carry a
    :class:`PersonCrop`, else the torso histograms' Bhattacharyya distance.
    """

    def distance(new: Any, old: Any) -> float:
        a: DetectionInfo = new.last_detection.data
        b: DetectionInfo = old.last_detection.data
        if exit_margin_px >= 0 and _touches_edge(b.bbox_xyxy, frame_wh, exit_margin_px):
            return 1.0
        (ax, ay), (bx, by) = a.centre, b.centre
        if float(np.hypot(ax - bx, ay - by)) > max_move_px:
            return 1.0
        if a.crop is None:
            return appearance_distance(new.last_detection, old)
        e = a.crop.embedding()
        crops = [d.data.crop for d in _recent_detections(old) if d.data.crop is not None]
        return min((cosine_distance(e, c.embedding()) for c in crops), default=1.0)

    return distance


def person_scaled_voting_distance(
    height_frac: float, detection_threshold: float, gate: AppearanceGate | None = None,
) -> Callable[[Any, Any], float]:
    """norfair's keypoint-voting distance with the match radius scaled to the person.

    Same rule as ``norfair.distances.create_keypoints_voting_distance`` (distance ``1 / (1 + matches)``; a keypoint
    matches when both the detection's and the track's last scores exceed ``detection_threshold`` and it lies
    closer than the radius to the track's estimate), but the radius is ``height_frac`` x the detection's person
    height in pixels (``Detection.data.height_px``), so near and far people in one frame are matched alike. A
    detection that would match but that ``gate`` refuses (:meth:`AppearanceGate.refuses`) does not (distance 1).
    """

    def distance(detection: Any, tracked_object: Any) -> float:
        radius = height_frac * max(detection.data.height_px, 1.0)
        d = np.linalg.norm(detection.points - tracked_object.estimate, axis=1)
        ok = (d < radius) & (detection.scores > detection_threshold)
        ok &= tracked_object.last_detection.scores > detection_threshold
        matches = int(np.count_nonzero(ok))
        if matches and gate is not None and gate.refuses(detection, tracked_object):
            return 1.0
        return 1.0 / (1.0 + matches)

    return distance


class AppearanceGate:
    """Keeps a track from passing to another person: the re-identification network checks a track's matches.

    A track's match is checked when the track missed the frame before (it is taking a person back) and at least
    every ``every`` source frames: the detection's embedding (:mod:`pipeline.reid`) must lie within
    ``max_distance`` (cosine) of one of the track's last ``GATE_REFERENCES`` checked embeddings, else the match is
    refused; the track coasts, and the other person starts a track of their own. A track's first match is not
    checked: it gives the first reference. Embeddings are computed only for the checks, so the cost is about one
    network call per person every ``every`` frames, plus one per match after a miss.

    Args:
        max_distance: Largest cosine distance (0-1) of a checked match to the track's references.
        every: Source frames between two checks of a track that keeps matching.
    """

    GATE_REFERENCES = 3

    def __init__(self, max_distance: float, every: int) -> None:
        self.max_distance, self.every = max_distance, every
        self.frame_idx, self.period = 0, 1  # the frame being tracked and its gap to the one before
        self._refs: dict[int, list[FloatArray]] = {}  # per track (norfair's initializing_id): checked embeddings
        self._checked: dict[int, int] = {}  # per track: frame_idx of its last check

    def reset(self) -> None:
        """A new tracker (shot cut): forget every track."""
        self._refs.clear()
        self._checked.clear()

    def _due(self, obj: Any) -> bool:
        missed = self.frame_idx - obj.last_detection.data.frame_idx > self.period
        return missed or self.frame_idx - self._checked.get(obj.initializing_id, -self.every) >= self.every

    def refuses(self, detection: Any, obj: Any) -> bool:
        """Whether a candidate match of ``detection`` to the norfair TrackedObject ``obj`` is refused."""
        crop: PersonCrop | None = detection.data.crop
        refs = self._refs.get(obj.initializing_id)
        if crop is None or not refs or not self._due(obj):
            return False
        e = crop.embedding()
        return min(cosine_distance(e, r) for r in refs) > self.max_distance

    def remember(self, objs: list[Any]) -> None:
        """After the tracker's update: the tracks matched in this frame whose check was due keep the embedding of
        their detection as a reference; tracks the tracker no longer holds are forgotten."""
        held = set()
        for obj in objs:
            key = obj.initializing_id
            held.add(key)
            det = obj.last_detection
            if det.data.frame_idx != self.frame_idx or det.data.crop is None:
                continue
            # A due check computed the embedding (refuses); a track's first match gives its first reference.
            if key not in self._refs or det.data.crop.has_embedding():
                refs = self._refs.setdefault(key, [])
                refs.append(det.data.crop.embedding())
                del refs[:-self.GATE_REFERENCES]
                self._checked[key] = self.frame_idx
        for key in self._refs.keys() - held:
            del self._refs[key]
            self._checked.pop(key, None)


class _ScaledTransformation(CoordinatesTransformation):
    """A transformation estimated on a frame downscaled by ``scale``, applied to full-resolution pixels."""

    def __init__(self, inner: CoordinatesTransformation, scale: float) -> None:
        self._inner, self._scale = inner, scale

    def abs_to_rel(self, points: np.ndarray) -> np.ndarray:
        return self._inner.abs_to_rel(points * self._scale) / self._scale

    def rel_to_abs(self, points: np.ndarray) -> np.ndarray:
        return self._inner.rel_to_abs(points * self._scale) / self._scale


class CameraMotion:
    """Camera-motion estimate of one camera, for norfair's ``coord_transformations``.

    norfair's ``MotionEstimator`` (default homography getter) runs on the frame in grey, downscaled to
    ``motion_px`` on its longest side, with the people's boxes masked out so that only the background counts.

    Args:
        frame_wh: `(width_px, height_px)` of the camera's frames.
        mode: ``auto``, ``on`` or ``off`` (see :class:`TrackerParams`).
        motion_px: Longest side of the frame the motion is estimated on.
        moving_frac: ``auto`` switch point, a fraction of the longest side.
    """

    def __init__(self, frame_wh: tuple[int, int], mode: str = "auto", motion_px: int = 320,
                 moving_frac: float = 0.02) -> None:
        if mode not in ("auto", "on", "off"):
            msg = f"camera_motion must be 'auto', 'on' or 'off', got {mode!r}"
            raise ValueError(msg)
        w, h = frame_wh
        self.mode = mode
        self.scale = min(1.0, motion_px / max(w, h))
        self._small_wh = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
        self._moving_px = moving_frac * max(self._small_wh)
        self.moving = mode == "on"
        self._est = MotionEstimator()
        self._last: CoordinatesTransformation | None = None

    def update(self, frame_bgr: npt.NDArray[np.uint8], person_xyxy: FloatArray) -> CoordinatesTransformation | None:
        """This frame's transformation (current-frame pixels <-> scene), or None while the camera is not moving.

        Args:
            frame_bgr: `(H, W, 3)` uint8 BGR full-resolution frame.
            person_xyxy: `(N, 4)` float32 person boxes in original-frame pixels (masked out of the estimate).
        """
        if self.mode == "off":
            return None
        small = cv2.resize(frame_bgr, self._small_wh, interpolation=cv2.INTER_AREA)
        mask = np.ones(small.shape[:2], np.uint8)
        for x0, y0, x1, y1 in np.round(np.asarray(person_xyxy, np.float32).reshape(-1, 4) * self.scale).astype(int):
            mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = 0
        t = self._est.update(small, mask)
        if not self.moving:
            if t is None:
                return None
            centre = np.array([[self._small_wh[0] / 2, self._small_wh[1] / 2]], np.float64)
            if float(np.linalg.norm(t.rel_to_abs(centre) - centre)) <= self._moving_px:
                return None
            # From now on compensate, from a fresh reference: this frame's coordinates are the scene's, so the
            # tracks built so far (in frame coordinates) stay where they are.
            self.moving = True
            logger.info("camera moves (frame centre moved %.0f px at %.2f scale): motion compensation on",
                        float(np.linalg.norm(t.rel_to_abs(centre) - centre)), self.scale)
            self._est = MotionEstimator()
            t = self._est.update(small, mask)
        if t is not None:
            self._last = _ScaledTransformation(t, self.scale)
        return self._last


class ShotCuts:
    """Finds shot cuts in a camera's frames.

    Each frame is reduced to a 16x16 hue-saturation histogram of a 160x90 copy. A cut is a frame whose Bhattacharyya
    distance to the previous frame exceeds ``min_distance`` and ``ratio`` times the median of the previous
    ``window`` distances. The second test is the adaptive rule of PySceneDetect's ``AdaptiveDetector`` (B. Castellano,
    https://github.com/Breakthrough/PySceneDetect); it keeps a camera that pans or zooms steadily, whose every
    frame differs from the last, from cutting. That package needs the GUI ``opencv-python``, which clashes with the
    headless wheel here, so the rule is reimplemented with OpenCV's own histogram functions.

    Measured on the shared videos at 10 fps: the largest distance on a fixed or smoothly moving camera was 0.21
    (queue_dark_masks, which pans); the cuts of queue_hk_masked and single_mask_on_off were 0.31-0.77.

    Args:
        min_distance: Absolute floor of a cut's distance (0-1).
        ratio: A cut's distance over the median of the recent ones.
        window: How many recent distances the median covers.
    """

    def __init__(self, min_distance: float = 0.25, ratio: float = 3.0, window: int = 10) -> None:
        if not 0.0 < min_distance <= 1.0 or ratio < 1.0 or window < 1:
            msg = (f"shot cuts need 0 < min_distance <= 1, ratio >= 1, window >= 1, "
                   f"got {min_distance}, {ratio}, {window}")
            raise ValueError(msg)
        self.min_distance, self.ratio = min_distance, ratio
        self._recent: deque[float] = deque(maxlen=window)
        self._prev: npt.NDArray[np.float32] | None = None

    def update(self, frame_bgr: npt.NDArray[np.uint8]) -> bool:
        """True when ``frame_bgr`` (`(H, W, 3)` uint8 BGR) starts a new shot."""
        hsv = cv2.cvtColor(cv2.resize(frame_bgr, (160, 90), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2HSV)
        hist = cv2.calcHist([hsv], [0, 1], None, [16, 16], [0, 180, 0, 256])
        cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1)
        prev, self._prev = self._prev, hist
        if prev is None:
            return False
        d = float(cv2.compareHist(prev, hist, cv2.HISTCMP_BHATTACHARYYA))
        cut = d > self.min_distance and (not self._recent or d > self.ratio * float(np.median(self._recent)))
        if cut:
            self._recent.clear()
        else:
            self._recent.append(d)
        return cut


def gated_by_network(p: TrackerParams) -> bool:
    """Whether a tracker of these settings checks its matches with the re-identification network
    (:class:`AppearanceGate`), which then also gives the embeddings that cut tracks in two
    (:meth:`CameraTracker.emit_embeddings`)."""
    return p.reid_model is not None and p.appearance_gate < 1.0


def embedding_distance(p: TrackerParams) -> Callable[[FloatArray, FloatArray], float]:
    """How the embeddings that a tracker of these settings gives for cutting tracks in two
    (:meth:`CameraTracker.emit_embeddings`) are compared, means of them too: the network's with
    :func:`pipeline.reid.direction_distance` where :func:`gated_by_network`, else torso colour histograms with
    :func:`pipeline.appearance.histogram_distance`."""
    return direction_distance if gated_by_network(p) else histogram_distance


class CameraTracker:
    """Tracks the people of one camera across frames.

    ``track_id`` values are norfair's per-tracker ids (1, 2, ...), unique within this camera's run; norfair's
    ``global_id`` counts per process and is never used.

    Args:
        frame_wh: `(width_px, height_px)` of the camera's frames.
        params: Tracker settings.
    """

    def __init__(self, frame_wh: tuple[int, int], params: TrackerParams | None = None) -> None:
        p = params or TrackerParams()
        side = float(max(frame_wh))
        use_net = p.reid_model is not None and (p.reid_hit_counter_max > 0 or p.appearance_gate < 1.0)
        self.reid_net = load_reid_net(p.reid_model) if use_net else None
        self.gate = AppearanceGate(p.appearance_gate, p.appearance_every) if gated_by_network(p) else None
        if p.distance == "keypoints_voting_height":
            distance = person_scaled_voting_distance(p.keypoint_height_frac, p.detection_threshold, self.gate)
            threshold = p.distance_threshold
        elif p.distance == "keypoints_voting":
            distance = create_keypoints_voting_distance(p.keypoint_dist_frac * side, p.detection_threshold)
            threshold = p.distance_threshold
        else:
            distance, threshold = "mean_euclidean", p.euclidean_dist_frac * side
        self._params, self._frame_wh = p, frame_wh
        self._new_tracker = lambda: Tracker(
            distance_function=distance,
            distance_threshold=threshold,
            detection_threshold=p.detection_threshold,
            initialization_delay=p.initialization_delay,
            hit_counter_max=p.hit_counter_max,
            reid_distance_function=(reid_distance(p.reid_max_move_frac * side, frame_wh, p.reid_exit_margin_frac * side)
                                    if p.reid_hit_counter_max else None),
            reid_distance_threshold=p.reid_distance_threshold,
            reid_hit_counter_max=p.reid_hit_counter_max or None,
        )
        # Torso embeddings are computed when re-identification without a network uses them, or when the host asks
        # for embeddings without the gate (emit_embeddings).
        self.embed = self.reid_net is None and p.reid_hit_counter_max > 0
        self._net_embeddings = False  # emit_embeddings with the gate: the network's embeddings of the last step
        # Embedding per row of the last step (None in a row: none computed); None when none are computed.
        self.last_embeddings: list[FloatArray | None] | None = None
        self._tracker = self._new_tracker()
        self._id_offset = 0  # ids of trackers before the last cut, so that ids keep increasing
        self._last_frame_idx: int | None = None
        self.motion = CameraMotion(frame_wh, p.camera_motion, p.motion_px, p.moving_frac)
        self.cuts = ShotCuts(p.cut_distance, p.cut_ratio) if p.cut_distance < 1.0 else None
        self.cuts_seen = 0
        self._network_cpu_s = 0.0  # CPU seconds of the re-identification network's calls in step(), not yet taken

    def emit_embeddings(self) -> Callable[[FloatArray, FloatArray], float]:
        """From now on, :attr:`last_embeddings` holds an embedding per row of each step, for cutting tracks that
        followed two people (:class:`pipeline.voting.TrackLedger`); returns the distance that compares them (and
        means of them). With the appearance gate these are the re-identification network's embeddings it computed
        (a matched track's at least every ``appearance_every`` frames; no extra network call) and
        :func:`pipeline.reid.direction_distance`; else torso colour histograms of every person and
        :func:`pipeline.appearance.histogram_distance` (:func:`embedding_distance`)."""
        if self.gate is not None:
            self._net_embeddings = True
        else:
            self.embed = True
        return embedding_distance(self._params)

    def take_network_cpu_s(self) -> float:
        """CPU seconds (thread time) that :meth:`step` spent in the re-identification network's calls since the last
        call: a model call, which the camera loop counts apart from tracking."""
        taken, self._network_cpu_s = self._network_cpu_s, 0.0
        return taken

    def _cut(self) -> None:
        """A new shot: every track ends; the next ids continue after the highest one given so far."""
        self._id_offset += self._tracker.total_object_count  # norfair: ids given by this tracker, 1..count
        self._tracker = self._new_tracker()
        if self.gate is not None:
            self.gate.reset()
        p = self._params
        self.motion = CameraMotion(self._frame_wh, p.camera_motion, p.motion_px, p.moving_frac)
        self.cuts_seen += 1

    def step(
        self,
        frame_idx: int,
        keypoints: FloatArray,
        bbox_xyxy: FloatArray | None = None,
        frame_bgr: npt.NDArray[np.uint8] | None = None,
    ) -> IntArray:
        """Update with this frame's people; call it for every processed frame, also with no people.

        Args:
            frame_idx: Frame index in the camera's stream; a gap since the last call (sampling or drops) is
                passed to norfair as ``period``.
            keypoints: `(N, 17, 3)` float32 `(x_px, y_px, conf)`, original-frame pixels, conf 0 for missing.
            bbox_xyxy: `(N, 4)` float32 person boxes, original-frame pixels: their heights scale the
                ``keypoints_voting_height`` radius (None: the extent of each person's keypoints).
            frame_bgr: `(H, W, 3)` uint8 BGR full-resolution frame, for camera-motion compensation (None: none).

        Returns:
            `(N,)` int64 track id per row, ``NO_TRACK`` (-1) for people not (yet) confirmed as a track.

        Raises:
            ValueError: If ``frame_idx`` does not increase or ``keypoints`` is not `(N, 17, 3)`.
        """
        kp = np.asarray(keypoints, np.float32)
        if kp.ndim != 3 or kp.shape[1:] != (17, 3):
            msg = f"keypoints must have shape (N, 17, 3), got {kp.shape}"
            raise ValueError(msg)
        if self._last_frame_idx is not None and frame_idx <= self._last_frame_idx:
            msg = f"frame_idx must increase, got {frame_idx} after {self._last_frame_idx}"
            raise ValueError(msg)
        period = 1 if self._last_frame_idx is None else frame_idx - self._last_frame_idx
        self._last_frame_idx = frame_idx
        net_cpu0 = self.reid_net.thread_cpu_s() if self.reid_net is not None else 0.0
        dets, boxes = self._detections(frame_idx, kp, bbox_xyxy, frame_bgr)
        transform = None
        if frame_bgr is not None:
            if self.cuts is not None and self.cuts.update(frame_bgr):
                self._cut()
            if self.motion.mode != "off":
                transform = self.motion.update(frame_bgr, boxes)
        if self.gate is not None:
            self.gate.frame_idx, self.gate.period = frame_idx, period
        tracked = self._tracker.update(detections=dets, period=period, coord_transformations=transform)
        if self.gate is not None:
            self.gate.remember(self._tracker.tracked_objects)
        if self._net_embeddings:
            self.last_embeddings = [d.data.crop.embedding() if d.data.crop is not None and d.data.crop.has_embedding()
                                    else None for d in dets]
        if self.reid_net is not None:
            self._network_cpu_s += self.reid_net.thread_cpu_s() - net_cpu0
        row_of = {id(d): i for i, d in enumerate(dets)}  # coasting tracks keep an older detection
        track_id = np.full(len(dets), NO_TRACK, np.int64)
        for obj in tracked:
            row = row_of.get(id(obj.last_detection))
            if row is not None and obj.id is not None:
                track_id[row] = obj.id + self._id_offset
        return track_id

    def _detections(self, frame_idx: int, kp: FloatArray, bbox_xyxy: FloatArray | None,
                    frame_bgr: npt.NDArray[np.uint8] | None) -> tuple[list[Detection], FloatArray]:
        """norfair detections of this frame's people, and their `(N, 4)` boxes (:meth:`step`'s arguments)."""
        if bbox_xyxy is not None:
            boxes = np.asarray(bbox_xyxy, np.float32).reshape(-1, 4)
            height = boxes[:, 3] - boxes[:, 1]
        else:
            boxes = np.concatenate([kp[:, :, :2].min(axis=1), kp[:, :, :2].max(axis=1)], axis=1)
            height = np.array([np.ptp(k[:, :2], axis=0).max() for k in kp], np.float32)
        embs = torso_embeddings(frame_bgr, kp) if frame_bgr is not None and self.embed else None
        self.last_embeddings = embs
        net = self.reid_net if frame_bgr is not None else None
        dets = [Detection(points=k[:, :2].copy(), scores=k[:, 2].copy(), embedding=None if embs is None else embs[i],
                          data=DetectionInfo(float(h), tuple(map(float, box)),
                                             None if net is None else PersonCrop(frame_bgr, box, net), frame_idx))
                for i, (k, h, box) in enumerate(zip(kp, height, boxes, strict=True))]
        return dets, boxes

    def alive_track_ids(self) -> set[int]:
        """Ids of confirmed tracks the tracker still holds (matched now, coasting, or kept for re-identification:
        such a track may take its person back, so it is not decided yet)."""
        return {o.id + self._id_offset for o in self._tracker.tracked_objects
                if o.id is not None and (o.hit_counter_is_positive
                                         or (self._params.reid_hit_counter_max and o.reid_hit_counter_is_positive))}
