"""The usable-face head: the graph surgery that adds ``usable_score`` to the classifier computes what it says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from maskwatch.training.usable import USABLE_OUTPUT, PooledFeatures, add_usable_output
from pipeline.onnx_models import MaskClassifier

CLASSIFIER = Path(__file__).resolve().parents[1] / "maskwatch" / "assets" / "mask_classifier.onnx"


def _without_head(src: Path, dst: Path) -> None:
    model = onnx.load(str(src))
    nodes = [n for n in model.graph.node if not any(o.startswith("usable") for o in n.output)]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    inits = [i for i in model.graph.initializer if not i.name.startswith("usable/")]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    outs = [o for o in model.graph.output if o.name != USABLE_OUTPUT]
    del model.graph.output[:]
    model.graph.output.extend(outs)
    onnx.save(model, str(dst))


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
