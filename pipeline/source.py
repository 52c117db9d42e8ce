"""Reading camera frames with OpenCV: files, RTSP/HTTP streams; sampling to a target rate; reconnecting.

Files never drop frames (the reader waits for the pipeline); live streams are read continuously and the host drops
the oldest queued frame under backpressure (see ``actors/camera.py``). ``frame_idx`` is the 0-based index of the
decoded frame in the stream, so sampling and drops show as gaps. ``pts_ns`` is the stream's presentation time.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from schemas.errors import SourceError

logger = logging.getLogger(__name__)
LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
# A file may hold a few undecodable frames; more consecutive failures than this is the end of the file.
MAX_CORRUPT_FRAMES = 8


def is_live(source: str) -> bool:
    """True for network streams and capture devices (frames may be dropped), False for files."""
    return source.lower().startswith(LIVE_SCHEMES) or source.startswith("/dev/video")


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame.

    Attributes:
        frame_idx: 0-based index of the decoded frame in the stream.
        pts_ns: Presentation time in the stream, ns.
        image: `(H, W, 3)` uint8 BGR, original resolution.
        decoded_ns: Wall clock (UTC epoch ns) when the frame was decoded; the start of its latency to the pose result.
        decode_cpu_s: CPU seconds the reading thread spent since the previous sampled frame (``time.thread_time``):
            decoding this frame and the frames the sampler skipped before it.
    """

    frame_idx: int
    pts_ns: int
    image: npt.NDArray[np.uint8]
    decoded_ns: int = 0
    decode_cpu_s: float = 0.0


def open_capture(
    source: str, camera_id: str, open_timeout_s: float = 5.0, decoder_threads: int = 1
) -> cv2.VideoCapture:
    """Open a source with OpenCV's FFmpeg backend.

    Args:
        source: A file path or a stream URL.
        camera_id: For error messages.
        open_timeout_s: How long a network stream may take to open.
        decoder_threads: FFmpeg decoding threads (``cv2.CAP_PROP_N_THREADS``); 0: FFmpeg's choice (one per core).

    Raises:
        SourceError: If a file is missing, or the source cannot be opened.
    """
    if not is_live(source):
        path = Path(source)
        if not path.is_file():
            msg = f"camera {camera_id!r}: source file not found: {source}"
            raise SourceError(msg)
        if not os.access(path, os.R_OK):
            msg = f"camera {camera_id!r}: source file not readable: {source}"
            raise SourceError(msg)
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(open_timeout_s * 1000),
    ]
    if decoder_threads:
        params += [cv2.CAP_PROP_N_THREADS, decoder_threads]
    cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        kind = "stream unreachable or not a video stream" if is_live(source) else "not a readable video file"
        msg = f"camera {camera_id!r}: cannot open {source} ({kind}, timeout {open_timeout_s:g} s)"
        raise SourceError(msg)
    return cap


def probe(source: str, camera_id: str, open_timeout_s: float = 5.0) -> tuple[int, int, float]:
    """Open a source, decode one frame, and return `(width_px, height_px, fps)` (fps 0 if unknown).

    Raises:
        SourceError: If it cannot be opened or no frame decodes.
    """
    cap = open_capture(source, camera_id, open_timeout_s)
    try:
        ok, image = cap.read()
        if not ok or image is None:
            msg = f"camera {camera_id!r}: {source} opened but no frame could be decoded"
            raise SourceError(msg)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        return int(image.shape[1]), int(image.shape[0]), fps if 0 < fps < 1000 else 0.0
    finally:
        cap.release()


class FrameSampler:
    """Keeps frames at no more than ``target_fps`` by presentation time (None keeps every frame)."""

    def __init__(self, target_fps: float | None) -> None:
        if target_fps is not None and target_fps <= 0:
            msg = f"target_fps must be > 0 or None, got {target_fps}"
            raise ValueError(msg)
        self._period_ns = None if target_fps is None else int(1e9 / target_fps)
        self._next_ns: int | None = None

    def keep(self, pts_ns: int) -> bool:
        """Whether to process the frame at ``pts_ns``."""
        if self._period_ns is None:
            return True
        if self._next_ns is None or pts_ns >= self._next_ns - self._period_ns // 100:
            nxt = (self._next_ns or pts_ns) + self._period_ns
            self._next_ns = nxt if nxt > pts_ns else pts_ns + self._period_ns
            return True
        return False


