"""The ``maskwatch`` command line: run, stats, rollup, dashboard, eval-tracking, eval-classifier,
compare-classifiers, dataset, cameras, models build, train-classifier, broker.

User errors print one line, ``maskwatch: error: ...``, and exit with status 2; no traceback.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

if TYPE_CHECKING:
    from pipeline.config import Config

from maskwatch._click import ErrorLineGroup
from schemas.errors import MaskwatchError

# Quiet the native libraries before they load: OpenCV/FFmpeg warnings about unreachable streams are reported by
# our own one-line errors, ONNX Runtime's CUDA-provider complaints on CPU machines are expected.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

logger = logging.getLogger("maskwatch")


def _camera_id_for(source: str, index: int) -> str:
    stem = Path(source).stem if "://" not in source else f"cam-{index}"
    return re.sub(r"[^A-Za-z0-9._:/@-]", "_", stem) or f"cam-{index}"


@click.group(cls=ErrorLineGroup)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """maskwatch: of the people who walked past each camera, how many wore a mask."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python logs every refused connection while it retries; the sink reports the outcome in one line.
    logging.getLogger("kafka").setLevel(logging.CRITICAL if verbose == 0 else level)


def run_config(
    config_path: str | None,
    sources: tuple[str, ...] = (),
    camera_ids: tuple[str, ...] = (),
    kafka_bootstrap: str | None = None,
    address: str | None = None,
    target_fps: float | None = None,
    pose_input_px: int | None = None,
) -> Config:
    """The config of ``maskwatch run``: the file (or the defaults) with the command line's cameras and overrides.

    What the file set to null stays null (``faces.gate_model_path: null`` turns the gate off,
    ``ray.metrics_export_port: null`` starts no metrics endpoint) and a SASL password stays the password.

    Raises:
        ConfigError: If the camera ids do not pair with the sources, or the result is not a valid config.
    """
    from pipeline.config import load_config, parse_config
    from schemas.errors import ConfigError

    data = load_config(config_path).model_dump()  # python mode: nulls and secrets kept as they are
    if camera_ids and len(camera_ids) != len(sources):
        msg = f"--camera-id given {len(camera_ids)} time(s) for {len(sources)} --source(s): give one per source"
        raise ConfigError(msg)
    if sources:
        ids = camera_ids or tuple(_camera_id_for(s, i) for i, s in enumerate(sources))
        if len(set(ids)) != len(ids):
            ids = tuple(f"{c}-{i}" for i, c in enumerate(ids))
        data["cameras"] = [{"camera_id": c, "source": s} for c, s in zip(ids, sources, strict=True)]
    for cam in data.get("cameras", []):
        if target_fps is not None:
            cam["target_fps"] = target_fps
        if pose_input_px is not None:
            cam["pose_input_px"] = pose_input_px
    if kafka_bootstrap:
        data["kafka"]["bootstrap_servers"] = kafka_bootstrap
    if address:
        data["ray"]["address"] = address
    return parse_config(data, "command line")


@main.command()
@click.option("--source", "sources", multiple=True, help="Video file or stream URL; repeat for several cameras.")
@click.option("--camera-id", "camera_ids", multiple=True, help="Camera id per --source (default: file stem).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")
@click.option("--kafka-bootstrap", envvar="MASKWATCH_KAFKA_BOOTSTRAP",
              help="HOST:PORT of Kafka (env MASKWATCH_KAFKA_BOOTSTRAP); without it records go to --out.")
@click.option("--out", "out_path", help="JSON Lines output when no Kafka is given (default: standard output).")
@click.option("--annotate", "annotate_path", help="Write an annotated video of the first camera here (.mp4).")
@click.option("--tracks-out", "tracks_path",
              help="Write person tracks in the MOTChallenge format (frame,id,x,y,w,h,conf,-1,-1,-1; 1-based frames, "
                   "original-frame pixels). Several cameras: put {camera_id} in the path.")
