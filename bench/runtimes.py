"""Pose model ms per frame on each runtime present here, at 640 and 1280 px input, side by side in one run.

    python bench/runtimes.py [--source VIDEO] [--frames 24] [--threads 1 2] [--batch 1 8] [--json OUT.json]

For each runtime of :mod:`pipeline.runtime` present (ONNX Runtime CPU with its default session and with N threads
without spinning; OpenVINO fp32 and, on CPUs with bf16, bf16; CUDA and TensorRT where a GPU is), each thread count
and batch size: wall ms per frame and process CPU ms per frame over ``--frames`` letterboxed frames of the video
(after one warm-up call), and the largest person-score difference from ONNX Runtime CPU fp32 on the same frames.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from cluster.driver import pose_model_path
from pipeline import runtime
from pipeline.config import Config
from pipeline.letterbox import letterbox
from pipeline.onnx_models import PoseModel
from pipeline.source import read_frames
from schemas.errors import ModelError

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "street_5_masked.mp4"


def measure(model: PoseModel, images: np.ndarray, batch: int) -> tuple[float, float, np.ndarray]:
    """(wall ms per frame, process CPU ms per frame, person scores `(N, A)`) over ``images`` in batches."""
    model.infer(images[:batch])
    out = []
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(images), batch):
        out.append(model.infer(images[i:i + batch])[:, 4])
    n = len(images)
    return 1000 * (time.perf_counter() - t0) / n, 1000 * (time.process_time() - c0) / n, np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=str(DEFAULT))
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--input-px", type=int, nargs="+", default=[640, 1280])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    path = pose_model_path(Config())
    raw = [f.image for _, f in zip(range(args.frames), read_frames(args.source, "bench", 5.0), strict=False)]
    setups = [("cpu", 0, "fp32")]
    for name in runtime.candidates("auto"):
        for th in args.threads:
            setups.append((name, th, "fp32"))
            if name == "openvino":
                setups.append((name, th, "bf16"))
            if name == "tensorrt":
                setups.append((name, th, "fp16"))
    rows = []
    print(f"{os.cpu_count()} CPU(s); {runtime.node_key()}")
    print(f"{'runtime':<10}{'threads':>8}{'prec':>6}{'input':>7}{'batch':>6}{'ms/frame':>10}{'cpu ms/frame':>14}"
          f"{'max score diff':>16}")
    for px in args.input_px:
        images = np.stack([letterbox(im, px)[0] for im in raw])
        ref = None
        for name, th, prec in setups:
            try:
                model = PoseModel(path, name, th, prec)
            except ModelError as exc:
                print(f"{name:<10}{th:>8}{prec:>6}{px:>7}  not available: {exc}")
                continue
            for b in args.batch:
                wall, cpu, scores = measure(model, images, b)
                ref = scores if ref is None else ref
                diff = float(np.max(np.abs(scores - ref)))
                print(f"{name:<10}{th or 'default':>8}{prec:>6}{px:>7}{b:>6}{wall:>10.1f}{cpu:>14.1f}{diff:>16.3f}",
                      flush=True)
                rows.append({"runtime": name, "threads": th, "precision": prec, "input_px": px, "batch": b,
                             "provider": model.provider, "ms_per_frame": round(wall, 2),
                             "cpu_ms_per_frame": round(cpu, 2), "max_person_score_diff": round(diff, 4)})
            del model
    if args.json:
        args.json.write_text(json.dumps({"node": runtime.node_key(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
