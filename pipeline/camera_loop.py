"""The per-camera processing loop, written against async callables so that it runs with Ray actors
(``actors/camera.py``) or in one process (tests, benchmarks) without change.

Reading runs in a thread and feeds a bounded queue: a file waits for the pipeline (no frame is lost), a live stream
drops the oldest queued frame and counts it. Up to ``pose_in_flight`` frames are at the pose stage at once, so
pose inference of frame t+1 overlaps tracking and classification of frame t; results are consumed in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.annotate import draw_frame
from pipeline.camera import CameraPipeline
from pipeline.headbox import cut_crops
from pipeline.letterbox import Letterbox, default_pose_input_px, letterbox
from pipeline.mot import mot_lines, write_mot_lines
from pipeline.sinks import Record
from pipeline.source import Frame, is_live, read_frames
from schemas.errors import SourceError
from schemas.messages import CameraStats, PersonDecision
from schemas.pose import Poses

logger = logging.getLogger(__name__)

PoseFn = Callable[[npt.NDArray[np.uint8], Letterbox, str, int, int], Awaitable[Poses]]
ClassifyFn = Callable[[npt.NDArray[np.uint8]], Awaitable[npt.NDArray[np.float32]]]  # crops -> (K, 3) scores
EmitFn = Callable[[list[Record]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class CameraSpec:
    """What the loop needs to know about one camera (resolved by the driver)."""

    camera_id: str
    source: str
    frame_wh: tuple[int, int] | None  # None: not known yet (a live camera unreachable at start)
    pose_input_px: int | None  # None: chosen from the frame size at the first frame
    target_fps: float | None
    queue_frames: int = 4
    open_timeout_s: float = 5.0
    max_reconnects: int | None = None  # None: a live camera is never given up
    reconnect_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    annotate_path: str | None = None
    tracks_path: str | None = None  # MOTChallenge person tracks (pipeline.mot), written as frames are processed
    wait_for_source: bool = False  # live camera down at start: retry (backoff up to 60 s) instead of failing
    camera_motion: str | None = None  # "auto" / "on" / "off" for this camera; None: the tracking setting


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


def to_records(
    decisions: list[PersonDecision], stats: list[CameraStats], decisions_topic: str, stats_topic: str
) -> list[Record]:
    """Kafka records (key = camera_id) for decisions and statistics."""
    return [Record(decisions_topic, d.camera_id, d.encode()) for d in decisions] + [
        Record(stats_topic, s.camera_id, s.encode()) for s in stats
    ]


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
) -> CameraSummary:
    """Process one camera until its source ends (files) or fails for good (streams).

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
        on_frame: Called with the camera's state after each processed frame (metrics).

    Returns:
        The summary; a source that fails is reported in ``error``, not raised, so other cameras go on.
    """
    t0 = time.monotonic()
    summary = CameraSummary(spec.camera_id)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Frame | None] = asyncio.Queue(maxsize=spec.queue_frames)
    live = is_live(spec.source)
    start_wall_ns = time.time_ns()
    writer: cv2.VideoWriter | None = None
    tracks_fh = open(spec.tracks_path, "w") if spec.tracks_path else None  # noqa: SIM115 - closed in finally
    cam: CameraPipeline | None = None
    input_px = spec.pose_input_px
    dropped = 0

    def first_frame(frame: Frame) -> CameraPipeline:
        nonlocal cam, writer, input_px
        h, w = frame.image.shape[:2]
        cam = make_cam((w, h))
        input_px = input_px or default_pose_input_px((w, h))
        if spec.annotate_path:
            fps = spec.target_fps or 25.0
            writer = cv2.VideoWriter(spec.annotate_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        return cam

    def capture_ns(frame: Frame) -> int:
        # Files replay as if live from the start of the run, so their windows line up with wall clock.
        return time.time_ns() if live else start_wall_ns + frame.pts_ns

    sentinel = object()

    async def open_frames() -> tuple[Iterator[Frame], object]:
        delay = spec.reconnect_backoff_s
        while True:
            frames = read_frames(
                spec.source, spec.camera_id, spec.target_fps, spec.open_timeout_s,
                spec.max_reconnects, spec.reconnect_backoff_s, spec.max_backoff_s,
            )
            try:
                return frames, await loop.run_in_executor(executor, next, frames, sentinel)
            except SourceError as exc:
                if not (live and spec.wait_for_source):
                    raise
                logger.warning("%s; retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def reader() -> None:
        nonlocal dropped
        frames: Iterator[Frame] | None = None
        try:
            frames, frame = await open_frames()
            while frame is not sentinel:
                if live and queue.full():
                    queue.get_nowait()  # drop the oldest: a live camera does not wait for us
                    dropped += 1
                await queue.put(frame)  # files wait here: no frame is lost
                frame = await loop.run_in_executor(executor, next, frames, sentinel)
        finally:
            if frames is not None:
                await loop.run_in_executor(executor, frames.close)  # type: ignore[attr-defined]
            await queue.put(None)

    reader_task = asyncio.create_task(reader())
    inflight: deque[tuple[Frame, asyncio.Future[Poses]]] = deque()
    pose_in_flight = 2
    eof = False
    last_ns = start_wall_ns
    try:
        while True:
            while not eof and len(inflight) < pose_in_flight:
                frame = await queue.get() if not inflight else (queue.get_nowait() if not queue.empty() else False)
                if frame is False:
                    break
                if frame is None:
                    eof = True
                    break
                if cam is None:
                    first_frame(frame)
                assert input_px is not None  # set by first_frame
                image, lb = letterbox(frame.image, input_px)
                fut = asyncio.ensure_future(
                    infer_pose(image, lb, spec.camera_id, frame.frame_idx, frame.pts_ns)
                )
                inflight.append((frame, fut))
            if not inflight:
                break
            frame, fut = inflight.popleft()
            poses = await fut
            assert cam is not None  # created before the first pose request
            cam.windows.frames_dropped = dropped
            now_ns = last_ns = max(capture_ns(frame), last_ns)
            tracked = cam.track(poses, now_ns, frame.image)
            if tracks_fh is not None:
                write_mot_lines(tracks_fh, mot_lines(tracked.poses))
            if len(tracked.classify_rows):
                crops = cut_crops(frame.image, tracked.crop_xyxy, classifier_input_px)
                scores = await classify(crops)
                cam.add_scores(tracked.classify_track_ids, scores)
                summary.faces_classified = cam.windows.faces_classified
                summary.faces_rejected = cam.windows.faces_rejected
            decisions, stats = cam.collect(now_ns)
            if decisions or stats:
                await emit(to_records(decisions, stats, *topics))
                _count(summary, decisions)
            if on_frame is not None:
                on_frame(cam)
            if writer is not None:
                votes = {t: v for t in tracked.poses.track_id.tolist() if (v := cam.ledger.get(t)) is not None}
                writer.write(draw_frame(frame.image, tracked.poses, tracked.head_xyxy, tracked.classify_rows, votes))
        await reader_task  # re-raises a source failure
    except SourceError as exc:
        summary.error = str(exc)
        logger.error("%s", exc)
    finally:
        reader_task.cancel()
        for _, fut in inflight:
            fut.cancel()
        if writer is not None:
            writer.release()
        if tracks_fh is not None:
            tracks_fh.close()
    if cam is not None:
        cam.windows.frames_dropped = dropped
        decisions, stats = cam.close(time.time_ns() if live else last_ns)
        await emit(to_records(decisions, stats, *topics))
        _count(summary, decisions)
        summary.frames_processed = cam.windows.frames_processed
    summary.frames_dropped = dropped
    summary.wall_s = round(time.monotonic() - t0, 3)
    return summary


def _count(summary: CameraSummary, decisions: list[PersonDecision]) -> None:
    for d in decisions:
        summary.people += 1
        summary.decisions[d.decision] += 1
