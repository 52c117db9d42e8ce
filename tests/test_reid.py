"""The re-identification network (pipeline.reid) and the tracker's rules for using it."""

import shutil

import numpy as np
import pytest

from pipeline.paths import ASSETS
from pipeline.reid import REID_MODEL, ReidNet, cosine_distance, load_reid_net
from pipeline.tracking import CameraTracker, TrackerParams
from schemas.errors import ModelError
from tests.conftest import shared_video
from tests.test_appearance import RED, frame_with, person


def _pets09_crops(frames_ids: list[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
    """Embeddings of ground-truth people of PETS09 S2L1: (1-based frame, person id) -> (256,)."""
    from pipeline.source import read_frames

    video = shared_video("pets09_s2l1_cctv.mp4")
    gt = np.loadtxt(video.with_name("pets09_s2l1_gt.txt"), delimiter=",")
    wanted = {f for f, _ in frames_ids}
    net, out = load_reid_net(), {}
    for fr in read_frames(str(video), "pets09", None):
        if fr.frame_idx + 1 not in wanted:
            continue
        for f, pid in frames_ids:
            if f == fr.frame_idx + 1:
                rows = gt[(gt[:, 0] == f) & (gt[:, 1] == pid)]
                if not len(rows):  # not in view (or not labelled) then
                    continue
                x, y, w, h = rows[0, 2:6]
                out[(f, pid)] = net.embed(fr.image, np.array([[x, y, x + w, y + h]], np.float32))[0]
        if fr.frame_idx + 1 >= max(wanted):
            break
    return out


@pytest.mark.slow
def test_the_network_knows_a_pets09_walker_again_and_tells_neighbours_apart():
    # People 1 to 6 walk near each other from frame 611 on. Each is compared with themself 10 frames later (a short
    # occlusion) and with the others in the same frame.
    starts, people = (620, 670, 720, 770), (1, 2, 3, 4, 5, 6)
    e = _pets09_crops([(f + d, p) for f in starts for d in (0, 10) for p in people])
    same = [cosine_distance(e[(f, p)], e[(f + 10, p)]) for f in starts for p in people
            if (f, p) in e and (f + 10, p) in e]
    other = [cosine_distance(e[(f, p)], e[(f, q)]) for f in starts for p in people for q in people
             if p < q and (f, p) in e and (f, q) in e]
    assert len(same) >= 16
    assert len(other) >= 40
    threshold = TrackerParams().reid_distance_threshold
    assert np.median(same) < threshold < np.median(other), (sorted(same), sorted(other))
    assert np.mean(np.array(same) < threshold) >= 0.6  # most returns are known again (0.75 measured) ...
    assert np.mean(np.array(other) < threshold) <= 0.1  # ... and few neighbours taken for each other (none)


def test_embeddings_are_unit_length_one_per_box_and_none_for_no_box():
    net = ReidNet()
    img = np.random.default_rng(0).integers(0, 256, (360, 640, 3), np.uint8)
    boxes = np.array([[10, 10, 60, 150], [600, 300, 700, 420], [0, 0, 1, 1]], np.float32)  # off the edge, tiny
    e = net.embed(img, boxes)
    assert e.shape == (3, 256)
    assert e.dtype == np.float32
    assert np.linalg.norm(e, axis=1) == pytest.approx(1.0, abs=1e-5)
    assert net.embed(img, np.zeros((0, 4), np.float32)).shape == (0, 256)
    assert cosine_distance(e[0], e[0]) == pytest.approx(0.0, abs=1e-6)
    assert cosine_distance(e[0], None) == 1.0


def test_the_networks_cpu_is_counted_per_thread_and_taken_apart_from_tracking():
    """bench/pipeline_fps.py and the stage counter count the network as a model call, not as tracking."""
    import threading

    net = ReidNet()
    img = np.random.default_rng(0).integers(0, 256, (360, 640, 3), np.uint8)
    before = net.thread_cpu_s()
    net.embed(img, np.array([[10, 10, 60, 150]], np.float32))
    assert net.thread_cpu_s() > before
    seen = []
    other = threading.Thread(target=lambda: seen.append(net.thread_cpu_s()))
    other.start()
    other.join()
    assert seen == [0.0]  # another thread's calls are not this one's
    tracker = CameraTracker((640, 360), TrackerParams(initialization_delay=1, appearance_gate=0.6))
    for f in range(3):  # a track's first match gives the gate its first reference: one network call
        tracker.step(f, person(200, 200)[None], None, frame_with([(200, 200, RED)], noise_seed=f))
    assert tracker.take_network_cpu_s() > 0.0
    assert tracker.take_network_cpu_s() == 0.0


def test_a_changed_bundled_file_or_a_wrong_model_is_refused_naming_it(tmp_path):
    for f in (REID_MODEL, REID_MODEL.with_suffix(".bin")):
        shutil.copy(f, tmp_path / f.name)
    weights = tmp_path / REID_MODEL.with_suffix(".bin").name
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"person-reidentification-retail-0288\.bin: sha256 [0-9a-f]{64}, expected "
                                         r"6496b8d5"):
        ReidNet(tmp_path / REID_MODEL.name)
    with pytest.raises(ModelError, match=r"expected input \(1, 3, 256, 128\) and output \(1, 256\), got inputs"):
        ReidNet(ASSETS / "face_detection_yunet_2023mar.onnx")
    with pytest.raises(ModelError, match=r"re-identification model file not found: .*missing\.xml"):
        ReidNet(tmp_path / "missing.xml")


@pytest.mark.parametrize(("lost_at_x", "same_id"), [
    (300, True),  # hidden mid-frame, back near where they were: their id again
    (0, False),  # left through the edge; whoever steps in there later is someone else
])
def test_a_track_that_left_through_the_frames_edge_is_not_re_identified(lost_at_x, same_id):
    # Torso colours stand in for the network here (reid_model=None): the same red shirt before and after.
    params = TrackerParams(initialization_delay=1, hit_counter_max=4, reid_hit_counter_max=40, reid_model=None)
    trk = CameraTracker((640, 360), params)
    ids = []
    for f in range(30):
        hidden = 8 <= f < 18
        x = lost_at_x + 25 if lost_at_x == 0 else lost_at_x + (f - 8)  # at the edge: half out of the frame
        kp = np.zeros((0, 17, 3), np.float32) if hidden else person(x, 200)[None]
        img = frame_with([] if hidden else [(x, 200, RED)], noise_seed=f)
        box = None if hidden else np.array([[max(x - 30, 0), 80, x + 30, 330]], np.float32)
        t = trk.step(f, kp, box, img)
        ids += [int(i) for i in t if i != -1]
    assert (ids[0] == ids[-1]) is same_id, ids


def _pets09_people(frame: int, ids: tuple[int, ...]) -> list[np.ndarray]:
    """BGR crops of ground-truth people of PETS09 S2L1 at a 1-based frame."""
    from pipeline.source import read_frames

    video = shared_video("pets09_s2l1_cctv.mp4")
    gt = np.loadtxt(video.with_name("pets09_s2l1_gt.txt"), delimiter=",")
    for fr in read_frames(str(video), "pets09", None):
        if fr.frame_idx + 1 == frame:
            rows = [gt[(gt[:, 0] == frame) & (gt[:, 1] == pid)][0] for pid in ids]
            return [fr.image[int(y):int(y + h), int(x):int(x + w)].copy() for x, y, w, h in (r[2:6] for r in rows)]
    raise AssertionError(f"PETS09 has no frame {frame}")


@pytest.mark.slow
def test_the_network_gate_keeps_a_track_from_passing_to_another_walker_in_its_place():
    """The crowd failure of issue 25: a person leaves (hidden, out of view) and another steps into their place; the
    keypoints match, so without the gate the track carries on with the second person and votes for both."""
    import cv2

    a, b = (cv2.resize(c, (60, 240)) for c in _pets09_people(1, (9, 15)))  # two walkers of PETS09's first frame
    frames = []
    for f in range(20):
        img = frame_with([], noise_seed=f)
        img[85:325, 170:230] = a if f < 10 else b  # in the box of person(200, 200)
        frames.append((f, person(200, 200)[None], img))
    ids = {}
    for gate in (1.0, 0.6):
        tracker = CameraTracker((640, 360), TrackerParams(initialization_delay=1, appearance_gate=gate))
        ids[gate] = [int(tracker.step(f, kp, None, img)[0]) for f, kp, img in frames]
    assert ids[1.0][2] == ids[1.0][-1] != -1  # without the gate: one track for both
    assert ids[0.6][2] != ids[0.6][-1] != -1  # with it: the second walker gets a track of their own
    assert len(set(ids[0.6][2:10])) == 1


@pytest.mark.slow
def test_a_track_the_gate_let_pass_to_another_walker_is_cut_there_on_the_networks_embeddings():
    """Where the gate lets a track pass to someone else (people who look alike to it), the track's network embeddings
    still fall into two groups: the ledger cuts it at the switch and each walker is decided on their own faces."""
    import cv2

    from pipeline.reid import direction_distance
    from pipeline.voting import TrackLedger, VotingRules

    a, b = (cv2.resize(c, (60, 240)) for c in _pets09_people(1, (9, 15)))
    # A gate that refuses (almost) nothing: the track carries on with the second walker.
    tracker = CameraTracker((640, 360), TrackerParams(initialization_delay=1, appearance_gate=0.9999,
                                                       appearance_every=1))
    distance = tracker.emit_embeddings()
    assert distance is direction_distance
    ledger = TrackLedger("cam", VotingRules(split_min_distance=0.3, split_min_part=3), distance)
    for f in range(20):
        img = frame_with([], noise_seed=f)
        img[85:325, 170:230] = a if f < 10 else b
        ids = tracker.step(f, person(200, 200)[None], None, img)
        seen = [i for i in range(len(ids)) if ids[i] != -1]
        ledger.observe([int(ids[i]) for i in seen], f, f * 100_000_000, [tracker.last_embeddings[i] for i in seen])
        if seen:
            ledger.add_scores([int(ids[seen[0]])], [0.95 if f < 10 else 0.05], [True], [40.0])
    first, second = ledger.end()
    assert first.track_id == second.track_id  # one track, cut in two
    assert (first.decision, first.last_frame_idx, second.decision, second.first_frame_idx) == ("mask", 9, "no_mask", 10)


def test_direction_distance_compares_means_of_unit_embeddings():
    from pipeline.reid import direction_distance

    x, y = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    assert direction_distance(3 * x, x) == pytest.approx(0.0)  # length does not matter
    assert direction_distance(x, y) == pytest.approx(1.0)
    assert direction_distance((x + y) / 2, x) == pytest.approx(1 - np.sqrt(0.5))
    assert direction_distance(np.zeros(2, np.float32), x) == 1.0
