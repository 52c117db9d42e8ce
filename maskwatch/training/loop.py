"""Train the mask/no-mask head-crop classifier on a :class:`~maskwatch.training.recipe.Recipe`, evaluate it on the
held-out faces, export it (:mod:`maskwatch.training.export`); and cross-validate a recipe.

Steps of :func:`train_classifier`: load the crops (:func:`load_data`), build the network (:func:`build`), draw
class-balanced augmented batches (:class:`Batches`), fit (:func:`fit`: one :func:`train_epoch` and one held-out
evaluation per epoch), export and check the ONNX file (:func:`ship`), and report.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from maskwatch.evaluation.classifier import classifier_metrics
from maskwatch.training.augment import CLASS_SHARE, StreetAugment, balanced_weights
from maskwatch.training.data import EVAL_MIN_FACE_PX, FACE_FOLDERS, LABELS, CropSet, TrainValData, load_train_val
from maskwatch.training.export import LICENCE, finish_classifier, write_classifier
from maskwatch.training.networks import build_model, contract_module, torch_module
from maskwatch.training.recipe import Recipe

Log = Callable[[str], None]
RECIPE = Recipe()


# ------------------------------------------------------------------------------------------------------ evaluation
def evaluate(score: npt.NDArray[np.float32], val: CropSet, threshold: float = 0.5) -> dict[str, Any]:
    """:func:`maskwatch.evaluation.classifier.classifier_metrics` of scores on labelled crops."""
    return classifier_metrics(score, val.label, val.face_px, threshold)


def predict_torch(model: Any, crops: npt.NDArray[np.uint8], batch: int = 256) -> npt.NDArray[np.float32]:
    """The contract module's scores of uint8 crops (eval mode, no gradients)."""
    torch = torch_module()
    model.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(crops), batch):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(crops[i : i + batch]))).numpy())
    return np.concatenate(outs).astype(np.float32) if outs else np.zeros(0, np.float32)


# -------------------------------------------------------------------------------------------------------- training
@dataclasses.dataclass
class Batches:
    """The class-balanced, augmented training batches of each epoch.

    Each epoch draws ``steps * batch`` crops with replacement, crop ``i`` with probability ``weights[i]``, and
    augments each with :class:`~maskwatch.training.augment.StreetAugment`.
    """

    train: CropSet
    weights: npt.NDArray[np.float64]
    aug: StreetAugment
    rng: np.random.Generator
    batch: int
    steps: int

    def epoch(self) -> Iterator[tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]]:
        """``(crops (B, S, S, 3) uint8, binary targets (B,) float32)`` for each step of one epoch."""
        train, target = self.train, self.train.target
        idx = self.rng.choice(len(train), size=self.steps * self.batch, p=self.weights)
        for b in range(self.steps):
            sel = idx[b * self.batch : (b + 1) * self.batch]
            imgs = [self.aug(train.crops[i], float(train.face_px[i])) for i in sel]
            # One draw per crop that the retired synthetic worn-incorrectly experiment made (it replaced the crops
            # drawn under its share; docs/experiments/training-flags.md). Kept so that a seed gives the same
            # augmentation stream as the trainer that made the shipped file.
            self.rng.random(len(sel))
            yield np.stack(imgs), target[sel].copy()


def sampling_weights(train: CropSet, recipe: Recipe) -> npt.NDArray[np.float64]:
    """Per-crop draw probabilities: :data:`~maskwatch.training.augment.CLASS_SHARE` per label, and within each
    label ``recipe.in_domain_share`` of the draws from the training images of ``recipe.val_sets``."""
    in_domain = np.array([str(src).startswith(tuple(f"{s}/" for s in recipe.val_sets)) for src in train.source])
    return balanced_weights(train.label, CLASS_SHARE, in_domain, recipe.in_domain_share)


