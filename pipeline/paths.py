"""Where maskwatch keeps its files: the shipped assets, the cache outside the clone, exported models, runtime caches.

Every path the project derives from the environment is defined here, once.
"""

from __future__ import annotations

import os
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "maskwatch" / "assets"
"""The models and settings shipped in the wheel (mask classifier, YuNet face detector, training recipe)."""

POSE_MODEL_NAME = "yolo11n-pose"


def cache_dir() -> Path:
    """``$MASKWATCH_CACHE_DIR``, or ``~/.cache/maskwatch``: export venvs, logs, runtime caches (outside the clone)."""
    env = os.environ.get("MASKWATCH_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "maskwatch"


def model_dir() -> Path:
    """``$MASKWATCH_MODEL_DIR``, or ``<cache dir>/models``: where ``maskwatch models build`` writes the pose model."""
    env = os.environ.get("MASKWATCH_MODEL_DIR")
    return Path(env).expanduser() if env else cache_dir() / "models"


def pose_model_path(directory: Path | None = None) -> Path:
    """``<model dir>/yolo11n-pose.onnx``; ``directory`` defaults to :func:`model_dir`."""
    return Path(directory if directory is not None else model_dir()) / f"{POSE_MODEL_NAME}.onnx"


def runtime_cache_dir() -> Path:
    """``<cache dir>/runtime``: TensorRT engines and the runtime chosen per model and machine."""
    return cache_dir() / "runtime"


def local_fleet_file(namespace: str) -> Path:
    """``<cache dir>/fleets/<namespace>.json``: where a ``maskwatch run`` on a local Ray writes that Ray's address
    and its own PID while it runs, for ``maskwatch cameras`` to find it."""
    return cache_dir() / "fleets" / f"{namespace}.json"
