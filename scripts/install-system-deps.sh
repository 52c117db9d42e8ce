#!/usr/bin/env bash
# System (Debian) packages for the real-RTSP-server tests (tests/test_rtsp.py, scripts/rtsp_server.py):
#   python3-gi                  gi for the system /usr/bin/python3 (the project venv never imports gi)
#   gir1.2-gst-rtsp-server-1.0  GstRtspServer (libgstrtspserver; Debian makes it depend on GStreamer core and
#                               plugins -base, -good and -bad: filesrc, appsrc, identity, rtpbin, udpsink)
#   gstreamer1.0-plugins-good   qtdemux, rtph264pay (used directly by scripts/rtsp_server.py)
#   chromium, chromium-driver   the dashboard in a real browser (tests/test_dashboard.py, tests/test_operators.py)
#   prometheus                  scrapes a local run's metrics (tests/test_operators.py)
#   iproute2                    `ip link set lo up` in the multi-node test's own network namespace
#                               (tests/multinode_scenario.py; `unshare` is util-linux, always there)
# Not needed: gstreamer1.0-rtsp (rtspclientsink), -plugins-ugly and -libav (nothing is re-encoded or decoded).
# Idempotent: installs (and runs apt-get update) only when a package is missing. Needs root or sudo (CI runs as root;
# `make test` runs it when root, and otherwise ends by naming the tests it skipped and this script).
set -euo pipefail
PKGS=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good chromium chromium-driver prometheus iproute2)

if ! command -v dpkg-query > /dev/null || ! command -v apt-get > /dev/null; then
  echo "system deps: not a Debian system (no dpkg-query/apt-get): install the equivalents of ${PKGS[*]} yourself;" \
       "the tests that need them are skipped" >&2
  exit 0
fi

missing=()
for p in "${PKGS[@]}"; do
  # (dpkg-query, not `dpkg -s | grep -q`: under pipefail grep's early exit can SIGPIPE dpkg and read as missing)
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system deps: all present (${PKGS[*]})"
  exit 0
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo > /dev/null; then
    echo "system deps: missing ${missing[*]}; run this script as root (no sudo here)" >&2
    exit 1
  fi
  SUDO=(sudo)
fi
echo "system deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
