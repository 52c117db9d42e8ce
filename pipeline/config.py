"""The maskwatch configuration: one YAML file validated with pydantic; unknown keys are rejected.

The file is read as YAML 1.2 (:func:`read_yaml`): ``camera_motion: off`` is the string "off", as
``maskwatch cameras add`` writes it, and a boolean setting still takes ``off`` / ``on`` / ``yes`` / ``no``.

Every section has defaults, so an empty file (or none) plus ``--source`` runs on a laptop. Actors receive their own
validated sub-model. Units are in the field names (``_s`` seconds, ``_px`` pixels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from pipeline.headbox import FaceRules
from pipeline.letterbox import default_pose_input_px
from pipeline.paths import ASSETS
from pipeline.pose_postprocess import CONF_THRESHOLD, MIN_KEYPOINTS, NMS_IOU, OKS_NMS
from pipeline.prevalence import ClassifierValidation
from pipeline.runtime import Device, Precision
from pipeline.stats import DEFAULT_MIN_COVERAGE
from pipeline.tracking import TrackerParams
from pipeline.voting import VotingRules
from schemas.errors import ConfigError

__all__ = ["Config", "ConfigError", "default_pose_input_px", "load_config", "parse_config"]



class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraConfig(_Strict):
    """One camera."""

    camera_id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:/@-]+$")]
    source: Annotated[str, Field(min_length=1)]
    # 10 fps keeps tracks continuous for walking people and costs a third of 30 fps.
    target_fps: Annotated[float, Field(gt=0)] | None = 10.0
    # Longest side of the pose model input. None: 640 for frames up to 640 px, else 1280 (docs/FACTS.md: letterboxing
    # CCTV to 640 px loses most small people; a close 640x360 street camera needs no more than 640).
    pose_input_px: Annotated[int, Field(ge=128, le=4096, multiple_of=32)] | None = None
    # Camera-motion compensation for this camera (None: tracking.camera_motion): "off" for a camera known to be fixed.
    camera_motion: Literal["auto", "on", "off"] | None = None
    # The district the camera counts toward (free text, e.g. "district-7"): its statistics records carry it, and
    # `maskwatch rollup` pools them into per-district statistics. None: the camera is in no district.
    district: Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")] | None = None


class CaptureConfig(_Strict):
    """Reading cameras."""

    cameras_per_actor: Annotated[int, Field(ge=1)] = 32
    # Ray custom resources a camera shard asks for, e.g. {"maskwatch_gpu_node": 0.001} to keep shards on the pods of
    # k8s/raycluster.yaml that have it; a node pipeline's bundle holds its shards' share. (The sink runs on the head.)
    ray_resources: dict[str, float] = Field(default_factory=dict)
    queue_frames: Annotated[int, Field(ge=1, le=64)] = 4  # per camera; live streams drop the oldest beyond it
    open_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    # FFmpeg decoding threads per camera. 1: each camera decodes on its own reading thread, and a fleet spreads over
    # the cores by camera (same CPU per frame as FFmpeg's frame threads, no extra threads and frame buffers per
    # camera; docs/FACTS.md). 1080p H.264 decodes at about 110 frames/s on one core. 0: FFmpeg's choice (one per
    # core), for a few cameras above 1080p at full rate.
    decoder_threads: Annotated[int, Field(ge=0, le=64)] = 1
    # Which FFmpeg reads the cameras (pipeline.source): "opencv" (cv2.VideoCapture) or "pyav" (PyAV, whose wheels'
    # FFmpeg has NVIDIA's NVDEC). hwaccel, with pyav: "cuda" decodes on the node's GPU and warns where there is none
    # (then the CPU decodes); "auto" takes the GPU where one answers, quietly; "none" decodes on the CPU.
    decoder: Literal["opencv", "pyav"] = "opencv"
    hwaccel: Literal["none", "auto", "cuda"] = "none"
    # Consecutive failed reopen attempts before a live camera is given up; null (the default): never, it is retried
    # with exponential backoff (reconnect_backoff_s doubling up to max_backoff_s, +-20% jitter) until it is back.
    max_reconnects: Annotated[int, Field(ge=0)] | None = None
    reconnect_backoff_s: Annotated[float, Field(gt=0)] = 1.0
    max_backoff_s: Annotated[float, Field(gt=0)] = 30.0
    # A live camera unreachable when the run starts: false fails the run at once naming the camera (what a user
    # running one command wants); true lets its shard keep retrying (reconnect_backoff_s doubling up to
    # max_backoff_s) while the others run (what a fleet wants: one dead camera must not stop a district).
    wait_for_unreachable: bool = False
    # SIGTERM / SIGINT: capture stops, frames in flight finish, open tracks are decided (ended_by "shutdown"), final
    # statistics are published and the sink flushed, all within this many seconds; then the run exits 0. Under
    # Kubernetes' default terminationGracePeriodSeconds (30) with room to spare.
    shutdown_grace_s: Annotated[float, Field(gt=0)] = 20.0

    @model_validator(mode="after")
    def _hwaccel_needs_pyav(self) -> CaptureConfig:
        if self.hwaccel != "none" and self.decoder != "pyav":
            msg = f"capture.hwaccel {self.hwaccel!r} needs capture.decoder 'pyav', got decoder {self.decoder!r}"
            raise ValueError(msg)
        return self


class _ModelPool(_Strict):
    """Where a model pool's sessions run (pipeline.runtime).

    ``device``: ``auto`` measures, once per kind of node (cached), the runtimes present that reproduce ONNX Runtime
    CPU's output on a reference input, and takes the fastest; ``cpu`` (ONNX Runtime), ``openvino``, ``cuda`` or
    ``tensorrt`` name one and fail without it. ``precision``: ``bf16`` runs OpenVINO in bf16 and ``fp16`` TensorRT in
    fp16; every other runtime runs fp32. ``threads``: inference threads per session, spinning off; null (the
    default) takes them from the actor's ``num_cpus``; 0 keeps the runtime's default (ONNX Runtime: as many spinning
    threads as cores, about 3x the call's wall time in CPU).
    """

    num_actors: Annotated[int, Field(ge=1)] = 1
    num_gpus: Annotated[float, Field(ge=0)] = 0.0  # per actor; >0 schedules on GPU nodes
    num_cpus: Annotated[float, Field(ge=0)] = 1.0
    threads: Annotated[int, Field(ge=0)] | None = None
    device: Device = "auto"
    precision: Precision = "fp32"

    @property
    def session_threads(self) -> int:
        """Inference threads per session in an actor: ``threads``, or (null) ``num_cpus`` rounded, at least 1.

        One thread per CPU Ray gives the actor, spinning off: the pose actor's CPU per frame fell from 0.115 to
        0.074 s beside the decoders and the classifier at the same frames/s (bench/RESULTS.md, issue 26).
        """
        return self.threads if self.threads is not None else max(1, round(self.num_cpus))

    @property
    def in_process_threads(self) -> int:
        """Inference threads for the model run in the calling process (``maskwatch dataset extract``, benchmarks'
        single-process loops), where no actor shares the cores: ``threads``, or (null) the runtime's default (0)."""
        return self.threads if self.threads is not None else 0


class PoseConfig(_ModelPool):
    """The pose model pool."""

    model_path: Path | None = None  # None: <model dir>/yolo11n-pose.onnx from `maskwatch models build`
    # Defaults and their reasons: pipeline.pose_postprocess.CONF_THRESHOLD / NMS_IOU / OKS_NMS / MIN_KEYPOINTS /
    # BODY_MIN_PART.
    conf_threshold: Annotated[float, Field(ge=0, le=1)] = CONF_THRESHOLD
    nms_iou: Annotated[float, Field(gt=0, le=1)] = NMS_IOU
    oks_nms: Annotated[float, Field(gt=0, le=1)] = OKS_NMS  # keypoint NMS threshold (1: off); pose_postprocess
    min_keypoints: Annotated[int, Field(ge=0, le=17)] = MIN_KEYPOINTS  # confident keypoints a person needs
    head_or_torso: bool = True  # a person needs a head or a torso, not limbs alone (has_head_or_torso)
    max_batch_size: Annotated[int, Field(ge=1)] = 8
    batch_wait_s: Annotated[float, Field(ge=0)] = 0.005


class ClassifyConfig(_ModelPool):
    """The mask classifier pool."""

    model_path: Path = ASSETS / "mask_classifier.onnx"
    num_cpus: Annotated[float, Field(ge=0)] = 0.5
    threads: Annotated[int, Field(ge=0)] | None = 1
    max_batch_size: Annotated[int, Field(ge=1)] = 64
    batch_wait_s: Annotated[float, Field(ge=0)] = 0.005
    # The face gate's model runs in this pool too; its settings sit with its pass marks in `faces` (gate_*).


class StatsConfig(_Strict):
    """Per-camera statistics windows (aligned to UTC wall-clock boundaries)."""

    window_s: Annotated[float, Field(gt=0)] = 60.0
    # The classifier's validation counts, "correct/n" (masked faces called mask / masked faces; unmasked faces
    # called no mask / unmasked faces), for the corrected mask fraction. None: the classifier file's metadata
    # (maskwatch.sensitivity / maskwatch.specificity, from its model card). Set both to re-validate on your cameras
    # (classifier_sensitivity and classifier_specificity).
    classifier_sensitivity: Annotated[str, Field(pattern=r"^[0-9]+/[0-9]+$")] | None = None
    classifier_specificity: Annotated[str, Field(pattern=r"^[0-9]+/[0-9]+$")] | None = None
    # What those counts were measured on, copied into each statistics record (e.g. "per person, 40 labelled tracks
    # of our cameras, 2026-11"). None: "config" when the counts are set here, the model's own text otherwise.
    classifier_validation_source: Annotated[str, Field(min_length=1, max_length=300)] | None = None
    # Coverage (people decided / people whose face the face rules saw, 0-1) under which a camera's or a
    # district's record is flagged low_coverage (window and totals): the decided few are then a selected sample
    # and the fraction can be biased far beyond its interval. 0.3: see pipeline.stats.DEFAULT_MIN_COVERAGE.
    # `maskwatch rollup --config` uses it for the districts.
    min_coverage: Annotated[float, Field(ge=0, le=1)] = DEFAULT_MIN_COVERAGE

    @model_validator(mode="after")
    def _both_or_neither(self) -> StatsConfig:
        if (self.classifier_sensitivity is None) != (self.classifier_specificity is None):
            msg = "stats.classifier_sensitivity and stats.classifier_specificity go together: set both or neither"
            raise ValueError(msg)
        self.classifier_validation()  # counts that cannot be corrected for fail at load time
        return self

    def classifier_validation(self) -> ClassifierValidation | None:
        """The configured validation counts, parsed (None when not set).

        Raises:
            ValueError: If the counts are invalid (see :class:`~pipeline.prevalence.ClassifierValidation`).
        """
        if self.classifier_sensitivity is None or self.classifier_specificity is None:
            return None
        return ClassifierValidation.parse(
            self.classifier_sensitivity, self.classifier_specificity, self.classifier_validation_source or "config"
        )


class KafkaConfig(_Strict):
    """Kafka output (kafka-python). Without ``bootstrap_servers`` results go to a JSON Lines file."""

    bootstrap_servers: str | None = None
    decisions_topic: str = "maskwatch.decisions"
    stats_topic: str = "maskwatch.camera-stats"
    district_stats_topic: str = "maskwatch.district-stats"  # written by `maskwatch rollup` (compacted)
    client_id: str = "maskwatch"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    request_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    flush_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # Records the broker did not take are appended here (fsynced) and re-sent, in order, while the run goes on and at
    # the next start (at-least-once). On Kubernetes it lives on a PersistentVolume (k8s/README.md).
    outbox_path: Path = Path("maskwatch-outbox.jsonl")
    outbox_max_records: Annotated[int, Field(ge=1)] = 1_000_000  # ~1 GB; beyond it new records are refused (logged)
    retry_interval_s: Annotated[float, Field(gt=0)] = 5.0  # how often the outbox is re-sent while it holds records
    retry_flush_timeout_s: Annotated[float, Field(gt=0)] = 5.0  # how long one re-send waits for acknowledgements


class FleetConfig(_Strict):
    """How the cameras spread over the cluster's nodes, and how the running fleet follows its config file
    (cluster.fleet)."""

    # Cameras one node pipeline hosts. A pipeline is the camera shards with their own pose and classify actors, in
    # one placement-group bundle: they run on one node, and frames never cross the network. More cameras start
    # another pipeline on the node with the most room; where no running node has room, its bundle is resource demand
    # that the autoscaler answers with a node (k8s/README.md). Set it from the capacity plan in bench/RESULTS.md.
    cameras_per_node: Annotated[int, Field(ge=1)] = 32
    # `maskwatch run --config F` reconciles the running cameras to F whenever F changes (rewritten, renamed over, or a
    # Kubernetes ConfigMap's symlink swap): cameras added, removed or changed start, stop or restart alone.
    watch_config: bool = True
    # Besides file events, F is re-read this often (seconds): a safety net for file systems without events.
    watch_poll_s: Annotated[float, Field(gt=0)] = 5.0


class RayConfig(_Strict):
    """Where to run."""

    address: str | None = None  # None: a local Ray on 127.0.0.1; "auto" or ray://... for a cluster
    # A local run's Prometheus endpoint (Ray's own metrics and the maskwatch_* ones) on 127.0.0.1: http://127.0.0.1:
    # <port>/metrics. null: a port Ray chooses. Not used with `address` (the cluster's nodes have their own).
    metrics_export_port: Annotated[int, Field(ge=1, le=65535)] | None = 8090
    namespace: str = "maskwatch"


class Config(_Strict):
    """The whole configuration file."""

    cameras: list[CameraConfig] = Field(default_factory=list)
    capture: CaptureConfig = CaptureConfig()
    pose: PoseConfig = PoseConfig()
    classify: ClassifyConfig = ClassifyConfig()
    # Tracking, face and voting settings are defined once, as the pipeline's own dataclasses (defaults, ranges and
    # their reasons there); pydantic validates a mapping into them and rejects unknown keys.
    tracking: TrackerParams = Field(default_factory=TrackerParams)
    faces: FaceRules = Field(default_factory=FaceRules)
    voting: VotingRules = Field(default_factory=VotingRules)
    stats: StatsConfig = StatsConfig()
    kafka: KafkaConfig = KafkaConfig()
    fleet: FleetConfig = FleetConfig()
    ray: RayConfig = RayConfig()

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, cams: list[CameraConfig]) -> list[CameraConfig]:
        seen: set[str] = set()
        for c in cams:
            if c.camera_id in seen:
                msg = f"camera_id {c.camera_id!r} appears twice"
                raise ValueError(msg)
            seen.add(c.camera_id)
        return cams


