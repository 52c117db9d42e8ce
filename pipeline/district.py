"""Per-district statistics from the cameras' statistics records: a stream roll-up, pure (no Kafka, no Ray).

Cameras publish one :class:`~schemas.messages.CameraStats` record per UTC-aligned window, each carrying the camera's
``district``. A district's window pools the records of its cameras for that window: counts are summed and the mask
fraction is computed on the pooled people (masked / decided over the district), with the Wilson interval and, when
every camera was corrected with the same validation figures, the Rogan–Gladen estimate with the Lang–Reiczigel
interval on the pooled counts (:mod:`pipeline.stats`, :mod:`pipeline.prevalence`). An average of camera fractions
would weigh a camera that saw 2 people like one that saw 200.

Windows are closed by event time, as stream processors do (a watermark with allowed lateness, as in Apache Beam,
Flink or bytewax): a district's window is published once some camera of the district has published a window that
ends ``lateness_s`` after it (or every camera has ended, or :meth:`DistrictRollup.tick` finds it older than
``lateness_s`` by wall clock). A camera record that arrives for a window already published re-publishes it with
``revision`` + 1, so nothing a camera counted is left out of its district.

Records are idempotent: a camera's record for a window is keyed by ``(camera_id, window_start_ns, people counted
before the window)``, so a re-delivered duplicate (Kafka is at least once) replaces itself, while two runs of a
camera that both wrote the same window (a graceful stop and a restart inside one window) both count. The district's
running totals are the sums of each camera's latest totals, which survive restarts (:meth:`CameraWindows.restore`),
so they never go down and are exact after any replay.

Coverage pools the same way: people with a face and people decided are summed over the cameras, and ``coverage`` is
their ratio. The median face height cannot be pooled exactly (the records carry the cameras' medians, not their
crops' heights): a district's ``face_px_median`` is the median of its cameras' medians, each camera weighted by its
people with a face. A camera record upgraded from before schema version 7 does not know its people with a face; its
decided people stand for them (a lower bound), so coverage never exceeds 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.prevalence import ClassifierValidation
from pipeline.stats import DEFAULT_MIN_COVERAGE, PeopleCounts, people_fields
from schemas.messages import CameraStats, DistrictStats

KEEP_WINDOWS = 1440
"""Published windows a district remembers for late records (a day of 60-s windows); older late records still count
in the totals, not in their window."""


def _validation_of(records: Iterable[CameraStats]) -> ClassifierValidation | None:
    """The validation figures every record was corrected with, or None when they differ or one was not corrected."""
    keys = {(r.classifier_sensitivity, r.classifier_specificity, r.classifier_validation_source) for r in records}
    if len(keys) != 1:
        return None
    se, sp, source = keys.pop()
    if se is None or sp is None:
        return None
    return ClassifierValidation.parse(se, sp, source)


def _pooled(records: list[CameraStats], total: bool) -> PeopleCounts:
    """The cameras' window counts (or running totals) summed; their face-height medians pooled as a median weighted
    by each camera's people with a face."""
    p = "total_" if total else ""
    out = PeopleCounts()
    for r in records:
        out.masked += getattr(r, f"{p}masked")
        out.unmasked += getattr(r, f"{p}unmasked")
        out.undecided += getattr(r, f"{p}undecided")
        # A record upgraded from before v7 has no people with a face: its decided people are a lower bound.
        with_face = max(getattr(r, f"{p}people_with_face"), getattr(r, f"{p}decided"))
        out.with_face += with_face
        if (px := getattr(r, f"{p}face_px_median")) is not None:
            out.face_px.add(px, with_face)
    return out


@dataclass
class _District:
    name: str
    latest: dict[str, CameraStats] = field(default_factory=dict)  # camera_id -> latest record
    # window_start_ns -> {(camera_id, people before the window): record}
    windows: dict[int, dict[tuple[str, int], CameraStats]] = field(default_factory=dict)
    published: dict[int, int] = field(default_factory=dict)  # window_start_ns -> revision published
    published_until_ns: int = -1  # windows starting at or before this were published (by an earlier run too)
    max_end_ns: int = 0


