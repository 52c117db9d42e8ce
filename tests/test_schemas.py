import dataclasses

import jsonschema
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from schemas.messages import SCHEMA_DIR, CameraStats, DistrictStats, PersonDecision
from schemas.pose import NO_TRACK, POSE_SCHEMA, Poses


def _ipc_roundtrip(batch: pa.RecordBatch) -> pa.RecordBatch:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return pa.ipc.open_stream(sink.getvalue()).read_next_batch()


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 6),
    data=st.data(),
)
def test_poses_arrow_ipc_roundtrip(n, data):
    kp = data.draw(arrays(np.float32, (n, 17, 3), elements=st.floats(0, 4000, width=32)))
    boxes = data.draw(arrays(np.float32, (n, 4), elements=st.floats(0, 4000, width=32)))
    tids = np.array(data.draw(st.lists(st.sampled_from([NO_TRACK, 1, 2, 99]), min_size=n, max_size=n)), np.int64)
    p = Poses("cam-1", 42, 1_400_000_000, np.linspace(0, 1, n, dtype=np.float32), boxes, kp, tids)
    batch = _ipc_roundtrip(p.to_arrow())
    assert batch.schema.equals(POSE_SCHEMA)
    assert batch.schema.metadata[b"schema_version"] == b"1"
    q = Poses.from_arrow(batch, "cam-1", 42, 1_400_000_000)
    np.testing.assert_array_equal(q.keypoints, kp)
    np.testing.assert_array_equal(q.bbox_xyxy, boxes)
    np.testing.assert_array_equal(q.track_id, tids)
    assert batch.column("track_id").null_count == int((tids == NO_TRACK).sum())


def test_poses_validation():
    with pytest.raises(ValueError, match="keypoints must have shape"):
        Poses("c", 0, 0, np.zeros(1, np.float32), np.zeros((1, 4), np.float32), np.zeros((1, 16, 3), np.float32),
              np.zeros(1, np.int64))
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Poses("c", 0, 0, np.zeros(1, np.float32), np.zeros((1, 4), np.float32), kp, np.zeros(1, np.int64))
    other = Poses.empty("other", 0, 0).to_arrow()
    p = Poses("other", 0, 0, np.ones(1, np.float32), np.zeros((1, 4), np.float32), np.zeros((1, 17, 3), np.float32),
              np.zeros(1, np.int64)).to_arrow()
    assert Poses.from_arrow(other, "x", 0, 0).score.shape == (0,)
    with pytest.raises(ValueError, match="another frame"):
        Poses.from_arrow(p, "cam-1", 0, 0)


DECISION = PersonDecision(
    decision_id="cam/3/100", camera_id="cam", track_id=3, first_seen_ns=100, last_seen_ns=900, first_frame_idx=0,
    last_frame_idx=24, frames_tracked=9, faces_classified=6, faces_rejected=2, votes_mask=5, votes_no_mask=0,
    mean_mask_score=0.91, decision="mask", face_px_median=38.5,
)
STATS = CameraStats(
    camera_id="cam", window_start_ns=0, window_end_ns=60 * 10**9, final=True, people=2, masked=1, unmasked=1,
    undecided=0, mask_fraction=0.5, mask_fraction_low=0.09, mask_fraction_high=0.91, corrected_mask_fraction=0.49,
    corrected_mask_fraction_low=0.05, corrected_mask_fraction_high=0.95, total_people=2, total_masked=1,
    total_unmasked=1, total_undecided=0, total_mask_fraction=0.5, total_mask_fraction_low=0.09,
    total_mask_fraction_high=0.91, total_corrected_mask_fraction=0.49, total_corrected_mask_fraction_low=0.05,
    total_corrected_mask_fraction_high=0.95, classifier_sensitivity="308/314", classifier_specificity="50/53",
    classifier_validation_source="mask_classifier.onnx metadata: per face, held-out annotated faces (model card)",
    frames_processed=100, frames_dropped=0, faces_classified=40, faces_rejected=7,
    people_with_face=2, decided=2, coverage=1.0, face_px_median=41.5, low_coverage=False,
    total_people_with_face=2, total_decided=2, total_coverage=1.0, total_face_px_median=41.5, total_low_coverage=False,
)


@pytest.mark.parametrize("msg", [DECISION, STATS])
def test_message_roundtrip_and_json_schema(msg):
    raw = msg.encode()
    jsonschema.validate(__import__("json").loads(raw), type(msg).json_schema())
    assert type(msg).decode(raw) == msg


def test_json_schema_rejects_what_decode_rejects():
    import json

    bad = json.loads(DECISION.encode())
    bad["decision"] = "maybe"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, PersonDecision.json_schema())
    wrong_version = dict(json.loads(DECISION.encode()), schema_version=1)
    with pytest.raises(ValueError, match="schema_version"):
        PersonDecision.decode(json.dumps(wrong_version))
    with pytest.raises(ValueError, match="unexpected"):
        PersonDecision.decode(dict(json.loads(DECISION.encode()), extra=1))
    with pytest.raises(ValueError, match="not JSON"):
        CameraStats.decode(b"{")


