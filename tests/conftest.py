"""Shared fixtures: the ../shared data, a local Kafka-protocol broker, a local Ray on loopback; and, at the end of a
run, the tests that were skipped for want of Debian packages with the one command that installs them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
VIDEOS = SHARED_DATA / "videos"


def shared_video(name: str) -> Path:
    """A video from ../shared/data/videos, or skip the test with a clear message."""
    path = VIDEOS / name
    if not path.is_file():
        pytest.skip(f"needs the shared test video {path} (../shared/data is not beside this checkout)")
    return path


def pose_model() -> Path:
    """The built pose model, or skip (run `make models`)."""
    from pipeline.paths import pose_model_path

    path = pose_model_path()
    if not path.is_file():
        pytest.skip(f"needs the pose model {path}: run `make models`")
    return path


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """A Tansu broker on 127.0.0.1 (random free port) for the test session; stopped by PID."""
    from services.broker import local_broker

    with local_broker() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """One local Ray per test module, on loopback; shut down afterwards."""
    import ray

    ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=4, include_dashboard=False,
             namespace="maskwatch-tests", logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


# `make test` runs two tiers (two pytest runs): each appends its skips to this file, printed by make at the end.
SKIP_LOG_ENV = "MASKWATCH_SKIP_LOG"


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The tests skipped because a Debian package is missing (their reason names scripts/install-system-deps.sh),
    and the one command that enables them."""
    from devtools.skip_report import HEADER, needs_system_deps, report_lines

    skipped = [(r.nodeid, _skip_reason(r)) for r in terminalreporter.stats.get("skipped", [])]
    missing = [(nodeid, reason) for nodeid, reason in skipped if needs_system_deps(reason)]
    if log := os.environ.get(SKIP_LOG_ENV):
        with open(log, "a", encoding="utf-8") as fh:
            fh.writelines(f"{nodeid}\t{reason}\n" for nodeid, reason in missing)
        return
    if lines := report_lines(missing):
        terminalreporter.section(HEADER, sep="=", yellow=True, bold=True)
        for line in lines:
            terminalreporter.line(line)