def read_frames(
    source: str,
    camera_id: str,
    target_fps: float | None = None,
    open_timeout_s: float = 5.0,
    max_reconnects: int | None = None,
    reconnect_backoff_s: float = 1.0,
    max_backoff_s: float = 30.0,
    on_state: Callable[[str], None] | None = None,
    decoder_threads: int = 1,
) -> Iterator[Frame]:
    """Decode and sample a source's frames.

    A file ends at its last frame (a few corrupt frames are skipped and logged). A live stream that stops, or stalls
    (connected but no frame within ``open_timeout_s``: OpenCV's read timeout), is reopened with exponential backoff
    and jitter; ``frame_idx`` and ``pts_ns`` keep increasing across reconnects.

    Args:
        source: File path or stream URL.
        camera_id: For logs and errors.
        target_fps: Sample rate (None: every frame).
        open_timeout_s: Open/read timeout for network streams.
        max_reconnects: Consecutive failed reopen attempts before giving up on a live stream (None: never; a city
            camera that is down for an hour comes back when it is up again).
        reconnect_backoff_s: First wait before a reopen; doubles per failure up to ``max_backoff_s``, each wait
            drawn from +-20% of its value so that many cameras of a site that went down together do not reconnect
            in lockstep.
        max_backoff_s: Cap of the wait between reopen attempts.
        on_state: Called with ``"running"`` at the first frame after each (re)open and ``"reconnecting"`` when a
            live stream is lost (from the reading thread).
        decoder_threads: FFmpeg decoding threads (:func:`open_capture`). With 1, decoding runs on the reading
            thread, so ``Frame.decode_cpu_s`` holds all of it.

    Yields:
        Sampled :class:`Frame` objects.

    Raises:
        SourceError: If the source cannot be opened, or a live stream stays down after ``max_reconnects`` (when set).
    """
    live = is_live(source)
    sampler = FrameSampler(target_fps)
    cap = open_capture(source, camera_id, open_timeout_s, decoder_threads)
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    fps = fps if 0 < fps < 1000 else 25.0
    frame_idx = -1
    pts_offset_ns = 0  # keeps pts increasing across reconnects
    open_idx = 0  # frame_idx of the first frame since the last (re)open
    last_pts_ns = -1
    report = on_state or (lambda _state: None)
    opened = True  # the next frame is the first since an open: report "running"
    cpu0 = time.thread_time()  # a generator may resume in another thread: re-read after each yield
    try:
        while True:
            ok, image = cap.read()
            if ok and image is not None:
                if opened:
                    report("running")
                    opened = False
                frame_idx += 1
                pos_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
                # A reopened stream starts again at 0: the fallback counts frames since the reopen, not since the
                # start (else pts jump ahead by the whole time read so far at every reconnect).
                pts_ns = pts_offset_ns + (
                    int(pos_ms * 1e6) if pos_ms > 0 else int((frame_idx - open_idx) * 1e9 / fps)
                )
                if pts_ns <= last_pts_ns:  # streams without timestamps, or a reset after reconnect
                    pts_ns = last_pts_ns + int(1e9 / fps)
                last_pts_ns = pts_ns
                if sampler.keep(pts_ns):
                    yield Frame(frame_idx, pts_ns, image, time.time_ns(), time.thread_time() - cpu0)
                    cpu0 = time.thread_time()
                continue
            if not live:
                # Corrupt frames inside a file: skip a few, then it is the end.
                total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
                skipped = 0
                while skipped < MAX_CORRUPT_FRAMES and frame_idx + 1 + skipped < total:
                    skipped += 1
                    if cap.grab():
                        logger.warning("camera %s: skipped %d undecodable frame(s) at %d", camera_id, skipped,
                                       frame_idx + 1)
                        frame_idx += skipped
                        break
                else:
                    return
                continue
            cap.release()
            report("reconnecting")
            opened = True
            delay = reconnect_backoff_s
            attempt = 0
            while True:
                attempt += 1
                if max_reconnects is not None and attempt > max_reconnects:
                    msg = f"camera {camera_id!r}: stream {source} down, gave up after {max_reconnects} reconnects"
                    raise SourceError(msg)
                wait = delay * random.uniform(0.8, 1.2)  # jitter: cameras that dropped together spread out
                logger.warning("camera %s: stream lost after frame %d, reconnect %d/%s in %.1f s",
                               camera_id, frame_idx, attempt, max_reconnects or "unlimited", wait)
                time.sleep(wait)
                try:
                    cap = open_capture(source, camera_id, open_timeout_s, decoder_threads)
                except SourceError:
                    delay = min(delay * 2, max_backoff_s)
                    continue
                pts_offset_ns = last_pts_ns + int(1e9 / fps)
                open_idx = frame_idx + 1
                logger.warning("camera %s: stream back after %d reconnect attempt(s)", camera_id, attempt)
                break
    finally:
        cap.release()