@click.option("--address", help="Ray cluster address (e.g. auto); default: a local Ray on 127.0.0.1.")
@click.option("--target-fps", type=float, help="Override every camera's sample rate.")
@click.option("--pose-input-px", type=int, help="Override every camera's pose input size (multiple of 32).")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
def run(
    sources: tuple[str, ...],
    camera_ids: tuple[str, ...],
    config_path: str | None,
    kafka_bootstrap: str | None,
    out_path: str | None,
    annotate_path: str | None,
    tracks_path: str | None,
    address: str | None,
    target_fps: float | None,
    pose_input_px: int | None,
    as_json: bool,
) -> None:
    """Process cameras to the end of their sources; decisions and statistics to Kafka or JSON Lines.

    With --config, cameras added to, removed from or changed in the file while it runs start, stop or restart alone
    (fleet.watch_config); `maskwatch cameras` lists them and edits the file."""
    from cluster import driver
    from schemas.errors import ConfigError

    cfg = run_config(config_path, sources, camera_ids, kafka_bootstrap, address, target_fps, pose_input_px)
    annotate = {cfg.cameras[0].camera_id: annotate_path} if annotate_path and cfg.cameras else None
    tracks = None
    if tracks_path:
        if len(cfg.cameras) > 1 and "{camera_id}" not in tracks_path:
            msg = (f"--tracks-out {tracks_path!r} for {len(cfg.cameras)} cameras: put {{camera_id}} in the path "
                   "so each camera gets its own file")
            raise ConfigError(msg)
        tracks = {c.camera_id: tracks_path.replace("{camera_id}", c.camera_id) for c in cfg.cameras}
    def reload() -> Config:  # the config file as it is now, with this command line's cameras and overrides
        return run_config(config_path, sources, camera_ids, kafka_bootstrap, address, target_fps, pose_input_px)

    result = driver.run(cfg, out_path, annotate, tracks, config_path, reload)
    if as_json:
        click.echo(json.dumps(result.__dict__, indent=1))
        return
    click.echo(
        f"{len(result.cameras)} camera(s), {result.records} record(s) written in {result.wall_s:.1f} s "
        f"(pose on {result.pose_provider}, classifier on {result.classify_provider})",
        err=True,
    )
    for c in result.cameras:
        d = c["decisions"]
        line = (f"  {c['camera_id']}: {c['frames_processed']} frames, {c['people']} people "
                f"(mask {d['mask']}, no_mask {d['no_mask']}, undecided {d['undecided']})")
        click.echo(line + (f"  ERROR: {c['error']}" if c["error"] else ""), err=True)
    if result.stopped_by_signal:
        click.echo(f"stopped by {result.stopped_by_signal}: capture stopped, open tracks decided "
                   "(ended_by \"shutdown\"), final statistics published", err=True)
    if any(c["error"] for c in result.cameras):
        sys.exit(1)


@main.command()
@click.option("--kafka-bootstrap", envvar="MASKWATCH_KAFKA_BOOTSTRAP", required=True,
              help="HOST:PORT of Kafka (env MASKWATCH_KAFKA_BOOTSTRAP).")
@click.option("--by", type=click.Choice(["camera", "district"]), default="camera", show_default=True,
              help="One row per camera (camera statistics topic) or per district (`maskwatch rollup`'s topic).")
@click.option("--topic", help="Topic to read [default: maskwatch.camera-stats, or maskwatch.district-stats with "
                              "--by district].")
@click.option("--follow", is_flag=True, help="Keep reading and reprint the table every few seconds.")
@click.option("--interval-s", default=5.0, show_default=True, help="Refresh period with --follow.")
@click.option("--json", "as_json", is_flag=True, help="Print the latest record per camera or district as JSON Lines.")
def stats(kafka_bootstrap: str, by: str, topic: str | None, follow: bool, interval_s: float, as_json: bool) -> None:
    """Print the latest statistics per camera, or per district, from the statistics topics."""
    from pipeline.config import KafkaConfig
    from pipeline.stats_reader import format_district_table, format_table, latest_districts, latest_stats

    cfg = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    if topic:
        cfg = cfg.model_copy(update={"district_stats_topic" if by == "district" else "stats_topic": topic})
    shown = cfg.district_stats_topic if by == "district" else cfg.stats_topic
    while True:
        if by == "district":
            districts = latest_districts(cfg)
            records, table = list(districts.values()), format_district_table(districts)
        else:
            cameras = latest_stats(cfg)
            records, table = list(cameras.values()), format_table(cameras)
        if as_json:
            for rec in records:
                click.echo(json.dumps(rec.to_dict(), sort_keys=True))
        else:
            click.echo(table if records else f"no statistics in {shown} yet")
        if not follow:
            return
        time.sleep(interval_s)
        click.echo()


