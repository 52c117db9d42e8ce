import pytest

from pipeline.config import Config, default_pose_input_px, load_config, parse_config
from schemas.errors import ConfigError


def test_defaults_validate_and_empty_file_is_defaults(tmp_path):
    f = tmp_path / "empty.yaml"
    f.write_text("")
    assert load_config(f) == Config()


def test_min_coverage_defaults_to_the_pipelines_and_is_read_from_the_file(tmp_path):
    from pipeline.stats import DEFAULT_MIN_COVERAGE

    assert Config().stats.min_coverage == DEFAULT_MIN_COVERAGE == 0.3
    f = tmp_path / "c.yaml"
    f.write_text("stats: {min_coverage: 0.5}\n")
    assert load_config(f).stats.min_coverage == 0.5


def test_the_file_is_yaml_1_2_so_off_is_a_mode_and_still_a_boolean(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("cameras: [{camera_id: a, source: rtsp://h/a, camera_motion: off}]\n"
                 "tracking: {camera_motion: on}\nfleet: {watch_config: off}\n")
    cfg = load_config(f)
    assert (cfg.cameras[0].camera_motion, cfg.tracking.camera_motion, cfg.fleet.watch_config) == ("off", "on", False)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"pose": {"max_batch": 3}}, "unknown config key 'pose.max_batch'"),
        ({"camras": []}, "unknown config key 'camras'"),
        ({"voting": {"mask_threshold": 1.5}},
         "'voting': Value error, voting thresholds need 0 <= no_mask_threshold <= mask_threshold <= 1, got "
         "no_mask_threshold=0.3, mask_threshold=1.5"),
        ({"voting": {"mask_threshold": 0.2, "no_mask_threshold": 0.6}}, "no_mask_threshold=0.6, mask_threshold=0.2"),
        ({"faces": {"gate_min_scor": 0.5}}, "unknown config key 'faces.gate_min_scor'"),
        ({"tracking": {"hit_counter_max": 0}}, "tracking hit_counter_max must be in [1, inf], got 0"),
        ({"cameras": [{"camera_id": "a", "source": "x", "pose_input_px": 650}]}, "multiple of 32, got 650"),
        ({"cameras": [{"camera_id": "a", "source": "x"}, {"camera_id": "a", "source": "y"}]}, "appears twice"),
        ({"tracking": {"distance": "iou"}}, "'tracking.distance'"),
        ({"cameras": [{"camera_id": "a", "source": "x", "district": ""}]}, "'cameras.0.district'"),
        ({"cameras": [{"camera_id": "a", "source": "x", "district": "  "}]}, "'cameras.0.district'"),
        ({"stats": {"min_coverage": 1.5}}, "'stats.min_coverage': Input should be less than or equal to 1, got 1.5"),
        ({"stats": {"min_coverage": -0.1}}, "'stats.min_coverage': Input should be greater than or equal to 0"),
        ({"stats": {"min_covrage": 0.5}}, "unknown config key 'stats.min_covrage'"),
    ],
)
def test_invalid_config_names_the_key_expected_and_actual(data, message):
    with pytest.raises(ConfigError) as err:
        parse_config(data, "cfg.yaml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


@pytest.mark.parametrize(("wh", "px"), [((640, 360), 640), ((768, 576), 1280), ((1920, 1080), 1280)])
def test_default_pose_input_size_by_resolution(wh, px):
    assert default_pose_input_px(wh) == px


def test_relative_file_source_is_made_absolute_for_the_cluster(tmp_path, monkeypatch):
    # On a Ray cluster the camera shard does not share the driver's working directory.
    from cluster.driver import resolve_cameras
    from pipeline.config import CameraConfig, Config
    from tests.conftest import shared_video

    video = shared_video("single_masked.mp4")
    monkeypatch.chdir(video.parent)
    cfg = Config(cameras=[CameraConfig(camera_id="cam", source=video.name)])
    (spec,) = resolve_cameras(cfg)
    assert spec.source == str(video.resolve())


def test_overrides_set_dotted_keys_and_name_a_bad_one():
    from pipeline.config import apply_overrides

    cfg = parse_config(apply_overrides({}, ["voting.min_votes=2", "faces.gate_min_score=0.15", "pose.oks_nms=1"]))
    assert (cfg.voting.min_votes, cfg.faces.gate_min_score, cfg.pose.oks_nms) == (2, 0.15, 1.0)
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["voting.min_votes"])
    with pytest.raises(ConfigError, match="min_votes"):
        parse_config(apply_overrides({}, ["voting.min_votes=zero"]))


def test_run_keeps_what_the_file_set_to_null_and_the_password(tmp_path):
    from maskwatch.cli import run_config

    path = tmp_path / "c.yaml"
    path.write_text("faces: {gate_model_path: null}\nray: {metrics_export_port: null}\n"
                    "kafka: {security_protocol: SASL_SSL, sasl_mechanism: PLAIN, sasl_username: u,\n"
                    "        sasl_password: s3cret}\n")
    cfg = run_config(str(path), ("a.mp4", "b.mp4"), ("cam-a", "cam-b"), "broker:9092", None, 5.0)
    assert cfg.faces.gate_model_path is None  # the gate stays off
    assert cfg.ray.metrics_export_port is None
    assert cfg.kafka.sasl_password.get_secret_value() == "s3cret"  # not asterisks
    assert (cfg.kafka.bootstrap_servers, [c.camera_id for c in cfg.cameras], cfg.cameras[0].target_fps) == (
        "broker:9092", ["cam-a", "cam-b"], 5.0)
    with pytest.raises(ConfigError, match="--camera-id given 1 time"):
        run_config(None, ("a.mp4", "b.mp4"), ("cam-a",))


def test_a_key_that_moved_is_named_with_its_new_place():
    from pipeline.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"unknown config key 'classify.face_detector_path' \(it is "
                                          r"'faces.gate_model_path' now\)"):
        parse_config({"classify": {"face_detector_path": None}})
    cfg = parse_config({"faces": {"gate_model_path": None, "gate_input_px": 160}})
    assert (cfg.faces.gate_model_path, cfg.faces.gate_input_px) == (None, 160)
    with pytest.raises(ConfigError, match=r"gate_input_px must be a multiple of 32 in \[32, 640\], got 100"):
        parse_config({"faces": {"gate_input_px": 100}})
