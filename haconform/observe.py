"""Small readers the suites share: who answered, what HAProxy's config says.

They return values; suites assert.
"""

from __future__ import annotations

import re

from .readers.haproxy import HaproxyRuntime

# HAProxy's defaults when a server line says nothing (configuration.txt 5.2).
DEFAULT_INTER_S = 2.0
DEFAULT_FALL = 3
DEFAULT_RISE = 2


def answers(http, url: str, count: int, **kwargs) -> list[str]:
    """First line of each of `count` consecutive responses (the page names its server)."""
    out = []
    for _ in range(count):
        response = http.get(url, **kwargs)
        out.append(response.first_line if response.ok else f"<{response.status or response.error}>")
    return out


def runtime(machine) -> HaproxyRuntime:
    return HaproxyRuntime(machine.host)


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)?", value)
    if not match:
        raise ValueError(f"not an HAProxy time: {value!r}")
    number, unit = float(match.group(1)), match.group(2) or "ms"
    return number * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def check_timing(config_text: str, backend: str, server: str) -> dict:
    """inter/fall/rise of one server's health check, as the applied config sets them."""
    section = None
    for raw in config_text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if raw[:1] not in (" ", "\t"):
            section = (words[0], words[1] if len(words) > 1 else None)
            continue
        if section == ("backend", backend) and words[0] == "server" and words[1] == server:
            opts = dict(zip(words[3::1], words[4::1]))
            inter = _seconds(opts["inter"]) if "inter" in opts else DEFAULT_INTER_S
            fall = int(opts.get("fall", DEFAULT_FALL))
            rise = int(opts.get("rise", DEFAULT_RISE))
            return {"inter_s": inter, "fall": fall, "rise": rise, "checked": "check" in words,
                    "down_after_s": inter * fall, "up_after_s": inter * rise}
    raise LookupError(f"no `server {server}` in backend {backend}")


# --- data-plane readers (static routing, write routing, stats, syslog, limits) ---

import os  # noqa: E402  (this block is appended; its imports stay with it)
import struct  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from ipaddress import IPv4Address  # noqa: E402

from .faults import link_holding  # noqa: E402
from .readers.logs import LogWatch  # noqa: E402
from .secrets import register  # noqa: E402
from .timeouts import BOUNDS  # noqa: E402
from .wait import wait_until  # noqa: E402

# The stage configuration's own header on every real-server response
# (fixtures/documented/README.md, "How a client tells server2 from server3").
REAL_SERVER_HEADER = "X-Real-Server"
APACHE_ACCESS_LOG = "/var/log/apache2/access.log"
HAPROXY_LOG = "/var/log/haproxy.log"

# Words that open a section of haproxy.cfg (configuration.txt 2.5 and 3).
SECTION_KEYWORDS = frozenset({
    "global", "defaults", "frontend", "backend", "listen", "userlist", "peers", "resolvers",
    "mailers", "program", "http-errors", "ring", "cache", "fcgi-app"})


def served_by(response) -> str | None:
    """Host name of the real server that answered, from its X-Real-Server header."""
    return response.headers.get(REAL_SERVER_HEADER)


