"""What the running fleet does when its config file changes, and where a camera goes: pure decisions, applied by
:class:`cluster.fleet.Fleet`.

Only the ``cameras`` list changes live: a camera added starts, one removed stops, one whose entry changed (source,
``target_fps``, ``pose_input_px``, ``camera_motion``, ``district``) restarts alone. Every other section is shared by
the fleet's actors (models, tracking, voting, Kafka); a change there is reported as needing a restart and not
applied, so that the running cameras keep one consistent set of settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import CameraConfig, Config

# Keys of the config that the watcher itself reads: a change there is not a camera setting and needs no restart.
LIVE_KEYS = frozenset({"cameras", "fleet.watch_config", "fleet.watch_poll_s"})


@dataclass(frozen=True)
class FleetChange:
    """The difference between the running config and a new one.

    Attributes:
        added: Cameras in the new config only, in its order.
        removed: ``camera_id`` of cameras in the running config only.
        changed: New entries of cameras whose entry differs (they restart alone).
        needs_restart: Dotted keys outside ``cameras`` whose value differs (``pose.threads``): not applied live.
    """

    added: list[CameraConfig] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[CameraConfig] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.needs_restart)

    def describe(self) -> str:
        """One line: ``added [c], removed [a], changed [b]; not applied until a restart: pose.threads``."""
        parts = [f"{what} {ids}" for what, ids in (
            ("added", [c.camera_id for c in self.added]), ("removed", self.removed),
            ("changed", [c.camera_id for c in self.changed])) if ids]
        line = ", ".join(parts) or "no camera changed"
        if self.needs_restart:
            line += f"; not applied until the run restarts: {', '.join(self.needs_restart)}"
        return line


def diff_config(running: Config, new: Config) -> FleetChange:
    """What changes from ``running`` to ``new`` (both validated)."""
    old = {c.camera_id: c for c in running.cameras}
    now = {c.camera_id: c for c in new.cameras}
    return FleetChange(
        added=[c for cid, c in now.items() if cid not in old],
        removed=[cid for cid in old if cid not in now],
        changed=[c for cid, c in now.items() if cid in old and old[cid] != c],
        needs_restart=[k for k in _changed_keys(running.model_dump(), new.model_dump()) if k not in LIVE_KEYS],
    )


def _changed_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings (``cameras`` compared whole)."""
    out = []
    for key in sorted(set(a) | set(b)):
        name = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping) and name != "cameras":
            out += _changed_keys(va, vb, f"{name}.")
        elif va != vb:
            out.append(name)
    return out


@dataclass(frozen=True)
class NodeRoom:
    """A node as the fleet sees it when it places a new pipeline.

    Attributes:
        node_id: Ray's hex node id.
        available: Ray's available resources on it now (``{"CPU": 2.0, "GPU": 1.0, ...}``).
        pipelines: The fleet's pipelines already there.
    """

    node_id: str
    available: Mapping[str, float]
    pipelines: int = 0


def pick_pipeline(free_slots: Mapping[int, int]) -> int | None:
    """The pipeline a new camera joins: the one with the most free camera slots (the lowest index among equals);
    None when every pipeline is full (a new pipeline is needed)."""
    best = max(free_slots.items(), key=lambda kv: (kv[1], -kv[0]), default=None)
    return best[0] if best is not None and best[1] > 0 else None


def pick_node(nodes: list[NodeRoom], bundle: Mapping[str, float]) -> str | None:
    """The node a new pipeline should go to: among nodes whose available resources hold ``bundle``, the one with
    the fewest of the fleet's pipelines, then the most free CPUs (cameras are balanced over nodes). None when no
    node holds it: the pipeline's bundle waits as resource demand (the autoscaler adds a node)."""
    fits = [n for n in nodes if all(n.available.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items())]
    best = min(fits, key=lambda n: (n.pipelines, -n.available.get("CPU", 0.0), n.node_id), default=None)
    return best.node_id if best is not None else None
