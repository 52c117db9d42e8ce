"""Export of the trained classifier to the shipped ONNX file: fp32 export, int8 quantization, metadata, checks.

The exported model follows the maskwatch classifier contract:

- input ``crops``: uint8 `(N, S, S, 3)` RGB, exactly what :func:`pipeline.headbox.cut_crops` returns (N dynamic,
  S = ``input_px`` fixed). Cast, normalisation and NHWC->NCHW happen inside the graph.
- output ``mask_score``: float32 `(N,)`, probability that the face wears a mask correctly (a mask worn incorrectly
  counts as no mask).
- metadata_props ``maskwatch.crop_margin``, ``maskwatch.input_px``, ``maskwatch.arch``,
  ``maskwatch.val_balanced_accuracy``, ``maskwatch.train_data`` (sha256 of the training sample list),
  ``maskwatch.sensitivity`` / ``maskwatch.specificity`` (held-out ``correct/n``) and ``maskwatch.licence``.
- file under 5 MB (int8 static quantization when the float model is larger).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from maskwatch.training.networks import torch_module
from pipeline.onnx_models import MaskClassifier, make_session

LICENCE = "Apache-2.0, trained by the maskwatch project"
MAX_ONNX_BYTES = 5 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Exported:
    """What :func:`write_classifier` wrote: the file, whether it is int8, sizes, and both files' held-out scores."""

    path: Path
    quantized: bool
    size: int
    fp32_size: int
    fp32_score: npt.NDArray[np.float32]
    score: npt.NDArray[np.float32]


def write_classifier(
    model: Any, out_path: Path, input_px: int, calib: npt.NDArray[np.uint8], val_crops: npt.NDArray[np.uint8],
    threads: int,
) -> Exported:
    """Export ``model`` (the contract module) to ``out_path``: fp32, or int8 calibrated on ``calib`` when the fp32
    file is :data:`MAX_ONNX_BYTES` or more; score ``val_crops`` with both files (metadata is written later, by
    :func:`finish_classifier`)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(model, fp32, input_px)
        fp32_size = fp32.stat().st_size
        fp32_score = predict_onnx(make_session(fp32, "mask classifier", threads), val_crops)
        quantized = fp32_size >= MAX_ONNX_BYTES
        if quantized:
            quantize_int8(fp32, out_path, calib)
        else:
            out_path.write_bytes(fp32.read_bytes())
    score = predict_onnx(make_session(out_path, "mask classifier", threads), val_crops)
    return Exported(out_path, quantized, out_path.stat().st_size, fp32_size, fp32_score, score)


def finish_classifier(path: Path, meta: dict[str, str], threads: int) -> MaskClassifier:
    """Write ``meta`` into the file, check its size, and load it as the runtime does (contract and metadata checks).

    Raises:
        RuntimeError: The file is :data:`MAX_ONNX_BYTES` or larger.
    """
    set_metadata(path, meta)
    size = path.stat().st_size
    if size >= MAX_ONNX_BYTES:
        msg = f"{path} is {size} bytes, over the {MAX_ONNX_BYTES} limit"
        raise RuntimeError(msg)
    return MaskClassifier(path, device="cpu", threads=threads)


def predict_onnx(sess: Any, crops: npt.NDArray[np.uint8], batch: int = 256) -> npt.NDArray[np.float32]:
    """Run the exported model on uint8 crops."""
    outs = [sess.run(["mask_score"], {"crops": crops[i : i + batch]})[0] for i in range(0, len(crops), batch)]
    return np.concatenate(outs).astype(np.float32) if outs else np.zeros(0, np.float32)


def export_onnx(model: Any, path: Path, input_px: int) -> None:
    """Export the contract module (uint8 NHWC in, `(N,)` float32 out, dynamic N) to ``path``."""
    torch = torch_module()
    model.eval()
    dummy = torch.zeros((2, input_px, input_px, 3), dtype=torch.uint8)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=["crops"],
        output_names=["mask_score"],
        dynamic_axes={"crops": {0: "N"}, "mask_score": {0: "N"}},
        opset_version=18,
        dynamo=False,
    )


def quantize_int8(fp32_path: Path, out_path: Path, calib: npt.NDArray[np.uint8]) -> None:
    """Static int8 quantization (QDQ, per-channel weights) calibrated on real training crops."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"crops": calib[i : i + 32]} for i in range(0, len(calib), 32)])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            op_types_to_quantize=["Conv", "Gemm", "MatMul", "Add", "Mul", "Clip", "Relu", "GlobalAveragePool"],
            extra_options={"CalibPercentile": 99.99},
        )


def set_metadata(path: Path, meta: dict[str, str]) -> None:
    """Write ``meta`` into the model's metadata_props (replacing keys that exist)."""
    import onnx

    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.producer_name = "maskwatch"
    onnx.save(model, str(path))
