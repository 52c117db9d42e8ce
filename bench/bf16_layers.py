"""bf16 with some of the pose model's layers kept in fp32: what each choice costs and how far it moves the output.

    python bench/bf16_layers.py [--frames 8] [--json OUT.json]

The pose ONNX under OpenVINO's CPU plugin with ``INFERENCE_PRECISION_HINT`` bf16 and one inference thread, with the
layers of each group kept in fp32. A layer is kept by OpenVINO's precision-sensitive mark (the ``precise`` runtime
attribute, which the CPU plugin honours since openvinotoolkit/openvino#21440): set on each op of the group, written
to an IR with ``save_model`` and read back, which turns the mark into the attribute the plugin reads. Groups are
Ultralytics' module indices in the op names (``/model.<i>/``): 0-2 the stem, 0-10 the backbone with its attention
block (10), 23 the pose head.

Inputs: ``--frames`` letterboxed frames (640 px) of each of five shared videos (PETS09, queue_hk, Town Centre,
crowd_toward_camera, street_5), sampled at 2 frames/s. Against ONNX Runtime CPU fp32 on the same frames it prints,
per group: ops kept, process CPU ms per frame (batch 1), the largest and the median per-frame largest person-score
difference, how many anchors cross the 0.5 person-score mark, the largest keypoint-confidence difference, and the
largest box-coordinate difference (pixels) over anchors with a person score above 0.3 in fp32.

Needs a CPU with bf16 units (AMX or AVX512_BF16); elsewhere OpenVINO would emulate bf16 and the times mean nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from cluster.driver import pose_model_path
from pipeline.config import Config
from pipeline.letterbox import letterbox
from pipeline.onnx_models import PoseModel
from pipeline.source import read_frames

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
SOURCES = ("pets09_s2l1_cctv", "queue_hk_masked", "towncentre_cctv_10s", "crowd_toward_camera", "street_5_masked")
GROUPS = {"none (all bf16)": (), "stem (0-2)": range(3), "stem and attention (0-2, 10)": (0, 1, 2, 10),
          "backbone (0-10)": range(11), "head (23)": (23,), "everything": range(24)}


def in_group(name: str, modules) -> bool:
    """Whether an op named ``name`` belongs to one of Ultralytics' ``modules`` (indices)."""
    return any(f"model.{k}/" in name or f"model.{k}." in name for k in modules)


def compile_mixed(path: Path, modules, workdir: Path):
    """The model compiled for the CPU in bf16, one thread, with the ops of ``modules`` marked to stay fp32."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    kept = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Constant", "Parameter", "Result") and in_group(op.get_friendly_name(), modules):
            op.get_rt_info()["precise_0"] = ""
            kept += 1
    xml = workdir / f"mixed-{kept}.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    hints = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": 1}
    return core.compile_model(core.read_model(str(xml)), "CPU", hints), kept


def compare(out: list[np.ndarray], ref: list[np.ndarray]) -> dict[str, float]:
    """Differences of `(56, A)` outputs from the reference ones, frame by frame."""
    pairs = list(zip(out, ref, strict=True))
    person = np.array([np.abs(o[4] - r[4]).max() for o, r in pairs])
    boxes = [np.abs(o[:4, r[4] > 0.3] - r[:4, r[4] > 0.3]) for o, r in pairs]
    return {"person_max": float(person.max()), "person_median": float(np.median(person)),
            "anchors_crossing_0.5": int(sum(((o[4] > 0.5) != (r[4] > 0.5)).sum() for o, r in pairs)),
            "keypoint_conf_max": float(max(np.abs(o[7::3] - r[7::3]).max() for o, r in pairs)),
            "box_px_max": float(max((b.max() for b in boxes if b.size), default=0.0))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8, help="frames per video")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    path = pose_model_path(Config())
    images = [letterbox(f.image, 640)[0] for s in SOURCES
              for _, f in zip(range(args.frames), read_frames(str(VIDEOS / f"{s}.mp4"), s, 2.0), strict=False)]
    fp32 = PoseModel(path, "cpu", 1)
    ref = [fp32.infer(im[None])[0] for im in images]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for group, modules in GROUPS.items():
            compiled, kept = compile_mixed(path, modules, Path(tmp))
            request = compiled.create_infer_request()
            feeds = [{0: PoseModel._to_input(im[None])} for im in images]
            out = [np.array(request.infer(f)[0][0]) for f in feeds]
            c0 = time.process_time()
            for f in feeds:
                request.infer(f)
            cpu_ms = 1000 * (time.process_time() - c0) / len(feeds)
            rows[group] = {"ops_kept_fp32": kept, "cpu_ms_per_frame": round(cpu_ms, 1), **compare(out, ref)}
            r = rows[group]
            print(f"{group:<30} ops {kept:>5}  {cpu_ms:6.1f} CPU-ms  person max {r['person_max']:.3f} "
                  f"median {r['person_median']:.3f}  crossing 0.5 {r['anchors_crossing_0.5']:>3}  "
                  f"keypoint conf max {r['keypoint_conf_max']:.3f}  box {r['box_px_max']:.2f} px", flush=True)
    t0 = time.process_time()
    for im in images:
        fp32.infer(im[None])
    print(f"{'ONNX Runtime CPU fp32, 1 thread':<30} {1000 * (time.process_time() - t0) / len(images):6.1f} CPU-ms")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
