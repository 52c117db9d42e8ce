"""Frames/s and CPU per frame of the whole maskwatch pipeline (local Ray, all actors), side by side in one run with the
bare pose model and with a single-process loop of the same models.

    python bench/pipeline_fps.py [--source VIDEO] [--cameras 4] [--target-fps 30] [--pose-input-px N]
                                 [--set key=value ...] [--skip-single] [--json OUT.json]

Printed, each from this one run on the same letterboxed frames of the video:
- the yardstick: the bare pose model under ONNX Runtime's default CPU session (its own thread count, spinning),
  one frame per call, model call only (decode and letterbox excluded); measured before and after the pipeline and
  averaged, as is the next line;
- the bare pose model under the runtime the pipeline uses (``pose.device``, ``pose.precision``, its threads), one
  frame per call;
- a single-process loop: each camera in turn through :func:`pipeline.camera_loop.run_camera` with the same models in
  this process (threads = this machine's cores), face gate and classifier on, no Ray;
- the whole pipeline, ``--cameras`` copies of the video as cameras: processed frames over the cameras' own wall
  time (Ray and model start-up excluded; the time including them is printed too);
- CPU per processed frame (core-ms): by process (camera shards, the pose and classify actors since they were ready;
  the sink, the driver and Ray's own processes over the cameras' steady window), the model calls' share (process
  CPU during calls; the re-identification network's calls inside the shards' tracking are model calls too), what
  is spent outside model calls, and the camera stages (decode, letterbox, tracking, crop, voting, emit; thread time)
  with the shards' rest (Ray calls, serialisation, asyncio, metrics). And the pose actor's CPU per frame over its
  model call time per frame;
- all CPU per frame over the model calls' CPU per frame (1.0: a frame costs only its models), and the frames/s that
  cost allows with every CPU of the machine busy, against the yardstick: no arrangement of the same work on these
  CPUs runs faster.

Ratios measured in one run are what matter on a CPU-only machine; absolute figures only mean something on the machine
they were measured on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet import _cpu_s, _proc_tree

from cluster import driver
from pipeline.config import Config, apply_overrides, default_pose_input_px, parse_config
from pipeline.letterbox import letterbox
from pipeline.onnx_models import PoseModel
from pipeline.source import probe, read_frames

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "street_5_masked.mp4"


def bare_fps(model: PoseModel, frames: list) -> float:
    """Frames/s of ``model`` on ``frames`` (letterboxed), one frame per call, after one warm-up call."""
    model.infer(frames[0][None])
    t0 = time.perf_counter()
    for img in frames:
        model.infer(img[None])
    return len(frames) / (time.perf_counter() - t0)


def single_process_fps(cfg: Config, n: int) -> tuple[int, float]:
    """(frames processed, seconds): the ``n`` cameras of ``cfg`` one after another through the camera loop with the
    models in this process (all cores), records discarded."""
    from pipeline.camera_loop import in_process_host, run_camera
    from pipeline.facegate import CropScorer, load_face_gate
    from pipeline.onnx_models import MaskClassifier

    threads = os.cpu_count() or 1
    pose = PoseModel(driver.pose_model_path(cfg), cfg.pose.device, threads, cfg.pose.precision)
    clf = MaskClassifier(cfg.classify.model_path, cfg.classify.device, threads, cfg.classify.precision)
    gate_path = cfg.faces.gate_model_path
    scorer = CropScorer(clf, load_face_gate(gate_path, cfg.faces.gate_input_px) if gate_path else None)
    specs = driver.resolve_cameras(cfg)[:n]

    async def discard(_messages):  # as a sink that keeps up: the Ray pipeline's sink runs in its own actor
        return None

    frames, t0 = 0, time.perf_counter()
    for spec in specs:
        summary = asyncio.run(run_camera(spec, in_process_host(cfg, spec, pose, scorer, discard)))
        frames += summary.frames_processed
    return frames, time.perf_counter() - t0


ACTOR_ROLES = ("camera shards", "pose actor", "classify actor", "sink")


class ProcessCpu:
    """CPU seconds of the driver's process tree by role (bench/fleet.py's roles), sampled every 0.5 s so that
    processes that exit before the end are still counted (their last sample)."""

    def __init__(self) -> None:
        self._samples: dict[int, list[tuple[float, str, float]]] = defaultdict(list)  # pid -> (t, role, cpu_s)
        self._cmd: dict[int, str] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        t = time.monotonic()
        for pid, role in _proc_tree(os.getpid()).items():
            self._samples[pid].append((t, role, _cpu_s(pid)))
            if pid not in self._cmd:
                try:
                    self._cmd[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
                except OSError:
                    self._cmd[pid] = ""

    def _loop(self) -> None:
        while not self._done.wait(0.5):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self._sample()

    def by_process(self, since: float) -> list[tuple[int, str, str, float]]:
        """(pid, role, command line head, CPU seconds) of each process from ``since`` (time.monotonic) to its last
        sample: the steady window, start-up (imports, model loads) excluded. A process that was ever an actor of ours
        has that role (a worker's command line names the raylet before it becomes an actor, and an actor killed at
        the end is renamed an idle worker); others have their first role."""
        out = []
        for pid, samples in self._samples.items():
            before = [cpu for t, _, cpu in samples if t <= since]
            roles = [r for _, r, _ in samples]
            role = next((r for r in roles if r in ACTOR_ROLES), roles[0])
            out.append((pid, role, self._cmd.get(pid, ""), samples[-1][2] - (before[-1] if before else samples[0][2])))
        return sorted(out, key=lambda r: -r[3])

    def by_role(self, since: float) -> dict[str, float]:
        """CPU seconds by role over the window of :meth:`by_process`."""
        out: dict[str, float] = defaultdict(float)
        for _, role, _, cpu in self.by_process(since):
            out[role] += cpu
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=str(DEFAULT))
    ap.add_argument("--target-fps", type=float, default=30.0)
    ap.add_argument("--pose-input-px", type=int)
    ap.add_argument("--cameras", type=int, default=4, help="Run the video as this many cameras at once.")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="override a setting, key=value (dotted path, YAML value): a feature's before/after")
    ap.add_argument("--skip-single", action="store_true", help="do not run the single-process loop")
    ap.add_argument("--json", type=Path, help="also write every figure here")
    args = ap.parse_args()

    w, h, _ = probe(args.source, "bench")
    input_px = args.pose_input_px or default_pose_input_px((w, h))
    cams = [{"camera_id": f"bench-{i}", "source": args.source, "target_fps": args.target_fps,
             "pose_input_px": input_px} for i in range(args.cameras)]
    cfg = parse_config(apply_overrides({"cameras": cams}, args.sets), "bench/pipeline_fps.py --set")
    pose_path = driver.pose_model_path(cfg)

    frames = [letterbox(f.image, input_px)[0] for f in read_frames(args.source, "bench", args.target_fps)]
    yard_model = PoseModel(pose_path, "cpu", 0)
    used = PoseModel(pose_path, cfg.pose.device, cfg.pose.session_threads, cfg.pose.precision)
    yard_before, bare_before = bare_fps(yard_model, frames), bare_fps(used, frames)
    single = None if args.skip_single else single_process_fps(cfg, args.cameras)

    driver._token_auth_mode(cfg)  # before Ray is imported: no token warning, as in `maskwatch run`
    import ray

    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, logging_level="WARNING",
             num_cpus=max(os.cpu_count() or 1, 4))
    cpu = ProcessCpu()
    cpu.start()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            result = driver.run(cfg, out_path=str(Path(tmp) / "out.jsonl"))
            cameras_done = time.monotonic()
        finally:
            cpu.stop()
            ray.shutdown()
        total_s = time.perf_counter() - t0
    # Measured again after the pipeline: this machine's speed drifts by tens of percent within minutes (shared host),
    # so each bare figure is the mean of its two measurements, one before and one after.
    yard_after, bare_after = bare_fps(yard_model, frames), bare_fps(used, frames)
    yardstick, bare_used = (yard_before + yard_after) / 2, (bare_before + bare_after) / 2
    processed = sum(c["frames_processed"] for c in result.cameras)
    cam_wall = max(c["wall_s"] for c in result.cameras)
    pipeline = processed / cam_wall

    pose, cls = result.pools["pose"], result.pools["classify"]
    # The cameras' steady window (their first frame to the end); processes other than the shards and model pools
    # from /proc over it; the shards and pools as they count themselves (since they were ready).
    by_role = cpu.by_role(cameras_done - cam_wall)
    by_role["camera shards"] = sum(c["shard_cpu_s"] for c in result.cameras)
    by_role["pose actor"] = sum(p["process_cpu_s"] for p in pose)
    by_role["classify actor"] = sum(p["process_cpu_s"] for p in cls)
    stages: dict[str, float] = defaultdict(float)
    for c in result.cameras:
        for k, v in c["stage_cpu_s"].items():
            stages[k] += v
    model_cpu = {"pose": sum(p["model_cpu_s"] for p in pose), "classify": sum(p["model_cpu_s"] for p in cls),
                 "reid network": stages.pop("reid_network", 0.0)}  # the shards' own model: counted in their CPU
    pose_wall = sum(p["model_wall_s"] for p in pose)
    total_cpu = sum(by_role.values())
    outside = total_cpu - sum(model_cpu.values())
    stages["shards' rest (Ray calls, serialisation, asyncio)"] = (by_role["camera shards"] - sum(stages.values())
                                                                  - model_cpu["reid network"])

    def ms(x: float) -> float:
        return round(1000.0 * x / max(processed, 1), 2)

    print(f"video: {args.source} ({w}x{h}), sampled at {args.target_fps:g} fps, pose input {input_px} px, "
          f"{args.cameras} camera(s), {os.cpu_count()} CPU(s)")
    print(f"pipeline pose runtime: {result.pose_provider} ({cfg.pose.session_threads} thread(s)); "
          f"auto measured ms per call: {pose[0].get('runtime_ms_per_call')}; classify: {result.classify_provider}")
    print(f"{'what':<62}{'frames':>8}{'frames/s':>10}")
    print(f"{'yardstick: bare pose, ONNX Runtime default CPU session, 1/call':<62}{len(frames):>8}{yardstick:>10.1f}"
          f"  (before {yard_before:.1f}, after {yard_after:.1f})")
    print(f"{'bare pose, the pipeline runtime, 1/call':<62}{len(frames):>8}{bare_used:>10.1f}"
          f"  (before {bare_before:.1f}, after {bare_after:.1f})")
    if single:
        print(f"{'single-process loop, same models, no Ray':<62}{single[0]:>8}{single[0] / single[1]:>10.1f}")
    print(f"{'whole pipeline (Ray, steady)':<62}{processed:>8}{pipeline:>10.1f}")
    print(f"{'whole pipeline incl. Ray and model start':<62}{processed:>8}{processed / total_s:>10.1f}")
    print(f"pipeline / yardstick: {pipeline / yardstick:.2f}")
    print(f"pipeline / bare pose under its runtime: {pipeline / bare_used:.2f}")
    if single:
        print(f"pipeline / single-process loop: {pipeline / (single[0] / single[1]):.2f}")
    print("CPU per processed frame, core-ms:")
    print("  by process: " + ", ".join(f"{k} {ms(v)}" for k, v in sorted(by_role.items()) if ms(v) >= 0.01))
    print(f"  model calls: pose {ms(model_cpu['pose'])} (wall {ms(pose_wall)}), classify + face gate "
          f"{ms(model_cpu['classify'])}, re-identification network {ms(model_cpu['reid network'])}; everything "
          f"else: {ms(outside)} (of {ms(total_cpu)})")
    print("  camera stages: " + ", ".join(f"{k} {ms(v)}" for k, v in stages.items()))
    print(f"pose actor CPU per frame / its model call time: {by_role['pose actor'] / max(pose_wall, 1e-9):.2f}")
    model_total = max(sum(model_cpu.values()), 1e-9)
    ceiling = (os.cpu_count() or 1) * processed / max(total_cpu, 1e-9)  # every CPU busy at this cost a frame
    print(f"all CPU / model calls' CPU, per frame: {total_cpu / model_total:.2f}; at this cost a frame, "
          f"{os.cpu_count()} CPU(s) all busy would run {ceiling:.1f} frames/s ({ceiling / yardstick:.2f} x the "
          f"yardstick)")
    print(f"people decided: {sum(c['people'] for c in result.cameras)}; faces classified: "
          f"{sum(c['faces_classified'] for c in result.cameras)}")
    if args.json:
        args.json.write_text(json.dumps({
            "source": args.source, "cameras": args.cameras, "target_fps": args.target_fps, "input_px": input_px,
            "cpus": os.cpu_count(), "pose_provider": result.pose_provider, "pools": result.pools,
            "fps": {"yardstick": yardstick, "bare_pipeline_runtime": bare_used, "pipeline": pipeline,
                    "single_process": single[0] / single[1] if single else None},
            "processes": [{"pid": p, "role": r, "cmd": c, "cpu_ms_per_frame": ms(v)}
                          for p, r, c, v in cpu.by_process(cameras_done - cam_wall)],
            "cpu_ms_per_frame": {"by_process": {k: ms(v) for k, v in by_role.items()},
                                 "model": {k: ms(v) for k, v in model_cpu.items()}, "outside_models": ms(outside),
                                 "stages": {k: ms(v) for k, v in stages.items()}},
            "cpu_over_model_cpu": total_cpu / model_total, "ceiling_fps_all_cpus_busy": ceiling,
        }, indent=1))


if __name__ == "__main__":
    main()
