import cv2
import numpy as np
import pytest

from pipeline.tracking import CameraTracker, TrackerParams
from schemas.pose import NO_TRACK


def walker(x, y):
    kp = np.zeros((17, 3), np.float32)
    offsets = np.stack([np.linspace(-20, 20, 17), np.linspace(-80, 80, 17)], axis=1)
    kp[:, :2] = offsets + np.array([x, y], np.float32)
    kp[:, 2] = 0.9
    return kp


@pytest.mark.parametrize("distance", ["keypoints_voting_height", "keypoints_voting", "mean_euclidean"])
def test_two_walkers_keep_distinct_ids_through_a_gap(distance):
    trk = CameraTracker((640, 360), TrackerParams(distance=distance, initialization_delay=2))
    ids = []
    for f in range(0, 60, 3):  # every 3rd frame, as a 10 fps sample of 30 fps
        people = [walker(100 + f * 2, 180), walker(500 - f * 2, 180)] if not 30 <= f < 36 else []
        ids.append(trk.step(f, np.array(people, np.float32).reshape(-1, 17, 3)))
    confirmed = [t for t in ids if len(t) and (t != NO_TRACK).all()]
    assert len({tuple(t) for t in confirmed[:3]}) == 1  # stable while visible
    assert set(np.concatenate(confirmed)) == {1, 2}  # one id each, also after the 2-frame gap
    assert ids[0].tolist() == [NO_TRACK, NO_TRACK]  # initialising


def test_alive_ids_expire_after_hit_counter_and_reid_and_frames_must_increase():
    trk = CameraTracker((640, 360), TrackerParams(initialization_delay=0, hit_counter_max=5, reid_hit_counter_max=4))
    trk.step(0, walker(100, 100)[None])
    trk.step(1, walker(102, 100)[None])
    assert trk.alive_track_ids() == {1}
    for f in range(2, 8):
        trk.step(f, np.zeros((0, 17, 3), np.float32))
    assert trk.alive_track_ids() == {1}  # lost, but kept for re-identification: not decided yet
    for f in range(8, 12):
        trk.step(f, np.zeros((0, 17, 3), np.float32))
    assert trk.alive_track_ids() == set()
    with pytest.raises(ValueError, match="must increase"):
        trk.step(11, np.zeros((0, 17, 3), np.float32))


def _scaled_walker(x, y, height):
    kp = walker(0, 0)
    kp[:, :2] *= height / 160  # walker() is 160 px tall
    kp[:, :2] += (x, y)
    return kp


def _ids(params, height, step_px, frames=12):
    trk = CameraTracker((1280, 720), params)
    out = []
    for f in range(frames):
        kp = _scaled_walker(100 + f * step_px, 360, height)[None]
        box = np.array([[kp[0, :, 0].min(), kp[0, :, 1].min(), kp[0, :, 0].max(), kp[0, :, 1].max()]], np.float32)
        out.extend(t for t in trk.step(f, kp, box).tolist() if t != NO_TRACK)
    return set(out)


def test_match_radius_follows_the_person_not_the_frame():
    # A near person (400 px tall) walking 40 px per sampled frame, and a far one (40 px tall) walking 4 px.
    by_height = TrackerParams(distance="keypoints_voting_height", keypoint_height_frac=0.25, initialization_delay=1)
    by_frame = TrackerParams(distance="keypoints_voting", keypoint_dist_frac=1 / 50, initialization_delay=1)
    assert _ids(by_height, 400, 40) == {1}  # radius 100 px: one track
    assert _ids(by_frame, 400, 40) != {1}  # radius 1280/50 = 25.6 px: no keypoint matches, no stable track
    assert _ids(by_height, 40, 4) == {1}


