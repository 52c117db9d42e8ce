import numpy as np
import pytest

from pipeline.headbox import FaceRules, crop_box, cut_crops, face_visible, head_boxes


def person(eyes=True, ears=True, nose=True, shoulders=True, x=200.0, y=100.0, eye_dist=20.0, conf=0.9):
    kp = np.zeros((17, 3), np.float32)
    if nose:
        kp[0] = (x, y + eye_dist / 2, conf)
    if eyes:
        kp[1] = (x - eye_dist / 2, y, conf)
        kp[2] = (x + eye_dist / 2, y, conf)
    if ears:
        kp[3] = (x - eye_dist, y + eye_dist / 10, conf)
        kp[4] = (x + eye_dist, y + eye_dist / 10, conf)
    if shoulders:
        kp[5] = (x - 60, y + 70, conf)
        kp[6] = (x + 60, y + 70, conf)
    return kp


def test_face_box_from_facial_keypoints_is_square_around_the_face():
    boxes, from_face = head_boxes(person()[None])
    x0, y0, x1, y1 = boxes[0]
    assert from_face[0]
    assert x1 - x0 == pytest.approx(y1 - y0)
    assert x1 - x0 == pytest.approx(44.0, rel=0.05)  # 2.2 x eye distance 20 px
    assert x0 < 190
    assert x1 > 210
    assert y0 < 100 < y1
    assert (y0 + y1) / 2 > 100  # shifted down towards mouth and chin, where a mask is


def test_shoulders_only_gives_a_box_above_the_shoulders_not_from_face():
    boxes, from_face = head_boxes(person(eyes=False, ears=False, nose=False)[None])
    assert not from_face[0]
    assert boxes[0, 3] < 170  # above the shoulder line at y=170


def test_no_keypoints_gives_zero_box():
    boxes, from_face = head_boxes(np.zeros((1, 17, 3), np.float32))
    assert not from_face[0]
    assert (boxes[0] == 0).all()
    assert head_boxes(np.zeros((0, 17, 3), np.float32))[0].shape == (0, 4)


@pytest.mark.parametrize(
    ("kp", "rules", "expected"),
    [
        (person(), FaceRules(), True),
        (person(ears=False), FaceRules(), True),  # nose + 2 eyes = 3
        (person(ears=False, nose=False), FaceRules(), False),  # only 2 facial keypoints
        (person(eyes=False), FaceRules(), False),  # 3 keypoints but the eyes are missing
        (person(eyes=False), FaceRules(require_both_eyes=False), True),
        (person(eye_dist=5.0), FaceRules(), False),  # face 11 px < 16 px
        (person(x=5.0), FaceRules(area_margin=0.05), False),  # face centre in the left margin
        (person(conf=0.4), FaceRules(), False),  # keypoints below the score threshold
    ],
)
def test_face_visibility_rules(kp, rules, expected):
    boxes, _ = head_boxes(kp[None], rules.keypoint_min_score)
    assert face_visible(kp[None], boxes, (640, 360), rules)[0] == expected


def test_crop_box_is_square_with_margin_and_cut_pads_outside_frame():
    face = np.array([[10, 20, 30, 60]], np.float32)  # 20x40 face
    box = crop_box(face, 1.5)
    np.testing.assert_allclose(box, [[-10, 10, 50, 70]])
    frame = np.full((100, 100, 3), 200, np.uint8)
    crops = cut_crops(frame, box, 30)
    assert crops.shape == (1, 30, 30, 3)
    assert crops.dtype == np.uint8
    assert (crops[0, :, :4] == 114).all()  # left part outside the frame is grey
    assert (crops[0, :, -5:] == 200).all()


def test_cut_crops_returns_rgb():
    frame = np.zeros((50, 50, 3), np.uint8)
    frame[..., 0] = 255  # blue in BGR
    crop = cut_crops(frame, np.array([[0, 0, 50, 50]], np.float32), 8)
    assert (crop[0, ..., 2] == 255).all()
    assert (crop[0, ..., 0] == 0).all()


def test_crop_margin_below_one_and_bad_keypoints_raise():
    with pytest.raises(ValueError, match="margin"):
        crop_box(np.zeros((1, 4), np.float32), 0.9)
    with pytest.raises(ValueError, match=r"\(N, 17, 3\)"):
        head_boxes(np.zeros((2, 16, 3), np.float32))


def test_a_face_inside_a_larger_face_is_not_classified():
    real = person(x=300.0, y=150.0, eye_dist=60.0)
    spurious = person(x=290.0, y=170.0, eye_dist=20.0, shoulders=False)  # keypoints on the real face
    other = person(x=100.0, y=150.0, eye_dist=20.0)
    kp = np.stack([real, spurious, other])
    boxes, _ = head_boxes(kp)
    assert face_visible(kp, boxes, (640, 360), FaceRules()).tolist() == [True, False, True]
    assert face_visible(kp, boxes, (640, 360), FaceRules(max_nested_overlap=1.0)).tolist() == [True, True, True]
