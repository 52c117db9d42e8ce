"""Camera shards: one actor hosts many cameras (capture, tracking, face rules, voting, windows for each).

Why capture, tracking and voting share a process: they hold per-camera state and need the full-resolution frame
(head crops are cut from it; docs/FACTS.md "Ray 2.60"), so keeping them together means a raw frame never leaves the
process that decoded it; only the small letterboxed pose input and the tiny crops travel to the GPU pools.
A process per camera would not reach hundreds of cameras (docs/FACTS.md: ~100+ MB and seconds per actor).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any, get_args

import numpy as np
import numpy.typing as npt
import ray
from ray.actor import ActorHandle
from ray.util.metrics import Counter, Gauge, Histogram

from pipeline.batching import MicroBatcher
from pipeline.camera import CameraPipeline
from pipeline.camera_loop import (
    CameraHost,
    CameraSpec,
    CameraStop,
    CameraSummary,
    Message,
    make_camera_pipeline,
    supervise_camera,
)
from pipeline.config import Config
from pipeline.letterbox import Letterbox
from pipeline.sinks import message_records
from pipeline.source import is_live
from pipeline.stats import CameraCounters
from pipeline.stats_reader import latest_stats
from schemas.errors import SinkError
from schemas.messages import CameraState, CameraStats
from schemas.pose import Poses

logger = logging.getLogger(__name__)
MAX_PENDING_WRITES = 256
# Calls a shard keeps in flight per pose (classify) actor; frames that come meanwhile wait and go together in the next.
MODEL_CALLS_IN_FLIGHT = 2
START_WAIT_S = 60.0  # how long start_camera() waits for the shard's run() to begin
FPS_WINDOW_S = 10.0  # cameras() reports each camera's frames/s over about this many seconds
# How long run() waits for its model actors' first answer (they load their models; a fresh node measures its runtimes)
# before its process exits to be restarted (_model_nodes); shorter when it restores after a restart.
MODEL_WAIT_S, MODEL_WAIT_RESTORE_S = 180.0, 20.0
LATENCY_BUCKETS_S = [0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30]


# A shard whose process dies is restarted by Ray (max_restarts=-1: always); its run() call is not retried by Ray
# (it is not idempotent): the driver calls run(restore=True) again, and the cameras continue from the statistics
# topic.
@ray.remote(max_restarts=-1, max_task_retries=0)
class CameraShardActor:
    """Runs the loop of each of its cameras concurrently (asyncio), calling the pose and classify pools.

    Each camera runs under :func:`pipeline.camera_loop.supervise_camera`: a fault in one camera (a model actor that
    died, a decoder that fails, a bug) restarts that camera with backoff and never ends another. :meth:`stop` ends
    every camera gracefully (open tracks decided, final statistics published). :meth:`start_camera` and
    :meth:`stop_camera` add and remove one camera while the others run.
    """

    # The other actors' handles come with run(), not the constructor: Ray cannot guarantee a restart whose constructor
    # arguments include object references (ray-project/ray#53727), and warns about it on every run.
    def __init__(self, cfg: Config, specs: list[CameraSpec], crop_margin: float, classifier_input_px: int) -> None:
        self._cfg = cfg
        self._specs = specs
        self._sink: ActorHandle | None = None
        self._crop_margin = crop_margin
        self._input_px = classifier_input_px
        # One reading thread per camera (threads start as needed), room for cameras added while it runs.
        workers = max(len(specs), cfg.capture.cameras_per_actor) + 2
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="capture")
        self._cameras: dict[str, tuple[CameraStop, asyncio.Task[CameraSummary]]] = {}
        self._models_of: dict[str, tuple[int, int]] = {}  # camera_id -> (pose, classify) actor index (_least_used)
        self._summaries: dict[str, CameraSummary] = {}
        self._counters: dict[str, CameraCounters] = {}  # each camera's, once its first frame was processed
        self._last_stats: dict[str, CameraStats] = {}  # each camera's last statistics record sent to the sink
        self._rate: dict[str, deque[tuple[float, int]]] = defaultdict(deque)  # (monotonic s, frames_processed)
        self._node_id = ray.get_runtime_context().get_node_id()
        self._pose_remote: list[bool] = []  # per pose actor: on another node than this shard
        self._cross_node: dict[str, int] = defaultdict(int)  # frames sent to a pose actor on another node
        self._changed = asyncio.Event()  # a camera started, or stop(): run() looks again
        tags = ("camera_id",)
        self._frames = Gauge("maskwatch_capture_frames_processed", "Frames processed since start", tag_keys=tags)
        self._dropped = Gauge("maskwatch_capture_frames_dropped", "Live frames dropped under backpressure",
                              tag_keys=tags)
        self._tracks = Gauge("maskwatch_tracking_live_tracks", "Tracks currently followed", tag_keys=tags)
        self._state = Gauge("maskwatch_camera_state", "1 for the camera's current state, 0 for the others",
                            tag_keys=("camera_id", "state"))
        self._restarts = Gauge("maskwatch_camera_restarts", "Times the camera's loop failed and restarted",
                               tag_keys=tags)
        self._pose_latency = Histogram(
            "maskwatch_pose_latency_seconds", "Frame decoded to its poses back in the camera loop (queue, Ray hops, "
            "batching, inference)", boundaries=LATENCY_BUCKETS_S, tag_keys=tags)
        self._people = Gauge(
            "maskwatch_camera_people", "People decided since the camera's run started, by decision (running total, "
            "restored after restarts); a district's pooled mask fraction: sum(mask) / sum(mask + no_mask) by district",
            tag_keys=("camera_id", "district", "decision"))
        self._stage_cpu = Counter(
            "maskwatch_stage_cpu_seconds", "CPU seconds of a camera's own stages in its shard (decode, letterbox, "
            "tracking, reid_network, crop, voting, emit; thread time)", tag_keys=("camera_id", "stage"))
        self._stage_reported: dict[tuple[str, str], float] = defaultdict(float)
        self._cross_metric = Counter(
            "maskwatch_frames_cross_node", "Frames a camera shard sent to a pose actor on another node (0 when each "
            "node's pipeline keeps its frames; cluster.fleet)", tag_keys=tags)
        self._stop = asyncio.Event()
        self._running = asyncio.Event()  # run() has made the pose batchers: cameras can start
        self._pending_writes: deque[Any] = deque()

    def _observe(self, cam: CameraPipeline) -> None:
        self._counters[cam.camera_id] = cam.counters
        rate, now = self._rate[cam.camera_id], time.monotonic()
        if not rate or now - rate[-1][0] >= 1.0:
            rate.append((now, cam.counters.frames_processed))
            while now - rate[0][0] > FPS_WINDOW_S:
                rate.popleft()
        tags = {"camera_id": cam.camera_id}
        w, c = cam.windows, cam.counters
        self._frames.set(c.frames_processed, tags)
        self._dropped.set(c.frames_dropped, tags)
        self._tracks.set(len(cam.ledger), tags)
        self._restarts.set(c.camera_restarts, tags)
        if cam.pose_latency_s is not None:  # taken once: idle ticks call this too
            self._pose_latency.observe(cam.pose_latency_s, tags)
            cam.pose_latency_s = None
        total = w.total
        for decision, n in (("mask", total.masked), ("no_mask", total.unmasked), ("undecided", total.undecided)):
            self._people.set(n, {"camera_id": cam.camera_id, "district": w.district or "", "decision": decision})
        for stage, cpu_s in cam.stage_cpu_s.items():  # running totals: the counter gets what is new
            key = (cam.camera_id, stage)
            if cpu_s < self._stage_reported[key]:  # a new CameraPipeline (the camera restarted) counts from 0
                self._stage_reported[key] = 0.0
            new = cpu_s - self._stage_reported[key]
            if new > 0:
                self._stage_cpu.inc(new, {"camera_id": cam.camera_id, "stage": stage})
                self._stage_reported[cam.camera_id, stage] = cpu_s
        for state in get_args(CameraState):
            self._state.set(float(state == c.camera_state), {"camera_id": cam.camera_id, "state": state})

    @staticmethod
    def _calls_of(method: Any, max_items: int) -> Callable[..., Awaitable[Any]]:
        """One frame's call of a model actor's ``*_many`` method (``PoseActor.infer_many``,
        ``ClassifyActor.predict_many``), with the frame's arguments. Frames that wait while
        :data:`MODEL_CALLS_IN_FLIGHT` of its calls are out go together in the next call, which takes a list per
        argument: Ray's per-call cost (about a fifth of a shard's CPU) is paid once per call. With a call slot free a
        frame goes at once: no wait is added. A frame's own failure is raised to its caller alone."""

        async def call(items: list[tuple[Any, ...]]) -> list[Any]:
            return await method.remote(*(list(column) for column in zip(*items, strict=True)))

        batcher: MicroBatcher[tuple[Any, ...], Any] = MicroBatcher(call, max_items, 0.0, MODEL_CALLS_IN_FLIGHT)

        async def one(*args: Any) -> Any:
            out = await batcher.submit(args)
            if isinstance(out, BaseException):  # this frame's own failure, not its neighbours'
                raise out
            return out

        return one

    async def run(
        self,
        pose_actors: list[ActorHandle],
        classify_actors: list[ActorHandle],
        sink: ActorHandle,
        restore: bool = False,
        specs: list[CameraSpec] | None = None,
        until_stopped: bool = False,
    ) -> list[dict[str, Any]]:
        """Process every camera until its source ends or :meth:`stop`; returns one summary dict per camera.

        With Kafka, each live camera continues from its last record in the compacted statistics topic (a job that
        restarts keeps its totals); with ``restore`` (this shard's process was restarted) file cameras do too,
        resuming after their last published frame. Each camera calls the pose and classify actors that this shard's
        other cameras use least (:meth:`_least_used`), and writes to ``sink``.

        Args:
            specs: The cameras to run (None: the constructor's); the fleet passes the shard's current cameras.
            until_stopped: Return only after :meth:`stop`, not when the last camera ended (a fleet adds cameras).
        """
        self._sink = sink
        self._specs = self._specs if specs is None else specs
        self._pose_calls = [self._calls_of(p.infer_many, self._cfg.pose.max_batch_size) for p in pose_actors]
        self._classify_calls = [self._calls_of(c.predict_many, self._cfg.classify.max_batch_size)
                                for c in classify_actors]
        pose_nodes = await self._model_nodes(pose_actors, classify_actors, restore)
        self._pose_remote = [node != self._node_id for node in pose_nodes]
        self._running.set()
        cpu0 = time.process_time()
        initial = list(self._specs)  # start_camera() may add cameras while the restore read below runs
        last = await asyncio.to_thread(self._last_records, initial, restore)
        for spec in initial:
            if not self._is_running(spec.camera_id):
                self._start(spec, last.get(spec.camera_id))
        await self._wait_cameras(until_stopped)
        await asyncio.gather(*self._pending_writes)  # every record is with the sink before the driver closes it
        self._pending_writes.clear()
        summaries = list(self._summaries.values())
        shard_cpu_s = round((time.process_time() - cpu0) / max(len(summaries), 1), 4)
        return [asdict(s) | {"shard_cpu_s": shard_cpu_s, "frames_cross_node": self._cross_node[s.camera_id]}
                for s in summaries]

    async def _model_nodes(self, pose: list[ActorHandle], classify: list[ActorHandle], restore: bool) -> list[str]:
        """The pose actors' nodes, once every model actor has answered.

        After a node loss, a restarted shard's process has sometimes never been told by Ray that a model actor,
        restarted too, is alive again: its calls to that actor then wait for minutes (seen in 2 of 5 runs of
        tests/test_multinode.py; Ray's GCS had the actor alive within seconds). A process that is not answered
        within ``MODEL_WAIT_S`` (``MODEL_WAIT_RESTORE_S`` when it restores) exits, so that Ray starts it again
        (max_restarts) and the driver calls run(restore=True) on a new process, which asks afresh.
        """
        wait_s = MODEL_WAIT_RESTORE_S if restore else MODEL_WAIT_S
        try:
            nodes = await asyncio.wait_for(asyncio.gather(*(a.node_id.remote() for a in [*pose, *classify])), wait_s)
        except TimeoutError:
            logger.error("camera shard of %s: its model actors did not answer within %g s; its process exits so that "
                         "Ray restarts it", sorted(s.camera_id for s in self._specs), wait_s)
            os._exit(1)
        return nodes[: len(pose)]

    async def _wait_cameras(self, until_stopped: bool) -> None:
        """Until every camera ended (cameras started meanwhile too) and, with ``until_stopped``, :meth:`stop`."""
        while True:
            self._changed.clear()
            pending = [task for _, task in self._cameras.values() if not task.done()]
            if not pending and (self._stop.is_set() or not until_stopped):
                break
            changed = asyncio.ensure_future(self._changed.wait())
            await asyncio.wait([*pending, changed], return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
        for camera_id, (_, task) in list(self._cameras.items()):
            self._summaries[camera_id] = task.result()

    async def start_camera(self, spec: CameraSpec) -> None:
        """Start one more camera in this running shard; its neighbours go on untouched. A live camera continues
        from its last statistics record in Kafka, as at the start of :meth:`run`.

        Raises:
            RuntimeError: If :meth:`run` has not started within ``START_WAIT_S`` (it is waited for).
            ValueError: If a camera of this ``camera_id`` is running in this shard.
        """
        try:
            await asyncio.wait_for(self._running.wait(), START_WAIT_S)
        except TimeoutError:
            msg = f"cannot start camera {spec.camera_id!r}: the shard's run() has not started in {START_WAIT_S:g} s"
            raise RuntimeError(msg) from None
        if self._is_running(spec.camera_id):
            msg = f"camera {spec.camera_id!r} is already running in this shard"
            raise ValueError(msg)
        last = await asyncio.to_thread(self._last_records, [spec], False)
        if self._is_running(spec.camera_id):  # started meanwhile by run()
            return
        self._start(spec, last.get(spec.camera_id))

    def _is_running(self, camera_id: str) -> bool:
        running = self._cameras.get(camera_id)
        return running is not None and not running[1].done()

    async def stop_camera(self, camera_id: str, removed: bool = False) -> dict[str, Any]:
        """Stop one camera of this shard as :meth:`stop` stops them all (its open tracks decided with
        ``ended_by="shutdown"``, its final statistics published); the others go on. Returns its summary.

        Args:
            removed: The camera was taken out of the fleet's configuration: its final record says ``removed``, and
                it leaves :meth:`cameras`.

        Raises:
            KeyError: If no camera of this ``camera_id`` runs in this shard.
        """
        if camera_id not in self._cameras:
            msg = f"no camera {camera_id!r} in this shard (it has {sorted(self._cameras)})"
            raise KeyError(msg)
        stop, task = self._cameras[camera_id]
        if removed:
            stop.remove()
        else:
            stop.set()
        summary = await task
        self._summaries[camera_id] = summary
        if removed:
            del self._cameras[camera_id]
            self._counters.pop(camera_id, None)
            self._models_of.pop(camera_id, None)
            self._specs = [s for s in self._specs if s.camera_id != camera_id]
        return asdict(summary)

    async def restart_camera(self, spec: CameraSpec) -> dict[str, Any]:
        """Restart one camera with new settings (a changed config entry): stopped as by :meth:`stop_camera`, then
        started again from its final record, so its totals go on (a file resumes after its last frame). Returns the
        summary of the run that ended."""
        summary = await self.stop_camera(spec.camera_id)
        self._start(spec, self._last_stats.get(spec.camera_id))
        self._specs = [spec if s.camera_id == spec.camera_id else s for s in self._specs]
        return summary

    def cameras(self) -> list[dict[str, Any]]:
        """This shard's cameras: ``camera_id``, ``node_id`` (Ray's, hex), ``camera_state`` (``connecting`` until a
        first frame was processed, ``stopped`` once it ended), ``frames_per_s`` (over about the last
        ``FPS_WINDOW_S`` seconds), ``frames_cross_node`` and the counters of :class:`pipeline.stats.CameraCounters`.
        """
        out = []
        for camera_id, (_, task) in self._cameras.items():
            c = self._counters.get(camera_id)
            row = asdict(c) if c is not None else {"camera_state": "connecting"}
            rate = self._rate.get(camera_id)
            fps = ((rate[-1][1] - rate[0][1]) / (rate[-1][0] - rate[0][0])
                   if rate and len(rate) > 1 and not task.done() else 0.0)
            out.append({"camera_id": camera_id, "node_id": self._node_id, **row, "frames_per_s": round(fps, 2),
                        "frames_cross_node": self._cross_node[camera_id]}
                       | ({"camera_state": "stopped"} if task.done() else {}))
        return out

    def _start(self, spec: CameraSpec, last: CameraStats | None) -> None:
        stop = CameraStop()
        if self._stop.is_set():
            stop.set()
        task = asyncio.create_task(supervise_camera(spec, self._host(spec), stop, restore=last))
        self._cameras[spec.camera_id] = (stop, task)
        if all(s.camera_id != spec.camera_id for s in self._specs):
            self._specs = [*self._specs, spec]
        self._changed.set()

    def _last_records(self, specs: list[CameraSpec], restore: bool) -> dict[str, CameraStats]:
        kafka = self._cfg.kafka
        wanted = {s.camera_id for s in specs if restore or is_live(s.source)}
        if not (kafka.bootstrap_servers and wanted):
            return {}
        try:
            last = latest_stats(kafka)
        except SinkError as exc:  # a broker that is down at start must not stop the cameras
            logger.warning("cannot restore camera totals (%s); they start from zero", exc)
            return {}
        found = {cid: s for cid, s in last.items() if cid in wanted}
        if found:
            logger.warning("restoring %s from their last statistics records", sorted(found))
        return found

    def pid(self) -> int:
        """The worker process's PID (fault tests kill it)."""
        return os.getpid()

    def stop(self) -> None:
        """Stop capture; every camera finishes its frames in flight, decides its open tracks and publishes its
        final statistics; :meth:`run` then returns."""
        self._stop.set()
        self._changed.set()
        for stop, _ in self._cameras.values():
            stop.set()

    def _least_used(self, camera_id: str, which: int, n: int) -> int:
        """Index (of ``n``) of the pose (``which`` 0) or classify (1) actor that this shard's other running cameras
        use least, the lowest on a tie: a pool's actors share the shard's cameras evenly. (A hash of the
        ``camera_id`` gave one of two pose actors all four cameras of bench/pipeline_fps.py.)"""
        used = [0] * n
        for cid, models in self._models_of.items():
            if cid != camera_id and self._is_running(cid):
                used[models[which]] += 1
        return used.index(min(used))

    def _host(self, spec: CameraSpec) -> CameraHost:
        """The camera's models (the pose and classify actors this shard's other cameras use least), its sink and this
        shard's metrics."""
        cfg = self._cfg
        pose_i, classify_i = self._models_of[spec.camera_id] = (
            self._least_used(spec.camera_id, 0, len(self._pose_calls)),
            self._least_used(spec.camera_id, 1, len(self._classify_calls)))
        pose, cross_node = self._pose_calls[pose_i], self._pose_remote[pose_i]
        classify = self._classify_calls[classify_i]
        topics = (cfg.kafka.decisions_topic, cfg.kafka.stats_topic)

        async def infer_pose(image: npt.NDArray[np.uint8], lb: Letterbox, cid: str, fidx: int, pts: int) -> Poses:
            if cross_node:
                self._cross_node[cid] += 1
                self._cross_metric.inc(1, {"camera_id": cid})
            return Poses.from_arrow(await pose(image, lb, cid, fidx, pts), cid, fidx, pts)

        async def emit(messages: list[Message]) -> None:
            # The camera does not wait for the sink (a broker outage must not stall it): writes go out in order
            # (Ray keeps the order of one caller's calls to an actor), and only a backlog of MAX_PENDING_WRITES
            # unfinished writes makes this camera wait.
            if messages:
                assert self._sink is not None  # set by run()
                for m in messages:
                    if isinstance(m, CameraStats):
                        self._last_stats[m.camera_id] = m
                self._pending_writes.append(self._sink.write.remote(message_records(messages, *topics)))
            while len(self._pending_writes) > MAX_PENDING_WRITES:
                await self._pending_writes.popleft()

        make_cam = make_camera_pipeline(cfg, spec, self._crop_margin)
        return CameraHost(make_cam, self._input_px, infer_pose, classify, emit, self._executor, self._observe)