def _shaky_pan_ids(camera_motion, frames=30):
    """Two people standing still in a static textured scene, filmed by a hand-held camera that jumps by 20-30 px per
    frame (a known offset per frame). Returns the set of track ids given to them."""
    rng = np.random.default_rng(7)
    scene = np.full((800, 1200, 3), 90, np.uint8)  # a static scene with corners to follow: 300 coloured boxes
    for x, y, w, h in zip(*(rng.integers(0, n, 300) for n in (1200, 800, 60, 60)), strict=True):
        cv2.rectangle(scene, (int(x), int(y)), (int(x + 10 + w), int(y + 10 + h)), rng.integers(0, 256, 3).tolist(), -1)
    # The 640x360 view shakes around a point: a new offset of 20-30 px in x and y every frame, never predictable.
    offsets = 200 + rng.choice([-30, -20, 20, 30], size=(frames, 2))
    people = [(300.0, 250.0), (500.0, 250.0)]  # scene coordinates, 160 px tall
    trk = CameraTracker((640, 360), TrackerParams(initialization_delay=1, camera_motion=camera_motion))
    ids = []
    for f, (dx, dy) in enumerate(offsets):
        frame = np.ascontiguousarray(scene[dy : dy + 360, dx : dx + 640])
        kp = np.stack([walker(x - dx, y - dy) for x, y in people])
        boxes = np.array([[k[:, 0].min(), k[:, 1].min(), k[:, 0].max(), k[:, 1].max()] for k in kp], np.float32)
        ids += [t for t in trk.step(f, kp, boxes, frame).tolist() if t != NO_TRACK]
    return set(ids), trk.motion.moving


def test_motion_compensation_keeps_ids_on_a_shaking_camera():
    ids, moving = _shaky_pan_ids("auto")
    assert moving
    assert ids == {1, 2}
    ids_off, _ = _shaky_pan_ids("off")
    assert len(ids_off) > 2  # without compensation the same two people break into more tracks


def test_fixed_camera_is_not_compensated():
    rng = np.random.default_rng(3)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (360, 640, 3), dtype=np.uint8), (0, 0), 3)
    trk = CameraTracker((640, 360), TrackerParams(initialization_delay=1, camera_motion="auto"))
    for f in range(10):
        trk.step(f, walker(100 + 5 * f, 180)[None], None, frame)
    assert not trk.motion.moving
    assert trk.alive_track_ids() == {1}
    with pytest.raises(ValueError, match="camera_motion"):
        CameraTracker((640, 360), TrackerParams(camera_motion="sometimes"))


def test_shot_cut_ends_every_track_and_ids_keep_increasing():
    # Two "shots": a textured view, then a different one. The same keypoints before and after the cut are different
    # people (edited footage), so the tracker must not carry a track across.
    rng = np.random.default_rng(5)
    shot_a = cv2.GaussianBlur(rng.integers(0, 256, (360, 640, 3), dtype=np.uint8), (0, 0), 2)
    shot_b = np.clip(shot_a * np.array([1.0, 0.5, 0.3]) + (60, 0, 0), 0, 255).astype(np.uint8)  # bluish, darker
    trk = CameraTracker((640, 360), TrackerParams(initialization_delay=1))
    ids = []
    for f in range(16):
        frame = shot_a if f < 8 else shot_b
        ids.append(trk.step(f, walker(200 + 2 * f, 180)[None], None, frame).tolist())
        if f == 7:
            assert trk.alive_track_ids() == {1}
    assert trk.cuts_seen == 1
    assert ids[3] == [1]
    assert ids[-1] == [2]  # a new id after the cut, never 1 again
    assert trk.alive_track_ids() == {2}
    steady = CameraTracker((640, 360), TrackerParams(initialization_delay=1))
    for f in range(16):
        steady.step(f, walker(200 + 2 * f, 180)[None], None, shot_a)
    assert steady.cuts_seen == 0


def test_shot_cuts_rule():
    from pipeline.tracking import ShotCuts

    grey = np.full((90, 160, 3), 100, np.uint8)
    red = np.zeros((90, 160, 3), np.uint8)
    red[..., 2] = 200
    cuts = ShotCuts()
    assert [cuts.update(f) for f in (grey, grey, grey, red, red)] == [False, False, False, True, False]
    with pytest.raises(ValueError, match="min_distance"):
        ShotCuts(min_distance=0)
