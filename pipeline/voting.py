"""Per-track thresholding and voting: many noisy classifier scores -> one decision per person.

Seed design (Neuralet face-mask detector): a face score above ``mask_threshold`` is a mask vote, below
``no_mask_threshold`` a no-mask vote, in between no vote. A track's decision is the majority of its votes once it has
``min_votes`` of them, else ``undecided``; a tie is ``undecided``.

Two additions of our own for what the pipeline sees on real crowds:

- A crop whose face score (:mod:`pipeline.facegate`) is below the face rules' ``gate_min_score``, or whose
  usable-face score is below ``usable_min_score``, is not a usable face (a back of a head, a blur, a mouth hidden
  behind the person in front): it casts no vote and is counted in ``faces_rejected``.
- A track whose crops are mostly rejected (more than ``max_rejected_share`` of them) is ``undecided``: the person
  showed no usable face, and the few crops that passed are more likely the gate's errors than faces. On
  ``queue_dark_masks.mp4`` the back of a grey head passes the gate on 5 of its 14 crops and would otherwise be
  decided "no mask".
- One track, one person: a track whose votes strongly disagree (the majority holds less than ``min_agreement`` of
  them) is ``undecided``. On a moving camera a track can pass from one person to another, and the votes of a masked
  and an unmasked face then mix; a majority of such a track would count one of them wrongly.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from pipeline.appearance import find_switch
from schemas.messages import Decision, EndedBy, PersonDecision

FloatArray = npt.NDArray[np.float32]
VoteWeight = Literal["count", "confidence", "face_px", "face_px_confidence"]

MAX_EMBEDDINGS = 512
"""Embeddings kept per track for finding a switch; beyond this every other one is dropped."""


@dataclass(frozen=True, slots=True)
class VotingRules:
    """Thresholds of the vote.

    Attributes:
        mask_threshold: A score above this is a mask vote (0-1).
        no_mask_threshold: A score below this is a no-mask vote (0-1, <= mask_threshold).
        min_votes: Votes needed before a decision is made.
        min_frames_tracked: Tracks matched in fewer processed frames are dropped as spurious (not counted as
            people). Defaults 4 and ``min_votes`` 2 (were 3 and 3), chosen with ``bench/revote.py --grid counted
            --max-wrong 0`` (3, 4, 5, 6, 8 x 2, 3; ties broken by fewer tracks per person): on the 13 labelled videos
            tracks per person 1.17 -> 1.15 and coverage 0.52 -> 0.53, no wrong decision; cross-validated by video,
            1.14 and 0.51 with none wrong. The tracks dropped were fragments of people another track counted (a
            queue_dark_masks person's 3-frame second track) and single_mask_on_off's mask in the hands scored as a
            face for 3 frames (docs/validation.md).
        min_agreement: The majority must hold at least this share of the votes (0.5-1; 0.5 = plain majority).
        max_rejected_share: A track whose face-gate rejections exceed this share of its crops is undecided (0-1;
            1 turns the rule off).
        rejected_min_face_frac: Rejected crops count against ``max_rejected_share`` only where their head box is at
            least this fraction of the median height of the track's accepted faces (0: all count). A person walking
            toward the camera is rejected by the gate while far and blurred and accepted when near: those far
            rejections say nothing of the near faces that voted. Rejections at the sizes that voted (a back of a
            head beside a face, a track on a non-face) still count. Default 0.85, chosen with
            ``bench/revote.py --grid rejected --max-wrong 0`` (0, 0.5, 0.7, 0.85, 1 x share 0.5, 0.7): on the 13
            labelled videos coverage 0.47 -> 0.52, no wrong decision; cross-validated by video, 0.53 with one
            decision on a back of a head (docs/validation.md).
        split_min_distance: A track whose appearance falls into two groups, one after the other, further apart
            than this (0-1; :func:`pipeline.appearance.find_switch`) followed two people: it is cut in two at the
            switch and each part is decided on its own votes. The embeddings are the re-identification network's
            where ``tracking.appearance_gate`` computes them (cosine distance of the parts' means), else torso
            colour histograms (Bhattacharyya distance). 1 turns the cut off.
        split_min_part: Fewest frames with an embedding on each side of such a cut.
        vote_weight: What a vote is worth in the majority and ``min_agreement``: ``count`` (each vote 1),
            ``confidence`` (the classifier's, ``|2 score - 1|``), ``face_px`` (the face's head-box height: a near face
            outweighs a far, blurred one) or ``face_px_confidence`` (their product). ``min_votes`` still counts votes.

    ``mask_threshold`` 0.6 and ``min_agreement`` 0.6 (and the face rules' pass marks) were chosen on person-level
    results with ``bench/revote.py``: of the settings with no wrong decision on any labelled shared video, the one
    that decides the most people. Chosen on half the videos and scored on the other half, the same procedure gave
    coverage 0.53 with 2 wrong decisions of 51 (docs/validation.md, "Is the number right?"). Cutting tracks at an
    appearance switch was never chosen on these videos and is off.
    """

    mask_threshold: float = 0.6
    no_mask_threshold: float = 0.3
    min_votes: int = 2
    min_frames_tracked: int = 4
    min_agreement: float = 0.6
    max_rejected_share: float = 0.5
    rejected_min_face_frac: float = 0.85
    split_min_distance: float = 1.0
    split_min_part: int = 5
    vote_weight: VoteWeight = "count"

    def __post_init__(self) -> None:
        if not 0.0 <= self.no_mask_threshold <= self.mask_threshold <= 1.0:
            msg = (
                "voting thresholds need 0 <= no_mask_threshold <= mask_threshold <= 1, got "
                f"no_mask_threshold={self.no_mask_threshold}, mask_threshold={self.mask_threshold}"
            )
            raise ValueError(msg)
        if self.min_votes < 1 or self.min_frames_tracked < 1:
            msg = f"min_votes and min_frames_tracked must be >= 1, got {self.min_votes} and {self.min_frames_tracked}"
            raise ValueError(msg)
        if not 0.5 <= self.min_agreement <= 1.0:
            msg = f"min_agreement must be in [0.5, 1], got {self.min_agreement}"
            raise ValueError(msg)
        if not 0.0 <= self.max_rejected_share <= 1.0:
            msg = f"max_rejected_share must be in [0, 1], got {self.max_rejected_share}"
            raise ValueError(msg)
        if not 0.0 <= self.rejected_min_face_frac <= 1.0:
            msg = f"rejected_min_face_frac must be in [0, 1], got {self.rejected_min_face_frac}"
            raise ValueError(msg)
        if self.vote_weight not in get_args(VoteWeight):
            msg = f"vote_weight must be one of {get_args(VoteWeight)}, got {self.vote_weight!r}"
            raise ValueError(msg)
        if not 0.0 < self.split_min_distance <= 1.0 or self.split_min_part < 1:
            msg = (f"split_min_distance must be in (0, 1] and split_min_part >= 1, got {self.split_min_distance} "
                   f"and {self.split_min_part}")
            raise ValueError(msg)

    @property
    def splits(self) -> bool:
        """Whether tracks that followed two people are cut in two (needs torso embeddings)."""
        return self.split_min_distance < 1.0


def decide(votes_mask: float, votes_no_mask: float, min_votes: float, min_agreement: float = 0.5) -> Decision:
    """Majority decision of a track's votes.

    ``undecided`` below ``min_votes`` votes, on a tie, or when the majority holds less than ``min_agreement`` of
    the votes (the track's faces disagree: likely more than one person).

    Examples:
        >>> decide(5, 1, 3, 0.75), decide(5, 3, 3, 0.75), decide(5, 3, 3, 0.5), decide(1, 1, 1)
        ('mask', 'undecided', 'mask', 'undecided')
    """
    n = votes_mask + votes_no_mask
    if n < min_votes or votes_mask == votes_no_mask or max(votes_mask, votes_no_mask) < min_agreement * n:
        return "undecided"
    return "mask" if votes_mask > votes_no_mask else "no_mask"


def vote_weight(score: float, face_px: float | None, weight: VoteWeight) -> float:
    """What one vote is worth under ``weight`` (:attr:`VotingRules.vote_weight`): the classifier's confidence
    ``|2 score - 1|`` (0-1), the face's head-box height in pixels (1 when not known), their product, or 1."""
    w = 1.0
    if weight in ("confidence", "face_px_confidence"):
        w *= abs(2.0 * float(score) - 1.0)
    if weight in ("face_px", "face_px_confidence") and face_px is not None:
        w *= float(face_px)
    return w


@dataclass(slots=True)
class TrackVotes:
    """What one track has accumulated so far (``face_px``: head-box heights, original-frame pixels, of the crops
    that passed the gate and came with one)."""

    track_id: int
    first_seen_ns: int
    last_seen_ns: int
    first_frame_idx: int
    last_frame_idx: int
    frames_tracked: int = 0
    faces_classified: int = 0
    score_sum: float = 0.0
    votes_mask: int = 0
    votes_no_mask: int = 0
    faces_rejected: int = 0
    face_px: list[float] = field(default_factory=list)
    rejected_px: list[float] = field(default_factory=list)  # head-box heights of rejected crops that came with one
    weight_mask: float = 0.0  # the votes' weights (rules.vote_weight)
    weight_no_mask: float = 0.0

    def add_score(self, score: float, rules: VotingRules, face_px: float | None = None) -> None:
        """Record one classifier score (0-1) of a face that passed the gate, and its vote, if any; ``face_px`` is the
        face's head-box height in original-frame pixels (None: not known)."""
        self.faces_classified += 1
        self.score_sum += float(score)
        if face_px is not None:
            self.face_px.append(float(face_px))
        if score > rules.mask_threshold:
            self.votes_mask += 1
            self.weight_mask += vote_weight(score, face_px, rules.vote_weight)
        elif score < rules.no_mask_threshold:
            self.votes_no_mask += 1
            self.weight_no_mask += vote_weight(score, face_px, rules.vote_weight)

    def add_rejected(self, face_px: float | None = None) -> None:
        """Record a crop the face gate rejected (``face_px``: its head-box height, pixels; None: not known)."""
        self.faces_rejected += 1
        if face_px is not None:
            self.rejected_px.append(float(face_px))

    def rejected_counted(self, rules: VotingRules) -> int:
        """Rejected crops that count against ``rules.max_rejected_share`` (see ``rejected_min_face_frac``)."""
        if rules.rejected_min_face_frac <= 0.0 or not self.face_px:
            return self.faces_rejected
        floor = rules.rejected_min_face_frac * statistics.median(self.face_px)
        return self.faces_rejected - sum(1 for h in self.rejected_px if h < floor)

    @property
    def decision(self) -> Decision:
        """The running majority for display, from one vote on.

        The final decision (:meth:`to_decision`) also applies ``min_votes`` and ``min_agreement``.
        """
        return decide(self.votes_mask, self.votes_no_mask, 1)

    def to_decision(self, camera_id: str, rules: VotingRules, ended_by: EndedBy = "tracker") -> PersonDecision:
        """The final record for this track (``undecided`` also when its crops were mostly rejected)."""
        # min_votes counts votes; the majority and min_agreement weigh them (each weighs 1 under "count").
        decision = ("undecided" if self.votes_mask + self.votes_no_mask < rules.min_votes
                    else decide(self.weight_mask, self.weight_no_mask, 0, rules.min_agreement))
        rejected = self.rejected_counted(rules)
        if rejected > rules.max_rejected_share * (self.faces_classified + rejected):
            decision = "undecided"
        return PersonDecision(
            decision_id=f"{camera_id}/{self.track_id}/{self.first_seen_ns}",
            camera_id=camera_id,
            track_id=self.track_id,
            first_seen_ns=self.first_seen_ns,
            last_seen_ns=self.last_seen_ns,
            first_frame_idx=self.first_frame_idx,
            last_frame_idx=self.last_frame_idx,
            frames_tracked=self.frames_tracked,
            faces_classified=self.faces_classified,
            faces_rejected=self.faces_rejected,
            votes_mask=self.votes_mask,
            votes_no_mask=self.votes_no_mask,
            mean_mask_score=round(self.score_sum / self.faces_classified, 6) if self.faces_classified else None,
            decision=decision,
            ended_by=ended_by,
            face_px_median=round(statistics.median(self.face_px), 1) if self.face_px else None,
        )


class TrackLedger:
    """The votes of every live track of one camera; ends tracks into :class:`PersonDecision` records.

    Args:
        camera_id: Camera.
        rules: Voting thresholds.
        embedding_distance: How ``rules.splits`` compares the embeddings :meth:`observe` gets, 0-1 (None: torso
            histograms' Bhattacharyya distance; :func:`pipeline.reid.direction_distance` for the network's).
    """

    def __init__(self, camera_id: str, rules: VotingRules | None = None,
                 embedding_distance: Callable[[FloatArray, FloatArray], float] | None = None) -> None:
        self.camera_id = camera_id
        self.rules = rules or VotingRules()
        self.embedding_distance = embedding_distance
        self._tracks: dict[int, TrackVotes] = {}
        # With rules.splits: per track, what was observed and scored (replayed into two parts at a switch), and its
        # embeddings with their frame_idx.
        self._events: dict[int, list[tuple]] = {}
        self._embeddings: dict[int, tuple[list[int], list[npt.NDArray[np.float32]]]] = {}

    def observe(self, track_ids: list[int], frame_idx: int, capture_time_ns: int,
                embeddings: Sequence[npt.NDArray[np.float32] | None] | None = None) -> None:
        """Note that these tracks matched a detection in this frame.

        Args:
            track_ids: The tracks.
            frame_idx: The frame.
            capture_time_ns: Its capture time, UTC epoch ns.
            embeddings: Each track's embedding in this frame (a torso histogram of
                :func:`pipeline.appearance.torso_embeddings` or the re-identification network's; None where not
                computed), for cutting tracks that followed two people (``rules.splits``).
        """
        for i, tid in enumerate(track_ids):
            tv = self._tracks.get(tid)
            if tv is None:
                tv = self._tracks[tid] = TrackVotes(tid, capture_time_ns, capture_time_ns, frame_idx, frame_idx)
            tv.last_seen_ns, tv.last_frame_idx = capture_time_ns, frame_idx
            tv.frames_tracked += 1
            if self.rules.splits:
                self._events.setdefault(tid, []).append(("seen", frame_idx, capture_time_ns))
                emb = embeddings[i] if embeddings is not None else None
                if emb is not None:
                    frames, embs = self._embeddings.setdefault(tid, ([], []))
                    frames.append(frame_idx)
                    embs.append(emb)
                    if len(embs) > MAX_EMBEDDINGS:  # a long track: keep every other one (memory stays bounded)
                        self._embeddings[tid] = (frames[::2], embs[::2])

    def add_scores(self, track_ids: list[int], scores: list[float], accepted: list[bool] | None = None,
                   face_px: list[float] | None = None) -> None:
        """Add classifier scores (0-1) of faces, one per track id.

        Args:
            track_ids: The faces' tracks.
            scores: Their mask scores.
            accepted: Whether each crop passed the face gate (None: all did); a rejected crop casts no vote and
                counts in the track's ``faces_rejected``.
            face_px: Each face's head-box height, original-frame pixels (None: not known); an accepted crop's
                height goes into the track's ``face_px_median``.

        Raises:
            ValueError: If lengths differ or a track was never observed.
        """
        ok = [True] * len(track_ids) if accepted is None else accepted
        px: list[float | None] = [None] * len(track_ids) if face_px is None else list(face_px)
        if not len(track_ids) == len(scores) == len(ok) == len(px):
            msg = (
                "track_ids, scores, accepted and face_px must have the same length, got "
                f"{len(track_ids)}, {len(scores)}, {len(ok)} and {len(px)}"
            )
            raise ValueError(msg)
        for tid, s, a, h in zip(track_ids, scores, ok, px, strict=True):
            if tid not in self._tracks:
                msg = f"camera {self.camera_id!r}: score for unknown track {tid}"
                raise ValueError(msg)
            if a:
                self._tracks[tid].add_score(s, self.rules, h)
            else:
                self._tracks[tid].add_rejected(h)
            if self.rules.splits:
                self._events[tid].append(("score", self._tracks[tid].last_frame_idx, s, a, h))

    def get(self, track_id: int) -> TrackVotes | None:
        """The live track's votes, if any."""
        return self._tracks.get(track_id)

    def end(self, track_ids: set[int] | None = None, ended_by: EndedBy = "tracker") -> list[PersonDecision]:
        """End these tracks (all when None) and return their decisions, dropping spurious short tracks."""
        ids = sorted(self._tracks if track_ids is None else track_ids & self._tracks.keys())
        out = []
        for tid in ids:
            for tv in self._parts(tid, self._tracks.pop(tid)):
                if tv.frames_tracked >= self.rules.min_frames_tracked:
                    out.append(tv.to_decision(self.camera_id, self.rules, ended_by))
        return out

    def _parts(self, tid: int, tv: TrackVotes) -> list[TrackVotes]:
        """The track as one part, or as two when its torso colours show a switch to another person: the events
        before the switch's frame make the first part, the rest the second (same ``track_id``, their own frame
        span and ``decision_id``)."""
        events = self._events.pop(tid, [])
        frames, embs = self._embeddings.pop(tid, ([], []))
        k = (find_switch(embs, self.rules.split_min_part, self.rules.split_min_distance, self.embedding_distance)
             if self.rules.splits else None)
        if k is None:
            return [tv]
        cut = frames[k]
        parts = []
        for part in ([e for e in events if e[1] < cut], [e for e in events if e[1] >= cut]):
            seen = [e for e in part if e[0] == "seen"]
            p = TrackVotes(tid, seen[0][2], seen[-1][2], seen[0][1], seen[-1][1], frames_tracked=len(seen))
            for e in part:
                if e[0] == "score":
                    if e[3]:
                        p.add_score(e[2], self.rules, e[4])
                    else:
                        p.add_rejected(e[4])
            parts.append(p)
        return parts

    def __len__(self) -> int:
        return len(self._tracks)
