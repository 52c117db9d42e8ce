"""``maskwatch dataset``: face-crop datasets for the mask classifier (``extract`` from videos, ``import-boxes``).

Registered on the main command line with ``main.add_command(dataset)``. User errors print one line,
``maskwatch: error: ...``, and exit with status 2, as the main command line does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from maskwatch._click import ErrorLineGroup
from schemas.errors import ConfigError


def _classifier_path(model: str | None) -> Path:
    from pipeline.config import Config

    return Path(model) if model else Config().classify.model_path


@click.group(cls=ErrorLineGroup)
def dataset() -> None:
    """Face-crop datasets for the mask classifier: crops to label from videos, crops from annotated boxes.

    PRIVACY: these commands write images of people's faces to disk (the pipeline never does). Use them only on
    footage you are allowed to keep faces from, and delete the crops when they are no longer needed.
    """


@dataset.command()
@click.option("--source", "sources", multiple=True, required=True, help="Video file; repeat for several.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Dataset folder.")
@click.option("--per-track", default=5, show_default=True, type=click.IntRange(min=1),
              help="Crops per tracked person, spread over the track, best facial-keypoint confidence first.")
@click.option("--target-fps", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Sample rate, as the pipeline's target_fps.")
@click.option("--pose-input-px", type=int,
              help="Pose model input size (multiple of 32); default 640 up to 640 px frames, else 1280.")
@click.option("--model", type=click.Path(dir_okay=False),
              help="Mask classifier .onnx (crop margin, crop size, mask_score); default: the shipped one.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML config: pose thresholds, tracking and face rules as in `maskwatch run`.")
@click.option("--force", is_flag=True, help="Add to a folder whose unlabelled/ already holds crops.")
def extract(
    sources: tuple[str, ...],
    out_dir: str,
    per_track: int,
    target_fps: float,
    pose_input_px: int | None,
    model: str | None,
    config_path: str | None,
    force: bool,
) -> None:
    """Cut face crops of every tracked person from videos, for a person to label.

    PRIVACY: this is the explicit opt-in path that writes face crops to disk.

    Runs pose, tracking and the face rules exactly as `maskwatch run` (in this process, no Ray) and keeps up to
    --per-track crops of the faces the pipeline would classify per person, cut exactly as at inference. Writes
    OUT/unlabelled/<camera_id>_t<track>_f<frame>.png, OUT/manifest.csv (boxes, scores, mask_score of the
    classifier, an empty label column) and empty OUT/with_mask/, OUT/without_mask/, OUT/mask_worn_incorrectly/:
    sort the crops into those folders (delete the ones that are not faces), then train or evaluate on OUT.
    """
    from cluster import driver
    from maskwatch.dataset import extract_crops
    from pipeline.config import load_config

    cfg = load_config(config_path)

    def report(s: Any) -> None:
        click.echo(f"{s.camera_id}: {s.frames} frames at pose {s.pose_input_px} px, {s.tracks} people with a "
                   f"visible face, {s.faces} faces, {s.crops} crops written ({s.wall_s:.1f} s)")

    try:
        extract_crops(list(sources), out_dir, pose_model_path=driver.pose_model_path(cfg),
                      classifier_path=_classifier_path(model), cfg=cfg, per_track=per_track, target_fps=target_fps,
                      pose_input_px=pose_input_px, force=force, on_video=report)
    except OSError as exc:
        raise ConfigError(str(exc)) from exc
    click.echo(f"crops in {Path(out_dir) / 'unlabelled'}; sort them into the label folders", err=True)


@dataset.command("import-boxes")
@click.option("--boxes", "boxes_csvs", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help="boxes.csv (image,label,xmin,ymin,xmax,ymax,img_w,img_h; images relative to it); repeatable.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Dataset folder.")
@click.option("--model", type=click.Path(dir_okay=False),
              help="Mask classifier .onnx whose crop margin and size are used; default: the shipped one.")
@click.option("--min-face-px", default=10.0, show_default=True, help="Leave out faces less tall than this.")
@click.option("--split-seed", default=0, show_default=True, help="Seed of the train/val split (as the trainer's).")
@click.option("--val-fraction", default=0.2, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True), help="Fraction of each set's images in val.")
@click.option("--force", is_flag=True, help="Replace an existing OUT/manifest.csv.")
def import_boxes_cmd(
    boxes_csvs: tuple[str, ...],
    out_dir: str,
    model: str | None,
    min_face_px: float,
    split_seed: int,
    val_fraction: float,
    force: bool,
) -> None:
    """Cut the annotated faces of detection sets into labelled crops, as inference cuts them.

    PRIVACY: writes face crops to disk.

    Writes OUT/<label>/<set>_<image stem>_<i>.png (set = the csv's folder name) and OUT/manifest.csv (file, label,
    source image, face box, face_px, split). The split is by source image with the trainer's function and seed, so
    for andrewmvd_dev with seed 0 the `val` images are the trainer's held-out images (whose faces under 16 px the
    trainer also leaves out).
    """
    from maskwatch.dataset import import_boxes
    from maskwatch.training.data import LABELS
    from pipeline.onnx_models import MaskClassifier

    clf = MaskClassifier(_classifier_path(model), "cpu")
    try:
        counts = import_boxes([Path(p) for p in boxes_csvs], out_dir, crop_margin=clf.crop_margin,
                              input_px=clf.input_px, min_face_px=min_face_px, seed=split_seed,
                              val_fraction=val_fraction, force=force)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    for lab in LABELS:
        click.echo(f"{lab}: train {counts.get((lab, 'train'), 0)}, val {counts.get((lab, 'val'), 0)}")
    click.echo(f"{sum(counts.values())} crops ({clf.input_px} px, margin {clf.crop_margin:g}) in {out_dir}", err=True)
