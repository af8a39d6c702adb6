"""HAProxy's state: the runtime API over its stats socket, the stats page CSV,
and the httplog lines rsyslog writes to /var/log/haproxy.log.

Formats are those documented for HAProxy 2.6 (management.txt "9.1. CSV format",
"show info", "show servers state"; configuration.txt "8.2.3. HTTP log format")
and were checked against output recorded from haproxy 2.6.12 (tests/data/haproxy).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Iterator

from ..timeouts import BOUNDS
from . import CommandFailed, ParseError, excerpt, host_label, run_command

# The runbook's `stats socket /var/lib/haproxy/stats`.
DEFAULT_STATS_SOCKET = "/var/lib/haproxy/stats"
# Where the runbook's rsyslog rule (`local2.*`) writes HAProxy's log.
HAPROXY_LOG = "/var/log/haproxy.log"

# Sends one line to a UNIX socket and prints the reply; used where socat is
# not installed.  HAProxy's CLI closes the connection after answering a
# non-interactive command, so reading to EOF is the whole reply.
_PYTHON_CLIENT = (
    "import socket,sys;"
    "s=socket.socket(socket.AF_UNIX);"
    "s.connect(sys.argv[1]);"
    "s.sendall(sys.argv[2].encode()+b'\\n');"
    "sys.stdout.buffer.write(b''.join(iter(lambda:s.recv(65536),b'')))"
)


class HaproxyRuntime:
    """Read-only view of one HAProxy process through its stats socket.

        runtime = HaproxyRuntime(host)            # /var/lib/haproxy/stats
        runtime.info()["Maxconn"]                 # 4000
        runtime.stat().server("app", "app1").state  # "UP"

    Only `show ...` commands are sent: a reader never changes what it observes.
    """

    def __init__(self, host: Any, socket_path: str = DEFAULT_STATS_SOCKET, *,
                 transport: str | None = None, timeout: float | None = None):
        if transport not in (None, "socat", "python3"):
            raise ValueError(f"transport must be 'socat' or 'python3', not {transport!r}")
        self.host = host
        self.socket_path = socket_path
        self._timeout = timeout
        self._transport = transport

    @property
    def timeout(self) -> float:
        """The bound of one query: given, or BOUNDS.cli_query read when the query is sent (calibrated)."""
        return BOUNDS.cli_query if self._timeout is None else self._timeout

    @property
    def transport(self) -> str:
        """'socat' when the host has it, else a python3 one-liner."""
        if self._transport is None:
            found = self.host.run("command -v socat")
            self._transport = "socat" if found.rc == 0 and found.stdout.strip() else "python3"
        return self._transport

    def query(self, command: str) -> str:
        """Send one `show ...` command and return HAProxy's reply text."""
        if not re.fullmatch(r"show [a-z][\w .:/-]*", command):
            raise ValueError(f"only simple 'show ...' commands are sent, not {command!r}")
        limit = f"{self.timeout:g}"
        if self.transport == "socat":
            result = run_command(
                self.host, "echo %s | timeout %s socat stdio %s",
                command, limit, f"UNIX-CONNECT:{self.socket_path}",
            )
        else:
            result = run_command(
                self.host, "timeout %s python3 -c %s %s %s",
                limit, _PYTHON_CLIENT, self.socket_path, command,
            )
        reply = result.stdout
        first = reply.strip().splitlines()[0] if reply.strip() else ""
        if first.startswith(("Unknown command", "Permission denied")):
            raise CommandFailed(
                f"HAProxy refused `{command}` on {self.socket_path}: {excerpt(first)}",
                where=host_label(self.host),
                fix="the stats socket needs 'level operator' or higher for this command"
                if first.startswith("Permission") else None,
            )
        return reply

    def info(self) -> dict[str, int | str]:
        """`show info` as a dict; numeric values are ints (Maxconn, Ulimit-n, ...)."""
        return parse_show_info(self.query("show info"), source=self._source("show info"))

    def stat(self) -> StatTable:
        """`show stat`: one row per frontend, backend, server and listener."""
        return parse_stat_csv(self.query("show stat"), source=self._source("show stat"))

    def servers_state(self, backend: str | None = None) -> list[ServerState]:
        """`show servers state [backend]`: operational and admin state per server."""
        command = "show servers state" + (f" {backend}" if backend else "")
        return parse_servers_state(self.query(command), source=self._source(command))

    def _source(self, command: str) -> str:
        return f"{host_label(self.host)}:{self.socket_path} `{command}`"


