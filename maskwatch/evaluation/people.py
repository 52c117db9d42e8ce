"""Person-level evaluation: the pipeline's decisions against people labelled by looking.

The statistic a camera publishes counts one decision per track. It is right only when every person is found, counted
once and decided correctly, so this module scores exactly that, per video and pooled:

- **people** labelled (``data/labels/people/<video>.csv``, :func:`read_labels`), those with a visible face, and
  **tracks per person**: counted tracks (decisions) matched to a labelled person over the people they matched
  (1.0 = each person counted once);
- **coverage**: people with a visible face who got at least one mask / no_mask decision, over people with a visible
  face;
- person-level **sensitivity** (masked people decided mask) and **specificity** (unmasked people decided no_mask),
  with Wilson 95% intervals;
- the **published** mask fraction (mask decisions over decided ones, duplicates and unmatched tracks included, as
  the camera's record counts them) next to the **labelled** one (masked people over people of a known state);
- **wrong** decisions, of three kinds: contrary to the person's labelled state; on an unmatched track or a person
  of ``unsure`` state, contrary to the state every labelled person of the video shares (a no_mask decision in a
  queue where everyone is masked); and any decision on a person whose face never showed (a back of a head that
  voted).

A person's state is the one held in two thirds of their labelled mask / no_mask rows (:data:`MAJORITY`), else
``mixed`` (neither decision is wrong).

Matching: a decision names its ``track_id`` and its frame span (``first_frame_idx``..``last_frame_idx``); its boxes
are that track's rows of the MOTChallenge tracks file (``maskwatch run --tracks-out``) in that span. A labelled
person's box at any frame is interpolated linearly between their labelled boxes no more than ``max_gap`` frames
apart (a span; longer gaps mean the person was out of view). At each frame, tracks and labelled people are paired
greedily by descending intersection over union (at least ``min_iou``); a decision belongs to the person it was
paired with most often. This is the box-overlap matching of the CLEAR MOT metrics (Bernardin & Stiefelhagen 2008)
with the identity kept per track, as IDF1 does (Ristani et al. 2016), reduced to what the published count needs.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.evaluation.tracking import TrackingMetrics, evaluate_tracks
from pipeline.mot import read_mot
from pipeline.stats import wilson_interval

LABEL_COLUMNS = ("frame_idx", "person_id", "x1", "y1", "x2", "y2", "mask")
"""Columns of a people label file: ``frame_idx`` 0-based as OpenCV decodes the video, ``person_id`` an integer per
person within the video, the person's visible body box ``x1, y1, x2, y2`` in original-frame pixels, and ``mask``,
one of :data:`MASK_STATES`, the state seen at that frame."""

MASK_STATES = ("mask", "no_mask", "unsure", "no_face")
"""``mask``: a mask over mouth and nose; ``no_mask``: the mouth or nose is uncovered (a mask on the chin counts as
no mask); ``unsure``: a face is seen but the state cannot be told; ``no_face``: the face is not visible at this frame
(back of the head, hidden, out of the frame's top)."""


MAJORITY = 2 / 3
"""Share of a person's labelled mask / no_mask rows that one state must hold to be the person's state: someone who
puts a mask on after the first second of a 16 s clip is a masked person, someone seen as long with as without is
``mixed``."""


@dataclass(frozen=True, slots=True)
class LabelRow:
    """One labelled box of one person at one frame (see :data:`LABEL_COLUMNS`)."""

    frame_idx: int
    person_id: int
    x1: float
    y1: float
    x2: float
    y2: float
    mask: str


@dataclass(slots=True)
class PeopleLabels:
    """The labelled people of one video.

    Attributes:
        video: The video's name (the label file's stem).
        rows: Every labelled box, in file order.
        people: Rows per ``person_id``, sorted by frame.
        frames: The labelled frames (sorted); frames between two of them are covered by interpolation.
    """

    video: str
    rows: list[LabelRow]
    people: dict[int, list[LabelRow]] = field(default_factory=dict)
    frames: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        by: dict[int, list[LabelRow]] = defaultdict(list)
        for r in self.rows:
            by[r.person_id].append(r)
        self.people = {p: sorted(rs, key=lambda r: r.frame_idx) for p, rs in sorted(by.items())}
        self.frames = sorted({r.frame_idx for r in self.rows})

    @property
    def first_frame(self) -> int:
        return self.frames[0] if self.frames else 0

    @property
    def last_frame(self) -> int:
        return self.frames[-1] if self.frames else -1

    @property
    def step(self) -> int:
        """Median spacing of the labelled frames (frames); 1 with fewer than two."""
        return max(1, int(np.median(np.diff(self.frames)))) if len(self.frames) > 1 else 1

    def truth(self, person_id: int) -> str:
        """A person's state over the video: ``mask`` or ``no_mask`` when it holds in at least ``MAJORITY`` of the
        person's mask / no_mask rows, ``mixed`` otherwise (a mask taken off and put back for about as long: neither
        decision is wrong), ``unsure`` when a face was seen but never judged, ``no_face`` when it never showed."""
        states = Counter(r.mask for r in self.people[person_id])
        n = states["mask"] + states["no_mask"]
        if n:
            top = "mask" if states["mask"] >= states["no_mask"] else "no_mask"
            return top if states[top] >= MAJORITY * n else "mixed"
        return "unsure" if states["unsure"] else "no_face"

    def has_face(self, person_id: int) -> bool:
        """The person's face showed at least once (a row other than ``no_face``)."""
        return any(r.mask != "no_face" for r in self.people[person_id])

    def state_counts(self) -> dict[str, int]:
        """People per :meth:`truth`."""
        return dict(Counter(self.truth(p) for p in self.people))

    def mot_rows(self) -> np.ndarray:
        """The labelled boxes as MOTChallenge ground truth: `(G, 7)` float64 rows ``frame, person_id, x, y, w, h,
        1`` with 1-based frames and pixels (as :func:`pipeline.mot.read_mot` reads), for
        :func:`maskwatch.evaluation.tracking.evaluate_tracks` with ``gt_frames_only``."""
        return np.array([[r.frame_idx + 1, r.person_id, r.x1 + 1, r.y1 + 1, r.x2 - r.x1, r.y2 - r.y1, 1]
                         for r in self.rows], dtype=np.float64).reshape(-1, 7)

    def boxes_at(self, frame_idx: int, max_gap: int) -> dict[int, np.ndarray]:
        """Each labelled person's box `(4,)` float64 xyxy at ``frame_idx``: a labelled box, or one interpolated
        linearly between two of the person's boxes at most ``max_gap`` frames apart."""
        out = {}
        for pid, rs in self.people.items():
            if frame_idx < rs[0].frame_idx or frame_idx > rs[-1].frame_idx:
                continue
            for a, b in zip(rs, [*rs[1:], rs[-1]], strict=True):
                if a.frame_idx == frame_idx:
                    out[pid] = np.array([a.x1, a.y1, a.x2, a.y2])
                    break
                if a.frame_idx < frame_idx < b.frame_idx:
                    if b.frame_idx - a.frame_idx <= max_gap:
                        t = (frame_idx - a.frame_idx) / (b.frame_idx - a.frame_idx)
                        pa, pb = np.array([a.x1, a.y1, a.x2, a.y2]), np.array([b.x1, b.y1, b.x2, b.y2])
                        out[pid] = pa + t * (pb - pa)
                    break
        return out


def read_labels(path: str | Path) -> PeopleLabels:
    """Read a people label file (:data:`LABEL_COLUMNS`, header first).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: Naming the file, line, field, the expected and the actual value: a missing column, a field that
            is not a number, an unknown mask state, an empty box, or one person labelled twice at one frame.
    """
    path = Path(path)
    rows: list[LabelRow] = []
    seen: set[tuple[int, int]] = set()
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in LABEL_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            msg = f"{path}: expected columns {', '.join(LABEL_COLUMNS)}, missing {', '.join(missing)}"
            raise ValueError(msg)
        for n, rec in enumerate(reader, 2):
            try:
                frame, pid = int(rec["frame_idx"]), int(rec["person_id"])
                x1, y1, x2, y2 = (float(rec[c]) for c in ("x1", "y1", "x2", "y2"))
            except (TypeError, ValueError):
                msg = f"{path}:{n}: expected integers frame_idx, person_id and numbers x1..y2, got {dict(rec)}"
                raise ValueError(msg) from None
            mask = (rec["mask"] or "").strip()
            if mask not in MASK_STATES:
                msg = f"{path}:{n}: mask must be one of {', '.join(MASK_STATES)}, got {mask!r}"
                raise ValueError(msg)
            if frame < 0 or x2 <= x1 or y2 <= y1:
                msg = f"{path}:{n}: expected frame_idx >= 0 and x2 > x1, y2 > y1, got {frame}, {(x1, y1, x2, y2)}"
                raise ValueError(msg)
            if (frame, pid) in seen:
                msg = f"{path}:{n}: person {pid} is labelled twice at frame {frame}"
                raise ValueError(msg)
            seen.add((frame, pid))
            rows.append(LabelRow(frame, pid, x1, y1, x2, y2, mask))
    return PeopleLabels(path.stem, rows)


def read_decisions(path: str | Path, camera_id: str | None = None) -> list[dict[str, Any]]:
    """Person decisions from JSON Lines: ``maskwatch run --out`` records (``{"topic", "key", "value"}``, the
    decisions are the values with a ``decision`` field) or bare decision objects.

    Args:
        path: The file.
        camera_id: Keep only this camera's decisions (None: all).

    Raises:
        ValueError: Naming the file and line, if a line is not JSON.
    """
    out = []
    with Path(path).open() as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                msg = f"{path}:{n}: expected one JSON object per line, got {line[:80]!r} ({exc.msg})"
                raise ValueError(msg) from None
            value = obj.get("value", obj) if isinstance(obj, dict) else None
            if (isinstance(value, dict) and "decision" in value and "track_id" in value
                    and (camera_id is None or value.get("camera_id") == camera_id)):
                out.append(value)
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


@dataclass(slots=True)
class VideoResult:
    """Person-level figures of one video (or pooled: the counts summed). See the module docstring."""

    video: str
    people: int = 0
    people_with_face: int = 0
    people_found: int = 0  # labelled people matched by at least one counted track
    decisions: int = 0  # counted tracks (decision records) overlapping the labelled frames
    decisions_matched: int = 0
    decisions_unmatched: int = 0
    mixed_tracks: int = 0  # decisions whose boxes matched two or more people
    people_decided: int = 0  # people with a visible face with at least one mask / no_mask decision
    masked_decided: int = 0
    masked_right: int = 0
    unmasked_decided: int = 0
    unmasked_right: int = 0
    wrong_decisions: int = 0  # decisions (not people) contrary to their person's mask / no_mask state
    # Decisions on tracks that match no labelled person or a person of unknown state (unsure), contrary to the state
    # every labelled person of the video shares (a no_mask decision where everyone labelled is masked): wrong too.
    contrary_to_video: int = 0
    # mask / no_mask decisions on people whose face never showed (labelled no_face throughout): a back of a head
    # that voted. Wrong whatever they decided.
    faceless_decisions: int = 0
    published_mask: int = 0
    published_no_mask: int = 0
    labelled_mask: int = 0
    labelled_no_mask: int = 0
    per_person: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Every track against the labelled people on the labelled frames (identity_metrics); None when pooled.
    identity: TrackingMetrics | None = None

    @property
    def wrong(self) -> int:
        """Every wrong decision: on labelled people, contrary to the video's common state, and faceless."""
        return self.wrong_decisions + self.contrary_to_video + self.faceless_decisions

    @property
    def tracks_per_person(self) -> float | None:
        return self.decisions_matched / self.people_found if self.people_found else None

    @property
    def coverage(self) -> float | None:
        return self.people_decided / self.people_with_face if self.people_with_face else None

    @property
    def sensitivity(self) -> float | None:
        return self.masked_right / self.masked_decided if self.masked_decided else None

    @property
    def specificity(self) -> float | None:
        return self.unmasked_right / self.unmasked_decided if self.unmasked_decided else None

    @property
    def published_fraction(self) -> float | None:
        n = self.published_mask + self.published_no_mask
        return self.published_mask / n if n else None

    @property
    def labelled_fraction(self) -> float | None:
        n = self.labelled_mask + self.labelled_no_mask
        return self.labelled_mask / n if n else None

    def add(self, other: VideoResult) -> None:
        """Add another video's counts (pooling)."""
        for k in asdict(other):
            if k not in ("video", "per_person", "identity"):
                setattr(self, k, getattr(self, k) + getattr(other, k))

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("per_person", "identity")}
        d["wrong"] = self.wrong
        for k in ("tracks_per_person", "coverage", "sensitivity", "specificity", "published_fraction",
                  "labelled_fraction"):
            v = getattr(self, k)
            d[k] = None if v is None else round(v, 4)
        d["sensitivity_ci95"] = wilson_interval(self.masked_right, self.masked_decided)
        d["specificity_ci95"] = wilson_interval(self.unmasked_right, self.unmasked_decided)
        d["per_person"] = {str(k): v for k, v in self.per_person.items()}
        if self.identity is not None:
            d["identity"] = self.identity.to_dict()
        return d


