"""The driver: validate inputs, start (or join) Ray, build the topology, run every camera, flush the sink.

User errors (a missing file, a dead camera URL, an unknown config key, an unreachable broker, a model that does not
match) are found here, before any actor starts, and raised as one-line :class:`~schemas.errors.MaskwatchError`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.cameras import resolve_cameras
from pipeline import paths
from pipeline.config import Config
from pipeline.config_watch import ConfigWatcher
from pipeline.facegate import load_face_gate
from pipeline.onnx_models import MaskClassifier, PoseModel
from pipeline.sinks import ensure_topics
from schemas.errors import MaskwatchError
from services.broker import check_port_free

__all__ = ["RunResult", "init_ray", "pose_model_path", "resolve_cameras", "run"]

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
    config_path: str | None = None,
    reload: Callable[[], Config] | None = None,
) -> RunResult:
    """Run every configured camera to the end of its source, following ``config_path`` while it runs.

    Args:
        cfg: The validated configuration.
        out_path: JSON Lines output when ``kafka.bootstrap_servers`` is not set (None: standard output).
        annotate: camera_id -> path of an annotated video to write.
        tracks: camera_id -> path of a MOTChallenge person-tracks file to write (:mod:`pipeline.mot`).
        config_path: The config file; with ``reload`` (which reads and validates it as ``cfg`` was made) and
            ``fleet.watch_config``, each change of it is applied to the running cameras
            (:meth:`cluster.fleet.Fleet.reconcile`).

    Raises:
        MaskwatchError: For user errors, before anything runs; ``SinkError`` if records were not delivered.
    """
    _token_auth_mode(cfg)  # before Ray is imported: it reads RAY_AUTH_MODE once
    import ray

    from cluster.fleet import Fleet, Models
    from cluster.topology import pipeline_bundle

    t0 = time.monotonic()
    watcher = (ConfigWatcher(config_path, reload, cfg.fleet.watch_poll_s)
               if config_path and reload is not None and cfg.fleet.watch_config else None)
    specs = resolve_cameras(cfg, annotate, tracks)
    pose_path = pose_model_path(cfg)
    declared = cfg
    cfg, classifier = _check_models(cfg, pose_path)
    if cfg.kafka.bootstrap_servers:
        ensure_topics(cfg.kafka)
    elif out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    init_ray(cfg, pipeline_bundle(cfg).get("CPU", 0.0) * math.ceil(len(specs) / cfg.fleet.cameras_per_node))
    models = Models(str(pose_path), classifier.crop_margin, classifier.input_px)
    fleet = Fleet(cfg, models, out_path, declared)
    try:
        summaries, records, pools, stopping = _run_fleet(fleet, specs, watcher)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if hasattr(exc, "cause") else None
        if cause is not None and type(cause).__module__.startswith("schemas"):
            raise cause from None
        raise
    finally:
        if watcher is not None:
            watcher.stop()
        fleet.kill()
    providers = [pools[k][0]["provider"] if pools[k] else "none" for k in ("pose", "classify")]
    return RunResult(summaries, records, round(time.monotonic() - t0, 2), *providers,
                     stopped_by_signal=stopping.signal_name, pools=pools)


def _run_fleet(fleet: Any, specs: list[Any], watcher: ConfigWatcher[Config] | None) -> tuple[Any, ...]:
    """Start the cameras, supervise them until they end or a signal, flush the sink: (summaries, records written,
    the model actors' info, the signal state)."""
    import ray

    cfg = fleet.cfg
    fleet.start(specs)
    if watcher is not None:
        watcher.start()
    with (_StopOnSignal() as stopping, _pid_file(os.environ.get("MASKWATCH_PID_FILE")),
          _local_fleet_file(cfg)):
        summaries = fleet.supervise(stopping, cfg.capture.shutdown_grace_s, watcher)
    flush_s = cfg.kafka.flush_timeout_s
    if stopping.is_set():  # what is left of the grace period, and at least a little
        flush_s = max(2.0, min(flush_s, cfg.capture.shutdown_grace_s - (time.monotonic() - stopping.at)))
    records = ray.get(fleet.sink.close.remote(flush_s))
    return summaries, records, fleet.pools(), stopping


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


@contextlib.contextmanager
def _local_fleet_file(cfg: Config) -> Iterator[None]:
    """On a local Ray, write its address and this PID where ``maskwatch cameras`` looks (:func:`paths.local_fleet_file`)
    while the cameras run. A cluster's address is in the config (``ray.address``) and needs no file."""
    if cfg.ray.address:
        yield
        return
    import ray

    path = paths.local_fleet_file(cfg.ray.namespace)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"address": ray.get_runtime_context().gcs_address, "pid": os.getpid()}))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


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
