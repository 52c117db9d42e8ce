import time

import numpy as np
import pytest

from pipeline.config import CaptureConfig
from pipeline.source import FrameSampler, frame_to_bgr, is_live, open_capture, probe, read_frames
from schemas.errors import SourceError
from tests.conftest import shared_video

PYAV = CaptureConfig(decoder="pyav")
PYAV_CUDA = CaptureConfig(decoder="pyav", hwaccel="cuda")


def test_sampler_keeps_target_rate():
    s = FrameSampler(10.0)
    kept = [i for i in range(90) if s.keep(int(i * 1e9 / 30))]  # 3 s of 30 fps
    assert len(kept) == 30
    assert kept[:4] == [0, 3, 6, 9]
    assert all(FrameSampler(None).keep(i) for i in range(5))


def test_reads_real_video_sampled_with_increasing_index_and_pts():
    path = shared_video("street_5_masked.mp4")
    frames = list(read_frames(str(path), "street", target_fps=10))
    assert 110 <= len(frames) <= 120  # 11.6 s at 10 fps
    idx = [f.frame_idx for f in frames]
    pts = [f.pts_ns for f in frames]
    assert idx == sorted(idx)
    assert pts == sorted(pts)
    assert idx[1] - idx[0] == 3
    assert frames[0].image.shape == (360, 640, 3)
    assert frames[0].image.dtype == np.uint8
    assert probe(str(path), "street")[:2] == (640, 360)


def test_missing_file_and_unreachable_stream_give_one_line_errors(tmp_path):
    with pytest.raises(SourceError, match=r"camera 'c1': source file not found: .*nope\.mp4"):
        probe(str(tmp_path / "nope.mp4"), "c1")
    with pytest.raises(SourceError, match=r"camera 'c2': cannot open rtsp://127\.0\.0\.1:9/live"):
        probe("rtsp://127.0.0.1:9/live", "c2", CaptureConfig(open_timeout_s=2))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(SourceError, match=r"junk\.mp4"):
        probe(str(junk), "c3")
    assert is_live("rtsp://x/y")
    assert not is_live(str(junk))


