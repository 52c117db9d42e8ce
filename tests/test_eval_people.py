import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from maskwatch.cli import main
from maskwatch.evaluation.people import LABEL_COLUMNS, evaluate_video, format_table, identity_metrics, read_labels

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"


def write_labels(path, rows):
    path.write_text(",".join(LABEL_COLUMNS) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


# Person 1 (masked) walks right from x=100, person 2 (unmasked) stands at x=500, person 3 only shows their back.
# Boxes every 30 frames; frames 0-90.
LABELS = [(f, 1, 100 + f, 50, 160 + f, 250, "mask") for f in (0, 30, 60, 90)] + [
    (f, 2, 500, 60, 560, 260, "no_mask" if f else "unsure") for f in (0, 30, 60, 90)] + [
    (f, 3, 300, 100, 340, 220, "no_face") for f in (0, 30)]


def track_rows(tid, frames, box_of):
    """MOTChallenge rows (1-based frame and pixels) of a track with ``box_of(frame) -> xyxy`` (0-based)."""
    return [[f + 1, tid, x1 + 1, y1 + 1, x2 - x1, y2 - y1, 0.9] for f in frames for x1, y1, x2, y2 in [box_of(f)]]


def person1(f):
    return (100 + f, 50, 160 + f, 250)


def decision(tid, first, last, d):
    return {"camera_id": "cam", "track_id": tid, "first_frame_idx": first, "last_frame_idx": last, "decision": d}


def test_each_person_counted_once_decided_right(tmp_path):
    labels = read_labels(write_labels(tmp_path / "v.csv", LABELS))
    tracks = np.array(track_rows(1, range(0, 91, 3), person1) + track_rows(2, range(0, 91, 3),
                                                                             lambda f: (502, 58, 561, 262)), float)
    res = evaluate_video(labels, tracks, [decision(1, 0, 90, "mask"), decision(2, 0, 90, "no_mask")])
    assert (res.people, res.people_with_face, res.people_found) == (3, 2, 2)
    assert res.tracks_per_person == 1.0
    assert res.coverage == 1.0
    assert (res.sensitivity, res.specificity, res.wrong_decisions) == (1.0, 1.0, 0)
    assert res.published_fraction == 0.5
    assert res.labelled_fraction == 0.5


def test_a_broken_track_counts_the_person_twice_and_a_wrong_decision_counts(tmp_path):
    labels = read_labels(write_labels(tmp_path / "v.csv", LABELS))
    # Person 1's track breaks at frame 45 and a second track carries on; person 2 is decided mask (wrong); a track
    # on nobody labelled is unmatched.
    tracks = np.array(track_rows(1, range(0, 45, 3), person1) + track_rows(4, range(48, 91, 3), person1)
                      + track_rows(2, range(0, 91, 3), lambda f: (500, 60, 560, 260))
                      + track_rows(9, range(0, 30, 3), lambda f: (5, 5, 40, 90)), float)
    decs = [decision(1, 0, 42, "mask"), decision(4, 48, 90, "undecided"), decision(2, 0, 90, "mask"),
            decision(9, 0, 27, "no_mask"), decision(7, 200, 260, "mask")]  # 7: after the labelled frames
    res = evaluate_video(labels, tracks, decs)
    assert res.decisions == 4
    assert res.decisions_unmatched == 1
    assert res.tracks_per_person == 3 / 2
    assert res.per_person[1]["tracks"] == 2
    assert res.per_person[1]["decision"] == "mask"
    assert (res.masked_right, res.masked_decided, res.unmasked_right, res.unmasked_decided) == (1, 1, 0, 1)
    assert res.wrong_decisions == 1
    assert res.published_fraction == pytest.approx(2 / 3)  # what the camera would publish: 2 mask of 3 decided


def test_one_track_over_two_people_belongs_to_the_one_it_followed_longest(tmp_path):
    labels = read_labels(write_labels(tmp_path / "v.csv", LABELS))
    box = lambda f: person1(f) if f < 70 else (500, 60, 560, 260)  # noqa: E731 - jumps to person 2 at frame 70
    res = evaluate_video(labels, np.array(track_rows(1, range(0, 91, 3), box), float), [decision(1, 0, 90, "mask")])
    assert res.mixed_tracks == 1
    assert res.per_person[1]["tracks"] == 1
    assert res.per_person[2]["tracks"] == 0
    # On the labelled frames (0, 30, 60, 90; 10 labelled boxes), track 1 has 4 boxes: person 1's at 0-60 and
    # person 2's at 90. No person changes track (0 switches), but the track's identity holds for 3 boxes only:
    # IDF1 = 2 x 3 / (10 + 4).
    m = identity_metrics(labels, np.array(track_rows(1, range(0, 91, 3), box), float))
    assert (m.frames, m.gt_boxes, m.track_boxes, m.id_switches) == (4, 10, 4, 0)
    assert m.idf1 == pytest.approx(6 / 14)
    # A second track taking person 1 over from frame 45 is one switch.
    two = track_rows(1, range(0, 45, 3), person1) + track_rows(2, range(45, 91, 3), person1)
    assert identity_metrics(labels, np.array(two, float)).id_switches == 1


def test_a_person_whose_mask_goes_on_is_mixed_and_either_decision_is_not_wrong(tmp_path):
    rows = [(f, 1, 100, 50, 160, 250, "no_mask" if f < 60 else "mask") for f in (0, 30, 60, 90)]  # 2 and 2
    labels = read_labels(write_labels(tmp_path / "v.csv", rows))
    res = evaluate_video(labels, np.array(track_rows(1, range(0, 91, 3), lambda f: (100, 50, 160, 250)), float),
                         [decision(1, 0, 90, "no_mask")])
    assert labels.truth(1) == "mixed"
    assert res.wrong_decisions == 0
    assert res.people_decided == 1
    assert res.labelled_fraction is None


@pytest.mark.parametrize(("row", "match"), [
    ("0,1,1,1,9,9,masked", r"v.csv:2: mask must be one of mask, no_mask, unsure, no_face, got 'masked'"),
    ("0,1,9,1,1,9,mask", r"v.csv:2: expected frame_idx >= 0 and x2 > x1"),
    ("zero,1,1,1,9,9,mask", r"v.csv:2: expected integers frame_idx, person_id"),
])
def test_bad_label_rows_are_named(tmp_path, row, match):
    (tmp_path / "v.csv").write_text(",".join(LABEL_COLUMNS) + "\n" + row + "\n")
    with pytest.raises(ValueError, match=match):
        read_labels(tmp_path / "v.csv")


def test_cli_prints_the_table_and_json(tmp_path):
    lab = write_labels(tmp_path / "cam.csv", LABELS)
    tracks = tmp_path / "t.txt"
    tracks.write_text("\n".join(",".join(map(str, r)) + ",-1,-1,-1" for r in track_rows(1, range(0, 91, 3), person1)))
    decs = tmp_path / "d.jsonl"
    decs.write_text(json.dumps({"topic": "maskwatch.decisions", "key": "cam", "value": decision(1, 0, 90, "mask")})
                    + "\n" + json.dumps({"topic": "maskwatch.camera-stats", "key": "cam", "value": {"final": True}}))
    args = ["eval-people", "--tracks", str(tracks), "--decisions", str(decs), "--labels", str(lab)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "coverage" in r.output.splitlines()[0]
    assert r.output.splitlines()[1].startswith("cam ")
    assert "IDF1" in r.output.splitlines()[3]
    r = CliRunner().invoke(main, [*args, "--json"])
    out = json.loads(r.output)
    assert out["cam"]["coverage"] == 0.5
    assert out["cam"]["identity"]["idf1"] == pytest.approx(2 * 4 / (10 + 4))  # frames 0-90: person 1's 4 boxes
    assert out["cam"]["sensitivity_ci95"][1] == 1.0
    r = CliRunner().invoke(main, [*args, "--labels", str(lab)])
    assert r.exit_code != 0
    assert "expected one --tracks per --labels (2)" in r.output


@pytest.mark.parametrize("path", sorted((ROOT / "data" / "labels" / "people").glob("*.csv")), ids=lambda p: p.stem)
def test_shipped_people_labels_are_valid_and_inside_their_video(path):
    labels = read_labels(path)
    assert labels.people, f"{path}: no people"
    video = VIDEOS / f"{path.stem}.mp4"
    if not video.is_file():
        pytest.skip(f"shared video {video} not present (../shared/data/videos)")
    import cv2

    cap = cv2.VideoCapture(str(video))
    w, h, n = (int(cap.get(p)) for p in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    for r in labels.rows:
        assert r.frame_idx < n, r
        assert min(r.x1, r.y1) >= -2, r
        assert r.x2 <= w + 2, r
        assert r.y2 <= h + 2, r


def test_a_mask_put_on_early_makes_a_masked_person(tmp_path):
    rows = [(f, 1, 100, 50, 160, 250, "no_mask" if f < 30 else "mask") for f in (0, 30, 60, 90)]
    assert read_labels(write_labels(tmp_path / "v.csv", rows)).truth(1) == "mask"


def test_a_contrary_decision_on_an_unlabelled_track_counts_where_everyone_labelled_shares_a_state(tmp_path):
    rows = [(f, 1, 100, 50, 160, 250, "mask") for f in (0, 30)] + [(f, 2, 400, 50, 460, 250, "mask") for f in (0, 30)]
    labels = read_labels(write_labels(tmp_path / "v.csv", rows))
    tracks = np.array(track_rows(5, range(0, 31, 3), lambda f: (600, 50, 640, 150)), float)  # nobody labelled there
    res = evaluate_video(labels, tracks, [decision(5, 0, 30, "no_mask")])
    assert (res.decisions_unmatched, res.contrary_to_video, res.wrong_decisions) == (1, 1, 0)
    assert "0+1+0" in format_table([res]).splitlines()[1]
    assert res.wrong == 1


def test_a_decision_on_a_person_whose_face_never_showed_is_wrong(tmp_path):
    labels = read_labels(write_labels(tmp_path / "v.csv", LABELS))
    tracks = np.array(track_rows(3, range(0, 31, 3), lambda f: (300, 100, 340, 220)), float)  # person 3: backs
    res = evaluate_video(labels, tracks, [decision(3, 0, 30, "no_mask")])
    assert (res.faceless_decisions, res.wrong, res.people_decided) == (1, 1, 0)
