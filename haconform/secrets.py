"""Secrets never reach a report or a log: everything printed passes redact().

Register each secret the moment it is read (stats password, hacluster
password, fence key); reports, failure messages and log records are filtered.
"""

from __future__ import annotations

import logging
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
MASK = "«redacted»"


def register(secret: str | bytes | None) -> None:
    if not secret:
        return
    values = {secret.hex(), secret.decode("latin-1")} if isinstance(secret, bytes) else {secret}
    with _lock:
        _secrets.update(v for v in values if len(v) >= 4)


def redact(text):
    if not isinstance(text, str) or not _secrets:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        return True


def install_log_filter() -> None:
    root = logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for f in root.filters):
        root.addFilter(RedactingFilter())
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
