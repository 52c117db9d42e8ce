"""The per-camera processing loop, written against async callables so that it runs with Ray actors
(``actors/camera.py``) or in one process (tests, benchmarks) without change.

Reading runs in a thread and feeds a bounded queue: a file waits for the pipeline (no frame is lost), a live stream
drops the oldest queued frame and counts it. Up to ``pose_in_flight`` frames are at the pose stage at once, so
pose inference of frame t+1 overlaps tracking and classification of frame t; results are consumed in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import IO, Any

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.annotate import draw_frame
from pipeline.backoff import Backoff
from pipeline.camera import CameraPipeline, TrackedFrame
from pipeline.config import CaptureConfig
from pipeline.headbox import cut_crops
from pipeline.letterbox import Letterbox, default_pose_input_px, letterbox
from pipeline.mot import mot_lines, write_mot_lines
from pipeline.sinks import Record
from pipeline.source import Frame, is_live, read_frames
from schemas.errors import SourceError
from schemas.messages import CameraState, CameraStats, EndedBy, PersonDecision
from schemas.pose import Poses

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _cpu(cam: CameraPipeline | None, stage: str) -> Iterator[None]:
    """Add the calling thread's CPU time in the block to ``cam.stage_cpu_s[stage]`` (blocks must not await)."""
    t0 = time.thread_time()
    try:
        yield
    finally:
        if cam is not None:
            cam.stage_cpu_s[stage] += time.thread_time() - t0

PoseFn = Callable[[npt.NDArray[np.uint8], Letterbox, str, int, int], Awaitable[Poses]]
ClassifyFn = Callable[[npt.NDArray[np.uint8]], Awaitable[npt.NDArray[np.float32]]]  # crops -> (K, 3) scores
EmitFn = Callable[[list[Record]], Awaitable[Any]]
# (camera state, frame, tracked frame, crops, scores) after a frame's faces were classified (``dataset extract``).
CropsHook = Callable[[CameraPipeline, Frame, TrackedFrame, npt.NDArray[np.uint8], npt.NDArray[np.float32]], None]


@dataclass(frozen=True, slots=True)
class CameraSpec:
    """What the loop needs to know about one camera (resolved by the driver from :class:`pipeline.config.Config`)."""

    camera_id: str
    source: str
    frame_wh: tuple[int, int] | None  # None: not known yet (a live camera unreachable at start)
    pose_input_px: int | None  # None: chosen from the frame size at the first frame
    target_fps: float | None
    # How the camera is read: queue, timeouts, decoder, reconnect backoff, wait_for_unreachable (config "capture").
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    annotate_path: str | None = None
    tracks_path: str | None = None  # MOTChallenge person tracks (pipeline.mot), written as frames are processed
    camera_motion: str | None = None  # "auto" / "on" / "off" for this camera; None: the tracking setting
    district: str | None = None  # carried in the camera's statistics records (per-district roll-up)


@dataclass(slots=True)
class CameraSummary:
    """How a camera's run went."""

    camera_id: str
    frames_processed: int = 0
    frames_dropped: int = 0
    people: int = 0
    decisions: dict[str, int] = field(default_factory=lambda: {"mask": 0, "no_mask": 0, "undecided": 0})
    faces_classified: int = 0
    faces_rejected: int = 0
    error: str | None = None
    wall_s: float = 0.0
    # CPU seconds of the camera's own stages (pipeline.camera.STAGES: decode, letterbox, tracking, ...), thread time.
    stage_cpu_s: dict[str, float] = field(default_factory=dict)
    # The CPU seconds of the camera's shard process during its run, shared equally among the shard's cameras (set by
    # the Ray actor that hosts the camera; 0 elsewhere): stages plus Ray calls, serialisation and asyncio.
    shard_cpu_s: float = 0.0


def to_records(
    decisions: list[PersonDecision], stats: list[CameraStats], decisions_topic: str, stats_topic: str
) -> list[Record]:
    """Kafka records (key = camera_id) for decisions and statistics."""
    return [Record(decisions_topic, d.camera_id, d.encode()) for d in decisions] + [
        Record(stats_topic, s.camera_id, s.encode()) for s in stats
    ]


