"""The fleet's registry: a named actor through which `maskwatch cameras` finds a running fleet's shards and learns
what the last change of its config file did."""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from ray.actor import ActorHandle

REGISTRY_NAME = "maskwatch-fleet"  # in the run's Ray namespace (config ray.namespace)
SHARD_CALL_TIMEOUT_S = 10.0


# num_cpus=0: it only answers questions. Lives as long as the driver that made it (not detached).
@ray.remote(num_cpus=0, max_restarts=-1, enable_task_events=False)
class FleetRegistryActor:
    """Kept up to date by the driver (:class:`cluster.fleet.Fleet`); read by ``maskwatch cameras``."""

    def __init__(self) -> None:
        self._shards: list[tuple[int, int, ActorHandle]] = []
        self._waiting: dict[str, int] = {}  # camera_id -> pipeline whose node is not there yet
        self._seq = -1
        self._reports: list[dict[str, Any]] = []

    def set_shards(self, seq: int, shards: list[tuple[int, int, ActorHandle]], waiting: dict[str, int]) -> None:
        """The fleet's shards as ``(pipeline, shard, handle)``, and the cameras waiting for their pipeline's node, as
        of the driver's update ``seq``. An async actor's calls may run out of order (Ray's actor task ordering), so an
        update older than the one kept is ignored."""
        if seq > self._seq:
            self._seq, self._shards, self._waiting = seq, shards, waiting

    def add_report(self, report: dict[str, Any]) -> None:
        """What a change of the config file did (:meth:`cluster.fleet.Fleet.reconcile`); the last 100 are kept."""
        self._reports = [*self._reports[-99:], report]

    def reports(self) -> list[dict[str, Any]]:
        return list(self._reports)

    async def cameras(self) -> list[dict[str, Any]]:
        """Every camera of the fleet: its shard's :meth:`~actors.camera.CameraShardActor.cameras` row with
        ``pipeline`` and ``shard``; a shard that does not answer within ``SHARD_CALL_TIMEOUT_S`` gives a row
        ``camera_state: unavailable`` per camera it is known to hold; waiting cameras have ``camera_state: pending``.
        """

        async def ask(pipeline: int, shard: int, handle: ActorHandle) -> list[dict[str, Any]]:
            try:
                rows = await asyncio.wait_for(handle.cameras.remote(), SHARD_CALL_TIMEOUT_S)
            except (TimeoutError, ray.exceptions.RayError):
                rows = [{"camera_id": "?", "camera_state": "unavailable"}]
            return [{"pipeline": pipeline, "shard": shard, **r} for r in rows]

        rows = [r for part in await asyncio.gather(*(ask(*s) for s in self._shards)) for r in part]
        rows += [{"pipeline": p, "shard": None, "camera_id": c, "node_id": None, "camera_state": "pending",
                  "frames_per_s": 0.0} for c, p in self._waiting.items()]
        return sorted(rows, key=lambda r: (r["camera_id"], r["pipeline"]))