@main.command()
@click.option("--kafka-bootstrap", envvar="MASKWATCH_KAFKA_BOOTSTRAP",
              help="HOST:PORT of Kafka (env MASKWATCH_KAFKA_BOOTSTRAP); default: kafka.bootstrap_servers of --config.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML config file: its kafka section gives the topics and security settings, "
                   "stats.min_coverage the districts' low_coverage flag.")
@click.option("--lateness-s", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="How long after a window ends the records of slower cameras are waited for before the district's "
                   "window is first published (late ones publish it again, revision + 1).")
@click.option("--outbox", "outbox_path", type=click.Path(dir_okay=False), default="maskwatch-rollup-outbox.jsonl",
              show_default=True, help="Where district records wait while the broker is away.")
def rollup(kafka_bootstrap: str | None, config_path: str | None, lateness_s: float, outbox_path: str) -> None:
    """Pool the cameras' statistics into per-district statistics, until interrupted (SIGINT or SIGTERM).

    Reads the camera statistics topic from the beginning, writes one record per district and window to the
    compacted district statistics topic, keyed by district. It rebuilds its state from the topics at every start.
    """
    import signal
    import threading

    from pipeline.config import Config, load_config
    from services.rollup import run_rollup

    cfg = load_config(config_path) if config_path else Config()
    kafka = cfg.kafka.model_copy(update={"outbox_path": Path(outbox_path)}
                                 | ({"bootstrap_servers": kafka_bootstrap} if kafka_bootstrap else {}))
    if not kafka.bootstrap_servers:
        msg = "maskwatch rollup needs a broker: --kafka-bootstrap HOST:PORT, or kafka.bootstrap_servers in --config"
        raise MaskwatchError(msg)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _s, _f: stop.set())
    click.echo(f"rollup: {kafka.stats_topic} -> {kafka.district_stats_topic} at {kafka.bootstrap_servers}; "
               "Ctrl-C stops it", err=True)
    n = run_rollup(kafka, lateness_s, stop, min_coverage=cfg.stats.min_coverage)
    click.echo(f"rollup stopped: {n} district record(s) published", err=True)


