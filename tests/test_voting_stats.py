import numpy as np
import pytest

from pipeline.stats import FACE_PX_MAX, CameraWindows, FaceHeights, wilson_interval
from pipeline.voting import TrackLedger, VotingRules, decide
from schemas.messages import PersonDecision

COUNTED = VotingRules().min_frames_tracked  # frames a track needs to count as a person

COVERAGE_FIELDS = {f"{p}{f}" for p in ("", "total_")
                   for f in ("people_with_face", "decided", "coverage", "face_px_median", "low_coverage")}


@pytest.mark.parametrize(
    ("mask", "no_mask", "min_votes", "expected"),
    [(0, 0, 3, "undecided"), (2, 0, 3, "undecided"), (3, 0, 3, "mask"), (1, 3, 3, "no_mask"),
     (2, 2, 3, "undecided"), (5, 4, 3, "mask")],
)
def test_majority_decision(mask, no_mask, min_votes, expected):
    assert decide(mask, no_mask, min_votes) == expected


def test_scores_between_thresholds_do_not_vote():
    ledger = TrackLedger("cam", VotingRules(mask_threshold=0.7, no_mask_threshold=0.3, min_votes=3,
                                           min_frames_tracked=1))
    ledger.observe([7], 0, 1_000)
    ledger.add_scores([7, 7, 7, 7, 7], [0.9, 0.5, 0.69, 0.31, 0.95])
    ledger.observe([7], 3, 2_000)
    (d,) = ledger.end({7})
    assert (d.votes_mask, d.votes_no_mask, d.faces_classified) == (2, 0, 5)
    assert d.decision == "undecided"  # 2 votes < min_votes
    assert d.decision_id == "cam/7/1000"
    assert d.first_frame_idx == 0
    assert d.last_frame_idx == 3
    assert d.mean_mask_score == pytest.approx(0.67)


def _track(ledger, tid, scores, accepted=None):
    for i in range(max(COUNTED, len(scores))):
        ledger.observe([tid], i, i * 100_000_000)
    ledger.add_scores([tid] * len(scores), scores, accepted)
    (d,) = ledger.end({tid})
    return d


def test_a_track_whose_faces_disagree_is_undecided():
    # A moving camera hands a track from a masked person (5 frames) to an unmasked one (4 frames): a plain
    # majority would count one "mask" person; the default rules leave it undecided.
    ledger = TrackLedger("cam")
    mixed = _track(ledger, 1, [0.95] * 5 + [0.05] * 4)
    assert (mixed.votes_mask, mixed.votes_no_mask, mixed.decision) == (5, 4, "undecided")
    # One person with a noisy classifier: 9 of 10 votes agree, so the decision stands.
    noisy = _track(ledger, 2, [0.95] * 9 + [0.05])
    assert noisy.decision == "mask"
    plain = TrackLedger("cam", VotingRules(min_agreement=0.5))
    assert _track(plain, 3, [0.95] * 5 + [0.05] * 4).decision == "mask"
    with pytest.raises(ValueError, match="min_agreement"):
        VotingRules(min_agreement=0.4)


def test_rejected_crops_cast_no_vote_and_are_counted():
    # Three backs of heads scored "no mask" by the classifier, rejected by the face gate: they must not turn a
    # masked person into an unmasked one.
    ledger = TrackLedger("cam")
    d = _track(ledger, 4, [0.9, 0.05, 0.95, 0.02, 0.9, 0.01], [True, False, True, False, True, False])
    assert (d.votes_mask, d.votes_no_mask, d.faces_classified, d.faces_rejected) == (3, 0, 3, 3)
    assert d.decision == "mask"
    assert d.mean_mask_score == pytest.approx(0.91667, abs=1e-5)
    with pytest.raises(ValueError, match="same length"):
        ledger.add_scores([4], [0.5], [True, False])


def test_track_with_mostly_rejected_crops_is_undecided():
    # queue_dark_masks.mp4, track 4: the back of a grey head. The gate rejects 9 of its 14 crops; the 5 that pass
    # are scored "no mask". They are the gate's errors, not a face: the person stays undecided.
    ledger = TrackLedger("cam")
    back = _track(ledger, 5, [0.03] * 14, [False] * 9 + [True] * 5)
    assert (back.votes_no_mask, back.faces_rejected, back.decision) == (5, 9, "undecided")
    # Half rejected is still decided: a face seen often enough.
    half = _track(ledger, 6, [0.95] * 8, [False] * 4 + [True] * 4)
    assert half.decision == "mask"
    off = TrackLedger("cam", VotingRules(max_rejected_share=1.0))
    assert _track(off, 7, [0.03] * 14, [False] * 9 + [True] * 5).decision == "no_mask"
    with pytest.raises(ValueError, match="max_rejected_share"):
        VotingRules(max_rejected_share=1.5)


