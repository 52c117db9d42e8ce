"""`maskwatch dashboard` over real HTTP and a real broker: the numbers of the topics, live, through restarts of the
dashboard and a broker that is down at start."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from devtools.waiting import wait_until
from pipeline.config import KafkaConfig
from pipeline.district import DistrictRollup
from pipeline.sinks import KafkaSink, Record, ensure_topics
from pipeline.stats_reader import latest_districts, latest_stats
from services.broker import free_port, start_broker, stop_broker
from services.dashboard import StatsView, serve
from tests.test_district import T0, Camera, _faces_window

REPO = Path(__file__).resolve().parents[1]


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body = r.read().decode()
        return json.loads(body) if r.headers.get_content_type() == "application/json" else body


def _wait(what: str, check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    return wait_until(check, timeout_s, what, poll_s=0.3, ignore=(OSError, urllib.error.URLError))


@contextmanager
def dashboard(cfg: KafkaConfig) -> Iterator[str]:
    port = free_port()
    stop = threading.Event()
    t = threading.Thread(target=serve, args=(cfg, "127.0.0.1", port), kwargs={"stop": stop}, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}"
    _wait("dashboard up", lambda: _get(f"{url}/healthz"))
    try:
        yield url
    finally:
        stop.set()
        t.join(10)
        assert not t.is_alive(), "dashboard did not stop"


def _publish_fleet(cfg: KafkaConfig) -> None:
    """Two districts of cameras, their camera records and the roll-up's district records, on the topics."""
    cams = [Camera("n1", "north"), Camera("n2", "north"), Camera("s1", "south")]
    recs = [cams[0].window(0, 2, 0), cams[1].window(0, 0, 18), cams[2].window(0, 1, 1),
            cams[0].window(1, 1, 0), cams[1].window(1, 0, 0), cams[2].window(1, 3, 0)]
    roll = DistrictRollup(lateness_s=0)
    districts = [d for r in recs for d in roll.add(r)] + roll.flush()
    sink = KafkaSink(cfg)
    sink.write([Record(cfg.stats_topic, r.camera_id, r.encode()) for r in recs]
               + [Record(cfg.district_stats_topic, d.district, d.encode()) for d in districts])
    sink.close()


def _matches_topics(state: dict[str, Any], cfg: KafkaConfig) -> bool:
    want_d = {k: v.to_dict() for k, v in latest_districts(cfg).items()}
    want_c = {k: v.to_dict() for k, v in latest_stats(cfg).items()}
    got_d = {d["district"]: d for d in state["districts"]}
    got_c = {c["camera_id"]: {k: v for k, v in c.items() if k != "frames_per_s"} for c in state["cameras"]}
    return bool(want_d) and got_d == want_d and got_c == want_c


def _state_matching(url: str, cfg: KafkaConfig) -> dict[str, Any] | None:
    state = _get(f"{url}/api/state")
    return state if _matches_topics(state, cfg) else None


@pytest.mark.kafka
def test_the_page_and_api_show_the_topics_live_and_again_after_a_restart(broker, tmp_path):
    cfg = KafkaConfig(bootstrap_servers=broker, decisions_topic="dash.decisions", stats_topic="dash.camera-stats",
                      district_stats_topic="dash.district-stats", outbox_path=tmp_path / "outbox.jsonl")
    ensure_topics(cfg)
    with dashboard(cfg) as url:
        page = _get(url)
        assert "<title>maskwatch</title>" in page
        assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # no external resources
        state = _get(f"{url}/api/state")
        assert (state["districts"], state["cameras"]) == ([], [])
        _publish_fleet(cfg)
        state = _wait("state of the topics", lambda: _state_matching(url, cfg))
        assert state["broker"]["state"] == "connected"
        north = next(d for d in state["districts"] if d["district"] == "north")
        assert (north["total_people"], north["total_masked"], north["cameras_total"]) == (21, 3, 2)
        # Every person of _publish_fleet had a face and was decided: full coverage, no flag.
        assert (north["total_people_with_face"], north["total_decided"], north["total_coverage"],
                north["total_low_coverage"]) == (21, 21, 1.0, False)
        n1 = next(c for c in state["cameras"] if c["camera_id"] == "n1")
        assert n1["frames_per_s"] is not None  # from its last two windows
        series = _get(f"{url}/api/series?kind=district&key=north")
        assert [p["window_start_ns"] for p in series] == [T0, T0 + 60 * 10**9]
        assert series[0]["mask_fraction"] == pytest.approx(0.1)  # 2 of 20, pooled
        assert (series[0]["coverage"], series[0]["low_coverage"]) == (1.0, False)
        with pytest.raises(urllib.error.HTTPError, match="404"):
            _get(f"{url}/api/series?kind=camera&key=nobody")
        api = _get(f"{url}/openapi.json")
        assert {"/api/state", "/api/series", "/api/events", "/healthz"} <= set(api["paths"])
        # Server-sent events: the first event is the whole state.
        with urllib.request.urlopen(f"{url}/api/events", timeout=10) as stream:
            assert stream.headers.get_content_type() == "text/event-stream"
            lines = [stream.readline().decode().strip() for _ in range(2)]
        assert lines[0] == "event: state"
        assert _matches_topics(json.loads(lines[1].removeprefix("data: ")), cfg)
    with dashboard(cfg) as url:  # restarted: rebuilt from the compacted topics, the same numbers
        _wait("state after a restart", lambda: _state_matching(url, cfg))


