"""MOTChallenge tracks: writer/reader round trip, clear errors, and the tracking metrics on a hand-checked case."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from maskwatch.evaluation.tracking import evaluate_tracks
from pipeline.mot import mot_lines, read_mot, write_mot_lines
from schemas.pose import NO_TRACK, Poses


def _poses(frame_idx, boxes, track_ids, scores):
    n = len(boxes)
    return Poses("cam", frame_idx, 0, np.asarray(scores, np.float32), np.asarray(boxes, np.float32).reshape(n, 4),
                 np.zeros((n, 17, 3), np.float32), np.asarray(track_ids, np.int64))


def test_writer_reader_round_trip(tmp_path):
    frames = [
        _poses(0, [[10, 20, 40, 100], [200.5, 30.25, 230.5, 130.75]], [3, NO_TRACK], [0.9, 0.8]),
        _poses(1, [], [], []),
        _poses(4, [[12, 21, 42, 101]], [3], [0.875]),
    ]
    path = tmp_path / "tracks.txt"
    with path.open("w") as fh:
        for p in frames:
            write_mot_lines(fh, mot_lines(p))
    assert path.read_text().splitlines() == [
        # frame_idx 0 -> MOT frame 1, x/y 1-based (MOTChallenge); the untracked row is left out
        "1,3,11.00,21.00,30.00,80.00,0.9000,-1,-1,-1",
        "5,3,13.00,22.00,30.00,80.00,0.8750,-1,-1,-1",
    ]
    rows = read_mot(path)
    np.testing.assert_allclose(rows, [[1, 3, 11, 21, 30, 80, 0.9], [5, 3, 13, 22, 30, 80, 0.875]])
    # py-motmetrics' own reader (which converts to 0-based) gets back the original bbox_xyxy.
    import motmetrics as mm

    df = mm.io.loadtxt(str(path), fmt="mot15-2D")
    np.testing.assert_allclose(df[["X", "Y", "Width", "Height"]].to_numpy(), [[10, 20, 30, 80], [12, 21, 30, 80]])
    assert df.index.get_level_values("FrameId").tolist() == [1, 5]


@pytest.mark.parametrize(
    ("text", "match"),
    [("1,2,3\n", "at least 7"), ("1,2,a,4,5,6,1\n", "numbers"), ("0,1,1,1,5,5,1\n", "1-based"),
     ("1,1,1,1,-5,5,1\n", "width and height")],
)
def test_reader_names_file_line_and_problem(tmp_path, text, match):
    path = tmp_path / "bad.txt"
    path.write_text("1,1,0,0,10,10,1,-1,-1,-1\n" + text)
    with pytest.raises(ValueError, match=match) as err:
        read_mot(path)
    assert f"{path}:2:" in str(err.value)


# Two ground-truth people, A (id 1) and B (id 2), over 4 frames; tracks: B missed in frame 2 and re-found as a new
# id in frame 3 (1 miss, 1 switch), one false positive in frame 4.
GT = np.array([[f, 1, f - 1, 0, 10, 10, 1] for f in (1, 2, 3, 4)]
              + [[f, 2, 99 + f, 0, 10, 10, 1] for f in (1, 2, 3, 4)],
              float)
TRACKS = np.array(
    [[f, 7, f - 1, 0, 10, 10, 1] for f in (1, 2, 3, 4)]
    + [[1, 8, 100, 0, 10, 10, 1], [3, 9, 102, 0, 10, 10, 1], [4, 9, 103, 0, 10, 10, 1], [4, 5, 300, 300, 10, 10, 1]],
    float,
)


def test_metrics_on_a_hand_checked_case():
    m = evaluate_tracks(TRACKS, GT)
    # 8 GT boxes; misses 1, false positives 1, switches 1 -> MOTA = 1 - 3/8.
    assert (m.gt_boxes, m.track_boxes, m.misses, m.false_positives, m.id_switches) == (8, 8, 1, 1, 1)
    assert m.mota == pytest.approx(0.625)
    # IDF1: best one-to-one identity map A-7 (4 boxes), B-9 (2 boxes): IDTP 6, 2*6 / (8 GT + 8 track boxes).
    assert m.idf1 == pytest.approx(0.75)
    assert (m.precision, m.recall) == pytest.approx((7 / 8, 7 / 8))
    assert (m.gt_ids, m.distinct_track_ids, m.mostly_tracked) == (2, 4, 1)  # B tracked 3/4 < 80%
    assert m.counted_track_ids == 1  # only id 7 has >= 4 boxes (voting.min_frames_tracked)
    assert evaluate_tracks(TRACKS, GT, min_track_frames=2).counted_track_ids == 2


def test_iou_threshold_and_ignored_ground_truth():
    shifted = TRACKS.copy()
    shifted[:4, 2] += 4  # A's track boxes now overlap A by IoU 6/14 = 0.43 < 0.5: misses + false positives
    m = evaluate_tracks(shifted, GT)
    assert m.misses == 5
    assert m.false_positives == 5
    assert evaluate_tracks(shifted, GT, min_iou=0.4).misses == 1
    ignored = GT.copy()
    ignored[4:, 6] = 0  # B marked "not considered": only A counts
    assert evaluate_tracks(TRACKS[:4], ignored).mota == pytest.approx(1.0)


def test_ground_truth_labelled_every_nth_frame():
    # Labels at frames 1 and 3 only: the tracks on frames 2 and 4 are not false positives, and B's new id at frame 3
    # is one switch between the labelled frames.
    sparse = GT[np.isin(GT[:, 0], (1, 3))]
    m = evaluate_tracks(TRACKS, sparse, gt_frames_only=True)
    assert (m.frames, m.gt_boxes, m.track_boxes, m.misses, m.false_positives, m.id_switches) == (2, 4, 4, 0, 0, 1)
    assert m.distinct_track_ids == 3  # ids up to frame 3, the last labelled one: 7, 8, 9
    dense = evaluate_tracks(TRACKS, sparse)
    assert (dense.frames, dense.false_positives) == (3, 1)  # evaluated densely, frame 2's box of A matches nothing


def test_eval_tracking_cli(tmp_path):
    for name, arr in (("t.txt", TRACKS), ("gt.txt", GT)):
        np.savetxt(tmp_path / name, arr, fmt="%g", delimiter=",")
    cmd = [sys.executable, "-m", "maskwatch.cli", "eval-tracking", "--tracks", str(tmp_path / "t.txt"),
           "--gt", str(tmp_path / "gt.txt")]
    out = json.loads(subprocess.run([*cmd, "--json"], capture_output=True, text=True, check=True).stdout)
    assert out["mota"] == pytest.approx(0.625)
    assert out["distinct_track_ids"] == 4
    assert out["gt_ids"] == 2
    bad = subprocess.run([*cmd[:-1], str(tmp_path / "missing.txt")], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "missing.txt" in bad.stderr
    assert "Traceback" not in bad.stderr
