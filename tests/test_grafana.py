"""The Grafana dashboard in k8s/monitoring is what services.grafana builds, and it queries only metrics maskwatch
exports (its queries also run against a live Prometheus in tests/test_operators.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from services.grafana import PREFIX, configmap_yaml, panels

REPO = Path(__file__).resolve().parents[1]
FILE = REPO / "k8s" / "monitoring" / "grafana-dashboard.yaml"


def _defined_metrics() -> set[str]:
    """Metric names the actors create (literal names, and ModelCallMetrics' per-stage names)."""
    source = "\n".join(p.read_text() for p in (REPO / "actors").glob("*.py"))
    names = set(re.findall(r'"(maskwatch_[a-z_]+)"', source))
    for stage in re.findall(r'ModelCallMetrics\("(\w+)"\)', source):
        names |= {f"maskwatch_{stage}_batch_size", f"maskwatch_{stage}_latency_s"}
    return names


def test_the_committed_dashboard_is_the_generated_one():
    assert FILE.read_text() == configmap_yaml(), "regenerate: python -m services.grafana > k8s/monitoring/..."
    doc = yaml.safe_load(FILE.read_text())
    assert doc["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(doc["data"]["maskwatch.json"])
    titles = [p["title"] for p in board["panels"] if p["type"] == "timeseries"]
    assert titles == [t for t, _, _ in panels()]
    for wanted in ("district", "per camera", "Frames processed", "dropped", "state", "latency", "batch size",
                   "outbox"):
        assert any(wanted in t for t in titles), wanted


def test_every_panel_queries_a_metric_maskwatch_exports():
    defined = _defined_metrics()
    assert {"maskwatch_camera_people", "maskwatch_sink_outbox_records", "maskwatch_pose_batch_size"} <= defined
    for title, _, queries in panels():
        for expr, _ in queries:
            used = {re.sub(r"_(bucket|sum|count|total)$", "", m) for m in re.findall(PREFIX + r"(maskwatch_\w+)", expr)}
            assert used, (title, expr)
            assert used <= defined, (title, sorted(used - defined))