@dataclass
class CameraRun:
    """What one camera keeps across restarts of its loop in one process (:func:`supervise_camera`).

    A restart after a fault continues the same tracks, votes and windows: running totals never go down, and no
    person is counted twice. A file resumes after ``last_frame_idx``; a live stream's ``frame_idx`` continues from
    ``frame_offset``.
    """

    spec: CameraSpec
    summary: CameraSummary
    cam: CameraPipeline | None = None
    input_px: int | None = None
    start_wall_ns: int = field(default_factory=time.time_ns)
    last_frame_idx: int = -1
    frame_offset: int = 0
    last_ns: int = 0
    dropped: int = 0
    state: CameraState = "connecting"
    restarts: int = 0
    writer: cv2.VideoWriter | None = None
    tracks_fh: IO[str] | None = None
    restore: CameraStats | None = None  # the last published record, applied at the first frame

    def set_state(self, state: CameraState) -> None:
        """The camera's state, also in its next statistics record."""
        self.state = state
        if self.cam is not None:
            self.cam.windows.camera_state = state
            self.cam.windows.camera_restarts = self.restarts


# How often the loop looks up while no frame arrives: closes windows by wall clock (a camera that is down still
# publishes its state) and notices a shutdown.
TICK_S = 1.0


async def run_camera(
    spec: CameraSpec,
    make_cam: Callable[[tuple[int, int]], CameraPipeline],
    classifier_input_px: int,
    infer_pose: PoseFn,
    classify: ClassifyFn,
    emit: EmitFn,
    topics: tuple[str, str],
    executor: Executor | None = None,
    on_frame: Callable[[CameraPipeline], None] | None = None,
    *,
    run: CameraRun | None = None,
    stop: asyncio.Event | None = None,
    on_crops: CropsHook | None = None,
) -> CameraSummary:
    """Process one camera until its source ends (files), fails for good (streams) or ``stop`` is set.

    Args:
        spec: The camera.
        make_cam: Builds the camera's state from its frame size `(width_px, height_px)` at the first frame.
        classifier_input_px: Side of the classifier's input crops.
        infer_pose: Letterboxed frame -> poses in original-frame pixels.
        classify: `(K, S, S, 3)` uint8 RGB crops -> `(K, 3)` float32 mask, face and usable-face scores
            (:meth:`pipeline.facegate.CropScorer.score`).
        emit: Delivers records (decisions, statistics).
        topics: `(decisions_topic, stats_topic)`.
        executor: Thread pool for blocking reads (None: asyncio's default).
        on_frame: Called with the camera's state after each processed frame and each idle tick (metrics).
        run: The camera's state from an earlier attempt (:func:`supervise_camera`); None starts afresh.
        stop: When set, capture stops, the frames in flight are finished, open tracks end as decisions with
            ``ended_by="shutdown"`` and the final statistics record is emitted.
        on_crops: Called with each frame's crops and scores once they are classified (``dataset extract``).

    Returns:
        The summary; a source that fails is reported in ``error``, not raised, so other cameras go on.

    Raises:
        Exception: Any other fault (a model actor that died, a bug) propagates with ``run`` intact, so that
            :func:`supervise_camera` can restart the camera where it was.
    """
    run = run or CameraRun(spec, CameraSummary(spec.camera_id))
    stop = stop or asyncio.Event()
    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Frame | None] = asyncio.Queue(maxsize=spec.capture.queue_frames)
    live = is_live(spec.source)
    resume_after = -1 if live else run.last_frame_idx

    def first_frame(frame: Frame) -> CameraPipeline:
        h, w = frame.image.shape[:2]
        run.cam = make_cam((w, h))
        if run.restore is not None:
            run.cam.windows.restore(run.restore)
            run.restore = None
        run.input_px = run.input_px or spec.pose_input_px or default_pose_input_px((w, h))
        run.set_state(run.state)
        return run.cam

    def open_outputs(wh: tuple[int, int]) -> None:
        # Opened once per run, kept across restarts (a restart must not truncate what was written).
        if spec.annotate_path and run.writer is None:
            fps = spec.target_fps or 25.0
            run.writer = cv2.VideoWriter(spec.annotate_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, wh)
        if spec.tracks_path and run.tracks_fh is None:
            run.tracks_fh = open(spec.tracks_path, "w")  # noqa: SIM115 - closed by finish_camera

    def capture_ns(frame: Frame) -> int:
        # Files replay as if live from the start of the run, so their windows line up with wall clock.
        return time.time_ns() if live else run.start_wall_ns + frame.pts_ns

    def on_source_state(state: str) -> None:
        run.set_state("reconnecting" if state == "reconnecting" else "running")

    sentinel = object()

    async def open_frames() -> tuple[Iterator[Frame], object]:
        backoff = Backoff(spec.capture.reconnect_backoff_s, spec.capture.max_backoff_s)
        while True:
            frames = read_frames(spec.source, spec.camera_id, spec.target_fps, spec.capture, on_source_state)
            try:
                return frames, await loop.run_in_executor(executor, next, frames, sentinel)
            except SourceError as exc:
                if not (live and spec.capture.wait_for_unreachable) or stop.is_set():
                    raise
                wait = backoff.next_wait()
                logger.warning("%s; retrying in %.1f s", exc, wait)
                await asyncio.sleep(wait)

    async def reader() -> None:
        frames: Iterator[Frame] | None = None
        reading: asyncio.Future[Any] | None = None
        cancelled = False
        try:
            frames, frame = await open_frames()
            while frame is not sentinel and not stop.is_set():
                assert isinstance(frame, Frame)
                if run.cam is not None:
                    run.cam.stage_cpu_s["decode"] += frame.decode_cpu_s
                if frame.frame_idx > resume_after:
                    if run.frame_offset:
                        frame = Frame(frame.frame_idx + run.frame_offset, frame.pts_ns, frame.image, frame.decoded_ns,
                                      frame.decode_cpu_s)
                    if live and queue.full():
                        queue.get_nowait()  # drop the oldest: a live camera does not wait for us
                        run.dropped += 1
                    await queue.put(frame)  # files wait here: no frame is lost
                reading = loop.run_in_executor(executor, next, frames, sentinel)
                frame = await asyncio.shield(reading)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            if frames is not None:
                if reading is not None and not reading.done():
                    # Cancelled while a read is under way: let it return (bounded by the read timeout) before the
                    # source is closed, or the reading thread and close() would race on one capture.
                    await asyncio.gather(reading, return_exceptions=True)
                await loop.run_in_executor(executor, frames.close)  # type: ignore[attr-defined]
            if cancelled:  # nobody reads the queue any more
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)
            else:
                await queue.put(None)

    async def next_frame() -> Frame | bool | None:
        """The next frame, None at the end (or on stop), False on an idle tick."""
        try:
            return await asyncio.wait_for(queue.get(), TICK_S)
        except TimeoutError:
            return None if stop.is_set() else False

    reader_task = asyncio.create_task(reader())
    inflight: deque[tuple[Frame, asyncio.Future[Poses]]] = deque()
    pose_in_flight = 2
    eof = False
    try:
        while True:
            while not eof and len(inflight) < pose_in_flight:
                if inflight:
                    frame = queue.get_nowait() if not queue.empty() else False
                else:
                    frame = await next_frame()
                    if frame is False:  # idle: close windows by wall clock, publish the camera's state
                        await _tick(run, emit, topics, on_frame, live)
                        continue
                if frame is False:
                    break
                if frame is None:
                    eof = True
                    break
                assert isinstance(frame, Frame)
                if run.cam is None:
                    first_frame(frame)
                if spec.annotate_path or spec.tracks_path:
                    open_outputs((frame.image.shape[1], frame.image.shape[0]))
                assert run.input_px is not None  # set by first_frame
                with _cpu(run.cam, "letterbox"):
                    image, lb = letterbox(frame.image, run.input_px)
                fut = asyncio.ensure_future(infer_pose(image, lb, spec.camera_id, frame.frame_idx, frame.pts_ns))
                inflight.append((frame, fut))
            if not inflight:
                break
            frame, fut = inflight.popleft()
            poses = await fut
            if run.cam is not None and frame.decoded_ns:
                run.cam.pose_latency_s = (time.time_ns() - frame.decoded_ns) / 1e9
            await _process(run, frame, poses, capture_ns(frame), classifier_input_px, classify, emit, topics,
                           on_crops)
            if on_frame is not None and run.cam is not None:
                on_frame(run.cam)
        await reader_task  # re-raises a source failure
    except SourceError as exc:
        run.summary.error = str(exc)
        logger.error("%s", exc)
    finally:
        reader_task.cancel()
        for _, fut in inflight:
            fut.cancel()
        await asyncio.gather(reader_task, *(f for _, f in inflight), return_exceptions=True)
    await finish_camera(run, emit, topics, "shutdown" if stop.is_set() else "end_of_source", live)
    run.summary.wall_s = round(run.summary.wall_s + time.monotonic() - t0, 3)
    return run.summary


