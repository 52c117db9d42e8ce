"""Start and stop GStreamer's RTSP server (``scripts/rtsp_server.py``, Debian's python3-gi) on a loopback port: a
live camera for the tests and the fleet benchmark. The venv never imports gi; the server runs with the system python.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).resolve().parents[1] / "scripts" / "rtsp_server.py"


class RtspServer:
    """scripts/rtsp_server.py as a child process on a fixed loopback port; stopped by its own PID only."""

    def __init__(self, video: Path, port: int, log: Path) -> None:
        self.video, self.port, self.log = video, port, log
        self.url = f"rtsp://127.0.0.1:{port}/cam"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        """Start it and wait (bounded) for its "ready URL" line."""
        assert self.proc is None, "already running"
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(SERVER), "--port", str(self.port), "--path", "/cam", "--video", str(self.video),
                 "--realtime"],
                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
            )
        assert self.proc.stdout is not None
        fd, buf = self.proc.stdout.fileno(), b""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                msg = f"RTSP server did not print 'ready' within {timeout_s:g} s; log:\n{self.log.read_text()}"
                raise RuntimeError(msg)
            if select.select([fd], [], [], min(left, 0.2))[0]:
                chunk = os.read(fd, 4096)
                if not chunk:  # closed: the process is exiting; wait for its exit (bounded), then report it
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(timeout=max(0.0, min(left, 1.0)))
                buf += chunk
        line = buf.decode().strip()
        if line != f"ready {self.url}":
            self.stop()
            msg = f"RTSP server printed {line!r}, expected 'ready {self.url}'"
            raise RuntimeError(msg)

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """SIGTERM by PID, bounded wait, SIGKILL if needed; returns the exit code (None if it was not running)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            os.kill(proc.pid, signal.SIGCONT)  # in case a test froze it
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout_s)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def ensure_running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            self.start()
