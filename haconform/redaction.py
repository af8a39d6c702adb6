"""Secrets never reach a report or a log: everything printed passes redact().

Register each secret the moment it is read (stats password, hacluster
password, fence key, pcsd tokens, a CIB's passwords).  register() derives
every form the secret takes on its way into text (hex, base64, JSON/URL/HTML
escaping, the repr of bytes, ...), since a secret is rarely printed raw: a
command line carries it quoted, a CommandResult repr carries it as bytes, a
JSON writer escapes it.

A secret is also rarely printed whole: output is cut to its tail, pytest's
saferepr shows the two ends of a long value, base64 is wrapped in lines.  So
redact() masks every run of at least FRAGMENT characters of any form, not
only whole forms; and output is redacted before it is cut (redacted_tail),
so a cut never leaves a piece too short to be recognised.

Two lines of defence:
  - at the source: install_log_filter() installs a log record factory, so
    every record of every logger is formatted and redacted when it is made,
    before any handler (pytest's capture, live logging, --log-file) sees it;
  - at the sink: the pytest plugin redacts each report, the warnings, the
    terminal (RedactingStream) and, at the end, every file the session wrote
    (a secret registered late is still caught there); every file haconform
    writes goes through redact()/redact_obj()/redact_bytes().
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import html
import itertools
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote, quote_plus

from .errors import HaconformError

_lock = threading.RLock()
_secrets: set[str] = set()
MASK = "«redacted»"
# A shorter secret cannot be redacted: masking a 3-character form would mask ordinary text everywhere.
MIN_FORM = 4
# Any run this long of a form is masked wherever it shows (cut, wrapped, half shown): 8 characters of a
# form carry 32 bits of a hex key, 48 of base64, and rarely occur in other text by chance.
FRAGMENT = 8
# The base64 groups of a secret inside a larger blob are forms of their own (not substrings of the
# secret's own base64); shorter ones would be whole-form matches of ordinary base64 text.
MIN_BASE64_CORE = FRAGMENT
_URLSAFE = str.maketrans("+/", "-_")
# A deployment's own hacluster password (fixtures/stages.py; the lab makes a fresh one per session).
HACLUSTER_PASSWORD_VARIABLE = "HACONFORM_HACLUSTER_PASSWORD"


class ShortSecret(HaconformError):
    """A secret too short to redact: refused where it is loaded, never silently shown."""


# ----- the forms of a secret -----------------------------------------------------------------------

def _quoted_forms(text: str) -> set[str]:
    """As it reads inside a JSON string (ASCII-escaped or not) and inside a Python str repr."""
    return {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1], repr(text)[1:-1]}


def _bytes_repr_body(data: bytes) -> str:
    return repr(data)[2:-1]


def _binary_encodings(data: bytes) -> set[str]:
    """hex and base64 of the bytes, with the base64 that survives embedding in a larger blob.

    (Wrapped base64 needs no form of its own: each line is a run of the whole encoding.)"""
    standard = base64.b64encode(data).decode("ascii")
    urlsafe = standard.translate(_URLSAFE)
    forms = {data.hex(), data.hex().upper(), standard, standard.rstrip("="), urlsafe, urlsafe.rstrip("=")}
    # Inside a larger blob (user:password of Basic auth, a file carrying the key) the secret starts at
    # any offset mod 3: the base64 groups made of the secret's bytes alone appear verbatim.
    for start in range(3):
        whole = (len(data) - start) // 3 * 3
        core = base64.b64encode(data[start:start + whole]).decode("ascii")
        if len(core) >= MIN_BASE64_CORE:
            forms.update({core, core.translate(_URLSAFE)})
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


def refuse_short(secret: str | bytes | None, *, what: str = "a secret", where: str | None = None,
                 fix: str | None = None) -> None:
    """Raise ShortSecret when a secret is too short to redact (the message never shows the secret)."""
    if secret and len(secret) < MIN_FORM:
        raise ShortSecret(
            f"{what} has {len(secret)} character{'s' if len(secret) != 1 else ''}: too short to keep out of "
            f"logs and reports (a form under {MIN_FORM} characters cannot be masked without masking ordinary "
            "text everywhere)", where=where or "a secret being registered",
            fix=fix or f"use a secret of at least {MIN_FORM} characters")


# Each secret registered into which set: registering one again (every CIB read finds the same token)
# costs a set lookup, and a set replaced wholesale (as tests do) starts afresh.
_registered: tuple[set[str] | None, set[str | bytes]] = (None, set())


def register(secret: str | bytes | None, *, what: str = "a secret", where: str | None = None,
             fix: str | None = None) -> None:
    """Redact every form of the secret from now on.  None or empty: nothing to hide.  Shorter than
    MIN_FORM: ShortSecret (what/where/fix name it), since it would be shown as it is."""
    global _registered
    if not secret:
        return
    refuse_short(secret, what=what, where=where, fix=fix)
    key = bytes(secret) if isinstance(secret, (bytearray, memoryview)) else secret
    with _lock:
        target, done = _registered
        if target is not _secrets:
            _registered = (_secrets, set())
            done = _registered[1]
        if key in done:
            return
    forms = secret_forms(key)
    with _lock:
        _secrets.update(forms)
        if _registered[0] is _secrets:
            _registered[1].add(key)


# ----- discovery: secrets in what a host or a file says ----------------------------------------------

# Credentials a configuration carries in clear: HAProxy's `stats auth USER:PASSWORD` and a userlist's
# `user NAME insecure-password PASSWORD`.
_CONFIG_CREDENTIALS = re.compile(
    r"^[ \t]*(?:stats[ \t]+auth[ \t]+(?P<user>[^:\s]+):(?P<password>\S+)"
    r"|user[ \t]+(?P<luser>\S+)[ \t]+insecure-password[ \t]+(?P<lpassword>\S+))", re.MULTILINE)
# A parameter is a secret when its name says so ...
_SECRET_NAME = re.compile(r"password|passwd|passphrase|key|token|secret", re.IGNORECASE)
# ... unless it names where a secret is kept (fence_xvm's key_file, fence agents' password_script):
# masking a path would blank evidence and hide nothing.
_PATH_NAME = re.compile(r"file|path|script|dir", re.IGNORECASE)
# Values of a flag (`ssl_insecure=1`, `use_token=true`), not secrets.
_FLAG_VALUES = frozenset({"", "true", "false", "yes", "no", "on", "off", "y", "n", "0", "1"})
_NVPAIR = re.compile(r"<nvpair\b([^>]*)>")
_XML_ATTRIBUTE = re.compile(r"""([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
# pcs prints numbers as strings; corosync's `token` is a timeout in milliseconds, not a secret.
_NUMBER = re.compile(r"\s*\d+(?:\.\d+)?\s*")

_reading = threading.local()


def secret_parameter(name: str) -> bool:
    """A parameter whose value is a secret: its name says password, passwd, passphrase, key, token or
    secret (anywhere: `ipmi_password`, `apikey`, `secret_key`), and says neither file, path, script nor
    dir (anywhere: `key_file`, `passwd_script`, `keyfile`): those name where a secret is kept."""
    return bool(_SECRET_NAME.search(name)) and not _PATH_NAME.search(name)


def _register_parameter(name: str, value: Any, where: str) -> None:
    if isinstance(value, str) and value.strip().lower() not in _FLAG_VALUES and secret_parameter(name):
        register(value, what=f"the value of {name}", where=where,
                 fix=f"give {name} a value of at least {MIN_FORM} characters")


def _discover_nvpairs(text: str, where: str) -> None:
    """CIB XML: every `<nvpair name=... value=...>` whose name says it holds a secret."""
    for tag in _NVPAIR.finditer(text):
        attributes = {m.group(1): html.unescape(m.group(2) if m.group(2) is not None else m.group(3))
                      for m in _XML_ATTRIBUTE.finditer(tag.group(1))}
        if "name" in attributes and "value" in attributes:
            line = text.count("\n", 0, tag.start()) + 1
            _register_parameter(attributes["name"], attributes["value"],
                                f"{where} line {line}: nvpair {attributes['name']!r}")


def _discover_json(value: Any, where: str, path: str = "") -> None:
    """pcs JSON (`{"name": ..., "value": ...}`) and pcsd's files (known-hosts: `"token"` of each host;
    pcs 0.9's tokens: `"tokens": {host: token}`)."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            _discover_json(item, where, f"{path}[{index}]")
        return
    if not isinstance(value, dict):
        return
    if isinstance(value.get("name"), str) and "value" in value:
        _register_parameter(value["name"], value["value"], f"{where}: {path or '(top level)'} {value['name']!r}")
    for key, item in value.items():
        here = f"{path}.{key}" if path else str(key)
        if key == "token" and isinstance(item, str) and not _NUMBER.fullmatch(item):
            register(item, what="a pcsd token", where=f"{where}: {here}",
                     fix="let pcsd make its tokens (`pcs host auth`)")
        elif key == "tokens" and isinstance(item, dict):
            for host, token in item.items():
                if isinstance(token, str):
                    register(token, what="a pcsd token", where=f"{where}: {here}.{host}",
                             fix="let pcsd make its tokens (`pcs cluster auth`)")
        else:
            _discover_json(item, where, here)


def discover(text: str | bytes | None, *, source: str | None = None) -> None:
    """Register every secret a text carries, before it can reach a log: transports call this on every
    output, stage data is passed through it when loaded.  Finds HAProxy's `stats auth` and userlist
    passwords (and each USER:PASSWORD pair, the form Basic auth encodes), pcsd tokens (known-hosts),
    and every CIB nvpair or pcs JSON parameter secret_parameter() names.

    source names the text in the ShortSecret raised for a secret too short to redact."""
    if not text:
        return
    if isinstance(text, (bytes, bytearray)):
        if not any(marker in text for marker in (b"auth", b"insecure-password", b"<nvpair", b'"token',
                                                 b'"value"')):
            return
        text = bytes(text).decode("utf-8", "replace")
    elif not any(marker in text for marker in ("auth", "insecure-password", "<nvpair", '"token', '"value"')):
        return
    where = source or "a command's output"
    for match in _CONFIG_CREDENTIALS.finditer(text):
        user = match.group("user") or match.group("luser")
        password = match.group("password") or match.group("lpassword")
        directive = "stats auth" if match.group("user") else f"user {user} insecure-password"
        line = text.count("\n", 0, match.start()) + 1
        register(password, what=f"the password of `{directive}`", where=f"{where} line {line}",
                 fix="use a password of at least 4 characters")
        register(f"{user}:{password}")
    if "<nvpair" in text:
        _discover_nvpairs(text, where)
    stripped = text.lstrip()
    if stripped[:1] in ("{", "[") and ('"token' in text or '"value"' in text):
        try:
            document = json.loads(text)
        except ValueError:
            return
        _discover_json(document, where)


def discover_tree(directory: Path, *, max_bytes: int = 1 << 20) -> None:
    """discover() every file under directory (stage data: a configuration carries `stats auth`)."""
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file() and path.stat().st_size < max_bytes:
            discover(path.read_bytes(), source=str(path))


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

_PROBE = FRAGMENT // 2
# Text is probed as bytes, one per character: a character outside ASCII becomes 0x80 in the text and in
# the forms alike, so a probe that holds one still finds its runs (and merely looks up more windows).
_OUTSIDE_ASCII = "haconform.redaction.outside-ascii"
codecs.register_error(_OUTSIDE_ASCII, lambda error: (b"\x80" * (error.end - error.start), error.end))
_WORD = "I"   # memoryview format of a native 4-byte unsigned int (4 on every platform we run on): one probe


class _Patterns:
    """What redact() looks for in one kind of text (str, or bytes for redact_bytes).

    Every run of FRAGMENT units of a form is a gram; a text position is masked when a window of
    FRAGMENT units starting there is a gram.  Looking up every window would cost a set lookup per
    character; instead only windows near an aligned probe (the units at positions 0, 4, 8, ...) that is
    a 4-unit run of some form are looked up: any run of 8 contains an aligned 4-run.  Aligned probes are
    read as native ints through a memoryview of the text's bytes, one lookup per 4 units."""

    def __init__(self, kind: type):
        self.kind = kind
        self.grams: set = set()
        self.probe_words: set[int] = set()  # 4-unit runs of every form, as native ints of their bytes
        self.short: set = set()            # forms shorter than FRAGMENT: matched whole
        self._short_pattern: re.Pattern | None = None

    def add(self, form) -> None:
        if len(form) < FRAGMENT:
            self.short.add(form)
            self._short_pattern = None
            return
        self.grams.update({form[i:i + FRAGMENT] for i in range(len(form) - FRAGMENT + 1)})
        raw = form if self.kind is bytes else form.encode("ascii", _OUTSIDE_ASCII)
        for offset in range(_PROBE):
            usable = (len(raw) - offset) // _PROBE * _PROBE
            self.probe_words.update(memoryview(raw)[offset:offset + usable].cast(_WORD))

    def short_pattern(self) -> re.Pattern | None:
        if self._short_pattern is None and self.short:
            longest_first = sorted(self.short, key=len, reverse=True)
            self._short_pattern = re.compile((b"|" if self.kind is bytes else "|").join(map(re.escape, longest_first)))
        return self._short_pattern

    def _aligned_hits(self, text) -> Iterable[int]:
        usable = len(text) - len(text) % _PROBE
        data = text if self.kind is bytes else text.encode("ascii", _OUTSIDE_ASCII)
        words = memoryview(data)[:usable].cast(_WORD)
        return itertools.compress(range(0, usable, _PROBE), map(self.probe_words.__contains__, words))

    def spans(self, text) -> list[tuple[int, int]]:
        """The maximal runs of text to mask, in order, as (start, end)."""
        spans: list[tuple[int, int]] = []
        n = len(text)
        if self.grams and n >= FRAGMENT:
            grams, last = self.grams, n - FRAGMENT
            decided = -1   # every window starting at or before this position has been looked up
            for j in self._aligned_hits(text):
                if j <= decided:
                    continue   # inside a run already masked
                for i in range(max(j - _PROBE, decided + 1), min(j, last) + 1):
                    if text[i:i + FRAGMENT] in grams:
                        end = self._extend(text, i + FRAGMENT, last)
                        if spans and i <= spans[-1][1]:
                            spans[-1] = (spans[-1][0], end)
                        else:
                            spans.append((i, end))
                        decided = end
                        break
                decided = max(decided, min(j, last))
        pattern = self.short_pattern()
        if pattern is not None:
            found = [m.span() for m in pattern.finditer(text)]
            if found:
                spans = _merged(spans + found)
        return spans

    def _extend(self, text, end: int, last: int) -> int:
        """The end of the run to mask that reaches `end`: windows that touch or overlap it, one lookup
        per FRAGMENT units while the run goes on (a long secret costs n/8 lookups, not n)."""
        grams = self.grams
        while True:
            if end <= last and text[end:end + FRAGMENT] in grams:
                end += FRAGMENT
                continue
            # the furthest window starting inside the last FRAGMENT - 1 units that still matches
            for start in range(min(end - 1, last), end - FRAGMENT, -1):
                if text[start:start + FRAGMENT] in grams:
                    end = start + FRAGMENT
                    break
            else:
                return end


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _masked(text, spans, mask):
    pieces, position = [], 0
    for start, end in spans:
        pieces.append(text[position:start])
        pieces.append(mask)
        position = end
    pieces.append(text[position:])
    return mask[:0].join(pieces)


def _encodings(form: str) -> set[bytes]:
    found = set()
    for encoding, errors in (("utf-8", "surrogateescape"), ("latin-1", "strict")):
        try:
            found.add(form.encode(encoding, errors))
        except UnicodeEncodeError:
            pass
    return found


# The patterns of each kind of text, with the set they were built from and the forms added so far:
# register() only ever adds, so the same set with as many forms as were added is up to date.  Built on
# first use: a process that never redacts bytes never builds their patterns.
_built: dict[type, tuple[set[str] | None, set[str], _Patterns]] = {}


def _patterns(kind: type = str) -> _Patterns:
    with _lock:
        source, added, patterns = _built.get(kind, (None, set(), None))
        if source is not _secrets or patterns is None:
            source, added, patterns = _built[kind] = (_secrets, set(), _Patterns(kind))
        if len(added) != len(source):
            for form in source - added:
                if kind is str:
                    patterns.add(form)
                else:
                    for encoded in _encodings(form):
                        if len(encoded) >= MIN_FORM:
                            patterns.add(encoded)
                added.add(form)
        return patterns


class SecretRuns:
    """Where runs of FRAGMENT characters of one secret's forms (or the whole of a shorter form) show in
    bytes: what redact_bytes() masks, for one secret on its own, whether registered or not.  The leak
    tests count these in every file and command line a run leaves behind."""

    def __init__(self, secret: str | bytes):
        self._patterns = _Patterns(bytes)
        for form in secret_forms(secret):
            for encoded in _encodings(form):
                if len(encoded) >= MIN_FORM:
                    self._patterns.add(encoded)

    def spans(self, data: bytes) -> list[tuple[int, int]]:
        return self._patterns.spans(bytes(data))


def redaction_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) runs redact() would mask in text."""
    if not _secrets:
        return []
    return _patterns(str).spans(text)


def redact(text):
    if not isinstance(text, str) or not _secrets:
        return text
    spans = _patterns(str).spans(text)
    return _masked(text, spans, MASK) if spans else text


def redact_bytes(data: bytes) -> bytes:
    if not _secrets:
        return data
    data = bytes(data)
    spans = _patterns(bytes).spans(data)
    return _masked(data, spans, MASK.encode("utf-8")) if spans else data


def redacted_tail(text: str | bytes | None, limit: int) -> str:
    """The last `limit` characters of text, redacted before the cut: cutting first could leave a piece
    of a secret too short to be recognised.  A mask the cut would split is kept whole."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    redacted = redact(text or "")
    start = len(redacted) - limit
    if start <= 0:
        return redacted
    split = redacted.find(MASK, max(0, start - len(MASK) + 1))
    if split != -1 and split < start:
        start = split
    return redacted[start:]


def redacted_head(text: str | bytes | None, limit: int) -> str:
    """The first `limit` characters of text, redacted before the cut (see redacted_tail)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    redacted = redact(text or "")
    if len(redacted) <= limit:
        return redacted
    split = redacted.find(MASK, max(0, limit - len(MASK) + 1))
    end = split + len(MASK) if split != -1 and split < limit else limit
    return redacted[:end]


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


def redact_file(path: Path) -> bool:
    """Redact a text file in place (a report written before a secret was registered); True if it changed.

    Redacted as UTF-8 text (undecodable bytes kept as they are), so a mask never splits a character."""
    path = Path(path)
    data = path.read_bytes()
    text = data.decode("utf-8", "surrogateescape")
    redacted = redact(text)
    if redacted == text:
        return False
    temporary = path.with_name(f".{path.name}.redacting")
    temporary.write_bytes(redacted.encode("utf-8", "surrogateescape"))
    os.chmod(temporary, path.stat().st_mode & 0o7777)
    os.replace(temporary, path)
    return True


# ----- streams -----------------------------------------------------------------------------------

class RedactingStream:
    """A text stream that redacts what it passes on (pytest's terminal, sys.stdout under `-s`).

    Buffered by line: a secret written in two pieces (`write(a); write(b)`) is redacted whole.  On
    flush() the partial line is passed on except its last FRAGMENT - 1 characters: a piece of a secret
    that continues in the next write is either masked already (FRAGMENT long within the buffer) or
    kept for the next write; a mask is never split."""

    def __init__(self, stream):
        self.stream = stream
        self._pending = ""
        self._lock = threading.RLock()

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            end = self._pending.rfind("\n") + 1
            if end:
                self._pass_on(end)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._pass_on(len(self._pending) - (FRAGMENT - 1))
            self.stream.flush()

    def drain(self) -> None:
        """Pass everything on (the end of the session)."""
        with self._lock:
            self._pass_on(len(self._pending), final=True)
            self.stream.flush()

    def _pass_on(self, end: int, *, final: bool = False) -> None:
        spans = redaction_spans(self._pending)
        for start, stop in spans:
            if not final and stop == len(self._pending) and start < end:
                end = start   # a masked run reaching the end may go on in the next write: kept, masked whole later
            elif start < end < stop:
                end = stop    # never cut inside a run to mask
        if end <= 0:
            return
        shown = _masked(self._pending[:end], [s for s in spans if s[1] <= end], MASK)
        self._pending = self._pending[end:]
        try:
            self.stream.write(shown)
        except UnicodeEncodeError:   # a terminal that cannot show the mask (or the text): as pytest does
            encoding = getattr(self.stream, "encoding", None) or "ascii"
            self.stream.write(shown.encode(encoding, "backslashreplace").decode(encoding))

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        # isatty, fileno, encoding, errors, buffer...: the wrapped stream's
        return getattr(self.stream, name)


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