@pytest.mark.kafka
def test_a_broker_down_at_start_or_restarted_is_on_the_page_and_the_page_recovers(tmp_path):
    port = free_port()
    cfg = KafkaConfig(bootstrap_servers=f"127.0.0.1:{port}", decisions_topic="late.decisions",
                      stats_topic="late.camera-stats", district_stats_topic="late.district-stats",
                      outbox_path=tmp_path / "outbox.jsonl")

    def broker_state(url: str, want: str) -> dict[str, Any] | None:
        state = _get(f"{url}/api/state")
        return state if state["broker"]["state"] == want else None

    with dashboard(cfg) as url:
        down = _wait("broker unreachable shown", lambda: broker_state(url, "unreachable"))
        assert down["broker"]["bootstrap_servers"] == f"127.0.0.1:{port}"
        assert down["broker"]["error"]
        proc = start_broker(port, tmp_path / "broker.log")
        try:
            ensure_topics(cfg)
            _publish_fleet(cfg)
            before = _wait("recovered", lambda: _state_matching(url, cfg), timeout_s=60)
            assert before["broker"]["state"] == "connected"
        finally:
            stop_broker(proc.pid)
        # The broker restarts (in-memory storage: its topics come back empty). Meanwhile the page says so and keeps
        # what it showed; when the cameras and the roll-up publish again, it shows the topics again.
        down = _wait("broker loss shown", lambda: broker_state(url, "unreachable"))
        assert (down["districts"], down["cameras"]) == (before["districts"], before["cameras"])
        proc = start_broker(port, tmp_path / "broker2.log")
        try:
            _wait("reconnected", lambda: broker_state(url, "connected"), timeout_s=60)
            ensure_topics(cfg)
            _publish_fleet(cfg)
            after = _wait("recovered again", lambda: _state_matching(url, cfg), timeout_s=60)
            assert after["districts"] == before["districts"]
        finally:
            stop_broker(proc.pid)


