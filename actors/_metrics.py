"""Metrics shared by the model pools (Ray's metrics API, exported by Ray's Prometheus endpoint)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ray.util.metrics import Histogram

T = TypeVar("T")


class ModelCallMetrics:
    """``maskwatch_<stage>_batch_size`` (items per model call) and ``maskwatch_<stage>_latency_s`` histograms, and
    running totals for :meth:`totals`: calls, items, wall seconds and process CPU seconds spent in model calls."""

    def __init__(self, stage: str) -> None:
        self._batch_size = Histogram(
            f"maskwatch_{stage}_batch_size", "Items per model call", boundaries=[1, 2, 4, 8, 16, 32, 64, 128]
        )
        self._latency = Histogram(
            f"maskwatch_{stage}_latency_s", "Model call time", boundaries=[0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1]
        )
        self._calls = self._items = 0
        self._wall_s = self._cpu_s = 0.0
        self._ready_cpu_s = time.process_time()

    def ready(self) -> None:
        """Mark the end of the actor's start-up (model load, runtime choice): :meth:`totals` counts CPU from here."""
        self._ready_cpu_s = time.process_time()

    def totals(self) -> dict[str, float]:
        """``calls``, ``items``, ``model_wall_s``, ``model_cpu_s`` (the process's CPU during model calls: the calls'
        threads, and whatever else ran in the process meanwhile) and ``process_cpu_s`` (the whole process since
        :meth:`ready`)."""
        return {"calls": self._calls, "items": self._items, "model_wall_s": round(self._wall_s, 4),
                "model_cpu_s": round(self._cpu_s, 4),
                "process_cpu_s": round(time.process_time() - self._ready_cpu_s, 4)}

    async def timed(self, items: int, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()`` and record its time and batch size."""
        t0, c0 = time.perf_counter(), time.process_time()
        out = await call()
        wall = time.perf_counter() - t0
        self._cpu_s += time.process_time() - c0
        self._wall_s += wall
        self._calls += 1
        self._items += items
        self._latency.observe(wall)
        self._batch_size.observe(items)
        return out
