"""Per-camera statistics over windows aligned to UTC wall-clock boundaries.

A person counts once, in the window in which their track ended. The mask fraction is masked / (masked + unmasked);
undecided people are reported but not in the fraction. Its 95% interval is the Wilson score interval
(E. B. Wilson, "Probable inference, the law of succession, and statistical inference", JASA 22, 1927), which stays
inside [0, 1] and behaves for small counts, unlike the normal approximation. Next to it, the fraction corrected
for the classifier's measured sensitivity and specificity (:mod:`pipeline.prevalence`: Rogan–Gladen with the
Lang–Reiczigel 2014 interval), when the classifier's validation counts are known.
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.prevalence import ClassifierValidation, lang_reiczigel
from schemas.messages import CameraState, CameraStats, PersonDecision

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion.

    Args:
        successes: Number of successes (0 <= successes <= n).
        n: Number of trials.
        z: Normal quantile (1.96 for 95%).

    Returns:
        `(low, high)` in [0, 1], or None when ``n == 0``.

    Raises:
        ValueError: If ``successes`` is outside ``[0, n]``.

    Examples:
        >>> [round(v, 4) for v in wilson_interval(8, 10)]
        [0.4902, 0.9433]
    """
    if not 0 <= successes <= n:
        msg = f"successes must be in [0, n={n}], got {successes}"
        raise ValueError(msg)
    if n == 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


class PeopleCounts:
    """People decided mask, no mask and undecided, with the mask fraction and its intervals over them.

    Args:
        masked, unmasked, undecided: Starting counts (people).
    """

    __slots__ = ("masked", "undecided", "unmasked")

    def __init__(self, masked: int = 0, unmasked: int = 0, undecided: int = 0) -> None:
        self.masked, self.unmasked, self.undecided = masked, unmasked, undecided

    def add(self, d: PersonDecision) -> None:
        """Count one person's decision."""
        if d.decision == "mask":
            self.masked += 1
        elif d.decision == "no_mask":
            self.unmasked += 1
        else:
            self.undecided += 1

    @property
    def people(self) -> int:
        """Everyone counted, undecided included."""
        return self.masked + self.unmasked + self.undecided

    def fraction(self) -> tuple[float | None, float | None, float | None]:
        """``(masked / decided, Wilson 95% low, high)``, rounded to 6 places; Nones when nobody was decided."""
        n = self.masked + self.unmasked
        ci = wilson_interval(self.masked, n)
        if ci is None:
            return None, None, None
        return round(self.masked / n, 6), round(ci[0], 6), round(ci[1], 6)

    def corrected(self, validation: ClassifierValidation | None) -> tuple[float | None, float | None, float | None]:
        """Rogan–Gladen estimate with the Lang–Reiczigel 95% interval (:func:`pipeline.prevalence.lang_reiczigel`);
        Nones when nobody was decided or ``validation`` is None."""
        est = lang_reiczigel(self.masked, self.masked + self.unmasked, validation) if validation else None
        if est is None:
            return None, None, None
        return round(est[0], 6), round(est[1], 6), round(est[2], 6)


def people_fields(
    window: PeopleCounts,
    total: PeopleCounts,
    window_validation: ClassifierValidation | None,
    total_validation: ClassifierValidation | None,
) -> dict[str, Any]:
    """The people, fraction and correction fields that :class:`CameraStats` and
    :class:`~schemas.messages.DistrictStats` share, for a window and the running totals: counts, the mask fraction
    with its Wilson interval, and the corrected fraction with its Lang–Reiczigel interval (null without validation),
    with the validation figures that corrected the totals."""
    out: dict[str, Any] = {}
    for prefix, counts, validation in (("", window, window_validation), ("total_", total, total_validation)):
        frac, low, high = counts.fraction()
        cfrac, clow, chigh = counts.corrected(validation)
        out |= {
            f"{prefix}people": counts.people, f"{prefix}masked": counts.masked,
            f"{prefix}unmasked": counts.unmasked, f"{prefix}undecided": counts.undecided,
            f"{prefix}mask_fraction": frac, f"{prefix}mask_fraction_low": low, f"{prefix}mask_fraction_high": high,
            f"{prefix}corrected_mask_fraction": cfrac, f"{prefix}corrected_mask_fraction_low": clow,
            f"{prefix}corrected_mask_fraction_high": chigh,
        }
    se, sp = total_validation.counts() if total_validation else (None, None)
    return out | {"classifier_sensitivity": se, "classifier_specificity": sp,
                  "classifier_validation_source": total_validation.source if total_validation else None}