def test_far_rejections_of_a_person_walking_toward_the_camera_do_not_undecide_their_near_faces():
    # crowd_toward_camera, track 33: rejected 77 times while deep in the blurred crowd (faces of 20-35 px), then 42
    # faces of about 50 px, all no mask. The rule counts only rejections at the sizes that voted.
    far, near = [25.0] * 70 + [50.0] * 7, [50.0] * 42
    scores, accepted = [0.05] * 119, [False] * 77 + [True] * 42
    every = VotingRules(rejected_min_face_frac=0.0)  # every rejection counts
    assert _track_px(TrackLedger("cam", every), 33, scores, accepted, far + near).decision == "undecided"
    rules = VotingRules()
    d = _track_px(TrackLedger("cam", rules), 33, scores, accepted, far + near)
    assert (d.decision, d.faces_rejected) == ("no_mask", 77)
    # A back of a head rejected at the size of the faces that voted still undecides the track.
    back = _track_px(TrackLedger("cam", rules), 5, [0.03] * 14, [False] * 9 + [True] * 5, [40.0] * 14)
    assert back.decision == "undecided"
    with pytest.raises(ValueError, match="rejected_min_face_frac"):
        VotingRules(rejected_min_face_frac=1.5)


def test_short_tracks_are_dropped_and_unknown_scores_raise():
    ledger = TrackLedger("cam", VotingRules(min_frames_tracked=3))
    ledger.observe([1], 0, 0)
    assert ledger.end() == []
    with pytest.raises(ValueError, match="unknown track"):
        ledger.add_scores([99], [0.5])


