"""How many H.264 camera streams one node decodes in real time: K streams at once, decoded as the pipeline does.

    python bench/decode.py [--video V.mp4] [--decoder opencv pyav] [--hwaccel none cuda] [--streams 1 2 4]
                           [--seconds 8] [--json OUT.json]

Each stream is a thread reading the file over and over with :func:`pipeline.source.open_capture` (one FFmpeg
decoding thread per stream, ``capture.decoder_threads: 1``, the default) and converting every frame to a BGR array,
as a camera shard does before sampling; nothing is dropped. For each decoder, hwaccel and K it prints the frames/s of
the slowest stream, their sum, the process CPU ms per frame and whether every stream kept up with the video's own
frame rate (real time), going up the ``--streams`` counts until one does not. ``streams in real time`` is the largest
K that kept up, and ``capacity`` is the aggregate frames/s at the last K divided by the video's frame rate: how many
such streams the node's decoders sustain when nothing else runs.

The default video is the shared ``towncentre_cctv_10s.mp4``: 1920x1080, 30 fps, H.264 (High), ~3 Mbit/s, a real
fixed CCTV view (``../shared/data/SOURCES.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

from pipeline.source import open_capture

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "towncentre_cctv_10s.mp4"


def run_streams(video: str, decoder: str, hwaccel: str, k: int, seconds: float) -> dict:
    """Decode ``video`` as ``k`` concurrent streams for ``seconds``; frames per stream, CPU and where it decoded."""
    stop = threading.Event()
    counts = [0] * k
    where: set[str] = set()
    errors: list[BaseException] = []

    def stream(i: int) -> None:
        try:
            while not stop.is_set():
                cap = open_capture(video, f"bench-{i}", decoder=decoder, hwaccel=hwaccel)
                where.add(cap.decodes_on)
                try:
                    while not stop.is_set() and cap.read() is not None:
                        counts[i] += 1
                finally:
                    cap.release()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(k)]
    t0, c0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if errors:
        raise errors[0]
    total = sum(counts)
    return {"decoder": decoder, "hwaccel": hwaccel, "decodes_on": sorted(where), "streams": k,
            "min_stream_fps": round(min(counts) / wall, 1), "total_fps": round(total / wall, 1),
            "cpu_ms_per_frame": round(1000 * cpu / max(total, 1), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(DEFAULT))
    ap.add_argument("--decoder", nargs="+", default=["opencv", "pyav"], choices=["opencv", "pyav"])
    ap.add_argument("--hwaccel", nargs="+", default=["none"], choices=["none", "cuda"],
                    help="with the pyav decoder; cuda decodes on the GPU (NVDEC)")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64],
                    help="stream counts, tried in order until the first that does not keep up")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    probe = open_capture(args.video, "bench")
    fps = probe.fps
    probe.release()
    print(f"{os.cpu_count()} CPU(s); {Path(args.video).name}: {fps:.2f} fps; {args.seconds:g} s per row")
    print(f"{'decoder':<8}{'hwaccel':>8}{'on':>6}{'streams':>8}{'slowest fps':>12}{'total fps':>10}"
          f"{'cpu ms/frame':>13}{'real time':>10}")
    rows, summary = [], []
    for decoder in args.decoder:
        for hw in args.hwaccel if decoder == "pyav" else ["none"]:
            best, last = 0, None
            for k in args.streams:
                row = run_streams(args.video, decoder, hw, k, args.seconds)
                row["real_time"] = row["min_stream_fps"] >= 0.97 * fps
                rows.append(row)
                last = row
                best = k if row["real_time"] else best
                print(f"{decoder:<8}{hw:>8}{','.join(row['decodes_on']):>6}{k:>8}{row['min_stream_fps']:>12}"
                      f"{row['total_fps']:>10}{row['cpu_ms_per_frame']:>13}{'yes' if row['real_time'] else 'no':>10}",
                      flush=True)
                if not row["real_time"]:
                    break
            assert last is not None
            summary.append({"decoder": decoder, "hwaccel": hw, "decodes_on": last["decodes_on"],
                            "streams_in_real_time": best,
                            "capacity_streams": round(last["total_fps"] / fps, 1)})
            print(f"  {decoder}/{hw}: {best} stream(s) in real time; capacity {summary[-1]['capacity_streams']} "
                  f"streams (total fps at {last['streams']} streams / {fps:.0f})")
    if args.json:
        args.json.write_text(json.dumps({"video": Path(args.video).name, "video_fps": fps, "cpus": os.cpu_count(),
                                         "rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