@pytest.mark.parametrize("decoder", ["opencv", "pyav"])
def test_truncated_file_yields_the_frames_before_the_damage(tmp_path, decoder):
    src = shared_video("single_unmasked.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(src[: len(src) * 2 // 3])  # moov atom may be at the end: then open fails cleanly
    try:
        frames = list(read_frames(str(cut), "cut", capture=CaptureConfig(decoder=decoder)))
    except SourceError as exc:
        error = str(exc)
        frames = []
    else:
        error = ""
    assert frames or "cut.mp4" in error, "a truncated file must yield frames or a clear error naming it"


def test_decode_cpu_counts_the_frames_the_sampler_skipped():
    """A live camera decodes every frame of its stream; the CPU of the frames it does not keep belongs to the ones it
    keeps (``Frame.decode_cpu_s``), so CPU per processed frame by stage adds up (``bench/fleet.py``)."""
    path = str(shared_video("street_5_masked.mp4"))  # 30 fps
    every = list(read_frames(path, "street"))
    sampled = list(read_frames(path, "street", target_fps=5))
    assert all(f.decode_cpu_s > 0 for f in every[1:])
    # Both decoded every frame of the file: the totals are of one size, not 6x apart.
    total_every, total_sampled = sum(f.decode_cpu_s for f in every), sum(f.decode_cpu_s for f in sampled)
    assert total_sampled > 0.5 * total_every, (total_sampled, total_every)
    assert total_sampled / len(sampled) > 3 * total_every / len(every)

    # One decoding thread per camera (capture.decoder_threads, default 1): the reading thread does all the decoding,
    # so what the frames carry is the process's whole CPU for the file, not a part of it.
    t0 = time.process_time()
    total = sum(f.decode_cpu_s for f in read_frames(path, "street", capture=CaptureConfig(decoder_threads=1)))
    assert total > 0.8 * (time.process_time() - t0)


def test_pyav_reads_the_frames_opencv_reads():
    """``capture.decoder: pyav`` is the same camera to every later stage: same frames, indices and timestamps;
    pixels differ only by the YUV-to-BGR conversion's rounding."""
    path = str(shared_video("street_5_masked.mp4"))
    cv_frames = list(read_frames(path, "street", target_fps=10))
    av_frames = list(read_frames(path, "street", target_fps=10, capture=PYAV))
    assert [f.frame_idx for f in av_frames] == [f.frame_idx for f in cv_frames]
    # OpenCV's position is a float of ms: it can be 1 ns off the exact pts x time_base.
    assert max(abs(a.pts_ns - b.pts_ns) for a, b in zip(av_frames, cv_frames, strict=True)) <= 1_000
    assert av_frames[0].image.shape == cv_frames[0].image.shape == (360, 640, 3)
    diff = max(float(np.abs(a.image.astype(np.int16) - b.image.astype(np.int16)).mean())
               for a, b in zip(av_frames, cv_frames, strict=True))
    assert diff < 3.0, diff
    assert all(f.decode_cpu_s > 0 for f in av_frames[1:])


def test_gpu_decoding_falls_back_to_the_cpu_and_says_so(caplog):
    """``hwaccel: cuda`` on a node whose GPU does not answer (CI has none) still reads every frame, on the CPU, and
    warns naming the camera; on a GPU node the frames come from NVDEC and nothing is logged."""
    path = str(shared_video("single_masked.mp4"))
    caplog.set_level("INFO", logger="pipeline.source")
    cap = open_capture(path, "cam-7", PYAV_CUDA)
    try:
        on = cap.decodes_on
    finally:
        cap.release()
    cpu = list(read_frames(path, "cam-7", capture=PYAV))
    gpu = list(read_frames(path, "cam-7", capture=PYAV_CUDA))
    assert len(gpu) == len(cpu) > 0
    assert [f.pts_ns for f in gpu] == [f.pts_ns for f in cpu]
    fell_back = [r for r in caplog.records if "no CUDA decoding" in r.getMessage()]
    if on == "cpu":
        assert fell_back, "the fallback to the CPU must be logged"
        assert "cam-7" in fell_back[0].getMessage()
        assert fell_back[0].levelname == "WARNING"
        assert all(np.array_equal(a.image, b.image) for a, b in zip(gpu, cpu, strict=True))
    else:
        assert on == "cuda"
        assert not fell_back
    # auto falls back quietly (info), for fleets that mix CPU and GPU nodes under one config.
    caplog.clear()
    list(read_frames(path, "cam-8", target_fps=1, capture=CaptureConfig(decoder="pyav", hwaccel="auto")))
    assert all(r.levelname != "WARNING" for r in caplog.records if "cam-8" in r.getMessage())


def test_hwaccel_without_pyav_and_unknown_decoders_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"capture.hwaccel 'cuda' needs capture.decoder 'pyav', got decoder 'opencv'"):
        CaptureConfig(hwaccel="cuda")
    with pytest.raises(ValueError, match=r"decoder\n  Input should be 'opencv' or 'pyav'"):
        CaptureConfig(decoder="gst")
    with pytest.raises(SourceError, match=r"camera 'c4': source file not found: .*nope\.mp4"):
        open_capture(str(tmp_path / "nope.mp4"), "c4", PYAV)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(SourceError, match=r"camera 'c5': cannot open .*junk\.mp4 \(not a readable video file"):
        open_capture(str(junk), "c5", PYAV)
    with pytest.raises(SourceError, match=r"camera 'c6': cannot open rtsp://127\.0\.0\.1:9/live"):
        open_capture("rtsp://127.0.0.1:9/live", "c6", CaptureConfig(open_timeout_s=2, decoder="pyav"))


def test_nvdec_frames_convert_to_the_colours_the_cpu_decoder_gives():
    """NVDEC hands frames over as NV12; they are converted by OpenCV, not swscale, and must come out as the same
    picture as the CPU decoder's YUV 4:2:0 frames (within the two conversions' rounding)."""
    import av

    with av.open(str(shared_video("towncentre_cctv_4s.mp4"))) as container:
        frame = next(container.decode(video=0))
    yuv = frame_to_bgr(frame)
    nv12 = frame_to_bgr(frame.reformat(format="nv12"))
    assert nv12.shape == yuv.shape == (1080, 1920, 3)
    assert nv12.dtype == np.uint8
    assert float(np.abs(nv12.astype(np.int16) - yuv.astype(np.int16)).mean()) < 2.0


def test_pyav_missing_is_a_clear_error(monkeypatch):
    """PyAV is an extra (its wheels bundle GPL codecs): without it, the pyav decoder names the package to install."""
    import sys

    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    path = str(shared_video("single_masked.mp4"))
    with pytest.raises(SourceError, match=r"'c9': capture.decoder 'pyav' needs PyAV: pip install 'maskwatch\[nvdec\]'"):
        open_capture(path, "c9", PYAV)
    cap = open_capture(path, "c9")  # OpenCV, the default, does not need it
    try:
        assert cap.read() is not None
    finally:
        cap.release()
