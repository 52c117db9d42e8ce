"""Follow a config file while the fleet runs: every new content of it, validated, once.

The file's folder is watched with watchfiles (inotify where there is one), not the file: an editor's rename over the
file, and Kubernetes' update of a mounted ConfigMap (it swaps the folder's ``..data`` symlink to a new directory),
replace the file rather than write it, and a watch on the file itself would follow the old inode. Every event, and
every ``poll_s`` without one, re-reads the file through its path and compares its bytes with the last ones seen, so
a change is reported once whatever way it came, and a touch without a change is not reported.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import watchfiles

from schemas.errors import ConfigError

logger = logging.getLogger(__name__)
T = TypeVar("T")
DEBOUNCE_MS = 200  # events closer than this are one change (an editor writes, renames and sets modes in bursts)


@dataclass(frozen=True)
class ConfigUpdate(Generic[T]):
    """A new content of the file: ``config`` when it loaded, else ``error`` (one line naming the key)."""

    sha256: str
    config: T | None = None
    error: str | None = None


class ConfigWatcher(Generic[T]):
    """Reports each new content of ``path`` through :meth:`updates`, loaded by ``load`` (in a thread of its own).

    Args:
        path: The config file (it may be a symlink, and may be replaced).
        load: Reads and validates the file; raises :class:`~schemas.errors.ConfigError` for a bad one.
        poll_s: Re-read at least this often (seconds) when no event comes.
        initial_sha256: The content already running (its change is what is reported); None: the current content
            counts as seen.
    """

    def __init__(self, path: Path | str, load: Callable[[], T], poll_s: float = 5.0,
                 initial_sha256: str | None = None) -> None:
        self.path = Path(path)
        self._load = load
        self._poll_s = poll_s
        self._seen = initial_sha256 if initial_sha256 is not None else file_sha256(self.path)
        self._queue: queue.SimpleQueue[ConfigUpdate[T]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="config-watch", daemon=True)

    def start(self) -> ConfigWatcher[T]:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def updates(self) -> list[ConfigUpdate[T]]:
        """The changes seen since the last call, oldest first (empty when none)."""
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def check(self) -> ConfigUpdate[T] | None:
        """Re-read the file now; the update when its content changed since the last one seen."""
        sha = file_sha256(self.path)
        if sha == self._seen or sha is None:  # unchanged, or missing for a moment during a replace
            return None
        self._seen = sha
        try:
            return ConfigUpdate(sha, config=self._load())
        except ConfigError as exc:
            return ConfigUpdate(sha, error=str(exc))

    def _watch(self) -> None:
        folder = self.path.parent.resolve()
        for _ in watchfiles.watch(folder, stop_event=self._stop, debounce=DEBOUNCE_MS, recursive=False,
                                  rust_timeout=int(self._poll_s * 1000), yield_on_timeout=True,
                                  raise_interrupt=False):
            update = self.check()
            if update is not None:
                self._queue.put(update)


def file_sha256(path: Path) -> str | None:
    """SHA-256 of the file's bytes, read through its path (symlinks followed); None when it cannot be read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
