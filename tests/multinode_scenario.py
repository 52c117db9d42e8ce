"""A two-node Ray cluster on loopback loses its worker node mid-run; run by ``tests/test_multinode.py``.

Runs as PID 1 of fresh network and PID namespaces (``unshare --net --pid --fork --mount-proc``): the only network
interface is ``lo``, so every Ray process listens on 127.0.0.1 (``ray start --node-ip-address 127.0.0.1`` alone still
registers the machine's own address and listens on all interfaces: docs/FACTS.md), and every process started here
ends with this one.

1. A Tansu broker; ``ray start --head`` (3 CPUs) and ``ray start --address`` (a worker node, 4 CPUs), both ``--block``
   so that each is one process to stop by PID.
2. A filler actor takes the head's CPUs, so that ``maskwatch run --address`` places every maskwatch actor on the
   worker node. The run's sources are relative paths, resolved from its working directory (the shared data folder).
3. Once both cameras publish, the filler is killed and then the worker node's raylet (SIGKILL by PID): Ray restarts the
   actors on the head node and the driver's supervisor brings the cameras back, each resuming after its last
   published frame.

Writes a JSON report (``--out``); the test asserts on it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GCS_PORT = 6390
HEALTH_CHECKS = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "3000",
                 "RAY_health_check_failure_threshold": "3"}
VIDEO = "videos/pets09_s2l1_cctv.mp4"  # relative to the shared data folder: the run's working directory
ADDED = "node-c"  # the camera added just before the worker node is lost


def ray_start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    ray = Path(sys.executable).with_name("ray")
    with log.open("ab") as fh:
        return subprocess.Popen([str(ray), "start", "--block", "--node-ip-address", "127.0.0.1",
                                 "--disable-usage-stats", *args], stdout=fh, stderr=subprocess.STDOUT, env=env)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="the shared data folder (holds videos/)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    os.environ.update(env)  # this script's own driver joins the cluster too

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from devtools.procs import descendants, stop_all
    from devtools.waiting import wait_until
    from pipeline.config import KafkaConfig
    from pipeline.sinks import any_listening, ensure_topics
    from pipeline.stats_reader import read_topic
    from schemas.messages import CameraStats, PersonDecision
    from services.broker import local_broker

    report: dict[str, object] = {}
    procs: list[subprocess.Popen[bytes]] = []
    with local_broker() as bootstrap:
        kafka = KafkaConfig(bootstrap_servers=bootstrap)
        ensure_topics(kafka)
        try:
            # The GCS's node health checks as k8s/raycluster.yaml sets them: a node whose raylet is gone is declared
            # dead after 3 failed checks 1 s apart (Ray's defaults: 5 checks 3 s apart, 10-s timeout).
            head = ray_start(["--head", "--port", str(GCS_PORT), "--num-cpus", "6", "--include-dashboard", "false"],
                             args.work / "head.log", env | HEALTH_CHECKS)
            procs.append(head)

            def head_listening() -> bool:
                assert head.poll() is None, (args.work / "head.log").read_text()[-3000:]
                return any_listening(f"127.0.0.1:{GCS_PORT}", 1.0)

            wait_until(head_listening, 60, f"the head node's GCS on 127.0.0.1:{GCS_PORT}", poll_s=0.2)
            worker = ray_start(["--address", f"127.0.0.1:{GCS_PORT}", "--num-cpus", "4"], args.work / "worker.log",
                               env)
            procs.append(worker)
            ray.init(address=f"127.0.0.1:{GCS_PORT}", namespace="multinode-filler", logging_level="WARNING")
            wait_until(lambda: len([n for n in ray.nodes() if n["Alive"]]) >= 2, 60, "the worker node to join",
                       poll_s=0.5)
            head_id = next(n["NodeID"] for n in ray.nodes()
                           if n["Alive"] and "node:__internal_head__" in n["Resources"])

            # Four of the head's 6 CPUs taken: it holds one node pipeline (a bundle of 2 CPUs), the worker two. The
            # fleet puts one pipeline on each (the node with the fewest, then the most free CPUs), and the third
            # camera's, added just before the kill, on the worker. The filler goes before the worker is killed, so
            # the head then holds the worker's two pipelines too.
            @ray.remote(num_cpus=4)
            class Filler:
                def ready(self) -> bool:
                    return True

            filler = Filler.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head_id, soft=False)).remote()
            ray.get(filler.ready.remote(), timeout=60)

            cameras = ["node-a", "node-b"]
            # The sessions keep their default threads (one per CPU of the actor, spinning off). With ONNX Runtime's
            # own (threads 0: as many as cores, spinning), three pose actors on a 2-core AMD EPYC machine fought so
            # hard that the head's camera fell from about 3 frames/s to one frame in 26 s, 30 s before the node loss,
            # and never published again in time. 640-px pose input: this scenario is about failover, not detection,
            # and three pipelines at 1280 px on two cores took 10 min to finish the video.
            config = args.work / "config.yaml"
            # 2-s statistics windows: the waits below read the cameras' progress from their records, and with the
            # default 60-s windows (aligned to the wall clock) the first record may hold fewer than 40 frames and the
            # next one come minutes later on a busy machine.
            # Relative source paths: the run's working directory is the data folder.
            config.write_text("stats: {window_s: 2}\n"
                              "capture: {cameras_per_actor: 1}\nfleet: {cameras_per_node: 1, watch_poll_s: 1}\n"
                              "cameras:\n" + "".join(f"  - {{camera_id: {c}, source: {VIDEO}, pose_input_px: 640}}\n"
                                                     for c in cameras))
            cmd = [sys.executable, "-m", "maskwatch.cli", "run", "--address", f"127.0.0.1:{GCS_PORT}",
                   "--kafka-bootstrap", bootstrap, "--target-fps", "5", "--config", str(config), "--json"]
            # No RAY_AUTH_MODE for the run: it finds the head's token (~/.ray/auth_token) and sets the mode itself.
            run_env = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"} | {"PYTHONPATH": str(REPO)}
            with (args.work / "run.err").open("wb") as err, (args.work / "run.json").open("wb") as out:
                run = subprocess.Popen(cmd, cwd=args.data, env=run_env, stdout=out, stderr=err)
            procs.append(run)

            def stats() -> dict[str, list[CameraStats]]:
                out: dict[str, list[CameraStats]] = {c: [] for c in [*cameras, ADDED]}
                for key, value in read_topic(kafka, kafka.stats_topic):
                    if key in out:
                        out[key].append(CameraStats.decode(value))
                return out

            seen = stats()

            def published_40() -> bool:
                nonlocal seen
                assert run.poll() is None, (args.work / "run.err").read_text()[-3000:]
                seen = stats()
                return all(seen[c] and seen[c][-1].frames_processed >= 40 for c in cameras)

            def last() -> str:
                got = {c: (len(s), s[-1].frames_processed if s else None) for c, s in seen.items()}
                return f"the cameras to publish 40 frames: (records, last frames_processed) {got}"

            wait_until(published_40, 180, last, poll_s=0.5)
            listed = subprocess.run([sys.executable, "-m", "maskwatch.cli", "cameras", "list", "--config", str(config),
                                     "--address", f"127.0.0.1:{GCS_PORT}", "--json"], cwd=args.data, env=run_env,
                                    capture_output=True, text=True, timeout=120)
            assert listed.returncode == 0, listed.stderr[-3000:]
            placement = {r["camera_id"]: r for r in map(json.loads, listed.stdout.splitlines())}
            assert set(placement) == set(cameras), (placement, listed.stderr[-3000:])
            worker_id = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != head_id)
            # A third camera added through the config file; the worker node is lost while it is being started.
            added = subprocess.run([sys.executable, "-m", "maskwatch.cli", "cameras", "add", ADDED, VIDEO, "--set",
                                    "pose_input_px=640", "--config", str(config), "--address",
                                    f"127.0.0.1:{GCS_PORT}"], cwd=args.data, env=run_env, capture_output=True,
                                   text=True, timeout=120)
            assert added.returncode == 0, added.stderr[-3000:]
            before = {c: s[-1].frames_processed for c, s in stats().items() if s}
            raylets = [pid for pid, name in descendants(worker.pid) if name == "raylet"]
            assert len(raylets) == 1, descendants(worker.pid)
            ray.kill(filler)
            killed_ns = time.time_ns()
            os.kill(raylets[0], signal.SIGKILL)
            back: dict[str, float] = {}

            moved = [cid for cid, row in placement.items() if row["node_id"] == worker_id]  # on the node killed

            def all_back() -> bool:
                for cid, recs in stats().items():
                    # The worker's cameras publish again after a restart; the head's go on without one.
                    again = [s for s in recs if s.window_end_ns > killed_ns and (
                        cid == ADDED or (s.camera_restarts >= 1) == (cid in moved))]
                    if again and cid not in back:
                        back[cid] = (again[0].window_end_ns - killed_ns) / 1e9
                return len(back) == len(cameras) + 1

            def not_back() -> str:
                last_of = {c: (r[-1].camera_restarts, r[-1].frames_processed, (r[-1].window_end_ns - killed_ns) / 1e9)
                           for c, r in stats().items() if r}
                nodes = {c: row["node_id"][:8] for c, row in placement.items()}
                return (f"the cameras back after the node loss: {sorted(back)} of {cameras}, moved {moved}; last "
                        f"records (restarts, frames, window end - kill s): {last_of}; placed on {nodes}, head "
                        f"{head_id[:8]}, worker {worker_id[:8]}")

            wait_until(all_back, 180, not_back, poll_s=0.5)
            code = run.wait(timeout=600)
            final = stats()
            decisions = [PersonDecision.decode(v) for _, v in read_topic(kafka, kafka.decisions_topic)]
            report = {
                "exit_code": code,
                "cameras_list": placement,
                "added": added.stdout.strip(),
                "decisions": {c: len({d.decision_id for d in decisions if d.camera_id == c}) for c in final},
                "moved": moved,
                "cameras_list_stderr": listed.stderr[-2000:],
                "nodes": {"head": head_id, "worker": worker_id},
                "summaries": _summaries((args.work / "run.json").read_text()),
                "run_stderr_tail": (args.work / "run.err").read_text()[-3000:],
                "frames_before_kill": before,
                "back_after_kill_s": back,
                "worker_node_ended": worker.wait(timeout=60),
                "stats": {c: [s.to_dict() for s in recs] for c, recs in final.items()},
            }
        finally:
            stop_all(reversed(procs))
            ray.shutdown()
    args.out.write_text(json.dumps(report))
    return 0


def _summaries(stdout: str) -> list[dict[str, object]] | str:
    """The cameras of ``maskwatch run --json``'s summary, or what it printed. Ray's driver also prints its workers'
    and raylets' stdout lines there (a raylet's "terminated" notice), so the summary is the object that starts a line
    and decodes."""
    decoder = json.JSONDecoder()
    for i in [0, *(i + 1 for i, c in enumerate(stdout) if c == "\n")]:
        if stdout.startswith("{", i):
            try:
                return decoder.raw_decode(stdout, i)[0]["cameras"]
            except (ValueError, KeyError):
                continue
    return stdout[-3000:]


if __name__ == "__main__":
    raise SystemExit(main())
