"""``maskwatch cameras``: the cameras of a running fleet (``list``), and changes to its config file (``add``,
``remove``) that the fleet applies while it runs (:meth:`cluster.fleet.Fleet.reconcile`).

``add`` and ``remove`` edit the YAML file in place, keeping its comments and layout (ruamel.yaml's round trip), after
checking that the result is a valid config; the file is replaced atomically (a rename), so the fleet never reads half
of it. Where a fleet follows that file, they then wait for it to apply the change and print what it did.
Registered on the main command line with ``main.add_command(cameras)``; user errors are one line, exit status 2.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from maskwatch._click import ErrorLineGroup
from schemas.errors import ConfigError, MaskwatchError

APPLY_TIMEOUT_S = 120.0  # how long add / remove wait for the running fleet to apply the change


@click.group(cls=ErrorLineGroup)
def cameras() -> None:
    """The cameras of a running fleet, and adding or removing one while it runs."""


_config_option = click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
                              help="The YAML config file the fleet runs with (maskwatch run --config).")
_address_option = click.option("--address", help="Ray cluster address (default: the config's ray.address, else the "
                                                  "local Ray this machine runs).")


def _connect(config_path: str, address: str | None) -> Any:
    """The running fleet's client (:class:`cluster.fleet_client.FleetClient`), or None when none runs."""
    from cluster.fleet_client import FleetClient
    from pipeline.config import load_config

    return FleetClient.connect(load_config(config_path), address)


@cameras.command("list")
@_config_option
@_address_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per camera.")
def list_cameras(config_path: str, address: str | None, as_json: bool) -> None:
    """Each camera of the running fleet: node, pipeline, shard, state and frames/s."""
    fleet = _connect(config_path, address)
    if fleet is None:
        msg = f"no running maskwatch fleet found for {config_path} (start one with `maskwatch run --config`)"
        raise MaskwatchError(msg)
    rows = fleet.cameras()
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    click.echo(f"{'camera_id':<28} {'node':<10} {'pipeline':>8} {'shard':>5} {'state':<13} {'frames/s':>8} "
               f"{'frames':>8}")
    for r in rows:
        node = (r.get("node_id") or "-")[:8]
        shard = "-" if r.get("shard") is None else r["shard"]
        click.echo(f"{r['camera_id']:<28} {node:<10} {r['pipeline']:>8} {shard:>5} {r['camera_state']:<13} "
                   f"{r.get('frames_per_s', 0.0):>8.1f} {r.get('frames_processed', 0):>8}")


@cameras.command("add")
@click.argument("camera_id")
@click.argument("source")
@_config_option
@_address_option
@click.option("--target-fps", type=float, help="Frames per second to sample (default: the config's default).")
@click.option("--district", help="District the camera counts toward.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Another setting of the camera's entry, e.g. --set pose_input_px=640 (the value is read as "
                   "YAML 1.2; repeatable).")
@click.option("--no-wait", is_flag=True, help="Edit the file only; do not wait for the running fleet.")
def add_camera(camera_id: str, source: str, config_path: str, address: str | None, target_fps: float | None,
               district: str | None, settings: tuple[str, ...], no_wait: bool) -> None:
    """Add a camera to the config file; a running fleet starts it."""
    from pipeline.config import apply_overrides

    entry: dict[str, Any] = {"camera_id": camera_id, "source": source}
    if target_fps is not None:
        entry["target_fps"] = target_fps
    if district is not None:
        entry["district"] = district
    apply_overrides(entry, list(settings))  # KEY=VALUE, the value read as the file is (YAML 1.2)

    def edit(doc: Any) -> None:
        cams = doc.setdefault("cameras", [])
        if any(c.get("camera_id") == camera_id for c in cams):
            msg = f"{config_path}: camera_id {camera_id!r} is already in cameras"
            raise ConfigError(msg)
        cams.append(entry)

    _edit_and_follow(config_path, address, edit, no_wait)


@cameras.command("remove")
@click.argument("camera_id")
@_config_option
@_address_option
@click.option("--no-wait", is_flag=True, help="Edit the file only; do not wait for the running fleet.")
def remove_camera(camera_id: str, config_path: str, address: str | None, no_wait: bool) -> None:
    """Remove a camera from the config file; a running fleet decides its open tracks, publishes its final record
    (camera_state removed) and stops it."""

    def edit(doc: Any) -> None:
        cams = doc.get("cameras") or []
        keep = [c for c in cams if c.get("camera_id") != camera_id]
        if len(keep) == len(cams):
            ids = [c.get("camera_id") for c in cams]
            msg = f"{config_path}: no camera {camera_id!r} in cameras (it has {ids})"
            raise ConfigError(msg)
        cams[:] = keep

    _edit_and_follow(config_path, address, edit, no_wait)


def _edit_and_follow(config_path: str, address: str | None, edit: Any, no_wait: bool) -> None:
    from pipeline.config_watch import file_sha256

    path = Path(config_path)
    before = _edit_yaml(path, edit)
    sha = file_sha256(path)
    click.echo(f"{path}: written ({before} camera(s) before)", err=True)
    if no_wait:
        return
    fleet = _connect(config_path, address)
    if fleet is None:
        click.echo("no running fleet found: the change applies when `maskwatch run --config` starts", err=True)
        return
    report = fleet.wait_for_report(sha, APPLY_TIMEOUT_S)
    if report is None:
        msg = (f"the running fleet did not apply the change within {APPLY_TIMEOUT_S:g} s (does it follow {path}? "
               "fleet.watch_config)")
        raise MaskwatchError(msg)
    if report["error"]:
        msg = f"the running fleet refused the change: {report['error']}"
        raise MaskwatchError(msg)
    click.echo(f"reconciled in {report.get('applied_s', 0):.1f} s: {report['summary']}")


def _edit_yaml(path: Path, edit: Any) -> int:
    """Apply ``edit`` to the file's YAML document (comments kept), check the result is a valid config, and replace
    the file atomically. Returns the number of cameras before.

    Raises:
        ConfigError: If the file is missing or not YAML, ``edit`` refuses, or the result is not a valid config.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    from pipeline.config import parse_config, read_yaml

    if not path.is_file():
        msg = f"config file not found: {path}"
        raise ConfigError(msg)
    yaml = YAML()
    try:
        doc = yaml.load(path.read_text()) or {}
    except YAMLError as exc:
        msg = f"{path}: not valid YAML ({str(exc).splitlines()[0]})"
        raise ConfigError(msg) from None
    before = len(doc.get("cameras") or [])
    edit(doc)
    out = io.StringIO()
    yaml.dump(doc, out)
    parse_config(read_yaml(out.getvalue()), str(path))
    target = path.resolve()  # a symlinked file is replaced where it lives
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        msg = (f"cannot write {path}: {exc.strerror} (a mounted Kubernetes ConfigMap is read-only: edit the ConfigMap "
               "and the fleet follows it, k8s/README.md)")
        raise ConfigError(msg) from None
    with os.fdopen(fd, "w") as fh:
        fh.write(out.getvalue())
    os.chmod(tmp, target.stat().st_mode & 0o777)
    os.replace(tmp, target)
    return before
