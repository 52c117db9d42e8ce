"""The Grafana dashboard of a maskwatch deployment, built with Grafana's own SDK (grafana-foundation-sdk), and the
ConfigMap that carries it (``k8s/monitoring/grafana-dashboard.yaml``, picked up by Grafana's dashboard sidecar).

Panels (Prometheus, the metrics Ray exports with its ``ray_`` prefix): the mask fraction per district (pooled: the
sum of its cameras' people decided mask over those decided) and per camera, people decided per minute, frames/s and
drops per camera, cameras per state, decode-to-pose latency, model call latency and batch sizes, and the Kafka
outbox's depth and age.

Regenerate the file after changing a panel: ``python -m services.grafana > k8s/monitoring/grafana-dashboard.yaml``
(a test checks that the file is what this module builds).
"""

from __future__ import annotations

import json
from typing import Any

PREFIX = "ray_"  # Ray exports the metrics of ray.util.metrics with this prefix
UID = "maskwatch-fleet"
DECIDED = 'decision=~"mask|no_mask"'
RATE = "$__rate_interval"


def _m(name: str) -> str:
    return PREFIX + name


def panels() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """The dashboard's panels: ``(title, unit, [(PromQL, legend), ...])``, in order."""
    people = _m("maskwatch_camera_people")
    quantiles = [(q, f"p{int(q * 100)}") for q in (0.5, 0.99)]
    return [
        ("Mask fraction per district (pooled over its cameras)", "percentunit", [(
            f'sum by (district) ({people}{{decision="mask", district!=""}}) / '
            f'sum by (district) ({people}{{{DECIDED}, district!=""}})', "{{district}}")]),
        ("Mask fraction per camera", "percentunit", [(
            f'sum by (camera_id) ({people}{{decision="mask"}}) / sum by (camera_id) ({people}{{{DECIDED}}})',
            "{{camera_id}}")]),
        ("People decided per minute, by district", "short", [(
            f"sum by (district, decision) (delta({people}[1m]))", "{{district}} {{decision}}")]),
        ("Frames processed per second, per camera", "short", [(
            f"rate({_m('maskwatch_capture_frames_processed')}[{RATE}])", "{{camera_id}}")]),
        ("Frames dropped per second, per camera", "short", [(
            f"rate({_m('maskwatch_capture_frames_dropped')}[{RATE}])", "{{camera_id}}")]),
        ("Cameras per state", "short", [(
            f"sum by (state) ({_m('maskwatch_camera_state')})", "{{state}}")]),
        ("Frame decoded to poses back (p50, p99)", "s", [(
            f"histogram_quantile({q}, sum by (le) (rate({_m('maskwatch_pose_latency_seconds_bucket')}[{RATE}])))",
            label) for q, label in quantiles]),
        ("Model call latency (p99)", "s", [(
            f"histogram_quantile(0.99, sum by (le) (rate({_m(f'maskwatch_{stage}_latency_s_bucket')}[{RATE}])))",
            stage) for stage in ("pose", "classify")]),
        ("Mean batch size per model call", "short", [(
            f"rate({_m(f'maskwatch_{stage}_batch_size_sum')}[{RATE}]) / "
            f"rate({_m(f'maskwatch_{stage}_batch_size_count')}[{RATE}])", stage) for stage in ("pose", "classify")]),
        ("Kafka outbox: records waiting", "short", [(
            _m("maskwatch_sink_outbox_records"), "records")]),
        ("Kafka outbox: age of the oldest record", "s", [(
            _m("maskwatch_sink_outbox_age_seconds"), "age")]),
    ]


def build_dashboard() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (a dict)."""
    from grafana_foundation_sdk.builders.dashboard import Dashboard, Row
    from grafana_foundation_sdk.builders.prometheus import Dataquery
    from grafana_foundation_sdk.builders.timeseries import Panel
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    board = (Dashboard("maskwatch: mask usage and fleet health").uid(UID).tags(["maskwatch"])
             .refresh("30s").time("now-6h", "now"))
    for i, (title, unit, queries) in enumerate(panels()):
        if i == 0:
            board = board.with_row(Row("Mask usage"))
        if i == 3:
            board = board.with_row(Row("Fleet health"))
        panel = Panel().id(i + 1).title(title).unit(unit).min(0).height(8).span(12)
        if unit == "percentunit":
            panel = panel.max(1)
        for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
            panel = panel.with_target(Dataquery().ref_id(ref).expr(expr).legend_format(legend))
        board = board.with_panel(panel)
    return json.loads(JSONEncoder(sort_keys=True).encode(board.build()))


def configmap_yaml() -> str:
    """``k8s/monitoring/grafana-dashboard.yaml``: a ConfigMap labelled for Grafana's dashboard sidecar."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def block(dumper: yaml.SafeDumper, text: str) -> yaml.Node:  # the JSON as a readable literal block
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)

    Dumper.add_representer(str, block)
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "maskwatch-grafana-dashboard",
                     "labels": {"app.kubernetes.io/name": "maskwatch", "grafana_dashboard": "1"}},
        "data": {"maskwatch.json": json.dumps(build_dashboard(), indent=1, sort_keys=True) + "\n"},
    }
    head = ("# Generated by `python -m services.grafana > k8s/monitoring/grafana-dashboard.yaml` (Grafana's\n"
            "# grafana-foundation-sdk); do not edit by hand. Grafana's dashboard sidecar (kube-prometheus-stack)\n"
            "# loads ConfigMaps labelled grafana_dashboard: \"1\".\n")
    return head + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=120)


if __name__ == "__main__":
    print(configmap_yaml(), end="")
