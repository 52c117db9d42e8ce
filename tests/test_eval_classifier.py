"""eval-classifier metrics on a tiny hand-checked case, and the command on real held-out faces."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from maskwatch.evaluation.classifier import classifier_metrics, format_metrics, plot_metrics
from tests.conftest import SHARED_DATA

# 6 faces: 3 with mask (scores .9 .8 .3), 2 without (.2 .6), 1 worn incorrectly (.1); heights 12, 20, 30, 50, 100, NaN.
SCORE = np.array([0.9, 0.8, 0.3, 0.2, 0.6, 0.1])
LABEL = np.array([0, 0, 0, 1, 1, 2])
FACE_PX = np.array([12, 20, 30, 50, 100, math.nan])


def test_metrics_by_hand():
    m = classifier_metrics(SCORE, LABEL, FACE_PX)
    # predicted mask: .9 .8 .6 -> TP 2, FN 1 (the .3), FP 1 (the .6 without), TN 2 (.2 and the incorrect .1)
    assert m["confusion"]["matrix"] == [[2, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["sensitivity"]["value"] == pytest.approx(2 / 3) and m["specificity"]["value"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    lo, hi = m["sensitivity"]["ci95"]
    assert lo < 2 / 3 < hi
    assert m["per_class"]["mask"] == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3)}
    assert m["incorrect_recall_as_no_mask"]["value"] == 1.0 and m["incorrect_recall_as_no_mask"]["n"] == 1
    b = m["by_face_height"]
    assert [b[k]["n"] for k in ("<16", "16-24", "24-40", "40-80", ">80")] == [1, 1, 1, 1, 1]  # NaN in none
    assert b["24-40"]["balanced_accuracy"] == 0.0  # the one masked face there is missed
    assert b["40-80"]["balanced_accuracy"] == 1.0 and b[">80"]["balanced_accuracy"] == 0.0
    assert m["by_label"]["without_mask"] == {"n": 2, "pred_mask": 1}
    assert "balanced accuracy" in format_metrics(m)


def test_threshold_and_bad_input():
    assert classifier_metrics(SCORE, LABEL, FACE_PX, threshold=0.25)["confusion"]["matrix"] == [[3, 0], [1, 2]]
    with pytest.raises(ValueError, match="differ in length"):
        classifier_metrics(SCORE[:3], LABEL, FACE_PX)
    with pytest.raises(ValueError, match="label codes"):
        classifier_metrics(SCORE, LABEL + 1, FACE_PX)


def test_plot_writes_a_png(tmp_path):
    plot_metrics(classifier_metrics(SCORE, LABEL, FACE_PX), tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_classifier_command_on_held_out_faces(tmp_path):
    boxes = SHARED_DATA / "detection" / "andrewmvd_dev" / "boxes.csv"
    if not boxes.is_file():
        pytest.skip(f"needs {boxes} (../shared/data is not beside this checkout)")
    from maskwatch.cli import main

    res = CliRunner().invoke(main, ["eval-classifier", "--data", str(boxes), "--split", "val", "--json",
                                    "--plot", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    m = json.loads(res.output)
    # The held-out split of the model card: 367 faces >= 16 px, 314 with mask.
    assert m["n"] == 367 and m["sensitivity"]["n"] == 314
    assert m["balanced_accuracy"] > 0.9  # the shipped model; its exact figures live in the model card
    assert (tmp_path / "p.png").is_file()
    bad = CliRunner().invoke(main, ["eval-classifier", "--data", str(tmp_path / "p.png")])
    assert bad.exit_code == 2 and "p.png" in bad.output
    # A cross-validation fold holds out the faces train-classifier --cv-folds held out (fold 1 of 5: 366 faces).
    args = ["eval-classifier", "--data", str(boxes), "--split", "val", "--json"]
    res = CliRunner().invoke(main, [*args, "--fold", "1/5"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["n"] == 366
    bad = CliRunner().invoke(main, ["eval-classifier", "--data", str(boxes), "--split", "val", "--fold", "5/5"])
    assert bad.exit_code == 2 and "--fold: expected I/K" in bad.output and "'5/5'" in bad.output
