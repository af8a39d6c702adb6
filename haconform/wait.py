"""Bounded polls with a named condition (no sleeps as waits).

    wait_until("server3 DOWN in show stat", lambda: state() == "DOWN",
               timeout=BOUNDS.x, observe=state)

On timeout a WaitTimeout names the condition, the bound (and, for a Bound
from haconform/timeouts.py, its documented part and allowance), and the last
value observed, so a red test says what the system was doing instead.

Every wait is recorded where record_waits() points (the pytest plugin sets a
list around each test and shows it as evidence): condition, bound and its
parts, time taken, held or timed out.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from .errors import WaitTimeout
from .timeouts import MAX_POLL_INTERVAL, POLL_INTERVAL, POLL_SHARE, Bound

log = logging.getLogger("haconform.wait")

_MISSING = object()
HELD, TIMED_OUT = "held", "timed out"

_records: list[dict] | None = None


def record_waits(into: list[dict] | None) -> None:
    """Append a record of every wait from now on to into (None: record nothing)."""
    global _records
    _records = into


def bound_parts(timeout: float) -> dict:
    """What a bound is made of; a plain number (not from timeouts.BOUNDS) has no parts."""
    if isinstance(timeout, Bound):
        return timeout.parts()
    return {"bound_s": float(timeout), "name": None, "documented_s": None, "allowance_s": None,
            "base_s": None, "factor": None}


def _record(condition: str, timeout: float, elapsed: float, outcome: str) -> None:
    records = _records
    if records is not None:
        records.append({"condition": condition, **bound_parts(timeout), "elapsed_s": round(elapsed, 3),
                        "outcome": outcome})


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
            elapsed = time.monotonic() - start
            log.info("waited %.2fs for %s", elapsed, condition)
            _record(condition, timeout, elapsed, HELD)
            return value
        now = time.monotonic()
        if now >= deadline:
            seen = last
            if observe is not None:
                try:
                    seen = observe()
                except Exception as exc:
                    seen = f"{type(exc).__name__}: {exc}"
            _record(condition, timeout, time.monotonic() - start, TIMED_OUT)
            composition = f"{timeout.describe()}; " if isinstance(timeout, Bound) else ""
            raise WaitTimeout(
                f"timed out after {timeout:.1f}s ({polls} polls) waiting for: {condition}; "
                f"{composition}last observed: {seen!r}"
            )
        pause = min(max(interval, (now - start) * POLL_SHARE), max(interval, MAX_POLL_INTERVAL))
        time.sleep(min(pause, max(0.0, deadline - now)))


def elapsed_until(condition: str, predicate: Callable[[], Any], *, timeout: float, **kw) -> float:
    """Like wait_until, but return how long the condition took to hold."""
    start = time.monotonic()
    wait_until(condition, predicate, timeout=timeout, **kw)
    return time.monotonic() - start
