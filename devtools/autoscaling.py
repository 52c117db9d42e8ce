"""A local Ray cluster whose autoscaler starts and stops fake nodes (Ray's ``FakeMultiNodeProvider``), on loopback,
for the autoscaling test.

Ray ships ``ray.cluster_utils.AutoscalingCluster`` for this, but in the 2.60 wheel it cannot be used here: it reads
``fake_multi_node/example.yaml``, which the wheel does not contain; its ``start()`` and ``shutdown()`` run
``ray stop --force``, which would end every Ray cluster on the machine; and it takes the default ports and
``/tmp/ray``. This starts the same thing (a head node whose autoscaler launches fake worker nodes as local raylets)
with ``ray start --head --block``: free ports, a temporary directory of its own, autoscaler v2, and on ``stop()``
only its own processes, by PID. The settings follow Ray's ``AutoscalingCluster`` and its ``example.yaml``
(python/ray/cluster_utils.py, python/ray/autoscaler/_private/fake_multi_node/).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devtools.procs import descendants
from services.broker import free_port

FAKE_HEAD_NODE_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"  # Ray's fake provider's head id
PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"


class FakeAutoscalingCluster:
    """A head node (``head_cpus`` CPUs) and an autoscaler that launches ``worker_type`` nodes on demand.

    Args:
        worker_resources: Resources of one worker node, e.g. ``{"CPU": 2}``.
        min_workers, max_workers: Bounds of the worker count.
        idle_timeout_s: A worker node with nothing on it for this long is removed.
        env: Extra environment of every Ray process (e.g. ``RAY_AUTH_MODE``).
    """

    def __init__(self, worker_resources: dict[str, float], min_workers: int = 0, max_workers: int = 2,
                 idle_timeout_s: float = 3.0, head_cpus: float = 0, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = Path(tempfile.mkdtemp(prefix="maskwatch-autoscale-"))
        self._head_cpus = head_cpus
        self._env = {**os.environ, **(env or {}),
                     "RAY_USAGE_STATS_ENABLED": "0",
                     # Keeps every process of the cluster, fake nodes included, on 127.0.0.1: without it Ray
                     # replaces a loopback --node-ip-address with the machine's address.
                     "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                     "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1",
                     "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # SIGTERM would first wait 30 s
                     "RAY_enable_autoscaler_v2": "1", "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
                     "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID}
        self.config: dict[str, Any] = {
            "cluster_name": "maskwatch-fake", "max_workers": max_workers, "upscaling_speed": 1.0,
            "idle_timeout_minutes": idle_timeout_s / 60,
            "provider": {"type": "external", "module": PROVIDER, "use_node_id_as_ip": True,
                         "disable_node_updaters": True, "disable_launch_config_check": True,
                         "gcs_address": self.address, "launch_multiple": True, "head_node_id": FAKE_HEAD_NODE_ID},
            "head_node_type": "ray.head.default",
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0},
                "worker": {"resources": dict(worker_resources), "node_config": {}, "min_workers": min_workers,
                           "max_workers": max_workers},
            },
            "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously":
                False, "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
            "rsync_exclude": [], "rsync_filter": [],
        }
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120.0) -> FakeAutoscalingCluster:
        config = self.temp_dir / "autoscaling.json"
        config.write_text(json.dumps(self.config))
        ray = Path(sys.executable).with_name("ray")
        cmd = [str(ray), "start", "--head", "--block", f"--autoscaling-config={config}", "--node-ip-address=127.0.0.1",
               f"--port={self.port}", f"--temp-dir={self.temp_dir}", "--include-dashboard=false",
               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
               "--disable-usage-stats", f"--num-cpus={self._head_cpus}"]
        with (self.temp_dir / "ray_start.log").open("ab") as log:
            self._proc = subprocess.Popen(cmd, env=self._env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not (self.temp_dir / "ray_current_cluster").exists():  # written once the head is up
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                msg = f"the head node did not come up; {self.temp_dir / 'ray_start.log'}:\n{self.log_tail()}"
                raise RuntimeError(msg)
            time.sleep(0.2)
        return self

    def log_tail(self, chars: int = 3000) -> str:
        path = self.temp_dir / "ray_start.log"
        return path.read_text()[-chars:] if path.exists() else ""

    def stop(self) -> None:
        """End this cluster's processes only: everything but the GCS and ``ray start`` first (raylets that outlive
        the GCS hang while they try to unregister), then those, then SIGKILL what is left."""
        if self._proc is None:
            return
        tree = descendants(self._proc.pid)
        last = {self._proc.pid} | {pid for pid, name in tree if name == "gcs_server"}
        for group in ([pid for pid, _ in tree if pid not in last], sorted(last)):
            _signal_all(group, signal.SIGTERM)
            _wait_gone(group, 10.0)
        _signal_all([pid for pid, _ in [*tree, (self._proc.pid, "")] if not _zombie(pid)], signal.SIGKILL)
        self._proc.wait(timeout=10)
        self._proc = None

    def __enter__(self) -> FakeAutoscalingCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pids: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in pids):
        time.sleep(0.1)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"