def evaluate_video(
    labels: PeopleLabels,
    tracks: np.ndarray,
    decisions: Iterable[dict[str, Any]],
    min_iou: float = 0.3,
    max_gap: int | None = None,
) -> VideoResult:
    """Match one video's decisions to its labelled people and count what the published statistic got right.

    Args:
        labels: The video's labelled people.
        tracks: `(M, 7)` MOTChallenge rows from :func:`pipeline.mot.read_mot` (1-based frames and pixels).
        decisions: The camera's decision records (``track_id``, ``first_frame_idx``, ``last_frame_idx``,
            ``decision``); those that do not overlap the labelled frames are left out.
        min_iou: Smallest intersection over union of a track box and a labelled box that pairs them.
        max_gap: Longest gap (frames) between two boxes of one person that is interpolated (None: 1.5 x the
            labelled frames' spacing).

    Returns:
        The video's :class:`VideoResult`, with every track's :func:`identity_metrics` at ``min_iou``.
    """
    gap = max_gap if max_gap is not None else round(1.5 * labels.step)
    boxes_of: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
    for f, tid, x, y, w, h, _c in tracks:
        boxes_of[int(tid)][int(f) - 1] = np.array([x - 1.0, y - 1.0, x - 1.0 + w, y - 1.0 + h])
    lo, hi = labels.first_frame, labels.last_frame
    decs = [d for d in decisions if d["last_frame_idx"] >= lo and d["first_frame_idx"] <= hi]
    # Pair decisions' boxes with people frame by frame, greedily by IoU.
    frames_of: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for i, d in enumerate(decs):
        for f, box in boxes_of.get(int(d["track_id"]), {}).items():
            if d["first_frame_idx"] <= f <= d["last_frame_idx"] and lo <= f <= hi:
                frames_of[f].append((i, box))
    votes: list[Counter[int]] = [Counter() for _ in decs]
    for f, cands in frames_of.items():
        people = labels.boxes_at(f, gap)
        pairs = sorted(((_iou(box, pb), i, pid) for i, box in cands for pid, pb in people.items()), reverse=True)
        used_i: set[int] = set()
        used_p: set[int] = set()
        for iou, i, pid in pairs:
            if iou < min_iou:
                break
            if i in used_i or pid in used_p:
                continue
            used_i.add(i)
            used_p.add(pid)
            votes[i][pid] += 1
    res = VideoResult(labels.video)
    res.people = len(labels.people)
    states = {labels.truth(p) for p in labels.people} & {"mask", "no_mask", "mixed"}
    common = states.pop() if len(states) == 1 else None
    by_person: dict[int, list[str]] = defaultdict(list)
    spans: dict[int, list[list[int]]] = defaultdict(list)
    for d, v in zip(decs, votes, strict=True):
        res.decisions += 1
        if d["decision"] == "mask":
            res.published_mask += 1
        elif d["decision"] == "no_mask":
            res.published_no_mask += 1
        if not v:
            res.decisions_unmatched += 1
            res.contrary_to_video += common in ("mask", "no_mask") and d["decision"] in ("mask", "no_mask") and (
                d["decision"] != common)
            continue
        res.decisions_matched += 1
        res.mixed_tracks += len(v) > 1
        pid = v.most_common(1)[0][0]
        by_person[pid].append(d["decision"])
        spans[pid].append([int(d["track_id"]), int(d["first_frame_idx"]), int(d["last_frame_idx"])])
        truth, decided = labels.truth(pid), d["decision"] in ("mask", "no_mask")
        if truth in ("mask", "no_mask") and decided and d["decision"] != truth:
            res.wrong_decisions += 1
        res.faceless_decisions += truth == "no_face" and decided
        res.contrary_to_video += truth == "unsure" and common in ("mask", "no_mask") and decided and (
            d["decision"] != common)
    for pid in labels.people:
        truth, face = labels.truth(pid), labels.has_face(pid)
        res.people_with_face += face
        res.labelled_mask += truth == "mask"
        res.labelled_no_mask += truth == "no_mask"
        ds = by_person.get(pid, [])
        res.people_found += bool(ds)
        decided = Counter(x for x in ds if x in ("mask", "no_mask"))
        person_decision = "undecided"
        if decided:
            (top, k), = decided.most_common(1)
            person_decision = top if k * 2 > sum(decided.values()) else "conflict"
            res.people_decided += face
            if truth == "mask":
                res.masked_decided += 1
                res.masked_right += person_decision == "mask"
            elif truth == "no_mask":
                res.unmasked_decided += 1
                res.unmasked_right += person_decision == "no_mask"
        res.per_person[pid] = {"truth": truth, "face": face, "tracks": len(ds), "decisions": ds,
                               "decision": person_decision, "track_spans": spans.get(pid, [])}
    res.identity = identity_metrics(labels, tracks, min_iou)
    return res


