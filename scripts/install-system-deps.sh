#!/usr/bin/env bash
# System (Debian) packages for the real-RTSP-server tests (tests/test_rtsp.py, scripts/rtsp_server.py):
#   python3-gi                  gi for the system /usr/bin/python3 (the project venv never imports gi)
#   gir1.2-gst-rtsp-server-1.0  GstRtspServer (libgstrtspserver; Debian makes it depend on GStreamer core and
#                               plugins -base, -good and -bad: filesrc, appsrc, identity, rtpbin, udpsink)
#   gstreamer1.0-plugins-good   qtdemux, rtph264pay (used directly by scripts/rtsp_server.py)
#   chromium, chromium-driver  the dashboard in a real browser (tests/test_dashboard_browser.py, selenium)
#   prometheus                  scrapes a local run's metrics in tests/test_prometheus.py
# Not needed: gstreamer1.0-rtsp (rtspclientsink), -plugins-ugly and -libav (nothing is re-encoded or decoded).
# Idempotent: installs (and runs apt-get update) only when a package is missing. Needs root (CI runs as root).
set -euo pipefail
PKGS=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good chromium chromium-driver prometheus)

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
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)
echo "system deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
