"""Choose the face gate's pass marks and the voting rules on person-level results, cross-validated by video.

    python bench/revote.py [--set tracking.reid_hit_counter_max=60 ...] [--grid small|full] [VIDEO ...]

Each labelled video (``data/labels/people``) goes once through the camera loop of ``maskwatch run``
(:func:`pipeline.camera_loop.run_camera`, models in this process, the config's tracking and the given ``--set``
overrides) while the camera's :class:`pipeline.voting.TrackLedger` calls are recorded: which tracks were seen at
each frame (with their torso embeddings), and each face crop's mask, face and usable-face scores and height. The
recording is cached under ``~/.cache/maskwatch/bench/revote`` (keyed by video, models and tracking settings).

Every setting of the grid (face gate ``faces.gate_min_score`` / ``faces.usable_min_score`` and ``voting.*``) then
replays the recording into a fresh ledger, exactly as :meth:`pipeline.camera.CameraPipeline.add_scores` applies the
gate, and its decisions are scored against the labels (:func:`maskwatch.evaluation.people.evaluate_video`).

Cross-validation by video: the videos are split into two folds (``FOLDS``); on each fold the setting with the
highest coverage among those whose wrong decisions stay within ``--max-wrong`` of the decided people is chosen, and
reported on the other fold. The pooled table of the other folds is the honest estimate of a setting chosen this way.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import pickle
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

from maskwatch.evaluation.people import VideoResult, evaluate_video, format_table, pooled, read_labels
from pipeline.config import Config, apply_overrides, load_config, parse_config
from pipeline.mot import read_mot
from pipeline.tracking import embedding_distance
from pipeline.voting import TrackLedger, VotingRules

CACHE = Path.home() / ".cache" / "maskwatch" / "bench" / "revote"
ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
LABELS = ROOT / "data" / "labels" / "people"
# The code a recording depends on, part of its cache key.
CODE = ("pose_postprocess.py", "tracking.py", "appearance.py", "headbox.py", "camera.py", "camera_loop.py")
# Two folds with a similar mix of masked and unmasked people; clips of one scene or one source stay in one fold
# (the two Oxford Town Centre clips; single_masked and single_unmasked).
FOLDS = (
    ("queue_hk_masked", "towncentre_cctv_10s", "towncentre_cctv_4s", "single_masked", "single_unmasked",
     "office_2_masked"),
    ("queue_dark_masks", "crowd_toward_camera", "street_5_masked", "cctv_corridor_masked", "single_puts_mask_on",
     "single_mask_on_off", "studio_4_unmasked_to_masked"),
)
GRIDS: dict[str, dict[str, list[Any]]] = {
    "none": {},  # the config's settings only (compare tracking settings with --set)
    "small": {
        "faces.gate_min_score": [0.3, 0.45, 0.6],
        "faces.usable_min_score": [0.2, 0.35, 0.5],
        "voting.min_votes": [2, 3],
        "voting.min_agreement": [0.67, 0.75],
        "voting.max_rejected_share": [0.5, 0.8],
        "voting.split_min_distance": [1.0, 0.4],
    },
    "rejected": {  # which rejected crops count against max_rejected_share (issue 25: far, blurred faces)
        "voting.rejected_min_face_frac": [0.0, 0.5, 0.7, 0.85, 1.0],
        "voting.max_rejected_share": [0.5, 0.7],
    },
    "counted": {  # how short a track may be and still count as a person (issue 25: fragments counted twice)
        "voting.min_frames_tracked": [3, 4, 5, 6, 8],
        "voting.min_votes": [2, 3],
    },
    "split": {  # cutting a track at an appearance switch (with --set tracking.appearance_gate=0.75: the network's)
        "voting.split_min_distance": [1.0, 0.7, 0.6, 0.5, 0.4, 0.3],
        "voting.split_min_part": [2, 3, 5, 8, 12],
    },
    "weight": {  # votes weighted by what a crop is worth (issue 25) instead of counted
        "voting.vote_weight": ["count", "confidence", "face_px", "face_px_confidence"],
        "voting.min_agreement": [0.6, 0.67, 0.75],
    },
    "wide": {  # around the pass marks of face-gate.md (0.6 / 0.5) and the voting rules before person-level tuning
        "faces.gate_min_score": [0.0, 0.3, 0.45, 0.6],
        "faces.usable_min_score": [0.1, 0.2, 0.35, 0.5],
        "voting.min_votes": [1, 2, 3],
        "voting.min_agreement": [0.6, 0.67, 0.75],
        "voting.max_rejected_share": [0.5, 0.8, 1.0],
        "voting.mask_threshold": [0.6, 0.7],
    },
    "full": {
        "faces.gate_min_score": [0.0, 0.2, 0.3, 0.4, 0.5, 0.6],
        "faces.usable_min_score": [0.0, 0.2, 0.35, 0.5],
        "voting.min_votes": [1, 2, 3],
        "voting.min_agreement": [0.6, 0.67, 0.75, 0.85],
        "voting.max_rejected_share": [0.5, 0.7, 0.9],
        "voting.mask_threshold": [0.6, 0.7],
        "voting.no_mask_threshold": [0.3, 0.4],
        "voting.split_min_distance": [1.0, 0.5, 0.4, 0.3],
    },
}


def record(name: str, cfg: Config) -> Path:
    """Run one video through the camera loop, recording the ledger's calls; returns the cached recording."""
    from cluster.driver import pose_model_path
    from pipeline.camera import CameraPipeline
    from pipeline.camera_loop import CameraHost, CameraSpec, run_camera
    from pipeline.facegate import CropScorer, load_face_gate
    from pipeline.letterbox import default_pose_input_px
    from pipeline.onnx_models import MaskClassifier, PoseModel
    from pipeline.pose_postprocess import decode_poses, keep_people
    from pipeline.source import probe
    from schemas.pose import Poses

    src = str(VIDEOS / f"{name}.mp4")
    models = [pose_model_path(cfg), cfg.classify.model_path, cfg.faces.gate_model_path]
    key_src = json.dumps([src, [str(p) for p in models], [Path(p).stat().st_size for p in models if p],
                          asdict(cfg.tracking), cfg.pose.model_dump(mode="json"),
                          cfg.faces.min_face_px, cfg.faces.area_margin, cfg.faces.keypoint_min_score,
                          cfg.faces.min_face_keypoints, cfg.faces.require_both_eyes, cfg.faces.max_nested_overlap,
                          cfg.cameras[0].target_fps if cfg.cameras else 10.0,
                          [(ROOT / "pipeline" / f).read_text() for f in CODE]], sort_keys=True, default=str)
    path = CACHE / f"{name}-{hashlib.sha256(key_src.encode()).hexdigest()[:12]}"
    if (path / "events.pkl").is_file():
        return path
    path.mkdir(parents=True, exist_ok=True)
    # Pose results and crop scores do not depend on the tracker: kept per video (and models) across tracker settings.
    # (keep_people is applied to the cached poses: its settings are not part of their key.)
    model_key = json.dumps([src, [Path(p).stat().st_size for p in models if p],
                            cfg.pose.model_dump(mode="json", exclude={"oks_nms", "min_keypoints", "head_or_torso"})],
                           default=str)
    model_cache = CACHE / f"{name}-models-{hashlib.sha256(model_key.encode()).hexdigest()[:12]}.pkl"
    poses_of, scores_of = pickle.loads(model_cache.read_bytes()) if model_cache.is_file() else ({}, {})
    w, h, _ = probe(src, name, cfg.capture)[:3]
    pose = PoseModel(pose_model_path(cfg), "cpu", cfg.pose.in_process_threads)
    clf = MaskClassifier(cfg.classify.model_path, "cpu", cfg.classify.in_process_threads)
    gate = load_face_gate(cfg.faces.gate_model_path, cfg.faces.gate_input_px)
    scorer = CropScorer(clf, gate)
    events: list[tuple] = []
    spec = CameraSpec(camera_id=name, source=src, frame_wh=(w, h), pose_input_px=default_pose_input_px((w, h)),
                      target_fps=10.0, tracks_path=str(path / "tracks.txt"))

    def make_cam(wh: tuple[int, int], counters: Any) -> CameraPipeline:
        cam = CameraPipeline(name, wh, clf.crop_margin, cfg.tracking, cfg.faces,
                             replace(cfg.voting, split_min_distance=0.5),  # splits need the embeddings recorded
                             counters=counters)
        observe, add_scores = cam.ledger.observe, cam.add_scores

        def rec_observe(ids: list[int], fidx: int, ns: int, embs: Any = None) -> None:
            events.append(("seen", list(ids), fidx, ns, None if embs is None else list(embs)))
            observe(ids, fidx, ns, embs)

        def rec_scores(ids: list[int], scores: np.ndarray, face_px: Any = None) -> None:
            events.append(("scores", list(ids), np.asarray(scores, np.float32).copy(),
                           None if face_px is None else list(face_px)))
            add_scores(ids, scores, face_px)

        cam.ledger.observe = rec_observe  # type: ignore[method-assign]
        cam.add_scores = rec_scores  # type: ignore[method-assign]
        return cam

    async def infer_pose(image: np.ndarray, lb: Any, cid: str, fidx: int, pts: int) -> Any:
        if fidx not in poses_of:
            poses_of[fidx] = decode_poses(pose.infer(image[None])[0], lb, cid, fidx, pts, cfg.pose.conf_threshold,
                                          cfg.pose.nms_iou, oks_threshold=1.0, min_keypoints=0,
                                          head_or_torso=False)
        p = poses_of[fidx]
        keep = keep_people(p.bbox_xyxy, p.keypoints, cfg.pose.oks_nms, cfg.pose.min_keypoints,
                           cfg.pose.head_or_torso)
        return Poses(p.camera_id, p.frame_idx, p.pts_ns, p.score[keep], p.bbox_xyxy[keep], p.keypoints[keep],
                     p.track_id[keep])

    async def classify(crops: np.ndarray) -> np.ndarray:
        keys = [hashlib.sha1(c.tobytes()).hexdigest() for c in crops]
        todo = [i for i, k in enumerate(keys) if k not in scores_of]
        if todo:
            for i, row in zip(todo, scorer.score(crops[todo]), strict=True):
                scores_of[keys[i]] = row
        return np.stack([scores_of[k] for k in keys]).astype(np.float32)

    async def ignore(_messages: list) -> None:  # the recording is the ledger's calls, not the decisions
        return None

    asyncio.run(run_camera(spec, CameraHost(make_cam, clf.input_px, infer_pose, classify, ignore)))
    model_cache.write_bytes(pickle.dumps((poses_of, scores_of)))
    with (path / "events.pkl").open("wb") as fh:
        pickle.dump(events, fh)
    print(f"recorded {name}: {len(events)} events -> {path}", file=sys.stderr, flush=True)
    return path


