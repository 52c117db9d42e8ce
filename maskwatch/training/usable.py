"""Teach the mask classifier a second output, ``usable_score``: is this crop a face that can show a mask?

The face gate's detector (YuNet, :mod:`pipeline.facegate`) passes backs of heads, hair and faces whose mouth is
hidden behind the person in front. This module adds a second output to the classifier's ONNX graph that tells
usable faces from the rest. Two heads can be made (``--head``):

- ``linear`` (the default; the shipped file's head since 2026-11-29): a logistic regression on the classifier's own
  pooled features (the input of its last fully connected layer: 1,280 values for efficientnet_lite0). One matrix
  product, no second network.
- ``net`` (measured 2026-11-30, not shipped: `docs/experiments/face-gate.md`): a second EfficientNet-Lite0
  (ImageNet weights, the classifier's architecture, input and street augmentation), fine-tuned on usable vs not
  usable crops, quantized to int8 and merged into the classifier's graph on the same ``crops`` input. One session
  call runs both networks.

Training data (labels by looking, `data/labels/README.md`):
- usable: the annotated faces of the classifier's training split (:func:`maskwatch.training.data.split_images`,
  the same seed, so its held-out faces stay held out) and the ``face`` rows of the photo label files
  (``--photo-labels``: ``photo_false_faces.csv`` by default, as shipped; ``photo_head_crops.csv`` adds 684 more) and
  of ``video_head_crops.csv``;
- not usable: their ``not_a_face`` and ``unusable`` rows (backs of heads, blurs, hidden mouths from street photos
  and CCTV videos).

The masked-crowd videos of ``face_gate_crops.csv`` are never trained on: they measure the result.

Command line::

    python -m maskwatch.training.usable --data-root ../shared/data --classifier maskwatch/assets/mask_classifier.onnx \\
        --out maskwatch/assets/mask_classifier.onnx
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from maskwatch.training.data import cut_box_crops, read_boxes, split_images
from pipeline.headbox import crop_box, cut_crops

LABELS_DIR = Path(__file__).resolve().parents[2] / "data" / "labels"
USABLE_OUTPUT = "usable_score"
USABLE_VIDEO_LABELS = ("face",)
NOT_USABLE_VIDEO_LABELS = ("not_a_face", "unusable")
PHOTO_SETS = ("andrewmvd_dev", "jolignier_dev", "wider_crowds")
HELD_OUT_SETS = ("andrewmvd_dev", "jolignier_dev")


def feature_tensor(model: Any) -> str:
    """The name of the pooled-feature tensor: the first input of the graph's last ``Gemm`` node.

    Raises:
        ValueError: If the graph has no ``Gemm`` node.
    """
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    if not gemms:
        msg = "classifier graph has no Gemm node: cannot find its pooled features"
        raise ValueError(msg)
    return str(gemms[-1].input[0])


class PooledFeatures:
    """The classifier's pooled features: the graph is loaded and opened once, with the feature tensor as an output.

    Call with `(N, S, S, 3)` uint8 RGB crops; returns `(N, F)` float32.
    """

    def __init__(self, classifier: Path, batch: int = 128) -> None:
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(classifier))
        self.name = feature_tensor(model)
        model.graph.output.append(onnx.helper.make_tensor_value_info(self.name, onnx.TensorProto.FLOAT, None))
        self.session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.batch = batch

    def __call__(self, crops_rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        b = self.batch
        out = [self.session.run([self.name], {self.input: crops_rgb[i : i + b]})[0]
               for i in range(0, len(crops_rgb), b)]
        return np.concatenate(out).reshape(len(crops_rgb), -1).astype(np.float32)


def fit_logistic(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.float32], weight: npt.NDArray[np.float32], l2: float
) -> tuple[npt.NDArray[np.float32], float]:
    """Weighted, L2-regularised logistic regression on standardised features (torch L-BFGS).

    Returns:
        `(w, b)` on the *raw* features (the standardisation folded in): ``p = sigmoid(x @ w + b)``.
    """
    import torch

    torch.manual_seed(0)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    wt = torch.tensor(weight / weight.mean(), dtype=torch.float32)
    lin = torch.nn.Linear(x.shape[1], 1)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        z = lin(xt).squeeze(1)
        loss = (wt * torch.nn.functional.binary_cross_entropy_with_logits(z, yt, reduction="none")).mean()
        loss = loss + l2 * (lin.weight**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w = lin.weight.detach().numpy().reshape(-1) / sd
    b = float(lin.bias.detach().numpy()[0] - (w * mu).sum())
    return w.astype(np.float32), b


def _update_metadata(model: Any, metadata: dict[str, str]) -> None:
    """Set ``metadata`` in the ``ModelProto``'s metadata_props, keeping the other keys and their order."""
    import onnx

    props = {q.key: q.value for q in model.metadata_props} | metadata
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))


