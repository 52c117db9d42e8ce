"""Where an ONNX model runs: ONNX Runtime's CPU, CUDA or TensorRT provider, or Intel's OpenVINO runtime, and which of
those present on this node is fastest for a model (measured once, cached per CPU and GPU model).

Threads: a session given ``threads`` > 0 gets that many intra-op threads with spinning off; 0 keeps the runtime's
defaults. ONNX Runtime's defaults (as many threads as cores, each spinning while it waits for work) take about 3x the
call's wall time in CPU (``../shared/docs/FINDINGS.md``), CPU that the decoders and the other actors on the node
need; an actor's sessions get one thread per CPU Ray gives it (``pipeline.config._ModelPool.session_threads``).

OpenVINO (https://github.com/openvinotoolkit/openvino, Apache-2.0) reads the same ``.onnx`` file; it is used when the
``openvino`` package is installed. ``precision`` ``bf16`` is its ``INFERENCE_PRECISION_HINT`` on CPUs that support it
(AMX/AVX512-BF16); ``fp16`` is TensorRT's FP16 mode; every other runtime runs fp32 whatever is asked. Reduced
precision is never chosen by ``auto`` on its own: the config asks for it, and only where it was shown to change no
decision (``bench/RESULTS.md``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from pipeline.paths import runtime_cache_dir
from schemas.errors import ModelError

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "openvino", "cuda", "tensorrt"]
Precision = Literal["fp32", "bf16", "fp16"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "openvino", "cuda", "tensorrt")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
# Largest absolute difference from ONNX Runtime's CPU output (fp32) on the reference input that a runtime may show
# to count as running the model correctly: fp32 runtimes agree to rounding; reduced precision gets a sanity bound
# only (bf16 moved person scores by up to 0.13 on real frames, FINDINGS.md), its real check being end to end.
REFERENCE_TOLERANCE = {"fp32": 1e-2, "bf16": 0.25, "fp16": 0.25}
TIMING_RUNS = 9


def cuda_present() -> bool:
    """True when an NVIDIA driver is loaded on this machine.

    ``onnxruntime-gpu`` lists the CUDA provider on every machine, and trying it without a GPU logs errors about
    missing CUDA libraries before falling back, so ``auto`` only tries CUDA and TensorRT where a driver is.
    """
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def openvino_present() -> bool:
    """True when the ``openvino`` package imports."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def candidates(device: str) -> list[str]:
    """Runtimes to try for ``device``: itself, or for ``auto`` every runtime present on this node (CPU first)."""
    if device != "auto":
        return [device]
    out = ["cpu"]
    if openvino_present():
        out.append("openvino")
    if cuda_present():
        available = ort.get_available_providers()
        out += [name for name, prov in (("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider"))
                if prov in available]
    return out


