"""Reading camera frames: files, RTSP/HTTP streams; sampling to a target rate; reconnecting.

Two decoders read a source, both FFmpeg underneath (``capture.decoder``):

- ``opencv`` (the default): OpenCV's FFmpeg backend, ``cv2.VideoCapture``;
- ``pyav``: PyAV (``av``, the ``nvdec`` extra), whose wheels carry an FFmpeg with NVIDIA's NVDEC. With
  ``hwaccel="cuda"`` the video is decoded on the GPU (PyAV's ``av.codec.hwaccel.HWAccel``) and frames are downloaded
  once, as BGR, for the CPU stages. A node without a usable CUDA device decodes on the CPU instead and says so in
  the log. PyAV is imported only when this decoder is used: its wheels bundle GPL codecs (x264, x265).

Files never drop frames (the reader waits for the pipeline); live streams are read continuously and the host drops
the oldest queued frame under backpressure (see ``actors/camera.py``). ``frame_idx`` is the 0-based index of the
decoded frame in the stream, so sampling and drops show as gaps. ``pts_ns`` is the stream's presentation time.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.backoff import Backoff
from pipeline.config import CaptureConfig
from schemas.errors import SourceError

if TYPE_CHECKING:
    import av

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


class Capture(Protocol):
    """An open source, read frame by frame (what :func:`read_frames` needs of a decoder).

    Attributes:
        fps: The stream's frame rate (0.0 if unknown).
        frame_count: Frames in a file (0 if unknown, or live).
        pos_ms: Presentation time of the last frame read, ms (0.0 or less if unknown).
        decodes_on: ``"cpu"`` or ``"cuda"``: where the video is decoded.
    """

    fps: float
    frame_count: int
    pos_ms: float
    decodes_on: str

    def read(self) -> npt.NDArray[np.uint8] | None:
        """The next frame, `(H, W, 3)` uint8 BGR; None at the end of a file, a lost stream or a read timeout."""
        ...

    def grab(self) -> bool:
        """Skip one frame; False if there is none."""
        ...

    def release(self) -> None: ...


class OpenCvCapture:
    """:class:`Capture` over OpenCV's FFmpeg backend (``cv2.VideoCapture``); decodes on the CPU."""

    decodes_on = "cpu"

    def __init__(self, cap: cv2.VideoCapture) -> None:
        self._cap = cap
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else 0.0
        self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.pos_ms = 0.0

    def read(self) -> npt.NDArray[np.uint8] | None:
        ok, image = self._cap.read()
        if not ok or image is None:
            return None
        self.pos_ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
        return image

    def grab(self) -> bool:
        return bool(self._cap.grab())

    def release(self) -> None:
        self._cap.release()


class PyAvCapture:
    """:class:`Capture` over PyAV, on the GPU (NVDEC) when opened with a hardware device.

    Packets that do not decode (``av.InvalidDataError``) are skipped and counted in ``corrupt_packets``; any other
    FFmpeg error while reading (a dropped connection, a read timeout) ends the reading as OpenCV's would.
    """

    def __init__(self, container: av.container.InputContainer, camera_id: str, decoder_threads: int) -> None:
        self._container = container
        self._camera_id = camera_id
        self._av = _pyav(camera_id)  # kept: the read path needs its error types at every frame
        if not container.streams.video:
            container.close()
            msg = f"camera {camera_id!r}: {container.name} has no video stream"
            raise SourceError(msg)
        self._stream = stream = container.streams.video[0]
        ctx = stream.codec_context
        ctx.thread_count = decoder_threads
        if decoder_threads != 1:
            ctx.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        self.fps = fps if 0 < fps < 1000 else 0.0
        self.frame_count = int(stream.frames or 0)
        self.pos_ms = 0.0
        self.decodes_on = "cuda" if ctx.is_hwaccel else "cpu"
        self.corrupt_packets = 0
        self._frames = self._decode()

    def _decode(self) -> Iterator[av.VideoFrame]:
        for packet in self._container.demux(self._stream):
            try:
                yield from packet.decode()
            except self._av.InvalidDataError as exc:
                self.corrupt_packets += 1
                logger.warning("camera %s: skipped an undecodable packet at pts %s: %s", self._camera_id,
                               packet.pts, exc)

    def _next(self) -> av.VideoFrame | None:
        try:
            return next(self._frames, None)
        except self._av.FFmpegError as exc:
            logger.warning("camera %s: read failed: %s", self._camera_id, exc)
            return None

    def read(self) -> npt.NDArray[np.uint8] | None:
        frame = self._next()
        if frame is None:
            return None
        # pts x time_base is exact (a Fraction); frame.time is a float that loses the last ns at times.
        tb = frame.time_base or self._stream.time_base
        self.pos_ms = float(frame.pts * tb * 1000) if frame.pts is not None and tb else 0.0
        return frame_to_bgr(frame)

    def grab(self) -> bool:
        return self._next() is not None

    def release(self) -> None:
        self._container.close()