def optimiser(model: Any, recipe: Recipe) -> tuple[Any, Any]:
    """AdamW and its schedule: linear warm-up over 5% of the steps (at most 200), then cosine decay to 0."""
    torch = torch_module()
    total_steps = recipe.steps_per_epoch * recipe.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    warm = max(1, min(200, total_steps // 20))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, total_steps)))),
    )
    return opt, sched


def train_epoch(model: Any, opt: Any, sched: Any, batches: Batches) -> float:
    """One epoch of ``batches``; returns the mean training loss (BCE with label smoothing 0.02)."""
    torch = torch_module()
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    model.train()
    total = 0.0
    for imgs, target in batches.epoch():
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float()
        logits = model.net((x - model.mean) * model.inv_std).reshape(-1)
        y = torch.from_numpy(target * 0.96 + 0.02)  # light label smoothing: annotations of tiny faces are noisy
        loss = loss_fn(logits, y).sum() / len(target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += float(loss.detach())
    return total / batches.steps


def fit(model: Any, batches: Batches, recipe: Recipe, val: CropSet, log: Log) -> list[dict[str, Any]]:
    """Train ``model`` for ``recipe.epochs`` epochs, evaluating it on ``val`` after each; returns the history."""
    opt, sched = optimiser(model, recipe)
    history = []
    for epoch in range(recipe.epochs):
        te = time.time()
        loss = train_epoch(model, opt, sched, batches)
        m = evaluate(predict_torch(model, val.crops), val)
        history.append({"epoch": epoch + 1, "loss": loss, "val_bacc": m["balanced_accuracy"]})
        log(
            f"epoch {epoch + 1}/{recipe.epochs} loss {loss:.4f} "
            f"val acc {m['accuracy']:.3f} bacc {m['balanced_accuracy']:.3f} "
            f"incorrect->no-mask {m['incorrect_recall_as_no_mask']['value'] or 0:.2f} ({time.time() - te:.0f}s)"
        )
    return history


# ---------------------------------------------------------------------------------------------------------- a run
def load_data(data_root: Path, recipe: Recipe, fold: tuple[int, int] | None) -> TrainValData:
    """The recipe's training crops (its ``val_sets``' training images, ``wider_crowds``, the face photos) and the
    held-out crops of ``val_sets``."""
    sets = (*recipe.val_sets, "wider_crowds") if recipe.use_wider else recipe.val_sets
    return load_train_val(
        Path(data_root),
        crop_margin=recipe.crop_margin,
        input_px=recipe.input_px,
        seed=recipe.seed,
        detection_sets=sets,
        face_folders=FACE_FOLDERS,
        fold=fold,
        val_sets=recipe.val_sets,
    )


def build(recipe: Recipe, log: Log) -> tuple[Any, int]:
    """The recipe's network, channels-last, inside the contract module; and its parameter count."""
    torch = torch_module()
    net, mean, std = build_model(recipe.arch, recipe.input_px)
    net = net.to(memory_format=torch.channels_last)  # ~1.6x faster convolutions on CPU
    n_params = int(sum(p.numel() for p in net.parameters()))
    log(f"model {recipe.arch}: {n_params / 1e6:.2f} M parameters, input {recipe.input_px} px, "
        f"crop margin {recipe.crop_margin}")
    return contract_module(net, mean, std), n_params


def ship(
    model: Any, out_path: Path, recipe: Recipe, data: TrainValData, weights: npt.NDArray[np.float64], threads: int,
    log: Log,
) -> dict[str, Any]:
    """Export the trained ``model`` to ``out_path`` with its metadata, and measure it and the torch model on the
    held-out crops; returns the report's metrics, sizes and differences."""
    torch = torch_module()
    train, val = data.train, data.val
    model.net.to(memory_format=torch.contiguous_format)
    model.eval()
    torch_score = predict_torch(model, val.crops)
    calib_idx = np.random.default_rng(recipe.seed + 1).choice(len(train), size=min(512, len(train)), p=weights)
    out = write_classifier(model, out_path, recipe.input_px, train.crops[np.sort(calib_idx)], val.crops, threads)
    metrics, onnx_metrics = evaluate(torch_score, val), evaluate(out.score, val)
    meta = {
        "maskwatch.crop_margin": f"{recipe.crop_margin:g}",
        "maskwatch.input_px": str(recipe.input_px),
        "maskwatch.arch": recipe.arch + ("_int8" if out.quantized else ""),
        "maskwatch.val_balanced_accuracy": f"{onnx_metrics['balanced_accuracy']:.4f}",
        "maskwatch.train_data": data.train_data_sha256,
        # Held-out counts for the corrected camera statistics (pipeline.prevalence); the model card documents them.
        "maskwatch.sensitivity": f"{onnx_metrics['sensitivity']['k']}/{onnx_metrics['sensitivity']['n']}",
        "maskwatch.specificity": f"{onnx_metrics['specificity']['k']}/{onnx_metrics['specificity']['n']}",
        "maskwatch.licence": LICENCE,
    }
    shipped = finish_classifier(out.path, meta, threads)  # the runtime's contract checks and metadata
    size = out.path.stat().st_size
    diff = float(np.max(np.abs(shipped.predict(val.crops[:32]) - torch_score[:32])))
    diff_fp32 = float(np.max(np.abs(out.fp32_score[:32] - torch_score[:32])))
    log(
        f"ONNX {out.path} {size / 1e6:.2f} MB (fp32 {out.fp32_size / 1e6:.2f} MB, quantized={out.quantized}); "
        f"max |onnx - torch| on 32 val crops {diff:.2e} (fp32 export {diff_fp32:.2e}); "
        f"held-out bacc torch {metrics['balanced_accuracy']:.4f} onnx {onnx_metrics['balanced_accuracy']:.4f}"
    )
    return {
        "metrics": metrics,
        "fp32_onnx_metrics": evaluate(out.fp32_score, val),
        "onnx_metrics": onnx_metrics,
        "quantized": out.quantized,
        "onnx_bytes": size,
        "fp32_onnx_bytes": out.fp32_size,
        "onnx_max_abs_diff": diff,
        "fp32_onnx_max_abs_diff": diff_fp32,
        "metadata": meta,
        "held_out": {
            "source": val.source.tolist(),
            "label": [LABELS[k] for k in val.label],
            "face_px": val.face_px.tolist(),
            "score": out.score.tolist(),
        },
    }


def train_classifier(
    data_root: Path,
    out_path: Path,
    recipe: Recipe = RECIPE,
    *,
    threads: int = 2,
    fold: tuple[int, int] | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Train the mask classifier on ``recipe``, evaluate it on the held-out images of ``recipe.val_sets`` and
    export ONNX to ``out_path`` (its parent is created).

    Args:
        data_root: The shared data folder (``detection/``, ``faces/``).
        out_path: Where the ONNX model is written.
        recipe: How to train (default: the shipped recipe).
        threads: Torch / onnxruntime CPU threads.
        fold: ``(i, k)``: hold out fold ``i`` of a ``k``-fold split of the ``val_sets`` images instead of the
            default 20% (cross-validation, see :func:`maskwatch.training.data.split_images`).
        log: Progress sink.

    Returns:
        A report: the recipe's fields, ``metrics`` (held-out, torch, float), ``onnx_metrics`` (held-out, the
        shipped file), ``held_out`` (per held-out face: ``source``, ``label``, ``face_px``, the shipped file's
        ``score``), ``onnx_max_abs_diff`` (onnxruntime vs torch on 32 val crops), sizes, timings, counts.
    """
    torch = torch_module()
    t0 = time.time()
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(recipe.seed)
    data = load_data(Path(data_root), recipe, fold)
    train = data.train
    counts = {name: int(np.sum(train.label == k)) for k, name in enumerate(LABELS)}
    log(f"data: {len(train)} training crops {counts}, {len(data.val)} held-out crops, {time.time() - t0:.1f}s")

    model, n_params = build(recipe, log)
    aug = StreetAugment(recipe.input_px, recipe.crop_margin, rng)
    weights = sampling_weights(train, recipe)
    history = fit(model, Batches(train, weights, aug, rng, recipe.batch, recipe.steps_per_epoch), recipe, data.val, log)
    train_s = time.time() - t0
    shipped = ship(model, Path(out_path), recipe, data, weights, threads, log)
    return {
        **recipe.as_dict(),
        "face_folders": list(FACE_FOLDERS),
        "class_share": {LABELS[k]: v for k, v in CLASS_SHARE.items()},
        "fold": list(fold) if fold else None,
        "threads": threads,
        "n_params": n_params,
        "n_train": len(train),
        "train_counts": counts,
        "n_val": len(data.val),
        "val_min_face_px": EVAL_MIN_FACE_PX,
        "train_data_sha256": data.train_data_sha256,
        **shipped,
        "history": history,
        "train_seconds": train_s,
        "total_seconds": time.time() - t0,
        "out_path": str(out_path),
    }


# ------------------------------------------------------------------------------------------------ cross-validation
def fold_path(path: Path, fold: int) -> Path:
    """``<stem>.fold<fold><suffix>`` next to ``path``: where :func:`cross_validate` writes that fold's file."""
    return path.with_name(f"{path.stem}.fold{fold}{path.suffix}")


def cross_validate(
    data_root: Path,
    out_path: Path,
    folds: int,
    report_path: Path | None,
    log: Log,
    recipe: Recipe = RECIPE,
    threads: int = 2,
) -> dict[str, Any]:
    """Train one model per fold of a ``folds``-fold split by source image and pool their held-out predictions.

    Every image of ``recipe.val_sets`` is held out by exactly one fold, so the pooled metrics cover all of its
    faces (at least :data:`EVAL_MIN_FACE_PX` tall) with each face scored by the int8 model that did not train on
    it: the recipe's figures, with about five times the held-out faces of one split. Fold ``i`` writes
    ``<out stem>.fold<i>.onnx`` next to ``out_path`` (and ``<report stem>.fold<i>.json``).

    Returns:
        ``{"folds", "recipe", "pooled_metrics", "fold_metrics"}``; ``pooled_metrics`` as
        :func:`maskwatch.evaluation.classifier.classifier_metrics`.
    """
    from maskwatch.evaluation.classifier import format_metrics

    out_path = Path(out_path)
    score, label, face_px, fold_metrics = [], [], [], []
    for i in range(folds):
        fold_out = fold_path(out_path, i)
        log(f"fold {i + 1}/{folds}: {fold_out}")
        r = train_classifier(data_root, fold_out, recipe, threads=threads, fold=(i, folds), log=log)
        if report_path is not None:
            fold_report = fold_path(Path(report_path), i)
            fold_report.parent.mkdir(parents=True, exist_ok=True)
            fold_report.write_text(json.dumps(r, indent=2) + "\n")
        held = r["held_out"]
        score += held["score"]
        label += [LABELS.index(x) for x in held["label"]]
        face_px += held["face_px"]
        fold_metrics.append(r["onnx_metrics"])
        log(f"fold {i + 1}/{folds}: balanced accuracy {r['onnx_metrics']['balanced_accuracy']:.4f} (int8)")
    pooled = classifier_metrics(
        np.asarray(score, np.float32), np.asarray(label, np.int8), np.asarray(face_px, np.float32)
    )
    log(f"pooled over {folds} folds (each face scored by the model that did not train on it):")
    log(format_metrics(pooled))
    return {"folds": folds, "recipe": recipe.as_dict(), "pooled_metrics": pooled, "fold_metrics": fold_metrics}
