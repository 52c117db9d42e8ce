"""Teach the mask classifier a second output, ``usable_score``: is this crop a face that can show a mask?

The face gate's detector (YuNet, :mod:`pipeline.facegate`) passes backs of heads, hair and faces whose mouth is
hidden behind the person in front. This module fits a logistic regression on the classifier's own pooled features
(the input of its last fully connected layer: 1,280 values for efficientnet_lite0) that tells usable faces from
the rest, and adds it to the classifier's ONNX graph as a second output (one matrix product, no second pass).

Training data (labels by looking, `data/labels/README.md`):
- usable: the annotated faces of the classifier's training split (:func:`maskwatch.training.data.split_images`,
  the same seed, so its held-out faces stay held out), the ``face`` rows of ``photo_false_faces.csv`` and of
  ``video_head_crops.csv``;
- not usable: the ``not_a_face`` rows of ``photo_false_faces.csv`` and the ``not_a_face`` and ``unusable`` rows of
  ``video_head_crops.csv`` (backs of heads, blurs, hidden mouths from street and CCTV videos).

The masked-crowd videos of ``face_gate_crops.csv`` are never trained on: they measure the result.

Command line::

    python -m maskwatch.training.usable --data-root ../shared/data --classifier maskwatch/assets/mask_classifier.onnx \\
        --out maskwatch/assets/mask_classifier.onnx
"""

from __future__ import annotations

import argparse
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
    props = {p.key: p.value for p in model.metadata_props} | metadata
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


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
    """Command line: fit the usable-face head, print the held-out report as JSON, write the model."""
    p = argparse.ArgumentParser(prog="python -m maskwatch.training.usable", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, required=True, help="shared data folder (detection/, videos/)")
    p.add_argument("--classifier", type=Path, required=True, help="mask classifier .onnx to extend")
    p.add_argument("--out", type=Path, required=True, help="the extended .onnx to write")
    p.add_argument("--labels-dir", type=Path, default=LABELS_DIR)
    p.add_argument("--l2", type=float, default=0.03, help="L2 penalty on the standardised weights")
    p.add_argument("--threshold", type=float, default=0.5, help="pass mark reported (faces.usable_min_score)")
    p.add_argument("--yunet-min", type=float, default=0.6, help="face-gate pass mark reported with it")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import onnx

    from pipeline.facegate import YUNET_FILE, load_face_gate

    meta = {q.key: q.value for q in onnx.load(str(args.classifier)).metadata_props}
    margin, px = float(meta["maskwatch.crop_margin"]), int(meta["maskwatch.input_px"])
    videos = args.data_root / "videos"
    tr_faces, held_faces, held_px = annotated_faces(args.data_root, margin, px, args.seed)
    ph_crops, ph_label = photo_crops(args.data_root, args.labels_dir / "photo_false_faces.csv", margin, px)
    vh_crops, vh_label, _ = video_crops(args.labels_dir / "video_head_crops.csv", videos, px)
    vh_keep = np.isin(vh_label, USABLE_VIDEO_LABELS + NOT_USABLE_VIDEO_LABELS)
    pooled_features = PooledFeatures(args.classifier)
    x = np.concatenate([pooled_features(c) for c in (tr_faces, ph_crops, vh_crops[vh_keep])])
    y = np.concatenate([
        np.ones(len(tr_faces)), (ph_label == "face").astype(float), np.isin(vh_label[vh_keep], USABLE_VIDEO_LABELS)
    ]).astype(np.float32)
    weight = np.where(y == 1, 0.5 / y.sum(), 0.5 / (1 - y).sum()).astype(np.float32) * len(y)
    w, b = fit_logistic(x, y, weight, args.l2)

    ev_crops, ev_label, ev_video = video_crops(args.labels_dir / "face_gate_crops.csv", videos, px)
    gate = load_face_gate(Path(__file__).resolve().parents[1] / "assets" / YUNET_FILE)

    def usable(c: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return 1.0 / (1.0 + np.exp(-(pooled_features(c) @ w + b)))

    ev_u, ev_y = usable(ev_crops), gate.face_scores(ev_crops)
    held16 = held_faces[held_px >= 16]
    ho_u, ho_y = usable(held16), gate.face_scores(held16)
    t, ty = args.threshold, args.yunet_min
    report = {
        "train": {"usable": int(y.sum()), "not_usable": int((1 - y).sum()), "l2": args.l2},
        "video_crops_face_detector_only": gate_report(ev_y >= ty, ev_label, ev_video),
        "video_crops_usable_only": gate_report(ev_u >= t, ev_label, ev_video),
        "video_crops_both": gate_report((ev_u >= t) & (ev_y >= ty), ev_label, ev_video),
        "held_out_annotated_faces_kept": {
            "face_detector_only": float((ho_y >= ty).mean()), "usable_only": float((ho_u >= t).mean()),
            "both": float(((ho_u >= t) & (ho_y >= ty)).mean()), "n": len(held16),
        },
    }
    json.dump(report, sys.stdout, indent=1)
    print()
    add_usable_output(args.classifier, args.out, w, b, {
        "maskwatch.usable_head": f"logistic regression on pooled features, l2 {args.l2}, "
        f"{int(y.sum())} usable / {int((1 - y).sum())} not (maskwatch.training.usable)",
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