async def _process(
    run: CameraRun,
    frame: Frame,
    poses: Poses,
    now_ns: int,
    classifier_input_px: int,
    classify: ClassifyFn,
    emit: EmitFn,
    topics: tuple[str, str],
    on_crops: CropsHook | None = None,
) -> None:
    """Track, classify and vote on one frame whose poses came back; emit what ended."""
    cam = run.cam
    assert cam is not None  # created before the first pose request
    cam.windows.frames_dropped = run.dropped
    now_ns = run.last_ns = max(now_ns, run.last_ns)
    with _cpu(cam, "tracking"):
        tracked = cam.track(poses, now_ns, frame.image)
    # Tracked: a restart resumes after it (its votes are lost on a fault).
    run.last_frame_idx = cam.windows.last_frame_idx = frame.frame_idx
    if run.tracks_fh is not None:
        write_mot_lines(run.tracks_fh, mot_lines(tracked.poses))
    if len(tracked.classify_rows):
        with _cpu(cam, "crop"):
            crops = cut_crops(frame.image, tracked.crop_xyxy, classifier_input_px)
        scores = await classify(crops)
        with _cpu(cam, "voting"):
            cam.add_scores(tracked.classify_track_ids, scores, tracked.classify_face_px)
        if on_crops is not None:
            on_crops(cam, frame, tracked, crops, scores)
        run.summary.faces_classified = cam.windows.faces_classified
        run.summary.faces_rejected = cam.windows.faces_rejected
    run.summary.frames_processed = cam.windows.frames_processed
    with _cpu(cam, "voting"):
        decisions, stats = cam.collect(now_ns)
    if decisions or stats:
        with _cpu(cam, "records"):
            records = to_records(decisions, stats, *topics)
        await emit(records)
        _count(run.summary, decisions)
    if run.writer is not None:
        votes = {t: v for t in tracked.poses.track_id.tolist() if (v := cam.ledger.get(t)) is not None}
        run.writer.write(draw_frame(frame.image, tracked.poses, tracked.head_xyxy, tracked.classify_rows, votes))


