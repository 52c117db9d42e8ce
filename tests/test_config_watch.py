"""The config file watcher and the reconcile plan: what the running fleet sees when its file changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devtools.waiting import wait_until
from pipeline.config import load_config, parse_config
from pipeline.config_watch import ConfigUpdate, ConfigWatcher
from pipeline.reconcile import NodeRoom, diff_config, pick_node, pick_pipeline

ONE = "cameras:\n  - {camera_id: a, source: rtsp://h/a}\n"
TWO = ONE + "  - {camera_id: b, source: rtsp://h/b}\n"
# A change made while the watch is still being set up has no event; the periodic re-read catches it.
POLL_S = 2.0


def _next(watcher: ConfigWatcher, timeout_s: float = 10.0) -> ConfigUpdate:
    got: list[ConfigUpdate] = []
    wait_until(lambda: got.extend(watcher.updates()) or got, timeout_s, "the watcher to report a change", poll_s=0.05)
    assert len(got) == 1, got
    return got[0]


@pytest.fixture
def watched(tmp_path: Path):
    path = tmp_path / "maskwatch.yaml"
    path.write_text(ONE)
    watcher = ConfigWatcher(path, lambda: load_config(path), poll_s=POLL_S).start()
    yield path, watcher
    watcher.stop()


def test_a_file_rewritten_in_place_is_reported_once_with_its_cameras(watched):
    path, watcher = watched
    path.write_text(TWO)
    update = _next(watcher)
    assert [c.camera_id for c in update.config.cameras] == ["a", "b"]
    path.write_text(TWO)  # same bytes: a touch is no change
    assert watcher.check() is None
    assert watcher.updates() == []


def test_a_file_replaced_by_a_rename_is_reported(watched):
    path, watcher = watched
    tmp = path.with_name(".maskwatch.yaml.swp")
    tmp.write_text(TWO)
    os.replace(tmp, path)  # how editors and `maskwatch cameras add` save
    assert [c.camera_id for c in _next(watcher).config.cameras] == ["a", "b"]


def test_a_kubernetes_configmap_symlink_swap_is_reported(tmp_path: Path):
    """A mounted ConfigMap: ``maskwatch.yaml -> ..data/maskwatch.yaml``, ``..data -> ..2026_01``; the kubelet writes
    a new timestamped directory and renames a new ``..data`` link over the old one (atomic_writer.go)."""
    mount = tmp_path / "config"
    (mount / "..2026_01").mkdir(parents=True)
    (mount / "..2026_01" / "maskwatch.yaml").write_text(ONE)
    (mount / "..data").symlink_to("..2026_01")
    (mount / "maskwatch.yaml").symlink_to("..data/maskwatch.yaml")
    path = mount / "maskwatch.yaml"
    watcher = ConfigWatcher(path, lambda: load_config(path), poll_s=POLL_S).start()
    try:
        (mount / "..2026_02").mkdir()
        (mount / "..2026_02" / "maskwatch.yaml").write_text(TWO)
        (mount / "..data_tmp").symlink_to("..2026_02")
        os.replace(mount / "..data_tmp", mount / "..data")
        assert [c.camera_id for c in _next(watcher).config.cameras] == ["a", "b"]
    finally:
        watcher.stop()


def test_an_invalid_file_is_reported_as_one_line_naming_the_key(watched):
    path, watcher = watched
    path.write_text(ONE + "pose: {thread: 2}\n")
    update = _next(watcher)
    assert update.config is None
    assert "unknown config key 'pose.thread'" in update.error
    assert "\n" not in update.error


def test_the_plan_starts_stops_and_restarts_only_the_cameras_that_changed():
    running = parse_config({"cameras": [{"camera_id": "a", "source": "rtsp://h/a"},
                                        {"camera_id": "b", "source": "rtsp://h/b", "target_fps": 5}]})
    new = parse_config({"cameras": [{"camera_id": "b", "source": "rtsp://h/b", "target_fps": 2},
                                    {"camera_id": "c", "source": "rtsp://h/c"}],
                        "pose": {"threads": 2}, "fleet": {"watch_poll_s": 1}})
    change = diff_config(running, new)
    assert [c.camera_id for c in change.added] == ["c"]
    assert change.removed == ["a"]
    assert [(c.camera_id, c.target_fps) for c in change.changed] == [("b", 2.0)]
    assert change.needs_restart == ["pose.threads"]  # shared by every camera: not applied live
    assert change.describe() == ("added ['c'], removed ['a'], changed ['b']; not applied until the run restarts: "
                                 "pose.threads")
    assert not diff_config(running, running)


def test_a_new_camera_joins_the_pipeline_with_the_most_room_and_a_new_pipeline_the_emptiest_node():
    assert pick_pipeline({0: 3, 1: 5, 2: 5}) == 1
    assert pick_pipeline({0: 0, 1: 0}) is None
    assert pick_pipeline({}) is None
    bundle = {"CPU": 2.0, "GPU": 1.0}
    nodes = [NodeRoom("n1", {"CPU": 8.0, "GPU": 1.0}, pipelines=1), NodeRoom("n2", {"CPU": 4.0, "GPU": 1.0}),
             NodeRoom("n3", {"CPU": 16.0})]
    assert pick_node(nodes, bundle) == "n2"  # fewest pipelines among the nodes that hold the bundle
    assert pick_node([NodeRoom("n1", {"CPU": 2.0, "GPU": 1.0}), NodeRoom("n2", {"CPU": 3.0, "GPU": 1.0})],
                     bundle) == "n2"  # then the most free CPUs
    assert pick_node([NodeRoom("n3", {"CPU": 16.0})], bundle) is None  # none holds it: resource demand


def test_cameras_add_and_remove_edit_the_file_keeping_comments_and_refuse_a_bad_result(tmp_path: Path):
    from click.testing import CliRunner

    from maskwatch.cli import main

    path = tmp_path / "maskwatch.yaml"
    path.write_text("# district 7's cameras\n" + ONE + "stats: {window_s: 10}  # short windows\n")
    runner = CliRunner()
    added = runner.invoke(main, ["cameras", "add", "b", "rtsp://h/b", "--target-fps", "5", "--config", str(path),
                                 "--no-wait"])
    assert added.exit_code == 0, added.output
    text = path.read_text()
    assert "# district 7's cameras" in text
    assert "# short windows" in text
    assert [(c.camera_id, c.target_fps) for c in load_config(path).cameras] == [("a", 10.0), ("b", 5.0)]
    again = runner.invoke(main, ["cameras", "add", "b", "rtsp://h/b2", "--config", str(path), "--no-wait"])
    assert again.exit_code == 2
    assert "camera_id 'b' is already in cameras" in again.output
    bad = runner.invoke(main, ["cameras", "add", "c d", "rtsp://h/c", "--config", str(path), "--no-wait"])
    assert bad.exit_code == 2
    assert "'cameras.2.camera_id'" in bad.output  # validated before the file is touched
    assert path.read_text() == text
    wrong_key = runner.invoke(main, ["cameras", "add", "c", "rtsp://h/c", "--set", "pose_input=640", "--config",
                                     str(path), "--no-wait"])
    assert wrong_key.exit_code == 2
    assert "'cameras.2.pose_input'" in wrong_key.output
    assert path.read_text() == text
    with_set = runner.invoke(main, ["cameras", "add", "c", "rtsp://h/c", "--set", "pose_input_px=640", "--set",
                                    "camera_motion=off", "--config", str(path), "--no-wait"])
    assert with_set.exit_code == 0, with_set.output
    (c,) = [c for c in load_config(path).cameras if c.camera_id == "c"]
    assert (c.pose_input_px, c.camera_motion) == (640, "off")
    runner.invoke(main, ["cameras", "remove", "c", "--config", str(path), "--no-wait"])
    removed = runner.invoke(main, ["cameras", "remove", "a", "--config", str(path), "--no-wait"])
    assert removed.exit_code == 0, removed.output
    assert [c.camera_id for c in load_config(path).cameras] == ["b"]
    missing = runner.invoke(main, ["cameras", "remove", "a", "--config", str(path), "--no-wait"])
    assert missing.exit_code == 2
    assert "no camera 'a' in cameras (it has ['b'])" in missing.output
