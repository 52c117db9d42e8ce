"""District roll-up: the district's figure pools its people, survives duplicates, late records and its own restart."""

from __future__ import annotations

import json

import jsonschema
import pytest

from pipeline.district import DistrictRollup
from pipeline.prevalence import ClassifierValidation, lang_reiczigel
from pipeline.stats import CameraWindows, wilson_interval
from schemas.messages import CameraStats, DistrictStats, PersonDecision

T0 = 1_700_000_040 * 10**9  # a minute boundary of the UTC grid
MIN = 60 * 10**9
VALIDATION = ClassifierValidation(308, 314, 50, 53, "model card")
COVERAGE = {f"{p}{f}" for p in ("", "total_")
            for f in ("people_with_face", "decided", "coverage", "face_px_median", "low_coverage")}


def _people(camera_id: str, masked: int, unmasked: int, undecided: int = 0) -> list[PersonDecision]:
    out = []
    for i, decision in enumerate(["mask"] * masked + ["no_mask"] * unmasked + ["undecided"] * undecided):
        out.append(PersonDecision(
            decision_id=f"{camera_id}/{i}/0", camera_id=camera_id, track_id=i, first_seen_ns=0, last_seen_ns=1,
            first_frame_idx=0, last_frame_idx=1, frames_tracked=2, faces_classified=2, faces_rejected=0,
            votes_mask=2 * (decision == "mask"), votes_no_mask=2 * (decision == "no_mask"), mean_mask_score=0.5,
            decision=decision))  # type: ignore[arg-type]
    return out


class Camera:
    """A camera's statistics as the pipeline makes them (CameraWindows), one window per call."""

    def __init__(self, camera_id: str, district: str | None, validation: ClassifierValidation | None = VALIDATION):
        self.id = camera_id
        self.w = CameraWindows(camera_id, 60, validation, district)
        self.w.add([], T0)

    def window(self, minute: int, masked: int, unmasked: int, undecided: int = 0) -> CameraStats:
        """People of minute ``minute`` (from T0); returns that minute's record, published as the next one opens."""
        assert self.w.add(_people(self.id, masked, unmasked, undecided), T0 + minute * MIN + 1) == []
        (rec,) = self.w.advance(T0 + (minute + 1) * MIN + 2)
        return rec

    def final(self, minute: int) -> CameraStats:
        self.w.counters.camera_state = "ended"  # as CameraPipeline.close
        return self.w.close(T0 + minute * MIN + 3)


def test_a_district_pools_its_people_and_publishes_a_window_once_its_cameras_moved_on():
    roll = DistrictRollup(lateness_s=90)
    big, small, elsewhere = Camera("big", "d7"), Camera("small", "d7"), Camera("other", "d9")
    assert roll.add(small.window(0, masked=2, unmasked=0)) == []
    assert roll.add(big.window(0, masked=0, unmasked=18)) == []
    assert roll.add(elsewhere.window(0, masked=5, unmasked=5)) == []
    # Minute 0 is due once a camera of the district published a window ending 90 s after it.
    assert roll.add(big.window(1, masked=1, unmasked=0)) == []
    assert roll.add(small.window(1, masked=1, unmasked=1)) == []
    (rec,) = roll.add(big.window(2, masked=0, unmasked=0))
    assert (rec.district, rec.window_start_ns, rec.revision, rec.cameras, rec.cameras_total) == ("d7", T0, 0, 2, 2)
    assert (rec.people, rec.masked, rec.unmasked) == (20, 2, 18)
    # Pooled over the district's people: 2 of 20, not the mean of the cameras' fractions (1.0 and 0.0).
    assert rec.mask_fraction == pytest.approx(0.1)
    assert (rec.mask_fraction_low, rec.mask_fraction_high) == pytest.approx(wilson_interval(2, 20), abs=1e-6)
    est = lang_reiczigel(2, 20, VALIDATION)
    assert (rec.corrected_mask_fraction, rec.corrected_mask_fraction_low, rec.corrected_mask_fraction_high) == \
        pytest.approx(est, abs=1e-6)
    assert (rec.classifier_sensitivity, rec.classifier_specificity) == ("308/314", "50/53")
    # Totals: each camera's latest running totals (big: minutes 0-2, small: minutes 0-1).
    assert (rec.total_people, rec.total_masked, rec.total_unmasked) == (23, 4, 19)
    assert rec.cameras_running == 2
    jsonschema.validate(json.loads(rec.encode()), DistrictStats.json_schema())
    assert DistrictStats.decode(rec.encode()) == rec
    assert roll.districts == ["d7", "d9"]