async def _tick(
    run: CameraRun,
    emit: EmitFn,
    topics: tuple[str, str],
    on_frame: Callable[[CameraPipeline], None] | None,
    live: bool,
) -> None:
    """No frame for a while: a live camera's windows still close by wall clock, with its state in the record."""
    if run.cam is None or not live:
        return
    run.cam.windows.frames_dropped = run.dropped
    stats = run.cam.windows.advance(max(time.time_ns(), run.last_ns))
    if stats:
        await emit(to_records([], stats, *topics))
    if on_frame is not None:
        on_frame(run.cam)


async def finish_camera(run: CameraRun, emit: EmitFn, topics: tuple[str, str], ended_by: EndedBy, live: bool) -> None:
    """End the camera: open tracks become decisions (``ended_by``), the final statistics record, outputs closed."""
    if run.writer is not None:
        run.writer.release()
        run.writer = None
    if run.tracks_fh is not None:
        run.tracks_fh.close()
        run.tracks_fh = None
    run.state = "ended"
    if run.cam is None:
        return
    cam = run.cam
    cam.windows.frames_dropped = run.dropped
    cam.windows.camera_restarts = run.restarts
    decisions, stats = cam.close(max(time.time_ns() if live else run.last_ns, run.last_ns), ended_by)
    await emit(to_records(decisions, stats, *topics))
    _count(run.summary, decisions)
    run.summary.frames_processed = cam.windows.frames_processed
    run.summary.stage_cpu_s = {k: round(v, 4) for k, v in cam.stage_cpu_s.items()}
    run.summary.frames_dropped = run.dropped
    run.cam = None


