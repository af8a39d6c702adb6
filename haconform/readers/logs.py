"""Watch a log file on a host for lines written after a point in time.

In the style of Pacemaker CTS's LogWatcher: arm the watch *before* injecting a
fault, then wait until every named pattern has shown up in what was appended
since.  Lines written before arming can never satisfy a wait, so a stale
success from an earlier test cannot pass a later one.

    watch = LogWatch(host, "/var/log/haproxy.log").arm()
    ...inject...
    seen = watch.wait_for({"down": pattern("haproxy.server_down",
                                            backend="app", server="app1")})

The file is read through host commands (stat, tail, head), incrementally:
each poll reads only bytes not read before.  Rotation (a new inode) and
truncation (the file shrank) restart reading at the start of the new file;
lines already read stay in the watch.  A file that shrank but kept its inode
is what a crashed host leaves (the writes it had not synced are gone, and what
it logs after its reboot is appended to the older part that survived): reading
it again from the start skips the leading lines stamped, by the host's own
clock, before arm() (syslog and pacemaker.log stamps; a file whose lines carry
none is read whole), so an old line is not taken for a new one.  What neither
can detect: a file truncated and regrown past the read offset between two
polls (copytruncate rotation under heavy logging) - the same limit CTS's
watcher has.

A watch that must see the file (`required=True`: an audit's watch) raises
when the file is missing, at arm() or at a read, instead of reading nothing:
an audit that cannot look must not pass.  Every read is remembered with when
it began and ended (harness clock), so each line is known to have been
written between the start of the read before it and the end of the read
that returned it (seen_lines()): how audits place a line in a time window
without trusting the host's clock.  A watch may be read from several threads.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from ..timeouts import BOUNDS
from ..wait import wait_until
from . import CommandFailed, ParseError, excerpt, host_label, stdout_bytes

PatternLike = "re.Pattern[str] | str"

# How many of the newest lines a timeout message shows.
SHOWN_LINES = 5


SYSLOG_STAMP = re.compile(r"^(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<time>\d\d:\d\d:\d\d)(?:\.\d+)? ")
RFC3339_STAMP = re.compile(r"^(?P<stamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(?P<zone>Z|[+-]\d\d:?\d\d) ")


def line_stamp(line: str, host_now: datetime) -> datetime | None:
    """When a log line says it was written, by the host's clock: rsyslog's RFC 3339 stamp, or the
    traditional syslog / pacemaker.log stamp ("Nov 30 05:28:27.943", in the host's zone and, having
    no year, the one that puts it nearest host_now).  None when the line carries neither."""
    found = RFC3339_STAMP.match(line)
    if found:
        zone = found["zone"].replace("Z", "+00:00")
        try:
            return datetime.strptime(found["stamp"] + zone.replace(":", ""), "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            return None
    found = SYSLOG_STAMP.match(line)
    if not found:
        return None
    candidates = []
    for year in (host_now.year - 1, host_now.year, host_now.year + 1):
        try:
            naive = datetime.strptime(f"{year} {found['mon']} {found['day']} {found['time']}", "%Y %b %d %H:%M:%S")
        except ValueError:
            continue
        candidates.append(naive.replace(tzinfo=host_now.tzinfo or timezone.utc))
    return min(candidates, key=lambda c: abs(c - host_now), default=None)


@dataclass(frozen=True)
class LogPosition:
    """Where a file ended: its inode (None when it did not exist) and size in bytes."""

    inode: int | None
    size: int


@dataclass(frozen=True)
class SeenLine:
    """A line and when it was written, as far as the reads tell: after `after`, by `by` (harness clock)."""

    text: str
    after: float
    by: float


class LogWatch:
    """Lines appended to one file on one host since arm()."""

    def __init__(self, host: Any, path: str, *, required: bool = False):
        """required: a missing file is an error (else it reads as empty until it appears)."""
        self.host = host
        self.path = path
        self.required = required
        self._armed: LogPosition | None = None
        self._inode: int | None = None
        self._offset = 0
        self._lines: list[str] = []
        self._partial = b""
        self._armed_time: float | None = None
        self._armed_host_clock: datetime | None = None   # the host's own time at arm(), with its offset
        self._skipping_old = False                        # re-reading a shrunk file: old stamped lines go
        self._reads: list[tuple[float, float, int]] = []   # (began, ended, lines held after it)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"LogWatch({host_label(self.host)}:{self.path}, armed at {self._armed})"

    @property
    def armed_at(self) -> LogPosition | None:
        return self._armed

    def position(self) -> LogPosition:
        """The file's current inode and size; a missing file is (None, 0)."""
        result = self.host.run("stat -L -c '%%i %%s' %s", self.path)
        if result.rc != 0:
            if self._missing(result.stderr) and not self.required:
                return LogPosition(inode=None, size=0)
            raise CommandFailed(f"cannot stat {self.path}: {excerpt(result.stderr)}",
                                where=host_label(self.host))
        fields = result.stdout.split()
        if len(fields) != 2 or not all(f.isdigit() for f in fields):
            raise ParseError(f"stat printed {excerpt(result.stdout)}, expected 'inode size'",
                             where=f"{host_label(self.host)}:{self.path}")
        return LogPosition(inode=int(fields[0]), size=int(fields[1]))

    def arm(self) -> "LogWatch":
        """Remember where the file ends now; only later lines count.  Returns self."""
        with self._lock:
            began = time.time()
            self._armed = self.position()
            self._inode = self._armed.inode
            self._offset = self._armed.size
            self._lines = []
            self._partial = b""
            self._armed_time = began
            self._armed_host_clock = self._host_clock()
            self._skipping_old = False
            self._reads = []
        return self

    def _host_clock(self) -> datetime | None:
        result = self.host.run("date +%Y-%m-%dT%H:%M:%S%z")
        try:
            return datetime.strptime(result.stdout.strip(), "%Y-%m-%dT%H:%M:%S%z") if result.rc == 0 else None
        except ValueError:
            return None

    def new_lines(self) -> list[str]:
        """Complete lines appended since arm(), oldest first (a copy)."""
        with self._lock:
            if self._armed is None:
                raise RuntimeError(f"{self!r}: call arm() before reading new lines")
            began = time.time()
            now = self.position()
            if now.inode != self._inode or now.size < self._offset:
                # Rotated (new inode) or truncated: the new content starts at 0; a shrunk file
                # that kept its inode starts with what survived of the old content (a crash).
                self._skipping_old = now.inode == self._inode and now.inode is not None \
                    and self._armed_host_clock is not None
                self._inode = now.inode
                self._offset = 0
                if self._partial:
                    self._lines.append(self._partial.decode("utf-8", "replace"))
                    self._partial = b""
            if now.size > self._offset:
                self._read(self._offset, now.size - self._offset)
            self._reads.append((began, time.time(), len(self._lines)))
            return list(self._lines)

    def seen_lines(self) -> list[SeenLine]:
        """The lines read so far (no new read), each with the span it was written in."""
        with self._lock:
            if self._armed_time is None:
                raise RuntimeError(f"{self!r}: call arm() before reading new lines")
            seen, held, previous_began = [], 0, self._armed_time
            for began, ended, count in self._reads:
                seen += [SeenLine(text, previous_began, ended) for text in self._lines[held:count]]
                held, previous_began = max(held, count), began
            return seen

    @property
    def last_read(self) -> float | None:
        """When the newest successful read ended (None: none since arm)."""
        with self._lock:
            return self._reads[-1][1] if self._reads else None

    def matches(self, patterns: Mapping[str, PatternLike]) -> dict[str, list[str]]:
        """For each named pattern, the new lines it matches (no waiting)."""
        compiled = _compile_all(patterns)
        lines = self.new_lines()
        return {name: [line for line in lines if regex.search(line)]
                for name, regex in compiled.items()}

    def wait_for(self, patterns: Mapping[str, PatternLike], *, timeout: float | None = None,
                 condition: str | None = None) -> dict[str, re.Match[str]]:
        """Poll until every named pattern has matched a new line at least once.

        Returns name -> the first match (match.string is the whole line).  On
        timeout the WaitTimeout names the patterns still missing and shows the
        newest lines.
        """
        timeout = BOUNDS.log_line if timeout is None else timeout   # read when called: a calibration scales it
        compiled = _compile_all(patterns)
        found: dict[str, re.Match[str]] = {}
        scanned = 0

        def all_seen() -> dict[str, re.Match[str]] | None:
            nonlocal scanned
            lines = self.new_lines()
            fresh, scanned = lines[scanned:], len(lines)
            for line in fresh:
                for name, regex in compiled.items():
                    if name not in found:
                        hit = regex.search(line)
                        if hit:
                            found[name] = hit
            return dict(found) if len(found) == len(compiled) else None

        def observed() -> str:
            missing = [name for name in compiled if name not in found]
            return (f"missing {missing} in {self.path} on {host_label(self.host)}; "
                    f"newest lines: {self._lines[-SHOWN_LINES:]}")

        return wait_until(
            condition or f"{self.path} on {host_label(self.host)} shows {sorted(compiled)}",
            all_seen, timeout=timeout, observe=observed)

    def look_for_absence(self, patterns: Mapping[str, PatternLike]) -> dict[str, list[str]]:
        """The named patterns that DID match new lines, with those lines.

        An empty dict means none appeared.  This does not wait: first wait for
        a line that proves the log has caught up (e.g. the request's own
        httplog line), then look for what must not be there.
        """
        return {name: lines for name, lines in self.matches(patterns).items() if lines}

    def _read(self, start: int, length: int) -> None:
        result = self.host.run("tail -c +%s %s | head -c %s", str(start + 1), self.path,
                               str(length))
        if result.rc != 0:
            if self._missing(result.stderr) and not self.required:
                return  # rotated away between stat and tail; the next poll sees the new file
            raise CommandFailed(f"cannot read {self.path}: {excerpt(result.stderr)}",
                                where=host_label(self.host))
        data = self._partial + stdout_bytes(result)
        self._offset = start + len(stdout_bytes(result))
        *complete, self._partial = data.split(b"\n")
        lines = [line.decode("utf-8", "replace") for line in complete]
        if self._skipping_old:
            lines = self._drop_old(lines)
        self._lines.extend(lines)

    def _drop_old(self, lines: list[str]) -> list[str]:
        """The lines from the first one stamped at or after arm() on (see the module docstring)."""
        armed = self._armed_host_clock
        stamped_old = False
        for index, line in enumerate(lines):
            stamp = line_stamp(line, armed)
            if stamp is None and stamped_old:
                continue                  # the rest of an old record
            if stamp is not None and stamp < armed:
                stamped_old = True
                continue
            self._skipping_old = False    # new content (or a file without stamps: keep it all)
            return lines[index:]
        return []

    @staticmethod
    def _missing(stderr: str) -> bool:
        return "No such file" in (stderr or "")


def _compile_all(patterns: Mapping[str, PatternLike]) -> dict[str, re.Pattern[str]]:
    if not patterns:
        raise ValueError("give at least one named pattern")
    return {name: regex if isinstance(regex, re.Pattern) else re.compile(regex)
            for name, regex in patterns.items()}
