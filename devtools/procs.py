"""The processes under a PID, read from /proc: for the tests and benchmarks that start process trees (Ray, RTSP
servers) and must measure or end only their own."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path


def descendants(pid: int) -> list[tuple[int, str]]:
    """`(pid, name)` of every descendant of ``pid`` (name: the kernel's ``comm``, e.g. ``raylet``).

    In a PID namespace /proc shows only the namespace's own processes. Processes that end while it reads are skipped.
    """
    tree: dict[int, list[tuple[int, str]]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 1 :].split()[1])
        tree.setdefault(ppid, []).append((int(d.name), name))
    out, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


def stop_all(procs: Iterable[subprocess.Popen[bytes]], timeout_s: float = 30.0) -> None:
    """SIGTERM each process still running (in the given order), wait up to ``timeout_s``, then SIGKILL it."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