def ort_options(threads: int) -> ort.SessionOptions:
    """ONNX Runtime session options: ``threads`` intra-op threads (0: ONNX Runtime's default) without spinning."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


def ort_providers(runtime: str, precision: str) -> list[Any]:
    """The provider list of an ONNX Runtime session for ``runtime`` (``cpu``, ``cuda`` or ``tensorrt``)."""
    if runtime == "cpu":
        return ["CPUExecutionProvider"]
    if runtime == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if runtime == "tensorrt":
        trt = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(runtime_cache_dir() / "tensorrt"),
               "trt_fp16_enable": precision == "fp16"}
        return [("TensorrtExecutionProvider", trt), "CUDAExecutionProvider", "CPUExecutionProvider"]
    msg = f"not an ONNX Runtime runtime: {runtime!r}"
    raise ValueError(msg)


class Runner:
    """A model loaded on one runtime: ``run(outputs, feeds)`` returns the outputs named in ``outputs`` as numpy
    arrays, in that order.

    Attributes:
        runtime: ``cpu``, ``openvino``, ``cuda`` or ``tensorrt``.
        provider: What runs it, for logs and ``info()`` (e.g. ``CPUExecutionProvider``, ``OpenVINO CPU bf16``).
        precision: ``fp32``, ``bf16`` or ``fp16``.
    """

    runtime: str
    provider: str
    precision: str

    def run(self, outputs: Sequence[str], feeds: dict[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        raise NotImplementedError


class OrtRunner(Runner):
    """An ONNX Runtime session (CPU, CUDA or TensorRT provider). On CUDA and TensorRT the inputs are bound once
    per call (IO binding: one host-to-device copy) and the outputs copied back once."""

    def __init__(self, session: ort.InferenceSession, runtime: str, precision: str = "fp32") -> None:
        self.session, self.runtime, self.precision = session, runtime, precision
        self.provider = session.get_providers()[0]
        self._device = runtime in ("cuda", "tensorrt") and self.provider != "CPUExecutionProvider"

    def run(self, outputs: Sequence[str], feeds: dict[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        if not self._device:
            return self.session.run(list(outputs), feeds)
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in outputs:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()


class OpenVinoRunner(Runner):
    """The model compiled by OpenVINO for the CPU, latency hint, ``threads`` inference threads (0: OpenVINO's
    default), in bf16 where asked and the CPU has bf16 units (fp32 otherwise). Calls are serialised (one infer
    request)."""

    def __init__(self, path: Path, what: str, threads: int, precision: str) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            msg = f"{what}: device 'openvino' requested but the openvino package is not installed"
            raise ModelError(msg) from exc
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            precision = "fp32"  # this CPU has no bf16 units: OpenVINO would emulate it, slower than fp32
        hints: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY",
                                 "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        if threads:
            hints["INFERENCE_NUM_THREADS"] = threads
        try:
            self._compiled = core.compile_model(str(path), "CPU", hints)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            msg = f"{what}: OpenVINO cannot compile {path} ({first[:200]})"
            raise ModelError(msg) from exc
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()
        self.runtime, self.precision = "openvino", precision
        self.provider = f"OpenVINO CPU {precision}"

    def run(self, outputs: Sequence[str], feeds: dict[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        with self._lock:
            result = self._request.infer(feeds)
            by_name = {port.get_any_name(): value for port, value in result.items()}
            return [np.array(by_name[name]) for name in outputs]


def effective_precision(runtime: str, precision: str) -> str:
    """The precision a runtime runs at when ``precision`` is asked: bf16 on OpenVINO, fp16 on TensorRT, else fp32."""
    return precision if (runtime, precision) in (("openvino", "bf16"), ("tensorrt", "fp16")) else "fp32"


def open_runner(path: Path, what: str, runtime: str, threads: int, precision: str) -> Runner:
    """Load ``path`` on one runtime, at ``precision`` where the runtime has it (:func:`effective_precision`).

    Raises:
        ModelError: If the runtime is not available here, or cannot load the model.
    """
    if runtime not in DEVICES[1:]:
        msg = f"{what}: device must be one of {list(DEVICES)}, got {runtime!r}"
        raise ModelError(msg)
    precision = effective_precision(runtime, precision)
    if runtime == "openvino":
        return OpenVinoRunner(path, what, threads, precision)
    if runtime == "tensorrt":
        (runtime_cache_dir() / "tensorrt").mkdir(parents=True, exist_ok=True)
    try:
        sess = ort.InferenceSession(str(path), sess_options=ort_options(threads),
                                    providers=ort_providers(runtime, precision))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        msg = f"{what}: {path} is not a loadable ONNX model ({first[:200]})"
        raise ModelError(msg) from exc
    want = ort_providers(runtime, precision)[0]
    want = want[0] if isinstance(want, tuple) else want
    if sess.get_providers()[0] != want:
        msg = f"{what}: device {runtime!r} requested but {want} did not attach (providers: {sess.get_providers()})"
        raise ModelError(msg)
    return OrtRunner(sess, runtime, precision)


@dataclass(frozen=True)
class Choice:
    """The runtime ``auto`` chose for a model on this node, and what it measured."""

    runtime: str
    ms_per_call: dict[str, float]  # runtime -> median ms per reference call (those that passed)
    rejected: dict[str, str]  # runtime -> why it was not used


def node_key() -> str:
    """The CPU and GPU model of this node (what the runtime choice depends on besides the model)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            gpus += [ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines() if ln.startswith("Model:")]
        except OSError:
            continue
    gpu = ",".join(gpus)
    return f"{cpu}|{os.cpu_count()}|{gpu}"