def replay(events: list[tuple], name: str, gate_min: float, usable_min: float, rules: VotingRules,
           distance: Any = None) -> list[dict]:
    """The decisions of a recording under other gate pass marks and voting rules (as dicts); ``distance`` compares
    the recorded embeddings (:func:`pipeline.tracking.embedding_distance`)."""
    ledger = TrackLedger(name, rules, distance)
    for ev in events:
        if ev[0] == "seen":
            ledger.observe(ev[1], ev[2], ev[3], ev[4])
        else:
            sc = ev[2]
            accepted = (sc[:, 1] >= gate_min) & (sc[:, 2] >= usable_min)
            ledger.add_scores(ev[1], sc[:, 0].tolist(), accepted.tolist(), ev[3])
    return [d.to_dict() for d in ledger.end(ended_by="end_of_source")]


def settings(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid (a no_mask threshold above the mask threshold is skipped)."""
    out = []
    for values in itertools.product(*grid.values()):
        s = dict(zip(grid, values, strict=True))
        if s.get("voting.no_mask_threshold", 0) > s.get("voting.mask_threshold", 1):
            continue
        out.append(s)
    return out


def score(results: list[VideoResult], max_wrong: float) -> tuple[float, float, float]:
    """The choice's order on a fold: coverage if wrong decisions stay within ``max_wrong`` of decided people; then
    fewer wrong decisions; then fewer tracks per person (each person counted once)."""
    p = pooled(results)
    decided = max(p.people_decided, 1)
    wrong = p.wrong
    ok = wrong / decided <= max_wrong
    return (p.coverage or 0.0) if ok else -1.0, -wrong, -(p.tracks_per_person or 0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="*")
    ap.add_argument("--config")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--grid", choices=sorted(GRIDS), default="small")
    ap.add_argument("--max-wrong", type=float, default=0.05,
                    help="largest share of wrong decisions among decided people a chosen setting may have")
    ap.add_argument("--show", action="append", default=[],
                    help="also print the full table of this setting: key=value,key=value")
    args = ap.parse_args()
    names = [Path(v).stem for v in args.videos] or sorted(p.stem for p in LABELS.glob("*.csv"))
    base = load_config(args.config).model_dump(mode="json", exclude={"cameras"})
    cfg = parse_config(apply_overrides(base, args.sets), "bench/revote.py --set")
    recs = {n: pickle.loads((record(n, cfg) / "events.pkl").read_bytes()) for n in names}
    tracks = {n: read_mot(record(n, cfg) / "tracks.txt") for n in names}
    labels = {n: read_labels(LABELS / f"{n}.csv") for n in names}
    distance = embedding_distance(cfg.tracking)  # compares the recorded embeddings, as the tracker's ledger does

    def run(s: dict[str, Any]) -> list[VideoResult]:
        faces = {k.split(".", 1)[1]: v for k, v in s.items() if k.startswith("faces.")}
        voting = {k.split(".", 1)[1]: v for k, v in s.items() if k.startswith("voting.")}
        rules = replace(cfg.voting, **voting)
        gate = faces.get("gate_min_score", cfg.faces.gate_min_score)
        usable = faces.get("usable_min_score", cfg.faces.usable_min_score)
        return [evaluate_video(labels[n], tracks[n], replay(recs[n], n, gate, usable, rules, distance))
                for n in names]

    grid = settings(GRIDS[args.grid])
    results = {i: run(s) for i, s in enumerate(grid)}
    print(f"{len(grid)} settings on {len(names)} videos")
    default = run({})
    print("\nthe config's settings (no choice):")
    print(format_table(default))
    held_out: list[VideoResult] = []
    for k, fold in enumerate(FOLDS):
        tune = [i for i, n in enumerate(names) if n in fold]
        test = [i for i, n in enumerate(names) if n not in fold]
        if not tune or not test:
            continue
        best = max(results, key=lambda i: score([results[i][j] for j in tune], args.max_wrong))
        print(f"\nchosen on fold {k + 1} ({', '.join(names[j] for j in tune)}): {grid[best]}")
        print(format_table([results[best][j] for j in tune]).splitlines()[-1].replace("pooled", "tuning fold"))
        print("reported on the other videos:")
        print(format_table([results[best][j] for j in test]))
        held_out += [results[best][j] for j in test]
    if held_out:
        print("\nheld-out videos pooled (each scored with the setting chosen on the other fold):")
        print(format_table(held_out).splitlines()[-1])
    best = max(results, key=lambda i: score(results[i], args.max_wrong))
    print(f"\nchosen on all the videos (the setting to ship; the held-out line above estimates how it transfers): "
          f"{grid[best]}")
    print(format_table(results[best]))
    for text in args.show:
        s = {k: json.loads(v) for k, v in (kv.split("=") for kv in text.split(","))}
        print(f"\n{s}:")
        print(format_table(run(s)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
