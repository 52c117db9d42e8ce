"""``maskwatch dashboard``: one live page of the statistics topics, per district and per camera, and its JSON API.

A background thread follows the camera and district statistics topics (partition assignment from the beginning, no
consumer group) into a :class:`StatsView`; a FastAPI app (served by uvicorn) shows it: ``/`` the page, ``/api/state``
the latest record per district and camera, ``/api/series`` the window series of one district or camera,
``/api/events`` server-sent events (a new state each time a record arrives), ``/openapi.json`` the API's schema.
The page and the API never show or keep a face crop: only the statistics topics are read.

A broker that is down, at start or later, is shown on the page ("broker unreachable: ...") while the follower keeps
retrying with capped backoff; what was read before stays on the page, and it carries on when the broker is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.messages import CameraStats, DistrictStats
from services.broker import check_port_free

logger = logging.getLogger(__name__)

SERIES_POINTS = 1440
"""Windows kept per district and per camera for the plots (a day of 60-s windows)."""
PAGE = Path(__file__).with_name("dashboard.html")


@dataclass
class BrokerStatus:
    """Whether the follower reads the broker: ``connected`` (records flow), ``connecting`` or ``unreachable``."""

    state: str = "connecting"
    bootstrap_servers: str = ""
    error: str | None = None
    since_ns: int = field(default_factory=time.time_ns)


class StatsView:
    """The latest statistics per district and camera and their window series; thread-safe (a lock per call).

    Records are idempotent: a camera keeps one point per window (the latest record of it), a district one per window
    (the highest revision), so re-deliveries and replays after a restart change nothing.
    """

    def __init__(self, points: int = SERIES_POINTS) -> None:
        self._lock = threading.Lock()
        self._points = points
        self.cameras: dict[str, CameraStats] = {}
        self.districts: dict[str, DistrictStats] = {}
        self._camera_series: dict[str, dict[int, CameraStats]] = {}
        self._district_series: dict[str, dict[int, DistrictStats]] = {}
        self._fps: dict[str, float | None] = {}
        self.broker = BrokerStatus()
        self.version = 0
        self.updated_ns: int | None = None

    def _bump(self) -> None:
        self.version += 1

    def set_broker(self, state: str, bootstrap_servers: str, error: str | None = None) -> None:
        """Record the follower's connection state (a change is a new version of the state)."""
        with self._lock:
            if (state, error) != (self.broker.state, self.broker.error):
                self.broker = BrokerStatus(state, bootstrap_servers, error)
                self._bump()

    def add_camera(self, rec: CameraStats) -> None:
        """Take one camera statistics record."""
        with self._lock:
            series = self._add(self._camera_series, self.cameras, rec.camera_id, rec)
            if series is not None and self.cameras[rec.camera_id] is rec:
                self._fps[rec.camera_id] = _fps(list(series.values()))

    def add_district(self, rec: DistrictStats) -> None:
        """Take one district statistics record."""
        with self._lock:
            self._add(self._district_series, self.districts, rec.district, rec)

    def _add(self, series_of: dict[str, dict[int, Any]], latest: dict[str, Any], key: str, rec: Any) -> Any:
        """Put ``rec`` in its key's series (unless that window already holds a record as far on) and, if it went
        furthest, as the key's latest; returns the series, or None when ``rec`` changed nothing. Holds the lock."""
        series = series_of.setdefault(key, {})
        prev = series.get(rec.window_start_ns)
        if prev is not None and prev.progress >= rec.progress:
            return None
        series[rec.window_start_ns] = rec
        _trim(series, self._points)
        cur = latest.get(key)
        if cur is None or rec.progress >= cur.progress:
            latest[key] = rec
        self.updated_ns = time.time_ns()
        self._bump()
        return series

    def state(self) -> dict[str, Any]:
        """What ``/api/state`` returns: broker status, the latest record per district and per camera (with the
        camera's frames/s over its last two windows), sorted by name."""
        with self._lock:
            return {
                "version": self.version,
                "updated_ns": self.updated_ns,
                "broker": {"state": self.broker.state, "bootstrap_servers": self.broker.bootstrap_servers,
                           "error": self.broker.error, "since_ns": self.broker.since_ns},
                "districts": [self.districts[k].to_dict() for k in sorted(self.districts)],
                "cameras": [self.cameras[k].to_dict() | {"frames_per_s": self._fps.get(k)}
                            for k in sorted(self.cameras)],
            }

    def series(self, kind: str, key: str) -> list[dict[str, Any]]:
        """Window points of one district (``kind`` "district") or camera ("camera"), oldest first: window start,
        people, the window's mask fraction with its interval, its coverage (decided / people with a face, 0-1) and
        its ``low_coverage`` flag.

        Raises:
            KeyError: If there is no such district or camera.
        """
        with self._lock:
            src: dict[str, Any] = self._district_series if kind == "district" else self._camera_series
            points = src[key]
            return [{"window_start_ns": t, "window_end_ns": r.window_end_ns, "people": r.people,
                     "mask_fraction": r.mask_fraction, "mask_fraction_low": r.mask_fraction_low,
                     "mask_fraction_high": r.mask_fraction_high, "coverage": r.coverage,
                     "low_coverage": r.low_coverage} for t, r in sorted(points.items())]


