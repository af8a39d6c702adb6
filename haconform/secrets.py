"""Secrets never reach a report or a log: everything printed passes redact().

Register each secret the moment it is read (stats password, hacluster
password, fence key).  register() derives every form the secret takes on its
way into text (hex, base64, JSON/URL/HTML escaping, the repr of bytes, ...),
since a secret is rarely printed raw: a command line carries it quoted, a
CommandResult repr carries it as bytes, a JSON writer escapes it.

Two lines of defence:
  - at the source: install_log_filter() installs a log record factory, so
    every record of every logger is formatted and redacted when it is made,
    before any handler (pytest's capture, live logging, --log-file) sees it;
  - at the sink: the pytest plugin redacts each report's captured sections,
    failure text and extras, and every file haconform writes goes through
    redact()/redact_obj()/redact_bytes() (a secret registered late is still
    caught there).
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import logging
import re
import threading
from typing import Any
from urllib.parse import quote, quote_plus

_lock = threading.Lock()
_secrets: set[str] = set()
MASK = "«redacted»"
# A shorter form would mask ordinary text everywhere and would say little about the secret anyway.
MIN_FORM = 4
# Pieces of a secret (base64 lines, groups of base64 inside a larger blob): long enough that random
# text does not match them.
MIN_FRAGMENT = 12
# Where base64 tools wrap their output: coreutils `base64` and MIME (76), openssl and PEM (64).
BASE64_LINE_WIDTHS = (76, 64)
_URLSAFE = str.maketrans("+/", "-_")


# ----- the forms of a secret -----------------------------------------------------------------------

def _quoted_forms(text: str) -> set[str]:
    """As it reads inside a JSON string (ASCII-escaped or not) and inside a Python str repr."""
    return {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1], repr(text)[1:-1]}


def _bytes_repr_body(data: bytes) -> str:
    return repr(data)[2:-1]


def _binary_encodings(data: bytes) -> set[str]:
    """hex and base64 of the bytes, with the pieces of base64 that survive wrapping and embedding."""
    standard = base64.b64encode(data).decode("ascii")
    urlsafe = standard.translate(_URLSAFE)
    forms = {data.hex(), data.hex().upper(), standard, standard.rstrip("="), urlsafe, urlsafe.rstrip("=")}
    # Inside a larger blob (user:password of Basic auth, a file carrying the key) the secret starts at
    # any offset mod 3: the base64 groups made of the secret's bytes alone appear verbatim.
    for start in range(3):
        whole = (len(data) - start) // 3 * 3
        core = base64.b64encode(data[start:start + whole]).decode("ascii")
        if len(core) >= MIN_FRAGMENT:
            forms.update({core, core.translate(_URLSAFE)})
    # base64 wrapped in lines (`base64 fence_xvm.key`): each line is a slice of the encoding.
    for width in BASE64_LINE_WIDTHS:
        if len(standard) > width:
            forms.update(line for line in (standard[i:i + width] for i in range(0, len(standard), width))
                         if len(line) >= MIN_FRAGMENT)
    return forms


def _text_forms(text: str) -> set[str]:
    data = text.encode("utf-8", "surrogatepass")
    forms = _quoted_forms(text) | _binary_encodings(data)
    forms |= {_bytes_repr_body(data), quote(text, safe=""), quote_plus(text), html.escape(text),
              html.escape(text, quote=False)}
    return forms


def _bytes_forms(data: bytes) -> set[str]:
    forms = _binary_encodings(data) | {_bytes_repr_body(data), quote(data, safe=""), quote_plus(data)}
    try:
        forms |= _text_forms(data.decode("utf-8"))
    except UnicodeDecodeError:
        # Random bytes (the fence key) reach text through whichever decoding a reader chose.
        for errors in ("replace", "backslashreplace", "surrogateescape"):
            forms |= _quoted_forms(data.decode("utf-8", errors))
    latin1 = data.decode("latin-1")
    forms |= _quoted_forms(latin1) | {html.escape(latin1), html.escape(latin1, quote=False)}
    return forms


def secret_forms(secret: str | bytes) -> set[str]:
    """Every form register() would redact for this secret (forms shorter than MIN_FORM excluded)."""
    if isinstance(secret, (bytes, bytearray, memoryview)):
        forms = _bytes_forms(bytes(secret))
    else:
        forms = _text_forms(str(secret))
    return {form for form in forms if len(form) >= MIN_FORM}


def register(secret: str | bytes | None) -> None:
    # A secret shorter than MIN_FORM would show as it is anyway: masking its hex or base64 would
    # only mask unrelated text.
    if not secret or len(secret) < MIN_FORM:
        return
    forms = secret_forms(secret)
    with _lock:
        _secrets.update(forms)


# Credentials a configuration carries in clear: HAProxy's `stats auth USER:PASSWORD` and a userlist's
# `user NAME insecure-password PASSWORD`.
_CONFIG_CREDENTIALS = re.compile(
    r"^[ \t]*(?:stats[ \t]+auth[ \t]+(?P<user>[^:\s]+):(?P<password>\S+)"
    r"|user[ \t]+(?P<luser>\S+)[ \t]+insecure-password[ \t]+(?P<lpassword>\S+))", re.MULTILINE)

_reading = threading.local()


def discover(text: str | bytes | None) -> None:
    """Register every credential a configuration text carries (and each USER:PASSWORD pair, the form
    Basic auth encodes), before the text can reach a log: transports call this on every output."""
    if not text:
        return
    if isinstance(text, (bytes, bytearray)):
        if b"auth" not in text and b"insecure-password" not in text:
            return
        text = bytes(text).decode("utf-8", "replace")
    elif "auth" not in text and "insecure-password" not in text:
        return
    for match in _CONFIG_CREDENTIALS.finditer(text):
        user = match.group("user") or match.group("luser")
        password = match.group("password") or match.group("lpassword")
        register(password)
        register(f"{user}:{password}")


@contextlib.contextmanager
def secret_output():
    """Within this block, a transport registers the whole output of each command it runs as a secret
    before logging it (a key read with `cat`)."""
    previous = getattr(_reading, "secret", False)
    _reading.secret = True
    try:
        yield
    finally:
        _reading.secret = previous


def output_is_secret() -> bool:
    return getattr(_reading, "secret", False)


# ----- redaction ---------------------------------------------------------------------------------

# (the set it was built from, its size then, forms longest first, their byte encodings longest first):
# register() only ever adds, so the same set with the same size holds the same forms.
_ordered: tuple[set[str] | None, int, tuple[str, ...], tuple[bytes, ...]] = (None, 0, (), ())


def _encodings(form: str) -> set[bytes]:
    found = set()
    for encoding, errors in (("utf-8", "surrogateescape"), ("latin-1", "strict")):
        try:
            found.add(form.encode(encoding, errors))
        except UnicodeEncodeError:
            pass
    return found


def _forms() -> tuple[tuple[str, ...], tuple[bytes, ...]]:
    global _ordered
    with _lock:
        secrets = _secrets
        cached_from, cached_size, texts, raw = _ordered
        if cached_from is secrets and cached_size == len(secrets):
            return texts, raw
        texts = tuple(sorted(secrets, key=len, reverse=True))
        raw = tuple(sorted({b for form in texts for b in _encodings(form) if len(b) >= MIN_FORM},
                           key=len, reverse=True))
        _ordered = (secrets, len(secrets), texts, raw)
        return texts, raw


def redact(text):
    if not isinstance(text, str) or not _secrets:
        return text
    for form in _forms()[0]:
        text = text.replace(form, MASK)
    return text


def redact_bytes(data: bytes) -> bytes:
    if not _secrets:
        return data
    mask = MASK.encode("utf-8")
    data = bytes(data)
    for form in _forms()[1]:
        data = data.replace(form, mask)
    return data


def redact_obj(obj: Any) -> Any:
    """A redacted copy of a JSON-like value: strings and bytes in dicts (keys too), lists and tuples."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, (bytes, bytearray)):
        return redact_bytes(obj)
    if isinstance(obj, dict):
        return {redact_obj(key): redact_obj(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [redact_obj(value) for value in obj]
    if isinstance(obj, tuple):
        values = [redact_obj(value) for value in obj]
        return type(obj)(*values) if hasattr(obj, "_fields") else tuple(values)
    return obj


# ----- log records -------------------------------------------------------------------------------

def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Format the record now and redact it: message, traceback, stack.

    After this, no handler or formatter can reach the unredacted arguments or exception: the
    arguments are merged into msg, and the traceback lives only as redacted exc_text."""
    try:
        message = record.getMessage()
    except Exception as exc:   # a bad format string must not hide the record (logging would report it)
        message = f"{record.msg!s} {record.args!r} (message not formatted: {type(exc).__name__}: {exc})"
    record.msg, record.args = redact(message), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    record.exc_info = None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


def _redacting_factory(previous):
    def make_record(*args, **kwargs):
        return redact_record(previous(*args, **kwargs))

    make_record.haconform_redacting = True
    make_record.previous = previous
    return make_record


def _factory_installed() -> bool:
    factory = logging.getLogRecordFactory()
    while factory is not None:
        if getattr(factory, "haconform_redacting", False):
            return True
        factory = getattr(factory, "previous", None)
    return False


class RedactingFilter(logging.Filter):
    """For records the factory did not make (logging.makeLogRecord of a record received elsewhere)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install_log_filter() -> None:
    """Redact every log record of every logger from now on (idempotent)."""
    if not _factory_installed():
        logging.setLogRecordFactory(_redacting_factory(logging.getLogRecordFactory()))
    root = logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for f in root.filters):
        root.addFilter(RedactingFilter())
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
