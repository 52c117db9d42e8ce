"""A run's cameras as the camera loop gets them: each source opened once (resolution, reachability), its pose input
size fixed. Imports no Ray: the driver resolves cameras before Ray starts, so that a dead camera URL fails the run
before any actor does."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.camera_loop import CameraSpec
from pipeline.config import CameraConfig, Config, default_pose_input_px
from pipeline.source import is_live, probe
from schemas.errors import ConfigError, SourceError

logger = logging.getLogger(__name__)


def resolve_cameras(
    cfg: Config, annotate: dict[str, str] | None = None, tracks: dict[str, str] | None = None
) -> list[CameraSpec]:
    """Open each camera once (resolution, reachability) and fix its pose input size.

    Raises:
        ConfigError: If there is no camera, or ``annotate`` / ``tracks`` names an unknown camera.
        SourceError: If a source is missing or unreachable.
    """
    if not cfg.cameras:
        msg = "no camera configured: pass --source PATH_OR_URL or list cameras in the config file"
        raise ConfigError(msg)
    annotate, tracks = annotate or {}, tracks or {}
    for what, per_camera in (("--annotate", annotate), ("--tracks-out", tracks)):
        unknown = set(per_camera) - {c.camera_id for c in cfg.cameras}
        if unknown:
            msg = f"{what} names unknown camera(s) {sorted(unknown)}"
            raise ConfigError(msg)
    for path in tracks.values():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return [resolve_camera(cfg, c, annotate.get(c.camera_id), tracks.get(c.camera_id)) for c in cfg.cameras]


def resolve_camera(cfg: Config, c: CameraConfig, annotate: str | None = None, tracks: str | None = None) -> CameraSpec:
    """One camera of :func:`resolve_cameras` (``cfg`` gives its capture settings).

    Raises:
        SourceError: If its source is missing, or unreachable without ``capture.wait_for_unreachable``.
    """
    wh: tuple[int, int] | None = None
    try:
        w, h, _ = probe(c.source, c.camera_id, cfg.capture)
        wh = (w, h)
    except SourceError as exc:
        if not (cfg.capture.wait_for_unreachable and is_live(c.source)):
            raise
        logger.warning("%s; its shard will keep retrying (capture.wait_for_unreachable)", exc)
    return CameraSpec(
        camera_id=c.camera_id,
        # A file path is resolved here: on a cluster the shard's working directory is not the driver's.
        source=c.source if "://" in c.source or is_live(c.source) else str(Path(c.source).resolve()),
        frame_wh=wh,
        pose_input_px=c.pose_input_px or (default_pose_input_px(wh) if wh else None),
        target_fps=c.target_fps,
        capture=cfg.capture,
        annotate_path=annotate,
        tracks_path=tracks,
        camera_motion=c.camera_motion,
        district=c.district,
    )