# Keys that moved, so that a config written for an earlier version gets told where to.
MOVED_KEYS = {"classify.face_detector_path": "faces.gate_model_path",
              "classify.face_detector_input_px": "faces.gate_input_px"}


def _format_error(exc: ValidationError, origin: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        moved = MOVED_KEYS.get(loc)
        return f"{origin}: unknown config key '{loc}'" + (f" (it is '{moved}' now)" if moved else "")
    got = err.get("input")
    got_s = "" if isinstance(got, dict | list) else f", got {got!r}"
    more = f" (and {len(exc.errors()) - 1} more error(s))" if len(exc.errors()) > 1 else ""
    return f"{origin}: '{loc}': {err['msg']}{got_s}{more}"


def apply_overrides(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Set ``key=value`` assignments into a config dict (``voting.min_votes=2``: a dotted path, a YAML value).

    Returns the same dict, changed; validate it with :func:`parse_config`.

    Raises:
        ConfigError: If an assignment has no ``=`` or its value is not YAML.
    """
    for a in assignments:
        key, sep, value = a.partition("=")
        if not sep or not key:
            msg = f"expected key=value (e.g. voting.min_votes=2), got {a!r}"
            raise ConfigError(msg)
        node = data
        *parents, leaf = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        try:
            node[leaf] = read_yaml(value)
        except YAMLError as exc:
            msg = f"{key}: expected a YAML value, got {value!r} ({exc})"
            raise ConfigError(msg) from None
    return data


def read_yaml(text: str) -> Any:
    """Parse YAML 1.2 (ruamel.yaml's safe loader), as ``maskwatch cameras add/remove`` write it: ``off``, ``on``,
    ``yes`` and ``no`` are strings (``camera_motion: off`` is the mode "off"; a boolean setting still takes them, as
    pydantic reads "off" as False), ``1e3`` is a number.

    Raises:
        ruamel.yaml.error.YAMLError: If ``text`` is not YAML.
    """
    return YAML(typ="safe", pure=True).load(text)


def parse_config(data: dict[str, Any] | None, origin: str = "config") -> Config:
    """Validate a config mapping.

    Raises:
        ConfigError: One line naming the key, what was expected and what was found.
    """
    try:
        return Config.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, origin)) from exc


def load_config(path: Path | str | None) -> Config:
    """Read and validate a YAML config file (None: all defaults).

    Raises:
        ConfigError: If the file is missing, not YAML, not a mapping, or invalid.
    """
    if path is None:
        return Config()
    p = Path(path)
    if not p.is_file():
        msg = f"config file not found: {p}"
        raise ConfigError(msg)
    try:
        data = read_yaml(p.read_text())
    except YAMLError as exc:
        msg = f"{p}: not valid YAML ({str(exc).splitlines()[0]})"
        raise ConfigError(msg) from exc
    if data is not None and not isinstance(data, dict):
        msg = f"{p}: expected a mapping at the top level, got {type(data).__name__}"
        raise ConfigError(msg)
    return parse_config(data, str(p))
