"""Per-person decisions on the shared videos, one `maskwatch run` (local Ray) over all of them as cameras.

    python bench/decisions.py [--config maskwatch.yaml] [--out decisions.jsonl] [VIDEO ...]

Prints, per video, the people decided mask / no_mask / undecided and the face crops classified and rejected by the
face gate, from the final statistics record, next to what is known of the video (``EXPECTED``). Judge a change to
detection, tracking, the face gate or voting by these decisions, and look at the crops behind them with
``maskwatch dataset extract``.
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

from cluster.config import CameraConfig, load_config
from cluster.driver import run

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
# What is known of each video (../shared/data/SOURCES.md) and the decision target that follows from it.
EXPECTED = {
    "queue_hk_masked": "everyone masked: no_mask 0, mask >= 12",
    "queue_dark_masks": "one of ~9 unmasked: at most one wrong decision",
    "cctv_corridor_masked": "one masked man: mask",
    "street_5_masked": "5 masked: no_mask 0",
    "office_2_masked": "2 masked: no_mask 0",
    "single_masked": "1 masked: mask",
    "single_unmasked": "1 unmasked: no_mask",
    "single_puts_mask_on": "transition: final state (mask) or undecided",
    "single_mask_on_off": "on and off: not wrong",
    "studio_4_unmasked_to_masked": "final state (mask) or undecided, never no_mask",
    "towncentre_cctv_10s": "pre-2020, nobody masked: mask 0",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="*", help="video names in ../shared/data/videos (default: all of EXPECTED)")
    ap.add_argument("--config", help="YAML config (cameras are replaced by the videos)")
    ap.add_argument("--out", help="JSON Lines of every record (default: a temporary file)")
    args = ap.parse_args()
    names = args.videos or list(EXPECTED)
    cams = []
    for name in names:
        path = VIDEOS / f"{Path(name).stem}.mp4"
        if not path.is_file():
            print(f"missing {path}", file=sys.stderr)
            return 2
        cams.append(CameraConfig(camera_id=path.stem, source=str(path)))
    cfg = load_config(args.config).model_copy(update={"cameras": cams})
    out = args.out or str(Path(tempfile.mkdtemp(prefix="maskwatch-decisions-")) / "records.jsonl")
    result = run(cfg, out_path=out)
    final = {}
    for line in Path(out).read_text().splitlines():
        rec = json.loads(line)
        if rec["topic"] == cfg.kafka.stats_topic and rec["value"]["final"]:
            final[rec["key"]] = rec["value"]
    print(f"{'video':<30}{'people':>7}{'mask':>6}{'no_mask':>8}{'undec.':>7}{'faces':>7}{'rejected':>9}  expected")
    for c in cams:
        s = final[c.camera_id]
        print(f"{c.camera_id:<30}{s['total_people']:>7}{s['total_masked']:>6}{s['total_unmasked']:>8}"
              f"{s['total_undecided']:>7}{s['faces_classified']:>7}{s['faces_rejected']:>9}  "
              f"{EXPECTED.get(c.camera_id, '')}")
    print(f"records: {out} ({result.records}), {result.wall_s} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
