"""Wait for a condition instead of sleeping on a fixed timer: poll it until it holds, with a deadline, and fail with
a message that names what was awaited (for the tests, the multi-node scenario and the benchmarks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold before the deadline (an AssertionError, so pytest reports it as a failed check)."""


def _message(what: str | Callable[[], str], timeout_s: float, last_error: BaseException | None) -> str:
    text = what() if callable(what) else what
    msg = f"timed out after {timeout_s:g} s waiting for {text}"
    if last_error is not None:
        msg += f" (last error: {type(last_error).__name__}: {last_error})"
    return msg


def wait_until(
    cond: Callable[[], T],
    timeout_s: float,
    what: str | Callable[[], str],
    poll_s: float = 0.2,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``cond()`` every ``poll_s`` until it returns something truthy, and return that.

    Args:
        cond: The condition; an exception it raises ends the wait (unless it is one of ``ignore``), so a check such
            as "the process is still running" can fail the wait early.
        timeout_s: The deadline, from now.
        what: What is awaited, for the message (or a callable that describes the state when the wait failed).
        poll_s: Seconds between two calls.
        ignore: Exceptions of ``cond`` that mean "not yet" (e.g. ``OSError`` while a server starts).

    Raises:
        WaitTimeout: "timed out after N s waiting for <what>", when ``cond()`` was never truthy before the deadline.
    """
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            if got := cond():
                return got
        except ignore as exc:
            last_error = exc
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(_message(what, timeout_s, last_error))
        time.sleep(min(poll_s, left))


async def wait_until_async(
    cond: Callable[[], T],
    timeout_s: float,
    what: str | Callable[[], str],
    poll_s: float = 0.1,
) -> T:
    """:func:`wait_until` inside an event loop: polls with ``asyncio.sleep``, so the loop's tasks keep running."""
    deadline = time.monotonic() + timeout_s
    while True:
        if got := cond():
            return got
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(_message(what, timeout_s, None))
        await asyncio.sleep(min(poll_s, left))