def test_bad_thresholds_raise():
    with pytest.raises(ValueError, match="no_mask_threshold"):
        VotingRules(mask_threshold=0.3, no_mask_threshold=0.7)


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    # Reference values: Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I,
    # method 3 (Wilson score without continuity correction): 81/263 -> 0.2553-0.3662, 15/148 -> 0.0624-0.1605,
    # 0/20 -> 0-0.1611, 1/29 -> 0.0061-0.1718.
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_interval_matches_newcombe(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


def test_wilson_interval_edge_cases():
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(3, 2)


def _decision(ledger, tid, score):
    for i in range(COUNTED):
        ledger.observe([tid], i, 0)
    ledger.add_scores([tid] * 3, [score] * 3)
    return ledger.end({tid})


def test_windows_align_to_utc_and_count_each_person_once():
    ledger = TrackLedger("cam")
    w = CameraWindows("cam", window_s=60)
    t0 = 1_700_000_000 * 10**9 + 5 * 10**9  # 5 s into a minute... of the epoch-aligned grid
    assert w.add(_decision(ledger, 1, 0.9), t0) == []
    assert w.add(_decision(ledger, 2, 0.1), t0 + 10**9) == []
    closed = w.add(_decision(ledger, 3, 0.9), t0 + 61 * 10**9)
    assert len(closed) == 1
    s = closed[0]
    assert s.window_start_ns % (60 * 10**9) == 0
    assert s.window_end_ns - s.window_start_ns == 60 * 10**9
    assert (s.people, s.masked, s.unmasked, s.total_people) == (2, 1, 1, 2)
    assert s.mask_fraction == 0.5
    assert s.mask_fraction_low < 0.5 < s.mask_fraction_high
    final = w.close(t0 + 62 * 10**9)
    assert final.final
    assert (final.people, final.total_people, final.total_masked) == (1, 3, 2)


def test_restore_continues_totals_and_counts_the_tracks_open_at_a_crash():
    ledger = TrackLedger("cam")
    before = CameraWindows("cam", window_s=60)
    t0 = 1_700_000_000 * 10**9
    before.add(_decision(ledger, 1, 0.9), t0)
    before.counters.open_tracks = 2  # two people in view when the process died
    last = before.add([], t0 + 61 * 10**9)[0]
    assert (last.total_people, last.open_tracks, last.tracks_lost) == (1, 2, 0)
    after = CameraWindows("cam", window_s=60)
    after.restore(last)
    again = after.close(t0 + 62 * 10**9)
    assert (again.total_people, again.tracks_lost) == (1, 2)  # never silently gone
    # A final record (graceful stop: every track decided) has none open; nothing more is lost.
    later = CameraWindows("cam", window_s=60)
    later.restore(again)
    assert later.close(t0 + 63 * 10**9).tracks_lost == 2
    with pytest.raises(ValueError, match="a record of camera 'cam'"):
        CameraWindows("other", window_s=60).restore(last)


def test_statistics_records_of_earlier_schema_versions_are_upgraded():
    from schemas.messages import CameraStats

    w = CameraWindows("cam", window_s=60, district="d7")
    t0 = 1_700_000_000 * 10**9
    w.add(hand_made([("mask", 3, 40.0), ("no_mask", 3, 60.0), ("undecided", 0, None)]), t0)
    v8 = w.close(t0 + 10**9).to_dict()
    assert v8["schema_version"] == 8
    v7 = v8 | {"schema_version": 7}  # 8 added the camera_state "removed" only
    v6 = {k: v for k, v in v7.items() if k not in COVERAGE_FIELDS} | {"schema_version": 6}
    v5 = {k: v for k, v in v6.items() if k != "district"} | {"schema_version": 5}
    v4 = {k: v for k, v in v5.items() if k not in ("open_tracks", "tracks_lost")} | {"schema_version": 4}
    for old in (v4, v5, v6, v7):
        with pytest.raises(ValueError, match="schema_version"):
            CameraStats.decode(old)
        up = CameraStats.decode(CameraStats.upgrade(old))
        assert (up.total_people, up.open_tracks, up.tracks_lost) == (3, 0, 0)
        assert up.district == (None if old in (v4, v5) else "d7")
        if old is v7:
            assert up.to_dict() == v8
            continue
        # Coverage was not measured before version 7: decided is known (masked + unmasked), the rest is not.
        assert (up.people_with_face, up.decided, up.coverage, up.face_px_median, up.low_coverage) == (
            0, 2, None, None, False)
        assert (up.total_people_with_face, up.total_decided, up.total_coverage, up.total_face_px_median,
                up.total_low_coverage) == (0, 2, None, None, False)
    assert CameraStats.upgrade(v8) == v8  # the current version passes unchanged


_seq = iter(range(10**6))


def hand_made(spec: list[tuple[str, int, float | None]], camera_id: str = "cam") -> list[PersonDecision]:
    """Hand-made decisions: (decision, crops that passed the face gate, median face height px or None)."""
    out = []
    for decision, faces, px in spec:
        i = next(_seq)
        out.append(PersonDecision(
            decision_id=f"{camera_id}/{i}/0", camera_id=camera_id, track_id=i, first_seen_ns=0, last_seen_ns=1,
            first_frame_idx=0, last_frame_idx=1, frames_tracked=5, faces_classified=faces, faces_rejected=0,
            votes_mask=faces * (decision == "mask"), votes_no_mask=faces * (decision == "no_mask"),
            mean_mask_score=0.5 if faces else None, decision=decision, face_px_median=px))  # type: ignore[arg-type]
    return out


def test_a_persons_face_height_is_the_median_of_its_accepted_crops():
    ledger = TrackLedger("cam")
    d = _track_px(ledger, 1, [0.9, 0.9, 0.05, 0.9], [True, True, False, True], [20.0, 31.0, 200.0, 24.5])
    assert (d.faces_classified, d.faces_rejected, d.face_px_median) == (3, 1, 24.5)  # the rejected 200 px not in
    none = _track_px(ledger, 2, [0.05, 0.05], [False, False], [30.0, 30.0])
    assert (none.faces_classified, none.face_px_median) == (0, None)
    unknown = _track(ledger, 3, [0.9] * 3)  # callers that give no heights: null, as before
    assert unknown.face_px_median is None
    ledger.observe([4], 0, 0)
    with pytest.raises(ValueError, match="same length"):
        ledger.add_scores([4], [0.5], [True], [20.0, 30.0])


def _track_px(ledger, tid, scores, accepted, px):
    for i in range(COUNTED):
        ledger.observe([tid], i, i * 100_000_000)
    ledger.add_scores([tid] * len(scores), scores, accepted, px)
    (d,) = ledger.end({tid})
    return d


def test_the_camera_pipeline_takes_the_faces_heights_from_the_head_boxes():
    from pipeline.camera import CameraPipeline, TrackedFrame
    from schemas.pose import Poses

    heads = np.array([[0, 0, 10, 12], [5, 5, 25, 35], [0, 10, 40, 50]], np.float32)
    tracked = TrackedFrame(Poses.empty("cam", 0, 0), heads, np.array([2, 0], np.int64), np.zeros((2, 4), np.float32))
    assert tracked.classify_face_px == [40.0, 12.0]
    cam = CameraPipeline("cam", (640, 360), 1.6)
    for i in range(COUNTED):
        cam.ledger.observe([1, 2], i, i)
    # mask, face and usable-face scores: track 2's second crop fails the face gate
    scores = np.array([[0.9, 0.9, 0.9], [0.9, 0.9, 0.9], [0.1, 0.9, 0.9], [0.1, 0.1, 0.9]], np.float32)
    cam.add_scores([1, 1, 2, 2], scores, [30.0, 40.0, 18.0, 90.0])
    one, two = cam.ledger.end()
    assert (one.face_px_median, two.face_px_median, two.faces_rejected) == (35.0, 18.0, 1)
    cam.ledger.observe([3], 0, 0)
    cam.add_scores([3], scores[:1])  # the old call, without heights, still works
    with pytest.raises(ValueError, match="same length"):
        cam.add_scores([3], scores[:1], [1.0, 2.0])


def test_face_heights_are_a_bounded_histogram():
    h = FaceHeights()
    assert (h.median(), h.count) == (None, 0)
    for px in range(5000):
        h.add(px + 0.3)
    assert len(h._bins) == FACE_PX_MAX + 1  # constant memory, however many faces
    assert h.median() == FACE_PX_MAX  # most of them were taller than the last bin
    even = FaceHeights()
    even.add(20, 2)
    even.add(31, 2)
    even.add(99, 0)  # no weight: nothing
    assert (even.median(), even.count) == (25.5, 4)


def test_records_say_how_much_the_fraction_rests_on():
    t0 = 1_700_000_040 * 10**9
    w = CameraWindows("cam", window_s=60)
    # Minute 0: a masked person (4 crops passed the gate, faces 30 px), an unmasked one (2 crops, 50 px), one
    # undecided with a face (1 crop, 20 px), one never showing a face.
    assert w.add(hand_made([("mask", 4, 30.0), ("no_mask", 2, 50.0), ("undecided", 1, 20.0),
                          ("undecided", 0, None)]), t0) == []
    # Minute 1: two people with faces, neither decided.
    (m0,) = w.add(hand_made([("undecided", 3, 40.0), ("undecided", 1, 60.0)]), t0 + 60 * 10**9)
    assert (m0.people, m0.people_with_face, m0.decided) == (4, 3, 2)
    assert m0.coverage == pytest.approx(2 / 3, abs=1e-6)
    assert m0.face_px_median == 30.0  # crops: 20, 30 x4, 50 x2
    assert m0.low_coverage is False
    # Minute 2: one person, no face at all.
    (m1,) = w.add(hand_made([("undecided", 0, None)]), t0 + 120 * 10**9)
    assert (m1.people, m1.people_with_face, m1.decided, m1.coverage) == (2, 2, 0, 0.0)
    assert (m1.face_px_median, m1.low_coverage) == (40.0, True)  # crops 40 x3, 60: (40 + 40) / 2
    assert (m1.total_people, m1.total_people_with_face, m1.total_decided, m1.total_coverage) == (6, 5, 2, 0.4)
    assert m1.total_face_px_median == 40.0  # 20, 30 x4, 40 x3, 50 x2, 60: the 6th of 11
    assert m1.total_low_coverage is False
    m2 = w.close(t0 + 121 * 10**9)
    assert (m2.people, m2.people_with_face, m2.coverage, m2.face_px_median) == (1, 0, None, None)
    assert m2.low_coverage is True  # people seen, none with a face
    assert (m2.total_people, m2.total_people_with_face, m2.total_coverage) == (7, 5, 0.4)
    empty = CameraWindows("idle", window_s=60).close(t0)
    assert (empty.people, empty.coverage, empty.low_coverage, empty.total_low_coverage) == (0, None, False, False)


@pytest.mark.parametrize(("min_coverage", "low"), [(0.0, False), (0.4, False), (0.41, True), (1.0, True)])
def test_low_coverage_flips_at_min_coverage(min_coverage, low):
    w = CameraWindows("cam", window_s=60, min_coverage=min_coverage)
    w.add(hand_made([("mask", 3, 30.0), ("no_mask", 3, 30.0)] + [("undecided", 1, 30.0)] * 3), 0)
    rec = w.close(1)
    assert rec.coverage == rec.total_coverage == 0.4
    assert rec.low_coverage is rec.total_low_coverage is low


def test_min_coverage_out_of_range_raises():
    with pytest.raises(ValueError, match="min_coverage"):
        CameraWindows("cam", window_s=60, min_coverage=1.5)


def test_restore_carries_the_coverage_totals_on():
    t0 = 1_700_000_040 * 10**9
    before = CameraWindows("cam", window_s=60)
    before.counters.faces_classified = 6
    before.add(hand_made([("mask", 4, 30.0), ("undecided", 2, 30.0)]), t0)
    last = before.close(t0 + 1)
    assert (last.total_people_with_face, last.total_decided, last.total_face_px_median) == (2, 1, 30.0)
    after = CameraWindows("cam", window_s=60)
    after.restore(last)
    after.add(hand_made([("undecided", 2, 60.0), ("undecided", 1, 60.0)]), t0 + 60 * 10**9)
    again = after.close(t0 + 61 * 10**9)
    assert (again.total_people_with_face, again.total_decided, again.total_coverage) == (4, 1, 0.25)
    assert again.total_low_coverage is True
    # The 6 crops before the restart count at their median (30 px), the 3 after at 60 px.
    assert again.total_face_px_median == 30.0
    assert after.total.with_face == 4
    # A record from before version 7 (upgraded) knows no people with a face: its decided people stand for them.
    from schemas.messages import CameraStats

    v6 = {k: v for k, v in last.to_dict().items() if k not in COVERAGE_FIELDS} | {"schema_version": 6}
    old = CameraStats.decode(CameraStats.upgrade(v6))
    upgraded = CameraWindows("cam", window_s=60)
    upgraded.restore(old)
    assert upgraded.close(t0 + 62 * 10**9).total_coverage == 1.0  # 1 decided / at least 1 with a face, not > 1


def test_the_stats_table_shows_coverage_and_flags_low_coverage():
    from pipeline.stats_reader import COVERAGE_NOTE, LOW_FLAG, format_table

    strong, weak = CameraWindows("strong", window_s=60), CameraWindows("weak", window_s=60)
    strong.add(hand_made([("mask", 3, 40.0)] * 3 + [("no_mask", 3, 41.0)] * 3 + [("undecided", 2, 20.0)] * 2), 0)
    weak.add(hand_made([("mask", 3, 12.0)] * 3 + [("undecided", 1, 12.0)] * 9), 0)
    table = format_table({"strong": strong.close(1), "weak": weak.close(1)})
    lines = table.splitlines()
    assert "coverage (decided/face)" in lines[0]
    row = {ln.split()[0]: ln for ln in lines[1:3]}
    assert "75% (6/8)" in row["strong"]  # 6 decided of 8 with a face
    assert LOW_FLAG not in row["strong"]
    assert f"25% (3/12) {LOW_FLAG}" in row["weak"]  # 3 of 12: the flag right after the number
    assert row["weak"].index("100% [") < row["weak"].index("25% (3/12)")  # next to the fraction it qualifies
    assert lines[-1] == COVERAGE_NOTE  # and what it means, under the table
    assert COVERAGE_NOTE not in format_table({"strong": strong.close(2)})


def test_weighted_votes_let_a_near_confident_face_outweigh_two_far_doubtful_ones():
    # One near face (60 px) scored 0.95, two far ones (20 px) scored 0.25: by count no mask wins 2 to 1.
    scores, accepted, px = [0.95, 0.25, 0.25], [True] * 3, [60.0, 20.0, 20.0]
    decisions = {}
    for weight in ("count", "confidence", "face_px", "face_px_confidence"):
        d = _track_px(TrackLedger("cam", VotingRules(vote_weight=weight)), 1, scores, accepted, px)
        decisions[weight] = d.decision
        assert (d.votes_mask, d.votes_no_mask) == (1, 2)  # the records still count votes
    # confidence: 0.9 against 2 x 0.5 -> no majority of 0.6; face_px: 60 against 40; product: 54 against 20.
    assert decisions == {"count": "no_mask", "confidence": "undecided", "face_px": "mask",
                         "face_px_confidence": "mask"}
    with pytest.raises(ValueError, match="vote_weight must be one of"):
        VotingRules(vote_weight="loudness")  # type: ignore[arg-type]
    # min_votes still counts votes, whatever they weigh.
    one = _track_px(TrackLedger("cam", VotingRules(vote_weight="face_px", min_votes=2)), 2, [0.95], [True], [90.0])
    assert one.decision == "undecided"