@main.command()
@click.option("--kafka-bootstrap", envvar="MASKWATCH_KAFKA_BOOTSTRAP",
              help="HOST:PORT of Kafka (env MASKWATCH_KAFKA_BOOTSTRAP); default: kafka.bootstrap_servers of --config.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML config file: its kafka section gives the topics and security settings.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 in a pod).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
def dashboard(kafka_bootstrap: str | None, config_path: str | None, host: str, port: int) -> None:
    """Serve a live page of the statistics per district and camera, with its JSON API, until interrupted.

    The page is at http://HOST:PORT/, the API at /api/state, /api/series and /api/events (server-sent events), its
    schema at /openapi.json. A broker that is down is shown on the page and retried.
    """
    import signal

    from pipeline.config import Config, load_config
    from services.broker import check_port_free
    from services.dashboard import serve

    cfg = load_config(config_path) if config_path else Config()
    kafka = cfg.kafka.model_copy(update={"bootstrap_servers": kafka_bootstrap} if kafka_bootstrap else {})
    if not kafka.bootstrap_servers:
        msg = "maskwatch dashboard needs a broker: --kafka-bootstrap HOST:PORT, or kafka.bootstrap_servers in --config"
        raise MaskwatchError(msg)
    check_port_free(host, port, "dashboard")
    # uvicorn shuts down on SIGTERM/SIGINT, then raises the signal again: a stop asked for is a clean exit (status 0).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _s, _f: sys.exit(0))
    click.echo(f"dashboard: http://{host}:{port}/ (statistics from {kafka.bootstrap_servers}); Ctrl-C stops it",
               err=True)
    serve(kafka, host, port)


def _counted_min_frames() -> int:
    """``voting.min_frames_tracked``'s default (the evaluation module is imported only when eval-tracking runs)."""
    from maskwatch.evaluation.tracking import COUNTED_MIN_FRAMES

    return COUNTED_MIN_FRAMES


@main.command("eval-tracking")
@click.option("--tracks", "tracks_path", required=True, type=click.Path(dir_okay=False),
              help="MOTChallenge tracks (maskwatch run --tracks-out).")
@click.option("--gt", "gt_path", required=True, type=click.Path(dir_okay=False),
              help="MOTChallenge ground truth (frame,id,x,y,w,h,conf,...).")
@click.option("--min-iou", default=0.5, show_default=True, help="Box match threshold (intersection over union).")
@click.option("--min-track-frames", type=int, default=_counted_min_frames,
              show_default="voting.min_frames_tracked's",
              help="Tracks with fewer boxes are not counted as people.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def eval_tracking(tracks_path: str, gt_path: str, min_iou: float, min_track_frames: int, as_json: bool) -> None:
    """MOTA, IDF1, ID switches, precision, recall and distinct track ids vs ground truth (py-motmetrics)."""
    from maskwatch.evaluation.tracking import evaluate_files
    from schemas.errors import ConfigError

    try:
        metrics = evaluate_files(tracks_path, gt_path, min_iou, min_track_frames)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    click.echo(json.dumps(metrics.to_dict(), indent=1) if as_json else metrics.format())


@main.command("eval-people")
@click.option("--tracks", "tracks_paths", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="MOTChallenge tracks (maskwatch run --tracks-out); repeat once per video.")
@click.option("--decisions", "decision_paths", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="JSON Lines with the decisions (maskwatch run --out); repeat once per video, or give one file "
                   "for all (decisions are taken by camera_id = the label file's name).")
@click.option("--labels", "label_paths", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="People labels (data/labels/people/<video>.csv); repeat once per video.")
@click.option("--min-iou", default=0.3, show_default=True, help="Track box vs labelled box match threshold.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def eval_people(tracks_paths: tuple[str, ...], decision_paths: tuple[str, ...], label_paths: tuple[str, ...],
                min_iou: float, as_json: bool) -> None:
    """People, tracks per person, coverage, sensitivity and specificity per person, published vs labelled mask
    fraction: the decisions of each video against its labelled people, per video and pooled. Then every track's
    identity on the labelled frames: MOTA, IDF1, ID switches."""
    from maskwatch.evaluation.people import evaluate_files, format_identity, format_table, read_decisions, results_json
    from schemas.errors import ConfigError

    n = len(label_paths)
    if len(tracks_paths) != n or len(decision_paths) not in (1, n):
        msg = (f"eval-people: expected one --tracks per --labels ({n}) and one --decisions or one per --labels, got "
               f"{len(tracks_paths)} --tracks and {len(decision_paths)} --decisions")
        raise ConfigError(msg)
    try:
        decisions = {p: read_decisions(p) for p in dict.fromkeys(decision_paths)}  # each file read once
        results = [evaluate_files(lab, t, decisions[decision_paths[i if len(decision_paths) == n else 0]], min_iou)
                   for i, (t, lab) in enumerate(zip(tracks_paths, label_paths, strict=True))]
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(results_json(results), indent=1))
    else:
        click.echo(format_table(results) + "\n\n" + format_identity(results))


@main.command("eval-classifier")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, exists=True),
              help="Classifier ONNX (default: the shipped maskwatch/assets/mask_classifier.onnx).")
@click.option("--data", "data_path", required=True, type=click.Path(exists=True),
              help="A boxes.csv (detection set: faces cut from the full images as the pipeline cuts them), or a "
                   "folder of crops (maskwatch dataset import-boxes/extract output, or <label>/ image folders).")
@click.option("--split", type=click.Choice(["all", "val", "train"]), default="all", show_default=True,
              help="Evaluate only these images: boxes.csv split by source image (seeded, as train-classifier "
                   "splits), or a folder's manifest split column.")
