"""Kafka message formats: per-person decisions and per-camera window statistics.

Values are UTF-8 JSON objects carrying ``schema_version``; keys are the UTF-8 ``camera_id``. One JSON Schema file per
topic lives in ``schemas/json/`` and every encoded message is validated against it in the tests. Delivery is at
least once: consumers de-duplicate decisions by ``decision_id`` and keep the latest statistics per camera
(the statistics topic is meant to be compacted).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

SCHEMA_DIR = Path(__file__).with_name("json")
Decision = Literal["mask", "no_mask", "undecided"]
EndedBy = Literal["tracker", "end_of_source", "shutdown"]
CameraState = Literal["connecting", "running", "reconnecting", "restarting", "ended", "removed"]

T = TypeVar("T", bound="_Message")


class _Message:
    schema_version: ClassVar[int]
    schema_file: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, **asdict(self)}  # type: ignore[call-overload]

    def encode(self) -> bytes:
        """UTF-8 JSON bytes, keys sorted (stable output)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls: type[T], value: bytes | str | dict[str, Any]) -> T:
        """Parse a message value.

        Raises:
            ValueError: If the value is not JSON, carries another ``schema_version``, or misses/adds fields.
        """
        try:
            obj = value if isinstance(value, dict) else json.loads(value)
        except json.JSONDecodeError as exc:
            msg = f"{cls.__name__}: value is not JSON ({exc})"
            raise ValueError(msg) from exc
        obj = dict(obj)
        version = obj.pop("schema_version", None)
        if version != cls.schema_version:
            msg = f"{cls.__name__}: expected schema_version {cls.schema_version}, got {version!r}"
            raise ValueError(msg)
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        if set(obj) != names:
            msg = (
                f"{cls.__name__}: fields differ, missing {sorted(names - set(obj))}, "
                f"unexpected {sorted(set(obj) - names)}"
            )
            raise ValueError(msg)
        return cls(**obj)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) of this message's value."""
        return json.loads((SCHEMA_DIR / cls.schema_file).read_text())


@dataclass(frozen=True, slots=True)
class PersonDecision(_Message):
    """One person (track) of one camera, emitted once when the track ends.

    Attributes:
        decision_id: ``"{camera_id}/{track_id}/{first_seen_ns}"``, stable across re-deliveries.
        camera_id: Camera.
        track_id: Track id, unique within the camera's run.
        first_seen_ns, last_seen_ns: Capture time (UTC epoch ns) of the first and last frame of the track.
        first_frame_idx, last_frame_idx: Frame indices of the first and last frame of the track.
        frames_tracked: Frames in which the track matched a detection.
        faces_classified: Frames in which the face was visible, passed the face gate and was classified.
        faces_rejected: Frames in which the face passed the keypoint rules but not the face gate (not a usable
            face: a back of a head, a blur); they cast no vote.
        votes_mask, votes_no_mask: Votes after thresholding the classifier scores.
        mean_mask_score: Mean classifier score over the classified faces (null if none).
        decision: ``mask``, ``no_mask`` or ``undecided`` (fewer than ``min_votes`` votes, a tie, votes that
            disagree: the majority holds less than ``min_agreement`` of them, or crops mostly rejected by the face
            gate: more than ``max_rejected_share``).
        ended_by: Why the track ended: ``tracker`` (the person left the view, or a shot cut), ``end_of_source``,
            or ``shutdown`` (SIGTERM/SIGINT while the person was in view: decided on what was seen so far).
        face_px_median: Median height, in original-frame pixels, of the head (face) boxes of the crops that passed
            the face gate (the ``faces_classified`` ones); null when none did.
    """

    schema_version: ClassVar[int] = 4
    schema_file: ClassVar[str] = "decision.v4.json"

    decision_id: str
    camera_id: str
    track_id: int
    first_seen_ns: int
    last_seen_ns: int
    first_frame_idx: int
    last_frame_idx: int
    frames_tracked: int
    faces_classified: int
    faces_rejected: int
    votes_mask: int
    votes_no_mask: int
    mean_mask_score: float | None
    decision: Decision
    ended_by: EndedBy = "tracker"
    face_px_median: float | None = None

    @staticmethod
    def upgrade(obj: dict[str, Any]) -> dict[str, Any]:
        """A parsed value of version 3 as this version: no face height known (``face_px_median`` null). Readers
        apply it; other values are returned unchanged."""
        if obj.get("schema_version") == 3:
            obj = {**obj, "schema_version": 4, "face_px_median": None}
        return obj


