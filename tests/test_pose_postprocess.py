import numpy as np
import pytest

from pipeline.letterbox import Letterbox
from pipeline.pose_postprocess import decode_pose


def _raw(people):
    """Build a (56, A) raw output from (cx, cy, w, h, score) tuples; keypoints at the box centre, conf 0.9."""
    raw = np.zeros((56, max(len(people), 1)), np.float32)
    for a, (cx, cy, w, h, s) in enumerate(people):
        raw[:5, a] = cx, cy, w, h, s
        raw[5::3, a], raw[6::3, a], raw[7::3, a] = cx, cy, 0.9
    return raw


IDENTITY = Letterbox(1.0, (0.0, 0.0), (640, 640))


def test_no_candidates_gives_empty_arrays():
    score, boxes, kps = decode_pose(_raw([(10, 10, 5, 5, 0.1)]), IDENTITY)
    assert score.shape == (0,)
    assert boxes.shape == (0, 4)
    assert kps.shape == (0, 17, 3)


def test_nms_keeps_best_of_overlapping_and_sorts_by_score():
    raw = _raw([(100, 100, 50, 100, 0.6), (102, 101, 50, 100, 0.9), (400, 300, 40, 80, 0.7)])
    score, boxes, kps = decode_pose(raw, IDENTITY, conf_threshold=0.25, nms_iou=0.45)
    np.testing.assert_allclose(score, [0.9, 0.7])
    np.testing.assert_allclose(boxes[0], [77, 51, 127, 151])
    assert kps.shape == (2, 17, 3)


def test_unletterboxes_boxes_and_keypoints():
    lb = Letterbox(0.5, (0.0, 12.0), (384, 640))
    _score, boxes, kps = decode_pose(_raw([(100, 112, 20, 40, 0.8)]), lb)
    np.testing.assert_allclose(boxes[0], [180, 160, 220, 240])
    np.testing.assert_allclose(kps[0, :, :2], np.tile([200, 200], (17, 1)))


def test_rejects_wrong_layout():
    with pytest.raises(ValueError, match=r"\(56, A\)"):
        decode_pose(np.zeros((57, 10), np.float32), IDENTITY)


def _person(x, y, scale=1.0, upper_only=False):
    """COCO-17 keypoints of a standing person, head at (x, y), ~200 px tall at scale 1."""
    offsets = np.array([[0, 0], [-6, -5], [6, -5], [-12, 0], [12, 0], [-25, 35], [25, 35], [-35, 80], [35, 80],
                        [-40, 120], [40, 120], [-15, 120], [15, 120], [-15, 160], [15, 160], [-15, 200],
                        [15, 200]], np.float32) * scale
    kp = np.concatenate([offsets + np.array([x, y], np.float32), np.full((17, 1), 0.9, np.float32)], axis=1)
    if upper_only:
        kp[9:, 2] = 0.0
    return kp


def test_oks_nms_drops_a_second_detection_of_one_person_and_keeps_neighbours():
    from pipeline.pose_postprocess import keypoint_similarity, oks_nms

    whole = _person(100, 50)
    upper = _person(102, 51, upper_only=True)  # the same person as a head-and-shoulders box, a little off
    neighbour = _person(160, 55)  # the next person in a queue, shoulder to shoulder
    boxes = np.array([[60, 40, 140, 260], [70, 40, 135, 140], [120, 45, 200, 265]], np.float32)
    kps = np.stack([whole, upper, neighbour])
    area = float((boxes[0, 2] - boxes[0, 0]) * (boxes[0, 3] - boxes[0, 1]))
    assert keypoint_similarity(whole, upper, area) > 0.9
    assert keypoint_similarity(whole, neighbour, area) < 0.2
    assert oks_nms(boxes, kps).tolist() == [0, 2]
    assert oks_nms(boxes, kps, threshold=1.0).tolist() == [0, 1, 2]
    hidden = whole.copy()
    hidden[:, 2] = 0.1  # no keypoint seen by both: never a duplicate
    assert oks_nms(boxes[:2], np.stack([whole, hidden])).tolist() == [0, 1]


def test_oks_nms_keeps_a_person_right_behind_another_whose_head_differs():
    from pipeline.pose_postprocess import oks_nms

    front = _person(100, 50)
    behind = front.copy()
    behind[:5, :2] += [30, -25]  # body hidden behind the front person (its keypoints land on theirs), head apart
    boxes = np.array([[60, 40, 140, 260], [65, 20, 150, 255]], np.float32)
    assert oks_nms(boxes, np.stack([front, behind])).tolist() == [0, 1]


def test_a_second_detection_of_one_close_up_head_is_dropped_and_a_neighbours_head_is_kept():
    """single_unmasked: beside the man in close-up the model finds a shifted half-face (its head box inside his),
    and a fragment whose only confident keypoint is a shoulder. Neither is a second person."""
    from pipeline.pose_postprocess import OKS_NMS, keep_people, keypoint_similarity, oks_nms

    man = _person(300, 100, scale=3.0)
    half_face = man.copy()
    half_face[:, :2] += [-30, 5]  # shifted by a third of the head: too far for the similarity
    half_face[5:, 2] = 0.1
    fragment = np.zeros((17, 3), np.float32)
    fragment[6] = [150, 200, 0.8]  # one shoulder
    neighbour = _person(420, 110, scale=3.0)  # a second close-up head beside his
    boxes = np.array([[150, 60, 450, 700], [120, 70, 400, 400], [0, 80, 330, 700], [300, 70, 560, 710]], np.float32)
    kps = np.stack([man, half_face, fragment, neighbour])
    assert keypoint_similarity(man, half_face, 300 * 640) < OKS_NMS
    assert oks_nms(boxes[:2], kps[:2]).tolist() == [0]
    assert oks_nms(boxes[[0, 3]], kps[[0, 3]]).tolist() == [0, 1]
    assert keep_people(boxes, kps).tolist() == [0, 3]
    assert keep_people(boxes, kps, oks_threshold=1.0, min_keypoints=0, head_or_torso=False).tolist() == [0, 1, 2, 3]


def test_hands_holding_a_mask_are_not_a_second_person_and_a_back_or_a_head_alone_is_a_person():
    """single_mask_on_off, frame 75: beside the woman the model finds a "person" of her two raised hands, one
    shoulder and a faint nose on the mask she holds (keypoints as decoded there). A person seen from behind (both
    shoulders and hips, no face) and a close-up head (face, no torso) stay people."""
    from pipeline.pose_postprocess import has_head_or_torso, keep_people

    woman = _person(706, 285, scale=3.0)
    hands = np.zeros((17, 3), np.float32)
    hands[:, :2] = [450, 388]
    hands[[0, 6, 8, 9, 10], 2] = [0.15, 0.79, 0.34, 0.37, 0.76]  # nose, right shoulder, right elbow, wrists
    back = _person(200, 100)
    back[:5, 2] = 0.05
    head = _person(1000, 600, scale=3.0)
    head[5:, 2] = 0.1
    kps = np.stack([woman, hands, back, head])
    boxes = np.array([[368, 31, 998, 692], [17, 129, 648, 702], [150, 90, 250, 310], [960, 560, 1040, 720]],
                     np.float32)
    assert has_head_or_torso(kps).tolist() == [True, False, True, True]
    assert keep_people(boxes, kps).tolist() == [0, 2, 3]
    assert keep_people(boxes, kps, head_or_torso=False).tolist() == [0, 1, 2, 3]
