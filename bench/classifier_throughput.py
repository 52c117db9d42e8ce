"""Mask classifier and face gate crops/s next to the pose model's frames/s, same process, one run.

The classifier at batch 1, 8, 32 and 128 (both outputs, ``mask_score`` and ``usable_score``, as the pipeline calls it),
its mask network alone at batch 32 (the rest is the usable-face output's cost: a second network since 2026-11-30),
and the face gate's detector (YuNet via ``cv2.FaceDetectorYN``, one crop per call, as ``pipeline.facegate`` runs it)
per crop.

    python bench/classifier_throughput.py [--model M] [--device cpu|cuda] [--seconds 3]

Crops are real held-out faces (``../shared/data``, cut as the pipeline cuts them) when the shared data is present,
otherwise random pixels (the model's cost does not depend on the pixels). Pose frames are letterboxed frames of a
shared street video at 640 px and 1280 px, one frame per call. Each figure is the median of timed repetitions over
about ``--seconds`` each, model call only. Absolute numbers only mean something on the machine they came from; the
ratios (how many classifier crops one pose frame costs) carry over.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import numpy as np

from cluster.driver import pose_model_path
from pipeline.config import Config
from pipeline.facegate import load_face_gate
from pipeline.letterbox import letterbox
from pipeline.onnx_models import MaskClassifier, PoseModel
from pipeline.source import read_frames

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def timed(fn, seconds: float) -> float:
    """Median seconds per call of ``fn`` over repetitions filling about ``seconds`` (after one warm-up)."""
    fn()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(Config().classify.model_path))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--video", default=str(SHARED / "videos" / "towncentre_cctv_4s.mp4"))
    args = ap.parse_args()

    clf = MaskClassifier(args.model, device=args.device)
    s = clf.input_px
    boxes = SHARED / "detection" / "andrewmvd_dev" / "boxes.csv"
    if boxes.is_file():
        from maskwatch.training.data import cut_box_crops, read_boxes_csv

        pool = cut_box_crops(read_boxes_csv(boxes)[:256], crop_margin=clf.crop_margin, input_px=s).crops
        what = "real faces"
    else:
        pool = np.random.default_rng(0).integers(0, 256, (256, s, s, 3), dtype=np.uint8)
        what = "random pixels"
    pose = PoseModel(pose_model_path(Config()), device=args.device)
    frame = next(iter(read_frames(args.video, "bench", None))).image

    print(f"classifier {Path(args.model).name} ({clf.metadata.get('maskwatch.arch', '?')}, {s} px, {what}) on "
          f"{clf.provider}; pose {pose.path.name} on {pose.provider}; {os.cpu_count()} CPU(s)")
    print(f"{'what':<36}{'ms/call':>10}{'items/s':>10}")
    rows = {}
    batches = {b: np.ascontiguousarray(np.resize(pool, (b, s, s, 3))) for b in (1, 8, 32, 128)}
    for b, batch in batches.items():
        sec = timed(lambda batch=batch: clf.predict(batch), args.seconds)
        rows[b] = b / sec
        print(f"{f'classifier, batch {b}':<36}{1000 * sec:>10.2f}{b / sec:>10.0f}  crops/s")
    if clf.has_usable:
        # The same file without its usable_score head (onnxruntime runs every node, whatever output is asked for).
        import onnx
        import onnxruntime as ort

        from maskwatch.training.usable import strip_usable_output
        from pipeline.runtime import OrtRunner

        bare = ort.InferenceSession(strip_usable_output(onnx.load(args.model)).SerializeToString(),
                                    providers=clf.runner.session.get_providers()
                                    if isinstance(clf.runner, OrtRunner) else ["CPUExecutionProvider"])
        sec = timed(lambda: bare.run(["mask_score"], {clf.input_name: batches[32]}), args.seconds) / 32
        usable = 1 / rows[32] - sec
        print(f"{'mask network alone, batch 32':<36}{1000 * sec * 32:>10.2f}{1 / sec:>10.0f}  crops/s")
        print(f"{'usable-face output, per crop':<36}{1000 * usable:>10.2f}{'':>10}"
              f"   = {usable * rows[32]:.2f} classifier crops (batch 32)")
    faces = Config().faces
    gate = load_face_gate(faces.gate_model_path, faces.gate_input_px) if faces.gate_model_path else None
    gate_sec = None
    if gate is not None:
        batch = np.ascontiguousarray(np.resize(pool, (32, s, s, 3)))
        gate_sec = timed(lambda: gate.face_scores(batch), args.seconds) / 32
        print(f"{f'face gate {gate.input_px} px, per crop':<36}{1000 * gate_sec:>10.2f}{1 / gate_sec:>10.0f}  crops/s"
              f"   = {gate_sec * rows[32]:.1f} classifier crops (batch 32)")
    for px in (640, 1280):
        img, _ = letterbox(frame, px)
        sec = timed(lambda img=img: pose.infer(img[None]), args.seconds)
        per_gate = f", {sec / gate_sec:.0f} gated crops" if gate_sec else ""
        print(f"{f'pose {img.shape[1]}x{img.shape[0]}, 1 frame':<36}{1000 * sec:>10.2f}{1 / sec:>10.1f}  frames/s"
              f"   = {rows[32] * sec:.0f} crops at batch 32{per_gate}")


if __name__ == "__main__":
    main()
