"""Training data for the mask classifier: split by source image, crop geometry, label mapping (no training)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from maskwatch.training.data import (
    LABELS,
    MASK_INCORRECT,
    VAL_SET,
    CropSet,
    FaceBox,
    cut_box_crops,
    face_photo_box,
    held_out_boxes,
    mask_target,
    read_boxes,
    split_images,
)
from pipeline.headbox import crop_box, cut_crops

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(
    not (SHARED_DATA / "detection" / VAL_SET / "boxes.csv").is_file(),
    reason=f"shared data not found at {SHARED_DATA} (the project's ../shared/data)",
)


def _fake_boxes(n_images: int) -> list[FaceBox]:
    rng = np.random.default_rng(1)
    boxes = []
    for i in range(n_images):
        for _ in range(int(rng.integers(1, 6))):
            label = LABELS[int(rng.integers(0, 3))]
            boxes.append(FaceBox(f"fake/images/{i}.jpg", Path(f"/nonexistent/{i}.jpg"), label, (0, 0, 20, 20)))
    return boxes


def test_split_keeps_every_image_on_one_side() -> None:
    boxes = _fake_boxes(200)
    train, val = split_images(boxes, val_fraction=0.2, seed=0)
    assert not train & val
    assert train | val == {b.source for b in boxes}
    assert 0.15 < len(val) / (len(train) + len(val)) < 0.25
    # Seeded: the same seed gives the same split, another seed another one.
    assert split_images(boxes, val_fraction=0.2, seed=0) == (train, val)
    assert split_images(boxes, val_fraction=0.2, seed=1)[1] != val


def test_cross_validation_folds_hold_out_every_image_exactly_once() -> None:
    boxes = _fake_boxes(200)
    images = {b.source for b in boxes}
    rare = {b.source for b in boxes if b.label == "mask_worn_incorrectly"}
    held = [split_images(boxes, seed=0, fold=(i, 5)) for i in range(5)]
    for train, val in held:
        assert not train & val
        assert train | val == images
        assert 0.15 < len(val) / len(images) < 0.25
        assert val & rare, "each fold holds out some images of the rare class"
    vals = [val for _, val in held]
    assert sum(len(v) for v in vals) == len(images)
    assert set().union(*vals) == images
    with pytest.raises(ValueError, match="fold must be"):
        split_images(boxes, fold=(5, 5))
    with pytest.raises(ValueError, match="fold must be"):
        split_images(boxes, fold=(0, 1))


@needs_data
def test_split_of_shared_data_never_shares_a_source_image() -> None:
    boxes = read_boxes(SHARED_DATA, VAL_SET)
    train, val = split_images(boxes, seed=0)
    assert not train & val
    assert train | val == {b.source for b in boxes}
    held = held_out_boxes(SHARED_DATA, seed=0)
    assert held
    assert {b.source for b in held} <= val
    assert all(b.face_px >= 16 for b in held)
    # Every face of a held-out image is held out (none of its faces is trained on).
    train_faces = [b for b in boxes if b.source in train]
    assert not {b.source for b in train_faces} & {b.source for b in held}
    # The rare class is on both sides.
    assert any(b.label == "mask_worn_incorrectly" for b in boxes if b.source in val)
    assert any(b.label == "mask_worn_incorrectly" for b in train_faces)


@needs_data
def test_several_val_sets_are_each_split_by_source_image() -> None:
    from maskwatch.training.data import load_train_val

    sets = ("andrewmvd_dev", "jolignier_dev")
    if not (SHARED_DATA / "detection" / sets[1] / "boxes.csv").is_file():
        pytest.skip("needs ../shared/data/detection/jolignier_dev")
    held = held_out_boxes(SHARED_DATA, seed=0, fold=(1, 5), val_sets=sets)
    assert {b.source.split("/")[0] for b in held} == set(sets)
    for name in sets:  # each set's own fold 1 of 5, as split_images gives it
        _, val = split_images(read_boxes(SHARED_DATA, name), seed=0, fold=(1, 5))
        assert {b.source for b in held if b.source.startswith(name + "/")} <= val
    data = load_train_val(SHARED_DATA, crop_margin=1.6, input_px=32, fold=(1, 5), val_sets=sets,
                          detection_sets=sets, face_folders=())
    assert not set(data.train.source) & set(data.val.source)
    assert len(data.val) == len(held)
    assert sum(data.val.label == MASK_INCORRECT) > sum(b.label == "mask_worn_incorrectly" for b in held
                                                      if b.source.startswith("andrewmvd_dev/"))
    with pytest.raises(ValueError, match="must also be in detection_sets"):
        load_train_val(SHARED_DATA, crop_margin=1.6, input_px=32, val_sets=sets, detection_sets=sets[:1])


def test_crops_are_cut_with_the_shared_geometry(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    set_dir = tmp_path / "detection" / "fake"
    (set_dir / "images").mkdir(parents=True)
    cv2.imwrite(str(set_dir / "images" / "a.png"), img)  # lossless
    rows = [
        ("with_mask", 10.0, 20.0, 40.0, 60.0),
        ("mask_worn_incorrectly", 150.0, 90.0, 199.0, 119.0),  # the crop runs past the frame: grey fill
        ("without_mask", 0.0, 0.0, 12.0, 15.0),
    ]
    lines = ["image,label,xmin,ymin,xmax,ymax,img_w,img_h"]
    lines += [f"images/a.png,{lab},{x0},{y0},{x1},{y1},200,120" for lab, x0, y0, x1, y1 in rows]
    (set_dir / "boxes.csv").write_text("\n".join(lines) + "\n")

    boxes = read_boxes(tmp_path, "fake")
    for margin, px in ((1.3, 64), (1.6, 48)):
        crops = cut_box_crops(boxes, crop_margin=margin, input_px=px)
        face = np.array([r[1:] for r in rows], np.float32)
        expected = cut_crops(img, crop_box(face, margin), px)
        np.testing.assert_array_equal(crops.crops, expected)
        assert crops.crops.dtype == np.uint8
        assert crops.crops.shape == (3, px, px, 3)
        np.testing.assert_array_equal(crops.face_px, face[:, 3] - face[:, 1])
        assert list(crops.source) == ["fake/images/a.png"] * 3


def test_face_photo_crop_is_the_whole_photo() -> None:
    for w, h, margin in ((100, 100, 1.3), (120, 80, 1.6), (64, 256, 1.3)):
        box = crop_box(face_photo_box(w, h, margin)[None], margin)[0]
        side = max(w, h)
        np.testing.assert_allclose(
            box, [w / 2 - side / 2, h / 2 - side / 2, w / 2 + side / 2, h / 2 + side / 2], atol=1e-3
        )


def test_mask_worn_incorrectly_is_no_mask() -> None:
    assert mask_target("with_mask") == 1
    assert mask_target("without_mask") == 0
    assert mask_target("mask_worn_incorrectly") == 0
    labels = np.array([0, 1, 2, 2, 0], np.int8)
    cs = CropSet(np.zeros((5, 4, 4, 3), np.uint8), labels, np.array(["x"] * 5, dtype=object), np.ones(5, np.float32))
    np.testing.assert_array_equal(cs.target, [1, 0, 0, 0, 1])
    with pytest.raises(KeyError):
        mask_target("mask")


@needs_data
def test_shared_labels_map_to_binary_targets() -> None:
    boxes = read_boxes(SHARED_DATA, VAL_SET)
    assert {b.label for b in boxes} == set(LABELS)
    incorrect = [b for b in boxes if b.label == "mask_worn_incorrectly"]
    crops = cut_box_crops(incorrect[:5], crop_margin=1.3, input_px=32)
    assert (crops.label == MASK_INCORRECT).all()
    assert (crops.target == 0).all()


def test_train_config_file_is_checked_before_training(tmp_path, capsys):
    from maskwatch.training.cli import main

    shipped = Path(__file__).resolve().parents[1] / "maskwatch" / "assets" / "train_config.yaml"
    with pytest.raises(SystemExit) as err:
        main(["--config", str(shipped)])  # the shipped config names the output; the data root is the user's
    assert err.value.code == 2
    assert "--data-root required" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    with pytest.raises(SystemExit):
        main(["--config", str(bad), "--data-root", "x", "--out", "y.onnx"])
    assert "unknown key(s) ['epochz']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data-root", "x", "--out", "y.onnx", "--in-domain-share", "1.5"])
    assert "in_domain_share must be in [0, 1), got 1.5" in capsys.readouterr().err
    bad.write_text("epochs: ten\n")
    with pytest.raises(SystemExit):
        main(["--config", str(bad), "--data-root", "x", "--out", "y.onnx"])
    assert "recipe setting epochs: expected int, got 'ten'" in capsys.readouterr().err


def test_in_domain_share_splits_each_label_between_street_photos_and_the_rest():
    from maskwatch.training.augment import balanced_weights

    # 1 in-domain and 3 other with_mask samples, 1 in-domain and 9 other without_mask, 2 worn incorrectly (in-domain).
    label = np.array([0] * 4 + [1] * 10 + [2] * 2, np.int8)
    in_domain = np.array([1, 0, 0, 0] + [1] + [0] * 9 + [1, 1], bool)
    share = {0: 0.5, 1: 0.4, 2: 0.1}
    plain = balanced_weights(label, share)
    assert plain[4] == pytest.approx(0.4 / 10)  # in proportion to the counts: 1 of 10 without_mask draws
    w = balanced_weights(label, share, in_domain, in_domain_share=0.5)
    assert w.sum() == pytest.approx(1.0)
    assert w[0] == pytest.approx(0.25)
    assert w[1:4] == pytest.approx([0.25 / 3] * 3)
    assert w[4] == pytest.approx(0.2)
    assert w[5:14] == pytest.approx([0.2 / 9] * 9)
    assert w[14:] == pytest.approx([0.05, 0.05])  # one domain only: the class share is left as it is
