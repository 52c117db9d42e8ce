import pytest

from pipeline.stats import CameraWindows, wilson_interval
from pipeline.voting import TrackLedger, VotingRules, decide


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
    for i in range(max(3, len(scores))):
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
    ledger.observe([tid], 0, 0)
    ledger.observe([tid], 1, 0)
    ledger.observe([tid], 2, 0)
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
    before.open_tracks = 2  # two people in view when the process died
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

    v6 = CameraWindows("cam", window_s=60, district="d7").close(1_700_000_000 * 10**9).to_dict()
    v5 = {k: v for k, v in v6.items() if k != "district"} | {"schema_version": 5}
    v4 = {k: v for k, v in v5.items() if k not in ("open_tracks", "tracks_lost")} | {"schema_version": 4}
    for old in (v4, v5):
        with pytest.raises(ValueError, match="schema_version"):
            CameraStats.decode(old)
        up = CameraStats.decode(CameraStats.upgrade(old))
        assert (up.total_people, up.open_tracks, up.tracks_lost, up.district) == (v6["total_people"], 0, 0, None)
    assert CameraStats.decode(CameraStats.upgrade(v6)).district == "d7"
