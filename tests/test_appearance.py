import cv2
import numpy as np
import pytest

from pipeline.appearance import EMBEDDING_DIM, find_switch, histogram_distance, torso_boxes, torso_embeddings
from pipeline.tracking import CameraTracker, TrackerParams


def person(x, y, conf=0.9):
    """COCO-17 keypoints of a standing person centred at (x, y): shoulders 40 px apart, hips 80 px below them."""
    kp = np.zeros((17, 3), np.float32)
    kp[:, 2] = conf
    kp[:5, :2] = [x, y - 110]  # face
    kp[5:11, :2] = [[x + 20, y - 80], [x - 20, y - 80], [x + 25, y - 40], [x - 25, y - 40], [x + 25, y], [x - 25, y]]
    kp[11:, :2] = [[x + 15, y], [x - 15, y], [x + 15, y + 60], [x - 15, y + 60], [x + 15, y + 120], [x - 15, y + 120]]
    return kp


def frame_with(people_bgr, size=(640, 360), noise_seed=0):
    """A grey street with each (x, y, BGR) person's torso painted in its colour, plus pixel noise."""
    img = np.full((size[1], size[0], 3), 110, np.uint8)
    for x, y, bgr in people_bgr:
        cv2.rectangle(img, (x - 22, y - 82), (x + 22, y + 2), bgr, -1)
    noise = np.random.default_rng(noise_seed).integers(-12, 13, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


RED, BLUE = (30, 30, 200), (200, 60, 20)


def test_torso_box_spans_shoulders_and_hips_and_needs_both_shoulders():
    kp = np.stack([person(100, 200), person(300, 200)])
    kp[1, 6, 2] = 0.1  # right shoulder not seen
    boxes = torso_boxes(kp)
    assert boxes[0].tolist() == pytest.approx([84.0, 120.0, 116.0, 200.0])
    assert boxes[1].tolist() == [0, 0, 0, 0]


def test_embeddings_tell_colours_apart_and_skip_invisible_torsos():
    kp = np.stack([person(100, 200), person(300, 200), person(500, 200)])
    kp[2, 5, 2] = 0.0
    a = torso_embeddings(frame_with([(100, 200, RED), (300, 200, BLUE)]), kp)
    b = torso_embeddings(frame_with([(100, 200, RED), (300, 200, BLUE)], noise_seed=1), kp)
    assert a[0].shape == (EMBEDDING_DIM,)
    assert a[0].sum() == pytest.approx(1.0)
    assert a[2] is None
    assert histogram_distance(a[0], b[0]) < 0.2  # the same red shirt in another frame
    assert histogram_distance(a[0], a[1]) > 0.8  # red vs blue
    assert histogram_distance(a[0], None) == 1.0


def test_find_switch_cuts_where_the_colours_change_and_not_in_one_person():
    kp = person(100, 200)[None]
    red = [torso_embeddings(frame_with([(100, 200, RED)], noise_seed=i), kp)[0] for i in range(6)]
    blue = [torso_embeddings(frame_with([(100, 200, BLUE)], noise_seed=i), kp)[0] for i in range(5)]
    assert find_switch(red + blue) == 6
    assert find_switch(red + red) is None
    assert find_switch(red[:2] + blue[:2]) is None  # too short to tell


def _run(frames, params):
    trk = CameraTracker((640, 360), params)
    return [trk.step(f, kp, None, img).tolist() for f, kp, img in frames]


@pytest.mark.parametrize(("colour_after", "reid", "same_id"), [
    (RED, 40, True),  # the same person comes back after an occlusion: one id
    (BLUE, 40, False),  # someone else appears there: a new id
    (RED, 0, False),  # without re-identification the person counts twice
])
def test_reid_gives_a_returning_person_their_id_back(colour_after, reid, same_id):
    params = TrackerParams(initialization_delay=1, hit_counter_max=4, reid_hit_counter_max=reid, reid_model=None)
    frames = []
    for f in range(30):
        if f < 8:
            x, colour = 100 + 4 * f, RED
        elif f < 18:  # hidden for 10 frames, longer than hit_counter_max
            frames.append((f, np.zeros((0, 17, 3), np.float32), frame_with([])))
            continue
        else:
            x, colour = 100 + 4 * f, colour_after
        frames.append((f, person(x, 200)[None], frame_with([(x, 200, colour)], noise_seed=f)))
    ids = [t[0] for t in _run(frames, params) if t and t[0] != -1]
    first, last = ids[0], ids[-1]
    assert (first == last) is same_id


def test_a_track_that_followed_two_people_is_cut_and_each_part_decided():
    from pipeline.voting import TrackLedger, VotingRules

    kp = person(100, 200)[None]
    red = [torso_embeddings(frame_with([(100, 200, RED)], noise_seed=i), kp)[0] for i in range(8)]
    blue = [torso_embeddings(frame_with([(100, 200, BLUE)], noise_seed=i), kp)[0] for i in range(8)]
    decisions = {}
    for split in (1.0, 0.4):
        ledger = TrackLedger("cam", VotingRules(split_min_distance=split))
        for f, emb in enumerate(red + blue):
            ledger.observe([7], f * 3, f * 100_000_000, [emb])
            ledger.add_scores([7], [0.95 if f < 8 else 0.05], [True], [40.0])
        decisions[split] = ledger.end()
    (whole,) = decisions[1.0]
    assert whole.decision == "undecided"
    assert whole.votes_mask == whole.votes_no_mask == 8
    first, second = decisions[0.4]
    assert (first.decision, first.first_frame_idx, first.last_frame_idx, first.frames_tracked) == ("mask", 0, 21, 8)
    assert (second.decision, second.first_frame_idx, second.last_frame_idx) == ("no_mask", 24, 45)
    assert first.track_id == second.track_id == 7
    assert first.decision_id != second.decision_id
    with pytest.raises(ValueError, match="split_min_distance must be in"):
        VotingRules(split_min_distance=0.0)
