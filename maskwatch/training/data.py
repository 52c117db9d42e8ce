"""Training data for the mask classifier: face boxes from ``detection/*/boxes.csv`` cut into classifier crops.

Every crop is cut with the shared geometry of :mod:`pipeline.headbox` (:func:`~pipeline.headbox.crop_box` +
:func:`~pipeline.headbox.cut_crops`) from the *full* source image, exactly as the pipeline cuts head crops from a
full frame at inference time. The split into training and validation is by **source image** (never by crop), so
faces of one photo never sit on both sides.

Data layout (``data_root``, normally ``../shared/data``; see its ``SOURCES.md``):

- ``detection/<set>/boxes.csv``: ``image,label,xmin,ymin,xmax,ymax,img_w,img_h`` (pixels), images under
  ``detection/<set>/``. Labels ``with_mask``, ``without_mask``, ``mask_worn_incorrectly``.
- ``faces/<source>/<label>/*.jpg``: pre-cut face photos (max side 256). The whole photo is taken as the frame and
  its face box as the photo shrunk by the crop margin, so :func:`~pipeline.headbox.crop_box` returns a square
  around the whole photo (grey-padded on the short side).

The binary target is ``1`` = mask worn correctly, ``0`` = no mask; ``mask_worn_incorrectly`` counts as no mask.
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.headbox import crop_box, cut_crops

LABELS: tuple[str, ...] = ("with_mask", "without_mask", "mask_worn_incorrectly")
"""Three-way source labels; the index into this tuple is the ``label`` code of :class:`CropSet`."""
WITH_MASK, WITHOUT_MASK, MASK_INCORRECT = 0, 1, 2
MASK_TARGET: dict[str, int] = {"with_mask": 1, "without_mask": 0, "mask_worn_incorrectly": 0}
"""Binary target: 1 = mask worn correctly; a mask worn incorrectly is no mask."""

VAL_SET = "andrewmvd_dev"
"""The detection set whose held-out images are the validation split (small, real street/crowd faces)."""
DETECTION_SETS: tuple[str, ...] = ("andrewmvd_dev", "wider_crowds")
FACE_FOLDERS: tuple[str, ...] = ("chandrikadeb7", "rmfd_masked")
EVAL_MIN_FACE_PX = 16.0
"""Validation faces are at least this tall (the pipeline's ``FaceRules.min_face_px``)."""


def mask_target(label: str) -> int:
    """Binary target of a source label: 1 = mask worn correctly, 0 = no mask (incl. worn incorrectly).

    Raises:
        KeyError: For an unknown label.
    """
    return MASK_TARGET[label]


@dataclass(frozen=True, slots=True)
class FaceBox:
    """One annotated face.

    Attributes:
        source: Source image id, ``<set>/<image path in boxes.csv>`` (e.g. ``andrewmvd_dev/images/x.jpg``), or
            ``faces/<source>/<label>/<file>`` for pre-cut face photos.
        path: Absolute path of the image file.
        label: ``with_mask`` / ``without_mask`` / ``mask_worn_incorrectly``.
        xyxy: Face box in source-image pixels; ``None`` for a pre-cut face photo (the whole photo).
    """

    source: str
    path: Path
    label: str
    xyxy: tuple[float, float, float, float] | None

    @property
    def face_px(self) -> float:
        """Face box height in source pixels (NaN for a pre-cut face photo before it is read)."""
        if self.xyxy is None:
            return float("nan")
        return self.xyxy[3] - self.xyxy[1]


@dataclass(slots=True)
class CropSet:
    """Classifier crops with their labels.

    Attributes:
        crops: `(N, S, S, 3)` uint8 RGB, as :func:`pipeline.headbox.cut_crops` returns them.
        label: `(N,)` int8 index into :data:`LABELS`.
        source: `(N,)` object array of source image ids.
        face_px: `(N,)` float32 face height in source pixels (for face photos: the photo side / margin).
    """

    crops: npt.NDArray[np.uint8]
    label: npt.NDArray[np.int8]
    source: npt.NDArray[np.object_]
    face_px: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.label)

    @property
    def target(self) -> npt.NDArray[np.float32]:
        """`(N,)` float32 binary target, 1 = mask worn correctly."""
        return (self.label == WITH_MASK).astype(np.float32)

    def subset(self, index: npt.NDArray[np.bool_] | npt.NDArray[np.int64]) -> CropSet:
        """The crops selected by a boolean mask or an index array."""
        return CropSet(self.crops[index], self.label[index], self.source[index], self.face_px[index])

    @staticmethod
    def concat(parts: Sequence[CropSet]) -> CropSet:
        """Concatenate crop sets of the same crop size."""
        parts = [p for p in parts if len(p)]
        if not parts:
            msg = "nothing to concatenate"
            raise ValueError(msg)
        return CropSet(
            np.concatenate([p.crops for p in parts]),
            np.concatenate([p.label for p in parts]),
            np.concatenate([p.source for p in parts]),
            np.concatenate([p.face_px for p in parts]),
        )