def raw_response_header(data: bytes, name: str) -> str | None:
    """A header's value in the head of a raw HTTP response (bytes read off a TCP stream)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None


def frontend_director(deployment):
    """The director that serves the deployment's frontend: its own address (stages 1-3) or the VIP's holder."""
    for director in deployment.directors:
        if director.address == deployment.frontend_address:
            return director
    holders = [d for d in deployment.directors if link_holding(d, deployment.frontend_address)]
    if len(holders) != 1:
        raise LookupError(f"the frontend {deployment.frontend_label} ({deployment.frontend_address}) is held by "
                          f"{[d.name for d in holders]}, not by exactly one director")
    return holders[0]


# --- haproxy.cfg -----------------------------------------------------------------

@dataclass(frozen=True)
class ConfigSection:
    kind: str                     # global, defaults, frontend, backend, listen, ...
    name: str | None
    lines: tuple[tuple[str, ...], ...]   # words of each line, comments dropped

    def directives(self, *keyword: str) -> list[tuple[str, ...]]:
        """Arguments of each line starting with these words, e.g. directives("stats", "auth")."""
        n = len(keyword)
        return [words[n:] for words in self.lines if words[:n] == keyword]


def config_sections(config_text: str) -> list[ConfigSection]:
    """haproxy.cfg as its sections, in order; `#` starts a comment."""
    sections: list[ConfigSection] = []
    kind, name, lines = None, None, []
    for raw in config_text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] in SECTION_KEYWORDS:
            if kind is not None:
                sections.append(ConfigSection(kind, name, tuple(lines)))
            kind, name, lines = words[0], (words[1] if len(words) > 1 else None), []
        elif kind is not None:
            lines.append(tuple(words))
    if kind is not None:
        sections.append(ConfigSection(kind, name, tuple(lines)))
    return sections


def config_section(config_text: str, kind: str, name: str | None = None) -> ConfigSection:
    """The first section of this kind (and name); LookupError when there is none."""
    for section in config_sections(config_text):
        if section.kind == kind and (name is None or section.name == name):
            return section
    raise LookupError(f"no `{kind}{' ' + name if name else ''}` section in haproxy.cfg")


def config_maxconn(config_text: str, kind: str) -> int | None:
    """`maxconn` of the global or defaults section (the last one given wins), None when absent."""
    values = config_section(config_text, kind).directives("maxconn")
    return int(values[-1][0]) if values else None


def backend_servers(config_text: str, backend: str) -> dict[str, dict]:
    """Server name -> {address, weight, check} of a backend (weight defaults to 1)."""
    servers = {}
    for words in config_section(config_text, "backend", backend).directives("server"):
        name, address, options = words[0], words[1], list(words[2:])
        weight = int(options[options.index("weight") + 1]) if "weight" in options else 1
        servers[name] = {"address": address, "weight": weight, "check": "check" in options}
    return servers


def stats_credentials(config_text: str) -> dict:
    """uri, port and the (user, password) of `stats auth` in the listen section that has one.

    The password is registered as a secret the moment it is read, so it never
    reaches a report.
    """
    for section in config_sections(config_text):
        auth = section.directives("stats", "auth")
        if section.kind in ("listen", "frontend") and auth:
            user, _, password = auth[-1][0].partition(":")
            register(password)
            uri = section.directives("stats", "uri")
            binds = section.directives("bind")
            port = int(binds[0][0].rsplit(":", 1)[1]) if binds else None
            return {"section": section.name, "uri": uri[-1][0] if uri else "/haproxy?stats",
                    "port": port, "user": user, "password": password}
    raise LookupError("no `stats auth` line in a listen or frontend section")


# --- /etc/security/limits.conf ----------------------------------------------------

@dataclass(frozen=True)
class LimitsEntry:
    domain: str
    type: str        # soft, hard or -
    item: str
    value: str
    line: int


def limits_entries(text: str) -> list[LimitsEntry]:
    """The `<domain> <type> <item> <value>` lines of limits.conf(5); comments dropped."""
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        words = raw.split("#", 1)[0].split()
        if len(words) == 4:
            entries.append(LimitsEntry(*words, line=number))
    return entries


def process_limits(machine, pid: int) -> dict[str, dict[str, str]]:
    """/proc/PID/limits as 'Max open files' -> {soft, hard, units}."""
    limits = {}
    for line in machine.read_file(f"/proc/{int(pid)}/limits").splitlines()[1:]:
        match = re.match(r"(.+?)\s{2,}(\S+)\s+(\S+)\s*(\S*)\s*$", line)
        if match:
            limits[match.group(1)] = {"soft": match.group(2), "hard": match.group(3),
                                      "units": match.group(4)}
    return limits


# --- Apache's access log on the real servers -----------------------------------------

# Debian's `combined` LogFormat: %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"
_ACCESS_LINE = re.compile(
    r'^(?P<remote>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] '
    r'"(?P<method>\S+) (?P<target>\S+) (?P<protocol>[^"]+)" (?P<status>\d{3}) (?P<bytes>\S+)')


def parse_access_line(line: str) -> dict | None:
    """One line of Apache's access log (common/combined format); None if it is not one."""
    match = _ACCESS_LINE.match(line)
    if not match:
        return None
    entry = match.groupdict()
    entry["status"] = int(entry["status"])
    return entry


def access_log_watches(machines) -> dict[str, LogWatch]:
    """An armed watch on the access log of each machine, by host name."""
    return {machine.name: LogWatch(machine.host, APACHE_ACCESS_LOG).arm() for machine in machines}


def access_log_requests(watch: LogWatch, target: str) -> list[dict]:
    """New access-log entries (since the watch was armed) for exactly this request target."""
    entries = (parse_access_line(line) for line in watch.new_lines())
    return [entry for entry in entries if entry and entry["target"] == target]


# --- what arrives on a machine's NIC -------------------------------------------------

@dataclass
class WireCapture:
    """TCP payloads seen on a machine's eth0 (tcpdump's pcap stream, parsed here)."""

    machine: object
    port: int
    payloads: list[dict] = field(default_factory=list)   # src, sport, dst, dport, data
    stderr: str = ""

    def streams(self) -> dict[tuple, bytes]:
        """Client-to-server bytes per TCP connection, in arrival order."""
        out: dict[tuple, bytes] = {}
        for p in self.payloads:
            if p["dport"] == self.port:
                key = (p["src"], p["sport"], p["dst"], p["dport"])
                out[key] = out.get(key, b"") + p["data"]
        return out

    def http_requests(self) -> list[dict]:
        """Each HTTP request head sent to the port: method, target (as sent), headers, peer."""
        requests = []
        for (src, sport, _dst, _dport), data in self.streams().items():
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            first, *header_lines = head.split("\r\n")
            parts = first.split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                continue
            headers: dict[str, list[str]] = {}
            for line in header_lines:
                key, sep, value = line.partition(":")
                if sep:
                    headers.setdefault(key.strip().lower(), []).append(value.strip())
            requests.append({"method": parts[0], "target": parts[1], "headers": headers,
                             "peer": f"{src}:{sport}"})
        return requests


