"""The driver: validate inputs, start (or join) Ray, build the topology, run every camera, flush the sink.

User errors (a missing file, a dead camera URL, an unknown config key, an unreachable broker, a model that does not
match) are found here, before any actor starts, and raised as one-line :class:`~schemas.errors.MaskwatchError`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.camera_loop import CameraSpec
from pipeline.config import Config, default_pose_input_px
from pipeline.facegate import load_face_gate
from pipeline.onnx_models import MaskClassifier, PoseModel
from pipeline.sinks import ensure_topics
from pipeline.source import is_live, probe
from schemas.errors import ConfigError, MaskwatchError, SourceError
from services.broker import check_port_free

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run did."""

    cameras: list[dict[str, Any]]
    records: int
    wall_s: float
    pose_provider: str
    classify_provider: str
    stopped_by_signal: str | None = None
    # info() of each pose and classify actor at the end: provider, model-call totals (calls, items, model_wall_s,
    # model_cpu_s, process_cpu_s since the actor was ready), batch sizes.
    pools: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


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
    specs = []
    for c in cfg.cameras:
        wh: tuple[int, int] | None = None
        try:
            w, h, _ = probe(c.source, c.camera_id, cfg.capture)
            wh = (w, h)
        except SourceError as exc:
            if not (cfg.capture.wait_for_unreachable and is_live(c.source)):
                raise
            logger.warning("%s; its shard will keep retrying (capture.wait_for_unreachable)", exc)
        specs.append(
            CameraSpec(
                camera_id=c.camera_id,
                # A file path is resolved here: on a cluster the shard's working directory is not the driver's.
                source=c.source if "://" in c.source or is_live(c.source) else str(Path(c.source).resolve()),
                frame_wh=wh,
                pose_input_px=c.pose_input_px or (default_pose_input_px(wh) if wh else None),
                target_fps=c.target_fps,
                capture=cfg.capture,
                annotate_path=annotate.get(c.camera_id),
                tracks_path=tracks.get(c.camera_id),
                camera_motion=c.camera_motion,
                district=c.district,
            )
        )
    return specs


def pose_model_path(cfg: Config) -> Path:
    """The configured pose model, or the one ``maskwatch models build`` made."""
    return Path(cfg.pose.model_path) if cfg.pose.model_path else paths.pose_model_path()