def choose_runtime(
    path: Path,
    what: str,
    device: str,
    threads: int,
    precision: str,
    reference: Callable[[Runner], list[npt.NDArray[Any]]],
    expected: list[npt.NDArray[Any]],
    cache: bool = True,
    opened: dict[str, Runner] | None = None,
) -> tuple[Runner, Choice]:
    """Open ``path`` on the fastest runtime among :func:`candidates` that reproduces ``expected``.

    Each candidate runs ``reference`` (a fixed input; once to check, then ``TIMING_RUNS`` times interleaved with the
    other candidates, median), which returns the model's probabilities (0-1; e.g. person and keypoint scores, not
    pixel coordinates). They must lie within ``REFERENCE_TOLERANCE[precision]`` of ``expected`` (ONNX Runtime CPU,
    fp32), or the candidate is rejected. With ``cache``, the choice is kept in :func:`runtime_cache_dir` per model
    file, node (:func:`node_key`), threads, precision and package versions, so that later starts on the same kind of
    node skip the measurement. ``opened`` holds runners already open (e.g. the caller's ONNX Runtime CPU session,
    under ``"cpu"``), used as those candidates instead of opening the model a second time.

    Raises:
        ModelError: If no candidate loads and passes (the message names each candidate's reason).
    """
    names = candidates(device)
    key = _cache_key(path, names, threads, precision)
    cached = _read_cache(key) if cache and len(names) > 1 else None
    rejected: dict[str, str] = {}
    runners: dict[str, Runner] = {}
    for name in [cached.runtime] if cached else names:
        runner = _checked(path, what, name, threads, precision, reference, expected, rejected, opened)
        if runner is not None:
            runners[name] = runner
    if cached and runners:
        return runners[cached.runtime], cached
    for name in [n for n in names if n not in runners and n not in rejected] if cached else []:
        runner = _checked(path, what, name, threads, precision, reference, expected, rejected, opened)  # stale cache
        if runner is not None:
            runners[name] = runner
    if not runners:
        msg = f"{what}: no runtime of {names} can run {path}: " + "; ".join(f"{k}: {v}" for k, v in rejected.items())
        raise ModelError(msg)
    times: dict[str, list[float]] = {n: [] for n in runners}
    for _ in range(TIMING_RUNS if len(runners) > 1 else 0):  # interleaved: a busy node slows every candidate alike
        for name, runner in runners.items():
            t0 = time.perf_counter()
            reference(runner)
            times[name].append(time.perf_counter() - t0)
    ms = {n: round(1000.0 * float(np.median(t)), 3) for n, t in times.items() if t}
    best = min(runners, key=lambda n: ms.get(n, 0.0))
    choice = Choice(best, ms, rejected)
    if cache and len(names) > 1:
        _write_cache(key, choice)
    logger.info("%s: runtime %s (ms per reference call %s; rejected %s)", what, best, ms, rejected)
    return runners[best], choice


def _checked(path: Path, what: str, name: str, threads: int, precision: str,
             reference: Callable[[Runner], list[npt.NDArray[Any]]], expected: list[npt.NDArray[Any]],
             rejected: dict[str, str], opened: dict[str, Runner] | None = None) -> Runner | None:
    """The runner of ``name`` if it loads and reproduces ``expected``; else None, with the reason in ``rejected``."""
    try:
        runner = (opened or {}).get(name) or open_runner(path, what, name, threads, precision)
        got = reference(runner)
    except ModelError as exc:
        rejected[name] = str(exc)
        return None
    diff = max((float(np.max(np.abs(np.asarray(g, np.float64) - np.asarray(e, np.float64))))
                for g, e in zip(got, expected, strict=True)), default=0.0)
    tol = REFERENCE_TOLERANCE[runner.precision]
    if not np.isfinite(diff) or diff > tol:
        rejected[name] = f"reference check: largest difference {diff:.4g} from ONNX Runtime CPU (allowed {tol})"
        return None
    return runner


def _cache_key(path: Path, names: list[str], threads: int, precision: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(hashlib.file_digest(f, "sha256").digest())
    versions = [ort.__version__]
    if "openvino" in names:
        import openvino

        versions.append(openvino.__version__)
    h.update(json.dumps([node_key(), names, threads, precision, versions]).encode())
    return h.hexdigest()[:16]


def _read_cache(key: str) -> Choice | None:
    p = runtime_cache_dir() / f"choice-{key}.json"
    try:
        d = json.loads(p.read_text())
        return Choice(d["runtime"], d["ms_per_call"], d["rejected"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(key: str, choice: Choice) -> None:
    p = runtime_cache_dir() / f"choice-{key}.json"
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"runtime": choice.runtime, "ms_per_call": choice.ms_per_call,
                                   "rejected": choice.rejected}))
        tmp.replace(p)
    except OSError as exc:  # a read-only cache only costs the measurement next time
        logger.warning("cannot cache the runtime choice in %s: %s", p, exc)