def add_usable_output(
    classifier: Path, out: Path, w: npt.NDArray[np.float32], b: float, metadata: dict[str, str]
) -> None:
    """Write ``classifier`` with a second output ``usable_score`` `(N,)` float32 = sigmoid(features @ w + b).

    Raises:
        ValueError: If ``classifier`` already has that output (extend the model it was made from).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(classifier))
    if any(o.name == USABLE_OUTPUT for o in model.graph.output):
        msg = f"{classifier} already has an output {USABLE_OUTPUT!r}: extend the classifier without it"
        raise ValueError(msg)
    feat = feature_tensor(model)
    model.graph.initializer.extend([
        numpy_helper.from_array(w.reshape(-1, 1).astype(np.float32), "usable/w"),
        numpy_helper.from_array(np.array([b], np.float32), "usable/b"),
        numpy_helper.from_array(np.array([1], np.int64), "usable/axes"),
    ])
    model.graph.node.extend([
        helper.make_node("MatMul", [feat, "usable/w"], ["usable/mm"]),
        helper.make_node("Add", ["usable/mm", "usable/b"], ["usable/logit"]),
        helper.make_node("Sigmoid", ["usable/logit"], ["usable/prob"]),
        helper.make_node("Squeeze", ["usable/prob", "usable/axes"], [USABLE_OUTPUT]),
    ])
    model.graph.output.append(helper.make_tensor_value_info(USABLE_OUTPUT, onnx.TensorProto.FLOAT, ["N"]))
    _update_metadata(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def strip_usable_output(model: Any) -> Any:
    """A copy of the classifier graph ``model`` (an ``onnx.ModelProto``) without its ``usable_score`` head.

    Removes the output and every node and initializer of a head this module added (names under ``usable/`` for
    the linear head, ``usable_net/`` for the network); a graph without the output comes back unchanged.
    """
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    prefixes = ("usable/", "usable_net/")
    nodes = [n for n in g.node if not any(o == USABLE_OUTPUT or o.startswith(prefixes) for o in n.output)]
    inits = [i for i in g.initializer if not i.name.startswith(prefixes)]
    outs = [o for o in g.output if o.name != USABLE_OUTPUT]
    infos = [v for v in g.value_info if not v.name.startswith(prefixes)]
    for field, keep in ((g.node, nodes), (g.initializer, inits), (g.output, outs), (g.value_info, infos)):
        del field[:]
        field.extend(keep)
    return out


def merge_usable_net(classifier: Any, net: Any, metadata: dict[str, str]) -> Any:
    """Add the one-output crop network ``net`` to ``classifier`` as its ``usable_score`` output (both ``ModelProto``).

    ``net`` must take the classifier's input (uint8 `(N, S, S, 3)` crops) and give `(N,)` float32 probabilities, as
    :func:`maskwatch.training.export.export_onnx` writes it. Its names get the prefix ``usable_net/``; its input is
    wired to the classifier's input, so one session call runs both networks on the same crops.

    Raises:
        ValueError: If ``classifier`` already has a ``usable_score`` output, the inputs differ in type or shape, or
            ``net`` does not have exactly one input and one output.
    """
    import onnx
    from onnx import compose

    if any(o.name == USABLE_OUTPUT for o in classifier.graph.output):
        msg = f"the classifier already has an output {USABLE_OUTPUT!r}: strip it first (strip_usable_output)"
        raise ValueError(msg)
    if len(net.graph.input) != 1 or len(net.graph.output) != 1:
        msg = (f"the usable-face network must have one input and one output, got {len(net.graph.input)} and "
               f"{len(net.graph.output)}")
        raise ValueError(msg)
    (c_in,), (n_in,) = classifier.graph.input, net.graph.input
    if c_in.type != n_in.type:
        msg = f"input mismatch: classifier {c_in.type}, usable-face network {n_in.type}"
        raise ValueError(msg)
    prefixed = compose.add_prefix(net, "usable_net/")
    src_in, src_out = prefixed.graph.input[0].name, prefixed.graph.output[0].name
    merged = onnx.ModelProto()
    merged.CopyFrom(classifier)
    g = merged.graph
    for node in prefixed.graph.node:
        node.input[:] = [c_in.name if i == src_in else i for i in node.input]
        node.output[:] = [USABLE_OUTPUT if o == src_out else o for o in node.output]
        g.node.append(node)
    g.initializer.extend(prefixed.graph.initializer)
    g.value_info.extend(prefixed.graph.value_info)
    g.output.append(onnx.helper.make_tensor_value_info(USABLE_OUTPUT, onnx.TensorProto.FLOAT, ["N"]))
    have = {(o.domain, o.version) for o in merged.opset_import}
    merged.opset_import.extend(o for o in prefixed.opset_import if (o.domain, o.version) not in have)
    _update_metadata(merged, metadata)
    onnx.checker.check_model(merged)
    return merged


def occlude_lower_face(
    face: npt.NDArray[np.uint8], filler: npt.NDArray[np.uint8], rng: np.random.Generator
) -> npt.NDArray[np.uint8]:
    """A face crop whose nose and mouth are hidden behind a head in front: a not-usable training crop.

    The lower part of ``face`` is covered by an ellipse rising from below the crop, filled with ``filler`` (a
    not-usable crop: the back of a head, hair, a blur; possibly mirrored) moved down so that the top of its head
    meets the top of the ellipse. The top lies between 45% and 62% of the crop height: in a crop cut with margin 1.6
    the face spans 19-81% and its eyes sit near 40%, so the mouth and most of the nose are hidden and the eyes stay
    visible, as on the hidden-mouth crops of ``data/labels/face_gate_crops.csv`` (``unusable``). A synthetic
    occlusion in the spirit of Random Erasing (Zhong et al., AAAI 2020), shaped like the occluder this pipeline meets
    in queues.

    Args:
        face, filler: `(S, S, 3)` uint8 RGB crops.
        rng: Random source.

    Returns:
        `(S, S, 3)` uint8 RGB.
    """
    s = face.shape[0]
    top = rng.uniform(0.45, 0.62) * s
    ry = rng.uniform(0.45, 0.8) * s
    rx = rng.uniform(0.35, 0.6) * s
    cx = rng.uniform(0.35, 0.65) * s
    src = np.ascontiguousarray(filler[:, ::-1] if rng.random() < 0.5 else filler)
    shift = np.float32([[1, 0, cx - s / 2], [0, 1, top - 0.2 * s]])
    src = cv2.warpAffine(src, shift, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    yy, xx = np.mgrid[0:s, 0:s]
    covered = ((xx - cx) / rx) ** 2 + ((yy - top - ry) / ry) ** 2 <= 1.0
    out = face.copy()
    out[covered] = src[covered]
    return out


def train_usable_net(
    annotated_faces: npt.NDArray[np.uint8],
    domain_faces: npt.NDArray[np.uint8],
    not_usable: npt.NDArray[np.uint8],
    *,
    crop_margin: float,
    epochs: int = 10,
    occlusion: float = 0.0,
    seed: int = 0,
    threads: int = 2,
    log: Any = print,
) -> Any:
    """Fine-tune EfficientNet-Lite0 (ImageNet weights) to tell usable faces from the rest.

    Each epoch draws 4,800 crops: half ``not_usable``, a quarter ``domain_faces`` (faces cut by the pipeline's own
    keypoint head boxes on photos and videos), a quarter ``annotated_faces``; each crop goes through the
    classifier's :class:`~maskwatch.training.augment.StreetAugment`. AdamW 6e-4 with weight decay 1e-5, one-cycle
    schedule (10% warm-up), batch 48, binary cross-entropy: the classifier's optimiser settings.

    Args:
        annotated_faces, domain_faces, not_usable: `(N, S, S, 3)` uint8 RGB crops, cut with ``crop_margin``.
        crop_margin: Crop side over face side (for the augmentation's downscaling).
        occlusion: Share of the not-usable draws made by :func:`occlude_lower_face` from a face of the two face
            pools instead (a face whose mouth and nose are hidden behind the head of the person in front).
        epochs, seed, threads: Training length, seed of sampling, augmentation and initialisation, torch threads.
        log: Progress sink.

    Returns:
        The trained module (eval mode) in the classifier's contract: uint8 `(N, S, S, 3)` in, `(N,)` probability out.
    """
    import time

    import torch

    from maskwatch.training.augment import StreetAugment
    from maskwatch.training.networks import build_model, contract_module

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    px = int(not_usable.shape[1])
    net, mean, std = build_model("efficientnet_lite0", px)
    net = net.to(memory_format=torch.channels_last)
    model = contract_module(net, mean, std)
    rng = np.random.default_rng(seed)
    aug = StreetAugment(px, crop_margin, rng)
    n, batch = 4800, 48
    steps = epochs * (n // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 6e-4, total_steps=steps, pct_start=0.1)
    pools = (not_usable, domain_faces, annotated_faces)
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        src = np.searchsorted([0.5, 0.75], rng.random(n), side="right")  # 0: not usable, 1: domain, 2: annotated
        picks = [pools[k][rng.integers(len(pools[k]))] for k in src]
        hidden = np.flatnonzero((src == 0) & (rng.random(n) < occlusion)) if occlusion > 0 else []
        for i in hidden:
            face = pools[1 + int(rng.integers(2))]
            picks[i] = occlude_lower_face(face[rng.integers(len(face))], not_usable[rng.integers(len(not_usable))], rng)
        target = (src > 0).astype(np.float32)
        total = 0.0
        for i in range(0, n - batch + 1, batch):
            x = torch.from_numpy(np.stack([aug(c, float("nan")) for c in picks[i : i + batch]]))
            x = (x.permute(0, 3, 1, 2).float() - model.mean) * model.inv_std
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model.net(x).reshape(-1), torch.from_numpy(target[i : i + batch])
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        log(f"usable net epoch {epoch + 1}/{epochs} loss {total / (n // batch):.4f} ({time.time() - t0:.0f}s)")
    net.to(memory_format=torch.contiguous_format)
    return model.eval()


def usable_net_graph(model: Any, calib: npt.NDArray[np.uint8]) -> Any:
    """Export :func:`train_usable_net`'s module to ONNX and quantize it to int8 on ``calib`` crops (``ModelProto``)."""
    import tempfile

    import onnx

    from maskwatch.training.export import export_onnx, quantize_int8

    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_onnx(model, fp32, int(calib.shape[1]))
        quantize_int8(fp32, int8, calib)
        return onnx.load(str(int8))


def video_crops(
    labels_csv: Path, videos_dir: Path, input_px: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.str_], npt.NDArray[np.str_]]:
    """Re-cut the labelled crops of a labels file (``video, frame_idx, crop_x1..crop_y2, ..., label``).

    Returns:
        `(crops, label, video)`: `(N, input_px, input_px, 3)` uint8 RGB, `(N,)` labels, `(N,)` video names.

    Raises:
        FileNotFoundError: If a video is missing or ends before a labelled frame.
    """
    rows = list(csv.DictReader(open(labels_csv, newline="")))  # noqa: SIM115 - read at once
    by_frame: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_frame[(r["video"], int(r["frame_idx"]))].append(i)
    crops = np.zeros((len(rows), input_px, input_px, 3), np.uint8)
    for video in sorted({r["video"] for r in rows}):
        path = videos_dir / video
        if not path.is_file():
            msg = f"{labels_csv.name}: video not found: {path}"
            raise FileNotFoundError(msg)
        last = max(f for v, f in by_frame if v == video)
        cap = cv2.VideoCapture(str(path))
        try:
            for frame_idx in range(last + 1):
                ok, frame = cap.read()
                if not ok:
                    msg = f"{path}: ended at frame {frame_idx}, labels need frame {last}"
                    raise FileNotFoundError(msg)
                for i in by_frame.get((video, frame_idx), []):
                    box = np.array([[float(rows[i][k]) for k in ("crop_x1", "crop_y1", "crop_x2", "crop_y2")]],
                                   np.float32)
                    crops[i] = cut_crops(frame, box, input_px)[0]
        finally:
            cap.release()
    label = np.array([r["label"] for r in rows])
    video = np.array([r["video"].rsplit(".", 1)[0] for r in rows])
    return crops, label, video


