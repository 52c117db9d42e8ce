"""Nodes added on demand: cameras past one node's capacity become Ray resource demand, the autoscaler adds a node
and the new cameras run there; removed, they let that node go after the idle timeout.

The cluster is Ray's own autoscaler with fake nodes (local raylets) on loopback (:mod:`devtools.autoscaling`); the
fleet is ``maskwatch run --config F --address`` on live RTSP cameras, changed with ``maskwatch cameras add/remove``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.autoscaling import FakeAutoscalingCluster
from devtools.rtsp_server import RtspServer
from devtools.waiting import wait_until
from pipeline.config import KafkaConfig, parse_config
from pipeline.sinks import ensure_topics
from schemas.messages import CameraStats
from services.broker import free_port
from tests.conftest import pose_model, shared_video
from tests.test_fleet_live import live_fleet, maskwatch_cli
from tests.test_rtsp import pytestmark as rtsp_marks

pytestmark = [*rtsp_marks, pytest.mark.ray, pytest.mark.kafka, pytest.mark.soak]
VIDEO = "single_masked.mp4"
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # loopback, no token for a test
IDLE_TIMEOUT_S = 5.0


def test_cameras_past_a_nodes_capacity_bring_up_a_node_and_let_it_go_when_removed(tmp_path: Path, broker: str):
    from cluster.topology import pipeline_bundle
    from pipeline.stats_reader import read_topic

    pose_model()
    servers = [RtspServer(shared_video(VIDEO), free_port(), tmp_path / f"rtsp{i}.log") for i in range(2)]
    settings = {"capture": {"cameras_per_actor": 1}, "fleet": {"cameras_per_node": 1, "watch_poll_s": 1},
                "stats": {"window_s": 1}, "ray": {"namespace": "autoscale-test"}}
    # A node holds one pipeline: its bundle (pose, classify and one shard's CPUs) and no more.
    worker = pipeline_bundle(parse_config(settings))
    kafka = KafkaConfig(bootstrap_servers=broker)
    ensure_topics(kafka)

    def stats(cid: str) -> list[CameraStats]:
        return [CameraStats.decode(v) for k, v in read_topic(kafka, kafka.stats_topic) if k == cid]

    with FakeAutoscalingCluster(worker, min_workers=1, max_workers=2, idle_timeout_s=IDLE_TIMEOUT_S, env=ENV) as cl:
        config = tmp_path / "maskwatch.yaml"
        config.write_text(json.dumps(settings | {
            "cameras": [{"camera_id": "cam-1", "source": servers[0].url, "target_fps": 5}],
            "kafka": {"bootstrap_servers": broker}, "ray": {**settings["ray"], "address": cl.address}}))
        with live_fleet(config, servers, tmp_path / "run.err", ENV) as run:

            def publishing(cid: str) -> bool:
                assert run.poll() is None, (tmp_path / "run.err").read_text()[-3000:] + cl.log_tail()
                got = stats(cid)
                return bool(got) and got[-1].frames_processed > 10

            wait_until(lambda: publishing("cam-1"), 240, "cam-1 to publish > 10 frames", poll_s=0.5)
            before = _cameras(config)
            assert before["cam-1"]["camera_state"] == "running", before

            added = time.monotonic()
            add = maskwatch_cli("cameras", "add", "cam-2", servers[1].url, "--target-fps", "5", "--config", str(config),
                                env=ENV)
            assert add.returncode == 0, add.stderr
            wait_until(lambda: publishing("cam-2"), 240, "cam-2 to publish on a new node", poll_s=0.5)
            up_s = time.monotonic() - added
            after = _cameras(config)
            print(f"cam-2 published {up_s:.1f} s after `cameras add` (a node started for it); {after}")
            assert after["cam-2"]["node_id"] != after["cam-1"]["node_id"], after
            assert {r["camera_state"] for r in after.values()} == {"running"}, after
            assert _worker_nodes(cl.address) == 2

            removed = time.monotonic()
            remove = maskwatch_cli("cameras", "remove", "cam-2", "--config", str(config), env=ENV)
            assert remove.returncode == 0, remove.stderr
            wait_until(lambda: _worker_nodes(cl.address) == 1, 120, "the idle node to go", poll_s=1.0)
            down_s = time.monotonic() - removed
            print(f"the second node went {down_s:.1f} s after `cameras remove` (idle timeout {IDLE_TIMEOUT_S:g} s)")
            assert stats("cam-2")[-1].camera_state == "removed"
            assert _cameras(config)["cam-1"]["node_id"] == before["cam-1"]["node_id"]  # cam-1 never moved
            run.send_signal(signal.SIGTERM)
            assert run.wait(timeout=120) == 0, (tmp_path / "run.err").read_text()[-3000:]


def _cameras(config: Path) -> dict[str, dict]:
    listed = maskwatch_cli("cameras", "list", "--config", str(config), "--json", env=ENV)
    assert listed.returncode == 0, listed.stderr
    return {r["camera_id"]: r for r in map(json.loads, listed.stdout.splitlines())}


def _worker_nodes(address: str) -> int:
    """Alive nodes other than the head (a short-lived driver process asks the GCS)."""
    code = (f"import ray; ray.init(address={address!r}, logging_level='ERROR'); print('worker_nodes=%d' % sum("
            "n['Alive'] and 'node:__internal_head__' not in n['Resources'] for n in ray.nodes()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **ENV})
    assert out.returncode == 0, out.stderr[-2000:]
    # The driver's stdout also carries Ray's autoscaler events ("(autoscaler +0s) Resized to 2 CPUs.") when one
    # arrives while it runs: read our line only.
    (count,) = [line.split("=", 1)[1] for line in out.stdout.splitlines() if line.startswith("worker_nodes=")]
    return int(count)