def _trim(series: dict[int, Any], points: int) -> None:
    for t in sorted(series)[:-points]:
        del series[t]


def _fps(recs: list[CameraStats]) -> float | None:
    """Frames processed per second between a camera's last two records (None with fewer than two)."""
    last = sorted(recs, key=lambda r: (r.window_start_ns, r.frames_processed))[-2:]
    if len(last) < 2 or last[1].window_end_ns <= last[0].window_end_ns:
        return None
    return round((last[1].frames_processed - last[0].frames_processed)
                 / ((last[1].window_end_ns - last[0].window_end_ns) / 1e9), 3)


def follow_topics(cfg: Any, view: StatsView, stop: threading.Event, poll_s: float = 0.5,
                  max_backoff_s: float = 10.0) -> None:
    """Read the camera and district statistics topics into ``view`` until ``stop``; never gives up on the broker.

    Each (re)connection assigns every partition of both topics and reads from the beginning (both are compacted:
    the latest record per key is always there), so a dashboard that restarts, or a broker that comes back, shows the
    same state. A topic that does not exist yet (no run has written it) is looked up again every few seconds.
    """
    from kafka import KafkaConsumer, TopicPartition

    from pipeline.backoff import Backoff
    from pipeline.sinks import any_listening, kafka_client_args
    from pipeline.stats_reader import current_values

    backoff = Backoff(1.0, max_backoff_s)
    topics = {cfg.stats_topic: (CameraStats, view.add_camera), cfg.district_stats_topic: (DistrictStats,
                                                                                         view.add_district)}
    while not stop.is_set():
        consumer = None
        try:
            consumer = KafkaConsumer(**kafka_client_args(cfg), enable_auto_commit=False,
                                     auto_offset_reset="earliest", bootstrap_timeout_ms=3000)
            assigned: set[str] = set()
            looked_up = probed = 0.0
            view.set_broker("connected", cfg.bootstrap_servers)
            backoff.reset()
            while not stop.is_set():
                if len(assigned) < len(topics) and time.monotonic() - looked_up > 3.0:
                    looked_up = time.monotonic()
                    tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
                    if {tp.topic for tp in tps} != assigned:
                        consumer.assign(tps)
                        consumer.seek_to_beginning(*tps)
                        assigned = {tp.topic for tp in tps}
                if not assigned:
                    stop.wait(poll_s)
                    continue
                for tp, batch in consumer.poll(timeout_ms=int(poll_s * 1000)).items():
                    cls, add = topics[tp.topic]
                    upgrade = getattr(cls, "upgrade", None)
                    for obj in current_values([m.value for m in batch], cls.schema_version, upgrade):
                        add(cls.decode(obj))  # type: ignore[arg-type]
                # kafka-python reconnects silently; a refused TCP connect to every bootstrap server is an outage.
                if time.monotonic() - probed > 2.0:
                    probed = time.monotonic()
                    if not any_listening(cfg.bootstrap_servers):
                        raise ConnectionError(f"connection refused by {cfg.bootstrap_servers}")
        except Exception as exc:  # any broker failure: show it on the page, retry
            msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            view.set_broker("unreachable", cfg.bootstrap_servers, msg)
            wait = backoff.next_wait()
            logger.warning("dashboard: Kafka at %s: %s; retrying in %.0f s", cfg.bootstrap_servers, msg, wait)
            stop.wait(wait)
        finally:
            if consumer is not None:
                consumer.close()


