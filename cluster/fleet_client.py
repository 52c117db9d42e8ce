"""What ``maskwatch cameras`` asks a running fleet, through its registry actor (:mod:`actors.fleet`).

Ray is imported only once the token mode is set (:func:`cluster.driver._token_auth_mode`), as in the driver.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from pipeline import paths
from pipeline.config import Config
from schemas.errors import MaskwatchError


@dataclass
class FleetClient:
    """A connection to the fleet running in the config's Ray namespace."""

    registry: Any

    @classmethod
    def connect(cls, cfg: Config, address: str | None = None) -> FleetClient | None:
        """Join the fleet's Ray cluster (``address``, else ``ray.address``, else the local Ray that a ``maskwatch
        run`` of this machine wrote in :func:`pipeline.paths.local_fleet_file`); None when no fleet runs in
        ``ray.namespace``."""
        from cluster import driver

        address = address or cfg.ray.address or _local_address(cfg.ray.namespace)
        if address is None:
            return None
        ray_cfg = cfg.ray.model_copy(update={"address": address})
        cfg = cfg.model_copy(update={"ray": ray_cfg})
        driver._token_auth_mode(cfg)
        import ray

        from cluster.fleet import registry_handle

        try:
            driver.init_ray(cfg, 0)
            return cls(registry_handle(cfg.ray.namespace))
        except MaskwatchError:
            if ray.is_initialized():
                ray.shutdown()
            return None

    def cameras(self) -> list[dict[str, Any]]:
        """:meth:`actors.fleet.FleetRegistryActor.cameras`."""
        import ray

        return ray.get(self.registry.cameras.remote(), timeout=60)

    def wait_for_report(self, sha256: str | None, timeout_s: float) -> dict[str, Any] | None:
        """The fleet's report of the config content ``sha256`` once it has applied (or refused) it; None if it has
        not within ``timeout_s``."""
        import ray

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            mine = [r for r in ray.get(self.registry.reports.remote(), timeout=30) if r["sha256"] == sha256]
            if mine:
                return mine[-1]
            time.sleep(0.2)
        return None


def _local_address(namespace: str) -> str | None:
    """The address of the local Ray of the ``maskwatch run`` in ``namespace`` on this machine, if it still runs."""
    path = paths.local_fleet_file(namespace)
    try:
        info = json.loads(path.read_text())
        os.kill(info["pid"], 0)  # raises if that run has gone
    except (OSError, ValueError, KeyError):
        return None
    return info["address"]
