"""int8 pose with the detection head kept in float: speed and score differences against fp32, side by side.

    python bench/int8.py [--calibration-images 32] [--json OUT.json]

Static QDQ quantization with ``onnxruntime.quantization`` (per-channel int8 weights, uint8 activations, MinMax
calibration on crowd photos of ``../shared/data/detection/wider_crowds``, letterboxed to 640x384: no frame of the
evaluation videos) in three variants, each keeping more of YOLO's head (``/model.23/``) in float:

- ``decode``: only the head's decoding (DFL, anchors, sigmoid outputs) in float;
- ``head-tail``: that and the head's last two conv layers of each branch;
- ``head``: the whole head in float.

Each variant is timed on ONNX Runtime's CPU provider with 1 and 2 threads (spinning off) next to the fp32 model, and
compared with fp32 on 16 frames of four shared videos: the largest and median person-score difference over anchors
where either scores above 0.1, and how many anchors cross the 0.5 mark either way.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from cluster.driver import pose_model_path
from pipeline.config import Config
from pipeline.letterbox import letterbox
from pipeline.runtime import open_runner
from pipeline.source import read_frames

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VIDEOS = ("pets09_s2l1_cctv", "queue_hk_masked", "towncentre_cctv_10s", "crowd_toward_camera")
HEAD = "/model.23/"


def to_input(image_bgr: np.ndarray) -> np.ndarray:
    """`(1, 3, H, W)` float32 RGB 0-1 from an `(H, W, 3)` uint8 BGR letterboxed image."""
    return np.ascontiguousarray(image_bgr[None, ..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def calibration_inputs(n: int) -> list[np.ndarray]:
    """``n`` landscape crowd photos letterboxed to 640 px and padded to 640x384."""
    out = []
    for path in sorted((SHARED / "detection" / "wider_crowds" / "images").iterdir())[::3]:
        lb = letterbox(cv2.imread(str(path)), 640)[0]
        if lb.shape[0] <= 384:
            padded = np.full((384, 640, 3), 114, np.uint8)
            padded[:lb.shape[0], :lb.shape[1]] = lb
            out.append(to_input(padded))
        if len(out) == n:
            break
    return out


class Reader(CalibrationDataReader):
    def __init__(self, inputs: list[np.ndarray]) -> None:
        self._it = iter(inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {"images": x}


def excluded(names: list[str], variant: str) -> list[str]:
    head = [n for n in names if n.startswith(HEAD)]
    if variant == "head":
        return head
    if variant == "head-tail":  # the first conv of each branch (cvK.I.0) is quantized
        return [n for n in head if not any(f"cv{k}.{i}.0/" in n for k in (2, 3, 4) for i in range(3))]
    return [n for n in head if "/cv" not in n]  # decode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration-images", type=int, default=32)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    fp32 = pose_model_path(Config())
    frames = [to_input(letterbox(f.image, 640)[0]) for v in VIDEOS
              for _, f in zip(range(4), read_frames(str(SHARED / "videos" / f"{v}.mp4"), v, 1.0), strict=False)]
    calib = calibration_inputs(args.calibration_images)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        names = [n.name for n in onnx.load(str(pre)).graph.node]
        models = {"fp32": fp32}
        for variant in ("decode", "head-tail", "head"):
            models[variant] = Path(tmp) / f"{variant}.onnx"
            quantize_static(str(pre), str(models[variant]), Reader(calib), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=excluded(names, variant), calibrate_method=CalibrationMethod.MinMax)
        ref = None
        print(f"{'model':<10}{'1 thread ms':>12}{'2 threads ms':>13}{'max dscore':>11}{'median':>8}{'crossed 0.5':>12}")
        for name, path in models.items():
            timing, outs = {}, None
            for threads in (1, 2):
                runner = open_runner(path, f"pose {name}", "cpu", threads, "fp32")
                runner.run(["output0"], {"images": frames[0]})
                t0 = time.perf_counter()
                outs = [runner.run(["output0"], {"images": x})[0][0] for x in frames]
                timing[threads] = 1000 * (time.perf_counter() - t0) / len(frames)
            ref = outs if ref is None else ref
            diffs, crossed = [], 0
            for o, r in zip(outs, ref, strict=True):
                sel = (r[4] > 0.1) | (o[4] > 0.1)
                diffs.append(float(np.abs(o[4][sel] - r[4][sel]).max()) if sel.any() else 0.0)
                crossed += int(((r[4] > 0.5) != (o[4] > 0.5)).sum())
            row = {"model": name, "ms_1_thread": round(timing[1], 1), "ms_2_threads": round(timing[2], 1),
                   "max_person_score_diff": round(max(diffs), 3), "median_person_score_diff": round(
                       float(np.median(diffs)), 3), "anchors_crossing_0.5": crossed}
            rows.append(row)
            print(f"{name:<10}{row['ms_1_thread']:>12}{row['ms_2_threads']:>13}{row['max_person_score_diff']:>11}"
                  f"{row['median_person_score_diff']:>8}{crossed:>12}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