def test_faces_rejected_is_required_and_counted_by_the_stats_schema():
    import json

    schema = CameraStats.json_schema()
    assert {"faces_classified", "faces_rejected", "classifier_validation_source"} <= set(schema["required"])
    value = json.loads(STATS.encode())
    for bad in ({"faces_rejected": -1}, {"faces_rejected": 1.5}, {"classifier_validation_source": 3}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(value | bad, schema)
    without = {k: v for k, v in value.items() if k != "faces_rejected"}
    with pytest.raises(jsonschema.ValidationError, match="faces_rejected"):
        jsonschema.validate(without, schema)
    assert "faces_rejected" in PersonDecision.json_schema()["required"]


def test_camera_state_and_ended_by_go_through_the_json_schemas():
    import json

    stats = json.loads(STATS.encode()) | {"camera_state": "reconnecting", "camera_restarts": 2, "last_frame_idx": 99}
    jsonschema.validate(stats, CameraStats.json_schema())
    assert CameraStats.decode(json.dumps(stats)).camera_state == "reconnecting"
    for district in ("district-7", None):
        jsonschema.validate(stats | {"district": district}, CameraStats.json_schema())
    for bad in ({"camera_state": "sleeping"}, {"camera_restarts": -1}, {"last_frame_idx": -2}, {"district": ""}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(stats | bad, CameraStats.json_schema())
    decision = json.loads(DECISION.encode()) | {"ended_by": "shutdown"}
    jsonschema.validate(decision, PersonDecision.json_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(decision | {"ended_by": "crash"}, PersonDecision.json_schema())
    without = {k: v for k, v in decision.items() if k != "ended_by"}
    with pytest.raises(jsonschema.ValidationError, match="ended_by"):
        jsonschema.validate(without, PersonDecision.json_schema())


@pytest.mark.parametrize("cls", [PersonDecision, CameraStats, DistrictStats])
def test_each_version_has_its_json_schema_beside_the_earlier_ones_and_they_agree_with_the_dataclass(cls):
    import json
    from dataclasses import fields

    schema = cls.json_schema()
    name = cls.schema_file.split(".v")[0]
    assert cls.schema_file == f"{name}.v{cls.schema_version}.json"
    assert schema["properties"]["schema_version"] == {"const": cls.schema_version}
    assert schema["$id"].endswith(cls.schema_file)
    assert f"schema_version {cls.schema_version}" in schema["title"]
    assert set(schema["properties"]) == set(schema["required"]) == {"schema_version"} | {f.name for f in fields(cls)}
    earlier = json.loads((SCHEMA_DIR / f"{name}.v{cls.schema_version - 1}.json").read_text())  # kept for old records
    assert earlier["properties"]["schema_version"] == {"const": cls.schema_version - 1}


def test_the_coverage_fields_go_through_the_json_schemas():
    import json

    stats = json.loads(STATS.encode())
    for nulls in ({"coverage": None, "face_px_median": None}, {"total_coverage": None, "total_face_px_median": None}):
        jsonschema.validate(stats | nulls, CameraStats.json_schema())
    for bad in ({"coverage": 1.5}, {"total_coverage": -0.1}, {"people_with_face": -1}, {"decided": 0.5},
                {"low_coverage": "yes"}, {"total_low_coverage": None}, {"face_px_median": -3}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(stats | bad, CameraStats.json_schema())
    without = {k: v for k, v in stats.items() if k != "total_low_coverage"}
    with pytest.raises(jsonschema.ValidationError, match="total_low_coverage"):
        jsonschema.validate(without, CameraStats.json_schema())
    decision = json.loads(DECISION.encode())
    jsonschema.validate(decision | {"face_px_median": None}, PersonDecision.json_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(decision | {"face_px_median": "tall"}, PersonDecision.json_schema())


def test_decisions_of_version_3_are_upgraded():
    import json

    v3 = {k: v for k, v in json.loads(DECISION.encode()).items() if k != "face_px_median"} | {"schema_version": 3}
    jsonschema.validate(v3, json.loads((SCHEMA_DIR / "decision.v3.json").read_text()))
    with pytest.raises(ValueError, match="schema_version"):
        PersonDecision.decode(v3)
    up = PersonDecision.upgrade(v3)
    jsonschema.validate(up, PersonDecision.json_schema())
    assert PersonDecision.decode(up) == dataclasses.replace(DECISION, face_px_median=None)
    assert PersonDecision.upgrade(json.loads(DECISION.encode())) == json.loads(DECISION.encode())
    assert PersonDecision.upgrade({"schema_version": 2}) == {"schema_version": 2}  # older: left to be skipped