@dataclass(frozen=True, slots=True)
class CameraStats(_Message):
    """Statistics of one camera over one window aligned to UTC wall-clock boundaries, plus running totals.

    A person counts in the window in which their track ended. ``mask_fraction`` = masked / (masked + unmasked);
    its interval is the Wilson score interval at 95% (Wilson 1927); both are null when nobody was decided.
    ``corrected_mask_fraction`` corrects it for the classifier's errors (Rogan & Gladen 1978) with a 95% interval
    that also carries the uncertainty of the classifier's sensitivity and specificity (Lang & Reiczigel 2014,
    :mod:`pipeline.prevalence`); null when nobody was decided or the classifier's validation counts are unknown.

    Attributes:
        camera_id: Camera.
        window_start_ns, window_end_ns: UTC epoch ns, ``[start, end)``.
        final: True for the last record of a stream (the window may be partial).
        people, masked, unmasked, undecided: Counts of people whose tracks ended in the window.
        mask_fraction, mask_fraction_low, mask_fraction_high: Estimate and Wilson 95% interval for the window.
        corrected_mask_fraction, corrected_mask_fraction_low, corrected_mask_fraction_high: Rogan–Gladen
            estimate and Lang–Reiczigel 95% interval for the window.
        total_people, total_masked, total_unmasked, total_undecided: Since the camera's run started.
        total_mask_fraction, total_mask_fraction_low, total_mask_fraction_high: Same over the totals.
        total_corrected_mask_fraction, total_corrected_mask_fraction_low, total_corrected_mask_fraction_high: Same.
        classifier_sensitivity, classifier_specificity: The validation counts used, ``"correct/n"`` (null: none).
        classifier_validation_source: Where those counts come from and what they were measured on (the model
            file's metadata, or the config); null when the fraction is not corrected.
        frames_processed, frames_dropped: Since start; dropped = live frames discarded under backpressure.
        faces_classified, faces_rejected: Since start: face crops that passed the face gate and were classified,
            and crops the gate rejected (no vote).
        camera_state: ``connecting`` (no frame yet), ``running``, ``reconnecting`` (stream dropped or stalled),
            ``restarting`` (the camera's loop failed; it restarts with backoff), ``ended`` (its source ended or the
            run shut down) or ``removed`` (taken out of the running fleet's configuration; its final record).
        camera_restarts: Times the camera's loop failed and restarted since the run started.
        last_frame_idx: The last processed ``frame_idx`` (-1: none yet).
        open_tracks: Tracks followed when the record was made, not yet decided.
        tracks_lost: Since start: tracks that were open in a camera process that died, so never decided. Counted
            from ``open_tracks`` of the camera's last record before the crash; a track that began after that
            record is not in it.
        district: The camera's district (config ``cameras[].district``); null when it has none.
        people_with_face, decided, coverage, face_px_median, low_coverage: How much of the window's people the
            fraction rests on (:func:`pipeline.stats.people_fields`). ``people_with_face``: people whose face the
            face rules saw at least once (``faces_classified + faces_rejected`` >= 1: a crop was cut, whether or
            not the face gate passed it). ``decided``: people decided mask
            or no mask. ``coverage`` = decided / people_with_face (0-1; null when nobody had a face).
            ``face_px_median``: median head-box height, original-frame pixels, of the crops that passed the gate,
            each person's crops counted at that person's median (null: none). ``low_coverage``: coverage under
            ``stats.min_coverage``, or people seen but none with a face: the fraction rests on too few of them.
        total_people_with_face, total_decided, total_coverage, total_face_px_median, total_low_coverage: The same
            since the camera's run started.
    """

    schema_version: ClassVar[int] = 8
    schema_file: ClassVar[str] = "camera_stats.v8.json"

    camera_id: str
    window_start_ns: int
    window_end_ns: int
    final: bool
    people: int
    masked: int
    unmasked: int
    undecided: int
    mask_fraction: float | None
    mask_fraction_low: float | None
    mask_fraction_high: float | None
    corrected_mask_fraction: float | None
    corrected_mask_fraction_low: float | None
    corrected_mask_fraction_high: float | None
    total_people: int
    total_masked: int
    total_unmasked: int
    total_undecided: int
    total_mask_fraction: float | None
    total_mask_fraction_low: float | None
    total_mask_fraction_high: float | None
    total_corrected_mask_fraction: float | None
    total_corrected_mask_fraction_low: float | None
    total_corrected_mask_fraction_high: float | None
    classifier_sensitivity: str | None
    classifier_specificity: str | None
    classifier_validation_source: str | None
    frames_processed: int
    frames_dropped: int
    faces_classified: int
    faces_rejected: int
    camera_state: CameraState = "running"
    camera_restarts: int = 0
    last_frame_idx: int = -1
    open_tracks: int = 0
    tracks_lost: int = 0
    district: str | None = None
    people_with_face: int = 0
    decided: int = 0
    coverage: float | None = None
    face_px_median: float | None = None
    low_coverage: bool = False
    total_people_with_face: int = 0
    total_decided: int = 0
    total_coverage: float | None = None
    total_face_px_median: float | None = None
    total_low_coverage: bool = False

    @property
    def progress(self) -> tuple[int, int, int, bool]:
        """Orders one camera's records: a later window, then more people counted and frames processed, then final.
        A re-delivered older record sorts before the camera's newer ones (readers keep the greatest)."""
        return self.window_start_ns, self.total_people, self.frames_processed, self.final

    @staticmethod
    def upgrade(obj: dict[str, Any]) -> dict[str, Any]:
        """A parsed value of an earlier version (4-7) as this version: no tracks open or lost are known (4), no
        district (4, 5), no coverage (4-6: :func:`_coverage_unknown`); version 7 lacked only the ``removed`` state.
        Readers apply it so that a camera's totals survive a maskwatch upgrade; other values are returned
        unchanged."""
        if obj.get("schema_version") == 4:
            obj = {**obj, "schema_version": 5, "open_tracks": 0, "tracks_lost": 0}
        if obj.get("schema_version") == 5:
            obj = {**obj, "schema_version": 6, "district": None}
        if obj.get("schema_version") == 6:
            obj = {**obj, "schema_version": 7, **_coverage_unknown(obj)}
        if obj.get("schema_version") == 7:
            obj = {**obj, "schema_version": 8}
        return obj


