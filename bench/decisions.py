"""Per-person decisions on the labelled shared videos, scored against the people labelled by looking.

    python bench/decisions.py [--config maskwatch.yaml] [--set tracking.reid_hit_counter_max=60 ...]
                              [--out DIR] [--reuse DIR] [--json] [VIDEO ...]

One `maskwatch run` (local Ray) over every video that has a label file in ``data/labels/people/`` (or the videos
named), each a camera, writing each camera's person tracks (MOTChallenge) and the decision and statistics records.
Prints, per video and pooled, the camera's own counts (people, mask, no_mask, undecided, face crops classified and
rejected by the face gate) and then the person-level table of ``maskwatch eval-people``
(:mod:`maskwatch.evaluation.people`): people labelled, with a face, found, tracks per person, unmatched tracks,
people decided, coverage, sensitivity and specificity with Wilson 95% intervals, wrong decisions, and the published
next to the labelled mask fraction. Last, identity on the labelled frames
(:func:`maskwatch.evaluation.people.identity_metrics`): every track against the labelled people, MOTA, IDF1 and ID
switches per video. The person table hides a track that follows two people one after the other; IDF1 shows it.

``--set key=value`` overrides one config setting (dotted path, YAML value), so that settings can be chosen on some
videos and reported on others (name the videos). ``--reuse DIR`` scores the outputs of an earlier ``--out DIR``
again without running. Judge a change to detection, tracking, the face gate or voting by this table, and look at the
crops behind the decisions with ``maskwatch dataset extract``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

from maskwatch.evaluation import people
from pipeline.config import CameraConfig, apply_overrides, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
LABELS = ROOT / "data" / "labels" / "people"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="*", help="video names (default: every video with a label file)")
    ap.add_argument("--config", help="YAML config (cameras are replaced by the videos)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="override a setting: key=value")
    ap.add_argument("--out", help="folder for records.jsonl and the tracks files (default: a temporary folder)")
    ap.add_argument("--reuse", help="score the outputs of an earlier --out folder instead of running")
    ap.add_argument("--json", action="store_true", help="print the person-level figures as JSON")
    args = ap.parse_args()
    names = [Path(v).stem for v in args.videos] or sorted(p.stem for p in LABELS.glob("*.csv"))
    if args.reuse and not args.videos:  # the videos of that run
        names = [n for n in names if (Path(args.reuse) / f"{n}.tracks.txt").is_file()]
    for name in names:
        if not (VIDEOS / f"{name}.mp4").is_file():
            print(f"missing {VIDEOS / f'{name}.mp4'} (the shared videos are not here)", file=sys.stderr)
            return 2
        if not (LABELS / f"{name}.csv").is_file():
            print(f"no labels for {name}: {LABELS / f'{name}.csv'}", file=sys.stderr)
            return 2
    out = Path(args.reuse or args.out or tempfile.mkdtemp(prefix="maskwatch-decisions-"))
    records = out / "records.jsonl"
    if not args.reuse:
        from cluster.driver import run

        out.mkdir(parents=True, exist_ok=True)
        base = load_config(args.config).model_dump(mode="json", exclude={"cameras"})
        cfg = parse_config(apply_overrides(base, args.sets), "bench/decisions.py --set")
        cams = [CameraConfig(camera_id=n, source=str(VIDEOS / f"{n}.mp4")) for n in names]
        cfg = cfg.model_copy(update={"cameras": cams})
        result = run(cfg, out_path=str(records), tracks={n: str(out / f"{n}.tracks.txt") for n in names})
        print(f"records: {records} ({result.records}), {result.wall_s} s", file=sys.stderr)
    final = {}
    for line in records.read_text().splitlines():
        rec = json.loads(line)
        if rec["value"].get("final"):
            final[rec["key"]] = rec["value"]
    print(f"{'video':<28}{'people':>7}{'mask':>6}{'no_mask':>8}{'undec.':>7}{'faces':>7}{'rejected':>9}")
    for n in names:
        s = final[n]
        print(f"{n:<28}{s['total_people']:>7}{s['total_masked']:>6}{s['total_unmasked']:>8}"
              f"{s['total_undecided']:>7}{s['faces_classified']:>7}{s['faces_rejected']:>9}")
    print()
    decisions = people.read_decisions(records)
    results = [people.evaluate_files(LABELS / f"{n}.csv", out / f"{n}.tracks.txt",
                                     [d for d in decisions if d["camera_id"] == n]) for n in names]
    if args.json:
        print(json.dumps(people.results_json(results), indent=1))
    else:
        print(people.format_table(results))
        print()
        print(people.format_identity(results))
    print(f"outputs: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
