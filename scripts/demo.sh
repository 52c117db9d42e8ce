#!/usr/bin/env bash
# make demo: a real video through maskwatch on local Ray into a local Kafka-protocol broker, then the per-camera
# statistics read back from Kafka. Stops only the broker it started (by PID).
set -euo pipefail
BIN=${BIN:-.venv/bin}
PORT=${BROKER_PORT:-19092}
SHARED_VIDEO=../shared/data/videos/street_5_masked.mp4
VTEST=/usr/share/doc/opencv-doc/examples/data/vtest.avi
if [ -n "${SOURCE:-}" ]; then src=$SOURCE
elif [ -f "$SHARED_VIDEO" ]; then src=$SHARED_VIDEO
elif [ -f "$VTEST" ]; then src=$VTEST
else
  echo "maskwatch demo: no input video. Pass one: make demo SOURCE=path/or/rtsp-url" >&2
  echo "  (or install a real CCTV clip: apt-get install opencv-doc, which ships $VTEST)" >&2
  exit 2
fi
log=$(mktemp -t maskwatch-broker.XXXXXX.log)
"$BIN/maskwatch" broker --port "$PORT" 2>"$log" &
broker_pid=$!
trap 'kill "$broker_pid" 2>/dev/null; wait "$broker_pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q "Tansu on" "$log" 2>/dev/null && break; sleep 0.2; done
echo "== maskwatch run --source $src --kafka-bootstrap 127.0.0.1:$PORT"
"$BIN/maskwatch" run --source "$src" --kafka-bootstrap "127.0.0.1:$PORT"
echo "== maskwatch stats --kafka-bootstrap 127.0.0.1:$PORT"
"$BIN/maskwatch" stats --kafka-bootstrap "127.0.0.1:$PORT"
