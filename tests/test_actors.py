"""The Ray actors on real models: batching across cameras gives the same results as the bare models."""

import numpy as np
import pytest

from devtools.waiting import wait_until
from pipeline.config import ClassifyConfig, PoseConfig
from pipeline.facegate import load_face_gate
from pipeline.headbox import FaceRules
from pipeline.letterbox import letterbox
from pipeline.onnx_models import MaskClassifier, PoseModel
from pipeline.pose_postprocess import decode_pose
from pipeline.source import read_frames
from schemas.pose import POSE_SCHEMA, Poses
from tests.conftest import REPO, pose_model, shared_video

pytestmark = [pytest.mark.ray, pytest.mark.slow]
CLASSIFIER = REPO / "maskwatch" / "assets" / "mask_classifier.onnx"


def _frames(name, n):
    out = []
    for f in read_frames(str(shared_video(name)), name, target_fps=2):
        out.append(f)
        if len(out) == n:
            return out
    return out


def test_pose_actor_batches_cameras_and_matches_the_bare_model(ray_local):
    import ray

    from actors.pose import PoseActor

    path = pose_model()
    frames = _frames("street_5_masked.mp4", 4)
    actor = PoseActor.remote(PoseConfig(max_batch_size=8, batch_wait_s=0.2), str(path))
    inputs = [letterbox(f.image, 640) for f in frames]
    refs = [actor.infer.remote(img, lb, f"cam-{i}", f.frame_idx, f.pts_ns)
            for i, (f, (img, lb)) in enumerate(zip(frames, inputs, strict=True))]
    batches = ray.get(refs)
    info = ray.get(actor.info.remote())
    assert max(info["batch_sizes"]) >= 2  # four cameras' frames shared model calls
    assert info["items"] == 4  # the model-call totals that bench/pipeline_fps.py reads
    assert info["model_wall_s"] > 0
    assert 0 < info["model_cpu_s"] <= info["process_cpu_s"] + 0.05
    model = PoseModel(path, device="cpu")
    for i, (f, (img, lb), batch) in enumerate(zip(frames, inputs, batches, strict=True)):
        assert batch.schema.equals(POSE_SCHEMA)
        got = Poses.from_arrow(batch, f"cam-{i}", f.frame_idx, f.pts_ns)
        score, boxes, kps = decode_pose(model.infer(img[None])[0], lb)
        assert len(got) == len(score) >= 3  # people walking on a street
        np.testing.assert_allclose(got.bbox_xyxy, boxes, atol=0.5)
        np.testing.assert_allclose(got.keypoints, kps, atol=0.5)
    # A camera shard's frames sent in one call (infer_many) come back in order, each as infer returns it.
    many = ray.get(actor.infer_many.remote([img for img, _ in inputs], [lb for _, lb in inputs],
                                           [f"cam-{i}" for i in range(len(frames))],
                                           [f.frame_idx for f in frames], [f.pts_ns for f in frames]))
    assert len(many) == len(batches)
    for one, batch in zip(many, batches, strict=True):
        assert one.equals(batch)
    # A frame that fails fails alone: its neighbours in the call get their poses.
    bad = np.zeros((3, 5, 3), np.uint8)  # not a letterboxed frame (sides not multiples of 32)
    mixed = ray.get(actor.infer_many.remote([inputs[0][0], bad], [inputs[0][1], inputs[0][1]], ["a", "b"],
                                            [0, 0], [0, 0]))
    assert mixed[0].equals(ray.get(actor.infer.remote(inputs[0][0], inputs[0][1], "a", 0, 0)))
    assert isinstance(mixed[1], Exception)
    ray.kill(actor)


def test_classify_actor_concatenates_requests_and_splits_back(ray_local):
    import ray

    from actors.classify import ClassifyActor

    if not CLASSIFIER.is_file():
        pytest.skip(f"needs {CLASSIFIER}")
    rng = np.random.default_rng(0)
    model = MaskClassifier(CLASSIFIER, device="cpu")
    s = model.input_px
    requests = [rng.integers(0, 255, (k, s, s, 3), dtype=np.uint8) for k in (3, 1, 5, 0)]
    actor = ClassifyActor.remote(ClassifyConfig(max_batch_size=64, batch_wait_s=0.2), FaceRules())
    got = ray.get([actor.predict.remote(r) for r in requests])
    assert [g.shape for g in got] == [(3, 3), (1, 3), (5, 3), (0, 3)]
    gate = load_face_gate(FaceRules().gate_model_path)
    for r, g in zip(requests, got, strict=True):
        np.testing.assert_allclose(g[:, [0, 2]], model.predict_scores(r), atol=1e-5)
        np.testing.assert_array_equal(g[:, 1], gate.face_scores(r))
    # Several frames' crops in one call (a shard's frames of one moment): the same scores; a frame whose crops are
    # not the classifier's size fails alone.
    bad = rng.integers(0, 255, (2, s + 1, s + 1, 3), dtype=np.uint8)
    many = ray.get(actor.predict_many.remote([*requests, bad]))
    for one, g in zip(many, got, strict=False):
        np.testing.assert_allclose(one, g, atol=1e-5)
    assert isinstance(many[-1], Exception)
    info = ray.get(actor.info.remote())
    assert max(info["batch_sizes"]) >= 2
    assert info["crop_margin"] == model.crop_margin
    assert info["face_gate"] == str(FaceRules().gate_model_path)
    ray.kill(actor)


