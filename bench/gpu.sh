#!/usr/bin/env bash
# The GPU path, measured in one command on any machine with an NVIDIA GPU; prints one JSON on stdout.
#
#   bench/gpu.sh [N_CAMERAS]        (default 8; logs go to stderr, the JSON's parts are kept in $OUT or a temp dir)
#
# 1. pose: images/s at batch 1, 8 and 32 at 640 px, on every runtime present (ONNX Runtime CPU for reference, CUDA
#    with IO binding, TensorRT fp32 and fp16 with its engine cache), with each one's largest person-score difference
#    from ONNX Runtime CPU fp32 (bench/runtimes.py);
# 2. decode: how many 1080p30 H.264 streams decode in real time, NVDEC (PyAV, capture.hwaccel: cuda) next to the CPU
#    (bench/decode.py on towncentre_cctv_10s.mp4);
# 3. the whole pipeline: N file cameras of street_5_masked at 30 fps through local Ray, pose and classify on CUDA,
#    decode on NVDEC (bench/pipeline_fps.py), with the bare model under the same runtime.
# Every step has a time limit; the whole takes under 10 minutes after `make venv models` (which needs the network
# once; later runs reuse ~/.cache/maskwatch).
# DEVICE=cpu runs the same steps without a GPU (pose and classify on the CPU, NVDEC falling back to the CPU): a dry
# run of this script, not a GPU figure.
set -euo pipefail
cd "$(dirname "$0")/.."
N_CAMERAS="${1:-8}"
DEVICE="${DEVICE:-cuda}"
if [ "$DEVICE" = cuda ] && ! nvidia-smi -L >&2; then
  echo "bench/gpu.sh: no NVIDIA GPU here (nvidia-smi -L failed); the CPU figures come from bench/runtimes.py," \
       "bench/decode.py and bench/pipeline_fps.py" >&2
  exit 2
fi
make -s venv models >&2
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
PY=.venv/bin/python
export RAY_USAGE_STATS_ENABLED=0
timeout 240 $PY bench/runtimes.py --frames 64 --threads 1 --batch 1 8 32 --input-px 640 --json "$OUT/pose.json" >&2
timeout 120 $PY bench/decode.py --decoder pyav --hwaccel cuda none --seconds 5 --json "$OUT/decode.json" >&2
timeout 200 $PY bench/pipeline_fps.py --cameras "$N_CAMERAS" --target-fps 30 --skip-single \
  --set pose.device="$DEVICE" --set classify.device="$DEVICE" --set capture.decoder=pyav --set capture.hwaccel=cuda \
  --json "$OUT/pipeline.json" >&2
$PY - "$OUT" <<'PYEOF'
import json, subprocess, sys
from pathlib import Path
out = Path(sys.argv[1])
pose = json.loads((out / "pose.json").read_text())
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, check=False).stdout.strip()
except FileNotFoundError:
    gpu = None
pipeline = json.loads((out / "pipeline.json").read_text())
for pools in pipeline.get("pools", {}).values():  # batch sizes as a histogram, not one number per call
    for pool in pools:
        sizes = pool.pop("batch_sizes", [])
        pool["batch_size_counts"] = {str(b): sizes.count(b) for b in sorted(set(sizes))}
print(json.dumps({
    "gpu": gpu,
    "pose_images_per_s": [
        {"runtime": r["runtime"], "threads": r["threads"], "precision": r["precision"], "batch": r["batch"],
         "provider": r["provider"],
         "images_per_s": round(1000 / r["ms_per_frame"], 1), "max_person_score_diff": r["max_person_score_diff"]}
        for r in pose["rows"]],
    "decode_1080p30": json.loads((out / "decode.json").read_text())["summary"],
    "pipeline": pipeline,
}, indent=1))
PYEOF
