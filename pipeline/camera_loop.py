"""The per-camera processing loop, written against async callables so that it runs with Ray actors
(``actors/camera.py``) or in one process (``dataset extract``, tests, benchmarks) without change.

A frame goes through small named steps: read and sample (:class:`FrameReader`, :func:`pipeline.source.read_frames`)
-> pose (:meth:`CameraLoop._submit_pose`) -> track -> crops -> classify -> vote -> windows -> emit
(:meth:`CameraLoop._process`). Reading runs in a thread and feeds a bounded queue: a file waits for the pipeline (no
frame is lost), a live stream drops the oldest queued frame and counts it. Up to :data:`POSE_FRAMES_IN_FLIGHT` frames
are at the pose stage at once, so pose inference of frame t+1 overlaps tracking and classification of frame t;
results are consumed in order.

A camera's state lives in one object, :class:`CameraRun`, which outlives faults: :func:`supervise_camera` restarts a
failed loop on it, and it restores itself from the camera's last published record after its process restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import IO, Any

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.annotate import draw_frame
from pipeline.backoff import Backoff
from pipeline.camera import CameraPipeline, TrackedFrame
from pipeline.config import CaptureConfig, Config
from pipeline.headbox import cut_crops
from pipeline.letterbox import Letterbox, default_pose_input_px, letterbox
from pipeline.mot import mot_lines, write_mot_lines
from pipeline.pose_postprocess import decode_poses
from pipeline.source import Frame, is_live, read_frames
from pipeline.stats import CameraCounters
from schemas.errors import SourceError
from schemas.messages import CameraState, CameraStats, EndedBy, PersonDecision
from schemas.pose import Poses

logger = logging.getLogger(__name__)

POSE_FRAMES_IN_FLIGHT = 2
"""Frames of one camera at the pose stage at once: pose of frame t+1 overlaps tracking and classifying frame t.
More only adds latency: the pose pools batch across cameras."""

TICK_S = 1.0
"""How often the loop looks up while no frame arrives: closes windows by wall clock (a camera that is down still
publishes its state) and notices a stop."""

Message = PersonDecision | CameraStats
PoseFn = Callable[[npt.NDArray[np.uint8], Letterbox, str, int, int], Awaitable[Poses]]
ClassifyFn = Callable[[npt.NDArray[np.uint8]], Awaitable[npt.NDArray[np.float32]]]  # crops -> (K, 3) scores
EmitFn = Callable[[list[Message]], Awaitable[Any]]


class CameraStop(asyncio.Event):
    """A camera's stop request. :meth:`set` ends the camera as a shutdown (its final record says ``ended``);
    :meth:`remove` as taken out of the running configuration (``removed``). Either way its open tracks are decided
    with ``ended_by="shutdown"``. A plain :class:`asyncio.Event` works wherever this is taken and means :meth:`set`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.final_state: CameraState = "ended"

    def remove(self) -> None:
        self.final_state = "removed"
        self.set()


def _final_state(stop: asyncio.Event) -> CameraState:
    return stop.final_state if isinstance(stop, CameraStop) and stop.is_set() else "ended"
# (camera state, frame, tracked frame, crops, scores) after a frame's faces were classified (``dataset extract``).
CropsHook = Callable[[CameraPipeline, Frame, TrackedFrame, npt.NDArray[np.uint8], npt.NDArray[np.float32]], None]
MakeCam = Callable[[tuple[int, int], CameraCounters], CameraPipeline]


@contextlib.contextmanager
def _cpu(cam: CameraPipeline | None, stage: str) -> Iterator[None]:
    """Add the calling thread's CPU time in the block to ``cam.stage_cpu_s[stage]``. A block that waits counts what
    other tasks of the thread ran meanwhile: only the sink's hand-over (which waits only under a backlog) does."""
    t0 = time.thread_time()
    try:
        yield
    finally:
        if cam is not None:
            cam.stage_cpu_s[stage] += time.thread_time() - t0


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


