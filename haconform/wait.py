"""Bounded polls with a named condition (no sleeps as waits).

    wait_until("server3 DOWN in show stat", lambda: state() == "DOWN",
               timeout=BOUNDS.x, observe=state)

On timeout a WaitTimeout names the condition, the bound, and the last value
observed, so a red test says what the system was doing instead.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from .errors import WaitTimeout
from .timeouts import POLL_INTERVAL

log = logging.getLogger("haconform.wait")

_MISSING = object()


def wait_until(
    condition: str,
    predicate: Callable[[], Any],
    *,
    timeout: float,
    observe: Callable[[], Any] | None = None,
    interval: float = POLL_INTERVAL,
) -> Any:
    """Poll predicate until it returns a truthy value; return that value.

    observe (optional) returns what to report on timeout; without it the last
    return value or exception of predicate is reported.
    """
    start = time.monotonic()
    deadline = start + timeout
    last: Any = _MISSING
    polls = 0
    while True:
        polls += 1
        try:
            value = predicate()
            last = value
        except Exception as exc:  # a failing probe is an observation, not the end
            value = None
            last = f"{type(exc).__name__}: {exc}"
        if value:
            log.info("waited %.2fs for %s", time.monotonic() - start, condition)
            return value
        now = time.monotonic()
        if now >= deadline:
            seen = last
            if observe is not None:
                try:
                    seen = observe()
                except Exception as exc:
                    seen = f"{type(exc).__name__}: {exc}"
            raise WaitTimeout(
                f"timed out after {timeout:.1f}s ({polls} polls) waiting for: {condition}; "
                f"last observed: {seen!r}"
            )
        time.sleep(min(interval, max(0.0, deadline - now)))


def elapsed_until(condition: str, predicate: Callable[[], Any], *, timeout: float, **kw) -> float:
    """Like wait_until, but return how long the condition took to hold."""
    start = time.monotonic()
    wait_until(condition, predicate, timeout=timeout, **kw)
    return time.monotonic() - start
