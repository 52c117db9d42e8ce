"""Metrics of the mask classifier on labelled face crops: what ``maskwatch eval-classifier`` and the trainer report.

Binary task: mask worn correctly (positive) vs no mask; ``mask_worn_incorrectly`` counts as no mask and its recall
is reported on its own (the classifier's hardest case). Sensitivity = recall of mask, specificity = recall of
no mask, each with its Wilson 95% interval (:func:`pipeline.stats.wilson_interval`); these counts feed the
corrected camera statistics (:mod:`pipeline.prevalence`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.stats import wilson_interval

# Label codes, as maskwatch.training.data.LABELS orders them.
WITH_MASK, WITHOUT_MASK, MASK_INCORRECT = 0, 1, 2
LABEL_NAMES = ("with_mask", "without_mask", "mask_worn_incorrectly")
FACE_HEIGHT_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<16", 0.0, 16.0),
    ("16-24", 16.0, 24.0),
    ("24-40", 24.0, 40.0),
    ("40-80", 40.0, 80.0),
    (">80", 80.0, math.inf),
)
"""Face-height buckets (source pixels, ``[low, high)``); faces of unknown height (NaN) fall in none."""


def _ratio(k: int, n: int) -> float | None:
    return k / n if n else None


def _rate(k: int, n: int) -> dict[str, Any]:
    ci = wilson_interval(k, n)
    return {"k": k, "n": n, "value": _ratio(k, n), "ci95": list(ci) if ci else None}


def classifier_metrics(
    score: npt.NDArray[np.floating], label: npt.NDArray[np.integer], face_px: npt.NDArray[np.floating],
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Binary metrics of mask scores on labelled faces.

    Args:
        score: `(N,)` mask score in [0, 1] (the model's ``mask_score``).
        label: `(N,)` int label code: 0 with_mask, 1 without_mask, 2 mask_worn_incorrectly.
        face_px: `(N,)` face height in source pixels (NaN: unknown, left out of the buckets).
        threshold: A score at or above it is "mask".

    Returns:
        JSON-ready dict: ``n``, ``threshold``, ``accuracy``, ``balanced_accuracy`` (mean of sensitivity and
        specificity), ``sensitivity`` / ``specificity`` (``k``, ``n``, ``value``, Wilson ``ci95``), ``confusion``
        (rows true mask / no mask, columns predicted mask / no mask), ``per_class`` precision and recall,
        ``by_label`` (n and predicted mask per source label), ``incorrect_recall_as_no_mask`` (a rate dict), and
        ``by_face_height``: bucket -> n, n_mask, n_no_mask, accuracy, balanced_accuracy.

    Raises:
        ValueError: If the arrays differ in length or a label code is unknown.
    """
    score, label, face_px = np.asarray(score, float), np.asarray(label), np.asarray(face_px, float)
    if not len(score) == len(label) == len(face_px):
        msg = f"score, label and face_px differ in length: {len(score)}, {len(label)}, {len(face_px)}"
        raise ValueError(msg)
    if np.any((label < 0) | (label > 2)):
        msg = f"label codes must be 0, 1 or 2 ({', '.join(LABEL_NAMES)}), got {sorted(set(label.tolist()))}"
        raise ValueError(msg)
    pred = score >= threshold
    true = label == WITH_MASK

    def bacc(sel: npt.NDArray[np.bool_]) -> tuple[float | None, float | None]:
        t, p = true[sel], pred[sel]
        recalls = [r for r in (_ratio(int(np.sum(p[t])), int(t.sum())), _ratio(int(np.sum(~p[~t])), int((~t).sum())))
                   if r is not None]
        acc = float(np.mean(t == p)) if sel.any() else None
        return acc, (float(np.mean(recalls)) if recalls else None)

    tp, fn = int(np.sum(true & pred)), int(np.sum(true & ~pred))
    fp, tn = int(np.sum(~true & pred)), int(np.sum(~true & ~pred))
    acc, bal = bacc(np.ones(len(score), bool))
    inc = label == MASK_INCORRECT
    buckets = {}
    for name, lo, hi in FACE_HEIGHT_BUCKETS:
        sel = (face_px >= lo) & (face_px < hi)
        b_acc, b_bal = bacc(sel)
        buckets[name] = {"n": int(sel.sum()), "n_mask": int(np.sum(sel & true)), "n_no_mask": int(np.sum(sel & ~true)),
                         "accuracy": b_acc, "balanced_accuracy": b_bal}
    return {
        "n": len(score),
        "threshold": threshold,
        "accuracy": acc,
        "balanced_accuracy": bal,
        "sensitivity": _rate(tp, tp + fn),
        "specificity": _rate(tn, tn + fp),
        "confusion": {"rows_true": ["mask", "no_mask"], "cols_pred": ["mask", "no_mask"],
                      "matrix": [[tp, fn], [fp, tn]]},
        "per_class": {
            "mask": {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn)},
            "no_mask": {"precision": _ratio(tn, tn + fn), "recall": _ratio(tn, tn + fp)},
        },
        "by_label": {name: {"n": int(np.sum(label == k)), "pred_mask": int(np.sum(pred[label == k]))}
                     for k, name in enumerate(LABEL_NAMES)},
        "incorrect_recall_as_no_mask": _rate(int(np.sum(~pred[inc])), int(inc.sum())),
        "by_face_height": buckets,
    }


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar test: p-value of ``b`` vs ``c`` discordant pairs under "both models err alike".

    ``b`` faces only model A gets right, ``c`` only model B; under the null hypothesis each discordant face is a fair
    coin, so the p-value is the two-sided binomial tail ``min(1, 2 * P[X <= min(b, c)])`` with ``X ~ Bin(b + c, 1/2)``
    (McNemar 1947; the exact form as in Fagerland, Lydersen & Laake 2013, "The McNemar test for binary matched-pairs
    data"), computed by :func:`scipy.stats.binomtest`. Returns 1.0 when there is no discordant pair.
    """
    from scipy.stats import binomtest

    if b + c == 0:
        return 1.0
    return float(binomtest(min(b, c), b + c, 0.5).pvalue)


def paired_comparison(
    score_a: npt.NDArray[np.floating], score_b: npt.NDArray[np.floating], label: npt.NDArray[np.integer],
    threshold: float = 0.5,
) -> dict[str, dict[str, Any]]:
    """Compare two classifiers face by face on the same labelled faces (exact McNemar test per group).

    One held-out split is small, so two recipes' balanced accuracies can differ by a point through noise; a paired
    test on the same faces uses only the faces where the two disagree and says whether the difference is real.

    Args:
        score_a, score_b: `(N,)` mask scores of models A and B on the same faces, in the same order.
        label: `(N,)` int label code: 0 with_mask, 1 without_mask, 2 mask_worn_incorrectly.
        threshold: A score at or above it is "mask".

    Returns:
        Group (``all``, ``mask``, ``no_mask``, ``mask_worn_incorrectly``) -> ``n``, ``errors_a``, ``errors_b``,
        ``only_a_right``, ``only_b_right`` and ``p_value`` (:func:`mcnemar_exact_p`).

    Raises:
        ValueError: If the arrays differ in length.
    """
    score_a, score_b, label = np.asarray(score_a, float), np.asarray(score_b, float), np.asarray(label)
    if not len(score_a) == len(score_b) == len(label):
        msg = f"score_a, score_b and label differ in length: {len(score_a)}, {len(score_b)}, {len(label)}"
        raise ValueError(msg)
    true = label == WITH_MASK
    right_a, right_b = (score_a >= threshold) == true, (score_b >= threshold) == true
    groups = {"all": np.ones(len(label), bool), "mask": true, "no_mask": ~true,
              "mask_worn_incorrectly": label == MASK_INCORRECT}
    out = {}
    for name, sel in groups.items():
        only_a, only_b = int(np.sum(sel & right_a & ~right_b)), int(np.sum(sel & ~right_a & right_b))
        out[name] = {"n": int(sel.sum()),
                     "errors_a": int(np.sum(sel & ~right_a)), "errors_b": int(np.sum(sel & ~right_b)),
                     "only_a_right": only_a, "only_b_right": only_b, "p_value": mcnemar_exact_p(only_a, only_b)}
    return out


def format_comparison(c: dict[str, dict[str, Any]], name_a: str = "A", name_b: str = "B") -> str:
    """The result of :func:`paired_comparison` as a text table."""
    lines = [f"A = {name_a}", f"B = {name_b}",
             "group                     n  errors A  errors B  only A right  only B right  McNemar p"]
    for group, r in c.items():
        lines.append(f"{group:<22} {r['n']:>5}  {r['errors_a']:>8}  {r['errors_b']:>8}  {r['only_a_right']:>12}"
                     f"  {r['only_b_right']:>12}  {r['p_value']:>9.3f}")
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "   n/a" if v is None else f"{100 * v:5.1f}%"


def format_metrics(m: dict[str, Any]) -> str:
    """The metrics of :func:`classifier_metrics` as a text report."""
    (tp, fn), (fp, tn) = m["confusion"]["matrix"]
    se, sp, inc = m["sensitivity"], m["specificity"], m["incorrect_recall_as_no_mask"]

    def rate(r: dict[str, Any]) -> str:
        if r["n"] == 0:
            return "n/a (n = 0)"
        return f"{100 * r['value']:.1f}% ({r['k']}/{r['n']}, 95% CI {100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f}%)"

    lines = [
        f"faces {m['n']}, threshold {m['threshold']:g}",
        f"accuracy           {_pct(m['accuracy'])}",
        f"balanced accuracy  {_pct(m['balanced_accuracy'])}",
        f"sensitivity (mask recall)     {rate(se)}",
        f"specificity (no-mask recall)  {rate(sp)}",
        f"mask_worn_incorrectly recalled as no mask: {rate(inc)}",
        "",
        "confusion       pred mask  pred no_mask",
        f"true mask       {tp:>9}  {fn:>12}",
        f"true no_mask    {fp:>9}  {tn:>12}",
        "",
        "class     precision  recall",
    ]
    for name, pr in m["per_class"].items():
        lines.append(f"{name:<9} {_pct(pr['precision'])}     {_pct(pr['recall'])}")
    lines += ["", "face height   n  (mask/no)  balanced acc  accuracy"]
    for name, b in m["by_face_height"].items():
        lines.append(f"{name + ' px':<9} {b['n']:>5}  ({b['n_mask']}/{b['n_no_mask']})"
                     f"{'':<4}{_pct(b['balanced_accuracy'])}      {_pct(b['accuracy'])}")
    return "\n".join(lines)


def plot_metrics(m: dict[str, Any], path: str | Path, title: str = "mask classifier") -> None:
    """Write a PNG: balanced accuracy by face-height bucket (n on each bar) and the confusion matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    names = list(m["by_face_height"])
    vals = [m["by_face_height"][k]["balanced_accuracy"] for k in names]
    bars = ax1.bar(names, [0 if v is None else 100 * v for v in vals], color="#4c72b0")
    for bar, k, v in zip(bars, names, vals, strict=True):
        n = m["by_face_height"][k]["n"]
        ax1.text(bar.get_x() + bar.get_width() / 2, 1 if v is None else 100 * v + 1, f"n={n}", ha="center", fontsize=8)
    ax1.axhline(100 * (m["balanced_accuracy"] or 0), color="grey", ls="--", lw=1, label="all faces")
    ax1.set_ylim(0, 110)
    ax1.set_xlabel("face height (px)")
    ax1.set_ylabel("balanced accuracy (%)")
    ax1.legend(loc="lower right")
    mat = np.asarray(m["confusion"]["matrix"])
    ax2.imshow(mat, cmap="Blues")
    for (i, j), v in np.ndenumerate(mat):
        ax2.text(j, i, str(v), ha="center", va="center", color="black")
    ax2.set_xticks([0, 1], ["mask", "no mask"])
    ax2.set_yticks([0, 1], ["mask", "no mask"])
    ax2.set_xlabel("predicted")
    ax2.set_ylabel("true")
    fig.suptitle(f"{title}: balanced accuracy {_pct(m['balanced_accuracy']).strip()}, n={m['n']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