@dataclass(frozen=True, slots=True)
class DistrictStats(_Message):
    """Statistics of one district (the cameras whose records name it) over one UTC-aligned window, plus totals.

    Made by :class:`pipeline.district.DistrictRollup` from the cameras' :class:`CameraStats` records: counts are
    sums over the cameras, and the fractions pool the district's people (masked / decided over all its cameras, not
    an average of camera fractions). The corrected fraction is null unless every camera counted was corrected with
    the same validation figures.

    Attributes:
        district: District name (config ``cameras[].district``).
        window_start_ns, window_end_ns: UTC epoch ns, ``[start, end)``: the cameras' own window.
        revision: 0 when the window is first published; each later publication of the same window (a camera's
            record came in late) adds 1. Consumers keep the highest revision per ``(district, window_start_ns)``.
        cameras: Cameras with a record for this window.
        cameras_total: Cameras known in the district; ``cameras_running``: those whose latest record says
            ``running``.
        people, masked, unmasked, undecided: People whose tracks ended in the window, summed over its cameras.
        mask_fraction, mask_fraction_low, mask_fraction_high: masked / (masked + unmasked) and its Wilson 95%
            interval.
        corrected_mask_fraction, corrected_mask_fraction_low, corrected_mask_fraction_high: Rogan–Gladen estimate
            and Lang–Reiczigel 95% interval on the pooled counts.
        total_*: The same over the cameras' running totals (each camera's latest record).
        classifier_sensitivity, classifier_specificity, classifier_validation_source: The validation figures
            that corrected the totals (null when cameras differ or none were corrected).
        frames_processed, frames_dropped, tracks_lost: Sums of the cameras' latest running counts.
        people_with_face, decided, coverage, face_px_median, low_coverage: As in :class:`CameraStats`, pooled over
            the cameras: people with a face and people decided are summed, ``coverage`` is their ratio (0-1; null
            when nobody had a face), ``low_coverage`` compares it with ``stats.min_coverage`` (or flags people seen
            but none with a face). ``face_px_median`` (original-frame pixels) is the median of the cameras'
            ``face_px_median``, each camera weighted by its ``people_with_face``: the crops' own heights are not in
            the camera records, so the median of the pooled crops cannot be computed.
        total_people_with_face, total_decided, total_coverage, total_face_px_median, total_low_coverage: The same
            over the cameras' running totals.
    """

    schema_version: ClassVar[int] = 2
    schema_file: ClassVar[str] = "district_stats.v2.json"

    district: str
    window_start_ns: int
    window_end_ns: int
    revision: int
    cameras: int
    cameras_total: int
    cameras_running: int
    people: int
    masked: int
    unmasked: int
    undecided: int
    mask_fraction: float | None
    mask_fraction_low: float | None
    mask_fraction_high: float | None
    corrected_mask_fraction: float | None
    corrected_mask_fraction_low: float | None
    corrected_mask_fraction_high: float | None
    total_people: int
    total_masked: int
    total_unmasked: int
    total_undecided: int
    total_mask_fraction: float | None
    total_mask_fraction_low: float | None
    total_mask_fraction_high: float | None
    total_corrected_mask_fraction: float | None
    total_corrected_mask_fraction_low: float | None
    total_corrected_mask_fraction_high: float | None
    classifier_sensitivity: str | None
    classifier_specificity: str | None
    classifier_validation_source: str | None
    frames_processed: int
    frames_dropped: int
    tracks_lost: int
    people_with_face: int = 0
    decided: int = 0
    coverage: float | None = None
    face_px_median: float | None = None
    low_coverage: bool = False
    total_people_with_face: int = 0
    total_decided: int = 0
    total_coverage: float | None = None
    total_face_px_median: float | None = None
    total_low_coverage: bool = False

    @property
    def progress(self) -> tuple[int, int]:
        """Orders one district's records: a later window, then a later revision of it (readers keep the greatest)."""
        return self.window_start_ns, self.revision

    @staticmethod
    def upgrade(obj: dict[str, Any]) -> dict[str, Any]:
        """A parsed value of version 1 as this version, no coverage known (:func:`_coverage_unknown`). Readers apply
        it; other values are returned unchanged."""
        if obj.get("schema_version") == 1:
            obj = {**obj, "schema_version": 2, **_coverage_unknown(obj)}
        return obj


def _coverage_unknown(obj: dict[str, Any]) -> dict[str, Any]:
    """The coverage fields of a statistics value from before they existed, window and totals: ``decided`` is
    masked + unmasked (known); people with a face 0 (not known), coverage and face height null, ``low_coverage``
    false (not known, so not flagged)."""
    out: dict[str, Any] = {}
    for p in ("", "total_"):
        out |= {f"{p}people_with_face": 0, f"{p}decided": obj.get(f"{p}masked", 0) + obj.get(f"{p}unmasked", 0),
                f"{p}coverage": None, f"{p}face_px_median": None, f"{p}low_coverage": False}
    return out


TOPIC_MESSAGES: dict[str, type[_Message]] = {
    "decisions": PersonDecision, "camera_stats": CameraStats, "district_stats": DistrictStats,
}
