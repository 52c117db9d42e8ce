"""The pose pool: batched YOLO-pose inference across cameras on ONNX Runtime (CUDA when it attaches)."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import ray

from actors._metrics import ModelCallMetrics
from pipeline.batching import MicroBatcher
from pipeline.config import PoseConfig
from pipeline.letterbox import Letterbox
from pipeline.onnx_models import PoseModel
from pipeline.pose_postprocess import decode_poses

logger = logging.getLogger(__name__)


# Months of operation: always restarted (max_restarts=-1). A model call is idempotent, so a call in flight when the
# process dies is retried on the restarted actor (max_task_retries) and the camera that made it goes on.
# enable_task_events=False: one call per frame per camera; Ray's GCS would keep an event record of each (it grew
# 3.2 MB a minute with 4 cameras, bench/RESULTS.md), as Ray Serve turns them off for its replicas.
@ray.remote(max_restarts=-1, max_task_retries=2, enable_task_events=False)
class PoseActor:
    """Runs the pose model on letterboxed frames from many cameras, batching those of the same input shape."""

    def __init__(self, cfg: PoseConfig, model_path: str) -> None:
        self._cfg = cfg
        self._model = PoseModel(model_path, cfg.device, cfg.session_threads, cfg.precision)
        self._batcher: MicroBatcher[npt.NDArray[np.uint8], npt.NDArray[np.float32]] = MicroBatcher(
            self._run_batch, cfg.max_batch_size, cfg.batch_wait_s
        )
        self._metrics = ModelCallMetrics("pose")
        self._metrics.ready()

    async def _run_batch(self, images: list[npt.NDArray[np.uint8]]) -> list[npt.NDArray[np.float32]]:
        raw = await self._metrics.timed(len(images), lambda: asyncio.to_thread(self._model.infer, np.stack(images)))
        return list(raw)

    async def infer(
        self, image: npt.NDArray[np.uint8], lb: Letterbox, camera_id: str, frame_idx: int, pts_ns: int
    ) -> pa.RecordBatch:
        """People in one letterboxed `(h, w, 3)` uint8 BGR frame, as a ``POSE_SCHEMA`` batch in original pixels."""
        raw = await self._batcher.submit(image, key=image.shape)
        poses = decode_poses(raw, lb, camera_id, frame_idx, pts_ns, self._cfg.conf_threshold, self._cfg.nms_iou,
                             self._cfg.oks_nms, self._cfg.min_keypoints, self._cfg.head_or_torso)
        return poses.to_arrow()

    async def infer_many(
        self, images: list[npt.NDArray[np.uint8]], lbs: list[Letterbox], camera_ids: list[str],
        frame_idxs: list[int], pts_ns: list[int],
    ) -> list[pa.RecordBatch | Exception]:
        """:meth:`infer` for several frames sent in one call (a camera shard's frames of one moment): one Ray call
        and one object for all of them; the model batches them with every other caller's frames as usual. A frame
        that fails gives its exception in its place, so that only its camera sees it."""
        return list(await asyncio.gather(*(self.infer(*args) for args in zip(images, lbs, camera_ids, frame_idxs,
                                                                               pts_ns, strict=True)),
                                         return_exceptions=True))

    def node_id(self) -> str:
        """Ray's id (hex) of the node this actor runs on: camera shards count the frames they send across nodes."""
        return ray.get_runtime_context().get_node_id()

    def info(self) -> dict[str, object]:
        """Provider in use, what ``device: auto`` measured, recent batch sizes, and the model-call totals
        (:meth:`ModelCallMetrics.totals`)."""
        choice = self._model.choice
        return {"provider": self._model.provider, "batch_sizes": list(self._batcher.batch_sizes),
                "runtime_ms_per_call": choice.ms_per_call if choice else None, **self._metrics.totals()}
