"""FenceDaemon against Debian's real fence_xvm, inside a throwaway network namespace.

The namespace has only loopback, with MULTICAST on and 224.0.0.0/4 routed to
it.  fence_xvm runs in it (ip netns exec); the daemon runs in this process and
makes its sockets in it through netns_socket_factory, as the lab does.

What fence_xvm 4.12.1 (fence-virt) prints and returns, seen in these tests:
    -o list      stdout one line per domain, "%-32s %s %s" (name, UUID, on|off),
                 sorted by name; exit 0
    -o status    stdout "Status: ON", exit 0 / "Status: OFF", exit 2 (RESP_OFF)
    -o on|off|reboot   no output, exit 0; RESP_FAIL: "Operation failed", exit 1
    -o monitor   exit 0; -o null: "Operation failed", exit 1 (as fence_virtd's libvirt backend)
    no answer    "Timed out waiting for response" then "Operation failed", exit 1,
                 after -t seconds (rounded down to whole -r retransmit periods)
Debian's build writes all of these messages to stdout, stderr stays empty
(upstream main.c has fprintf(stderr, ...) for the failures).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from haconform.errors import HaconformError
from haconform.fence import protocol
from haconform.fence.daemon import Domain, FenceDaemon, PowerControl, netns_socket_factory
from haconform.fence.protocol import Hash
from haconform.timeouts import BOUNDS
from haconform.wait import wait_until

FENCE_XVM = "/usr/sbin/fence_xvm"
REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(not os.path.exists(FENCE_XVM), reason="fence-virt (fence_xvm) is not installed"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 is not installed"),
]


def domain_uuid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.hctest"))


class FakePower:
    """PowerControl over a dict; remembers every action asked of it."""

    def __init__(self, states: dict[str, str]):
        self._lock = threading.Lock()
        self._states = dict(states)
        self.actions: list[tuple[str, str]] = []

    def domains(self) -> list[Domain]:
        with self._lock:
            return [Domain(name, domain_uuid(name), state) for name, state in self._states.items()]

    def status(self, name: str) -> str:
        with self._lock:
            return self._states[name]

    def _act(self, action: str, name: str, end_state: str) -> None:
        with self._lock:
            self.actions.append((action, name))
            self._states[name] = end_state

    def on(self, name: str) -> None:
        self._act("on", name, "on")

    def off(self, name: str) -> None:
        self._act("off", name, "off")

    def reboot(self, name: str) -> None:
        self._act("reboot", name, "on")


def cli_power_factory(mapping: dict[str, str]) -> FakePower:
    """For the command-line test: one powered-on domain per --map entry."""
    return FakePower({domain: "on" for domain in mapping})


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=BOUNDS.command)


@pytest.fixture(scope="module")
def netns():
    name = f"hctest-fence-{os.getpid()}"
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        run("ip", "-n", name, "link", "set", "lo", "multicast", "on")
        run("ip", "-n", name, "route", "add", "224.0.0.0/4", "dev", "lo")
        yield name
    finally:
        run("ip", "netns", "delete", name, check=False)


@pytest.fixture(scope="module")
def in_netns(netns):
    return netns_socket_factory(f"/run/netns/{netns}")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fence-keys")
    ours, other = directory / "fence_xvm.key", directory / "other.key"
    ours.write_bytes(os.urandom(128))
    other.write_bytes(os.urandom(128))
    return {"ours": str(ours), "other": str(other)}


@pytest.fixture
def power():
    return FakePower({"Node1": "on", "Node4": "on"})


class Clock:
    """Monotonic time that a test can move forward (to age fence_virtd's history)."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def request_log(tmp_path):
    return tmp_path / "fence-requests.jsonl"


@pytest.fixture
def daemon(keys, power, in_netns, request_log, clock):
    with FenceDaemon(keys["ours"], power, socket_factory=in_netns, interface_address="127.0.0.1",
                     request_log=str(request_log), clock=clock) as running:
        yield running


def fence_xvm(netns: str, key: str, *args: str, timeout: int = 5) -> subprocess.CompletedProcess:
    started = time.monotonic()
    done = run("ip", "netns", "exec", netns, FENCE_XVM, "-k", key, "-t", str(timeout), *args, check=False)
    done.seconds = time.monotonic() - started
    return done


def answered(daemon: FenceDaemon, count: int, what: str) -> list[dict]:
    """Wait until the daemon has logged `count` requests; return them."""
    return wait_until(f"fence daemon logged {count} request(s): {what}",
                      lambda: list(daemon.requests) if len(daemon.requests) >= count else None,
                      timeout=BOUNDS.fence_request, observe=lambda: list(daemon.requests))


# --- the operations ---

def test_list_prints_every_domain_as_fence_xvm_formats_it(netns, keys, daemon, power):
    power.off("Node4")
    result = fence_xvm(netns, keys["ours"], "-o", "list")
    assert result.returncode == 0, result
    expected = [protocol.HostEntry(d.name, d.uuid, 1 if d.state == "on" else 5).client_line()
                for d in sorted(power.domains(), key=lambda d: d.name.lower())]
    assert result.stdout.splitlines() == expected
    assert result.stdout.splitlines()[1].split() == ["Node4", domain_uuid("Node4"), "off"]
    [entry] = answered(daemon, 1, "list")
    assert (entry["operation"], entry["result"], entry["code"], entry["hosts"]) == ("list", "success", 0, ["Node1", "Node4"])


def test_status_of_a_running_domain(netns, keys, daemon):
    result = fence_xvm(netns, keys["ours"], "-o", "status", "-H", "Node1")
    assert (result.returncode, result.stdout.strip()) == (0, "Status: ON"), result


def test_status_of_a_domain_that_is_off_exits_2(netns, keys, daemon, power):
    power.off("Node1")
    result = fence_xvm(netns, keys["ours"], "-o", "status", "-H", "Node1")
    assert (result.returncode, result.stdout.strip()) == (protocol.Result.OFF, "Status: OFF"), result


def test_off_on_reboot_change_the_power_state(netns, keys, daemon, power):
    off = fence_xvm(netns, keys["ours"], "-o", "off", "-H", "Node4")
    assert off.returncode == 0, off
    assert power.status("Node4") == "off"
    on = fence_xvm(netns, keys["ours"], "-o", "on", "-H", "Node4")
    assert on.returncode == 0, on
    assert power.status("Node4") == "on"
    reboot = fence_xvm(netns, keys["ours"], "-o", "reboot", "-H", "Node4")
    assert reboot.returncode == 0, reboot
    assert power.actions == [("off", "Node4"), ("on", "Node4"), ("reboot", "Node4")]
    entries = answered(daemon, 3, "off, on, reboot")
    assert [(e["operation"], e["domain"], e["result"], e["source"]) for e in entries] == [
        ("off", "Node4", "success", "127.0.0.1"), ("on", "Node4", "success", "127.0.0.1"),
        ("reboot", "Node4", "success", "127.0.0.1")]
    print(f"fence_xvm off {off.seconds * 1000:.0f} ms, on {on.seconds * 1000:.0f} ms, "
          f"reboot {reboot.seconds * 1000:.0f} ms")


def test_reboot_of_a_domain_that_is_off_does_nothing_and_succeeds(netns, keys, daemon, power):
    # fence_xvm -h: "reboot-action does not power on nodes that are powered off"
    power.off("Node4")
    power.actions.clear()
    result = fence_xvm(netns, keys["ours"], "-o", "reboot", "-H", "Node4")
    assert result.returncode == 0, result
    assert power.actions == [] and power.status("Node4") == "off"


def test_domain_addressed_by_uuid(netns, keys, daemon, power):
    result = fence_xvm(netns, keys["ours"], "-o", "off", "-u", "-H", domain_uuid("Node1"))
    assert result.returncode == 0, result
    assert power.actions == [("off", "Node1")]
    [entry] = answered(daemon, 1, "off by UUID")
    assert (entry["domain"], entry["target"]) == (domain_uuid("Node1"), "Node1")


def test_unknown_domain(netns, keys, daemon, power):
    status = fence_xvm(netns, keys["ours"], "-o", "status", "-H", "Node9")
    assert (status.returncode, status.stdout.strip()) == (protocol.Result.OFF, "Status: OFF"), status
    off = fence_xvm(netns, keys["ours"], "-o", "off", "-H", "Node9")
    assert (off.returncode, off.stdout.strip()) == (protocol.Result.FAIL, "Operation failed"), off
    assert power.actions == []


def test_monitor_succeeds_and_null_fails_as_fence_virtd(netns, keys, daemon):
    monitor = fence_xvm(netns, keys["ours"], "-o", "monitor")
    assert monitor.returncode == 0, monitor
    null = fence_xvm(netns, keys["ours"], "-o", "null", "-H", "Node1")
    assert null.returncode == protocol.Result.FAIL, null


@pytest.mark.parametrize("kind", [Hash.SHA1, Hash.SHA512])
def test_other_hashes_when_the_daemon_is_set_to_them(netns, keys, in_netns, power, kind):
    with FenceDaemon(keys["ours"], power, socket_factory=in_netns, interface_address="127.0.0.1",
                     hash_minimum=kind, auth=kind):
        result = fence_xvm(netns, keys["ours"], "-c", kind.label, "-C", kind.label,
                           "-o", "off", "-H", "Node1")
    assert result.returncode == 0, result
    assert power.status("Node1") == "off"


# --- refusals ---

def test_request_with_another_key_gets_no_answer(netns, keys, daemon, power):
    result = fence_xvm(netns, keys["other"], "-o", "off", "-H", "Node1", "-r", "10", timeout=1)
    assert result.returncode == 1, result
    assert result.stdout.splitlines() == ["Timed out waiting for response", "Operation failed"]
    assert power.actions == []
    [entry] = answered(daemon, 1, "the wrong-key request, refused")
    assert (entry["result"], entry["reason"]) == ("refused", "signature does not match our key")
    print(f"fence_xvm with a wrong key gave up after {result.seconds:.2f}s")


def test_request_with_a_weaker_hash_gets_no_answer(netns, keys, daemon, power):
    result = fence_xvm(netns, keys["ours"], "-c", "sha1", "-o", "off", "-H", "Node1", "-r", "10", timeout=1)
    assert result.returncode == 1, result
    assert power.actions == []
    [entry] = answered(daemon, 1, "the sha1 request, refused")
    assert entry["reason"] == "hash sha1 weaker than the required sha256"


class MulticastCapture:
    """Copies of the UDP datagrams to the fence port, from a raw socket in the namespace."""

    def __init__(self, factory, port: int = protocol.PORT):
        self.port = port
        self.sock = factory(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        self.sock.setblocking(False)

    def datagrams(self) -> list[bytes]:
        found = []
        while True:
            try:
                packet = self.sock.recv(65535)
            except BlockingIOError:
                return found
            header = (packet[0] & 0x0F) * 4
            destination = socket.inet_ntoa(packet[16:20])
            _src_port, dst_port, _length, _checksum = struct.unpack_from("!HHHH", packet, header)
            if destination == protocol.MCAST_ADDRESS and dst_port == self.port:
                found.append(packet[header + 8:])

    def close(self) -> None:
        self.sock.close()


def send_multicast(factory, datagram: bytes) -> None:
    sender = factory(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    with sender:
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        sender.sendto(datagram, (protocol.MCAST_ADDRESS, protocol.PORT))


def test_replayed_request_is_ignored_within_the_history_window(netns, keys, in_netns, daemon, power, clock,
                                                               request_log):
    capture = MulticastCapture(in_netns)
    try:
        result = fence_xvm(netns, keys["ours"], "-o", "reboot", "-H", "Node4")
        sent = capture.datagrams()
    finally:
        capture.close()
    assert result.returncode == 0, result
    assert len(sent) == 1 and len(sent[0]) == protocol.REQUEST_SIZE, sent
    assert power.actions == [("reboot", "Node4")]

    send_multicast(in_netns, sent[0])
    first, replay = answered(daemon, 2, "the replayed reboot, refused")
    assert (replay["result"], replay["seqno"], replay["operation"]) == ("refused", first["seqno"], "reboot")
    assert replay["reason"].startswith("replay: the same request was answered")
    assert power.actions == [("reboot", "Node4")]

    # Past fence_virtd's 10 s window the same datagram is acted on again: the
    # daemon calls back, finds no fence_xvm listening, and nothing is done.
    clock.offset += protocol.HISTORY_WINDOW + 1
    send_multicast(in_netns, sent[0])
    *_, late = answered(daemon, 3, "the late replay, unanswered")
    assert late["result"] == "unanswered" and "cannot call back 127.0.0.1:1229" in late["reason"], late
    assert power.actions == [("reboot", "Node4")]

    logged = [json.loads(line) for line in request_log.read_text().splitlines()]
    assert logged == daemon.requests


def test_request_log_holds_no_key_material(netns, keys, daemon, request_log):
    fence_xvm(netns, keys["ours"], "-o", "status", "-H", "Node1")
    fence_xvm(netns, keys["other"], "-o", "status", "-H", "Node1", "-r", "10", timeout=1)
    answered(daemon, 2, "a good and a wrong-key request")
    text = request_log.read_text()
    for path in keys.values():
        key = Path(path).read_bytes()
        assert key.hex() not in text and key.hex().upper() not in text
        assert key.decode("latin-1") not in text
    assert {entry["result"] for entry in daemon.requests} == {"success", "refused"}


def test_powercontrol_fake_fits_the_protocol(power):
    assert isinstance(power, PowerControl)


class BrokenPower(FakePower):
    def off(self, name: str) -> None:
        raise RuntimeError(f"cannot destroy the NIC of {name}")


def test_failing_power_action_answers_fail(netns, keys, in_netns):
    with FenceDaemon(keys["ours"], BrokenPower({"Node1": "on"}), socket_factory=in_netns,
                     interface_address="127.0.0.1") as daemon:
        result = fence_xvm(netns, keys["ours"], "-o", "off", "-H", "Node1")
        [entry] = answered(daemon, 1, "the failed off")
    assert result.returncode == protocol.Result.FAIL, result
    assert (entry["result"], entry["reason"]) == ("fail", "off of Node1 raised RuntimeError: cannot destroy the NIC of Node1")


def test_missing_or_empty_key_file_is_a_clear_error(tmp_path, power):
    with pytest.raises(HaconformError, match="cannot read the fence key") as missing:
        FenceDaemon(str(tmp_path / "absent.key"), power)
    assert "dd if=/dev/urandom" in str(missing.value)
    (tmp_path / "empty.key").write_bytes(b"")
    with pytest.raises(HaconformError, match="empty"):
        FenceDaemon(str(tmp_path / "empty.key"), power)


def test_unknown_interface_is_a_clear_error(keys, power, in_netns):
    daemon = FenceDaemon(keys["ours"], power, socket_factory=in_netns, interface="nosuch0")
    with pytest.raises(HaconformError, match="no interface 'nosuch0'"):
        daemon.start()


# --- the command line ---

def udp_sockets_in(netns: str) -> set[tuple[str, int]]:
    """Bound UDP sockets in the namespace, from /proc/net/udp (hex address:port)."""
    table = run("ip", "netns", "exec", netns, "cat", "/proc/net/udp").stdout.splitlines()[1:]
    bound = set()
    for row in table:
        address, port = row.split()[1].split(":")
        bound.add((socket.inet_ntoa(struct.pack("<I", int(address, 16))), int(port, 16)))
    return bound


def test_command_line_daemon_answers_until_sigterm(netns, keys, tmp_path):
    log_file = tmp_path / "cli-requests.jsonl"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    daemon = subprocess.Popen(
        [sys.executable, "-m", "haconform.fence.daemon", "--key", keys["ours"],
         "--map", "Node1=server1,Node4=server4", "--listen-address", "127.0.0.1", "--interface", "lo",
         "--netns", f"/run/netns/{netns}", "--log", str(log_file),
         "--power-module", "test_fence_daemon:cli_power_factory"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until("fence daemon bound to 225.0.0.12:1229 in the namespace",
                   lambda: (protocol.MCAST_ADDRESS, protocol.PORT) in udp_sockets_in(netns),
                   timeout=BOUNDS.service_start, observe=lambda: (daemon.poll(), udp_sockets_in(netns)))
        result = fence_xvm(netns, keys["ours"], "-o", "list")
        assert result.returncode == 0, result
        assert [line.split()[0] for line in result.stdout.splitlines()] == ["Node1", "Node4"]
        assert [json.loads(line)["operation"] for line in log_file.read_text().splitlines()] == ["list"]
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            out, err = daemon.communicate(timeout=BOUNDS.service_stop)
        except subprocess.TimeoutExpired:
            daemon.kill()
            out, err = daemon.communicate()
    assert daemon.returncode == 0, err
    assert (protocol.MCAST_ADDRESS, protocol.PORT) not in udp_sockets_in(netns)
