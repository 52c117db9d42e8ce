"""What an operator sees of a run: Ray's metrics endpoint scraped by Debian's Prometheus (the Grafana dashboard's
queries run against it), and the dashboard page in Debian's chromium, its numbers those of the topics.

One scenario: a broker, two live RTSP cameras in two districts through `maskwatch run` (a subprocess, as a user starts
it), the district roll-up and the dashboard; Prometheus scrapes the run's metrics port; the run is stopped by SIGINT;
chromium loads the page and waits until it shows the final numbers of the topics. A screenshot is saved
(``MASKWATCH_SCREENSHOT=docs/dashboard.png`` also writes it there: docs/operations.md shows that file).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.procs import stop_all
from devtools.rtsp_server import RtspServer
from devtools.waiting import wait_until
from pipeline.config import KafkaConfig
from pipeline.stats_reader import latest_districts, latest_stats
from services.broker import free_port
from services.dashboard import serve
from services.grafana import panels
from services.rollup import run_rollup
from tests.conftest import pose_model, shared_video

pytestmark = [pytest.mark.ray, pytest.mark.kafka, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
# street_5: five masked people walk past every 11.6 s (the server loops it), so people are decided while it runs.
CAMERAS = {"north-street": ("street_5_masked.mp4", "north"), "south-street": ("street_5_masked.mp4", "south")}


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"needs Debian's {binary} (scripts/install-system-deps.sh)")
    return path


def _prom_query(port: int, expr: str) -> dict[str, Any]:
    """Prometheus' answer to an instant query (its JSON error body for a query it rejects). Grafana's
    ``$__rate_interval`` is replaced by 1m, as Grafana replaces it before querying."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode(
        {"query": expr.replace("$__rate_interval", "1m")})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"{}") | {"http_status": exc.code}


def _wait(what: str, check: Any, timeout_s: float) -> Any:
    return wait_until(check, timeout_s, what, poll_s=0.5, ignore=(OSError,))  # OSError: Prometheus not up yet


def _page_rows(driver: Any, table: str) -> dict[str, dict[str, str]]:
    """The rows of one table of the page: key -> {cell class (the last of its classes): text}."""
    from selenium.webdriver.common.by import By

    out = {}
    for tr in driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr[data-key]"):
        cells = {td.get_attribute("class").split()[-1]: td.text for td in tr.find_elements(By.TAG_NAME, "td")}
        out[tr.get_attribute("data-key")] = cells
    return out


def _same_percent(cell: str, v: float | None) -> bool:
    """Does a page cell such as "83% [44%, 97%]" start with the fraction ``v`` (rounded either way at .5)?"""
    if v is None:
        return cell == "–"
    return cell.split("%")[0].isdigit() and abs(int(cell.split("%")[0]) - 100 * v) <= 0.5 + 1e-9


