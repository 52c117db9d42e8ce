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
    assert m["sensitivity"]["value"] == pytest.approx(2 / 3)
    assert m["specificity"]["value"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    lo, hi = m["sensitivity"]["ci95"]
    assert lo < 2 / 3 < hi
    assert m["per_class"]["mask"] == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3)}
    assert m["incorrect_recall_as_no_mask"]["value"] == 1.0
    assert m["incorrect_recall_as_no_mask"]["n"] == 1
    b = m["by_face_height"]
    assert [b[k]["n"] for k in ("<16", "16-24", "24-40", "40-80", ">80")] == [1, 1, 1, 1, 1]  # NaN in none
    assert b["24-40"]["balanced_accuracy"] == 0.0  # the one masked face there is missed
    assert b["40-80"]["balanced_accuracy"] == 1.0
    assert b[">80"]["balanced_accuracy"] == 0.0
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
    assert m["n"] == 367
    assert m["sensitivity"]["n"] == 314
    assert m["balanced_accuracy"] > 0.9  # the shipped model; its exact figures live in the model card
    assert (tmp_path / "p.png").is_file()
    bad = CliRunner().invoke(main, ["eval-classifier", "--data", str(tmp_path / "p.png")])
    assert bad.exit_code == 2
    assert "p.png" in bad.output
    # A cross-validation fold holds out the faces train-classifier --cv-folds held out (fold 1 of 5: 366 faces).
    args = ["eval-classifier", "--data", str(boxes), "--split", "val", "--json"]
    res = CliRunner().invoke(main, [*args, "--fold", "1/5"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["n"] == 366
    bad = CliRunner().invoke(main, ["eval-classifier", "--data", str(boxes), "--split", "val", "--fold", "5/5"])
    assert bad.exit_code == 2
    assert "--fold: expected I/K" in bad.output
    assert "'5/5'" in bad.output


def test_mcnemar_exact_by_hand():
    from maskwatch.evaluation.classifier import mcnemar_exact_p

    # 1 vs 9 discordant faces: 2 * P[Bin(10, 1/2) <= 1] = 2 * (1 + 10) / 1024.
    assert mcnemar_exact_p(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact_p(9, 1) == mcnemar_exact_p(1, 9)
    assert mcnemar_exact_p(5, 5) == 1.0
    assert mcnemar_exact_p(0, 0) == 1.0


def test_paired_comparison_counts_the_faces_where_two_models_disagree():
    from maskwatch.evaluation.classifier import paired_comparison

    other = np.array([0.9, 0.4, 0.7, 0.1, 0.3, 0.8])  # B: misses the .8 mask face, fixes the .3 one and the .6 without
    c = paired_comparison(SCORE, other, LABEL)
    # A right / B wrong: face 1 (mask .8 -> .4) and face 5 (incorrect .1 -> .8); B right / A wrong: faces 2 and 4.
    assert c["all"] == {"n": 6, "errors_a": 2, "errors_b": 2, "only_a_right": 2, "only_b_right": 2, "p_value": 1.0}
    assert (c["mask"]["only_a_right"], c["mask"]["only_b_right"]) == (1, 1)
    assert c["mask_worn_incorrectly"] == {"n": 1, "errors_a": 0, "errors_b": 1, "only_a_right": 1,
                                          "only_b_right": 0, "p_value": 1.0}
    with pytest.raises(ValueError, match="differ in length"):
        paired_comparison(SCORE, other[:5], LABEL)


def test_compare_classifiers_pools_cross_validation_fold_reports(tmp_path):
    from maskwatch.cli import main

    names = ["with_mask", "without_mask", "mask_worn_incorrectly"]
    faces = {"source": [f"img{i}.jpg" for i in range(6)], "label": [names[k] for k in LABEL],
             "face_px": [20.0] * 6}
    for run, scores in (("a", SCORE), ("b", np.where(LABEL == 0, 0.9, 0.1))):  # b: every face right
        (tmp_path / f"{run}.json").write_text(json.dumps({"folds": 2}))
        for i, part in enumerate((slice(0, 3), slice(3, 6))):
            held = {k: v[part] for k, v in faces.items()} | {"score": scores[part].tolist()}
            (tmp_path / f"{run}.fold{i}.json").write_text(json.dumps({"held_out": held}))
    res = CliRunner().invoke(main, ["compare-classifiers", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                                    "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["all"]["n"] == 6
    assert (out["all"]["errors_a"], out["all"]["errors_b"], out["all"]["only_b_right"]) == (2, 0, 2)
    (tmp_path / "b.fold1.json").unlink()
    bad = CliRunner().invoke(main, ["compare-classifiers", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert bad.exit_code == 2
    assert "b.fold1.json is missing" in bad.output