@dataclass(frozen=True, slots=True)
class CameraHost:
    """What a camera's loop calls: its models, where its messages go, and hooks. Ray actors or this process.

    Attributes:
        make_cam: Builds the camera's state from its frame size `(width_px, height_px)` at the first frame, with the
            camera's counters (:class:`pipeline.stats.CameraCounters`, owned by its :class:`CameraRun`).
        classifier_input_px: Side of the classifier's input crops.
        infer_pose: Letterboxed frame, letterbox, camera_id, frame_idx, pts_ns -> poses in original-frame pixels.
        classify: `(K, S, S, 3)` uint8 RGB crops -> `(K, 3)` float32 mask, face and usable-face scores
            (:meth:`pipeline.facegate.CropScorer.score`).
        emit: Takes the camera's messages (decisions, statistics), in order: the host's sink.
        executor: Thread pool for blocking reads (None: asyncio's default).
        on_frame: Called with the camera's state after each processed frame and each idle tick (metrics).
        on_crops: Called with each frame's crops and scores once they are classified (``dataset extract``).
    """

    make_cam: MakeCam
    classifier_input_px: int
    infer_pose: PoseFn
    classify: ClassifyFn
    emit: EmitFn
    executor: Executor | None = None
    on_frame: Callable[[CameraPipeline], None] | None = None
    on_crops: CropsHook | None = None


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


class Outputs:
    """A camera's optional files: an annotated video and MOTChallenge person tracks (:mod:`pipeline.mot`).

    Opened at the first frame and kept across loop restarts (a restart must not truncate what was written).
    """

    def __init__(self, spec: CameraSpec) -> None:
        self._spec = spec
        self._writer: cv2.VideoWriter | None = None
        self._tracks: IO[str] | None = None

    def write_tracks(self, tracked: TrackedFrame) -> None:
        """Add a frame's tracked people to the tracks file, if one was asked for (right after tracking: a restart
        resumes after a tracked frame)."""
        if self._spec.tracks_path:
            if self._tracks is None:
                self._tracks = open(self._spec.tracks_path, "w")  # noqa: SIM115 - closed by close()
            write_mot_lines(self._tracks, mot_lines(tracked.poses))

    def annotate(self, frame: Frame, tracked: TrackedFrame, cam: CameraPipeline) -> None:
        """Add a processed frame, with its people's running votes, to the annotated video, if one was asked for."""
        spec = self._spec
        if spec.annotate_path:
            if self._writer is None:
                wh = (frame.image.shape[1], frame.image.shape[0])
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                self._writer = cv2.VideoWriter(spec.annotate_path, fourcc, spec.target_fps or 25.0, wh)
            votes = {t: v for t in tracked.poses.track_id.tolist() if (v := cam.ledger.get(t)) is not None}
            self._writer.write(draw_frame(frame.image, tracked.poses, tracked.head_xyxy, tracked.classify_rows, votes))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._tracks is not None:
            self._tracks.close()
            self._tracks = None