def frame_to_bgr(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    """A decoded frame as `(H, W, 3)` uint8 BGR.

    NV12 (what NVDEC's frames are once downloaded from the GPU) goes through OpenCV's ``COLOR_YUV2BGR_NV12``: for a
    1080p frame it took 1.4 CPU-ms here against 5-7 for FFmpeg's swscale, which has no fast path from NV12 to BGR24
    (``bench/RESULTS.md``). Other formats (the CPU decoder's YUV 4:2:0, about 1 ms) go through swscale.
    """
    if frame.format.name == "nv12" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGR_NV12)
    return frame.to_ndarray(format="bgr24")


def open_capture(source: str, camera_id: str, capture: CaptureConfig | None = None) -> Capture:
    """Open a source for :func:`read_frames`.

    Args:
        source: A file path or a stream URL.
        camera_id: For error messages.
        capture: The capture settings (:class:`pipeline.config.CaptureConfig`; None: its defaults). Used here:
            ``open_timeout_s`` (how long a network stream may take to open, and to deliver its next packet),
            ``decoder_threads`` (0: FFmpeg's choice, one per core), ``decoder`` (``"opencv"``:
            :class:`OpenCvCapture`, ``"pyav"``: :class:`PyAvCapture`) and ``hwaccel`` (with ``pyav``: ``"cuda"``
            decodes on the GPU with NVDEC, falling back to the CPU with a warning where the node has no usable CUDA
            device; ``"auto"`` does the same, logging the fallback at info level; ``"none"`` decodes on the CPU).

    Raises:
        SourceError: If a file is missing, or the source cannot be opened.
    """
    c = capture or CaptureConfig()
    open_timeout_s, decoder_threads = c.open_timeout_s, c.decoder_threads
    live = is_live(source)
    if not live:
        path = Path(source)
        if not path.is_file():
            msg = f"camera {camera_id!r}: source file not found: {source}"
            raise SourceError(msg)
        if not os.access(path, os.R_OK):
            msg = f"camera {camera_id!r}: source file not readable: {source}"
            raise SourceError(msg)
    kind = "stream unreachable or not a video stream" if live else "not a readable video file"
    cannot_open = f"camera {camera_id!r}: cannot open {source} ({kind}, timeout {open_timeout_s:g} s)"
    if c.decoder == "pyav":
        return _open_pyav(source, camera_id, open_timeout_s, decoder_threads, c.hwaccel, cannot_open)
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(open_timeout_s * 1000),
    ]
    if decoder_threads:
        params += [cv2.CAP_PROP_N_THREADS, decoder_threads]
    cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        raise SourceError(cannot_open)
    return OpenCvCapture(cap)


def _pyav(camera_id: str) -> Any:
    """The ``av`` module, imported on first use (with ``av.codec.hwaccel``).

    Raises:
        SourceError: If PyAV is not installed.
    """
    try:
        import av
        import av.codec.hwaccel
    except ImportError as exc:
        msg = (f"camera {camera_id!r}: capture.decoder 'pyav' needs PyAV: pip install 'maskwatch[nvdec]' "
               f"(av==18.1.0; its wheels bundle GPL codecs) ({exc})")
        raise SourceError(msg) from exc
    return av


def _open_pyav(source: str, camera_id: str, open_timeout_s: float, decoder_threads: int, hwaccel: str,
               cannot_open: str) -> PyAvCapture:
    av = _pyav(camera_id)

    def attempt(device: str | None) -> PyAvCapture:
        hw = av.codec.hwaccel.HWAccel(device, allow_software_fallback=True) if device else None
        container = av.open(source, timeout=(open_timeout_s, open_timeout_s), hwaccel=hw)
        return PyAvCapture(container, camera_id, decoder_threads)

    if hwaccel != "none":
        try:
            return attempt("cuda")
        except av.FFmpegError as exc:
            log = logger.warning if hwaccel == "cuda" else logger.info
            log("camera %s: no CUDA decoding on this node (%s); decoding %s on the CPU", camera_id, exc, source)
    try:
        return attempt(None)
    except av.FFmpegError as exc:
        msg = f"{cannot_open}: {exc}"
        raise SourceError(msg) from exc


