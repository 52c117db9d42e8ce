"""Frames/s of the whole maskwatch pipeline (local Ray, all actors) next to the bare pose model, same video, one run.

    python bench/pipeline_fps.py [--source VIDEO] [--target-fps 10] [--pose-input-px N] [--set key=value ...]

The bare figure is the pose model alone on the same letterboxed frames (decode + letterbox excluded, model call
only, one frame per call). The pipeline figure counts processed frames over the cameras' own wall time (Ray start-up
excluded; it is printed separately). The ratio is what matters on a CPU-only machine; absolute figures only mean
something on the machine they were measured on.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

from cluster import driver
from cluster.config import apply_overrides, default_pose_input_px, parse_config
from pipeline.letterbox import letterbox
from pipeline.onnx_models import PoseModel
from pipeline.source import probe, read_frames

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "street_5_masked.mp4"

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=str(DEFAULT))
    ap.add_argument("--target-fps", type=float, default=10.0)
    ap.add_argument("--pose-input-px", type=int)
    ap.add_argument("--cameras", type=int, default=1, help="Run the video as this many cameras at once.")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="override a setting, key=value (dotted path, YAML value): a feature's before/after")
    args = ap.parse_args()

    w, h, _ = probe(args.source, "bench")
    input_px = args.pose_input_px or default_pose_input_px((w, h))
    cams = [{"camera_id": f"bench-{i}", "source": args.source, "target_fps": args.target_fps,
             "pose_input_px": input_px} for i in range(args.cameras)]
    cfg = parse_config(apply_overrides({"cameras": cams}, args.sets), "bench/pipeline_fps.py --set")

    model = PoseModel(driver.pose_model_path(cfg), device=cfg.pose.device)
    frames = [letterbox(f.image, input_px)[0] for f in read_frames(args.source, "bench", args.target_fps)]
    model.infer(frames[0][None])  # warm-up
    t0 = time.perf_counter()
    for img in frames:
        model.infer(img[None])
    bare_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = driver.run(cfg, out_path=str(Path(tmp) / "out.jsonl"))
        total_s = time.perf_counter() - t0
    processed = sum(c["frames_processed"] for c in result.cameras)
    cam_wall = max(c["wall_s"] for c in result.cameras)

    print(f"video: {args.source} ({w}x{h}), sampled at {args.target_fps:g} fps, pose input {input_px} px, "
          f"{args.cameras} camera(s), {os.cpu_count()} CPU(s), pose on {model.provider}")
    print(f"{'what':<34}{'frames':>8}{'seconds':>10}{'frames/s':>10}")
    print(f"{'bare pose model (1 frame/call)':<34}{len(frames):>8}{bare_s:>10.2f}{len(frames) / bare_s:>10.1f}")
    print(f"{'whole pipeline (Ray, steady)':<34}{processed:>8}{cam_wall:>10.2f}{processed / cam_wall:>10.1f}")
    print(f"{'whole pipeline incl. Ray start':<34}{processed:>8}{total_s:>10.2f}{processed / total_s:>10.1f}")
    print(f"pipeline / bare pose model: {(processed / cam_wall) / (len(frames) / bare_s):.2f}")
    people = sum(c["people"] for c in result.cameras)
    print(f"people decided: {people}; faces classified: {sum(c['faces_classified'] for c in result.cameras)}")

if __name__ == "__main__":
    main()
