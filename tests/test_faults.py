"""Faults cost at most the frames that were not there: one camera's failure restarts that camera only, and a stop
decides the people in view and publishes final statistics. Real video, real pose model and classifier."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pipeline.camera import CameraPipeline
from pipeline.camera_loop import CameraHost, CameraSpec, supervise_camera
from pipeline.config import CaptureConfig
from pipeline.facegate import CropScorer, load_face_gate
from pipeline.headbox import FaceRules
from pipeline.onnx_models import MaskClassifier, PoseModel
from pipeline.pose_postprocess import decode_poses
from pipeline.sinks import Record, message_records
from schemas.messages import CameraStats, PersonDecision
from tests.conftest import REPO, pose_model, shared_video

pytestmark = pytest.mark.slow
VIDEO = "street_5_masked.mp4"  # 640x360, 5 masked people walking toward the camera


@pytest.fixture(scope="module")
def models():
    pose = PoseModel(pose_model(), device="cpu")
    clf = MaskClassifier(REPO / "maskwatch" / "assets" / "mask_classifier.onnx", device="cpu")
    return pose, clf, CropScorer(clf, load_face_gate(FaceRules().gate_model_path))


def _camera(camera_id: str, models, records: list[Record], fail_on_call: int | None = None,
            stop: asyncio.Event | None = None, stop_on_call: int | None = None):
    """A camera on the shared video with in-process models; its classify call number ``fail_on_call`` raises, and
    call number ``stop_on_call`` sets ``stop``."""
    pose, clf, scorer = models
    spec = CameraSpec(camera_id=camera_id, source=str(shared_video(VIDEO)), frame_wh=None, pose_input_px=640,
                      target_fps=5.0, capture=CaptureConfig(reconnect_backoff_s=0.2, max_backoff_s=1.0))
    calls = {"classify": 0}
    stop = stop or asyncio.Event()

    async def infer_pose(image, lb, cid, fidx, pts):
        raw = (await asyncio.to_thread(pose.infer, image[None]))[0]
        return decode_poses(raw, lb, cid, fidx, pts)

    async def classify(crops):
        calls["classify"] += 1
        if calls["classify"] == fail_on_call:
            msg = "classify actor died (simulated: ActorDiedError in a real run)"
            raise RuntimeError(msg)
        if calls["classify"] == stop_on_call:
            stop.set()
        return await asyncio.to_thread(scorer.score, crops)

    async def emit(messages):
        records.extend(message_records(messages, "d", "s"))

    def make_cam(wh, counters):
        return CameraPipeline(camera_id, wh, clf.crop_margin, counters=counters)

    return supervise_camera(spec, CameraHost(make_cam, clf.input_px, infer_pose, classify, emit), stop)


def _stats(records: list[Record], camera_id: str) -> list[CameraStats]:
    return [CameraStats.decode(r.value) for r in records if r.topic == "s" and r.key == camera_id]


def _decisions(records: list[Record], camera_id: str) -> list[PersonDecision]:
    return [PersonDecision.decode(r.value) for r in records if r.topic == "d" and r.key == camera_id]


def test_a_fault_in_one_camera_restarts_that_camera_and_spares_the_other(models, caplog):
    records: list[Record] = []

    async def main():
        return await asyncio.gather(_camera("faulty", models, records, fail_on_call=4),
                                    _camera("healthy", models, records))

    with caplog.at_level(logging.ERROR, logger="pipeline.camera_loop"):
        faulty, healthy = asyncio.run(main())
    assert faulty.error is None
    assert healthy.error is None
    # The faulty camera resumed after the frame that failed: every other frame was processed once, none twice.
    assert healthy.frames_processed > 40
    assert faulty.frames_processed == healthy.frames_processed
    assert any("camera faulty: loop failed" in r.getMessage() and "restart 1" in r.getMessage()
               for r in caplog.records)
    final = _stats(records, "faulty")[-1]
    assert (final.final, final.camera_restarts, final.camera_state) == (True, 1, "ended")
    assert _stats(records, "healthy")[-1].camera_restarts == 0
    # Tracks carried on across the restart: the same people, counted once.
    people = _decisions(records, "faulty")
    assert len(people) == len(_decisions(records, "healthy"))
    assert len({d.decision_id for d in people}) == len(people)
    totals = [s.total_people for s in _stats(records, "faulty")]
    assert totals == sorted(totals)


def test_a_camera_that_keeps_failing_gives_up_alone(models):
    records: list[Record] = []
    _, clf, _ = models
    spec = CameraSpec(camera_id="broken", source=str(shared_video(VIDEO)), frame_wh=None, pose_input_px=640,
                      target_fps=5.0, capture=CaptureConfig(reconnect_backoff_s=0.05, max_backoff_s=0.1))

    async def emit(messages):
        records.extend(message_records(messages, "d", "s"))

    async def broken_pose(*_args):
        msg = "decoder returned garbage"
        raise ValueError(msg)

    def make_cam(wh, counters):
        return CameraPipeline("broken", wh, clf.crop_margin, counters=counters)

    host = CameraHost(make_cam, clf.input_px, broken_pose, None, emit)  # type: ignore[arg-type]

    async def main():
        return await asyncio.gather(
            supervise_camera(spec, host, asyncio.Event(), max_failures=3),
            _camera("healthy", models, records),
        )

    broken, healthy = asyncio.run(main())
    assert broken.error is not None
    assert "gave up after 3 faults in a row" in broken.error
    assert "decoder returned garbage" in broken.error
    assert healthy.error is None
    assert healthy.frames_processed > 40
    final = _stats(records, "broken")[-1]
    assert (final.final, final.camera_restarts, final.frames_processed) == (True, 3, 0)


def test_stop_decides_people_in_view_and_publishes_final_statistics(models):
    records: list[Record] = []

    async def main():
        # Stopped at the 20th frame with faces: people are in view, the video is far from its end.
        return await asyncio.wait_for(_camera("cam", models, records, stop_on_call=20), 60)

    summary = asyncio.run(main())
    assert summary.error is None
    shutdown = [d for d in _decisions(records, "cam") if d.ended_by == "shutdown"]
    assert shutdown, [d.ended_by for d in _decisions(records, "cam")]
    final = _stats(records, "cam")[-1]
    assert final.final
    assert final.camera_state == "ended"
    assert final.total_people == len(_decisions(records, "cam"))
    assert final.frames_processed < 50  # it stopped well before the video's 58 sampled frames
