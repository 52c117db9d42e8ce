"""Person re-identification embeddings: Intel Open Model Zoo ``person-reidentification-retail-0288`` on OpenVINO.

The tracker (:mod:`pipeline.tracking`) gives a returning person their id back when the embedding of a new track's
person crop is close to a recently lost track's. The model ships in ``maskwatch/assets`` with its licence:

- source: Open Model Zoo 2023.0 release (``models_bin/1/person-reidentification-retail-0288/FP32``), Apache-2.0
  (``maskwatch/assets/person-reidentification-retail-0288.LICENSE``); the files were taken from the GitHub
  repository yas-sim/object-tracking-line-crossing-area-intrusion at 7d474dd (``intel/...``), and their SHA-384 match
  the checksums of ``models/intel/person-reidentification-retail-0288/model.yml`` in openvinotoolkit/open_model_zoo.
- an OSNet-based network (0.174 GFLOPs, 0.18 M parameters; Market-1501 rank-1 86.1 %, mAP 58.9 % per its model card).
  Input `(1, 3, 256, 128)` BGR 0-255 (mean, scale and BGR->RGB are inside the IR); output a 256-d embedding, compared
  by cosine.

Measured on PETS09 S2L1 (person crops of the ground-truth people, boxes ~80 px tall): cosine distance between crops
of one person 10-60 frames apart, median 0.28 (90th percentile 0.52); between two people near each other, median
0.84 (10th percentile 0.67). Torso colour histograms did not separate these walkers (docs/validation.md).
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.paths import ASSETS
from schemas.errors import ModelError

REID_MODEL = ASSETS / "person-reidentification-retail-0288.xml"
"""The bundled model's IR (its weights: the ``.bin`` beside it)."""

REID_SHA256 = {
    "person-reidentification-retail-0288.xml": "30f452b2ed2763f7bf429eea23f8f243ad0e7f3cdd7226db6888f1660efb3424",
    "person-reidentification-retail-0288.bin": "6496b8d51741703c9e9c7f6474cb96c60de1856d7b4fd77235e48cea146066a5",
}
"""sha256 of the bundled files (checked when they are loaded)."""

INPUT_HW = (256, 128)
"""The network's input `(height, width)` in pixels."""

EMBEDDING_DIM = 256


class ReidNet:
    """Person embeddings from the OpenVINO IR at ``model_xml`` on the CPU.

    Args:
        model_xml: The IR's ``.xml`` (its ``.bin`` beside it), or an ONNX file. The bundled files are checked against
            their sha256.
        threads: OpenVINO inference threads (1: the camera shard runs it beside its cameras' other stages).

    Raises:
        ModelError: If a file is missing, a bundled file's sha256 differs, or the network's input is not
            `(1, 3, 256, 128)` and its output not `(1, 256)`.
    """

    def __init__(self, model_xml: Path | str = REID_MODEL, threads: int = 1) -> None:
        import openvino as ov

        xml = Path(model_xml)
        for f in (xml, xml.with_suffix(".bin")) if xml.suffix == ".xml" else (xml,):
            if not f.is_file():
                msg = f"re-identification model file not found: {f}"
                raise ModelError(msg)
            want = REID_SHA256.get(f.name)
            if want is not None:
                got = hashlib.sha256(f.read_bytes()).hexdigest()
                if got != want:
                    msg = f"{f}: sha256 {got}, expected {want} (the file that ships with maskwatch)"
                    raise ModelError(msg)
        model = ov.Core().read_model(xml)
        shapes = ([tuple(i.get_partial_shape().to_shape()) for i in model.inputs],
                  [tuple(o.get_partial_shape().to_shape()) for o in model.outputs])
        if shapes != ([(1, 3, *INPUT_HW)], [(1, EMBEDDING_DIM)]):
            msg = (f"{xml}: expected input (1, 3, {INPUT_HW[0]}, {INPUT_HW[1]}) and output (1, {EMBEDDING_DIM}), "
                   f"got inputs {shapes[0]} and outputs {shapes[1]}")
            raise ModelError(msg)
        model.reshape([-1, 3, *INPUT_HW])  # any number of crops per call
        self._compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": str(threads)})
        self._local = threading.local()  # per thread: one infer request, and the CPU its calls took

    def thread_cpu_s(self) -> float:
        """CPU seconds the calling thread spent in :meth:`embed` so far (thread time; OpenVINO runs a one-thread
        network in the calling thread). The camera loop counts it as a model call, apart from tracking."""
        return getattr(self._local, "cpu_s", 0.0)

    def embed(self, frame_bgr: npt.NDArray[np.uint8], bbox_xyxy: npt.NDArray[np.float32],
              ) -> npt.NDArray[np.float32]:
        """Unit-length embeddings of the people in a frame.

        Args:
            frame_bgr: `(H, W, 3)` uint8 BGR full-resolution frame.
            bbox_xyxy: `(N, 4)` float32 person boxes, original-frame pixels (clipped to the frame; a box under
                2 px a side is widened to 2 px).

        Returns:
            `(N, 256)` float32, each row of L2 norm 1 (compare two with :func:`cosine_distance`).
        """
        boxes = np.asarray(bbox_xyxy, np.float32).reshape(-1, 4)
        if not len(boxes):
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        t0 = time.thread_time()
        batch = np.empty((len(boxes), 3, *INPUT_HW), np.float32)
        for i, box in enumerate(boxes):
            crop = cv2.resize(person_crop(frame_bgr, box), (INPUT_HW[1], INPUT_HW[0]), interpolation=cv2.INTER_LINEAR)
            batch[i] = crop.transpose(2, 0, 1)
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        out = np.array(request.infer([batch])[0], np.float32).reshape(len(boxes), EMBEDDING_DIM)
        self._local.cpu_s = self.thread_cpu_s() + time.thread_time() - t0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def person_crop(frame_bgr: npt.NDArray[np.uint8], bbox_xyxy: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """The box's pixels (a view of ``frame_bgr``): the box clipped to the frame, at least 2 px a side.

    Args:
        frame_bgr: `(H, W, 3)` uint8 frame, H and W at least 2.
        bbox_xyxy: `(4,)` box in the frame's pixels.
    """
    h, w = frame_bgr.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in bbox_xyxy)
    a, b = min(max(int(x0), 0), w - 2), min(max(int(y0), 0), h - 2)
    c, d = max(min(int(np.ceil(x1)), w), a + 2), max(min(int(np.ceil(y1)), h), b + 2)
    return frame_bgr[b:d, a:c]


def cosine_distance(a: npt.NDArray[np.float32] | None, b: npt.NDArray[np.float32] | None) -> float:
    """``1 - cos`` of two unit-length embeddings, clipped to [0, 1] (opposite directions count as 1); 1 when either
    is missing."""
    if a is None or b is None:
        return 1.0
    return float(min(1.0, max(0.0, 1.0 - float(np.dot(a, b)))))


def direction_distance(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    """``1 - cos`` of the angle between two vectors of any length, clipped to [0, 1]: for means of unit-length
    embeddings (:func:`pipeline.appearance.find_switch` compares the means of a track's two parts); 1 when either is
    zero."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0
    return float(min(1.0, max(0.0, 1.0 - float(np.dot(a, b)) / (na * nb))))


@functools.lru_cache(maxsize=4)
def load_reid_net(model_xml: Path | str = REID_MODEL) -> ReidNet:
    """One :class:`ReidNet` per model file and process, shared by its cameras."""
    return ReidNet(model_xml)