@click.option("--seed", default=0, show_default=True, help="Split seed (boxes.csv).")
@click.option("--val-fraction", default=0.2, show_default=True, help="Held-out share of images (boxes.csv).")
@click.option("--fold", default=None, metavar="I/K",
              help="Instead of --val-fraction: fold I (0-based) of a K-fold split, as train-classifier --cv-folds "
                   "holds it out (boxes.csv).")
@click.option("--min-face-px", default=16.0, show_default=True,
              help="Leave out faces shorter than this (the pipeline's minimum face); 0 keeps all.")
@click.option("--threshold", default=0.5, show_default=True, help="Score at or above which a face is 'mask'.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write a PNG plot here.")
def eval_classifier(model_path: str | None, data_path: str, split: str, seed: int, val_fraction: float,
                    fold: str | None, min_face_px: float, threshold: float, as_json: bool,
                    plot_path: str | None) -> None:
    """Accuracy, balanced accuracy, confusion, precision/recall, worn-incorrectly recall, face-height buckets."""
    from maskwatch.evaluation.classifier import classifier_metrics, format_metrics, plot_metrics
    from maskwatch.training.data import cut_box_crops, read_boxes_csv, split_images
    from pipeline.config import ClassifyConfig
    from pipeline.onnx_models import MaskClassifier
    from schemas.errors import ConfigError

    fold_ik = None
    if fold is not None:
        i, _, k = fold.partition("/")
        if not (i.isdigit() and k.isdigit() and int(k) >= 2 and int(i) < int(k)):
            msg = f"--fold: expected I/K with 0 <= I < K and K >= 2 (e.g. 0/5), got {fold!r}"
            raise ConfigError(msg)
        fold_ik = (int(i), int(k))
    model = MaskClassifier(model_path or ClassifyConfig().model_path, device="cpu")
    path = Path(data_path)
    try:
        if path.is_dir():
            from maskwatch.dataset import load_crop_dir

            crops = load_crop_dir(path, model.input_px, split=None if split == "all" else split)
        else:
            boxes = read_boxes_csv(path)
            if split != "all":
                train_src, val_src = split_images(boxes, val_fraction=val_fraction, seed=seed, fold=fold_ik)
                keep = val_src if split == "val" else train_src
                boxes = [b for b in boxes if b.source in keep]
            boxes = [b for b in boxes if b.face_px >= min_face_px]
            crops = cut_box_crops(boxes, crop_margin=model.crop_margin, input_px=model.input_px)
    except (OSError, ValueError) as exc:
        text = str(exc) if str(path) in str(exc) else f"{path}: expected a boxes.csv or a folder of crops ({exc})"
        raise ConfigError(text) from exc
    if path.is_dir() and min_face_px > 0:
        crops = crops.subset(~(crops.face_px < min_face_px))  # unknown heights (NaN) are kept
    if len(crops) == 0:
        msg = f"no labelled face in {path} (split {split}, faces >= {min_face_px:g} px)"
        raise ConfigError(msg)
    scores = np.concatenate([model.predict(crops.crops[i : i + 256]) for i in range(0, len(crops), 256)])
    metrics = classifier_metrics(scores, crops.label, crops.face_px, threshold)
    metrics["model"], metrics["data"], metrics["split"] = str(model.path), str(path), split
    if plot_path:
        plot_metrics(metrics, plot_path, title=model.path.name)
    text = f"{model.path} on {path} ({split})\n" + format_metrics(metrics)
    click.echo(json.dumps(metrics, indent=1) if as_json else text)


def _held_out_of_report(path: Path) -> dict[str, list]:
    """Per-face held-out scores of a ``train-classifier --report`` file; a ``--cv-folds`` report is read through
    its ``<stem>.fold<i>.json`` siblings and pooled."""
    from maskwatch.training.loop import fold_path
    from schemas.errors import ConfigError

    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        msg = f"{path}: expected a train-classifier --report JSON file ({exc})"
        raise ConfigError(msg) from exc
    if "held_out" in report:
        return report["held_out"]
    if "folds" not in report:
        msg = f"{path}: expected a train-classifier report with 'held_out' or 'folds', got keys {sorted(report)}"
        raise ConfigError(msg)
    pooled: dict[str, list] = {}
    for i in range(int(report["folds"])):
        fold_report = fold_path(path, i)
        if not fold_report.is_file():
            msg = f"{path}: cross-validation report of {report['folds']} folds, but {fold_report} is missing"
            raise ConfigError(msg)
        for key, values in _held_out_of_report(fold_report).items():
            pooled.setdefault(key, []).extend(values)
    return pooled


