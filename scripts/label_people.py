"""Helps label people by looking: drafts person boxes on sampled frames, draws them for a labeller, checks a label file.

    python scripts/label_people.py draft VIDEO --out DIR [--every-s 1.0] [--until-s S]
    python scripts/label_people.py check data/labels/people/VIDEO.csv --video VIDEO

``draft`` runs the pose model (YOLO11n-pose, frame by frame, no tracking) on one frame every ``--every-s`` seconds
and writes, for each sampled frame, ``DIR/f<frame_idx>.png``: the frame with every detected person's box numbered
(``d0``, ``d1``, ...) over a 100 px coordinate grid, and ``DIR/h<frame_idx>.png``: each detection's head region
enlarged, with the same numbers, to judge the mask. ``DIR/draft.csv`` holds one row per detection with the label
columns empty. The labeller looks at the images and writes the label file from the draft: fills ``person_id``
(the same number for the same person across frames) and ``mask``, deletes rows that are not a person (or not one
to count), and adds rows for people the model missed, with a box read off the grid.

The label file (``data/labels/people/<video>.csv``) has the columns of :data:`LABEL_COLUMNS`:
``frame_idx`` (0-based, as OpenCV decodes the video), ``person_id`` (an integer per person, within the video),
``x1, y1, x2, y2`` (the person's visible body box, original-frame pixels) and ``mask`` (see
:data:`MASK_STATES`, the state seen at that frame). ``maskwatch eval-people`` reads it
(:mod:`maskwatch.evaluation.people`).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maskwatch.evaluation.people import read_labels


def draft(video: Path, out: Path, every_s: float, until_s: float | None, input_px: int | None) -> int:
    from pipeline.config import PoseConfig
    from pipeline.headbox import head_boxes
    from pipeline.letterbox import default_pose_input_px, letterbox
    from pipeline.onnx_models import PoseModel
    from pipeline.paths import pose_model_path
    from pipeline.pose_postprocess import decode_poses

    pcfg = PoseConfig()
    model = PoseModel(pcfg.model_path or pose_model_path(), "cpu")
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    last = n - 1 if until_s is None else min(n - 1, round(until_s * fps))
    wanted = sorted({min(last, round(k * every_s * fps)) for k in range(int(last / (every_s * fps)) + 1)})
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    idx = -1
    for fidx in wanted:
        while idx < fidx:
            ok, frame = cap.read()
            idx += 1
            if not ok:
                break
        if not ok:
            break
        h, w = frame.shape[:2]
        px = input_px or default_pose_input_px((w, h))
        image, lb = letterbox(frame, px)
        poses = decode_poses(model.infer(image[None])[0], lb, video.stem, fidx, 0, pcfg.conf_threshold, pcfg.nms_iou)
        heads, _ = head_boxes(poses.keypoints)
        canvas = frame.copy()
        for x in range(0, w, 100):
            cv2.line(canvas, (x, 0), (x, h), (200, 200, 200), 1)
            cv2.putText(canvas, str(x), (x + 2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        for y in range(0, h, 100):
            cv2.line(canvas, (0, y), (w, y), (200, 200, 200), 1)
            cv2.putText(canvas, str(y), (2, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        tiles = []
        for i, (box, head) in enumerate(zip(poses.bbox_xyxy, heads, strict=True)):
            x1, y1, x2, y2 = (round(v) for v in box)
            colour = tuple(int(c) for c in np.random.default_rng(i).integers(80, 256, 3))
            cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 2)
            cv2.putText(canvas, f"d{i}", (x1 + 2, y1 + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2)
            rows.append({"frame_idx": fidx, "det": f"d{i}", "person_id": "", "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                         "mask": "", "score": round(float(poses.score[i]), 3)})
            hx1, hy1, hx2, hy2 = head if head[2] > head[0] else (x1, y1, x2, y1 + (x2 - x1))
            side = max(hx2 - hx1, hy2 - hy1) * 1.5
            cx, cy = (hx1 + hx2) / 2, (hy1 + hy2) / 2
            a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
            crop = frame[b : int(min(h, cy + side / 2)), a : int(min(w, cx + side / 2))]
            tile = np.zeros((180, 160, 3), np.uint8)
            if crop.size:
                tile[:160] = cv2.resize(crop, (160, 160), interpolation=cv2.INTER_CUBIC)
            cv2.putText(tile, f"d{i}", (4, 176), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
            tiles.append(tile)
        cv2.imwrite(str(out / f"f{fidx:05d}.png"), canvas)
        if tiles:
            per_row = 8
            tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % per_row)
            sheet = np.vstack([np.hstack(tiles[r : r + per_row]) for r in range(0, len(tiles), per_row)])
            cv2.imwrite(str(out / f"h{fidx:05d}.png"), sheet)
    cap.release()
    with (out / "draft.csv").open("w", newline="") as fh:
        wr = csv.DictWriter(fh, ["frame_idx", "det", "person_id", "x1", "y1", "x2", "y2", "mask", "score"])
        wr.writeheader()
        wr.writerows(rows)
    print(f"{video.name}: {fps:.2f} fps, {len(wanted)} frames sampled every {every_s} s up to frame {last}, "
          f"{len(rows)} detections -> {out}")
    return 0


def check(path: Path, video: Path | None) -> int:
    labels = read_labels(path)  # raises on a bad file
    size = None
    if video is not None:
        cap = cv2.VideoCapture(str(video))
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        bad = [r for r in labels.rows if r.frame_idx >= n or r.x2 > size[0] + 2 or r.y2 > size[1] + 2]
        for r in bad[:10]:
            print(f"{path}: frame {r.frame_idx} person {r.person_id}: box {r.x1, r.y1, r.x2, r.y2} outside the "
                  f"{size[0]}x{size[1]} video of {n} frames", file=sys.stderr)
        if bad:
            return 1
    print(f"{path}: {len(labels.people)} people, {len(labels.rows)} boxes, frames {labels.first_frame}-"
          f"{labels.last_frame}; states {labels.state_counts()}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("draft")
    d.add_argument("video", type=Path)
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--every-s", type=float, default=1.0)
    d.add_argument("--until-s", type=float)
    d.add_argument("--input-px", type=int)
    c = sub.add_parser("check")
    c.add_argument("labels", type=Path)
    c.add_argument("--video", type=Path)
    a = ap.parse_args()
    if a.cmd == "draft":
        return draft(a.video, a.out, a.every_s, a.until_s, a.input_px)
    return check(a.labels, a.video)


if __name__ == "__main__":
    raise SystemExit(main())