def test_a_camera_starts_and_is_removed_inside_a_running_shard_without_touching_its_neighbour(ray_local, tmp_path):
    """A shard runs one camera; a second is started in it while the first runs, then the first is removed alone: its
    open tracks are decided with ``ended_by="shutdown"``, its final record says ``removed`` and it leaves the shard's
    cameras, while the second reads its file to the end. (The fleet's live config changes rest on this.) With two
    pose actors, each camera gets its own."""
    import ray

    from cluster.driver import resolve_cameras
    from cluster.topology import NodePipeline, make_sink
    from pipeline.config import parse_config
    from pipeline.sinks import Record
    from schemas.messages import CameraStats, PersonDecision

    pose_model()
    long_video, short_video = shared_video("pets09_s2l1_cctv.mp4"), shared_video("single_masked.mp4")
    cfg = parse_config({"cameras": [{"camera_id": "long", "source": str(long_video), "target_fps": 5},
                                    {"camera_id": "short", "source": str(short_video), "target_fps": 5}],
                        "pose": {"threads": 0, "num_actors": 2}})
    first, second = resolve_cameras(cfg)
    clf = MaskClassifier(cfg.classify.model_path, "cpu")
    out = tmp_path / "out.jsonl"
    sink = make_sink(cfg, str(out))
    pipeline = NodePipeline.build(cfg, str(pose_model()))
    shard = pipeline.add_shard(cfg, [first], clf.crop_margin, clf.input_px).handle
    running = shard.run.remote(pipeline.pose, pipeline.classify, sink)

    def frames(camera_id):
        return {c["camera_id"]: c.get("frames_processed", 0) for c in ray.get(shard.cameras.remote())}.get(camera_id, 0)

    wait_until(lambda: frames("long") >= 5, 120, "5 frames of the first camera", poll_s=0.5)
    ray.get(shard.start_camera.remote(second), timeout=60)
    with pytest.raises(ray.exceptions.RayTaskError, match="already running in this shard"):
        ray.get(shard.start_camera.remote(second), timeout=60)
    stopped = ray.get(shard.stop_camera.remote("long", removed=True), timeout=120)
    assert [c["camera_id"] for c in ray.get(shard.cameras.remote())] == ["short"]
    summaries = {s["camera_id"]: s for s in ray.get(running, timeout=300)}
    ray.get(sink.close.remote(), timeout=60)

    sampled = sum(1 for _ in read_frames(str(long_video), "long", target_fps=5))
    assert 0 < stopped["frames_processed"] < sampled, "stopped before the end of its file"
    assert summaries["long"]["frames_processed"] == stopped["frames_processed"]
    short_frames = sum(1 for _ in read_frames(str(short_video), "short", target_fps=5))
    assert summaries["short"]["frames_processed"] == short_frames, "the neighbour read its file to the end"
    assert summaries["short"]["error"] is None
    records = [Record.from_json_line(line) for line in out.read_text().splitlines()]
    stats = {cid: [CameraStats.decode(r.value) for r in records if r.key == cid and r.topic == cfg.kafka.stats_topic]
             for cid in ("long", "short")}
    assert (stats["long"][-1].final, stats["long"][-1].camera_state) == (True, "removed")
    assert (stats["short"][-1].final, stats["short"][-1].camera_state) == (True, "ended")
    assert stats["short"][-1].last_frame_idx > 0
    ended = {PersonDecision.decode(r.value).ended_by for r in records
             if r.key == "long" and r.topic == cfg.kafka.decisions_topic}
    assert "shutdown" in ended, "people in view of the removed camera were decided, not dropped"
    assert summaries["short"]["frames_cross_node"] == 0
    # One pose actor per camera: the first camera took the first; the second, started beside it, the other (the
    # first's count may hold a frame or two still in flight when it stopped).
    long_frames, short_frames_posed = (ray.get(p.info.remote())["items"] for p in pipeline.pose)
    assert short_frames_posed == short_frames
    assert stopped["frames_processed"] <= long_frames <= stopped["frames_processed"] + 2
    pipeline.remove()
    ray.kill(sink)
