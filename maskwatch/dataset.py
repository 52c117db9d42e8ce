"""Face-crop datasets for the mask classifier: crops from videos for a person to label, crops from annotated boxes.

Every crop is cut as the pipeline cuts it at inference time: :func:`~pipeline.headbox.crop_box` with the
classifier's ``crop_margin`` around the face box, then :func:`~pipeline.headbox.cut_crops` at its ``input_px`` from
the full-resolution frame or photo. Crops are saved as lossless PNG, so training reads exactly what inference sees.

A dataset folder holds ``with_mask/``, ``without_mask/``, ``mask_worn_incorrectly/`` (the labels, see
:data:`~maskwatch.training.data.LABELS`), ``unlabelled/`` (crops from videos, to be sorted into the label folders
by a person) and ``manifest.csv`` (one row per crop; its ``file`` column is the path when written, the file may
since have been moved to a label folder: files are found by name). :func:`load_crop_dir` reads it back.

- :func:`extract_crops` (``maskwatch dataset extract``): pose + tracking on videos in one process (no Ray) with the
  pipeline's own functions and face rules; up to ``per_track`` crops per tracked person, spread over the track.
- :func:`import_boxes` (``maskwatch dataset import-boxes``): ``boxes.csv`` detection sets into labelled crops with
  the trainer's train/val split by source image.

Privacy: these are the only code paths that write face crops to disk; the pipeline itself never does.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from maskwatch.training.data import (
    LABELS,
    CropSet,
    FaceBox,
    cut_box_crops,
    face_photo_box,
    read_boxes_csv,
    split_images,
)
from pipeline.camera import CameraPipeline, TrackedFrame
from pipeline.camera_loop import CameraSpec, Message, in_process_host, run_camera
from pipeline.config import Config
from pipeline.facegate import CropScorer, load_face_gate
from pipeline.headbox import crop_box, cut_crops
from pipeline.letterbox import default_pose_input_px
from pipeline.onnx_models import MaskClassifier, PoseModel
from pipeline.source import Frame, is_live, probe
from schemas.coco17 import FACE_KEYPOINTS
from schemas.errors import ConfigError, SourceError
from schemas.messages import PersonDecision

logger = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
DECISIONS = "decisions.jsonl"  # the decision `maskwatch run` gives each person of the videos extracted
UNLABELLED = "unlabelled"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
EXTRACT_COLUMNS = (
    "file", "camera_id", "source", "track_id", "frame_idx", "pts_ns", "x1", "y1", "x2", "y2",
    "crop_x1", "crop_y1", "crop_x2", "crop_y2", "face_px", "pose_score", "face_keypoint_conf", "mask_score",
    "face_score", "usable_score", "label",
)
IMPORT_COLUMNS = ("file", "label", "source", "x1", "y1", "x2", "y2", "face_px", "split")


def _f(v: float) -> str:
    """A float32 value as text that reads back to the same float32 (9 significant digits)."""
    return f"{float(v):.9g}"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text) or "x"


def _write_png(path: Path, crop_rgb: npt.NDArray[np.uint8]) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2BGR)):
        msg = f"cannot write {path}"
        raise OSError(msg)


def _write_manifest(path: Path, columns: Sequence[str], rows: list[dict[str, str]]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def _make_dirs(out: Path, unlabelled: bool) -> None:
    for name in (*LABELS, UNLABELLED) if unlabelled else LABELS:
        (out / name).mkdir(parents=True, exist_ok=True)


# --- import-boxes ------------------------------------------------------------------------------------------------


def import_boxes(
    boxes_csvs: Sequence[Path | str],
    out_dir: Path | str,
    *,
    crop_margin: float,
    input_px: int,
    min_face_px: float = 10.0,
    seed: int = 0,
    val_fraction: float = 0.2,
    force: bool = False,
) -> dict[tuple[str, str], int]:
    """Cut the annotated faces of detection sets into labelled crops with a train/val split.

    Writes ``<out_dir>/<label>/<set>_<image stem>_<i>.png`` (``i``: the box's 0-based index among its image's rows in
    the csv) holding ``cut_crops(image, crop_box(face_xyxy, crop_margin), input_px)`` as BGR PNG, and
    ``<out_dir>/manifest.csv`` with :data:`IMPORT_COLUMNS` (``source`` = ``<set>/<image>``, ``face_px`` = box height,
    ``split`` from :func:`~maskwatch.training.data.split_images` over *all* boxes of each set, before the
    ``min_face_px`` filter, exactly as the trainer splits; so for ``andrewmvd_dev`` with seed 0 the ``val`` images
    are the trainer's held-out images, whose faces under ``EVAL_MIN_FACE_PX`` the trainer also leaves out).
    ``mask_worn_incorrectly`` keeps its own label.

    Args:
        boxes_csvs: ``boxes.csv`` files, read by :func:`~maskwatch.training.data.read_boxes_csv` (source ids
            ``<set>/<image>``, set = the csv's folder name, as the trainer reads them); each set at most once.
        out_dir: The dataset folder (created).
        crop_margin: Crop side over face side (the classifier's ``crop_margin``).
        input_px: Crop side in pixels (the classifier's ``input_px``).
        min_face_px: Faces less tall than this (source pixels) are left out.
        seed: Split seed.
        val_fraction: Fraction of each set's images in ``val``, in (0, 1).
        force: Write into a folder that already has a manifest (the manifest is replaced).

    Returns:
        Crops written per ``(label, split)``.

    Raises:
        ConfigError: If ``out_dir`` has a manifest and not ``force``, a set name repeats, an image is missing, or
            two crops would get the same file name.
        ValueError: On an unknown label or a bad row (naming file and line), or ``val_fraction`` outside (0, 1).
        FileNotFoundError: If a csv is missing.
        OSError: If an image cannot be decoded or a crop cannot be written.
    """
    out = Path(out_dir)
    if (out / MANIFEST).exists() and not force:
        msg = f"{out / MANIFEST} exists: choose another --out or pass --force to replace it"
        raise ConfigError(msg)
    sets: dict[str, list[FaceBox]] = {}
    for p in boxes_csvs:
        boxes = read_boxes_csv(Path(p).absolute())  # absolute: a relative "boxes.csv" still has a set name
        name = Path(p).absolute().parent.name
        if name in sets:
            msg = f"{p}: set {name!r} given twice (the set name is the csv's folder name)"
            raise ConfigError(msg)
        missing = sorted({str(b.path) for b in boxes if not b.path.is_file()})
        if missing:
            msg = f"{p}: {len(missing)} image(s) not found, e.g. {missing[0]}"
            raise ConfigError(msg)
        sets[name] = boxes
    _make_dirs(out, unlabelled=False)
    rows: list[dict[str, str]] = []
    counts: dict[tuple[str, str], int] = defaultdict(int)
    names: set[str] = set()
    for set_name, boxes in sets.items():
        _, val = split_images(boxes, val_fraction=val_fraction, seed=seed)
        by_image: dict[str, list[tuple[int, FaceBox]]] = defaultdict(list)
        for b in boxes:
            by_image[b.source].append((len(by_image[b.source]), b))
        for items in by_image.values():
            keep = [(i, b) for i, b in items if b.face_px >= min_face_px]
            if not keep:
                continue
            crops = cut_box_crops([b for _, b in keep], crop_margin=crop_margin, input_px=input_px).crops
            for (i, b), crop in zip(keep, crops, strict=True):
                name = f"{set_name}_{b.path.stem}_{i}.png"
                if name in names:
                    msg = f"two crops named {name} (two images with the stem {b.path.stem!r} in set {set_name!r})"
                    raise ConfigError(msg)
                names.add(name)
                _write_png(out / b.label / name, crop)
                split = "val" if b.source in val else "train"
                counts[(b.label, split)] += 1
                box = dict(zip(("x1", "y1", "x2", "y2"), map(_f, b.xyxy or (np.nan,) * 4), strict=True))
                rows.append({"file": f"{b.label}/{name}", "label": b.label, "source": b.source, **box,
                             "face_px": _f(b.face_px), "split": split})
    _write_manifest(out / MANIFEST, IMPORT_COLUMNS, rows)
    return dict(counts)


# --- extract -----------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Candidate:
    frame_idx: int
    pts_ns: int
    head_xyxy: npt.NDArray[np.float32]
    crop_xyxy: npt.NDArray[np.float32]
    pose_score: float
    quality: float
    mask_score: float
    face_score: float
    usable_score: float
    crop: npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class ExtractSummary:
    """What :func:`extract_crops` did with one video.

    Attributes:
        camera_id: The camera id used in file names (file stem).
        source: The video as given.
        frames: Frames processed (after sampling to the target rate).
        pose_input_px: Longest side of the pose model input used.
        tracks: Tracked people with at least one face the pipeline would classify.
        faces: Faces the pipeline would classify (all frames).
        crops: Crops written.
        wall_s: Seconds taken.
    """

    camera_id: str
    source: str
    frames: int
    pose_input_px: int
    tracks: int
    faces: int
    crops: int
    wall_s: float


def spread_best(times: Sequence[float], quality: Sequence[float], k: int) -> list[int]:
    """Pick up to ``k`` items spread over time, preferring quality.

    The span ``[min(times), max(times)]`` is cut into ``k`` equal bins; the best-quality item of each non-empty bin
    is taken (ties: the earliest), then empty bins are made up by the best remaining items.

    Args:
        times: `(N,)` item times (any unit).
        quality: `(N,)` quality, higher is better.
        k: Items wanted (>= 1).

    Returns:
        ``min(k, N)`` distinct indices, ascending.
    """
    t, q = np.asarray(times, np.float64), np.asarray(quality, np.float64)
    if len(t) <= k:
        return list(range(len(t)))
    edges = np.linspace(t.min(), t.max(), k + 1)
    bins = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, k - 1)
    chosen = [int(idx[np.argmax(q[idx])]) for b in range(k) if len(idx := np.flatnonzero(bins == b))]
    rest = [int(i) for i in np.argsort(-q, kind="stable") if int(i) not in chosen]
    return sorted(chosen + rest[: k - len(chosen)])


def _thin(cands: list[_Candidate]) -> list[_Candidate]:
    """Halve a long track's candidates: the better of each consecutive pair (keeps the spread over time)."""
    return [max(cands[i : i + 2], key=lambda c: c.quality) for i in range(0, len(cands), 2)]


def extract_crops(
    sources: Sequence[str],
    out_dir: Path | str,
    *,
    pose_model_path: Path | str,
    classifier_path: Path | str,
    cfg: Config | None = None,
    per_track: int = 5,
    target_fps: float | None = 10.0,
    pose_input_px: int | None = None,
    force: bool = False,
    on_video: Callable[[ExtractSummary], None] | None = None,
) -> list[ExtractSummary]:
    """Face crops of every tracked person in videos, for a person to label.

    Runs what the pipeline runs, in this process: frames sampled to ``target_fps``
    (:func:`~pipeline.source.read_frames`), :func:`~pipeline.letterbox.letterbox` at the camera's pose input size,
    the pose model, :func:`~pipeline.pose_postprocess.decode_poses` with the config's thresholds, and
    :meth:`~pipeline.camera.CameraPipeline.track` (norfair tracking and the face rules). Of the faces it would
    classify, each track keeps up to ``per_track``: the best by mean facial-keypoint confidence in each of
    ``per_track`` equal time bins of the track (:func:`spread_best`; to bound memory, a track's candidates are
    halved, best of each consecutive pair, whenever they pass ``max(64, 16 * per_track)``). A track's crops are
    written when the tracker drops it. Crops are ``cut_crops(frame, crop_box(head_xyxy, crop_margin), input_px)``
    with the classifier's geometry, saved as PNG to ``<out_dir>/unlabelled/<camera_id>_t<track>_f<frame>.png``;
    ``<out_dir>/manifest.csv`` gets one row per crop (:data:`EXTRACT_COLUMNS`: boxes in original-frame pixels,
    ``face_px`` = head box height, ``pose_score`` the person score, ``face_keypoint_conf`` the quality,
    ``mask_score`` the classifier's score, ``face_score`` the face gate's (``pipeline.facegate``; 1 without a
    gate: a crop below ``faces.gate_min_score`` would not vote in ``maskwatch run``), ``usable_score`` the
    classifier's usable-face score (1 when it has none; below ``faces.usable_min_score`` a crop would not vote
    either), ``label`` empty) and is
    rewritten after each video. ``<out_dir>/decisions.jsonl`` gets the decision ``maskwatch run`` gives each
    person (:class:`schemas.messages.PersonDecision`, one JSON per line; ``camera_id`` and ``track_id`` name the
    crops behind it), so that the crops behind a decision can be looked at. The empty label folders are created
    for the person to sort into. Every source is opened once before any work starts.

    Args:
        sources: Video files (or stream URLs); camera id = file stem (``cam-<i>`` for URLs), made unique.
        out_dir: The dataset folder (created).
        pose_model_path: The pose ONNX model.
        classifier_path: The mask classifier ONNX model (crop margin, crop size, score).
        cfg: Thresholds, tracking, face rules, devices, capture timeouts; None: defaults.
        per_track: Crops per tracked person (>= 1).
        target_fps: Sample rate (None: every frame).
        pose_input_px: Pose input size, a multiple of 32 (None: :func:`~pipeline.letterbox.default_pose_input_px`).
        force: Write into a folder whose ``unlabelled/`` already holds images (rows of an existing manifest for
            other files are kept; files of the same name are replaced).
        on_video: Called with each video's summary when it is done.

    Returns:
        One summary per source.

    Raises:
        SourceError: If a source is missing or unreadable (the message names it).
        ConfigError: On a bad option, an ``unlabelled/`` that is not empty without ``force``, or an existing
            manifest of another kind.
        ModelError: If a model file is missing or does not match.
    """
    cfg = cfg or Config()
    if per_track < 1:
        msg = f"--per-track must be >= 1, got {per_track}"
        raise ConfigError(msg)
    if pose_input_px is not None and (pose_input_px < 32 or pose_input_px % 32):
        msg = f"--pose-input-px must be a positive multiple of 32, got {pose_input_px}"
        raise ConfigError(msg)
    if not sources:
        msg = "no video given: pass --source PATH"
        raise ConfigError(msg)
    ids = [_safe_name(Path(s).stem if not is_live(s) else f"cam-{i}") for i, s in enumerate(sources)]
    if len(set(ids)) != len(ids):
        ids = [f"{c}-{i}" for i, c in enumerate(ids)]
    sizes = [probe(s, c, cfg.capture)[:2] for s, c in zip(sources, ids, strict=True)]
    out = Path(out_dir)
    unl = out / UNLABELLED
    if unl.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in unl.iterdir()) and not force:
        msg = f"{unl} already holds crops: choose another --out, or pass --force to add to it"
        raise ConfigError(msg)
    old_rows: list[dict[str, str]] = []
    if (out / MANIFEST).is_file():
        with (out / MANIFEST).open(newline="") as f:
            reader = csv.DictReader(f)
            columns = tuple(reader.fieldnames or ())
            # Manifests written before the face gate, and before the usable-face score, lack those columns.
            older = [tuple(c for c in EXTRACT_COLUMNS if c not in drop)
                     for drop in (("face_score", "usable_score"), ("usable_score",))]
            if columns not in (EXTRACT_COLUMNS, *older):
                msg = f"{out / MANIFEST} is not a manifest of `dataset extract` (columns {reader.fieldnames})"
                raise ConfigError(msg)
            old_rows = [{"face_score": "", "usable_score": ""} | r for r in reader]
    pose = PoseModel(pose_model_path, cfg.pose.device, cfg.pose.in_process_threads, cfg.pose.precision)
    clf = MaskClassifier(classifier_path, cfg.classify.device, cfg.classify.in_process_threads,
                         cfg.classify.precision)
    gate_path = cfg.faces.gate_model_path
    scorer = CropScorer(clf, load_face_gate(gate_path, cfg.faces.gate_input_px) if gate_path else None)
    _make_dirs(out, unlabelled=True)
    rows: list[dict[str, str]] = []
    summaries: list[ExtractSummary] = []
    for src, cam_id, wh in zip(sources, ids, sizes, strict=True):
        px = pose_input_px or default_pose_input_px(wh)
        summary, video_rows = _extract_video(src, cam_id, wh, px, pose, scorer, cfg, target_fps, per_track, unl)
        rows += video_rows
        summaries.append(summary)
        new = {Path(r["file"]).name for r in rows}
        kept = [r for r in old_rows if Path(r["file"]).name not in new]
        _write_manifest(out / MANIFEST, EXTRACT_COLUMNS, kept + rows)
        if on_video is not None:
            on_video(summary)
    return summaries


def _extract_video(
    src: str,
    cam_id: str,
    frame_wh: tuple[int, int],
    input_px: int,
    pose: PoseModel,
    scorer: CropScorer,
    cfg: Config,
    target_fps: float | None,
    per_track: int,
    unl: Path,
) -> tuple[ExtractSummary, list[dict[str, str]]]:
    """One video of :func:`extract_crops`: its summary and manifest rows (crops written to ``unl``).

    The video goes through :func:`pipeline.camera_loop.run_camera`, the loop of ``maskwatch run``, with the models
    in this process; its decisions are appended to ``<unl>/../decisions.jsonl``, its statistics are not kept.
    """
    t0 = time.monotonic()
    spec = CameraSpec(camera_id=cam_id, source=src, frame_wh=frame_wh, pose_input_px=input_px, target_fps=target_fps,
                      capture=cfg.capture)
    cap = max(64, 16 * per_track)
    cands: dict[int, list[_Candidate]] = defaultdict(list)
    written: dict[int, int] = defaultdict(int)
    rows: list[dict[str, str]] = []
    faces = 0

    def flush(tid: int) -> None:
        track = cands.pop(tid)
        k = per_track - written[tid]
        for j in spread_best([c.pts_ns for c in track], [c.quality for c in track], k) if k > 0 else []:
            c = track[j]
            name = f"{cam_id}_t{tid}_f{c.frame_idx}.png"
            _write_png(unl / name, c.crop)
            written[tid] += 1
            h, b = (_f(v) for v in c.head_xyxy), (_f(v) for v in c.crop_xyxy)
            rows.append({
                "file": f"{UNLABELLED}/{name}", "camera_id": cam_id, "source": src, "track_id": str(tid),
                "frame_idx": str(c.frame_idx), "pts_ns": str(c.pts_ns),
                **dict(zip(("x1", "y1", "x2", "y2"), h, strict=True)),
                **dict(zip(("crop_x1", "crop_y1", "crop_x2", "crop_y2"), b, strict=True)),
                "face_px": _f(c.head_xyxy[3] - c.head_xyxy[1]), "pose_score": f"{c.pose_score:.4f}",
                "face_keypoint_conf": f"{c.quality:.4f}", "mask_score": f"{c.mask_score:.4f}",
                "face_score": f"{c.face_score:.4f}", "usable_score": f"{c.usable_score:.4f}", "label": "",
            })

    def on_crops(_cam: CameraPipeline, frame: Frame, tracked: TrackedFrame, crops: npt.NDArray[np.uint8],
                 scores: npt.NDArray[np.float32]) -> None:
        nonlocal faces
        sel = tracked.classify_rows
        quality = tracked.poses.keypoints[sel][:, list(FACE_KEYPOINTS), 2].mean(axis=1)
        faces += len(sel)
        for k, (r, tid) in enumerate(zip(sel, tracked.classify_track_ids, strict=True)):
            cands[tid].append(_Candidate(frame.frame_idx, frame.pts_ns, tracked.head_xyxy[r].copy(),
                                         tracked.crop_xyxy[k].copy(), float(tracked.poses.score[r]),
                                         float(quality[k]), float(scores[k, 0]), float(scores[k, 1]),
                                         float(scores[k, 2]), crops[k]))
            if len(cands[tid]) > cap:
                cands[tid] = _thin(cands[tid])

    def on_frame(cam: CameraPipeline) -> None:
        alive = cam.tracker.alive_track_ids()
        for tid in [t for t in cands if t not in alive]:
            flush(tid)

    decided: list[PersonDecision] = []

    async def keep_decisions(messages: list[Message]) -> None:  # this extract's sink
        decided.extend(m for m in messages if isinstance(m, PersonDecision))

    host = in_process_host(cfg, spec, pose, scorer, keep_decisions, on_frame=on_frame, on_crops=on_crops)
    run = asyncio.run(run_camera(spec, host))
    _write_decisions(unl.parent / DECISIONS, cam_id, decided)
    if run.error:
        raise SourceError(run.error)
    for tid in list(cands):
        flush(tid)
    summary = ExtractSummary(cam_id, src, run.frames_processed, input_px, len(written), faces, len(rows),
                             round(time.monotonic() - t0, 2))
    return summary, rows


def _write_decisions(path: Path, camera_id: str, decided: list[PersonDecision]) -> None:
    """Replace ``camera_id``'s decisions in ``path`` (JSON Lines) by ``decided``; other cameras' lines stay."""
    kept = []
    if path.is_file():
        kept = [line for line in path.read_text().splitlines(keepends=True)
                if line.strip() and json.loads(line).get("camera_id") != camera_id]
    path.write_text("".join(kept) + "".join(d.encode().decode() + "\n" for d in decided))


# --- loading -----------------------------------------------------------------------------------------------------


def _as_crop(path: Path, input_px: int) -> npt.NDArray[np.uint8]:
    """An image file as a `(input_px, input_px, 3)` uint8 RGB crop: as is at that size, else padded to a square
    around its centre (grey 114, as :func:`face_photo_box` + :func:`crop_box` do) and resized (``INTER_AREA`` down,
    ``INTER_LINEAR`` up) by :func:`cut_crops`."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        msg = f"cannot read image {path}"
        raise OSError(msg)
    h, w = img.shape[:2]
    if (h, w) == (input_px, input_px):
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return cut_crops(img, crop_box(face_photo_box(w, h, 1.0)[None], 1.0), input_px)[0]


def _list_images(root: Path) -> dict[str, tuple[str, Path]]:
    """Images in the label folders and ``unlabelled/``, by file name: ``name -> (folder, path)``."""
    found: dict[str, tuple[str, Path]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name not in LABELS and d.name != UNLABELLED:
            msg = f"{d}: unknown label folder {d.name!r} (expected {', '.join(LABELS)} or {UNLABELLED})"
            raise ValueError(msg)
        for p in sorted(d.iterdir()):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                if p.name in found:
                    msg = f"{p} and {found[p.name][1]}: the same file name twice (files are matched by name)"
                    raise ValueError(msg)
                found[p.name] = (d.name, p)
    return found


def load_crop_dir(root: Path | str, input_px: int, split: str | None = None) -> CropSet:
    """Read a dataset folder into a :class:`~maskwatch.training.data.CropSet`.

    With ``manifest.csv``: one crop per manifest row whose file still exists (found by name in the label folders or
    ``unlabelled/``; deleted files are skipped). The label is the label folder the file lies in, else the
    manifest's ``label`` column; a file with neither (still unsorted in ``unlabelled/``) is skipped. ``face_px``
    and ``source`` come from the manifest; with ``split``, only rows whose ``split`` column equals it. Image files
    in label folders that the manifest does not list are skipped (logged).

    Without a manifest: every image in ``<label>/`` folders, as a pre-cut face photo (the whole image, padded to a
    square like :func:`~maskwatch.training.data.face_photo_box`); ``face_px`` NaN, ``source`` =
    ``<folder name>/<label>/<file>``; ``unlabelled/`` is skipped.

    Crops of another size than ``input_px`` are resized (``INTER_AREA`` down, ``INTER_LINEAR`` up).

    Args:
        root: The dataset folder.
        input_px: Crop side wanted, pixels.
        split: Keep only this ``split`` (``train`` / ``val``); needs a manifest with a ``split`` column.

    Returns:
        Crops `(N, input_px, input_px, 3)` uint8 RGB, labels `(N,)` int8 (index into ``LABELS``), sources `(N,)`
        object, face_px `(N,)` float32 (NaN where unknown), in manifest order (else by label, then file name).

    Raises:
        FileNotFoundError: If ``root`` is not a folder.
        ValueError: On an unknown folder or label, a file name in two folders, a folder label that contradicts the
            manifest's, or ``split`` without a manifest ``split`` column.
        OSError: If an image cannot be decoded.
    """
    root = Path(root)
    if not root.is_dir():
        msg = f"dataset folder not found: {root}"
        raise FileNotFoundError(msg)
    images = _list_images(root)
    items: list[tuple[Path, str, str, float]] = []  # path, label, source, face_px
    manifest = root / MANIFEST
    if manifest.is_file():
        listed: set[str] = set()
        with manifest.open(newline="") as f:
            reader = csv.DictReader(f)
            if split is not None and "split" not in (reader.fieldnames or []):
                msg = f"{manifest}: no 'split' column, cannot select split {split!r}"
                raise ValueError(msg)
            for row in reader:
                name = Path(row["file"]).name
                listed.add(name)
                if (split is not None and row["split"] != split) or name not in images:
                    continue
                folder, path = images[name]
                given = (row.get("label") or "").strip()
                if given and given not in LABELS:
                    msg = f"{manifest}: {name}: unknown label {given!r} (expected one of {', '.join(LABELS)})"
                    raise ValueError(msg)
                if folder in LABELS and given and given != folder:
                    msg = f"{manifest}: {name} is labelled {given!r} but lies in {folder}/"
                    raise ValueError(msg)
                label = folder if folder in LABELS else given
                if label:
                    fp = float(row["face_px"]) if (row.get("face_px") or "").strip() else float("nan")
                    items.append((path, label, row.get("source") or name, fp))
        unlisted = [n for n, (d, _) in images.items() if d in LABELS and n not in listed]
        if unlisted:
            logger.warning("%s: %d image(s) in label folders not in the manifest skipped, e.g. %s",
                           root, len(unlisted), unlisted[0])
    else:
        if split is not None:
            msg = f"{root}: no {MANIFEST}, cannot select split {split!r}"
            raise ValueError(msg)
        items = [(p, d, f"{root.name}/{d}/{n}", float("nan"))
                 for d in LABELS for n, (folder, p) in images.items() if folder == d]
    crops = np.empty((len(items), input_px, input_px, 3), np.uint8)
    for i, (p, *_) in enumerate(items):
        crops[i] = _as_crop(p, input_px)
    return CropSet(
        crops,
        np.array([LABELS.index(lab) for _, lab, _, _ in items], np.int8),
        np.array([s for _, _, s, _ in items], dtype=object),
        np.array([fp for *_, fp in items], np.float32),
    )
