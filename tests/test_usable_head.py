"""The usable-face head: the graph surgery that adds ``usable_score`` to the classifier computes what it says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from maskwatch.training.usable import (
    PooledFeatures,
    add_usable_output,
    merge_usable_net,
    occlude_lower_face,
    strip_usable_output,
)
from pipeline.onnx_models import MaskClassifier

CLASSIFIER = Path(__file__).resolve().parents[1] / "maskwatch" / "assets" / "mask_classifier.onnx"


def _without_head(src: Path, dst: Path) -> None:
    onnx.save(strip_usable_output(onnx.load(str(src))), str(dst))


def test_added_head_is_a_logistic_regression_on_pooled_features(tmp_path):
    base, out = tmp_path / "base.onnx", tmp_path / "with_head.onnx"
    _without_head(CLASSIFIER, base)
    assert not MaskClassifier(base, device="cpu").has_usable
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (6, 96, 96, 3), dtype=np.uint8)
    feats = PooledFeatures(base)(crops)
    assert feats.shape == (6, 1280)
    w = rng.normal(0, 0.05, feats.shape[1]).astype(np.float32)
    add_usable_output(base, out, w, 0.3, {"maskwatch.usable_head": "test"})
    clf = MaskClassifier(out, device="cpu")
    assert clf.has_usable
    assert clf.metadata["maskwatch.usable_head"] == "test"
    scores = clf.predict_scores(crops)
    np.testing.assert_allclose(scores[:, 1], 1 / (1 + np.exp(-(feats @ w + 0.3))), atol=1e-5)
    # The mask score is untouched.
    mask = ort.InferenceSession(str(base), providers=["CPUExecutionProvider"]).run(["mask_score"], {"crops": crops})
    np.testing.assert_allclose(scores[:, 0], mask[0], atol=1e-6)
    with pytest.raises(ValueError, match="already has an output 'usable_score'"):
        add_usable_output(out, tmp_path / "twice.onnx", w, 0.0, {})


def test_classifier_without_head_lets_every_crop_count(tmp_path):
    base = tmp_path / "base.onnx"
    _without_head(CLASSIFIER, base)
    crops = np.full((3, 96, 96, 3), 128, np.uint8)
    scores = MaskClassifier(base, device="cpu").predict_scores(crops)
    assert scores.shape == (3, 2)
    assert scores[:, 1].tolist() == [1.0, 1.0, 1.0]
    assert MaskClassifier(base, device="cpu").predict_scores(crops[:0]).shape == (0, 2)


def test_merged_network_runs_on_the_same_crops(tmp_path):
    """A second network merged as ``usable_score`` sees the classifier's own input: merging the classifier's mask
    network with itself must give usable_score == mask_score, crop by crop, in one session call."""
    base = strip_usable_output(onnx.load(str(CLASSIFIER)))
    assert [o.name for o in base.graph.output] == ["mask_score"]
    merged = merge_usable_net(base, base, {"maskwatch.usable_head": "itself"})
    path = tmp_path / "merged.onnx"
    onnx.save(merged, str(path))
    clf = MaskClassifier(path, device="cpu")
    assert clf.has_usable
    assert clf.metadata["maskwatch.usable_head"] == "itself"
    crops = np.random.default_rng(1).integers(0, 256, (5, 96, 96, 3), dtype=np.uint8)
    scores = clf.predict_scores(crops)
    np.testing.assert_allclose(scores[:, 1], scores[:, 0], atol=1e-6)
    base_path = tmp_path / "base.onnx"
    onnx.save(base, str(base_path))
    alone = ort.InferenceSession(str(base_path), providers=["CPUExecutionProvider"]).run(
        ["mask_score"], {"crops": crops}
    )
    np.testing.assert_allclose(scores[:, 0], alone[0], atol=1e-6)
    # Stripping takes the merged network out again, and a classifier that has the output refuses a second one.
    assert [o.name for o in strip_usable_output(merged).graph.output] == ["mask_score"]
    assert not any(n.name.startswith("usable_net/") for n in strip_usable_output(merged).graph.node)
    with pytest.raises(ValueError, match="already has an output 'usable_score'"):
        merge_usable_net(merged, base, {})


def test_synthetic_occlusion_hides_the_lower_face_only():
    """The not-usable crops made for training keep the eyes and hide the mouth behind the filler's pixels."""
    face = np.full((96, 96, 3), 200, np.uint8)
    filler = np.full((96, 96, 3), 20, np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = occlude_lower_face(face, filler, rng)
        assert out.shape == face.shape
        assert out.dtype == np.uint8
        assert (out[: int(0.45 * 96)] == 200).all()  # above the occluder: the face as it was (eyes near 40%)
        assert (out[int(0.86 * 96) :, 40:56] == 20).all()  # the chin, under every ellipse drawn: the filler
    assert (face == 200).all()  # the input is not modified
