"""Metrics shared by the model pools (Ray's metrics API, exported by Ray's Prometheus endpoint)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ray.util.metrics import Histogram

T = TypeVar("T")


class ModelCallMetrics:
    """``maskwatch_<stage>_batch_size`` (items per model call) and ``maskwatch_<stage>_latency_s`` histograms."""

    def __init__(self, stage: str) -> None:
        self._batch_size = Histogram(
            f"maskwatch_{stage}_batch_size", "Items per model call", boundaries=[1, 2, 4, 8, 16, 32, 64, 128]
        )
        self._latency = Histogram(
            f"maskwatch_{stage}_latency_s", "Model call time", boundaries=[0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1]
        )

    async def timed(self, items: int, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()`` and record its time and batch size."""
        t0 = time.perf_counter()
        out = await call()
        self._latency.observe(time.perf_counter() - t0)
        self._batch_size.observe(items)
        return out
