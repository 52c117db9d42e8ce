"""Multi-node: ``maskwatch run --address`` with relative source paths on a two-node Ray cluster; the worker node's
raylet is killed mid-run, and its cameras resume on the head node.

The cluster runs in its own network and PID namespaces (``tests/multinode_scenario.py``): only ``lo`` exists there,
so Ray cannot leave loopback, and every process of the scenario ends with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED_DATA, pose_model, shared_video

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.kafka, pytest.mark.soak]

SCENARIO = REPO / "tests" / "multinode_scenario.py"
UNSHARE = ["unshare", "--net", "--pid", "--fork", "--mount-proc"]
SAMPLED_FRAMES = 398  # pets09_s2l1_cctv.mp4: 795 frames at 10 fps, sampled at 5 fps


def _namespaces_available() -> bool:
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_a_lost_worker_node_moves_its_cameras_to_the_head_node(tmp_path: Path) -> None:
    shared_video("pets09_s2l1_cctv.mp4")
    pose_model()
    if not _namespaces_available():
        pytest.skip("needs `unshare --net --pid` (root, or user namespaces) to keep a two-node Ray cluster on loopback")
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [*UNSHARE, sys.executable, str(SCENARIO), "--data", str(SHARED_DATA), "--work", str(tmp_path), "--out",
         str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["exit_code"] == 0, report["run_stderr_tail"]
    assert "Traceback" not in report["run_stderr_tail"], report["run_stderr_tail"]
    print(f"cameras published again after the worker node's raylet was killed: {report['back_after_kill_s']} s")
    for cid, recs in report["stats"].items():
        # Measured on the 2-core development machine with Ray's default settings: 88.7 s, most of it Ray noticing
        # that the node is gone (the shard answers "unavailable" for about 70 s), then a new worker process on the
        # head node, the restore read and the file reopened at its next frame. The bound catches a camera that never
        # comes back; tighten Ray's GCS health checks to shorten it.
        assert report["back_after_kill_s"][cid] < 170, cid
        totals = [r["total_people"] for r in recs]
        assert totals == sorted(totals), cid  # never down
        final = recs[-1]
        assert final["final"], cid
        assert final["camera_restarts"] >= 1, cid
        # Resumed after its last published frame on the head node: the whole video, not a second pass from frame 0
        # and not the rest of it lost.
        assert final["frames_processed"] > report["frames_before_kill"][cid], cid
        assert 0.9 * SAMPLED_FRAMES <= final["frames_processed"] <= 1.1 * SAMPLED_FRAMES, (cid, final)
