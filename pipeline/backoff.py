"""Capped exponential backoff with jitter, the one retry rule of maskwatch.

Used wherever something is retried: a live stream reopened after it dropped
(:func:`pipeline.source.read_frames`), a live camera unreachable at start, a camera loop restarted after a fault
(:func:`pipeline.camera_loop.supervise_camera`) and the dashboard's Kafka reader. The waits are ``first_s``,
``2 first_s``, ``4 first_s`` ... capped at ``max_s``, each drawn from +-``jitter`` of its value, so that many cameras
of a site that went down together do not retry in lockstep ("Exponential Backoff And Jitter", AWS Architecture Blog,
2015).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """The waits between attempts, in seconds.

    Args:
        first_s: The first wait (> 0).
        max_s: The cap (>= first_s is not required: every wait is capped at it).
        jitter: Each wait is drawn uniformly from ``[1 - jitter, 1 + jitter]`` times its value (0 <= jitter < 1).

    Raises:
        ValueError: If ``first_s`` or ``max_s`` is not positive, or ``jitter`` is outside [0, 1).
    """

    first_s: float
    max_s: float
    jitter: float = 0.2
    _next_s: float = field(init=False)

    def __post_init__(self) -> None:
        if self.first_s <= 0 or self.max_s <= 0 or not 0 <= self.jitter < 1:
            msg = f"backoff needs first_s > 0, max_s > 0 and 0 <= jitter < 1, got {self.first_s}, {self.max_s}, " \
                  f"{self.jitter}"
            raise ValueError(msg)
        self._next_s = min(self.first_s, self.max_s)

    def next_wait(self) -> float:
        """The wait before the next attempt (seconds, jittered); the one after it doubles, up to ``max_s``."""
        base = self._next_s
        self._next_s = min(base * 2, self.max_s)
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)

    def reset(self) -> None:
        """An attempt succeeded: the next failure waits ``first_s`` again."""
        self._next_s = min(self.first_s, self.max_s)
