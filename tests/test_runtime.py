"""Where the models run: ONNX Runtime's CPU provider, OpenVINO, and the choice between them (pipeline.runtime)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import runtime
from pipeline.onnx_models import MaskClassifier, PoseModel, reference_images
from pipeline.runtime import choose_runtime, open_runner, ort_options
from schemas.errors import ModelError
from tests.conftest import pose_model

CLASSIFIER = "maskwatch/assets/mask_classifier.onnx"
needs_openvino = pytest.mark.skipif(not runtime.openvino_present(), reason="needs the openvino package")


def test_sessions_get_the_threads_asked_for_without_spinning():
    opts = ort_options(2)
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (2, 1)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert ort_options(0).intra_op_num_threads == 0  # ONNX Runtime's own default


def test_a_pool_takes_the_threads_it_is_given():
    from pipeline.config import ClassifyConfig, PoseConfig

    # An actor's sessions: one thread per CPU Ray gives it (at least one), unless threads says otherwise.
    assert PoseConfig().session_threads == 1
    assert PoseConfig(num_cpus=2).session_threads == 2
    assert ClassifyConfig(threads=None).session_threads == 1  # num_cpus 0.5: one thread at least
    assert PoseConfig(num_cpus=2, threads=3).session_threads == 3
    assert PoseConfig(threads=0).session_threads == 0  # the runtime's own default
    # In the calling process, with no actor beside it: the runtime's default unless threads is set.
    assert PoseConfig().in_process_threads == 0
    assert PoseConfig(threads=1).in_process_threads == 1


def test_a_runtime_that_is_not_there_is_refused_by_name(monkeypatch):
    from pipeline.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"pose\.device"):
        parse_config({"pose": {"device": "gpu"}})
    with pytest.raises(ModelError, match="device must be one of"):
        open_runner(__import__("pathlib").Path(CLASSIFIER), "mask classifier", "tpu", 1, "fp32")
    if not runtime.cuda_present():
        with pytest.raises(ModelError, match="CUDAExecutionProvider did not attach"):
            MaskClassifier(CLASSIFIER, device="cuda", threads=1)
    monkeypatch.setattr(runtime, "openvino_present", lambda: False)
    assert runtime.candidates("auto")[0] == "cpu"
    assert "openvino" not in runtime.candidates("auto")


def test_a_runtime_whose_output_differs_from_the_reference_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKWATCH_CACHE_DIR", str(tmp_path))
    clf = MaskClassifier(CLASSIFIER, device="cpu", threads=1)
    crops = reference_images(4, clf.input_px, clf.input_px)
    expected = clf.predict_scores(crops)

    def reference(r):
        return [r.run(["mask_score"], {clf.input_name: crops})[0]]

    runner, choice = choose_runtime(clf.path, "mask classifier", "cpu", 1, "fp32", reference, [expected[:, 0]])
    assert (runner.runtime, choice.runtime, choice.rejected) == ("cpu", "cpu", {})
    with pytest.raises(ModelError, match=r"mask classifier: no runtime of \['cpu'\].*largest difference 0\.5"):
        choose_runtime(clf.path, "mask classifier", "cpu", 1, "fp32", reference, [expected[:, 0] + 0.5])


@needs_openvino
@pytest.mark.slow
def test_openvino_runs_the_pose_model_as_onnx_runtime_does_and_auto_caches_its_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKWATCH_CACHE_DIR", str(tmp_path))
    path = pose_model()
    images = reference_images(2, 384, 640)
    cpu = PoseModel(path, device="cpu", threads=1)
    ov = PoseModel(path, device="openvino", threads=1)
    assert ov.provider == "OpenVINO CPU fp32"
    a, b = cpu.infer(images), ov.infer(images)
    assert a.shape == b.shape
    np.testing.assert_allclose(b[:, 4], a[:, 4], atol=2e-3)  # person scores
    auto = PoseModel(path, device="auto", threads=1)
    assert set(auto.choice.ms_per_call) == {"cpu", "openvino"}
    assert auto.choice.runtime == min(auto.choice.ms_per_call, key=auto.choice.ms_per_call.get)
    assert len(list((tmp_path / "runtime").glob("choice-*.json"))) == 1
    again = PoseModel(path, device="auto", threads=1)  # the cached choice: no second measurement
    assert again.choice == auto.choice
    assert again.runner.runtime == auto.choice.runtime
    # One copy of the model per actor: auto's CPU candidate is the contract-check session itself, which is kept only
    # where it runs the model.
    assert cpu.session is not None
    assert cpu.runner.session is cpu.session
    assert ov.session is None
    if auto.choice.runtime == "cpu":
        assert auto.runner.session is auto.session
    else:
        assert auto.session is None
