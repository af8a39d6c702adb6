"""What arrives on a machine's NIC: a tcpdump capture and the pcap stream it writes."""

from __future__ import annotations

import os
import struct
import subprocess
import threading
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from ..timeouts import BOUNDS
from ..wait import wait_until


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
                 bound: float | None = None):
        bound = BOUNDS.command if bound is None else bound   # read when called: a calibration scales it
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
                self.capture.machine.started_process(self._pid)
            self._stderr_lines.append(line)

    def _parse(self) -> WireCapture:
        self.capture.payloads = parse_pcap(bytes(self._stdout))
        self.capture.stderr = "\n".join(self._stderr_lines)
        return self.capture

    def __enter__(self) -> WireCapture:
        # --immediate-mode: hand each packet over at once, not when a kernel block fills.
        script = (f'echo $$ >&2; exec timeout {int(self.bound)} tcpdump -i {self.interface} -n -U '
                  f'--immediate-mode -s 0 -w - "tcp port {int(self.capture.port)}"')
        self._process = subprocess.Popen(self.capture.machine.program(["/bin/sh", "-c", script]),
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
            self.capture.machine.signal_own_process(self._pid, "INT")
        try:
            self._process.wait(timeout=BOUNDS.service_stop)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=BOUNDS.service_stop)
        for thread in self._threads:
            thread.join(timeout=BOUNDS.service_stop)
        self._parse()