def evaluate_files(
    labels_path: str | Path, tracks_path: str | Path, decisions: list[dict[str, Any]], min_iou: float = 0.3
) -> VideoResult:
    """:func:`evaluate_video` of one video from its label file and its MOTChallenge tracks file.

    ``decisions`` (:func:`read_decisions`) may hold several cameras' records: then those of the camera named like
    the label file (``<video>.csv`` -> camera_id ``<video>``) are taken.

    Raises:
        FileNotFoundError, ValueError: From :func:`read_labels` and :func:`pipeline.mot.read_mot`.
    """
    labels = read_labels(labels_path)
    if len({d["camera_id"] for d in decisions}) > 1:
        decisions = [d for d in decisions if d["camera_id"] == labels.video]
    return evaluate_video(labels, read_mot(tracks_path), decisions, min_iou)


def identity_metrics(labels: PeopleLabels, tracks: np.ndarray, min_iou: float = 0.3) -> TrackingMetrics:
    """MOTA, IDF1 and ID switches of every track (counted or not) against the labelled people, on the labelled
    frames only (:func:`maskwatch.evaluation.tracking.evaluate_tracks` with ``gt_frames_only``).

    The person table says how often a person was counted; it hides a track that follows two people, one after
    the other, and counts them once. IDF1 falls with such a track (its boxes on the second person are not its
    identity's), and ID switches count each time a person's track changes. Switches are seen only at labelled frames
    (every ``labels.step`` frames), so two between them count as at most one.

    Args:
        labels: The video's labelled people.
        tracks: `(M, 7)` MOTChallenge rows (:func:`pipeline.mot.read_mot`).
        min_iou: Smallest intersection over union of a track box and a labelled box that pairs them.
    """
    return evaluate_tracks(tracks, labels.mot_rows(), min_iou, gt_frames_only=True)