def read_boxes(data_root: Path, set_name: str) -> list[FaceBox]:
    """Read ``detection/<set_name>/boxes.csv`` into face boxes (file order).

    Raises:
        FileNotFoundError: If the set is missing.
        ValueError: On an unknown label.
    """
    return read_boxes_csv(Path(data_root) / "detection" / set_name / "boxes.csv")


def read_boxes_csv(csv_path: Path) -> list[FaceBox]:
    """Read a ``boxes.csv`` (``image,label,xmin,ymin,xmax,ymax,...``, image paths relative to its folder).

    Source ids are ``<folder name>/<image>``, e.g. ``andrewmvd_dev/images/x.jpg``.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: Naming the file and line, on an unknown label or a missing column.
    """
    csv_path = Path(csv_path)
    set_dir, set_name = csv_path.parent, csv_path.parent.name
    boxes: list[FaceBox] = []
    with csv_path.open(newline="") as f:
        for n, row in enumerate(csv.DictReader(f), 2):
            try:
                label = row["label"]
                xyxy = (float(row["xmin"]), float(row["ymin"]), float(row["xmax"]), float(row["ymax"]))
                image = row["image"]
            except (KeyError, TypeError, ValueError) as exc:
                msg = f"{csv_path}:{n}: expected columns image,label,xmin,ymin,xmax,ymax with numbers ({exc!r})"
                raise ValueError(msg) from None
            if label not in MASK_TARGET:
                msg = f"{csv_path}:{n}: unknown label {label!r}, expected one of {sorted(MASK_TARGET)}"
                raise ValueError(msg)
            boxes.append(FaceBox(f"{set_name}/{image}", set_dir / image, label, xyxy))
    return boxes


def read_face_folders(data_root: Path, folders: Iterable[str] = FACE_FOLDERS) -> list[FaceBox]:
    """List the pre-cut face photos under ``faces/<folder>/<label>/`` (sorted)."""
    items: list[FaceBox] = []
    for folder in folders:
        base = Path(data_root) / "faces" / folder
        for label_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            label = label_dir.name
            if label not in MASK_TARGET:
                msg = f"{label_dir}: unknown label folder {label!r}"
                raise ValueError(msg)
            for p in sorted(label_dir.iterdir()):
                if p.suffix.lower() in {".jpg", ".jpeg", ".png"}:
                    items.append(FaceBox(f"faces/{folder}/{label}/{p.name}", p, label, None))
    return items