def runtime(machine) -> HaproxyRuntime:
    """The runtime API of the HAProxy on a deployment machine (one with a `.host`)."""
    return HaproxyRuntime(machine.host)


# --- show info --------------------------------------------------------------

_INT = re.compile(r"-?\d+")


def parse_show_info(text: str, *, source: str = "show info") -> dict[str, int | str]:
    """Parse `Key: value` lines; values that are whole numbers become ints."""
    info: dict[str, int | str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            if line.endswith(":"):  # a key with an empty value
                key, value = line[:-1], ""
            else:
                raise ParseError(f"line {number} is not 'Key: value': {excerpt(line)}",
                                 where=source)
        info[key] = int(value) if _INT.fullmatch(value) else value
    if "Pid" not in info or "Maxconn" not in info:
        raise ParseError(f"no Pid/Maxconn fields, so this is not `show info` output: "
                         f"{excerpt(text)}", where=source)
    return info


# --- show stat / stats page CSV ----------------------------------------------

# Column `type` of the CSV (management.txt 9.1, field 32).
_ROW_KINDS = {"0": "frontend", "1": "backend", "2": "server", "3": "listener"}


@dataclass(frozen=True)
class StatRow:
    """One CSV row of `show stat` or the stats page, addressed by column name."""

    proxy: str                    # pxname
    name: str                     # svname: FRONTEND, BACKEND, or the server/listener name
    kind: str                     # frontend | backend | server | listener
    fields: dict[str, str] = field(repr=False, compare=False)

    def get(self, column: str) -> str:
        """Raw value of a column ('' when empty); unknown columns are an error."""
        try:
            return self.fields[column]
        except KeyError:
            raise KeyError(f"no column {column!r} in stats of {self.proxy}/{self.name}") from None

    def number(self, column: str) -> int | None:
        """A numeric column as int, None when HAProxy left it empty."""
        value = self.get(column)
        if value == "":
            return None
        try:
            return int(value)
        except ValueError:
            raise ParseError(f"column {column!r} of {self.proxy}/{self.name} is not a number: "
                             f"{excerpt(value)}", where="stats CSV") from None

    @property
    def status(self) -> str:
        """Raw status text: UP, DOWN, MAINT, DRAIN, NOLB, 'no check', 'UP 1/3', OPEN..."""
        return self.fields.get("status", "")

    @property
    def state(self) -> str:
        """Status without transition counters or detail: 'UP 1/3' -> 'UP',
        'MAINT (via x/y)' -> 'MAINT'; 'no check' stays as it is."""
        status = self.status
        if status == "no check":
            return status
        match = re.match(r"[A-Z]+", status)
        return match.group(0) if match else status

    @property
    def check_status(self) -> str:
        """Last health check result (L4OK, L4CON, L7STS...), '' when not checked.
        A check in progress is reported by HAProxy as '* L4OK'; the star is dropped."""
        return self.fields.get("check_status", "").removeprefix("* ")

    @property
    def check_running(self) -> bool:
        return self.fields.get("check_status", "").startswith("* ")

    @property
    def weight(self) -> int | None:
        return self.number("weight")

    @property
    def scur(self) -> int | None:
        """Current sessions."""
        return self.number("scur")

    @property
    def stot(self) -> int | None:
        """Sessions since start."""
        return self.number("stot")

    @property
    def lbtot(self) -> int | None:
        """Times the load balancer picked this server."""
        return self.number("lbtot")

    @property
    def addr(self) -> str:
        return self.fields.get("addr", "")


@dataclass(frozen=True)
class StatTable:
    """All rows of one `show stat` (or stats page CSV) dump."""

    rows: tuple[StatRow, ...]
    columns: tuple[str, ...]

    def proxies(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.setdefault(row.proxy, None)
        return list(seen)

    def frontend(self, proxy: str) -> StatRow:
        return self._one(proxy, "FRONTEND")

    def backend(self, proxy: str) -> StatRow:
        return self._one(proxy, "BACKEND")

    def servers(self, backend: str) -> list[StatRow]:
        """The server rows of a backend (or listen section), in configuration order."""
        if backend not in self.proxies():
            raise KeyError(f"no proxy {backend!r} in stats; proxies: {self.proxies()}")
        return [row for row in self.rows if row.proxy == backend and row.kind == "server"]

    def server(self, backend: str, name: str) -> StatRow:
        return self._one(backend, name)

    def states(self, backend: str) -> dict[str, str]:
        """Server name -> state (UP/DOWN/MAINT/...) of a backend."""
        return {row.name: row.state for row in self.servers(backend)}

    def _one(self, proxy: str, name: str) -> StatRow:
        for row in self.rows:
            if row.proxy == proxy and row.name == name:
                return row
        raise KeyError(f"no row {proxy}/{name} in stats; rows: "
                       f"{[f'{r.proxy}/{r.name}' for r in self.rows]}")


def parse_stat_csv(text: str, *, source: str = "show stat") -> StatTable:
    """Parse the CSV of `show stat` or of the stats page (`/status;csv`).

    The first line is the '# pxname,svname,...' header; every later non-empty
    line is a row, read by column name (columns after the '-' marker may move
    between versions, so no position is assumed).
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# pxname,svname,"):
        raise ParseError(f"no '# pxname,svname,...' header, so this is not HAProxy stats CSV: "
                         f"{excerpt(text)}", where=source)
    header = next(csv.reader([lines[0][2:]]))
    # Every line ends with a comma, which makes one unnamed empty column.
    while header and header[-1] == "":
        header.pop()
    rows = []
    for number, values in enumerate(csv.reader(io.StringIO("\n".join(lines[1:]))), start=2):
        if values and values[-1] == "" and len(values) == len(header) + 1:
            values = values[:-1]
        if len(values) != len(header):
            raise ParseError(f"line {number} has {len(values)} fields, the header {len(header)}: "
                             f"{excerpt(','.join(values))}", where=source)
        fields = dict(zip(header, values))
        kind = _ROW_KINDS.get(fields.get("type", ""))
        if kind is None:
            raise ParseError(f"line {number} has unknown type {fields.get('type')!r}",
                             where=source)
        rows.append(StatRow(proxy=fields["pxname"], name=fields["svname"], kind=kind,
                            fields=fields))
    return StatTable(rows=tuple(rows), columns=tuple(header))


# --- show servers state --------------------------------------------------------

# srv_op_state values (management.txt, "show servers state").
OP_STATES = {0: "STOPPED", 1: "STARTING", 2: "RUNNING", 3: "STOPPING"}
# srv_admin_state bits.
ADMIN_FMAINT, ADMIN_IMAINT, ADMIN_CMAINT = 0x01, 0x02, 0x04
ADMIN_FDRAIN, ADMIN_IDRAIN, ADMIN_RMAINT, ADMIN_HMAINT = 0x08, 0x10, 0x20, 0x40
_MAINT_BITS = ADMIN_FMAINT | ADMIN_IMAINT | ADMIN_CMAINT | ADMIN_RMAINT
_DRAIN_BITS = ADMIN_FDRAIN | ADMIN_IDRAIN
# srv_check_result values.
CHECK_RESULTS = {0: "UNKNOWN", 1: "NEUTRAL", 2: "FAILED", 3: "PASSED", 4: "CONDPASS"}


@dataclass(frozen=True)
class ServerState:
    """One line of `show servers state` (format version 1)."""

    backend: str
    server: str
    addr: str
    op_state: int                 # srv_op_state
    admin_state: int              # srv_admin_state bit mask
    user_weight: int              # srv_uweight
    initial_weight: int           # srv_iweight
    check_result: int             # srv_check_result
    fields: dict[str, str] = field(repr=False, compare=False)

    @property
    def operational(self) -> str:
        """STOPPED / STARTING / RUNNING / STOPPING."""
        return OP_STATES.get(self.op_state, str(self.op_state))

    @property
    def in_maintenance(self) -> bool:
        return bool(self.admin_state & _MAINT_BITS)

    @property
    def draining(self) -> bool:
        return bool(self.admin_state & _DRAIN_BITS)

    @property
    def check(self) -> str:
        """Last check result: UNKNOWN / NEUTRAL / FAILED / PASSED / CONDPASS."""
        return CHECK_RESULTS.get(self.check_result, str(self.check_result))


def parse_servers_state(text: str, *, source: str = "show servers state") -> list[ServerState]:
    """Parse `show servers state`: a version line, a '# be_id be_name ...' header, rows."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ParseError("empty reply, expected a format version line", where=source)
    if lines[0].strip() != "1":
        raise ParseError(f"format version {excerpt(lines[0])} is not the version 1 this parser "
                         f"knows", where=source,
                         fix="check management.txt of this HAProxy for the new columns")
    if len(lines) < 2 or not lines[1].startswith("# be_id "):
        raise ParseError(f"no '# be_id be_name ...' header after the version line: "
                         f"{excerpt(text)}", where=source)
    header = lines[1][2:].split()
    states = []
    for number, line in enumerate(lines[2:], start=3):
        if line.startswith("#"):
            continue
        values = line.split()
        if len(values) != len(header):
            raise ParseError(f"line {number} has {len(values)} fields, the header "
                             f"{len(header)}: {excerpt(line)}", where=source)
        fields = dict(zip(header, values))
        try:
            states.append(ServerState(
                backend=fields["be_name"], server=fields["srv_name"], addr=fields["srv_addr"],
                op_state=int(fields["srv_op_state"]),
                admin_state=int(fields["srv_admin_state"]),
                user_weight=int(fields["srv_uweight"]),
                initial_weight=int(fields["srv_iweight"]),
                check_result=int(fields["srv_check_result"]),
                fields=fields,
            ))
        except KeyError as missing:
            raise ParseError(f"header lacks column {missing}", where=source) from None
        except ValueError:
            raise ParseError(f"line {number} has a non-numeric state: {excerpt(line)}",
                             where=source) from None
    return states


# --- httplog lines --------------------------------------------------------------

# The syslog part rsyslog puts before HAProxy's message: a traditional
# ("Nov 26 11:35:57") or RFC 3339 ("2026-11-26T11:35:42+00:00") timestamp,
# the sender's host name, then the tag "haproxy[pid]:".  A line without it
# (HAProxy logging to stdout) is accepted too.
_SYSLOG_PREFIX = re.compile(
    r"^(?:(?P<syslog_time>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"
    r"|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d))"
    r" (?P<syslog_host>\S+) )?"
    r"(?:(?P<process>[\w.-]+)\[(?P<pid>\d+)\]: )?"
)

# `option httplog` = log-format "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B
# %CC %CS %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %hr %hs %{+Q}r" (configuration.txt 8.2.3).
_HTTPLOG_START = re.compile(r"\S+:\d+ \[\d\d/[A-Z][a-z]{2}/\d{4}:")
_HTTPLOG = re.compile(
    r"(?P<client_ip>\S+):(?P<client_port>\d+)"
    r" \[(?P<accept_date>[^\]]+)\]"
    r" (?P<frontend>\S+)"
    r" (?P<backend>[^/\s]+)/(?P<server>\S+)"
    r" (?P<TR>-?\d+)/(?P<Tw>-?\d+)/(?P<Tc>-?\d+)/(?P<Tr>-?\d+)/(?P<Ta>\+?-?\d+)"
    r" (?P<status>-?\d+)"
    r" (?P<bytes_read>\+?\d+)"
    r" (?P<request_cookie>\S+) (?P<response_cookie>\S+)"
    r" (?P<termination_state>\S{4})"
    r" (?P<actconn>\d+)/(?P<feconn>\d+)/(?P<beconn>\d+)/(?P<srv_conn>\d+)/(?P<retries>\+?\d+)"
    r" (?P<srv_queue>\d+)/(?P<backend_queue>\d+)"
    r"(?: \{(?P<request_headers>[^}]*)\})?"
    r"(?: \{(?P<response_headers>[^}]*)\})?"
    r' "(?P<request>.*)"$'
)
_REQUEST_LINE = re.compile(r"(?P<method>[A-Z]+) (?P<path>\S+) (?P<version>HTTP/[\d.]+)")


@dataclass(frozen=True)
class HttpLogEntry:
    """One request as HAProxy's httplog line tells it."""

    client_ip: str
    client_port: int
    accept_date: datetime         # %tr: first byte of the request received
    frontend: str                 # %ft, without the '~' HAProxy adds for TLS
    backend: str
    server: str                   # '<NOSRV>' when no server was picked, '<STATS>' for stats
    status: int                   # -1 when no response was sent
    bytes_read: int
    termination_state: str        # '----' for a normal end
    timers: dict[str, int]        # TR Tw Tc Tr Ta in ms (-1: not reached)
    retries: int
    request: str                  # the quoted request line, as logged
    method: str | None            # None when the request line is not 'METHOD PATH HTTP/x'
    path: str | None
    http_version: str | None
    tls: bool = False
    syslog_time: str | None = None
    syslog_host: str | None = None
    pid: int | None = None
    raw: str = field(default="", repr=False, compare=False)


def is_httplog_line(line: str) -> bool:
    """Whether the message part of a log line starts like an httplog line."""
    return _HTTPLOG_START.match(_message(line)) is not None


def _message(line: str) -> str:
    prefix = _SYSLOG_PREFIX.match(line.rstrip("\n"))
    return line.rstrip("\n")[prefix.end():] if prefix else line.rstrip("\n")


def parse_httplog_line(line: str) -> HttpLogEntry:
    """Parse one line of /var/log/haproxy.log written for `option httplog`."""
    text = line.rstrip("\n")
    prefix = _SYSLOG_PREFIX.match(text)
    message = text[prefix.end():]
    found = _HTTPLOG.fullmatch(message)
    if found is None:
        raise ParseError(f"not an HAProxy httplog line (configuration.txt 8.2.3): "
                         f"{excerpt(text)}", where="httplog")
    try:
        accept_date = datetime.strptime(found["accept_date"], "%d/%b/%Y:%H:%M:%S.%f")
    except ValueError:
        raise ParseError(f"accept date {found['accept_date']!r} is not dd/Mon/yyyy:hh:mm:ss.ms",
                         where="httplog") from None
    request_line = _REQUEST_LINE.fullmatch(found["request"])
    frontend = found["frontend"]
    pid = prefix["pid"]
    return HttpLogEntry(
        client_ip=found["client_ip"],
        client_port=int(found["client_port"]),
        accept_date=accept_date,
        frontend=frontend.removesuffix("~"),
        backend=found["backend"],
        server=found["server"],
        status=int(found["status"]),
        bytes_read=int(found["bytes_read"].lstrip("+")),
        termination_state=found["termination_state"],
        timers={key: int(found[key].lstrip("+")) for key in ("TR", "Tw", "Tc", "Tr", "Ta")},
        retries=int(found["retries"].lstrip("+")),
        request=found["request"],
        method=request_line["method"] if request_line else None,
        path=request_line["path"] if request_line else None,
        http_version=request_line["version"] if request_line else None,
        tls=frontend.endswith("~"),
        syslog_time=prefix["syslog_time"],
        syslog_host=prefix["syslog_host"],
        pid=int(pid) if pid else None,
        raw=text,
    )


def httplog_entries(lines: Iterable[str]) -> list[HttpLogEntry]:
    """The httplog entries among log lines.

    Other HAProxy messages (server state changes, alerts) are skipped; a line
    that starts like an httplog line but does not parse is an error, so a
    format change cannot silently hide requests.
    """
    return list(_iter_httplog(lines))


def _iter_httplog(lines: Iterable[str]) -> Iterator[HttpLogEntry]:
    for line in lines:
        if line.strip() and is_httplog_line(line):
            yield parse_httplog_line(line)
