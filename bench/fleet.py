"""Fleet and soak figures: N live RTSP cameras (GStreamer's server on loopback) through the whole Ray pipeline.

    python bench/fleet.py --cameras 4 8 16 32 --minutes 4 --warmup-minutes 1 [--soak-minutes 20 --soak-cameras 4]
        [--decoder-threads 1 0]

For each N, one run of ``cluster.driver.run`` (local Ray, the defaults of ``maskwatch run``, output to a JSON Lines
file), stopped by SIGINT as a user stops it. After the warm-up it reports:
- frames/s processed per camera and the drop ratio (dropped / (processed + dropped)), from the cameras' own
  statistics records;
- p50 / p99 latency from a frame decoded to its poses back in the camera loop, from the histogram
  ``maskwatch_pose_latency_seconds`` scraped from Ray's metrics endpoint (quantiles interpolated in its buckets, as
  Prometheus' ``histogram_quantile`` does);
- CPU seconds per processed frame by process (/proc): camera shards, the pose and classify actors, the sink, each
  of Ray's own processes (raylet, GCS, agents), the driver; and within the shards, by stage, from the counter
  ``maskwatch_stage_cpu_seconds`` (thread CPU time of decode, letterbox, tracking, reid_network, crop, voting,
  emit; a live camera decodes every frame of its stream, so decode counts the frames the sampler skipped); the
  shards' rest is Ray calls, asyncio and metrics;
- resident memory (RSS) of every process each minute, summed by role, and with ``--soak-minutes`` the slope of the
  total after the warm-up (MB per minute, least squares).

Absolute figures belong to the machine they were measured on; compare Ns within one run of this script.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")  # as `maskwatch run` on a local Ray: no token warning
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cluster import driver  # noqa: E402
from devtools.procs import descendants  # noqa: E402
from devtools.rtsp_server import RtspServer  # noqa: E402
from pipeline.config import apply_overrides, parse_config  # noqa: E402
from schemas.messages import CameraStats  # noqa: E402
from services.broker import free_port  # noqa: E402

DEFAULT_VIDEO = REPO.parent / "shared" / "data" / "videos" / "street_5_masked.mp4"
TICK_S = os.sysconf("SC_CLK_TCK")


def _proc_tree(root: int) -> dict[int, str]:
    """pid -> role of ``root`` and every descendant (roles from Ray's process titles)."""
    out = {}
    for pid in [root, *(p for p, _ in descendants(root))]:
        try:
            cmd = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out[pid] = "driver" if pid == root else _role(cmd)
    return out


def _role(cmd: str) -> str:
    for actor, role in (("CameraShardActor", "camera shards"), ("PoseActor", "pose actor"),
                        ("ClassifyActor", "classify actor"), ("SinkActor", "sink")):
        if actor in cmd:
            return role
    if "rtsp_server" in cmd:
        return "rtsp servers (test cameras)"
    for needle, name in (("raylet", "raylet"), ("gcs_server", "gcs"), ("dashboard_agent", "dashboard agent"),
                         ("runtime_env/agent", "runtime-env agent"), ("log_monitor", "log monitor"),
                         ("monitor.py", "autoscaler monitor"), ("dashboard.py", "dashboard")):
        if needle in cmd:
            return f"ray system: {name}"
    return "ray system: other"


def _cpu_s(pid: int) -> float:
    try:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK_S  # utime + stime


def _cpu_by_role(root: int) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for pid, role in _proc_tree(root).items():
        out[role] += _cpu_s(pid)
    return out


def _rss_mb_by_role(root: int) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for pid, role in _proc_tree(root).items():
        try:
            status = (Path("/proc") / str(pid) / "status").read_text()
        except OSError:
            continue
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        if m:
            out[role] += int(m.group(1)) / 1024
    return out


def _scrape(port: int) -> str:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return ""


def _latency_buckets(text: str) -> list[tuple[float, float]]:
    """Cumulative `(le, count)` of maskwatch_pose_latency_seconds over all cameras, from a scrape of Ray's metrics."""
    buckets: dict[float, float] = defaultdict(float)
    for line in text.splitlines():
        m = re.match(r'^\w*maskwatch_pose_latency_seconds_bucket\{.*le="([^"]+)".*\}\s+([0-9.e+]+)$', line)
        if m:
            buckets[float(m.group(1))] += float(m.group(2))
    return sorted(buckets.items())


def _stage_cpu(text: str) -> dict[str, float]:
    """CPU seconds per camera stage (maskwatch_stage_cpu_seconds), summed over cameras, from a scrape."""
    out: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        m = re.match(r'^\w*maskwatch_stage_cpu_seconds(?:_total)?\{.*stage="([^"]+)".*\}\s+([0-9.e+]+)$', line)
        if m:
            out[m.group(1)] += float(m.group(2))
    return out


def _quantile(q: float, start: list[tuple[float, float]], end: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of the observations between two scrapes (linear within a bucket)."""
    before = dict(start)
    cum = [(le, c - before.get(le, 0.0)) for le, c in end]
    if not cum or cum[-1][1] <= 0:
        return None
    rank, lo, prev = q * cum[-1][1], 0.0, 0.0
    for le, c in cum:
        if c >= rank:
            if le == float("inf"):
                return lo
            return lo + (le - lo) * (rank - prev) / max(c - prev, 1e-9)
        lo, prev = le, c
    return None


def _stats(out_path: Path) -> dict[str, list[CameraStats]]:
    by_cam: dict[str, list[CameraStats]] = defaultdict(list)
    if out_path.exists():
        for line in out_path.read_text().splitlines():
            rec = json.loads(line)
            if rec["topic"].endswith("camera-stats"):
                s = CameraStats.decode(rec["value"])
                by_cam[s.camera_id].append(s)
    return by_cam


def _counts_at(stats: dict[str, list[CameraStats]], t_ns: int) -> tuple[int, int]:
    """Frames processed and dropped, summed over cameras, by the last record of each that closed before ``t_ns``."""
    processed = dropped = 0
    for recs in stats.values():
        before = [s for s in recs if s.window_end_ns <= t_ns]
        if before:
            processed += before[-1].frames_processed
            dropped += before[-1].frames_dropped
    return processed, dropped


def run_fleet(n: int, minutes: float, warmup_min: float, video: Path, target_fps: float, work: Path,
              decoder_threads: int = 1, sets: list[str] | None = None) -> dict:
    import ray

    servers = [RtspServer(video, free_port(), work / f"rtsp-{n}-{i}.log") for i in range(n)]
    for s in servers:
        s.start()
    metrics_port = free_port()
    cfg = parse_config(apply_overrides({
        "cameras": [{"camera_id": f"fleet-{i}", "source": s.url, "target_fps": target_fps}
                    for i, s in enumerate(servers)],
        "stats": {"window_s": 10},
        "capture": {"decoder_threads": decoder_threads},
    }, sets or []), "bench/fleet.py --set")
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, logging_level="WARNING",
             _metrics_export_port=metrics_port, num_cpus=max(os.cpu_count() or 1, 4))
    out_path = work / f"fleet-{n}.jsonl"
    samples: list[dict] = []
    marks: dict[str, object] = {}
    done = threading.Event()

    def sampler() -> None:
        t0 = time.monotonic()
        minute = 0
        while not done.is_set():
            elapsed = time.monotonic() - t0
            if elapsed >= minute * 60:
                samples.append({"minute": minute, "rss_mb": _rss_mb_by_role(os.getpid())})
                minute += 1
            if "start_ns" not in marks and elapsed >= warmup_min * 60:
                text = _scrape(metrics_port)
                marks.update(start_ns=time.time_ns(), start_cpu=_cpu_by_role(os.getpid()),
                             start_lat=_latency_buckets(text), start_stage=_stage_cpu(text))
            if elapsed >= (warmup_min + minutes) * 60:
                text = _scrape(metrics_port)
                marks.update(end_ns=time.time_ns(), end_cpu=_cpu_by_role(os.getpid()),
                             end_lat=_latency_buckets(text), end_stage=_stage_cpu(text))
                os.kill(os.getpid(), signal.SIGINT)  # stop as a user does: graceful shutdown
                return
            time.sleep(1.0)

    threading.Thread(target=sampler, daemon=True).start()
    try:
        driver.run(cfg, out_path=str(out_path))
    finally:
        done.set()
        ray.shutdown()
        for s in servers:
            s.stop()
    stats = _stats(out_path)
    p0, d0 = _counts_at(stats, marks["start_ns"])  # type: ignore[arg-type]
    p1, d1 = _counts_at(stats, marks["end_ns"])  # type: ignore[arg-type]
    span_s = (marks["end_ns"] - marks["start_ns"]) / 1e9  # type: ignore[operator]
    frames = max(p1 - p0, 1)
    cpu = {k: (marks["end_cpu"][k] - marks["start_cpu"].get(k, 0.0)) / frames  # type: ignore[index,union-attr]
           for k in marks["end_cpu"]}  # type: ignore[union-attr]
    lat = (marks["start_lat"], marks["end_lat"])
    stage = {k: (v - marks["start_stage"].get(k, 0.0)) / frames  # type: ignore[union-attr]
             for k, v in marks["end_stage"].items()}  # type: ignore[union-attr]
    # The shards' CPU outside the counted stages: Ray calls (serialising frames and results), asyncio, metrics.
    stage["other (Ray calls, asyncio, metrics)"] = cpu.get("camera shards", 0.0) - sum(stage.values())
    return {
        "cameras": n,
        "decoder_threads": decoder_threads,
        "settings": sets or [],
        "target_fps": target_fps,
        "measured_s": round(span_s, 1),
        "fps_per_camera": round((p1 - p0) / span_s / n, 3),
        "drop_ratio": round((d1 - d0) / max(p1 - p0 + d1 - d0, 1), 3),
        "pose_latency_p50_s": _round(_quantile(0.5, *lat)),  # type: ignore[arg-type]
        "pose_latency_p99_s": _round(_quantile(0.99, *lat)),  # type: ignore[arg-type]
        "cpu_s_per_frame": {k: round(v, 4) for k, v in sorted(cpu.items())},
        "camera_shard_cpu_s_per_frame_by_stage": {k: round(v, 4) for k, v in sorted(stage.items())},
        "rss_mb_each_minute": samples,
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def rss_slope_mb_per_min(samples: list[dict], warmup_min: float) -> float | None:
    pts = [(s["minute"], sum(s["rss_mb"].values())) for s in samples if s["minute"] >= warmup_min]
    if len(pts) < 3:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    return round(sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, nargs="*", default=[4, 8, 16, 32])
    ap.add_argument("--minutes", type=float, default=4.0, help="measured minutes per N, after the warm-up")
    ap.add_argument("--warmup-minutes", type=float, default=1.0)
    ap.add_argument("--soak-cameras", type=int, default=4)
    ap.add_argument("--soak-minutes", type=float, default=0.0, help="a soak run of this many minutes first (0: none)")
    ap.add_argument("--target-fps", type=float, default=5.0)
    ap.add_argument("--decoder-threads", type=int, nargs="+", default=[1],
                    help="capture.decoder_threads; several values: each N is run with each, side by side")
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--out", type=Path, help="write every figure as JSON here")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="override a setting, key=value (dotted path, YAML value), e.g. pose.threads=1")
    args = ap.parse_args()
    results: dict[str, object] = {"cpus": os.cpu_count(), "video": args.video.name, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        if args.soak_minutes:
            soak = run_fleet(args.soak_cameras, args.soak_minutes, 3.0, args.video, args.target_fps, Path(tmp),
                             args.decoder_threads[0], args.sets)
            soak["rss_slope_mb_per_min_after_3_min"] = rss_slope_mb_per_min(soak["rss_mb_each_minute"], 3.0)
            results["soak"] = soak
            print(json.dumps({k: v for k, v in soak.items() if k != "rss_mb_each_minute"}), flush=True)
            if args.out:  # after each run: a later failure keeps what was measured
                args.out.write_text(json.dumps(results, indent=1))
        for n in args.cameras:
            for threads in args.decoder_threads:
                r = run_fleet(n, args.minutes, args.warmup_minutes, args.video, args.target_fps, Path(tmp), threads,
                              args.sets)
                results["runs"].append(r)  # type: ignore[union-attr]
                print(json.dumps({k: v for k, v in r.items() if k != "rss_mb_each_minute"}), flush=True)
                if args.out:
                    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