def parse_pcap(data: bytes) -> list[dict]:
    """TCP/IPv4 payloads in a pcap stream of Ethernet frames (libpcap file format)."""
    if len(data) < 24:
        return []
    magic = data[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
              b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}.get(magic)
    if endian is None:
        raise ValueError(f"not a pcap stream (magic {magic.hex()})")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != 1:
        raise ValueError(f"pcap link type {linktype} is not Ethernet")
    payloads, offset = [], 24
    while offset + 16 <= len(data):
        incl_len = struct.unpack(endian + "I", data[offset + 8:offset + 12])[0]
        frame = data[offset + 16:offset + 16 + incl_len]
        offset += 16 + incl_len
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        if ip[9] != 6:
            continue
        tcp = ip[ihl:total]
        data_offset = (tcp[12] >> 4) * 4
        body = tcp[data_offset:]
        if body:
            payloads.append({"src": str(IPv4Address(ip[12:16])), "dst": str(IPv4Address(ip[16:20])),
                             "sport": struct.unpack(">H", tcp[0:2])[0],
                             "dport": struct.unpack(">H", tcp[2:4])[0], "data": bytes(body)})
    return payloads


class capture_tcp:
    """Context manager: what reaches TCP `port` on a machine's eth0 while the block runs.

        with capture_tcp(server2, 80, until=lambda wire: wire.http_requests()) as wire:
            http.get(...)
        wire.http_requests()

    Runs tcpdump inside the machine (itself bounded by `timeout`), waits until
    it listens before the block starts; on leaving the block, waits (at most
    BOUNDS.log_line) until `until(capture)` holds on what has arrived so far,
    then stops tcpdump by its own pid.  The caller asserts on what it got.
    """

    def __init__(self, machine, port: int, *, until=None, interface: str = "eth0",
                 bound: float = BOUNDS.command):
        self.capture = WireCapture(machine, port)
        self.until = until
        self.interface = interface
        self.bound = bound
        self._process: subprocess.Popen | None = None
        self._stderr_lines: list[str] = []
        self._stdout = bytearray()
        self._threads: list[threading.Thread] = []
        self._pid: int | None = None

    def _read_stdout(self) -> None:
        fd = self._process.stdout.fileno()
        while chunk := os.read(fd, 65536):
            self._stdout.extend(chunk)

    def _read_stderr(self) -> None:
        for raw in self._process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if self._pid is None and line.isdigit():
                self._pid = int(line)
            self._stderr_lines.append(line)

    def _parse(self) -> WireCapture:
        self.capture.payloads = parse_pcap(bytes(self._stdout))
        self.capture.stderr = "\n".join(self._stderr_lines)
        return self.capture

    def __enter__(self) -> WireCapture:
        # --immediate-mode: hand each packet over at once, not when a kernel block fills.
        script = (f'echo $$ >&2; exec timeout {int(self.bound)} tcpdump -i {self.interface} -n -U '
                  f'--immediate-mode -s 0 -w - "tcp port {int(self.capture.port)}"')
        self._process = subprocess.Popen([*self.capture.machine.argv(), "/bin/sh", "-c", script],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._threads:
            thread.start()
        wait_until(f"tcpdump listening on {self.capture.machine.name}:{self.interface}",
                   lambda: any("listening on" in line for line in self._stderr_lines)
                   or self._process.poll() is not None,
                   timeout=BOUNDS.service_start, observe=lambda: self._stderr_lines[-3:])
        if self._process.poll() is not None:
            raise RuntimeError(f"tcpdump on {self.capture.machine.name} exited: {self._stderr_lines}")
        return self.capture

    def __exit__(self, exc_type, *exc_info) -> None:
        if exc_type is None and self.until is not None:
            try:
                wait_until(f"the capture on {self.capture.machine.name} holds what was awaited",
                           lambda: self.until(self._parse()), timeout=BOUNDS.log_line)
            except Exception:  # noqa: BLE001 - the caller asserts on what was captured
                pass
        if self._pid is not None and self._process.poll() is None:
            # SIGINT: tcpdump writes what it holds and exits; timeout(1) passes the signal on.
            self.capture.machine.execute(f"kill -INT {self._pid}")
        try:
            self._process.wait(timeout=BOUNDS.service_stop)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=BOUNDS.service_stop)
        for thread in self._threads:
            thread.join(timeout=BOUNDS.service_stop)
        self._parse()
