"""Supervision on real Ray actors: killing the pose or the classify actor in the middle of a run ends no camera."""

from __future__ import annotations

import json
import time

import pytest

from cluster.driver import resolve_cameras
from pipeline.config import parse_config
from pipeline.onnx_models import MaskClassifier
from pipeline.source import read_frames
from schemas.messages import CameraStats
from tests.conftest import pose_model, shared_video

pytestmark = [pytest.mark.ray, pytest.mark.slow]
VIDEOS = {"street": "street_5_masked.mp4", "single": "single_masked.mp4"}
FPS = 12.0  # long enough runs (about 140 and 120 frames) for both kills to land mid-run


def test_killed_model_actors_end_no_camera(ray_local, tmp_path):
    import ray

    from cluster.topology import NodePipeline, make_sink

    cfg = parse_config({
        "cameras": [{"camera_id": cid, "source": str(shared_video(v)), "target_fps": FPS} for cid, v in VIDEOS.items()],
        "capture": {"cameras_per_actor": 1},
        "fleet": {"cameras_per_node": 2},  # one pipeline of two shards: a bundle of 2.5 CPUs
        "stats": {"window_s": 0.5},
    })
    clf = MaskClassifier(cfg.classify.model_path, device="cpu")
    out = tmp_path / "records.jsonl"
    sink = make_sink(cfg, str(out))
    topo = NodePipeline.build(cfg, str(pose_model()))
    for spec in resolve_cameras(cfg):
        topo.add_shard(cfg, [spec], clf.crop_margin, clf.input_px)

    def frames_so_far() -> dict[str, int]:
        seen = {cid: 0 for cid in VIDEOS}
        if out.is_file():
            for line in out.read_text().splitlines():
                rec = json.loads(line)
                if rec["topic"] == cfg.kafka.stats_topic:
                    seen[rec["key"]] = max(seen[rec["key"]], rec["value"]["frames_processed"])
        return seen

    def wait_for_frames(n: int) -> None:
        deadline = time.monotonic() + 120
        while min(frames_so_far().values()) < n:
            assert time.monotonic() < deadline, frames_so_far()
            time.sleep(0.2)

    try:
        runs = [sh.handle.run.remote(topo.pose, topo.classify, sink) for sh in topo.shards]
        wait_for_frames(10)  # both cameras are under way, calls in flight
        ray.kill(topo.pose[0], no_restart=False)  # Ray restarts it (max_restarts); calls in flight are retried
        wait_for_frames(min(frames_so_far().values()) + 10)  # both are running again
        ray.kill(topo.classify[0], no_restart=False)
        summaries = [s for shard in ray.get(runs, timeout=600) for s in shard]
        ray.get(sink.close.remote())
    finally:
        topo.remove()
        ray.kill(sink)
    assert [s["error"] for s in summaries] == [None, None]
    stats: dict[str, list[CameraStats]] = {cid: [] for cid in VIDEOS}
    for line in out.read_text().splitlines():
        rec = json.loads(line)
        if rec["topic"] == cfg.kafka.stats_topic:
            stats[rec["key"]].append(CameraStats.decode(rec["value"]))
    for cid, video in VIDEOS.items():
        sampled = sum(1 for _ in read_frames(str(shared_video(video)), cid, target_fps=FPS))
        final = stats[cid][-1]
        assert final.final
        # Every sampled frame was processed exactly once: a frame whose pose call failed was read again.
        assert final.frames_processed == sampled, (cid, final.frames_processed, sampled)
        totals = [s.total_people for s in stats[cid]]
        assert totals == sorted(totals)
    # The calls in flight when an actor died were retried on the restarted actor (max_task_retries): no camera had
    # to restart its loop.
    restarts = {c: [r.camera_restarts for r in s] for c, s in stats.items()}
    assert sum(s[-1].camera_restarts for s in stats.values()) == 0, restarts
