"""Data-plane readers: who answered (responses), limits, Apache's access log, pcap (wire)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address
from types import SimpleNamespace

import pytest

from haconform.readers.access_log import APACHE_ACCESS_LOG, access_log_requests, parse_access_line
from haconform.readers.haproxy import HaproxyRuntime, runtime
from haconform.readers.limits import LimitsEntry, effective_limits, limits_entries, process_limits
from haconform.readers.responses import REAL_SERVER_HEADER, answers, raw_response_header, served_by
from haconform.readers.wire import WireCapture, parse_pcap


# ---------------------------------------------------------------- responses

def response(first_line="server2", status=200, ok=True, error=None, headers=None):
    return SimpleNamespace(first_line=first_line, status=status, ok=ok, error=error, headers=headers or {})


class FakeHttp:
    def __init__(self, responses):
        self.responses = list(responses)
        self.calls = []

    def get(self, url, **kwargs):
        self.calls.append((url, kwargs))
        return self.responses.pop(0)


def test_answers_are_first_lines_or_the_failure():
    http = FakeHttp([response("server2"), response("server3"), response(ok=False, status=503),
                     response(ok=False, status=None, error="timeout")])
    assert answers(http, "http://vip/", 4, timeout=1) == ["server2", "server3", "<503>", "<timeout>"]
    assert http.calls == [("http://vip/", {"timeout": 1})] * 4


def test_served_by_reads_the_real_server_header():
    assert REAL_SERVER_HEADER == "X-Real-Server"
    assert served_by(response(headers={"X-Real-Server": "server3"})) == "server3"
    assert served_by(response()) is None


def test_raw_response_header_is_case_insensitive_and_stops_at_the_body():
    raw = b"HTTP/1.0 200 OK\r\nx-real-server:  server2 \r\nContent-Length: 3\r\n\r\nX-Real-Server: body"
    assert raw_response_header(raw, "X-Real-Server") == "server2"
    assert raw_response_header(raw, "X-Other") is None
    assert raw_response_header(b"X-Real-Server: x\r\n", "X-Real-Server") is None   # the status line


def test_runtime_is_the_machines_stats_socket():
    host = object()
    socket = runtime(SimpleNamespace(host=host))
    assert isinstance(socket, HaproxyRuntime) and socket.host is host


# ---------------------------------------------------------------- limits

LIMITS = """\
# /etc/security/limits.conf
#<domain>      <type>  <item>         <value>
*               soft    core            0
haproxy         -       nofile          65535   # raised for haproxy
@staff          hard    nproc           20 extra
broken line
"""


def test_limits_entries_are_lines_of_four_words_or_more():
    # Words after the value are ignored, as the comparison of effective limits always has.
    assert limits_entries(LIMITS) == [LimitsEntry("*", "soft", "core", "0", line=3),
                                      LimitsEntry("haproxy", "-", "nofile", "65535", line=4),
                                      LimitsEntry("@staff", "hard", "nproc", "20", line=5)]


def test_effective_limits_as_pam_limits_applies_them():
    assert effective_limits(LIMITS) == {("*", "soft", "core"): ("0", 3),
                                        ("haproxy", "soft", "nofile"): ("65535", 4),
                                        ("haproxy", "hard", "nofile"): ("65535", 4),
                                        ("@staff", "hard", "nproc"): ("20", 5)}
    later = effective_limits("haproxy - nofile 4096\nhaproxy hard nofile 1024\n* soft core infinity\n"
                             "* hard core -1\n* - nproc Unlimited\n")
    assert later[("haproxy", "soft", "nofile")] == ("4096", 1) and later[("haproxy", "hard", "nofile")] == ("1024", 2)
    assert [later[("*", kind, item)][0] for kind, item in (("soft", "core"), ("hard", "core"), ("soft", "nproc"),
                                                           ("hard", "nproc"))] == ["unlimited"] * 4


def test_process_limits_reads_proc_pid_limits():
    text = ("Limit                     Soft Limit           Hard Limit           Units     \n"
            "Max cpu time              unlimited            unlimited            seconds   \n"
            "Max open files            4096                 524288               files     \n"
            "Max realtime timeout      unlimited            unlimited            us        \n")
    read = []
    machine = SimpleNamespace(read_file=lambda path: read.append(path) or text)
    limits = process_limits(machine, "1234")
    assert read == ["/proc/1234/limits"]
    assert limits["Max open files"] == {"soft": "4096", "hard": "524288", "units": "files"}
    assert limits["Max cpu time"]["units"] == "seconds" and len(limits) == 3


# ---------------------------------------------------------------- Apache's access log

LINE = ('172.25.5.1 - - [29/Nov/2024:22:16:01 +0000] "POST /upload_file.php HTTP/1.1" 200 312 "-" '
        '"curl/7.88.1"')


def test_parse_access_line():
    assert APACHE_ACCESS_LOG == "/var/log/apache2/access.log"
    entry = parse_access_line(LINE)
    assert entry["remote"] == "172.25.5.1" and entry["method"] == "POST"
    assert entry["target"] == "/upload_file.php" and entry["status"] == 200 and entry["bytes"] == "312"
    assert parse_access_line("AH00558: apache2: Could not reliably determine") is None


def test_access_log_requests_keep_only_the_target():
    other = LINE.replace("/upload_file.php", "/index.html")
    watch = SimpleNamespace(new_lines=lambda: [LINE, "garbage", other, LINE.replace("200", "404", 1)])
    found = access_log_requests(watch, "/upload_file.php")
    assert [e["status"] for e in found] == [200, 404]


# ---------------------------------------------------------------- pcap

def tcp_frame(src, sport, dst, dport, payload: bytes, *, proto=6, ethertype=b"\x08\x00") -> bytes:
    tcp = struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x18, 65535, 0, 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, proto, 0,
                     IPv4Address(src).packed, IPv4Address(dst).packed) + tcp
    return b"\x02" * 6 + b"\x04" * 6 + ethertype + ip


def pcap(*frames: bytes, endian: str = "<", linktype: int = 1) -> bytes:
    out = struct.pack(endian + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for frame in frames:
        out += struct.pack(endian + "IIII", 0, 0, len(frame), len(frame)) + frame
    return out


def test_parse_pcap_keeps_tcp_payloads_in_both_byte_orders():
    frames = [tcp_frame("172.25.5.1", 40000, "172.25.5.2", 80, b"GET / HTTP/1.1\r\n"),
              tcp_frame("172.25.5.1", 40000, "172.25.5.2", 80, b""),                # a bare ACK
              tcp_frame("172.25.5.1", 53, "172.25.5.2", 53, b"dns", proto=17),      # UDP
              tcp_frame("172.25.5.1", 1, "172.25.5.2", 2, b"v6", ethertype=b"\x86\xdd")]
    for endian in "<>":
        assert parse_pcap(pcap(*frames, endian=endian)) == [
            {"src": "172.25.5.1", "dst": "172.25.5.2", "sport": 40000, "dport": 80,
             "data": b"GET / HTTP/1.1\r\n"}]


def test_parse_pcap_refuses_what_it_cannot_read():
    assert parse_pcap(b"") == []
    with pytest.raises(ValueError, match="not a pcap stream"):
        parse_pcap(b"\x00" * 24)
    with pytest.raises(ValueError, match="link type 113 is not Ethernet"):
        parse_pcap(pcap(linktype=113))


def test_wire_capture_joins_streams_into_http_requests():
    payloads = parse_pcap(pcap(
        tcp_frame("172.25.5.1", 40000, "172.25.5.2", 80, b"POST /upload_file.php HTTP/1.1\r\nHo"),
        tcp_frame("172.25.5.2", 80, "172.25.5.1", 40000, b"HTTP/1.1 200 OK\r\n\r\n"),
        tcp_frame("172.25.5.1", 40000, "172.25.5.2", 80,
                             b"st: x\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n\r\nbody"),
        tcp_frame("172.25.5.1", 40001, "172.25.5.2", 80, b"not http at all")))
    wire = WireCapture(machine=None, port=80, payloads=payloads)
    assert list(wire.streams()) == [("172.25.5.1", 40000, "172.25.5.2", 80), ("172.25.5.1", 40001, "172.25.5.2", 80)]
    assert wire.http_requests() == [{
        "method": "POST", "target": "/upload_file.php", "peer": "172.25.5.1:40000",
        "headers": {"host": ["x"], "x-forwarded-for": ["1.2.3.4", "5.6.7.8"]}}]
