"""Tune pose input size and tracker settings against MOTChallenge ground truth (default: PETS09 S2L1).

    python bench/tune_tracking.py [--source VIDEO --gt GT.txt] [--input-px 960 1280] [--grid small|full]

Pose runs once per input size over every frame (cached as .npz next to --cache, keyed by video, model and size, at
a low person threshold); the tracker then replays the cached detections for each setting of the grid, so a sweep
costs seconds per setting. Each row: the settings, MOTA, IDF1, ID switches, precision, recall, distinct track ids
vs ground-truth ids (py-motmetrics, IoU 0.5). The same code paths as ``maskwatch run`` (letterbox, decode_pose,
CameraTracker, pipeline.mot) are used, so the figures are what ``maskwatch run --tracks-out`` + ``eval-tracking``
report for those settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import numpy as np

from cluster.driver import pose_model_path
from maskwatch.evaluation.tracking import evaluate_tracks
from pipeline.config import Config
from pipeline.letterbox import letterbox
from pipeline.mot import mot_rows, read_mot
from pipeline.onnx_models import PoseModel
from pipeline.pose_postprocess import OKS_NMS, decode_pose, keep_people
from pipeline.source import read_frames
from pipeline.tracking import CameraTracker, TrackerParams
from schemas.pose import Poses

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
CACHE_CONF = 0.1  # detections are cached above this; the sweep applies the real threshold


def detections(source: str, input_px: int, cache: Path, nms_iou: float) -> tuple[list[dict], tuple[int, int]]:
    """Per frame: frame_idx, score, bbox_xyxy, keypoints (original pixels), from the cache or a pose run."""
    model_path = pose_model_path(Config())
    key = hashlib.sha256(f"{Path(source).resolve()}|{model_path.stat().st_size}|{input_px}|{nms_iou}".encode())
    path = cache / f"pose-{Path(source).stem}-{input_px}-{key.hexdigest()[:10]}.npz"
    if path.exists():
        z = np.load(path)
        idx = z["row_frame"]
        frames = [
            {"frame_idx": int(f), "score": z["score"][idx == f], "bbox_xyxy": z["bbox"][idx == f],
             "keypoints": z["kp"][idx == f]}
            for f in z["frames"]
        ]
        return frames, (int(z["wh"][0]), int(z["wh"][1]))
    model = PoseModel(model_path, device="cpu")
    out, wh, t0 = [], (0, 0), time.perf_counter()
    for fr in read_frames(source, "tune", None):
        h, w = fr.image.shape[:2]
        wh = (w, h)
        img, lb = letterbox(fr.image, input_px)
        score, bbox, kp = decode_pose(model.infer(img[None])[0], lb, CACHE_CONF, nms_iou, oks_threshold=1.0,
                                     min_keypoints=0, head_or_torso=False)
        out.append({"frame_idx": fr.frame_idx, "score": score, "bbox_xyxy": bbox, "keypoints": kp})
    print(f"pose {input_px} px: {len(out)} frames in {time.perf_counter() - t0:.0f} s ({model.provider})", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        frames=np.array([f["frame_idx"] for f in out]),
        row_frame=np.concatenate([np.full(len(f["score"]), f["frame_idx"]) for f in out]),
        score=np.concatenate([f["score"] for f in out]),
        bbox=np.concatenate([f["bbox_xyxy"] for f in out]),
        kp=np.concatenate([f["keypoints"] for f in out]),
        wh=np.array(wh),
    )
    return out, wh


def track(frames: list[dict], wh: tuple[int, int], params: TrackerParams, conf: float,
          images: dict[int, np.ndarray] | None = None, oks: float = OKS_NMS) -> np.ndarray:
    """Replay detections through the tracker; MOT rows `(M, 7)` (:func:`pipeline.mot.mot_rows`). ``images``
    (frame_idx -> BGR frame) gives the tracker the frames, as the pipeline does (shot cuts, torso embeddings)."""
    tracker = CameraTracker(wh, params)
    rows = []
    for f in frames:
        keep = f["score"] >= conf
        score, bbox, kp = f["score"][keep], f["bbox_xyxy"][keep], f["keypoints"][keep]
        keep = keep_people(bbox, kp, oks)  # the cache holds the detections before keep_people
        score, bbox, kp = score[keep], bbox[keep], kp[keep]
        tid = tracker.step(f["frame_idx"], kp, bbox, None if images is None else images[f["frame_idx"]])
        rows.append(mot_rows(Poses("tune", f["frame_idx"], 0, score, bbox, kp, tid)))
    return np.concatenate(rows) if rows else np.zeros((0, 7))


GRIDS = {
    "small": {
        "conf": [0.25],
        "distance": ["keypoints_voting", "mean_euclidean"],
        "keypoint_dist_frac": [1 / 20],
        "euclidean_dist_frac": [1 / 10],
        "distance_threshold": [0.75],
        "detection_threshold": [0.3],
        "initialization_delay": [3],
        "hit_counter_max": [30],
    },
    "height": {
        "conf": [0.15, 0.2, 0.25],
        "distance": ["keypoints_voting_height"],
        "keypoint_height_frac": [0.1, 0.15, 0.2, 0.25, 0.3, 0.4],
        "keypoint_dist_frac": [1 / 50],
        "euclidean_dist_frac": [1 / 10],
        "distance_threshold": [0.75],
        "detection_threshold": [0.3],
        "initialization_delay": [3],
        "hit_counter_max": [30, 60],
    },
    "full": {
        "conf": [0.25, 0.4],
        "distance": ["mean_euclidean", "keypoints_voting"],
        "keypoint_dist_frac": [1 / 80, 1 / 40],
        "euclidean_dist_frac": [1 / 40, 1 / 25, 1 / 15, 1 / 10],
        "distance_threshold": [0.75, 0.3],
        "detection_threshold": [0.3],
        "initialization_delay": [3, 6],
        "hit_counter_max": [15, 30, 60],
    },
    "reid": {  # re-identification on torso histograms (needs the frames: --frames)
        "conf": [0.15],
        "reid_model": [None],
        "reid_hit_counter_max": [0, 30, 60, 120],
        "reid_distance_threshold": [0.2, 0.3, 0.4],
    },
    "default": {"conf": [0.15]},
    "reid-net": {  # re-identification on pipeline.reid's network embeddings (needs the frames: --frames)
        "conf": [0.15],
        "reid_hit_counter_max": [0, 1, 10, 30, 60],
        "reid_distance_threshold": [0.25, 0.3, 0.35, 0.4],
        "reid_exit_margin_frac": [0.0, 0.02],
    },
    "gate-net": {  # the appearance gate on pipeline.reid's network embeddings (needs the frames: --frames)
        "conf": [0.15],
        "appearance_gate": [1.0, 0.8, 0.75, 0.7, 0.6, 0.5],
        "appearance_every": [5, 10],
    },
    "idf1": {  # around the defaults, for identity (IDF1) with keypoint NMS
        "conf": [0.15],
        "keypoint_height_frac": [0.15, 0.2, 0.25],
        "distance_threshold": [0.34, 0.5, 0.75],
        "detection_threshold": [0.3, 0.5],
    },
    "reid-fine": {  # torso histograms, as "reid"
        "conf": [0.15],
        "reid_model": [None],
        "reid_hit_counter_max": [0, 20, 40],
        "reid_distance_threshold": [0.1, 0.15],
        "reid_max_move_frac": [0.05, 0.1],
    },
    "fine": {
        "conf": [0.15, 0.2, 0.25],
        "distance": ["keypoints_voting"],
        "keypoint_dist_frac": [1 / 60, 1 / 50, 1 / 40, 1 / 30],
        "euclidean_dist_frac": [1 / 10],
        "distance_threshold": [0.75],
        "detection_threshold": [0.2, 0.3],
        "initialization_delay": [3, 4],
        "hit_counter_max": [60, 90],
    },
}


def settings(grid: dict[str, list]) -> list[tuple[float, TrackerParams]]:
    """The distinct (conf, TrackerParams) of a grid (fields a distance ignores are not varied for it)."""
    seen, out, default = set(), [], TrackerParams()
    for values in itertools.product(*grid.values()):
        kw = dict(zip(grid, values, strict=True))
        conf = kw.pop("conf")
        kw.setdefault("distance", default.distance)
        kw.setdefault("keypoint_height_frac", default.keypoint_height_frac)
        if not kw.get("reid_hit_counter_max"):
            kw["reid_distance_threshold"] = default.reid_distance_threshold
            kw["reid_max_move_frac"] = default.reid_max_move_frac
            kw["reid_exit_margin_frac"] = default.reid_exit_margin_frac
        if kw["distance"] != "keypoints_voting_height":
            kw["keypoint_height_frac"] = default.keypoint_height_frac
        if kw["distance"] != "keypoints_voting":
            kw["keypoint_dist_frac"] = default.keypoint_dist_frac
        if kw["distance"] == "mean_euclidean":
            kw["distance_threshold"] = default.distance_threshold
        else:
            kw["euclidean_dist_frac"] = default.euclidean_dist_frac
        p = TrackerParams(**kw)
        if (conf, p) not in seen:
            seen.add((conf, p))
            out.append((conf, p))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=str(VIDEOS / "pets09_s2l1_cctv.mp4"))
    ap.add_argument("--gt", default=str(VIDEOS / "pets09_s2l1_gt.txt"))
    ap.add_argument("--input-px", type=int, nargs="+", default=[1280])
    ap.add_argument("--grid", choices=sorted(GRIDS), default="small")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "maskwatch" / "bench")
    ap.add_argument("--json", type=Path, help="Also write every row here.")
    ap.add_argument("--frames", action="store_true",
                    help="Give the tracker the frames, as the pipeline does (shot cuts, torso embeddings; ~1 GB for "
                         "PETS09)")
    ap.add_argument("--oks", type=float, default=OKS_NMS, help="keypoint NMS threshold (1: off)")
    args = ap.parse_args()

    gt = read_mot(args.gt)
    nms = Config().pose.nms_iou
    rows = []
    print(f"{'input':>5} {'conf':>4} {'distance':<16} {'kp/eu frac':>10} {'thr':>4} {'kpthr':>5} {'init':>4} "
          f"{'hit':>4} {'reid':>4} {'rthr':>4} {'edge':>4} {'gate':>4} {'every':>5} "
          f"{'MOTA':>6} {'IDF1':>6} {'IDsw':>5} {'prec':>5} {'rec':>5} {'ids':>4} {'cnt':>4} {'gt':>3}", flush=True)
    for px in args.input_px:
        frames, wh = detections(args.source, px, args.cache, nms)
        images = {fr.frame_idx: fr.image for fr in read_frames(args.source, "tune", None)} if args.frames else None
        for conf, p in settings(GRIDS[args.grid]):
            m = evaluate_tracks(track(frames, wh, p, conf, images, args.oks), gt)
            frac = {"keypoints_voting": f"1/{round(1 / p.keypoint_dist_frac)}",
                    "mean_euclidean": f"1/{round(1 / p.euclidean_dist_frac)}"}.get(p.distance,
                                                                                   f"h*{p.keypoint_height_frac:g}")
            print(f"{px:>5} {conf:>4.2f} {p.distance[:16]:<16} {frac:>10} {p.distance_threshold:>4.2f} "
                  f"{p.detection_threshold:>5.2f} {p.initialization_delay:>4} {p.hit_counter_max:>4} "
                  f"{p.reid_hit_counter_max:>4} {p.reid_distance_threshold:>4.2f} {p.reid_exit_margin_frac:>4.2f} "
                  f"{p.appearance_gate:>4.2f} {p.appearance_every:>5} "
                  f"{m.mota:>6.3f} {m.idf1:>6.3f} "
                  f"{m.id_switches:>5} {m.precision:>5.3f} {m.recall:>5.3f} {m.distinct_track_ids:>4} "
                  f"{m.counted_track_ids:>4} {m.gt_ids:>3}",
                  flush=True)
            rows.append({"input_px": px, "conf": conf, "tracker": dataclasses.asdict(p), **m.to_dict()})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