def results_json(results: list[VideoResult]) -> dict[str, Any]:
    """Each video's figures (its :func:`identity_metrics` under the key ``identity``) and the pooled ones (key
    ``pooled``), as JSON-ready dicts."""
    return {r.video: r.to_dict() for r in [*results, pooled(results)]}


def pooled(results: Iterable[VideoResult]) -> VideoResult:
    """The counts of several videos summed."""
    out = VideoResult("pooled")
    for r in results:
        out.add(r)
    return out


def _f(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _ci(k: int, n: int) -> str:
    ci = wilson_interval(k, n)
    return "-" if ci is None else f"{k}/{n} [{ci[0]:.2f},{ci[1]:.2f}]"


def format_table(results: list[VideoResult]) -> str:
    """One line per video and a pooled line: people, tracks per person, coverage, sensitivity, specificity (with
    Wilson 95% intervals), wrong decisions (``A+B+C``: A contrary to the labelled person's state, B on unmatched
    tracks or people of unsure state contrary to the state every labelled person of the video shares, C on people
    whose face never showed) and the published next to the labelled mask fraction."""
    head = (f"{'video':<28}{'people':>7}{'face':>5}{'found':>6}{'tracks/p':>9}{'unmatch':>8}{'decided':>8}"
            f"{'coverage':>9}  {'sensitivity':<19}{'specificity':<19}{'wrong':>9}{'published':>10}{'labelled':>9}")
    lines = [head]
    for r in [*results, pooled(results)] if len(results) > 1 else results:
        lines.append(
            f"{r.video:<28}{r.people:>7}{r.people_with_face:>5}{r.people_found:>6}{_f(r.tracks_per_person):>9}"
            f"{r.decisions_unmatched:>8}{r.people_decided:>8}{_f(r.coverage):>9}  "
            f"{_ci(r.masked_right, r.masked_decided):<19}{_ci(r.unmasked_right, r.unmasked_decided):<19}"
            f"{f'{r.wrong_decisions}+{r.contrary_to_video}+{r.faceless_decisions}':>9}{_f(r.published_fraction):>10}"
            f"{_f(r.labelled_fraction):>9}"
        )
    return "\n".join(lines)


def format_identity(results: list[VideoResult]) -> str:
    """One line per video: every track against the labelled people on the labelled frames, at the person table's
    IoU: MOTA, IDF1 and ID switches (:attr:`VideoResult.identity`); pooled: the sums of the counts."""
    identity = {r.video: r.identity for r in results if r.identity is not None}
    lines = [f"{'video':<28}{'frames':>7}{'boxes':>6}{'tracks':>7}{'MOTA':>7}{'IDF1':>7}{'ID sw':>6}{'misses':>7}"
             f"{'false+':>7}"]
    for n, m in identity.items():
        lines.append(f"{n:<28}{m.frames:>7}{m.gt_boxes:>6}{m.distinct_track_ids:>7}{m.mota:>7.3f}{m.idf1:>7.3f}"
                     f"{m.id_switches:>6}{m.misses:>7}{m.false_positives:>7}")
    total = {k: sum(getattr(m, k) for m in identity.values()) for k in ("frames", "gt_boxes", "distinct_track_ids",
                                                                         "id_switches", "misses", "false_positives")}
    lines.append(f"{'pooled':<28}{total['frames']:>7}{total['gt_boxes']:>6}{total['distinct_track_ids']:>7}"
                 f"{'-':>7}{'-':>7}{total['id_switches']:>6}{total['misses']:>7}{total['false_positives']:>7}")
    return "\n".join(lines)
