#!/usr/bin/python3
"""A small RTSP server that serves an H.264 MP4 like a live camera, for tests and demos (loopback only).

Runs with the SYSTEM python (``/usr/bin/python3``), which gets ``gi`` from Debian's python3-gi; the project venv never
imports gi (install the packages with ``scripts/install-system-deps.sh``)::

    /usr/bin/python3 scripts/rtsp_server.py --port 8554 --path /cam --video VIDEO.mp4 [--realtime] [--once]

The video's H.264 access units are demuxed once into memory and fed to every client from the start through an
``appsrc`` whose timestamps keep increasing across loops (no pts reset when the file wraps), paced at the video's
frame rate with ``identity sync=true`` (always: the server's sinks sync to the clock as well). Prints one line
``ready rtsp://127.0.0.1:PORT/PATH`` once listening; SIGTERM or SIGINT stops it cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

HOST = "127.0.0.1"
COPY_ALL = (Gst.BufferCopyFlags.FLAGS | Gst.BufferCopyFlags.TIMESTAMPS | Gst.BufferCopyFlags.META
            | Gst.BufferCopyFlags.MEMORY)


def load_access_units(video: Path, timeout_s: float = 30.0) -> tuple[Gst.Caps, list[Gst.Buffer]]:
    """Demux the MP4's H.264 stream into access units (avc, one per buffer)."""
    pipe = Gst.parse_launch(
        "filesrc name=file ! qtdemux ! video/x-h264,stream-format=avc,alignment=au "
        "! appsink name=sink sync=false"
    )
    pipe.get_by_name("file").set_property("location", str(video))
    sink, bus = pipe.get_by_name("sink"), pipe.get_bus()
    caps, units = None, []
    try:
        pipe.set_state(Gst.State.PLAYING)
        deadline = GLib.get_monotonic_time() + int(timeout_s * 1e6)
        while not sink.get_property("eos"):
            if (msg := bus.pop_filtered(Gst.MessageType.ERROR)) is not None:
                raise RuntimeError(f"cannot demux {video}: {msg.parse_error()[0].message}")
            if GLib.get_monotonic_time() > deadline:
                raise RuntimeError(f"cannot demux {video}: timed out after {timeout_s:g} s")
            if (sample := sink.emit("try-pull-sample", Gst.SECOND // 10)) is not None:
                caps = caps or sample.get_caps()
                units.append(sample.get_buffer())
    finally:
        pipe.set_state(Gst.State.NULL)
    if caps is None or not units:
        raise RuntimeError(f"{video}: no H.264 video stream found")
    return caps, units


class Feeder:
    """Feeds one client's appsrc with the access units, looping (or once), timestamps continuing across loops."""

    def __init__(self, appsrc: Gst.Element, units: list[Gst.Buffer], loop: bool) -> None:
        self.units, self.loop, self.idx, self.offset = units, loop, 0, 0
        start = min(b.pts for b in units)
        end = max(b.pts + (b.duration if b.duration != Gst.CLOCK_TIME_NONE else 0) for b in units)
        self.period = end - start
        appsrc.connect("need-data", self.need_data)

    def need_data(self, appsrc: Gst.Element, _length: int) -> None:
        if self.idx == len(self.units):
            if not self.loop:
                appsrc.emit("end-of-stream")
                return
            self.idx, self.offset = 0, self.offset + self.period
        src = self.units[self.idx]
        self.idx += 1
        # A new buffer sharing the memory, with its own timestamps. (Not src.copy(): without gst-python's
        # overrides PyGObject hands back the same buffer, so the stored units' timestamps would drift each loop.)
        buf = src.copy_region(COPY_ALL, 0, src.get_size())
        buf.pts = src.pts + self.offset
        if src.dts != Gst.CLOCK_TIME_NONE:
            buf.dts = src.dts + self.offset
        appsrc.emit("push-buffer", buf)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/cam", help="mount point (default /cam)")
    ap.add_argument("--video", type=Path, required=True, help="an MP4 with an H.264 video stream")
    ap.add_argument("--realtime", action="store_true",
                    help="pace frames at the video's rate like a live camera (the only mode, so the flag is "
                         "optional: gst-rtsp-server's own sinks sync to the clock too)")
    ap.add_argument("--once", action="store_true", help="play the video once, then end the stream (default: loop)")
    args = ap.parse_args()
    path = args.path if args.path.startswith("/") else "/" + args.path
    if not args.video.is_file():
        print(f"rtsp_server: video not found: {args.video}", file=sys.stderr)
        return 2

    Gst.init(None)
    try:
        caps, units = load_access_units(args.video)
    except RuntimeError as exc:
        print(f"rtsp_server: {exc}", file=sys.stderr)
        return 2

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        "( appsrc name=src is-live=false format=time stream-type=stream "
        "! identity sync=true "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(False)  # every client gets the video from its start

    def configure(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_by_name("src")
        appsrc.set_property("caps", caps)
        Feeder(appsrc, units, loop=not args.once)  # kept alive by its need-data handler

    factory.connect("media-configure", configure)

    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on {HOST}:{args.port}", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, loop.quit)
    print(f"ready rtsp://{HOST}:{server.get_bound_port()}{path}", flush=True)
    loop.run()
    # Close the clients' sessions (their media is unprepared, its streaming threads stop), then leave without the
    # interpreter's finalization: a streaming thread still inside Feeder.need_data while Python tears down its
    # objects crashed the process with SIGSEGV (3 of 50 stops on a loaded machine, exit -11).
    server.client_filter(lambda _server, _client: GstRtspServer.RTSPFilterResult.REMOVE)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