def split_images(
    boxes: Sequence[FaceBox], *, val_fraction: float = 0.2, seed: int = 0, fold: tuple[int, int] | None = None
) -> tuple[frozenset[str], frozenset[str]]:
    """Split source images into train / validation, seeded and stratified, never splitting an image.

    Images are grouped by their rarest label (``mask_worn_incorrectly`` > ``without_mask`` > ``with_mask``) so
    that the rare class is present on both sides; within each group the sorted image ids are shuffled with
    ``seed`` and the first ``round(val_fraction * len(group))`` go to validation.

    ``fold=(i, k)`` instead holds out fold ``i`` of a stratified ``k``-fold split (cross-validation): the image at
    rank ``r`` of its group's shuffled order is in fold ``r * k // len(group)``, so every image is held out by
    exactly one of the ``k`` folds; ``val_fraction`` is then unused.

    Returns:
        `(train_sources, val_sources)`: disjoint sets of source image ids.

    Raises:
        ValueError: ``val_fraction`` outside (0, 1), or ``fold`` not ``(i, k)`` with ``0 <= i < k``, ``k >= 2``.
    """
    if not 0.0 < val_fraction < 1.0:
        msg = f"val_fraction must be in (0, 1), got {val_fraction}"
        raise ValueError(msg)
    if fold is not None and not (fold[1] >= 2 and 0 <= fold[0] < fold[1]):
        msg = f"fold must be (i, k) with k >= 2 and 0 <= i < k, got {fold}"
        raise ValueError(msg)
    labels_of: dict[str, set[str]] = defaultdict(set)
    for b in boxes:
        labels_of[b.source].add(b.label)
    groups: dict[str, list[str]] = defaultdict(list)
    for src in sorted(labels_of):
        labs = labels_of[src]
        key = next(lab for lab in ("mask_worn_incorrectly", "without_mask", "with_mask") if lab in labs)
        groups[key].append(src)
    rng = np.random.default_rng(seed)
    val: set[str] = set()
    for key in sorted(groups):
        members = groups[key]
        order = rng.permutation(len(members))
        if fold is None:
            val.update(members[i] for i in order[: round(val_fraction * len(members))])
        else:
            val.update(members[i] for r, i in enumerate(order) if r * fold[1] // len(members) == fold[0])
    train = set(labels_of) - val
    return frozenset(train), frozenset(val)


def _read_bgr(path: Path) -> npt.NDArray[np.uint8]:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        msg = f"cannot read image {path}"
        raise OSError(msg)
    return img


def cut_box_crops(boxes: Sequence[FaceBox], *, crop_margin: float, input_px: int) -> CropSet:
    """Cut the crops of annotated face boxes from their full images (each image read once).

    The crops are exactly ``cut_crops(image, crop_box(face_xyxy, crop_margin), input_px)``; the order follows
    ``boxes``. Pre-cut face photos (``xyxy is None``) are handled by :func:`face_photo_box`.
    """
    crops = np.empty((len(boxes), input_px, input_px, 3), np.uint8)
    face_px = np.empty(len(boxes), np.float32)
    by_path: dict[Path, list[int]] = defaultdict(list)
    for i, b in enumerate(boxes):
        by_path[b.path].append(i)
    for path, idx in by_path.items():
        img = _read_bgr(path)
        face = np.empty((len(idx), 4), np.float32)
        for k, i in enumerate(idx):
            xyxy = boxes[i].xyxy
            face[k] = face_photo_box(img.shape[1], img.shape[0], crop_margin) if xyxy is None else xyxy
        crops[idx] = cut_crops(img, crop_box(face, crop_margin), input_px)
        face_px[idx] = face[:, 3] - face[:, 1]
    return CropSet(
        crops,
        np.array([LABELS.index(b.label) for b in boxes], np.int8),
        np.array([b.source for b in boxes], dtype=object),
        face_px,
    )


def face_photo_box(width: int, height: int, crop_margin: float) -> npt.NDArray[np.float32]:
    """The face box of a pre-cut face photo: the photo's centred square shrunk by ``crop_margin``.

    ``crop_box(face_photo_box(w, h, m), m)`` is the square of side ``max(w, h)`` around the photo's centre, so the
    crop holds the whole photo.
    """
    side = max(width, height) / crop_margin
    cx, cy = width / 2.0, height / 2.0
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)


@dataclass(slots=True)
class TrainValData:
    """The training and held-out crops, and the exact list of training samples."""

    train: CropSet
    val: CropSet
    train_items: list[str]
    """One line per training sample, ``<source>\\t<label>[\\t<box>]``, in load order."""

    @property
    def train_data_sha256(self) -> str:
        """sha256 of the sorted training sample list (source image path + label + box)."""
        return hashlib.sha256("\n".join(sorted(self.train_items)).encode()).hexdigest()


def _item_line(b: FaceBox) -> str:
    if b.xyxy is None:
        return f"{b.source}\t{b.label}"
    return f"{b.source}\t{b.label}\t" + ",".join(f"{v:g}" for v in b.xyxy)