@main.command("compare-classifiers")
@click.argument("report_a", type=click.Path(dir_okay=False, exists=True))
@click.argument("report_b", type=click.Path(dir_okay=False, exists=True))
@click.option("--threshold", default=0.5, show_default=True, help="Score at or above which a face is 'mask'.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare_classifiers(report_a: str, report_b: str, threshold: float, as_json: bool) -> None:
    """Two training runs on the same held-out faces, face by face (exact McNemar test).

    REPORT_A and REPORT_B are train-classifier --report files of the same split (or both --cv-folds K runs:
    their fold reports are pooled). Only faces where the two disagree count; a p-value under 0.05 says the
    difference in errors is unlikely to be noise.
    """
    from maskwatch.evaluation.classifier import LABEL_NAMES, format_comparison, paired_comparison
    from schemas.errors import ConfigError

    a, b = _held_out_of_report(Path(report_a)), _held_out_of_report(Path(report_b))
    for key in ("source", "label", "face_px"):
        if a[key] != b[key]:
            msg = (f"{report_a} and {report_b} hold out different faces ({key} differs: {len(a[key])} vs "
                   f"{len(b[key])} faces); compare runs of the same split or the same --cv-folds")
            raise ConfigError(msg)
    label = np.array([LABEL_NAMES.index(x) for x in a["label"]])
    result = paired_comparison(np.array(a["score"]), np.array(b["score"]), label, threshold)
    click.echo(json.dumps(result, indent=1) if as_json else format_comparison(result, report_a, report_b))


@main.group()
def models() -> None:
    """Model files."""


@models.command("build")
@click.option("--model-dir", type=click.Path(file_okay=False),
              help="Default: $MASKWATCH_MODEL_DIR or ~/.cache/maskwatch/models.")
@click.option("--force", is_flag=True, help="Rebuild even if the files are up to date.")
def models_build(model_dir: str | None, force: bool) -> None:
    """Export the default pose model to ONNX (idempotent; offline once its build environment is cached)."""
    from maskwatch.pose_build import ModelBuildError, build_models

    try:
        info = build_models(Path(model_dir) if model_dir else None, force=force,
                            log=lambda m: click.echo(m, err=True))
    except ModelBuildError as exc:
        raise MaskwatchError(str(exc)) from exc
    click.echo(json.dumps(info, indent=1, default=str))


@main.command("train-classifier", add_help_option=False,
              context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def train_classifier(ctx: click.Context) -> None:
    """Train the mask classifier (`make venv-train` first); `maskwatch train-classifier --help` lists its options."""
    try:
        from maskwatch.training.cli import main as train_main
    except ImportError as exc:
        msg = f"train-classifier needs the training extra ({exc.name} missing): make venv-train"
        raise MaskwatchError(msg) from exc
    sys.exit(train_main(list(ctx.args)))


@main.command()
@click.option("--port", default=19092, show_default=True)
def broker(port: int) -> None:
    """Run a local Kafka-protocol broker (Tansu) on 127.0.0.1:PORT until interrupted."""
    import signal

    from services.broker import start_broker, stop_broker

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops the broker too, not only Ctrl-C
    proc = start_broker(port)
    click.echo(f"Kafka-protocol broker (Tansu) on 127.0.0.1:{port}, pid {proc.pid}; Ctrl-C stops it", err=True)
    try:
        proc.wait()
    except KeyboardInterrupt:
        stop_broker(proc.pid)


from maskwatch.cli_cameras import cameras  # noqa: E402 - registered after the group exists
from maskwatch.cli_dataset import dataset  # noqa: E402 - registered after the group exists

main.add_command(dataset)
main.add_command(cameras)

if __name__ == "__main__":
    main()