def test_operators_see_the_run_in_prometheus_and_in_a_real_browser(broker: str, tmp_path: Path) -> None:
    prometheus, chromium, chromedriver = _need("prometheus"), _need("chromium"), _need("chromedriver")
    pose_model()
    kafka = KafkaConfig(bootstrap_servers=broker, decisions_topic="ops.decisions", stats_topic="ops.camera-stats",
                        district_stats_topic="ops.district-stats", outbox_path=tmp_path / "rollup-outbox.jsonl")
    servers = {cid: RtspServer(shared_video(video), free_port(), tmp_path / f"{cid}.log")
               for cid, (video, _) in CAMERAS.items()}
    metrics_port, prom_port, dash_port = free_port(), free_port(), free_port()
    config = {
        "cameras": [{"camera_id": cid, "source": servers[cid].url, "target_fps": 5, "district": district}
                    for cid, (_, district) in CAMERAS.items()],
        "stats": {"window_s": 5},
        "kafka": {"bootstrap_servers": broker, "decisions_topic": kafka.decisions_topic,
                  "stats_topic": kafka.stats_topic, "district_stats_topic": kafka.district_stats_topic,
                  "outbox_path": str(tmp_path / "run-outbox.jsonl")},
        "ray": {"metrics_export_port": metrics_port},
    }
    (tmp_path / "maskwatch.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "maskwatch", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }))
    stop = threading.Event()
    threads = [threading.Thread(target=run_rollup, args=(kafka, 1.0, stop), daemon=True),
               threading.Thread(target=serve, args=(kafka, "127.0.0.1", dash_port), kwargs={"stop": stop},
                                daemon=True)]
    procs: list[subprocess.Popen[bytes]] = []
    driver = None
    try:
        for s in servers.values():
            s.start()
        for t in threads:
            t.start()
        with (tmp_path / "run.err").open("w") as run_err:
            run = subprocess.Popen([sys.executable, "-m", "maskwatch.cli", "run", "--config",
                                    str(tmp_path / "maskwatch.yaml")], cwd=REPO, stdout=subprocess.DEVNULL,
                                   stderr=run_err, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        procs.append(run)
        with (tmp_path / "prometheus.log").open("w") as prom_log:
            prom = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                     f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                     f"--web.listen-address=127.0.0.1:{prom_port}"],
                                    stdout=subprocess.DEVNULL, stderr=prom_log)
        procs.append(prom)

        # Prometheus reads a maskwatch series back from the run's metrics endpoint.
        series = _wait("ray_maskwatch_capture_frames_processed in Prometheus", lambda: [
            r for r in _prom_query(prom_port, "ray_maskwatch_capture_frames_processed > 0")["data"]["result"]
            if r["metric"].get("camera_id") in CAMERAS], timeout_s=150)
        assert run.poll() is None, (tmp_path / "run.err").read_text()[-3000:]
        # Wait until both districts have decided people, then check every Grafana panel's query runs there.
        _wait("people decided in both districts", lambda: len({r["metric"]["district"] for r in _prom_query(
            prom_port, 'sum by (district) (ray_maskwatch_camera_people{decision="mask"}) > 0')[
            "data"]["result"]}) == 2, timeout_s=120)
        for title, _, queries in panels():
            for expr, _ in queries:
                answer = _prom_query(prom_port, expr)
                assert answer["status"] == "success", (title, expr, answer)
        fraction = _prom_query(prom_port, panels()[0][2][0][0])["data"]["result"]
        assert {r["metric"]["district"] for r in fraction} == {"north", "south"}
        print("Prometheus:", [(r["metric"]["camera_id"], r["value"][1]) for r in series])

        # The run stops as a user stops it; the cameras' final records close the districts' windows.
        os.kill(run.pid, signal.SIGINT)
        assert run.wait(timeout=60) == 0, (tmp_path / "run.err").read_text()[-3000:]

        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.support.ui import WebDriverWait

        opts = Options()
        opts.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,900"):
            opts.add_argument(arg)
        driver = webdriver.Chrome(service=Service(chromedriver), options=opts)
        driver.get(f"http://127.0.0.1:{dash_port}/")

        def page_matches_topics(drv: Any) -> bool:
            districts, cameras = latest_districts(kafka), latest_stats(kafka)
            page_d, page_c = _page_rows(drv, "districts"), _page_rows(drv, "cameras")
            if set(page_d) != {"north", "south"} or set(page_c) != set(CAMERAS):
                return False
            if not all(c.final for c in cameras.values()):
                return False
            for name, d in districts.items():
                row = page_d[name]
                if (row["people"], row["masked"], row["unmasked"]) != (
                        str(d.total_people), str(d.total_masked), str(d.total_unmasked)):
                    return False
                if not _same_percent(row["fraction"], d.total_mask_fraction):
                    return False
                # Coverage next to it, "83% (5 / 6)", flagged "low coverage" when the record says so.
                if not _same_percent(row["coverage"].split(" (")[0], d.total_coverage):
                    return False
                if ("low coverage" in row["coverage"]) != d.total_low_coverage:
                    return False
            for cid, c in cameras.items():
                row = page_c[cid]
                if (row["people"], row["state"], row["district"]) != (str(c.total_people), c.camera_state,
                                                                    c.district):
                    return False
                if ("low coverage" in row["coverage"]) != c.total_low_coverage:
                    return False
            return True

        WebDriverWait(driver, 60, poll_frequency=0.5).until(page_matches_topics)
        north, south = latest_districts(kafka)["north"], latest_districts(kafka)["south"]
        cams = latest_stats(kafka)
        assert north.total_people == cams["north-street"].total_people > 0
        assert south.total_people == cams["south-street"].total_people > 0
        assert north.total_masked > 0  # street_5: five masked people
        assert south.total_masked > 0
        plots = driver.find_elements("css selector", "#districts svg.plot")
        assert len(plots) == 2
        assert all(int(p.get_attribute("data-points")) >= 1 for p in plots)
        shot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if target := os.environ.get("MASKWATCH_SCREENSHOT"):
            shutil.copyfile(shot, target)
    finally:
        if driver is not None:
            driver.quit()
        stop_all(procs)
        stop.set()
        for t in threads:
            t.join(timeout=15)
        for s in servers.values():
            s.stop()