class CameraWindows:
    """Windowed statistics of one camera.

    Args:
        camera_id: Camera.
        window_s: Window length in seconds; windows start at multiples of it since the UTC epoch.
        validation: The classifier's validation counts (model metadata or config); None leaves the corrected
            fraction null.
        district: The camera's district, carried in every record (None: none).
    """

    def __init__(
        self,
        camera_id: str,
        window_s: float,
        validation: ClassifierValidation | None = None,
        district: str | None = None,
    ) -> None:
        if window_s <= 0:
            msg = f"window_s must be > 0, got {window_s}"
            raise ValueError(msg)
        self.camera_id = camera_id
        self.district = district
        self.validation = validation
        self._window_ns = int(window_s * 1e9)
        self._start_ns: int | None = None
        self._window = PeopleCounts()
        self._total = PeopleCounts()
        self.frames_processed = 0
        self.frames_dropped = 0
        self.faces_classified = 0
        self.faces_rejected = 0
        self.camera_state: CameraState = "running"
        self.camera_restarts = 0
        self.last_frame_idx = -1
        self.open_tracks = 0
        self.tracks_lost = 0

    def _record(self, final: bool) -> CameraStats:
        assert self._start_ns is not None  # internal invariant, callers check
        return CameraStats(
            camera_id=self.camera_id,
            window_start_ns=self._start_ns,
            window_end_ns=self._start_ns + self._window_ns,
            final=final,
            **people_fields(self._window, self._total, self.validation, self.validation),
            frames_processed=self.frames_processed,
            frames_dropped=self.frames_dropped,
            faces_classified=self.faces_classified,
            faces_rejected=self.faces_rejected,
            camera_state=self.camera_state,
            camera_restarts=self.camera_restarts,
            last_frame_idx=self.last_frame_idx,
            open_tracks=self.open_tracks,
            tracks_lost=self.tracks_lost,
            district=self.district,
        )

    @property
    def total(self) -> PeopleCounts:
        """The running totals since the camera's run started (restored ones included); read only."""
        t = self._total
        return PeopleCounts(t.masked, t.unmasked, t.undecided)

    def restore(self, last: CameraStats) -> None:
        """Carry on from the camera's last published record, after its process or the whole job restarted.

        The running totals, frame and face counters, restarts and ``last_frame_idx`` continue from ``last``; the
        current window starts afresh. Totals never go down. The tracks ``last`` had open are gone with the process
        that followed them: they are added to ``tracks_lost`` (a final record has none open).

        Raises:
            ValueError: If ``last`` is another camera's.
        """
        if last.camera_id != self.camera_id:
            msg = f"cannot restore camera {self.camera_id!r} from a record of camera {last.camera_id!r}"
            raise ValueError(msg)
        t = self._total
        t.masked, t.unmasked, t.undecided = last.total_masked, last.total_unmasked, last.total_undecided
        self.frames_processed, self.frames_dropped = last.frames_processed, last.frames_dropped
        self.faces_classified, self.faces_rejected = last.faces_classified, last.faces_rejected
        self.camera_restarts, self.last_frame_idx = last.camera_restarts, last.last_frame_idx
        self.tracks_lost = last.tracks_lost + last.open_tracks

    def advance(self, now_ns: int) -> list[CameraStats]:
        """Close the current window if ``now_ns`` (UTC epoch ns) is past its end; returns the closed record.

        Empty windows between two events are not emitted (the running totals carry on in the next record).
        """
        out = []
        if self._start_ns is None:
            self._start_ns = now_ns - now_ns % self._window_ns
        elif now_ns >= self._start_ns + self._window_ns:
            out.append(self._record(final=False))
            self._window = PeopleCounts()
            self._start_ns = now_ns - now_ns % self._window_ns
        return out

    def add(self, decisions: list[PersonDecision], now_ns: int) -> list[CameraStats]:
        """Count ended tracks at ``now_ns``; returns records of windows that closed before it."""
        out = self.advance(now_ns)
        for d in decisions:
            self._window.add(d)
            self._total.add(d)
        return out

    def close(self, now_ns: int) -> CameraStats:
        """The final record at the end of the stream (the current window may be partial)."""
        self.advance(now_ns)
        return self._record(final=True)
