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

from dataclasses import dataclass

from schemas.messages import Decision, EndedBy, PersonDecision


@dataclass(frozen=True, slots=True)
class VotingRules:
    """Thresholds of the vote.

    Attributes:
        mask_threshold: A score above this is a mask vote (0-1).
        no_mask_threshold: A score below this is a no-mask vote (0-1, <= mask_threshold).
        min_votes: Votes needed before a decision is made.
        min_frames_tracked: Tracks matched in fewer frames are dropped as spurious (not counted as people).
        min_agreement: The majority must hold at least this share of the votes (0.5-1; 0.5 = plain majority).
        max_rejected_share: A track whose face-gate rejections exceed this share of its crops is undecided (0-1;
            1 turns the rule off).
    """

    mask_threshold: float = 0.7
    no_mask_threshold: float = 0.3
    min_votes: int = 3
    min_frames_tracked: int = 3
    min_agreement: float = 0.75
    max_rejected_share: float = 0.5

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


def decide(votes_mask: int, votes_no_mask: int, min_votes: int, min_agreement: float = 0.5) -> Decision:
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


@dataclass(slots=True)
class TrackVotes:
    """What one track has accumulated so far."""

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

    def add_score(self, score: float, rules: VotingRules) -> None:
        """Record one classifier score (0-1) of a face that passed the gate, and its vote, if any."""
        self.faces_classified += 1
        self.score_sum += float(score)
        if score > rules.mask_threshold:
            self.votes_mask += 1
        elif score < rules.no_mask_threshold:
            self.votes_no_mask += 1

    @property
    def decision(self) -> Decision:
        """The running majority for display, from one vote on.

        The final decision (:meth:`to_decision`) also applies ``min_votes`` and ``min_agreement``.
        """
        return decide(self.votes_mask, self.votes_no_mask, 1)

    def to_decision(self, camera_id: str, rules: VotingRules, ended_by: EndedBy = "tracker") -> PersonDecision:
        """The final record for this track (``undecided`` also when its crops were mostly rejected)."""
        decision = decide(self.votes_mask, self.votes_no_mask, rules.min_votes, rules.min_agreement)
        if self.faces_rejected > rules.max_rejected_share * (self.faces_classified + self.faces_rejected):
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
        )


class TrackLedger:
    """The votes of every live track of one camera; ends tracks into :class:`PersonDecision` records.

    Args:
        camera_id: Camera.
        rules: Voting thresholds.
    """

    def __init__(self, camera_id: str, rules: VotingRules | None = None) -> None:
        self.camera_id = camera_id
        self.rules = rules or VotingRules()
        self._tracks: dict[int, TrackVotes] = {}

    def observe(self, track_ids: list[int], frame_idx: int, capture_time_ns: int) -> None:
        """Note that these tracks matched a detection in this frame."""
        for tid in track_ids:
            tv = self._tracks.get(tid)
            if tv is None:
                tv = self._tracks[tid] = TrackVotes(tid, capture_time_ns, capture_time_ns, frame_idx, frame_idx)
            tv.last_seen_ns, tv.last_frame_idx = capture_time_ns, frame_idx
            tv.frames_tracked += 1

    def add_scores(self, track_ids: list[int], scores: list[float], accepted: list[bool] | None = None) -> None:
        """Add classifier scores (0-1) of faces, one per track id.

        Args:
            track_ids: The faces' tracks.
            scores: Their mask scores.
            accepted: Whether each crop passed the face gate (None: all did); a rejected crop casts no vote and
                counts in the track's ``faces_rejected``.

        Raises:
            ValueError: If lengths differ or a track was never observed.
        """
        ok = [True] * len(track_ids) if accepted is None else accepted
        if not len(track_ids) == len(scores) == len(ok):
            msg = (
                "track_ids, scores and accepted must have the same length, got "
                f"{len(track_ids)}, {len(scores)} and {len(ok)}"
            )
            raise ValueError(msg)
        for tid, s, a in zip(track_ids, scores, ok, strict=True):
            if tid not in self._tracks:
                msg = f"camera {self.camera_id!r}: score for unknown track {tid}"
                raise ValueError(msg)
            if a:
                self._tracks[tid].add_score(s, self.rules)
            else:
                self._tracks[tid].faces_rejected += 1

    def get(self, track_id: int) -> TrackVotes | None:
        """The live track's votes, if any."""
        return self._tracks.get(track_id)

    def end(self, track_ids: set[int] | None = None, ended_by: EndedBy = "tracker") -> list[PersonDecision]:
        """End these tracks (all when None) and return their decisions, dropping spurious short tracks."""
        ids = sorted(self._tracks if track_ids is None else track_ids & self._tracks.keys())
        out = []
        for tid in ids:
            tv = self._tracks.pop(tid)
            if tv.frames_tracked >= self.rules.min_frames_tracked:
                out.append(tv.to_decision(self.camera_id, self.rules, ended_by))
        return out

    def __len__(self) -> int:
        return len(self._tracks)
