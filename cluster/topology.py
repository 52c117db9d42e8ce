"""Creates and wires the actors: one sink, the pose and classify pools, and camera shards.

Cameras are split into shards of ``capture.cameras_per_actor``; each shard calls the pose/classify actor chosen by
a stable hash of its camera_id, so load spreads over the pools while one camera always uses the same actors.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray.actor import ActorHandle

from actors.camera import CameraShardActor
from actors.classify import ClassifyActor
from actors.pose import PoseActor
from actors.sink import SinkActor
from pipeline.camera_loop import CameraSpec
from pipeline.config import Config


@dataclass
class Topology:
    """Handles of every actor of a run."""

    sink: ActorHandle
    pose: list[ActorHandle]
    classify: list[ActorHandle]
    shards: list[ActorHandle]


def build_topology(
    cfg: Config,
    specs: list[CameraSpec],
    pose_model_path: str,
    crop_margin: float,
    classifier_input_px: int,
    out_path: str | None,
) -> Topology:
    """Create the actors for these cameras (Ray must be initialised)."""
    placement = {"resources": dict(cfg.capture.ray_resources)} if cfg.capture.ray_resources else {}
    sink = SinkActor.options(num_cpus=0, **placement).remote(cfg.kafka, out_path)
    pose = [
        PoseActor.options(num_cpus=cfg.pose.num_cpus, num_gpus=cfg.pose.num_gpus).remote(cfg.pose, pose_model_path)
        for _ in range(cfg.pose.num_actors)
    ]
    classify = [
        ClassifyActor.options(num_cpus=cfg.classify.num_cpus, num_gpus=cfg.classify.num_gpus).remote(
            cfg.classify, cfg.faces)
        for _ in range(cfg.classify.num_actors)
    ]
    n = cfg.capture.cameras_per_actor
    shards = [
        CameraShardActor.options(num_cpus=0.5, **placement).remote(
            cfg, specs[i : i + n], crop_margin, classifier_input_px
        )
        for i in range(0, len(specs), n)
    ]
    return Topology(sink, pose, classify, shards)
