"""The driver: validate inputs, start (or join) Ray, build the topology, run every camera, flush the sink.

User errors (a missing file, a dead camera URL, an unknown config key, an unreachable broker, a model that does not
match) are found here, before any actor starts, and raised as one-line :class:`~schemas.errors.MaskwatchError`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.config import Config, default_pose_input_px, model_dir
from pipeline.camera_loop import CameraSpec
from pipeline.facegate import load_face_gate
from pipeline.onnx_models import MaskClassifier, PoseModel
from pipeline.sinks import ensure_topics
from pipeline.source import is_live, probe
from schemas.errors import ConfigError, SourceError

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run did."""

    cameras: list[dict[str, Any]]
    records: int
    wall_s: float
    pose_provider: str
    classify_provider: str


def resolve_cameras(
    cfg: Config, annotate: dict[str, str] | None = None, tracks: dict[str, str] | None = None
) -> list[CameraSpec]:
    """Open each camera once (resolution, reachability) and fix its pose input size.

    Raises:
        ConfigError: If there is no camera, or ``annotate`` / ``tracks`` names an unknown camera.
        SourceError: If a source is missing or unreachable.
    """
    if not cfg.cameras:
        msg = "no camera configured: pass --source PATH_OR_URL or list cameras in the config file"
        raise ConfigError(msg)
    annotate, tracks = annotate or {}, tracks or {}
    for what, paths in (("--annotate", annotate), ("--tracks-out", tracks)):
        unknown = set(paths) - {c.camera_id for c in cfg.cameras}
        if unknown:
            msg = f"{what} names unknown camera(s) {sorted(unknown)}"
            raise ConfigError(msg)
    for path in tracks.values():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    specs = []
    for c in cfg.cameras:
        wh: tuple[int, int] | None = None
        try:
            w, h, _ = probe(c.source, c.camera_id, cfg.capture.open_timeout_s)
            wh = (w, h)
        except SourceError as exc:
            if not (cfg.capture.wait_for_unreachable and is_live(c.source)):
                raise
            logger.warning("%s; its shard will keep retrying (capture.wait_for_unreachable)", exc)
        specs.append(
            CameraSpec(
                camera_id=c.camera_id,
                # A file path is resolved here: on a cluster the shard's working directory is not the driver's.
                source=c.source if "://" in c.source or is_live(c.source) else str(Path(c.source).resolve()),
                frame_wh=wh,
                pose_input_px=c.pose_input_px or (default_pose_input_px(wh) if wh else None),
                target_fps=c.target_fps,
                queue_frames=cfg.capture.queue_frames,
                open_timeout_s=cfg.capture.open_timeout_s,
                max_reconnects=cfg.capture.max_reconnects,
                reconnect_backoff_s=cfg.capture.reconnect_backoff_s,
                max_backoff_s=cfg.capture.max_backoff_s,
                annotate_path=annotate.get(c.camera_id),
                tracks_path=tracks.get(c.camera_id),
                wait_for_source=cfg.capture.wait_for_unreachable,
                camera_motion=c.camera_motion,
            )
        )
    return specs


def pose_model_path(cfg: Config) -> Path:
    """The configured pose model, or the one ``maskwatch models build`` made."""
    return Path(cfg.pose.model_path) if cfg.pose.model_path else model_dir() / "yolo11n-pose.onnx"


def init_ray(cfg: Config, num_cpus: float) -> None:
    """Join ``ray.address``, or start a local Ray on 127.0.0.1 (usage stats off, no dashboard)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, namespace=cfg.ray.namespace, logging_level=logging.WARNING)
    else:
        ray.init(
            address="local",
            _node_ip_address="127.0.0.1",
            num_cpus=max(os.cpu_count() or 1, math.ceil(num_cpus)),
            include_dashboard=False,
            namespace=cfg.ray.namespace,
            logging_level=logging.WARNING,
        )


def run(
    cfg: Config,
    out_path: str | None = None,
    annotate: dict[str, str] | None = None,
    tracks: dict[str, str] | None = None,
) -> RunResult:
    """Run every configured camera to the end of its source.

    Args:
        cfg: The validated configuration.
        out_path: JSON Lines output when ``kafka.bootstrap_servers`` is not set (None: standard output).
        annotate: camera_id -> path of an annotated video to write.
        tracks: camera_id -> path of a MOTChallenge person-tracks file to write (:mod:`pipeline.mot`).

    Raises:
        MaskwatchError: For user errors, before anything runs; ``SinkError`` if records were not delivered.
    """
    import ray

    from cluster.topology import build_topology

    t0 = time.monotonic()
    specs = resolve_cameras(cfg, annotate, tracks)
    pose_path = pose_model_path(cfg)
    PoseModel(pose_path, device="cpu")  # validates the file and its layout before any actor starts
    classifier = MaskClassifier(cfg.classify.model_path, device="cpu")
    if cfg.classify.face_detector_path is not None:  # validates the face gate's file before any actor starts
        load_face_gate(cfg.classify.face_detector_path, cfg.classify.face_detector_input_px)
    if cfg.stats.classifier_sensitivity is None and classifier.validation is not None:
        se, sp = classifier.validation.counts()
        stats = cfg.stats.model_copy(update={
            "classifier_sensitivity": se, "classifier_specificity": sp,
            "classifier_validation_source": classifier.validation.source,
        })
        cfg = cfg.model_copy(update={"stats": stats})
    if cfg.kafka.bootstrap_servers:
        ensure_topics(cfg.kafka)
    elif out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    shards = math.ceil(len(specs) / cfg.capture.cameras_per_actor)
    need = cfg.pose.num_cpus * cfg.pose.num_actors + cfg.classify.num_cpus * cfg.classify.num_actors + 0.5 * shards
    init_ray(cfg, need)
    topo = build_topology(cfg, specs, str(pose_path), classifier.crop_margin, classifier.input_px, out_path)
    try:
        summaries = [s for shard in ray.get([sh.run.remote() for sh in topo.shards]) for s in shard]
        records = ray.get(topo.sink.close.remote())
        pose_info = ray.get(topo.pose[0].info.remote())
        cls_info = ray.get(topo.classify[0].info.remote())
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if hasattr(exc, "cause") else None
        if cause is not None and type(cause).__module__.startswith("schemas"):
            raise cause from None
        raise
    finally:
        for handle in [*topo.shards, *topo.pose, *topo.classify, topo.sink]:
            ray.kill(handle)
    return RunResult(summaries, records, round(time.monotonic() - t0, 2), pose_info["provider"], cls_info["provider"])