def create_app(view: StatsView, event_interval_s: float = 0.5) -> Any:
    """The FastAPI app over ``view``: the page, ``/api/state``, ``/api/series``, ``/api/events``, ``/healthz``."""
    from fastapi import FastAPI, HTTPException, Query
    from fastapi.responses import HTMLResponse, StreamingResponse

    app = FastAPI(title="maskwatch dashboard", version="1",
                  description="Mask usage per district and camera from maskwatch's statistics topics.")
    page = PAGE.read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        """Broker status and the latest statistics record per district and per camera (the topics' JSON Schemas:
        ``schemas/json/district_stats.v2.json``, ``camera_stats.v8.json``; cameras add ``frames_per_s``)."""
        return view.state()

    @app.get("/api/series")
    def series(
        kind: str = Query(pattern="^(district|camera)$"), key: str = Query(min_length=1)
    ) -> list[dict[str, Any]]:
        """The window series of one district or camera, oldest first (at most a day of 60-s windows)."""
        try:
            return view.series(kind, key)
        except KeyError:
            raise HTTPException(404, f"no {kind} {key!r}") from None

    @app.get("/api/events", response_class=StreamingResponse, response_model=None)
    async def events() -> StreamingResponse:
        """Server-sent events: ``event: state`` with the whole state each time it changes (and at once)."""

        async def stream() -> AsyncIterator[str]:
            seen = -1
            while True:
                if view.version != seen:
                    current = view.state()
                    seen = current["version"]
                    yield f"event: state\ndata: {json.dumps(current)}\n\n"
                else:
                    yield ": keep-alive\n\n"
                await asyncio.sleep(event_interval_s)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """200 while the service runs; the broker's state is in ``/api/state``."""
        return {"status": "ok"}

    return app


def serve(cfg: Any, host: str, port: int, on_started: Callable[[Any], None] | None = None,
          stop: threading.Event | None = None) -> None:
    """Follow the topics and serve the dashboard on ``host:port`` until ``stop`` or SIGINT/SIGTERM.

    Args:
        cfg: A ``pipeline.config.KafkaConfig`` (bootstrap servers, topic names).
        on_started: Called with the uvicorn server once it listens (tests).

    Raises:
        ConfigError: If the port cannot be bound (:func:`services.broker.check_port_free`).
    """
    import uvicorn

    check_port_free(host, port, "dashboard")
    stop = stop or threading.Event()
    view = StatsView()
    view.set_broker("connecting", cfg.bootstrap_servers)
    follower = threading.Thread(target=follow_topics, args=(cfg, view, stop), name="topics", daemon=True)
    follower.start()
    server = uvicorn.Server(uvicorn.Config(create_app(view), host=host, port=port, log_level="warning",
                                           timeout_graceful_shutdown=2))

    def watch_stop() -> None:
        stop.wait()
        server.should_exit = True

    threading.Thread(target=watch_stop, name="stop", daemon=True).start()
    if on_started is not None:
        def started() -> None:
            while not server.started and not stop.is_set():
                time.sleep(0.05)
            on_started(server)
        threading.Thread(target=started, daemon=True).start()
    try:
        server.run()
    finally:
        stop.set()
        follower.join(timeout=5)