def test_duplicates_change_nothing_and_a_late_record_republishes_its_window():
    roll = DistrictRollup(lateness_s=1)
    a, b = Camera("a", "d"), Camera("b", "d")
    a0 = a.window(0, 3, 1)
    assert roll.add(a0) == []
    (first,) = roll.add(a.window(1, 0, 0))  # b has not published minute 0 yet
    assert (first.window_start_ns, first.people, first.cameras, first.revision) == (T0, 4, 1, 0)
    assert roll.add(a0) == []  # Kafka re-delivered it: nothing new
    b0 = b.window(0, 0, 6)
    (late,) = roll.add(b0)  # late for minute 0, which was published: published again, complete
    assert (late.window_start_ns, late.people, late.masked, late.cameras, late.revision) == (T0, 10, 3, 2, 1)
    assert late.total_people == 10
    assert roll.add(b0) == []
    assert roll.add(b.window(1, 1, 0)) == []
    (minute1,) = roll.add(a.window(2, 0, 0))
    assert (minute1.people, minute1.cameras, minute1.total_people) == (1, 2, 11)
    # An old record delivered again late never takes the totals back.
    assert roll.add(a0) == []
    (minute2,) = roll.flush()
    assert (minute2.window_start_ns, minute2.total_people) == (T0 + 2 * MIN, 11)


def test_cameras_corrected_differently_leave_the_pooled_correction_null():
    roll = DistrictRollup(lateness_s=1)
    a, b = Camera("a", "d"), Camera("b", "d", ClassifierValidation(90, 100, 45, 50, "config"))
    roll.add(a.window(0, 2, 2))
    roll.add(b.window(0, 2, 2))
    (rec,) = roll.add(a.window(1, 0, 0))
    assert rec.mask_fraction == 0.5
    assert (rec.corrected_mask_fraction, rec.total_corrected_mask_fraction) == (None, None)
    assert rec.classifier_validation_source is None


def test_windows_are_published_when_every_camera_ended_or_went_quiet():
    roll = DistrictRollup(lateness_s=120)
    a, b = Camera("a", "d"), Camera("b", "d")
    assert roll.add(a.window(0, 1, 0)) == []
    assert roll.add(b.window(0, 0, 1)) == []
    assert roll.add(a.final(1)) == []
    (rec, last) = roll.add(b.final(1))  # both ended: nothing more will come
    assert (rec.window_start_ns, rec.people, last.window_start_ns, last.cameras_running) == (T0, 2, T0 + MIN, 0)
    quiet = DistrictRollup(lateness_s=10)
    c = Camera("c", "q")
    assert quiet.add(c.window(0, 1, 0)) == []
    assert quiet.tick(T0 + MIN + 5 * 10**9) == []
    (rec,) = quiet.tick(T0 + MIN + 11 * 10**9)
    assert rec.people == 1


def test_a_restarted_rollup_rebuilds_from_the_topics_without_publishing_a_window_twice():
    a, b = Camera("a", "d"), Camera("b", "d")
    camera_topic = [a.window(0, 1, 1), b.window(0, 2, 0), a.window(1, 1, 0), b.window(1, 0, 1)]
    first = DistrictRollup(lateness_s=1)
    published = [r for rec in camera_topic for r in first.add(rec)]
    assert [(r.window_start_ns, r.revision) for r in published] == [(T0, 0)]
    # The roll-up restarts: it reads its own latest record per district, then replays the camera topic.
    again = DistrictRollup(lateness_s=1)
    again.resume(published[-1])
    replayed = [r for rec in camera_topic for r in again.add(rec)]
    assert [(r.window_start_ns, r.revision) for r in replayed] == []  # minute 0 was published already
    (nxt,) = again.add(a.window(2, 0, 0))
    assert (nxt.window_start_ns, nxt.people, nxt.cameras, nxt.revision) == (T0 + MIN, 2, 2, 0)
    assert nxt.total_people == 6  # exact after the replay: both cameras' latest totals


def test_cameras_without_a_district_count_nowhere_and_a_moved_camera_counts_in_its_new_district():
    roll = DistrictRollup(lateness_s=0)
    none = Camera("n", None)
    assert roll.add(none.window(0, 5, 0)) == []
    assert roll.districts == []
    cam = Camera("m", "old")
    first = cam.window(0, 1, 0)
    (old,) = roll.add(first)  # lateness 0: published as soon as it comes
    assert (old.district, old.total_people) == ("old", 1)
    cam.w.district = "new"
    (new,) = roll.add(cam.window(1, 1, 0))
    assert (new.district, new.people, new.total_people) == ("new", 1, 2)  # its running totals moved with it
    assert roll.districts == ["new", "old"]
    assert roll.add(first) == []  # its old record again (at least once): the camera stays in its new district
    other = Camera("o", "old")
    (old_again,) = roll.add(other.window(0, 0, 1))  # late for minute 0 of "old": published again
    assert (old_again.revision, old_again.people, old_again.cameras) == (1, 2, 2)  # "m" was in "old" then
    assert (old_again.cameras_total, old_again.total_people) == (1, 1)  # ... and is not any more
    with pytest.raises(ValueError, match="lateness_s"):
        DistrictRollup(lateness_s=-1)


def _faces_window(cam: Camera, minute: int, spec: list[tuple[str, int, float | None]]) -> CameraStats:
    """Hand-made decisions (decision, crops that passed the gate, median face px) in minute ``minute``; its record."""
    from tests.test_voting_stats import hand_made

    assert cam.w.add(hand_made(spec, cam.id), T0 + minute * MIN + 1) == []
    (rec,) = cam.w.advance(T0 + (minute + 1) * MIN + 2)
    return rec