def test_a_port_in_use_or_no_broker_is_a_one_line_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "maskwatch.cli", "dashboard", "--kafka-bootstrap", "127.0.0.1:9",
                            "--port", str(port)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(
        f"maskwatch: error: dashboard: cannot listen on 127.0.0.1:{port}")
    r = subprocess.run([sys.executable, "-m", "maskwatch.cli", "dashboard"], capture_output=True, text=True, cwd=REPO,
                       timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert r.returncode == 2
    assert r.stderr.strip() == ("maskwatch: error: maskwatch dashboard needs a broker: --kafka-bootstrap HOST:PORT, "
                                "or kafka.bootstrap_servers in --config")


def test_the_view_keeps_one_point_per_window_and_the_latest_revision():
    view = StatsView()
    cam = Camera("c", "d")
    first, second = cam.window(0, 1, 0), cam.window(1, 0, 1)
    for rec in (first, second, first, second):
        view.add_camera(rec)
    assert [p["window_start_ns"] for p in view.series("camera", "c")] == [T0, T0 + 60 * 10**9]
    assert view.state()["cameras"][0]["total_people"] == 2
    roll = DistrictRollup(lateness_s=0)
    (d0,) = roll.add(first)
    revised = dataclasses.replace(d0, revision=1, people=5)
    for rec in (d0, revised, d0):  # a re-delivered older revision changes nothing
        view.add_district(rec)
    assert [p["people"] for p in view.series("district", "d")] == [5]
    assert view.state()["districts"][0]["revision"] == 1
    with pytest.raises(KeyError):
        view.series("district", "nowhere")


def _coverage_view() -> StatsView:
    """A district "d" with a camera that decided everyone who showed a face ("lit") and one that decided 1 of 10
    ("dim": low coverage); the district pools them to 5 of 14 (not low)."""
    view, roll = StatsView(), DistrictRollup(lateness_s=0)
    lit = _faces_window(Camera("lit", "d"), 0, [("mask", 2, 40.0)] * 3 + [("no_mask", 2, 44.0)])
    dim = _faces_window(Camera("dim", "d"), 0, [("mask", 3, 14.0)] + [("undecided", 1, 12.0)] * 9)
    for rec in (lit, dim):
        view.add_camera(rec)
        for d in roll.add(rec):
            view.add_district(d)
    return view


def test_the_view_carries_coverage_and_its_flag_per_window():
    view = _coverage_view()
    state = {c["camera_id"]: c for c in view.state()["cameras"]}
    assert (state["lit"]["total_coverage"], state["lit"]["total_low_coverage"]) == (1.0, False)
    assert (state["dim"]["total_coverage"], state["dim"]["total_low_coverage"]) == (0.1, True)
    (d,) = view.state()["districts"]
    assert (d["total_decided"], d["total_people_with_face"], d["total_low_coverage"]) == (5, 14, False)
    assert [(p["coverage"], p["low_coverage"]) for p in view.series("camera", "dim")] == [(0.1, True)]


def test_the_page_shows_coverage_and_flags_a_weak_number_in_a_real_browser():
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/install-system-deps.sh)")
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from services.dashboard import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(_coverage_view()), host="127.0.0.1", port=port,
                                           log_level="warning", timeout_graceful_shutdown=2))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    driver = None
    try:
        _wait("dashboard up", lambda: _get(f"http://127.0.0.1:{port}/healthz"))
        opts = Options()
        opts.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,900"):
            opts.add_argument(arg)
        driver = webdriver.Chrome(service=Service(chromedriver), options=opts)
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 30, poll_frequency=0.2).until(
            lambda drv: len(drv.find_elements(By.CSS_SELECTOR, "#cameras tbody tr[data-key]")) == 2)

        def row(table: str, key: str) -> Any:
            return driver.find_element(By.CSS_SELECTOR, f"#{table} tbody tr[data-key='{key}']")

        def flags(tr: Any, cell: str) -> list[str]:
            return [f.text for f in tr.find_elements(By.CSS_SELECTOR, f"td.{cell} .flag")]

        lit, dim, district = row("cameras", "lit"), row("cameras", "dim"), row("districts", "d")
        assert lit.find_element(By.CSS_SELECTOR, "td.coverage").text == "100% (4 / 4)"
        assert dim.find_element(By.CSS_SELECTOR, "td.coverage").text.startswith("10% (1 / 10)")
        assert district.find_element(By.CSS_SELECTOR, "td.coverage").text == "36% (5 / 14)"
        # The flag is next to the weak number, in the totals and in the last window; the number is greyed.
        assert flags(dim, "coverage") == flags(dim, "window") == ["low coverage"]
        assert flags(lit, "coverage") == flags(district, "coverage") == []
        fraction = dim.find_element(By.CSS_SELECTOR, "td.fraction")
        assert fraction.text.startswith("100% [")
        assert "weak" in fraction.get_attribute("class").split()
        assert "weak" not in lit.find_element(By.CSS_SELECTOR, "td.fraction").get_attribute("class").split()
        headers = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#cameras thead th")]
        assert headers.index("coverage, total (decided / with a face)") == headers.index(
            "mask fraction, total [95% CI]") + 1
    finally:
        if driver is not None:
            driver.quit()
        server.should_exit = True
        t.join(10)
