"""The running fleet: node pipelines, which camera runs where, and the changes made while it runs.

:class:`Fleet` places each camera in the node pipeline with the most room (:mod:`pipeline.reconcile`); when all are
full it asks Ray for another pipeline's bundle, on the node with the most room or, where no node has it, as resource
demand that the autoscaler answers with a node (KubeRay ``enableInTreeAutoscaling``). It supervises the shards
(a shard whose process died is run again with ``restore``), applies a changed config file
(:meth:`Fleet.reconcile`: cameras added, removed and changed, each alone), gives back a pipeline that no camera
uses any more, and keeps the registry that ``maskwatch cameras`` reads (:mod:`actors.fleet`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.actor import ActorHandle

from actors.fleet import REGISTRY_NAME, FleetRegistryActor
from cluster.cameras import resolve_camera
from cluster.topology import NodePipeline, ShardSlot, make_sink, on_head, pipeline_bundle
from pipeline.camera_loop import CameraSpec
from pipeline.config import CameraConfig, Config
from pipeline.reconcile import NodeRoom, diff_config, pick_node, pick_pipeline
from schemas.errors import ConfigError, MaskwatchError, SourceError

logger = logging.getLogger(__name__)
ENDED_CHECK_S = 1.0  # how often the fleet asks its shards whether every camera has ended
CAMERA_CALL_TIMEOUT_S = 60.0  # a start, stop or restart of one camera in a shard


@dataclass
class Models:
    """What every pipeline's actors are made with."""

    pose_model_path: str
    crop_margin: float
    classifier_input_px: int


