"""Camera shards: one actor hosts many cameras (capture, tracking, face rules, voting, windows for each).

Why capture, tracking and voting share a process: they hold per-camera state and need the full-resolution frame
(head crops are cut from it, DESIGN "two resolutions"), so keeping them together means a raw frame never leaves the
process that decoded it; only the small letterboxed pose input and the tiny crops travel to the GPU pools.
A process per camera would not reach hundreds of cameras (FINDINGS: ~100+ MB and seconds per actor).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

import numpy as np
import numpy.typing as npt
import ray
from ray.actor import ActorHandle
from ray.util.metrics import Gauge

from cluster.config import Config
from pipeline.camera import CameraPipeline
from pipeline.camera_loop import CameraSpec, run_camera
from pipeline.headbox import FaceRules
from pipeline.letterbox import Letterbox
from pipeline.sinks import Record
from pipeline.tracking import TrackerParams
from pipeline.voting import VotingRules
from schemas.pose import Poses

logger = logging.getLogger(__name__)


@ray.remote(max_restarts=0)
class CameraShardActor:
    """Runs the loop of each of its cameras concurrently (asyncio), calling the pose and classify pools."""

    def __init__(
        self,
        cfg: Config,
        specs: list[CameraSpec],
        pose_actors: list[ActorHandle],
        classify_actors: list[ActorHandle],
        sink: ActorHandle,
        crop_margin: float,
        classifier_input_px: int,
    ) -> None:
        self._cfg = cfg
        self._specs = specs
        self._pose = pose_actors
        self._classify = classify_actors
        self._sink = sink
        self._crop_margin = crop_margin
        self._input_px = classifier_input_px
        self._executor = ThreadPoolExecutor(max_workers=len(specs) + 2, thread_name_prefix="capture")
        tags = ("camera_id",)
        self._frames = Gauge("maskwatch_capture_frames_processed", "Frames processed since start", tag_keys=tags)
        self._dropped = Gauge("maskwatch_capture_frames_dropped", "Live frames dropped under backpressure",
                              tag_keys=tags)
        self._tracks = Gauge("maskwatch_tracking_live_tracks", "Tracks currently followed", tag_keys=tags)

    def _observe(self, cam: CameraPipeline) -> None:
        tags = {"camera_id": cam.camera_id}
        self._frames.set(cam.windows.frames_processed, tags)
        self._dropped.set(cam.windows.frames_dropped, tags)
        self._tracks.set(len(cam.ledger), tags)

    async def run(self) -> list[dict[str, Any]]:
        """Process every camera until its source ends; returns one summary dict per camera."""
        return [asdict(s) for s in await asyncio.gather(*(self._run_one(i, s) for i, s in enumerate(self._specs)))]

    async def _run_one(self, i: int, spec: CameraSpec) -> Any:
        cfg = self._cfg
        validation = cfg.stats.classifier_validation()

        def make_cam(frame_wh: tuple[int, int]) -> CameraPipeline:
            return CameraPipeline(
                spec.camera_id,
                frame_wh,
                self._crop_margin,
                TrackerParams(**(cfg.tracking.model_dump() | ({"camera_motion": spec.camera_motion}
                                                              if spec.camera_motion else {}))),
                FaceRules(**cfg.faces.model_dump()),
                VotingRules(**cfg.voting.model_dump()),
                cfg.stats.window_s,
                validation,
            )

        pose = self._pose[zlib.crc32(spec.camera_id.encode()) % len(self._pose)]
        classify = self._classify[zlib.crc32(spec.camera_id.encode()) % len(self._classify)]

        async def infer_pose(image: npt.NDArray[np.uint8], lb: Letterbox, cid: str, fidx: int, pts: int) -> Poses:
            batch = await pose.infer.remote(image, lb, cid, fidx, pts)
            return Poses.from_arrow(batch, cid, fidx, pts)

        async def predict(crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
            return await classify.predict.remote(crops)

        async def emit(records: list[Record]) -> None:
            if records:
                await self._sink.write.remote(records)

        topics = (cfg.kafka.decisions_topic, cfg.kafka.stats_topic)
        return await run_camera(
            spec, make_cam, self._input_px, infer_pose, predict, emit, topics, self._executor, self._observe
        )
