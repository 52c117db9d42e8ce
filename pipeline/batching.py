"""An asyncio micro-batcher: many concurrent single-item calls become one batched call.

Follows the contract of Ray Serve's ``@serve.batch`` (https://docs.ray.io/en/latest/serve/advanced-guides/dyn-req-batch.html):
a batch runs when ``max_batch_size`` items wait or ``batch_wait_s`` passed since the oldest one arrived; at most
``max_concurrent_batches`` run at once (items keep accumulating meanwhile, so a busy model gets bigger batches);
the batched function returns one output per input, in order (checked); an exception fails every caller of that
batch. Items are grouped by a key (e.g. the pose model's input shape) so one batch never mixes shapes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class MicroBatcher(Generic[In, Out]):
    """Collects items per key and runs ``fn`` on batches of them.

    Args:
        fn: Async function from a list of inputs (same key) to a sequence of as many outputs.
        max_batch_size: Largest batch.
        batch_wait_s: Longest time the oldest waiting item waits for the batch to fill.
        max_concurrent_batches: Batches running at once (1 for one model on one device).

    Raises:
        ValueError: If a limit is out of range.
    """

    def __init__(
        self,
        fn: Callable[[list[In]], Awaitable[Sequence[Out]]],
        max_batch_size: int,
        batch_wait_s: float,
        max_concurrent_batches: int = 1,
    ) -> None:
        if max_batch_size < 1 or batch_wait_s < 0 or max_concurrent_batches < 1:
            msg = (
                "need max_batch_size >= 1, batch_wait_s >= 0, max_concurrent_batches >= 1, got "
                f"{max_batch_size}, {batch_wait_s}, {max_concurrent_batches}"
            )
            raise ValueError(msg)
        self._fn = fn
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self._slots = asyncio.Semaphore(max_concurrent_batches)
        self._pending: dict[Hashable, list[tuple[float, In, asyncio.Future[Out]]]] = {}
        self._full: dict[Hashable, asyncio.Event] = {}
        self._workers: dict[Hashable, asyncio.Task[None]] = {}
        self.batch_sizes: list[int] = []  # the last 1000, for metrics and tests

    async def submit(self, item: In, key: Hashable = None) -> Out:
        """Queue one item and wait for its output (or the batch's exception)."""
        fut: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        queue = self._pending.setdefault(key, [])
        queue.append((time.monotonic(), item, fut))
        if len(queue) >= self.max_batch_size and key in self._full:
            self._full[key].set()
        if key not in self._workers:
            self._workers[key] = asyncio.get_running_loop().create_task(self._worker(key))
        return await fut

    async def _worker(self, key: Hashable) -> None:
        try:
            while queue := self._pending.get(key):
                wait = queue[0][0] + self.batch_wait_s - time.monotonic()
                if len(queue) < self.max_batch_size and wait > 0:
                    event = self._full[key] = asyncio.Event()
                    try:
                        await asyncio.wait_for(event.wait(), wait)
                    except TimeoutError:
                        pass
                    finally:
                        self._full.pop(key, None)
                async with self._slots:
                    batch = queue[: self.max_batch_size]
                    del queue[: len(batch)]
                    await self._run(batch)
        finally:
            self._workers.pop(key, None)
            if not self._pending.get(key):
                self._pending.pop(key, None)

    async def _run(self, batch: list[tuple[float, In, asyncio.Future[Out]]]) -> None:
        items = [b[1] for b in batch]
        self.batch_sizes.append(len(items))
        del self.batch_sizes[:-1000]
        try:
            outputs = await self._fn(items)
            if len(outputs) != len(items):
                msg = f"batched function returned {len(outputs)} outputs for {len(items)} inputs"
                raise ValueError(msg)
        except Exception as exc:  # every caller of the batch gets the error
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, _, fut), out in zip(batch, outputs, strict=True):
            if not fut.done():
                fut.set_result(out)