class CameraRun:
    """Everything one camera keeps for its whole run, across restarts of its loop: its counters (the one
    :class:`pipeline.stats.CameraCounters`, carried in its records), its tracker, votes and windows
    (:class:`pipeline.camera.CameraPipeline`, made at the first frame), the decisions it published, its clock and its
    output files.

    A restart after a fault continues the same tracks, votes and windows: running totals never go down, and no person
    is counted twice. A file resumes after ``counters.last_frame_idx``; a live stream's ``frame_idx`` continues from
    ``frame_offset``.

    Args:
        spec: The camera.
        restore: The camera's last published statistics record, after its process (or the whole job) restarted:
            :meth:`restore` is applied (None: a fresh start).
    """

    def __init__(self, spec: CameraSpec, restore: CameraStats | None = None) -> None:
        self.spec = spec
        self.live = is_live(spec.source)
        self.counters = CameraCounters()
        self.decisions: dict[str, int] = {"mask": 0, "no_mask": 0, "undecided": 0}
        self.cam: CameraPipeline | None = None
        self.input_px: int | None = None
        self.start_wall_ns = time.time_ns()
        self.frame_offset = 0
        self.last_ns = 0
        self.error: str | None = None
        self.wall_s = 0.0
        self.stage_cpu_s: dict[str, float] = {}
        self.outputs = Outputs(spec)
        self._totals: CameraStats | None = None
        if restore is not None:
            self.restore(restore)

    def restore(self, last: CameraStats) -> None:
        """Continue from ``last``, the camera's last published record: the one place a restart is restored.

        Counters continue (:meth:`pipeline.stats.CameraCounters.restore`) and the restart is counted; a file resumes
        after ``last.last_frame_idx`` and a live stream's ``frame_idx`` continues from there; the people totals go to
        the camera's windows when its first frame makes them. Tracks that were open in the process that died are
        gone: their people are not counted (``tracks_lost``).
        """
        self.counters.restore(last)
        self.counters.camera_restarts += 1
        if self.live:
            self.frame_offset = last.last_frame_idx + 1
        self._totals = last

    def resume_after(self) -> int:
        """Frames up to this ``frame_idx`` were processed already: a file skips them (-1: none, and for streams)."""
        return -1 if self.live else self.counters.last_frame_idx

    def set_state(self, state: CameraState) -> None:
        """The camera's state, also in its next statistics record."""
        self.counters.camera_state = state

    def failed(self) -> None:
        """The loop failed: counted as a restart; a live stream's next frames continue the ``frame_idx``."""
        self.counters.camera_restarts += 1
        self.set_state("restarting")
        if self.live:
            self.frame_offset = self.counters.last_frame_idx + 1

    def start(self, frame: Frame, make_cam: MakeCam) -> CameraPipeline:
        """The first frame: the camera's state, sized to it, with restored totals; the pose input size."""
        h, w = frame.image.shape[:2]
        self.cam = make_cam((w, h), self.counters)
        if self._totals is not None:
            self.cam.windows.restore_totals(self._totals)
            self._totals = None
        self.input_px = self.input_px or self.spec.pose_input_px or default_pose_input_px((w, h))
        return self.cam

    def clock(self, frame: Frame) -> int:
        """UTC epoch ns of a frame, never going back. Files replay as if live from the start of the run, so their
        windows line up with wall clock."""
        now_ns = time.time_ns() if self.live else self.start_wall_ns + frame.pts_ns
        self.last_ns = max(now_ns, self.last_ns)
        return self.last_ns

    def count(self, decisions: list[PersonDecision]) -> None:
        for d in decisions:
            self.decisions[d.decision] += 1

    def summary(self) -> CameraSummary:
        """How the run went so far."""
        c = self.counters
        return CameraSummary(
            camera_id=self.spec.camera_id, frames_processed=c.frames_processed, frames_dropped=c.frames_dropped,
            people=sum(self.decisions.values()), decisions=dict(self.decisions),
            faces_classified=c.faces_classified, faces_rejected=c.faces_rejected, error=self.error,
            wall_s=round(self.wall_s, 3), stage_cpu_s=dict(self.stage_cpu_s),
        )


class FrameReader:
    """Reads one camera on a thread into a bounded queue: the loop's one frame reader.

    It opens the source (a live camera unreachable at start is retried with the camera's backoff when
    ``capture.wait_for_unreachable`` is set), skips the frames a restarted file already processed, continues a
    restarted stream's ``frame_idx``, drops the oldest queued frame of a live camera that the pipeline cannot keep up
    with (counted in ``frames_dropped``; a file waits instead: no frame is lost), and closes the source.

    Args:
        run: The camera.
        executor: Thread pool for the blocking reads (None: asyncio's default).
        stop: Set to stop reading.
    """

    _END = object()  # queued once, after the last frame

    def __init__(self, run: CameraRun, executor: Executor | None, stop: asyncio.Event) -> None:
        self._run, self._executor, self._stop = run, executor, stop
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=run.spec.capture.queue_frames)
        self._reading: asyncio.Future[Frame | None] | None = None
        self.done = False  # the last frame was taken (or stop was seen with nothing queued)

    async def run(self) -> None:
        """Read until the source ends, fails (SourceError, raised here) or ``stop`` is set; the queue then ends."""
        frames: Iterator[Frame] | None = None
        cancelled = False
        try:
            frames, frame = await self._open()
            resume_after = self._run.resume_after()
            while frame is not None and not self._stop.is_set():
                if self._run.cam is not None:
                    self._run.cam.stage_cpu_s["decode"] += frame.decode_cpu_s
                if frame.frame_idx > resume_after:
                    await self._put(frame)
                frame = await self._read(frames)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            await self._close(frames, cancelled)

    async def get(self, wait: bool) -> Frame | None:
        """The next frame; None when none is queued (at once, or after :data:`TICK_S` with ``wait``) or at the end
        (then :attr:`done` is set)."""
        try:
            item = await asyncio.wait_for(self._queue.get(), TICK_S) if wait else self._queue.get_nowait()
        except (TimeoutError, asyncio.QueueEmpty):
            self.done = wait and self._stop.is_set()
            return None
        if item is self._END:
            self.done = True
            return None
        return item

    async def _open(self) -> tuple[Iterator[Frame], Frame | None]:
        spec, run = self._run.spec, self._run
        backoff = Backoff(spec.capture.reconnect_backoff_s, spec.capture.max_backoff_s)

        def on_state(state: str) -> None:
            run.set_state("reconnecting" if state == "reconnecting" else "running")

        while True:
            frames = read_frames(spec.source, spec.camera_id, spec.target_fps, spec.capture, on_state)
            try:
                return frames, await self._read(frames)
            except SourceError as exc:
                if not (run.live and spec.capture.wait_for_unreachable) or self._stop.is_set():
                    raise
                wait = backoff.next_wait()
                logger.warning("%s; retrying in %.1f s", exc, wait)
                await asyncio.sleep(wait)

    async def _read(self, frames: Iterator[Frame]) -> Frame | None:
        self._reading = asyncio.get_running_loop().run_in_executor(self._executor, next, frames, None)
        return await asyncio.shield(self._reading)

    async def _put(self, frame: Frame) -> None:
        run = self._run
        if run.frame_offset:
            frame = Frame(frame.frame_idx + run.frame_offset, frame.pts_ns, frame.image, frame.decoded_ns,
                          frame.decode_cpu_s)
        if run.live and self._queue.full():
            self._queue.get_nowait()  # drop the oldest: a live camera does not wait for us
            run.counters.frames_dropped += 1
        await self._queue.put(frame)  # files wait here: no frame is lost

    async def _close(self, frames: Iterator[Frame] | None, cancelled: bool) -> None:
        if frames is not None:
            if self._reading is not None and not self._reading.done():
                # Cancelled while a read is under way: let it return (bounded by the read timeout) before the source
                # is closed, or the reading thread and close() would race on one capture.
                await asyncio.gather(self._reading, return_exceptions=True)
            await asyncio.get_running_loop().run_in_executor(self._executor, frames.close)  # type: ignore[attr-defined]
        if cancelled:  # nobody reads the queue any more
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(self._END)
        else:
            await self._queue.put(self._END)