def photo_crops(
    data_root: Path, labels_csv: Path, crop_margin: float, input_px: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.str_]]:
    """The hand-sorted false faces on training photos (``image, x1, y1, x2, y2, label``), cut as at inference."""
    rows = list(csv.DictReader(open(labels_csv, newline="")))  # noqa: SIM115 - read at once
    crops = np.zeros((len(rows), input_px, input_px, 3), np.uint8)
    cache: dict[str, npt.NDArray[np.uint8]] = {}
    for i, r in enumerate(rows):
        path = data_root / "detection" / r["image"]
        if r["image"] not in cache:
            image = cv2.imread(str(path))
            if image is None:
                msg = f"{labels_csv.name}: image not found or unreadable: {path}"
                raise FileNotFoundError(msg)
            cache = {r["image"]: image}
        box = np.array([[float(r[k]) for k in ("x1", "y1", "x2", "y2")]], np.float32)
        crops[i] = cut_crops(cache[r["image"]], crop_box(box, crop_margin), input_px)[0]
    return crops, np.array([r["label"] for r in rows])


def annotated_faces(
    data_root: Path, crop_margin: float, input_px: int, seed: int = 0, min_face_px: float = 10.0
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """Annotated faces of :data:`PHOTO_SETS`: `(train_crops, held_out_crops, held_out_face_px)`.

    The held-out images are those the classifier's trainer holds out (:data:`HELD_OUT_SETS`, split by
    :func:`split_images` with ``seed``); ``wider_crowds`` is all training.
    """
    train, held = [], []
    for set_name in PHOTO_SETS:
        boxes = [b for b in read_boxes(data_root, set_name) if b.face_px >= min_face_px]
        if set_name in HELD_OUT_SETS:
            tr_src, va_src = split_images(boxes, seed=seed)
            train += [b for b in boxes if b.source in tr_src]
            held += [b for b in boxes if b.source in va_src]
        else:
            train += boxes
    tr = cut_box_crops(train, crop_margin=crop_margin, input_px=input_px)
    va = cut_box_crops(held, crop_margin=crop_margin, input_px=input_px)
    return tr.crops, va.crops, va.face_px


def gate_report(
    keep: npt.NDArray[np.bool_], label: npt.NDArray[np.str_], video: npt.NDArray[np.str_]
) -> dict[str, dict[str, float]]:
    """Share of faces kept and of non-faces / unusable faces rejected, per video and over all."""
    face = np.isin(label, ["with_mask", "without_mask", "mask_worn_incorrectly", "face"])
    out = {}
    for name in [*sorted(set(video.tolist())), "all"]:
        m = np.ones(len(label), bool) if name == "all" else video == name
        row = {"faces_kept": float(keep[m & face].mean()) if (m & face).any() else float("nan")}
        for lab in ("not_a_face", "unusable"):
            sel = m & (label == lab)
            row[f"{lab}_rejected"] = float(1 - keep[sel].mean()) if sel.any() else float("nan")
        out[name] = row
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train the usable-face head, write the model, print the report on held-out crops as JSON."""
    p = argparse.ArgumentParser(prog="python -m maskwatch.training.usable", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, required=True, help="shared data folder (detection/, videos/)")
    p.add_argument("--classifier", type=Path, required=True,
                   help="mask classifier .onnx to extend (a usable_score head it has is replaced)")
    p.add_argument("--out", type=Path, required=True, help="the extended .onnx to write")
    p.add_argument("--labels-dir", type=Path, default=LABELS_DIR)
    p.add_argument("--head", choices=("linear", "net"), default="linear",
                   help="linear: logistic regression on pooled features (default, shipped); net: a fine-tuned second "
                        "network")
    p.add_argument("--photo-labels", default="photo_false_faces.csv",
                   help="comma-separated label files of head crops on the training photos, in --labels-dir")
    p.add_argument("--epochs", type=int, default=10, help="--head net: training epochs of 4,800 crops")
    p.add_argument("--threads", type=int, default=2, help="--head net: torch threads")
    p.add_argument("--occlusion", type=float, default=0.0,
                   help="--head net: share of not-usable draws that are faces with the lower face hidden")
    p.add_argument("--l2", type=float, default=0.03, help="--head linear: L2 penalty on the standardised weights")
    p.add_argument("--threshold", type=float, default=0.5, help="pass mark reported (faces.usable_min_score)")
    p.add_argument("--yunet-min", type=float, default=0.6, help="face-gate pass mark reported with it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-videos", default="",
                   help="comma-separated video_head_crops.csv videos left out of training; the report gives the pass "
                        "mark that keeps 97%% of their faces and what it rejects there")
    args = p.parse_args(argv)

    import tempfile

    import onnx

    from pipeline.facegate import YUNET_FILE, load_face_gate
    from pipeline.onnx_models import MaskClassifier

    base = strip_usable_output(onnx.load(str(args.classifier)))
    meta = {q.key: q.value for q in base.metadata_props}
    margin, px = float(meta["maskwatch.crop_margin"]), int(meta["maskwatch.input_px"])
    videos = args.data_root / "videos"
    tr_faces, held_faces, held_px = annotated_faces(args.data_root, margin, px, args.seed)
    parts = [photo_crops(args.data_root, args.labels_dir / name, margin, px)
             for name in args.photo_labels.split(",") if name]
    vh_crops, vh_label, vh_video = video_crops(args.labels_dir / "video_head_crops.csv", videos, px)
    val_videos = [v for v in args.val_videos.split(",") if v]
    unknown = sorted(set(val_videos) - set(vh_video.tolist()))
    if unknown:
        p.error(f"--val-videos: {unknown} not in video_head_crops.csv (has {sorted(set(vh_video.tolist()))})")
    val = np.isin(vh_video, val_videos) & np.isin(vh_label, USABLE_VIDEO_LABELS + NOT_USABLE_VIDEO_LABELS)
    parts.append((vh_crops[~val], vh_label[~val]))
    dom_crops = np.concatenate([c for c, _ in parts])
    dom_label = np.concatenate([lab for _, lab in parts])
    known = np.isin(dom_label, USABLE_VIDEO_LABELS + NOT_USABLE_VIDEO_LABELS)  # leaves out the studio_4 painting
    dom_crops, dom_usable = dom_crops[known], np.isin(dom_label[known], USABLE_VIDEO_LABELS)
    train = {"annotated_faces": len(tr_faces), "domain_faces": int(dom_usable.sum()),
             "not_usable": int((~dom_usable).sum())}
    print(f"training crops: {train}", file=sys.stderr, flush=True)

    if args.head == "linear":
        with tempfile.TemporaryDirectory() as tmp:
            base_path = Path(tmp) / "base.onnx"
            onnx.save(base, str(base_path))
            pooled_features = PooledFeatures(base_path)
            x = np.concatenate([pooled_features(c) for c in (tr_faces, dom_crops)])
            y = np.concatenate([np.ones(len(tr_faces)), dom_usable]).astype(np.float32)
            weight = np.where(y == 1, 0.5 / y.sum(), 0.5 / (1 - y).sum()).astype(np.float32) * len(y)
            w, b = fit_logistic(x, y, weight, args.l2)
            add_usable_output(base_path, args.out, w, b, {
                "maskwatch.usable_head": f"logistic regression on pooled features, l2 {args.l2}, "
                f"{int(y.sum())} usable / {int((1 - y).sum())} not (maskwatch.training.usable)",
            })
        train["l2"] = args.l2
    else:
        log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731 - a one-line sink
        with contextlib.redirect_stdout(sys.stderr):  # the weights loader and the quantizer print progress
            model = train_usable_net(tr_faces, dom_crops[dom_usable], dom_crops[~dom_usable], crop_margin=margin,
                                     epochs=args.epochs, occlusion=args.occlusion, seed=args.seed,
                                     threads=args.threads, log=log)
            rng = np.random.default_rng(args.seed + 1)
            # The same crops as permuting the arrays themselves, without copying them whole.
            calib = np.concatenate([tr_faces[rng.permutation(len(tr_faces))[:256]],
                                    dom_crops[rng.permutation(len(dom_crops))[:256]]])
            graph = usable_net_graph(model, calib)
        merged = merge_usable_net(base, graph, {
            "maskwatch.usable_head": f"efficientnet_lite0_int8 fine-tuned, {args.epochs} epochs, "
            f"occlusion {args.occlusion:g}, "
            f"{train['annotated_faces']} annotated + {train['domain_faces']} pipeline faces / "
            f"{train['not_usable']} not usable (maskwatch.training.usable)",
        })
        onnx.save(merged, str(args.out))
        train |= {"epochs": args.epochs, "occlusion": args.occlusion}

    clf = MaskClassifier(args.out, device="cpu")
    ev_crops, ev_label, ev_video = video_crops(args.labels_dir / "face_gate_crops.csv", videos, px)
    gate = load_face_gate(Path(__file__).resolve().parents[1] / "assets" / YUNET_FILE)
    ev_u, ev_y = clf.predict_scores(ev_crops)[:, 1], gate.face_scores(ev_crops)
    held16 = held_faces[held_px >= 16]
    ho_u, ho_y = clf.predict_scores(held16)[:, 1], gate.face_scores(held16)
    t, ty = args.threshold, args.yunet_min
    report = {
        "head": args.head,
        "train": train,
        "video_crops_face_detector_only": gate_report(ev_y >= ty, ev_label, ev_video),
        "video_crops_usable_only": gate_report(ev_u >= t, ev_label, ev_video),
        "video_crops_both": gate_report((ev_u >= t) & (ev_y >= ty), ev_label, ev_video),
        "held_out_annotated_faces_kept": {
            "face_detector_only": float((ho_y >= ty).mean()), "usable_only": float((ho_u >= t).mean()),
            "both": float(((ho_u >= t) & (ho_y >= ty)).mean()), "n": len(held16),
        },
    }
    if val.any():
        va_u = clf.predict_scores(vh_crops[val])[:, 1]
        va_face = np.isin(vh_label[val], USABLE_VIDEO_LABELS)
        t_val = float(np.quantile(va_u[va_face], 0.03))
        report["val_videos"] = {
            "videos": val_videos, "faces": int(va_face.sum()), "not_usable": int((~va_face).sum()),
            "pass_mark_keeping_97pct_of_faces": t_val,
            "not_usable_rejected_at_it": float((va_u[~va_face] < t_val).mean()),
            "test_crops_usable_only_at_it": gate_report(ev_u >= t_val, ev_label, ev_video)["all"],
            "test_crops_both_at_it": gate_report((ev_u >= t_val) & (ev_y >= ty), ev_label, ev_video)["all"],
        }
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