def probe(source: str, camera_id: str, capture: CaptureConfig | None = None) -> tuple[int, int, float]:
    """Open a source (:func:`open_capture`), decode one frame, and return `(width_px, height_px, fps)` (fps 0 if
    unknown).

    Raises:
        SourceError: If it cannot be opened or no frame decodes.
    """
    cap = open_capture(source, camera_id, capture)
    try:
        image = cap.read()
        if image is None:
            msg = f"camera {camera_id!r}: {source} opened but no frame could be decoded"
            raise SourceError(msg)
        return int(image.shape[1]), int(image.shape[0]), cap.fps
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
    capture: CaptureConfig | None = None,
    on_state: Callable[[str], None] | None = None,
) -> Iterator[Frame]:
    """Decode and sample a source's frames. A file ends at its last frame (a few corrupt frames are skipped and
    logged). A live stream that stops, or stalls (connected but no frame within ``open_timeout_s``), is reopened
    with backoff; ``frame_idx`` and ``pts_ns`` keep increasing across reconnects.

    Args:
        source: File path or stream URL.
        camera_id: For logs and errors.
        target_fps: Sample rate (None: every frame).
        capture: Capture settings (:class:`pipeline.config.CaptureConfig`; None: defaults): :func:`open_capture`'s,
            ``max_reconnects`` (None: a live stream is never given up) and the reopen backoff. With
            ``decoder_threads`` 1, ``Frame.decode_cpu_s`` holds all of the decoding.
        on_state: Called with ``"running"`` at the first frame after each (re)open and ``"reconnecting"`` when a
            live stream is lost (from the reading thread).

    Yields:
        Sampled :class:`Frame` objects.

    Raises:
        SourceError: If the source cannot be opened, or a live stream stays down after ``max_reconnects`` (when set).
    """
    live = is_live(source)
    sampler = FrameSampler(target_fps)
    c = capture or CaptureConfig()
    cap = open_capture(source, camera_id, c)
    timeline = _Timeline(cap.fps or 25.0)
    report = on_state or (lambda _state: None)
    opened = True  # the next frame is the first since an open: report "running"
    cpu0 = time.thread_time()  # a generator may resume in another thread: re-read after each yield
    try:
        while True:
            image = cap.read()
            if image is not None:
                if opened:
                    report("running")
                    opened = False
                frame_idx, pts_ns = timeline.next(cap.pos_ms)
                if sampler.keep(pts_ns):
                    yield Frame(frame_idx, pts_ns, image, time.time_ns(), time.thread_time() - cpu0)
                    cpu0 = time.thread_time()
            elif not live:  # corrupt frames inside a file: skip a few, then it is the end
                skipped = _skip_undecodable(cap, camera_id, timeline.frame_idx)
                if skipped is None:
                    return
                timeline.frame_idx += skipped
            else:
                cap.release()
                report("reconnecting")
                opened = True
                cap = _reopen(source, camera_id, c, timeline.frame_idx)
                timeline.reopened()
    finally:
        cap.release()


class _Timeline:
    """``frame_idx`` and ``pts_ns`` of a source's frames, both increasing across reconnects."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.frame_idx = -1
        self._offset_ns = 0  # keeps pts increasing across reconnects
        self._open_idx = 0  # frame_idx of the first frame since the last (re)open
        self._last_ns = -1

    def next(self, pos_ms: float) -> tuple[int, int]:
        """The next decoded frame's ``(frame_idx, pts_ns)``, from the decoder's position in ms (<= 0: unknown)."""
        self.frame_idx += 1
        # A reopened stream starts again at 0: the fallback counts frames since the reopen, not since the start
        # (else pts jump ahead by the whole time read so far at every reconnect).
        pts_ns = self._offset_ns + (
            int(pos_ms * 1e6) if pos_ms > 0 else int((self.frame_idx - self._open_idx) * 1e9 / self.fps))
        if pts_ns <= self._last_ns:  # streams without timestamps, or a reset after reconnect
            pts_ns = self._last_ns + int(1e9 / self.fps)
        self._last_ns = pts_ns
        return self.frame_idx, pts_ns

    def reopened(self) -> None:
        """The stream was reopened: its timestamps start again from 0."""
        self._offset_ns = self._last_ns + int(1e9 / self.fps)
        self._open_idx = self.frame_idx + 1


def _skip_undecodable(cap: Capture, camera_id: str, frame_idx: int) -> int | None:
    """A file frame after ``frame_idx`` did not decode: skip up to :data:`MAX_CORRUPT_FRAMES`; the number skipped,
    or None at the end of the file."""
    total = cap.frame_count
    skipped = 0
    while skipped < MAX_CORRUPT_FRAMES and frame_idx + 1 + skipped < total:
        skipped += 1
        if cap.grab():
            logger.warning("camera %s: skipped %d undecodable frame(s) at %d", camera_id, skipped, frame_idx + 1)
            return skipped
    return None


def _reopen(source: str, camera_id: str, c: CaptureConfig, frame_idx: int) -> Capture:
    """Reopen a live stream that was lost after ``frame_idx``, with backoff; SourceError after ``max_reconnects``."""
    backoff = Backoff(c.reconnect_backoff_s, c.max_backoff_s)
    attempt = 0
    while True:
        attempt += 1
        if c.max_reconnects is not None and attempt > c.max_reconnects:
            msg = f"camera {camera_id!r}: stream {source} down, gave up after {c.max_reconnects} reconnects"
            raise SourceError(msg)
        wait = backoff.next_wait()
        logger.warning("camera %s: stream lost after frame %d, reconnect %d/%s in %.1f s",
                       camera_id, frame_idx, attempt, c.max_reconnects or "unlimited", wait)
        time.sleep(wait)
        try:
            cap = open_capture(source, camera_id, c)
        except SourceError:
            continue
        logger.warning("camera %s: stream back after %d reconnect attempt(s)", camera_id, attempt)
        return cap