class CameraLoop:
    """One attempt at running a camera, until its source ends, fails for good or ``stop`` is set.

    Args:
        run: The camera's state (kept by the caller across attempts).
        host: Its models, sink and hooks.
        stop: When set, capture stops, the frames in flight are finished, open tracks end as decisions with
            ``ended_by="shutdown"`` and the final statistics record is emitted.
    """

    def __init__(self, run: CameraRun, host: CameraHost, stop: asyncio.Event) -> None:
        self.run, self.host, self.stop = run, host, stop

    async def __call__(self) -> CameraSummary:
        """Run the camera; returns its summary. A source that fails is reported in ``summary.error``, not raised.

        Raises:
            Exception: Any other fault (a model actor that died, a bug) propagates with the run intact, so that
                :func:`supervise_camera` can restart the camera where it was.
        """
        t0 = time.monotonic()
        reader = FrameReader(self.run, self.host.executor, self.stop)
        reading = asyncio.create_task(reader.run())
        inflight: deque[tuple[Frame, asyncio.Future[Poses]]] = deque()
        try:
            while await self._fill(reader, inflight):
                frame, poses = inflight.popleft()
                await self._process(frame, await poses)
            await reading  # raises a source failure
        except SourceError as exc:
            self.run.error = str(exc)
            logger.error("%s", exc)
        finally:
            reading.cancel()
            for _, fut in inflight:
                fut.cancel()
            await asyncio.gather(reading, *(f for _, f in inflight), return_exceptions=True)
        stopped = self.stop.is_set()
        await finish_camera(self.run, self.host.emit, "shutdown" if stopped else "end_of_source",
                            _final_state(self.stop))
        self.run.wall_s += time.monotonic() - t0
        return self.run.summary()

    async def _fill(self, reader: FrameReader, inflight: deque[tuple[Frame, asyncio.Future[Poses]]]) -> bool:
        """Send frames to pose until :data:`POSE_FRAMES_IN_FLIGHT` are there; idle ticks while none come. False
        once the source ended and every frame was processed."""
        while not reader.done and len(inflight) < POSE_FRAMES_IN_FLIGHT:
            frame = await reader.get(wait=not inflight)
            if frame is None:
                if inflight or reader.done:
                    break
                await self._tick()
                continue
            inflight.append((frame, self._submit_pose(frame)))
        return bool(inflight)

    def _submit_pose(self, frame: Frame) -> asyncio.Future[Poses]:
        """Step pose: letterbox the frame and send it (the camera's state is made at its first frame)."""
        run = self.run
        cam = run.cam or run.start(frame, self.host.make_cam)
        assert run.input_px is not None  # set by start()
        with _cpu(cam, "letterbox"):
            image, lb = letterbox(frame.image, run.input_px)
        return asyncio.ensure_future(
            self.host.infer_pose(image, lb, run.spec.camera_id, frame.frame_idx, frame.pts_ns))

    async def _process(self, frame: Frame, poses: Poses) -> None:
        """Steps track, crops, classify, vote, windows and emit for one frame whose poses came back."""
        run, host = self.run, self.host
        cam = run.cam
        assert cam is not None  # made before the first pose request
        if frame.decoded_ns:
            cam.pose_latency_s = (time.time_ns() - frame.decoded_ns) / 1e9
        now_ns = run.clock(frame)
        with _cpu(cam, "tracking"):
            tracked = cam.track(poses, now_ns, frame.image)
        network_s = cam.tracker.take_network_cpu_s()  # a model call inside tracking: counted apart
        cam.stage_cpu_s["tracking"] -= network_s
        cam.stage_cpu_s["reid_network"] += network_s
        run.counters.last_frame_idx = frame.frame_idx  # tracked: a restart resumes after it
        run.outputs.write_tracks(tracked)
        if len(tracked.classify_rows):
            with _cpu(cam, "crop"):
                crops = cut_crops(frame.image, tracked.crop_xyxy, host.classifier_input_px)
            scores = await host.classify(crops)
            with _cpu(cam, "voting"):
                cam.add_scores(tracked.classify_track_ids, scores, tracked.classify_face_px)
            if host.on_crops is not None:
                host.on_crops(cam, frame, tracked, crops, scores)
        with _cpu(cam, "voting"):
            decisions, stats = cam.collect(now_ns)
        await self._emit(cam, decisions, stats)
        run.outputs.annotate(frame, tracked, cam)
        if host.on_frame is not None:
            host.on_frame(cam)

    async def _emit(self, cam: CameraPipeline, decisions: list[PersonDecision], stats: list[CameraStats]) -> None:
        """Step emit: the ended tracks' decisions and the closed windows' statistics, in that order."""
        if decisions or stats:
            with _cpu(cam, "emit"):  # the sink's own work before its first wait (encoding, handing over)
                await self.host.emit([*decisions, *stats])
            self.run.count(decisions)

    async def _tick(self) -> None:
        """No frame for a while: a live camera's windows still close by wall clock, with its state in the record."""
        cam = self.run.cam
        if cam is None or not self.run.live:
            return
        stats = cam.windows.advance(max(time.time_ns(), self.run.last_ns))
        if stats:
            await self.host.emit(list(stats))
        if self.host.on_frame is not None:
            self.host.on_frame(cam)


