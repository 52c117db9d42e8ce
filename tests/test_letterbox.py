import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.letterbox import Letterbox, letterbox, letterbox_shape, unletterbox_boxes, unletterbox_points


@pytest.mark.parametrize(
    ("frame_hw", "input_px", "expected"),
    [((360, 640), 640, (384, 640)), ((1080, 1920), 640, (384, 640)), ((576, 768), 1280, (960, 1280)),
     ((720, 1280), 1280, (736, 1280)), ((640, 480), 640, (640, 480)), ((100, 100), 320, (320, 320))],
)
def test_letterbox_shape_is_stride_multiple_not_square(frame_hw, input_px, expected):
    assert letterbox_shape(frame_hw, input_px) == expected


@pytest.mark.parametrize(("frame_hw", "input_px"), [((0, 10), 640), ((10, 10), 630), ((10, 10), 0)])
def test_letterbox_shape_rejects_bad_sizes(frame_hw, input_px):
    with pytest.raises(ValueError, match="must"):
        letterbox_shape(frame_hw, input_px)


def test_letterbox_pads_grey_and_maps_points_back():
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[100:110, 200:210] = 255
    img, lb = letterbox(frame, 640)
    assert img.shape == (384, 640, 3)
    assert lb.pad_px == (0.0, 12.0)
    assert (img[:12] == 114).all()
    assert (img[-12:] == 114).all()
    ys, xs = np.nonzero(img[:, :, 0] == 255)
    back = unletterbox_points(np.array([[xs.min(), ys.min()]], np.float32), lb)
    np.testing.assert_allclose(back, [[200, 100]], atol=1)


@given(
    scale=st.floats(0.1, 4.0), px=st.floats(0, 50), py=st.floats(0, 50),
    boxes=st.lists(st.tuples(*[st.floats(0, 2000)] * 4), max_size=5),
)
def test_unletterbox_inverts_letterbox_transform(scale, px, py, boxes):
    lb = Letterbox(scale, (px, py), (640, 640))
    orig = np.array(boxes, np.float32).reshape(-1, 4)
    model = orig * scale + np.array([px, py, px, py], np.float32)
    np.testing.assert_allclose(unletterbox_boxes(model, lb), orig, rtol=1e-4, atol=1e-2)


def test_unletterbox_empty_and_bad_shape():
    lb = Letterbox(1.0, (0, 0), (640, 640))
    assert unletterbox_boxes(np.zeros((0, 4), np.float32), lb).shape == (0, 4)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        unletterbox_boxes(np.zeros((3, 3), np.float32), lb)