class DistrictRollup:
    """Pools camera statistics records into district statistics records.

    Args:
        lateness_s: How long after a window's end (event time) records of slower cameras are waited for before the
            window is first published. Late records after that re-publish it (``revision`` + 1).
        min_coverage: Pooled coverage (decided / people with a face, 0-1) under which a district record is flagged
            ``low_coverage`` (config ``stats.min_coverage``).

    Raises:
        ValueError: If ``lateness_s`` is negative or ``min_coverage`` is outside [0, 1].
    """

    def __init__(self, lateness_s: float = 10.0, min_coverage: float = DEFAULT_MIN_COVERAGE) -> None:
        if lateness_s < 0:
            msg = f"lateness_s must be >= 0, got {lateness_s}"
            raise ValueError(msg)
        if not 0.0 <= min_coverage <= 1.0:
            msg = f"min_coverage must be in [0, 1], got {min_coverage}"
            raise ValueError(msg)
        self.lateness_ns = int(lateness_s * 1e9)
        self.min_coverage = min_coverage
        self._districts: dict[str, _District] = {}
        self._latest: dict[str, CameraStats] = {}  # camera_id -> its latest record
        self._district_of: dict[str, str] = {}  # camera_id -> district of its latest record

    @property
    def districts(self) -> list[str]:
        """Names of the districts seen so far, sorted."""
        return sorted(self._districts)

    def resume(self, last: DistrictStats) -> None:
        """After a restart: ``last`` is the district's latest published record (from the compacted topic). Windows up
        to it are not published again when the cameras' records are replayed (a replay may no longer hold every
        camera's record of them); a camera record that comes late for one of them counts in the totals only."""
        d = self._districts.setdefault(last.district, _District(last.district))
        d.published_until_ns = max(d.published_until_ns, last.window_start_ns)

    def add(self, rec: CameraStats) -> list[DistrictStats]:
        """Take one camera record; returns the district records to publish now (possibly none).

        A record without a district takes its camera out of the district it was in (the camera was moved); a camera
        counts in the district of its latest record.
        """
        out: list[DistrictStats] = []
        latest = self._latest.get(rec.camera_id)
        if latest is None or rec.progress > latest.progress:  # a re-delivered older record moves nothing
            self._latest[rec.camera_id] = rec
            prev = self._district_of.pop(rec.camera_id, None)
            if prev is not None and prev != rec.district:
                self._districts[prev].latest.pop(rec.camera_id, None)
            if rec.district is not None:
                self._district_of[rec.camera_id] = rec.district
                self._districts.setdefault(rec.district, _District(rec.district)).latest[rec.camera_id] = rec
        if rec.district is None:
            return out
        d = self._districts.setdefault(rec.district, _District(rec.district))
        d.max_end_ns = max(d.max_end_ns, rec.window_end_ns)
        start = rec.window_start_ns
        if start <= d.published_until_ns and start not in d.published:
            return out  # published by an earlier run of the roll-up; forgotten since
        key = (rec.camera_id, rec.total_people - rec.people)
        window = d.windows.setdefault(start, {})
        changed = window.get(key) != rec
        window[key] = rec
        if start in d.published and changed:
            d.published[start] += 1
            out.append(self._record(d, start))
        all_ended = bool(d.latest) and all(r.final for r in d.latest.values())
        out += self._publish_due(d, d.max_end_ns if not all_ended else None)
        return out

    def tick(self, now_ns: int) -> list[DistrictStats]:
        """Publish the windows that ended more than ``lateness_s`` before ``now_ns`` (UTC epoch ns, wall clock):
        cameras that went quiet do not hold their district's windows back."""
        out: list[DistrictStats] = []
        for name in self.districts:
            out += self._publish_due(self._districts[name], now_ns)
        return out

    def flush(self) -> list[DistrictStats]:
        """Publish every window not yet published (at shutdown)."""
        out: list[DistrictStats] = []
        for name in self.districts:
            out += self._publish_due(self._districts[name], None)
        return out

    def _publish_due(self, d: _District, now_ns: int | None) -> list[DistrictStats]:
        out = []
        for start in sorted(d.windows):
            if start in d.published:
                continue
            end = next(iter(d.windows[start].values())).window_end_ns
            if now_ns is not None and end + self.lateness_ns > now_ns:
                break
            d.published[start] = 0
            d.published_until_ns = max(d.published_until_ns, start)
            out.append(self._record(d, start))
        for start in sorted(d.published)[:-KEEP_WINDOWS]:
            del d.published[start]
            d.windows.pop(start, None)
        return out

    def _record(self, d: _District, start: int) -> DistrictStats:
        recs = list(d.windows[start].values())
        latest = list(d.latest.values())
        window, total = _pooled(recs, total=False), _pooled(latest, total=True)
        return DistrictStats(
            district=d.name,
            window_start_ns=start,
            window_end_ns=recs[0].window_end_ns,
            revision=d.published[start],
            cameras=len({r.camera_id for r in recs}),
            cameras_total=len(latest),
            cameras_running=sum(r.camera_state == "running" for r in latest),
            **people_fields(window, total, _validation_of(recs), _validation_of(latest), self.min_coverage),
            frames_processed=sum(r.frames_processed for r in latest),
            frames_dropped=sum(r.frames_dropped for r in latest),
            tracks_lost=sum(r.tracks_lost for r in latest),
        )