async def run_camera(spec: CameraSpec, host: CameraHost, stop: asyncio.Event | None = None,
                     run: CameraRun | None = None) -> CameraSummary:
    """Process one camera until its source ends (files), fails for good (streams) or ``stop`` is set.

    One :class:`CameraLoop` on ``run`` (None: a fresh :class:`CameraRun` of ``spec``); see there for what it
    returns and raises.
    """
    return await CameraLoop(run or CameraRun(spec), host, stop or asyncio.Event())()


async def finish_camera(run: CameraRun, emit: EmitFn, ended_by: EndedBy, state: CameraState = "ended") -> None:
    """End the camera: open tracks become decisions (``ended_by``), the final statistics record (its
    ``camera_state`` is ``state``: ``ended`` or ``removed``), outputs closed."""
    run.outputs.close()
    run.set_state(state)
    cam = run.cam
    if cam is None:
        return
    decisions, stats = cam.close(max(time.time_ns() if run.live else run.last_ns, run.last_ns), ended_by, state)
    await emit([*decisions, *stats])
    run.count(decisions)
    run.stage_cpu_s = {k: round(v, 4) for k, v in cam.stage_cpu_s.items()}
    run.cam = None


async def supervise_camera(
    spec: CameraSpec,
    host: CameraHost,
    stop: asyncio.Event,
    max_failures: int | None = None,
    restore: CameraStats | None = None,
) -> CameraSummary:
    """Run a camera and restart it after any fault, so that nothing in one camera ends another.

    A fault (an exception other than a source that ends) is logged with the ``camera_id``, counted in
    ``camera_restarts``, and the camera restarts after a capped exponential backoff with +-20% jitter
    (:class:`pipeline.backoff.Backoff` of the camera's ``capture.reconnect_backoff_s`` and ``capture.max_backoff_s``;
    reset once a frame got through). Tracks, votes and totals carry on. A file gives up after ``max_failures``
    faults in a row without a processed frame (default 5; the error is in the summary); a live camera never gives
    up unless ``max_failures`` is set.

    ``restore`` is the camera's last published statistics record, after its process (or the whole job) restarted
    (:meth:`CameraRun.restore`).
    """
    run = CameraRun(spec, restore)
    limit = max_failures if max_failures is not None else (None if run.live else 5)
    backoff, failures = Backoff(spec.capture.reconnect_backoff_s, spec.capture.max_backoff_s), 0
    while True:
        before = run.counters.last_frame_idx
        try:
            return await run_camera(spec, host, stop, run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures = 0 if run.counters.last_frame_idx > before else failures + 1
            if failures <= 1:
                backoff.reset()
            run.failed()
            if limit is not None and failures >= limit:
                run.error = (f"camera {spec.camera_id!r}: gave up after {failures} faults in a row without a frame "
                             f"(last: {type(exc).__name__}: {exc})")
                logger.error("%s", run.error)
                await finish_camera(run, host.emit, "end_of_source")
                return run.summary()
            wait = backoff.next_wait()
            logger.error("camera %s: loop failed after frame %d (%s: %s); restart %d in %.1f s", spec.camera_id,
                         run.counters.last_frame_idx, type(exc).__name__, exc, run.counters.camera_restarts, wait,
                         exc_info=logger.isEnabledFor(logging.DEBUG))
            if await _stopped_within(stop, wait):
                await finish_camera(run, host.emit, "shutdown", _final_state(stop))
                return run.summary()


async def _stopped_within(stop: asyncio.Event, wait_s: float) -> bool:
    """Wait ``wait_s`` seconds, or less if ``stop`` is set; True when it was."""
    try:
        await asyncio.wait_for(stop.wait(), wait_s)
    except TimeoutError:
        return False
    return True


def make_camera_pipeline(cfg: Config, spec: CameraSpec, crop_margin: float) -> MakeCam:
    """How ``maskwatch run`` makes a camera's state: the config's tracking (with the camera's ``camera_motion``),
    face rules, voting and statistics settings, the classifier's validation counts and the camera's district."""
    validation = cfg.stats.classifier_validation()
    tracking = replace(cfg.tracking, camera_motion=spec.camera_motion) if spec.camera_motion else cfg.tracking

    def make(frame_wh: tuple[int, int], counters: CameraCounters) -> CameraPipeline:
        return CameraPipeline(spec.camera_id, frame_wh, crop_margin, tracking, cfg.faces, cfg.voting,
                              cfg.stats.window_s, validation, spec.district, cfg.stats.min_coverage, counters)

    return make


def in_process_host(cfg: Config, spec: CameraSpec, pose: Any, scorer: Any, emit: EmitFn, **hooks: Any) -> CameraHost:
    """A host that runs the models in this process, one frame per call (``dataset extract``, benchmarks).

    Args:
        cfg: The configuration (pose post-processing, camera state).
        spec: The camera.
        pose: A :class:`pipeline.onnx_models.PoseModel`.
        scorer: A :class:`pipeline.facegate.CropScorer`.
        emit: Where the camera's messages go.
        **hooks: ``executor``, ``on_frame``, ``on_crops`` or ``make_cam`` of :class:`CameraHost`.
    """
    p = cfg.pose

    async def infer_pose(image: npt.NDArray[np.uint8], lb: Letterbox, cid: str, fidx: int, pts: int) -> Poses:
        return decode_poses(pose.infer(image[None])[0], lb, cid, fidx, pts, p.conf_threshold, p.nms_iou, p.oks_nms,
                            p.min_keypoints, p.head_or_torso)

    async def classify(crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return scorer.score(crops)

    clf = scorer.classifier
    host = CameraHost(make_camera_pipeline(cfg, spec, clf.crop_margin), clf.input_px, infer_pose, classify, emit)
    return replace(host, **hooks)
