"""The classify pool: the mask classifier on head crops, batched across cameras on ONNX Runtime."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import numpy.typing as npt
import ray
from ray.util.metrics import Histogram

from cluster.config import ClassifyConfig
from pipeline.batching import MicroBatcher
from pipeline.onnx_models import MaskClassifier


@ray.remote(max_restarts=3)
class ClassifyActor:
    """Scores `(K, S, S, 3)` uint8 RGB crops; requests of many cameras are concatenated into one model call."""

    def __init__(self, cfg: ClassifyConfig) -> None:
        self._model = MaskClassifier(cfg.model_path, cfg.device, cfg.threads)
        self._batcher: MicroBatcher[npt.NDArray[np.uint8], npt.NDArray[np.float32]] = MicroBatcher(
            self._run_batch, cfg.max_batch_size, cfg.batch_wait_s
        )
        self._batch_size = Histogram(
            "maskwatch_classify_batch_size", "Items per model call", boundaries=[1, 2, 4, 8, 16, 32, 64, 128]
        )
        self._latency = Histogram(
            "maskwatch_classify_latency_s", "Model call time", boundaries=[0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1]
        )

    async def _run_batch(self, requests: list[npt.NDArray[np.uint8]]) -> list[npt.NDArray[np.float32]]:
        t0 = time.perf_counter()
        crops = np.concatenate(requests)
        scores = await asyncio.to_thread(self._model.predict, crops)
        self._latency.observe(time.perf_counter() - t0)
        self._batch_size.observe(len(crops))
        bounds = np.cumsum([len(r) for r in requests])[:-1]
        return np.split(scores, bounds)

    async def predict(self, crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """`(K,)` float32 mask scores for one frame's crops."""
        if len(crops) == 0:
            return np.zeros(0, np.float32)
        return await self._batcher.submit(crops)

    def info(self) -> dict[str, object]:
        """Provider, input size, crop margin and recent batch sizes."""
        return {
            "provider": self._model.provider,
            "input_px": self._model.input_px,
            "crop_margin": self._model.crop_margin,
            "batch_sizes": list(self._batcher.batch_sizes),
        }
