"""The pose model and the mask classifier, with their input/output contracts checked, on the runtime the config asks
for (:mod:`pipeline.runtime`: ONNX Runtime CPU/CUDA/TensorRT or OpenVINO; ``auto`` measures which is fastest here).

The contracts are read from an ONNX Runtime CPU session, which also computes the reference output that any other
runtime must reproduce before it is used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from pipeline.pose_postprocess import POSE_ROWS
from pipeline.prevalence import ClassifierValidation
from pipeline.runtime import Choice, OrtRunner, Runner, choose_runtime, open_runner
from schemas.errors import ModelError

logger = logging.getLogger(__name__)
ort.set_default_logger_severity(3)

# The reference pose input when the model takes any size: one 640x384 image, the letterbox of a 16:9 camera.
REFERENCE_POSE_HW = (384, 640)


def make_session(path: Path | str, what: str, threads: int = 0) -> ort.InferenceSession:
    """Open an ONNX model in ONNX Runtime on the CPU (the session the contracts and reference outputs come from).

    Args:
        path: The ``.onnx`` file.
        what: What the model is, for error messages ("pose model", "mask classifier").
        threads: Intra-op threads, spinning off (0: ONNX Runtime's defaults, as many spinning threads as cores).

    Raises:
        ModelError: If the file is missing or not a loadable ONNX model.
    """
    p = Path(path)
    if not p.is_file():
        msg = f"{what}: model file not found: {p} (run `maskwatch models build`)"
        raise ModelError(msg)
    runner = open_runner(p, what, "cpu", threads, "fp32")
    assert isinstance(runner, OrtRunner)  # the cpu runtime is ONNX Runtime's
    return runner.session


def _runner(
    session: ort.InferenceSession, path: Path, what: str, device: str, threads: int, precision: str,
    outputs: list[str], feeds: dict[str, npt.NDArray[Any]],
    probabilities: Callable[[list[npt.NDArray[Any]]], list[npt.NDArray[Any]]],
) -> tuple[Runner, Choice | None]:
    """The CPU session itself for ``device="cpu"``, else the runtime :func:`choose_runtime` picks, checked against
    the CPU session's ``probabilities`` (of its outputs) for ``feeds``; the CPU session is that choice's ONNX Runtime
    CPU candidate, not a second copy of the model."""
    cpu = OrtRunner(session, "cpu")
    if device == "cpu":
        return cpu, None
    expected = probabilities(session.run(outputs, feeds))
    runner, choice = choose_runtime(path, what, device, threads, precision,
                                    lambda r: probabilities(r.run(outputs, feeds)), expected, opened={"cpu": cpu})
    logger.info("%s %s on %s", what, path.name, runner.provider)
    return runner, choice


def _kept(session: ort.InferenceSession, runner: Runner) -> ort.InferenceSession | None:
    """The contract-check CPU session where it is the one that runs the model; None (freed) where another runtime
    was chosen."""
    return session if isinstance(runner, OrtRunner) and runner.session is session else None


class PoseModel:
    """A YOLO-pose ONNX model with the Ultralytics output layout `(B, 56, A)`.

    Input: ``images`` float32 `(B, 3, H, W)` RGB in [0, 1], H and W multiples of 32 (dynamic axes).

    Args:
        path: The ``.onnx`` file.
        device: ``auto``, ``cpu``, ``openvino``, ``cuda`` or ``tensorrt`` (:mod:`pipeline.runtime`).
        threads: Inference threads, spinning off (0: the runtime's defaults).
        precision: ``fp32``, or ``bf16`` (OpenVINO) / ``fp16`` (TensorRT) where the runtime has it.

    Attributes:
        provider: What runs the model (e.g. ``CPUExecutionProvider``, ``OpenVINO CPU fp32``).
        choice: What ``auto`` measured (None for ``cpu``).
        session: The ONNX Runtime CPU session where it runs the model; None where another runtime does.

    Raises:
        ModelError: If the model's input is not rank 4 with 3 channels or its output is not `(B, 56, A)`, or no
            runtime of ``device`` can run it.
    """

    def __init__(self, path: Path | str, device: str = "auto", threads: int = 0, precision: str = "fp32") -> None:
        self.path = Path(path)
        session = make_session(path, "pose model", threads)
        self.session = session
        inp, out = self.session.get_inputs(), self.session.get_outputs()
        shape_in = inp[0].shape if inp else None
        shape_out = out[0].shape if out else None
        if len(inp) != 1 or len(shape_in) != 4 or shape_in[1] != 3:
            msg = f"pose model {self.path}: expected one input (B, 3, H, W), got {[(i.name, i.shape) for i in inp]}"
            raise ModelError(msg)
        if len(out) < 1 or len(shape_out) != 3 or shape_out[1] != POSE_ROWS:
            msg = (
                f"pose model {self.path}: expected output (B, {POSE_ROWS}, A) "
                f"(YOLO pose, 17 COCO keypoints), got {shape_out}"
            )
            raise ModelError(msg)
        self.input_name = inp[0].name
        self.output_name = out[0].name
        self.fixed_hw = tuple(shape_in[2:]) if all(isinstance(d, int) for d in shape_in[2:]) else None
        h, w = self.fixed_hw or REFERENCE_POSE_HW
        ref = reference_images(1, h, w)
        self.runner, self.choice = _runner(session, self.path, "pose model", device, threads, precision,
                                           [self.output_name], {self.input_name: self._to_input(ref)},
                                           lambda out: [out[0][:, 4], out[0][:, 7::3]])  # person, keypoint scores
        self.provider = self.runner.provider
        self.session = _kept(session, self.runner)

    @staticmethod
    def _to_input(images_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return np.ascontiguousarray(images_bgr[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32) / 255.0

    def infer(self, images_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Run the model on a batch of letterboxed images.

        Args:
            images_bgr: `(B, H, W, 3)` uint8 BGR letterboxed images (one input shape per batch).

        Returns:
            `(B, 56, A)` float32 raw output, model-input pixels.

        Raises:
            ValueError: If the batch is not `(B, H, W, 3)` uint8, or H, W differ from a fixed-size model's.
        """
        if images_bgr.ndim != 4 or images_bgr.shape[3] != 3 or images_bgr.dtype != np.uint8:
            msg = f"pose batch must be (B, H, W, 3) uint8, got {images_bgr.shape} {images_bgr.dtype}"
            raise ValueError(msg)
        if self.fixed_hw is not None and tuple(images_bgr.shape[1:3]) != self.fixed_hw:
            msg = f"pose model {self.path.name} takes {self.fixed_hw} inputs, got {images_bgr.shape[1:3]}"
            raise ValueError(msg)
        return self.runner.run([self.output_name], {self.input_name: self._to_input(images_bgr)})[0]


class MaskClassifier:
    """The mask / no-mask classifier (our own, ``maskwatch/assets/mask_classifier.onnx`` by default).

    Contract: input ``crops`` uint8 `(N, S, S, 3)` RGB (as :func:`pipeline.headbox.cut_crops` returns), output
    ``mask_score`` float32 `(N,)`, the probability that the face wears a mask correctly. Metadata
    ``maskwatch.crop_margin`` tells how the crops were cut at training time; inference cuts them the same way.
    Optional metadata ``maskwatch.sensitivity`` / ``maskwatch.specificity`` (``"correct/n"`` on held-out faces,
    see the model card) become :attr:`validation`, which corrects the camera statistics; optional
    ``maskwatch.validation_source`` says what they were measured on. An optional second output ``usable_score``
    float32 `(N,)` is the probability that the crop is a face that can show a mask (not a back of a head, a blur, a
    face whose mouth is hidden; :mod:`maskwatch.training.usable`); :attr:`has_usable` says whether it is there.

    Args:
        path: The ``.onnx`` file.
        device, threads, precision: As for :class:`PoseModel`.

    Raises:
        ModelError: If the file breaks the contract, or no runtime of ``device`` can run it.
    """

    def __init__(self, path: Path | str, device: str = "auto", threads: int = 0, precision: str = "fp32") -> None:
        self.path = Path(path)
        session = make_session(path, "mask classifier", threads)
        self.session = session
        inp, out = self.session.get_inputs(), self.session.get_outputs()
        if len(inp) != 1 or inp[0].type != "tensor(uint8)" or len(inp[0].shape) != 4 or inp[0].shape[3] != 3:
            msg = (
                f"mask classifier {self.path}: expected input uint8 (N, S, S, 3), "
                f"got {[(i.name, i.type, i.shape) for i in inp]}"
            )
            raise ModelError(msg)
        if not isinstance(inp[0].shape[1], int) or inp[0].shape[1] != inp[0].shape[2]:
            msg = f"mask classifier {self.path}: expected a fixed square input size, got {inp[0].shape}"
            raise ModelError(msg)
        names = [o.name for o in out]
        if "mask_score" not in names:
            msg = f"mask classifier {self.path}: expected an output named 'mask_score', got {names}"
            raise ModelError(msg)
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.crop_margin = float(meta["maskwatch.crop_margin"])
        except (KeyError, ValueError) as exc:
            msg = f"mask classifier {self.path}: metadata 'maskwatch.crop_margin' missing or not a number"
            raise ModelError(msg) from exc
        self.validation: ClassifierValidation | None = None
        if "maskwatch.sensitivity" in meta or "maskwatch.specificity" in meta:
            try:
                self.validation = ClassifierValidation.parse(
                    meta.get("maskwatch.sensitivity", ""),
                    meta.get("maskwatch.specificity", ""),
                    f"{self.path.name} metadata: "
                    + meta.get("maskwatch.validation_source", "per face, held-out annotated faces (model card)"),
                )
            except ValueError as exc:
                msg = f"mask classifier {self.path}: metadata maskwatch.sensitivity/specificity: {exc}"
                raise ModelError(msg) from exc
        self.input_px = int(inp[0].shape[1])
        self.input_name = inp[0].name
        self.has_usable = "usable_score" in names
        self._outputs = ["mask_score", "usable_score"] if self.has_usable else ["mask_score"]
        self.metadata = dict(meta)
        s = self.input_px
        crops = reference_images(4, s, s)
        self.runner, self.choice = _runner(session, self.path, "mask classifier", device, threads, precision,
                                           self._outputs, {self.input_name: crops}, lambda out: out)
        self.provider = self.runner.provider
        self.session = _kept(session, self.runner)

    def predict(self, crops_rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Mask scores for `(N, S, S, 3)` uint8 RGB crops; returns `(N,)` float32 in [0, 1] (`N == 0` allowed).

        Raises:
            ValueError: If the crops are not `(N, S, S, 3)` uint8 with S the model's input size.
        """
        return self.predict_scores(crops_rgb)[:, 0]

    def predict_scores(self, crops_rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Mask and usable-face scores in one pass: `(N, 2)` float32 in [0, 1]; column 1 is 1 when the model has no
        ``usable_score`` output.

        Raises:
            ValueError: If the crops are not `(N, S, S, 3)` uint8 with S the model's input size.
        """
        s = self.input_px
        if crops_rgb.ndim != 4 or crops_rgb.shape[1:] != (s, s, 3) or crops_rgb.dtype != np.uint8:
            msg = f"crops must be (N, {s}, {s}, 3) uint8, got {crops_rgb.shape} {crops_rgb.dtype}"
            raise ValueError(msg)
        if len(crops_rgb) == 0:
            return np.zeros((0, 2), np.float32)
        out = self.runner.run(self._outputs, {self.input_name: np.ascontiguousarray(crops_rgb)})
        mask = np.asarray(out[0], np.float32).reshape(-1)
        usable = np.asarray(out[1], np.float32).reshape(-1) if self.has_usable else np.ones_like(mask)
        return np.stack([mask, usable], axis=1)


def reference_images(n: int, h: int, w: int) -> npt.NDArray[np.uint8]:
    """`(n, h, w, 3)` uint8 images, the same on every call: smooth colour gradients, stripes and blobs with noise,
    so that a model's outputs are not all zero (the reference input a runtime must reproduce)."""
    rng = np.random.default_rng(20261206)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        f = rng.uniform(0.01, 0.08, size=(3, 2))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (0.15 * min(h, w)) ** 2))
        for c in range(3):
            v = 0.5 + 0.25 * np.sin(f[c, 0] * x + i) * np.cos(f[c, 1] * y) + 0.3 * blob
            out[i, :, :, c] = np.clip(255 * v + rng.normal(0, 8, size=(h, w)), 0, 255).astype(np.uint8)
    return out
