"""A test report's message, redacted: what the verdict, the history and the plugin's rows say.

Kept apart from report/plugin.py: haconform.pytest_plugin imports these at import time,
and a module pytest loads as a plugin must not be imported before (assertion rewriting).
"""

from __future__ import annotations

from ..redaction import redact, redacted_head


def failure_message(report) -> str:
    """The assertion's or exception's own lines ("E   ..."), else the last line of the report."""
    text = str(report.longrepr or "")
    lines = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
    message = " ".join(lines) if lines else next((l.strip() for l in reversed(text.splitlines()) if l.strip()), "")
    return redacted_head(message, 600)


def skip_message(report) -> str:
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return redact(reason.removeprefix("Skipped: "))