def held_out_boxes(
    data_root: Path,
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    min_face_px: float = EVAL_MIN_FACE_PX,
    fold: tuple[int, int] | None = None,
    val_sets: Sequence[str] = (VAL_SET,),
) -> list[FaceBox]:
    """The held-out faces of each of ``val_sets`` (validation images, faces at least ``min_face_px`` tall); each set
    is split on its own by :func:`split_images` with the same ``seed`` / ``fold``."""
    out: list[FaceBox] = []
    for set_name in val_sets:
        boxes = read_boxes(data_root, set_name)
        _, val_src = split_images(boxes, val_fraction=val_fraction, seed=seed, fold=fold)
        out += [b for b in boxes if b.source in val_src and b.face_px >= min_face_px]
    return out


def load_held_out(
    data_root: Path,
    *,
    crop_margin: float,
    input_px: int,
    seed: int = 0,
    val_fraction: float = 0.2,
    min_face_px: float = EVAL_MIN_FACE_PX,
    fold: tuple[int, int] | None = None,
) -> CropSet:
    """Crops of the held-out ``andrewmvd_dev`` faces (see :func:`held_out_boxes`)."""
    boxes = held_out_boxes(data_root, seed=seed, val_fraction=val_fraction, min_face_px=min_face_px, fold=fold)
    return cut_box_crops(boxes, crop_margin=crop_margin, input_px=input_px)


def load_train_val(
    data_root: Path,
    *,
    crop_margin: float,
    input_px: int,
    seed: int = 0,
    val_fraction: float = 0.2,
    detection_sets: Sequence[str] = DETECTION_SETS,
    face_folders: Sequence[str] = FACE_FOLDERS,
    min_train_face_px: float = 10.0,
    eval_min_face_px: float = EVAL_MIN_FACE_PX,
    fold: tuple[int, int] | None = None,
    val_sets: Sequence[str] = (VAL_SET,),
) -> TrainValData:
    """Load training crops and the held-out validation crops.

    Validation: the ``val_fraction`` of ``andrewmvd_dev`` images chosen by :func:`split_images` with ``seed``,
    faces at least ``eval_min_face_px`` tall. Training: the remaining ``andrewmvd_dev`` images, every image of the
    other ``detection_sets``, and the photos of ``face_folders`` (pass ``()`` to leave them out); annotated faces
    under ``min_train_face_px`` tall are dropped (too few pixels to show a mask). ``fold=(i, k)`` holds out fold
    ``i`` of ``k`` instead of the ``val_fraction`` split (see :func:`split_images`). Each set of ``val_sets`` (they
    must be among ``detection_sets``) is split so, each on its own, and its held-out faces join the validation.

    Raises:
        ValueError: If a set of ``val_sets`` is not among ``detection_sets``.
    """
    data_root = Path(data_root)
    train_boxes: list[FaceBox] = []
    val_boxes: list[FaceBox] = []
    missing = [s for s in val_sets if s not in detection_sets]
    if missing:
        msg = f"val_sets {missing} must also be in detection_sets {list(detection_sets)}"
        raise ValueError(msg)
    for set_name in detection_sets:
        boxes = read_boxes(data_root, set_name)
        if set_name in val_sets:
            train_src, val_src = split_images(boxes, val_fraction=val_fraction, seed=seed, fold=fold)
            val_boxes += [b for b in boxes if b.source in val_src and b.face_px >= eval_min_face_px]
            boxes = [b for b in boxes if b.source in train_src]
        train_boxes += [b for b in boxes if b.face_px >= min_train_face_px]
    train_boxes += read_face_folders(data_root, face_folders) if face_folders else []
    val_sources = {b.source for b in val_boxes}
    if any(b.source in val_sources for b in train_boxes):  # pragma: no cover - guarded by split_images
        msg = "a source image is on both sides of the split"
        raise AssertionError(msg)
    return TrainValData(
        train=cut_box_crops(train_boxes, crop_margin=crop_margin, input_px=input_px),
        val=cut_box_crops(val_boxes, crop_margin=crop_margin, input_px=input_px),
        train_items=[_item_line(b) for b in train_boxes],
    )
