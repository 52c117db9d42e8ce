"""Creates and wires the actors: one sink, and node pipelines (camera shards with their own pose and classify
actors, placed together on one node).

A node pipeline is one placement group of one bundle that holds its pose and classify actors and up to
``fleet.cameras_per_node`` cameras' shards (``capture.cameras_per_actor`` cameras a shard). A bundle is never split
over nodes, so a shard's frames go to a pose actor in its own node's object store and never over the network
(DeepStream and Savant decode and infer on one node for the same reason). Ray reschedules the bundle, with its
actors, on another node when its node is lost. Within a pipeline each camera calls the pose and classify actor that
its shard's other cameras use least.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from actors.camera import CameraShardActor
from actors.classify import ClassifyActor
from actors.pose import PoseActor
from actors.sink import SinkActor
from pipeline.camera_loop import CameraSpec
from pipeline.config import Config

SHARD_CPUS = 0.5  # Ray CPUs a camera shard asks for (decoding, tracking and voting of its cameras)


def shards_per_pipeline(cfg: Config) -> int:
    return math.ceil(cfg.fleet.cameras_per_node / cfg.capture.cameras_per_actor)


def pipeline_bundle(cfg: Config) -> dict[str, float]:
    """The resources of one node pipeline: its pose and classify actors and its shards (``capture.ray_resources``
    per shard). Ray places the bundle whole on one node; one that no node holds is resource demand."""
    shards = shards_per_pipeline(cfg)
    bundle = {
        "CPU": cfg.pose.num_cpus * cfg.pose.num_actors + cfg.classify.num_cpus * cfg.classify.num_actors
        + SHARD_CPUS * shards,
        "GPU": cfg.pose.num_gpus * cfg.pose.num_actors + cfg.classify.num_gpus * cfg.classify.num_actors,
    }
    for name, amount in cfg.capture.ray_resources.items():
        bundle[name] = bundle.get(name, 0.0) + amount * shards
    return {k: v for k, v in bundle.items() if v > 0}


@dataclass
class ShardSlot:
    """A camera shard of a pipeline: its handle, the cameras it runs now, and its ``run()`` call in flight."""

    handle: ActorHandle
    specs: dict[str, CameraSpec] = field(default_factory=dict)
    run: Any = None  # ray.ObjectRef of run() while it runs


@dataclass
class NodePipeline:
    """One node's pose and classify actors and camera shards, held together by one placement-group bundle.

    Attributes:
        index: The pipeline's number in its fleet (stable while it lives).
        group: Its placement group (one bundle: :func:`pipeline_bundle`).
        pose, classify: Its model actors (empty until :meth:`populate`).
        shards: Its camera shards.
        waiting: Cameras given to it before its bundle was placed (they start once it is).
        retiring: It is stopping (no camera left); its actors and bundle go once its shards returned.
    """

    index: int
    group: PlacementGroup
    pose: list[ActorHandle] = field(default_factory=list)
    classify: list[ActorHandle] = field(default_factory=list)
    shards: list[ShardSlot] = field(default_factory=list)
    waiting: list[CameraSpec] = field(default_factory=list)
    retiring: bool = False
    target_node: str | None = None  # the node it was asked for (a hint; :meth:`node` says where it is)

    @classmethod
    def create(cls, cfg: Config, index: int, target_node: str | None = None) -> NodePipeline:
        """Ask Ray for the pipeline's bundle (asynchronous: :meth:`placed` says when it is there), on
        ``target_node`` if it still has room (a soft hint; None: wherever Ray finds room, or a new node)."""
        group = placement_group([pipeline_bundle(cfg)], strategy="STRICT_PACK", name=f"maskwatch-pipeline-{index}",
                                _soft_target_node_id=target_node)
        return cls(index, group, target_node=target_node)

    def node(self) -> str | None:
        """The node holding its bundle now; before it is placed, the node it was asked for."""
        placed = ray.util.placement_group_table(self.group).get("bundles_to_node_id", {})
        return next(iter(placed.values()), None) or self.target_node

    @classmethod
    def build(cls, cfg: Config, pose_model_path: str, index: int = 0, timeout_s: float = 60.0) -> NodePipeline:
        """:meth:`create`, wait until placed, :meth:`populate` (a pipeline to add shards to at once).

        Raises:
            TimeoutError: If no node holds the bundle within ``timeout_s``.
        """
        pipeline = cls.create(cfg, index)
        if not pipeline.placed(timeout_s):
            remove_placement_group(pipeline.group)
            msg = f"no node holds the pipeline bundle {pipeline_bundle(cfg)} after {timeout_s:g} s"
            raise TimeoutError(msg)
        pipeline.populate(cfg, pose_model_path)
        return pipeline

    def placed(self, timeout_s: float = 0.0) -> bool:
        return bool(self.group.wait(timeout_s))

    def _in_bundle(self) -> PlacementGroupSchedulingStrategy:
        return PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=0)

    def populate(self, cfg: Config, pose_model_path: str) -> None:
        """Start the pipeline's pose and classify actors in its bundle."""
        self.pose = [PoseActor.options(num_cpus=cfg.pose.num_cpus, num_gpus=cfg.pose.num_gpus,
                                       scheduling_strategy=self._in_bundle()).remote(cfg.pose, pose_model_path)
                     for _ in range(cfg.pose.num_actors)]
        self.classify = [ClassifyActor.options(num_cpus=cfg.classify.num_cpus, num_gpus=cfg.classify.num_gpus,
                                               scheduling_strategy=self._in_bundle()).remote(cfg.classify, cfg.faces)
                         for _ in range(cfg.classify.num_actors)]

    def add_shard(self, cfg: Config, specs: list[CameraSpec], crop_margin: float, input_px: int) -> ShardSlot:
        """A new camera shard in the bundle for ``specs`` (its ``run()`` is the caller's to start)."""
        resources = dict(cfg.capture.ray_resources)
        handle = CameraShardActor.options(num_cpus=SHARD_CPUS, resources=resources,
                                          scheduling_strategy=self._in_bundle()).remote(
            cfg, specs, crop_margin, input_px)
        slot = ShardSlot(handle, {s.camera_id: s for s in specs})
        self.shards.append(slot)
        return slot

    def camera_ids(self) -> list[str]:
        return [cid for s in self.shards for cid in s.specs] + [s.camera_id for s in self.waiting]

    def handles(self) -> list[ActorHandle]:
        return [*(s.handle for s in self.shards), *self.pose, *self.classify]

    def remove(self) -> None:
        """Kill its actors and give its bundle back (the autoscaler may then let the node go)."""
        for handle in self.handles():
            ray.kill(handle)
        remove_placement_group(self.group)


def make_sink(cfg: Config, out_path: str | None) -> ActorHandle:
    """The one sink of a run (Kafka, or the JSON Lines file ``out_path``), on the head node (:func:`on_head`)."""
    return SinkActor.options(num_cpus=0, scheduling_strategy=on_head()).remote(cfg.kafka, out_path)


def on_head() -> NodeAffinitySchedulingStrategy | None:
    """Place a 0-CPU actor on the head node where it is alive (soft: elsewhere if not), for the sink and the fleet's
    registry. Every camera writes to the sink: on a worker node that is lost, it restarts elsewhere, and the camera
    shards that outlive the loss were seen not to learn of the restart for minutes (Ray's actor notifications; 2 of
    5 runs of tests/test_multinode.py), their writes queued meanwhile. The head runs the driver: when it is lost,
    the run is lost anyway."""
    head = next((n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"]), None)
    return NodeAffinitySchedulingStrategy(head, soft=True) if head else None