def _token_auth_mode(cfg: Config) -> None:
    """Set ``RAY_AUTH_MODE=token`` before Ray is imported, where the user has not set it and it is still read.

    - A driver joining a cluster (``ray.address``) when a token is at hand: Ray 2.60's ``ray start --head`` turns
      token authentication on, and a driver that joins without ``RAY_AUTH_MODE=token`` is refused. Ray reads the
      token from ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token`` (Ray's token-authentication
      docs); KubeRay's ``authOptions`` sets both variables itself.
    - A local Ray: it turns token authentication on by itself and, with the mode unset, warns about it on every run.
      Saying ``token`` keeps the same protection (Ray makes the token where there is none) without that warning.
    """
    if os.environ.get("RAY_AUTH_MODE") or "ray" in sys.modules:  # set, or too late to set
        return
    if not cfg.ray.address or (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                               or (Path.home() / ".ray" / "auth_token").is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def init_ray(cfg: Config, num_cpus: float) -> None:
    """Join ``ray.address``, or start a local Ray on 127.0.0.1 (usage stats off, no dashboard)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    if cfg.ray.address:
        try:
            ray.init(address=cfg.ray.address, namespace=cfg.ray.namespace, logging_level=logging.WARNING)
        except ConnectionError as exc:
            hint = "" if os.environ.get("RAY_AUTH_MODE") == "token" else (
                " A cluster started with `ray start` (Ray 2.60) uses token authentication: export RAY_AUTH_MODE=token "
                "and give this machine the head's token (~/.ray/auth_token or RAY_AUTH_TOKEN)")
            msg = f"cannot join the Ray cluster at {cfg.ray.address}: {exc}.{hint}"
            raise MaskwatchError(msg) from None
    else:
        port = cfg.ray.metrics_export_port
        if port is not None:
            check_port_free("127.0.0.1", port, "ray.metrics_export_port")
        ray.init(
            address="local",
            _node_ip_address="127.0.0.1",
            _metrics_export_port=port,
            num_cpus=max(os.cpu_count() or 1, math.ceil(num_cpus)),
            include_dashboard=False,
            namespace=cfg.ray.namespace,
            logging_level=logging.WARNING,
        )


def _check_models(cfg: Config, pose_path: Path) -> tuple[Config, MaskClassifier]:
    """Open the models once before any actor starts (a file that is missing or does not match fails here, named);
    the config gets the classifier's validation counts unless it sets its own."""
    PoseModel(pose_path, device="cpu")
    classifier = MaskClassifier(cfg.classify.model_path, device="cpu")
    if cfg.faces.gate_model_path is not None:
        load_face_gate(cfg.faces.gate_model_path, cfg.faces.gate_input_px)
    if cfg.stats.classifier_sensitivity is None and classifier.validation is not None:
        se, sp = classifier.validation.counts()
        stats = cfg.stats.model_copy(update={
            "classifier_sensitivity": se, "classifier_specificity": sp,
            "classifier_validation_source": classifier.validation.source,
        })
        cfg = cfg.model_copy(update={"stats": stats})
    return cfg, classifier


def run(
    cfg: Config,
    out_path: str | None = None,
    annotate: dict[str, str] | None = None,
    tracks: dict[str, str] | None = None,
) -> RunResult:
    """Run every configured camera to the end of its source.

    Args:
        cfg: The validated configuration.
        out_path: JSON Lines output when ``kafka.bootstrap_servers`` is not set (None: standard output).
        annotate: camera_id -> path of an annotated video to write.
        tracks: camera_id -> path of a MOTChallenge person-tracks file to write (:mod:`pipeline.mot`).

    Raises:
        MaskwatchError: For user errors, before anything runs; ``SinkError`` if records were not delivered.
    """
    _token_auth_mode(cfg)  # before Ray is imported: it reads RAY_AUTH_MODE once
    import ray

    from cluster.topology import build_topology

    t0 = time.monotonic()
    specs = resolve_cameras(cfg, annotate, tracks)
    pose_path = pose_model_path(cfg)
    cfg, classifier = _check_models(cfg, pose_path)
    if cfg.kafka.bootstrap_servers:
        ensure_topics(cfg.kafka)
    elif out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    shards = math.ceil(len(specs) / cfg.capture.cameras_per_actor)
    need = cfg.pose.num_cpus * cfg.pose.num_actors + cfg.classify.num_cpus * cfg.classify.num_actors + 0.5 * shards
    init_ray(cfg, need)
    topo = build_topology(cfg, specs, str(pose_path), classifier.crop_margin, classifier.input_px, out_path)
    try:
        with _StopOnSignal() as stopping, _pid_file(os.environ.get("MASKWATCH_PID_FILE")):
            summaries = run_shards(topo, stopping, cfg.capture.shutdown_grace_s)
        flush_s = cfg.kafka.flush_timeout_s
        if stopping.is_set():  # what is left of the grace period, and at least a little
            flush_s = max(2.0, min(flush_s, cfg.capture.shutdown_grace_s - (time.monotonic() - stopping.at)))
        records = ray.get(topo.sink.close.remote(flush_s))
        pools = {"pose": ray.get([a.info.remote() for a in topo.pose]),
                 "classify": ray.get([a.info.remote() for a in topo.classify])}
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if hasattr(exc, "cause") else None
        if cause is not None and type(cause).__module__.startswith("schemas"):
            raise cause from None
        raise
    finally:
        for handle in [*topo.shards, *topo.pose, *topo.classify, topo.sink]:
            ray.kill(handle)
    return RunResult(summaries, records, round(time.monotonic() - t0, 2), pools["pose"][0]["provider"],
                     pools["classify"][0]["provider"], stopped_by_signal=stopping.signal_name, pools=pools)


@contextlib.contextmanager
def _pid_file(path: str | None) -> Iterator[None]:
    """Write this process's PID to ``path`` while the cameras run (a Kubernetes preStop hook sends it SIGTERM)."""
    if not path:
        yield
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        p.unlink(missing_ok=True)


class _StopOnSignal:
    """SIGTERM / SIGINT set this event instead of killing the driver (main thread only; elsewhere a no-op)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._old: dict[int, Any] = {}
        self.at = 0.0
        self.signal_name: str | None = None

    def is_set(self) -> bool:
        return self._event.is_set()

    def _handle(self, signum: int, _frame: Any) -> None:
        if self._event.is_set():
            return
        self.signal_name = signal.Signals(signum).name
        self.at = time.monotonic()
        logger.warning("%s: stopping capture; open tracks are decided and final statistics published",
                       self.signal_name)
        self._event.set()

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


def run_shards(topo: Any, stopping: Any, grace_s: float) -> list[dict[str, Any]]:
    """Supervise the camera shards until every camera has ended; returns the cameras' summaries.

    A shard whose process died (``RayActorError``: killed, out of memory, its node lost) is restarted by Ray
    (``max_restarts``); its cameras are started again with ``run(restore=True)`` and continue from their last
    statistics record. Nothing in one shard stops another. When ``stopping`` is set (SIGTERM / SIGINT), every shard
    is asked to stop; the wait is bounded by three quarters of ``grace_s`` (the rest is the sink's flush). Polls
    (``ray.wait`` with a short timeout) so that the signal handler runs while the driver waits.

    Args:
        topo: The run's :class:`~cluster.topology.Topology`.
        stopping: Has ``is_set()`` and ``at`` (``time.monotonic()`` of the signal), like :class:`_StopOnSignal`.
        grace_s: The shutdown grace period, seconds.
    """
    import ray

    shards = topo.shards

    def start(i: int, restore: bool = False) -> Any:
        return shards[i].run.remote(topo.pose, topo.classify, topo.sink, restore=restore)

    pending = {start(i): i for i in range(len(shards))}
    results: dict[int, list[dict[str, Any]]] = {}
    logged: dict[int, float] = {}  # shard -> time.monotonic() of its last "died" log line
    stop_sent = False
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.25)
        for ref in ready:
            i = pending.pop(ref)
            try:
                results[i] = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                if stop_sent:
                    logger.error("camera shard %d died while stopping (%s); its open tracks are lost", i,
                                 type(exc).__name__)
                    continue
                now = time.monotonic()
                if isinstance(exc, ray.exceptions.ActorUnavailableError) and now - logged.get(i, -1e9) < 30:
                    logger.debug("camera shard %d still unavailable; calling run() again", i)
                else:  # once per outage (a restarting actor answers "unavailable" until it is back), then every 30 s
                    logger.error("camera shard %d died (%s); Ray restarts it and its cameras continue from their "
                                 "last statistics", i, type(exc).__name__)
                    logged[i] = now
                pending[start(i, restore=True)] = i
        if stopping.is_set() and not stop_sent:
            for sh in shards:
                sh.stop.remote()
            stop_sent = True
        if stop_sent and pending and time.monotonic() - stopping.at > 0.75 * grace_s:
            logger.error("%d camera shard(s) did not stop within %.0f s; their open tracks are lost",
                         len(pending), 0.75 * grace_s)
            break
    return [s for i in sorted(results) for s in results[i]]