def test_a_district_pools_coverage_and_weighs_the_cameras_face_heights_by_their_people_with_a_face():
    roll, strict = DistrictRollup(lateness_s=0), DistrictRollup(lateness_s=0, min_coverage=0.7)
    a, b, c = Camera("a", "d"), Camera("b", "d"), Camera("c", "dark")
    # a: 2 masked (2 crops each, 30 px), 2 undecided with a face (30 px); b: 1 unmasked (3 crops, 80 px), 1 without
    # a face; c (another district): two people, no face.
    ra = _faces_window(a, 0, [("mask", 2, 30.0)] * 2 + [("undecided", 1, 30.0)] * 2)
    rb = _faces_window(b, 0, [("no_mask", 3, 80.0), ("undecided", 0, None)])
    rc = _faces_window(c, 0, [("undecided", 0, None)] * 2)
    assert (ra.people_with_face, ra.decided, ra.face_px_median, rb.people_with_face, rb.face_px_median) == (
        4, 2, 30.0, 1, 80.0)
    roll.add(ra)
    (rec,) = roll.add(rb)  # lateness 0: published again with b
    assert (rec.people, rec.people_with_face, rec.decided, rec.coverage) == (6, 5, 3, 0.6)
    # 30 px for a's 4 people with a face, 80 px for b's 1: the weighted median is 30, not the mean of the medians
    assert rec.face_px_median == 30.0
    assert rec.low_coverage is False
    assert (rec.total_people_with_face, rec.total_decided, rec.total_coverage, rec.total_face_px_median) == (
        5, 3, 0.6, 30.0)
    jsonschema.validate(json.loads(rec.encode()), DistrictStats.json_schema())
    (dark,) = roll.add(rc)
    assert (dark.district, dark.people, dark.people_with_face, dark.coverage, dark.face_px_median) == (
        "dark", 2, 0, None, None)
    assert dark.low_coverage is dark.total_low_coverage is True  # people seen, no face
    # The same records under stats.min_coverage 0.7: 0.6 is low.
    strict.add(ra)
    (flagged,) = strict.add(rb)
    assert (flagged.coverage, flagged.low_coverage, flagged.total_low_coverage) == (0.6, True, True)
    with pytest.raises(ValueError, match="min_coverage"):
        DistrictRollup(min_coverage=-0.1)


def test_old_records_upgrade_and_a_camera_of_unknown_coverage_never_pushes_it_over_one():
    roll = DistrictRollup(lateness_s=0)
    new, old = Camera("new", "d"), Camera("old", "d")
    roll.add(_faces_window(new, 0, [("mask", 3, 40.0), ("undecided", 1, 40.0)]))
    v7 = old.window(0, masked=2, unmasked=1, undecided=4).to_dict()
    v6 = {k: v for k, v in v7.items() if k not in COVERAGE} | {"schema_version": 6}
    upgraded = CameraStats.decode(CameraStats.upgrade(v6))
    assert (upgraded.people_with_face, upgraded.decided, upgraded.coverage) == (0, 3, None)
    (rec,) = roll.add(upgraded)
    # old's 3 decided people had a face (a lower bound of its people with a face); its 4 undecided are unknown.
    assert (rec.people_with_face, rec.decided, rec.coverage) == (5, 4, 0.8)
    assert rec.face_px_median == 40.0  # old knows no face height
    # A district record of version 1 reads as version 2, coverage unknown.
    v1 = {k: v for k, v in rec.to_dict().items() if k not in COVERAGE} | {"schema_version": 1}
    with pytest.raises(ValueError, match="schema_version"):
        DistrictStats.decode(v1)
    up = DistrictStats.decode(DistrictStats.upgrade(v1))
    jsonschema.validate(up.to_dict(), DistrictStats.json_schema())
    assert (up.people_with_face, up.decided, up.coverage, up.face_px_median, up.low_coverage) == (
        0, 4, None, None, False)
    assert (up.total_people_with_face, up.total_decided, up.total_coverage, up.total_low_coverage) == (
        0, 4, None, False)
    assert DistrictStats.upgrade(rec.to_dict()) == rec.to_dict()


def test_the_district_table_shows_coverage_and_flags_low_coverage():
    from pipeline.stats_reader import LOW_FLAG, format_district_table

    roll = DistrictRollup(lateness_s=0)
    (ok,) = roll.add(_faces_window(Camera("a", "lit"), 0, [("mask", 2, 30.0)] * 2))
    (dark,) = roll.add(_faces_window(Camera("c", "dark"), 0, [("undecided", 0, None)] * 2))
    lines = format_district_table({"lit": ok, "dark": dark}).splitlines()
    assert "coverage (decided/face)" in lines[0]
    row = {ln.split()[0]: ln for ln in lines[1:3]}
    assert "100% (2/2)" in row["lit"]
    assert LOW_FLAG not in row["lit"]
    assert f"- (0/0) {LOW_FLAG}" in row["dark"]