async def supervise_camera(
    spec: CameraSpec,
    attempt: Callable[[CameraRun], Awaitable[CameraSummary]],
    emit: EmitFn,
    topics: tuple[str, str],
    stop: asyncio.Event,
    max_failures: int | None = None,
    restore: CameraStats | None = None,
) -> CameraSummary:
    """Run a camera and restart it after any fault, so that nothing in one camera ends another.

    ``attempt(run)`` is one :func:`run_camera` call on the camera's :class:`CameraRun`. A fault (an exception other
    than a source that ends) is logged with the ``camera_id``, counted in ``camera_restarts``, and the camera
    restarts after a capped exponential backoff with +-20% jitter (:class:`pipeline.backoff.Backoff` of the camera's
    ``capture.reconnect_backoff_s`` and ``capture.max_backoff_s``; reset once a frame got through). Tracks, votes
    and totals carry on. A file gives up after ``max_failures`` faults in a row without a processed frame (default
    5; the error is in the summary);
    a live camera never gives up unless ``max_failures`` is set.

    ``restore`` is the camera's last published statistics record, after its process (or the whole job) restarted:
    totals and counters continue from it, the restart is counted, a file resumes after its ``last_frame_idx`` and
    a live stream's ``frame_idx`` continues from there. Tracks that were open in the process that died are gone:
    their people are not counted.
    """
    run = CameraRun(spec, CameraSummary(spec.camera_id))
    live = is_live(spec.source)
    if restore is not None:
        run.restore = restore
        run.restarts = restore.camera_restarts + 1
        run.dropped = restore.frames_dropped
        run.last_frame_idx = restore.last_frame_idx
        if live:
            run.frame_offset = restore.last_frame_idx + 1
    limit = max_failures if max_failures is not None else (None if live else 5)
    backoff, failures = Backoff(spec.capture.reconnect_backoff_s, spec.capture.max_backoff_s), 0
    while True:
        before = run.last_frame_idx
        try:
            return await attempt(run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures = 0 if run.last_frame_idx > before else failures + 1
            if failures <= 1:
                backoff.reset()
            run.restarts += 1
            run.set_state("restarting")
            if limit is not None and failures >= limit:
                run.summary.error = (f"camera {spec.camera_id!r}: gave up after {failures} faults in a row without a "
                                     f"frame (last: {type(exc).__name__}: {exc})")
                logger.error("%s", run.summary.error)
                await finish_camera(run, emit, topics, "end_of_source", live)
                return run.summary
            wait = backoff.next_wait()
            logger.error("camera %s: loop failed after frame %d (%s: %s); restart %d in %.1f s", spec.camera_id,
                         run.last_frame_idx, type(exc).__name__, exc, run.restarts, wait,
                         exc_info=logger.isEnabledFor(logging.DEBUG))
            if live:
                run.frame_offset = run.last_frame_idx + 1
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except TimeoutError:
                continue
            await finish_camera(run, emit, topics, "shutdown", live)
            return run.summary


def _count(summary: CameraSummary, decisions: list[PersonDecision]) -> None:
    for d in decisions:
        summary.people += 1
        summary.decisions[d.decision] += 1
