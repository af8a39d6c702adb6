"""A MUST that fails by configuration differences says which, as data.

    fail_on_differences(rows, "the cluster differs from the documented one", evidence=evidence,
                        title="differences (documented vs the deployment's)")

rows are the verifier's (haconform/stages/drift.py, semantic.py, cluster.py):
what, expected, found, where and `key`, the setting's key path.  The failure
is a DifferencesFound, an AssertionError that carries the rows: a waiver
(haconform/waivers.py) accepts a failure "only by its difference" when every
row of it is one the waiver names, which it can only tell from the rows, not
from the message.  So a test whose finding is a set of differences raises it
through here, as its last check.
"""

from __future__ import annotations

from typing import Callable


class DifferencesFound(AssertionError):
    """The deployment differs from the documented stage in exactly these rows."""

    def __init__(self, message: str, rows: list[dict]):
        super().__init__(message)
        self.rows = [dict(row) for row in rows]


def difference_line(row: dict) -> str:
    key = f"; key {row['key']}" if row.get("key") else ""
    return f"{row['what']}: expected {row['expected']!r}, found {row['found']!r} ({row['where']}{key})"


def fail_on_differences(rows: list[dict], headline: str, *, evidence=None, title: str | None = None,
                        line: Callable[[dict], str] = difference_line) -> None:
    """Record the rows (a table titled `title`, when evidence is given) and fail when there are any."""
    if evidence is not None and title is not None:
        evidence.table(title, rows)
    if rows:
        raise DifferencesFound(f"{headline}:\n  " + "\n  ".join(line(row) for row in rows), rows)
