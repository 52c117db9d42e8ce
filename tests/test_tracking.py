import numpy as np
import pytest

from pipeline.tracking import CameraTracker, TrackerParams
from schemas.pose import NO_TRACK


def walker(x, y):
    kp = np.zeros((17, 3), np.float32)
    offsets = np.stack([np.linspace(-20, 20, 17), np.linspace(-80, 80, 17)], axis=1)
    kp[:, :2] = offsets + (x, y)
    kp[:, 2] = 0.9
    return kp


@pytest.mark.parametrize("distance", ["keypoints_voting", "mean_euclidean"])
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


def test_alive_ids_expire_after_hit_counter_and_frames_must_increase():
    trk = CameraTracker((640, 360), TrackerParams(initialization_delay=0, hit_counter_max=5))
    trk.step(0, walker(100, 100)[None])
    trk.step(1, walker(102, 100)[None])
    assert trk.alive_track_ids() == {1}
    for f in range(2, 12):
        trk.step(f, np.zeros((0, 17, 3), np.float32))
    assert trk.alive_track_ids() == set()
    with pytest.raises(ValueError, match="must increase"):
        trk.step(11, np.zeros((0, 17, 3), np.float32))