@dataclass
class Fleet:
    """The cameras of one run over node pipelines; see the module docstring.

    Args:
        cfg: The running configuration (its non-camera sections stay for the whole run).
        models: Model paths and the classifier's crop geometry.
        out_path: JSON Lines output when Kafka is not configured.
        declared: The configuration as the file gave it, before the driver filled in what the models carry
            (the classifier's validation counts); changes are measured against it (None: ``cfg``).
    """

    cfg: Config
    models: Models
    out_path: str | None = None
    declared: Config | None = None
    pipelines: list[NodePipeline] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    sink: Any = None
    registry: Any = None
    _next_index: int = 0
    _published: int = 0
    _stop_sent: bool = False
    _last_ended_check: float = 0.0
    _logged_died: dict[int, float] = field(default_factory=dict)

    def start(self, specs: list[CameraSpec]) -> None:
        """Make the sink and the registry, and place every camera (pipelines made as needed).

        Raises:
            MaskwatchError: If another run holds the registry's name in this Ray namespace.
        """
        self.sink = make_sink(self.cfg, self.out_path)
        try:
            self.registry = FleetRegistryActor.options(name=REGISTRY_NAME, scheduling_strategy=on_head()).remote()
        except ValueError:
            msg = (f"another maskwatch run is active in Ray namespace {self.cfg.ray.namespace!r} (its actor "
                   f"{REGISTRY_NAME!r} exists): give this run another ray.namespace")
            raise MaskwatchError(msg) from None
        for spec in specs:
            self._place(spec)
        self._activate_placed(wait_s=0.0)

    # -- placement -----------------------------------------------------------------------------------------------

    def _place(self, spec: CameraSpec) -> NodePipeline:
        """Put a camera in the pipeline with the most room, or in a new pipeline."""
        capacity = self.cfg.fleet.cameras_per_node
        live = [p for p in self.pipelines if not p.retiring]
        choice = pick_pipeline({p.index: capacity - len(p.camera_ids()) for p in live})
        pipeline = next((p for p in live if p.index == choice), None) or self._new_pipeline()
        if pipeline.pose:  # placed and running: start it in a shard now
            self._start_in(pipeline, spec)
        else:
            pipeline.waiting.append(spec)
        self._publish()
        return pipeline

    def _new_pipeline(self) -> NodePipeline:
        from ray._private.state import available_resources_per_node

        bundle = pipeline_bundle(self.cfg)
        # Ray has no public call for a node's free resources; its own ray.util.tpu uses this one.
        available = available_resources_per_node()
        ours = [p.node() for p in self.pipelines]
        rooms = [NodeRoom(n["NodeID"], available.get(n["NodeID"], n["Resources"]), ours.count(n["NodeID"]))
                 for n in ray.nodes() if n["Alive"]]
        target = pick_node(rooms, bundle)
        pipeline = NodePipeline.create(self.cfg, self._next_index, target)
        self._next_index += 1
        self.pipelines.append(pipeline)
        if target is None:
            logger.warning("node pipeline %d (%s) fits no running node: its cameras wait until a node with room joins "
                           "(the autoscaler adds one on KubeRay)", pipeline.index, bundle)
        return pipeline

    def _activate_placed(self, wait_s: float) -> None:
        """Pipelines whose bundle has been placed since: start their models, then their waiting cameras."""
        for p in self.pipelines:
            if not p.pose and p.waiting and p.placed(wait_s):
                p.populate(self.cfg, self.models.pose_model_path)
                waiting, p.waiting = p.waiting, []
                for spec in waiting:
                    self._start_in(p, spec)
                self._publish()

    def _start_in(self, pipeline: NodePipeline, spec: CameraSpec) -> None:
        per_shard = self.cfg.capture.cameras_per_actor
        slot = next((s for s in pipeline.shards if s.run is not None and len(s.specs) < per_shard), None)
        if slot is not None:
            slot.specs[spec.camera_id] = spec
            ray.get(slot.handle.start_camera.remote(spec), timeout=CAMERA_CALL_TIMEOUT_S)
            return
        slot = pipeline.add_shard(self.cfg, [spec], self.models.crop_margin, self.models.classifier_input_px)
        self._run(pipeline, slot)

    def _run(self, pipeline: NodePipeline, slot: ShardSlot, restore: bool = False) -> None:
        slot.run = slot.handle.run.remote(pipeline.pose, pipeline.classify, self.sink, restore=restore,
                                          specs=list(slot.specs.values()), until_stopped=True)

    def _publish(self) -> None:
        if self.registry is None:
            return
        shards = [(p.index, i, s.handle) for p in self.pipelines for i, s in enumerate(p.shards)]
        waiting = {s.camera_id: p.index for p in self.pipelines for s in p.waiting}
        self._published += 1
        self.registry.set_shards.remote(self._published, shards, waiting)

    def _where(self, camera_id: str) -> tuple[NodePipeline, ShardSlot | None] | None:
        for p in self.pipelines:
            for s in p.shards:
                if camera_id in s.specs:
                    return p, s
            if any(w.camera_id == camera_id for w in p.waiting):
                return p, None
        return None

    # -- changes while running -------------------------------------------------------------------------------------

    def reconcile(self, new: Config, sha256: str | None = None) -> dict[str, Any]:
        """Make the running cameras those of ``new``: added ones start (pipeline with the most room), removed ones
        stop with ``camera_state`` ``removed``, changed ones restart alone; every other camera goes on untouched.
        Settings outside ``cameras`` are not applied (listed in ``needs_restart``). Returns the report, also given
        to the registry.

        A new camera's source is opened first, as at start; a missing file refuses the whole change (the running
        fleet stays as it was, the report's ``error`` says why); an unreachable live camera starts and is retried.
        """
        t0 = time.monotonic()
        declared = self.declared or self.cfg
        change = diff_config(declared, new)
        report: dict[str, Any] = {"sha256": sha256, "at_ns": time.time_ns(), "error": None,
                                  "summary": change.describe(), "needs_restart": change.needs_restart}
        try:
            resolved = self._resolve_new(new, [*change.added, *change.changed])
        except MaskwatchError as exc:
            report |= {"error": str(exc), "summary": "refused; the running cameras are unchanged"}
            logger.error("config change refused, the running cameras are unchanged: %s", exc)
            return self._report(report)
        for camera_id in change.removed:
            self.remove_camera(camera_id)
        for c in change.changed:
            self._restart_camera(resolved[c.camera_id])
        added = {c.camera_id: self._place(resolved[c.camera_id]).index for c in change.added}
        self.cfg = self.cfg.model_copy(update={"cameras": new.cameras})
        self.declared = declared.model_copy(update={"cameras": new.cameras})
        self._retire_empty()
        report |= {"added": added, "removed": change.removed, "changed": [c.camera_id for c in change.changed],
                   "applied_s": round(time.monotonic() - t0, 3)}
        logger.warning("config changed: %s", change.describe())
        return self._report(report)

    def _report(self, report: dict[str, Any]) -> dict[str, Any]:
        if self.registry is not None:
            self.registry.add_report.remote(report)
        return report

    def _resolve_new(self, new: Config, cams: list[CameraConfig]) -> dict[str, CameraSpec]:
        """Specs of cameras to (re)start, with the running capture settings; a live camera that does not answer
        is started anyway and retried (``capture.wait_for_unreachable``), a missing file is refused."""
        capture = self.cfg.capture.model_copy(update={"wait_for_unreachable": True})
        cfg = self.cfg.model_copy(update={"cameras": new.cameras, "capture": capture})
        out = {}
        for c in cams:
            try:
                out[c.camera_id] = resolve_camera(cfg, c)
            except SourceError as exc:
                index = [x.camera_id for x in new.cameras].index(c.camera_id)
                msg = f"cameras[{index}].source: {exc}"
                raise ConfigError(msg) from None
        return out

    def remove_camera(self, camera_id: str) -> None:
        """Stop one camera for good: open tracks decided, final record with ``camera_state`` ``removed``."""
        where = self._where(camera_id)
        if where is None:
            return
        pipeline, slot = where
        if slot is None:  # still waiting for its node
            pipeline.waiting = [s for s in pipeline.waiting if s.camera_id != camera_id]
        else:
            summary = ray.get(slot.handle.stop_camera.remote(camera_id, removed=True), timeout=CAMERA_CALL_TIMEOUT_S)
            self.summaries.append(summary | {"removed": True})
            del slot.specs[camera_id]
        self._publish()

    def _restart_camera(self, spec: CameraSpec) -> None:
        where = self._where(spec.camera_id)
        assert where is not None, spec.camera_id  # a changed camera is a running one
        pipeline, slot = where
        if slot is None:
            pipeline.waiting = [spec if s.camera_id == spec.camera_id else s for s in pipeline.waiting]
            return
        slot.specs[spec.camera_id] = spec
        ray.get(slot.handle.restart_camera.remote(spec), timeout=CAMERA_CALL_TIMEOUT_S)

    def _retire_empty(self) -> None:
        """A pipeline left without cameras stops (its bundle goes once its shards returned); one always stays."""
        for p in self.pipelines:
            if not p.retiring and not p.camera_ids() and sum(not q.retiring for q in self.pipelines) > 1:
                p.retiring = True
                for s in p.shards:
                    s.handle.stop.remote()
                logger.warning("node pipeline %d has no camera left: it stops and gives its node back", p.index)

    # -- supervision -------------------------------------------------------------------------------------------------

    def supervise(self, stopping: Any, grace_s: float, watcher: Any = None) -> list[dict[str, Any]]:
        """Run until every camera has ended (or ``stopping`` is set); returns the cameras' summaries.

        A shard whose process died (``RayActorError``: killed, out of memory, its node lost) is restarted by Ray
        (``max_restarts``) in its pipeline's bundle, rescheduled with its actors on another node when its node is
        gone; its cameras are started again with ``run(restore=True)`` and continue from their last statistics
        record. When ``stopping`` is set (SIGTERM / SIGINT), every shard is asked to stop; the wait is bounded by
        three quarters of ``grace_s`` (the rest is the sink's flush). ``watcher`` (a
        :class:`pipeline.config_watch.ConfigWatcher`) brings changes of the config file, applied with
        :meth:`reconcile`.
        """
        while self._running_shards() or self._waiting():
            if stopping.is_set() and not self._stop_sent:
                self.stop_all()
            if watcher is not None and not self._stop_sent:
                self._apply_updates(watcher)
            self._activate_placed(wait_s=0.0)
            self._collect(timeout_s=0.25)
            if not self._stop_sent:
                self._stop_when_all_ended()
            if self._stop_sent and time.monotonic() - stopping.at > 0.75 * grace_s and stopping.is_set():
                logger.error("%d camera shard(s) did not stop within %.0f s; their open tracks are lost",
                             len(self._running_shards()), 0.75 * grace_s)
                break
        return self.summaries

    def _apply_updates(self, watcher: Any) -> None:
        for update in watcher.updates():
            if update.error is not None:
                logger.error("config change refused, the running cameras are unchanged: %s", update.error)
                self._report({"sha256": update.sha256, "at_ns": time.time_ns(), "error": update.error,
                              "summary": "refused; the running cameras are unchanged", "needs_restart": []})
            else:
                self.reconcile(update.config, update.sha256)

    def _running_shards(self) -> list[tuple[NodePipeline, ShardSlot]]:
        return [(p, s) for p in self.pipelines for s in p.shards if s.run is not None]

    def _waiting(self) -> bool:
        return not self._stop_sent and any(p.waiting for p in self.pipelines)

    def _collect(self, timeout_s: float) -> None:
        """Shards whose run() returned: their summaries; a dead shard's run() is called again with restore."""
        running = {s.run: (p, s) for p, s in self._running_shards()}
        if not running:
            time.sleep(timeout_s)
            return
        ready, _ = ray.wait(list(running), num_returns=len(running), timeout=timeout_s)
        for ref in ready:
            pipeline, slot = running[ref]
            slot.run = None
            try:
                self.summaries += [s for s in ray.get(ref) if s["camera_id"] in slot.specs]
            except ray.exceptions.RayActorError as exc:
                if self._stop_sent or pipeline.retiring:
                    logger.error("a camera shard of pipeline %d died while stopping (%s); its open tracks are lost",
                                 pipeline.index, type(exc).__name__)
                    continue
                self._log_died(pipeline, slot, exc)
                self._run(pipeline, slot, restore=True)
        for p in [p for p in self.pipelines if p.retiring and all(s.run is None for s in p.shards)]:
            p.remove()
            self.pipelines.remove(p)
            self._publish()

    def _log_died(self, pipeline: NodePipeline, slot: ShardSlot, exc: Exception) -> None:
        key, now = id(slot), time.monotonic()
        if isinstance(exc, ray.exceptions.ActorUnavailableError) and now - self._logged_died.get(key, -1e9) < 30:
            logger.debug("camera shard of %s still unavailable; calling run() again", sorted(slot.specs))
            return
        # once per outage (a restarting actor answers "unavailable" until it is back), then every 30 s
        logger.error("camera shard of %s (pipeline %d) died (%s); Ray restarts it and its cameras continue from "
                     "their last statistics", sorted(slot.specs), pipeline.index, type(exc).__name__)
        self._logged_died[key] = now

    def _stop_when_all_ended(self) -> None:
        """Every camera of every shard has ended (files at their end) and none waits: stop the shards."""
        now = time.monotonic()
        if now - self._last_ended_check < ENDED_CHECK_S or self._waiting():
            return
        self._last_ended_check = now
        running = self._running_shards()
        try:
            rows = ray.get([s.handle.cameras.remote() for _, s in running], timeout=10)
        except (ray.exceptions.RayError, TimeoutError):
            return  # a shard is restarting: ask again later
        states = {r["camera_id"]: r["camera_state"] for shard in rows for r in shard}
        expected = [cid for _, s in running for cid in s.specs]  # a shard lists a camera once its run() started it
        if all(states.get(cid) == "stopped" for cid in expected):
            for _, s in running:
                s.handle.stop.remote()
            self._stop_sent = True

    def stop_all(self) -> None:
        """Stop every shard (open tracks decided, final statistics published)."""
        for p in self.pipelines:
            p.waiting = []
            for s in p.shards:
                s.handle.stop.remote()
        self._stop_sent = True

    def pools(self) -> dict[str, list[dict[str, Any]]]:
        """``info()`` of every pose and classify actor."""
        return {"pose": ray.get([a.info.remote() for p in self.pipelines for a in p.pose]),
                "classify": ray.get([a.info.remote() for p in self.pipelines for a in p.classify])}

    def kill(self) -> None:
        """Kill every actor and give back every bundle."""
        for p in self.pipelines:
            p.remove()
        for handle in (self.sink, self.registry):
            if handle is not None:
                ray.kill(handle)


def registry_handle(namespace: str) -> ActorHandle:
    """The registry of the fleet running in ``namespace`` (Ray must be initialised).

    Raises:
        MaskwatchError: If no fleet runs there.
    """
    try:
        return ray.get_actor(REGISTRY_NAME, namespace=namespace)
    except ValueError:
        msg = f"no running maskwatch fleet in Ray namespace {namespace!r} (no actor {REGISTRY_NAME!r})"
        raise MaskwatchError(msg) from None
