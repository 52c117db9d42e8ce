"""The classify pool: the mask classifier (ONNX Runtime) and the face gate (YuNet) on head crops, batched across
cameras."""

from __future__ import annotations

import asyncio

import cv2
import numpy as np
import numpy.typing as npt
import ray

from actors._metrics import ModelCallMetrics
from pipeline.batching import MicroBatcher
from pipeline.config import ClassifyConfig
from pipeline.facegate import SCORE_COLUMNS, CropScorer, load_face_gate
from pipeline.headbox import FaceRules
from pipeline.onnx_models import MaskClassifier


# Months of operation: always restarted (max_restarts=-1). A model call is idempotent, so a call in flight when the
# process dies is retried on the restarted actor (max_task_retries) and the camera that made it goes on.
# enable_task_events=False: one call per frame with faces (see PoseActor).
@ray.remote(max_restarts=-1, max_task_retries=2, enable_task_events=False)
class ClassifyActor:
    """Scores `(K, S, S, 3)` uint8 RGB crops; requests of many cameras are concatenated into one model call."""

    def __init__(self, cfg: ClassifyConfig, faces: FaceRules) -> None:
        # The face gate runs in OpenCV's DNN module, whose thread pool takes every core by default: it gets the
        # classifier's thread count. threads 0 leaves OpenCV's default (cv2.setNumThreads(0) would mean none).
        if cfg.session_threads > 0:
            cv2.setNumThreads(cfg.session_threads)
        self._model = MaskClassifier(cfg.model_path, cfg.device, cfg.session_threads, cfg.precision)
        gate = load_face_gate(faces.gate_model_path, faces.gate_input_px) if faces.gate_model_path else None
        self._scorer = CropScorer(self._model, gate)
        self._batcher: MicroBatcher[npt.NDArray[np.uint8], npt.NDArray[np.float32]] = MicroBatcher(
            self._run_batch, cfg.max_batch_size, cfg.batch_wait_s
        )
        self._metrics = ModelCallMetrics("classify")
        self._metrics.ready()

    async def _run_batch(self, requests: list[npt.NDArray[np.uint8]]) -> list[npt.NDArray[np.float32]]:
        n = sum(len(r) for r in requests)
        scores = await self._metrics.timed(n, lambda: asyncio.to_thread(self._scorer.score, np.concatenate(requests)))
        bounds = np.cumsum([len(r) for r in requests])[:-1]
        return np.split(scores, bounds)

    async def predict(self, crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """`(K, 3)` float32 mask, face and usable-face scores for one frame's crops (:meth:`CropScorer.score`)."""
        if len(crops) == 0:
            return np.zeros((0, SCORE_COLUMNS), np.float32)
        return await self._batcher.submit(crops, key=crops.shape[1:])  # one batch never mixes crop sizes

    async def predict_many(self, crops: list[npt.NDArray[np.uint8]]) -> list[npt.NDArray[np.float32] | Exception]:
        """:meth:`predict` for several frames' crops sent in one call (a camera shard's frames of one moment): one
        Ray call and one object for all of them; the model batches them with every other caller's as usual. A frame
        that fails gives its exception in its place, so that only its camera sees it."""
        return list(await asyncio.gather(*(self.predict(c) for c in crops), return_exceptions=True))

    def node_id(self) -> str:
        """Ray's id (hex) of the node this actor runs on (a camera shard's first call: the actor answers)."""
        return ray.get_runtime_context().get_node_id()

    def info(self) -> dict[str, object]:
        """Provider, input size, crop margin, recent batch sizes and the model-call totals (face gate included)."""
        return {
            **self._metrics.totals(),
            "provider": self._model.provider,
            "input_px": self._model.input_px,
            "crop_margin": self._model.crop_margin,
            "face_gate": str(self._scorer.gate.path) if self._scorer.gate else None,
            "batch_sizes": list(self._batcher.batch_sizes),
        }
