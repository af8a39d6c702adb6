"""The embedded namespace lab behaves like machines on a network (needs root)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from haconform.errors import HaconformError
from haconform.lab.lab import STATE_ROOT, NamespaceLab, process_alive
from haconform.targets.base import Machine
from haconform.targets.lab import LabTarget
from haconform.timeouts import BOUNDS, POLL_INTERVAL
from haconform.topology import load_topology
from haconform.wait import wait_until

pytestmark = [pytest.mark.lab(expected_s=35), pytest.mark.skipif(os.geteuid() != 0, reason="the namespace lab needs root")]

HACONFORM = [sys.executable, "-m", "haconform.cli"]
# HACONFORM_UNIT_LAB names this file's lab (default hcunit), so that two checkouts on one machine
# can run it at once; the other labs its tests make then take that name plus one letter.
UNIT_LAB = os.environ.get("HACONFORM_UNIT_LAB", "hcunit")
OTHER_LABS = ({"kill": "hckill", "two": "hctwo", "bad": "hcbad", "nobody": "hcnobody"} if UNIT_LAB == "hcunit"
              else {role: f"{UNIT_LAB[:9]}{role[0]}" for role in ("kill", "two", "bad", "nobody")})


def leftovers(name: str) -> dict:
    """Everything on the machine that carries the lab's name."""
    prefix = f"{name}-"
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    links = [l["ifname"] for l in json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True,
                                                              text=True).stdout)]
    marker = f"{STATE_ROOT}/{name}/"
    procs = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    procs.append(int(entry.name))
            except OSError:
                pass
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
              if marker in line]
    return {"netns": [n for n in netns if n.startswith(prefix)],
            "links": [l for l in links if l.startswith(prefix)],
            "processes": procs, "mounts": mounts,
            "state_dir": (STATE_ROOT / name).exists() or (STATE_ROOT / f"{name}.lock").exists()}


NOTHING = {"netns": [], "links": [], "processes": [], "mounts": [], "state_dir": False}


def root_network() -> dict:
    addrs = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True).stdout)
    routes = json.loads(subprocess.run(["ip", "-j", "route", "show", "table", "all"], capture_output=True,
                                       text=True).stdout)
    return {"devices": sorted(a["ifname"] for a in addrs),
            "addresses": sorted((a["ifname"], i["local"]) for a in addrs for i in a.get("addr_info", [])),
            "routes": sorted(json.dumps(r, sort_keys=True) for r in routes)}


def without(view: dict, devices: set[str]) -> tuple[list, list]:
    """A view's addresses and routes but those on the given links."""
    return ([a for a in view["addresses"] if a[0] not in devices],
            [r for r in view["routes"] if json.loads(r).get("dev") not in devices])


def other_labs_links(before: dict, after: dict, lab_name: str) -> set[str]:
    """Links that came or went between two looks and are not lab_name's: other labs, brought up or down
    meanwhile (the safety job runs its labs side by side)."""
    return {d for d in set(before["devices"]) ^ set(after["devices"]) if not d.startswith(f"{lab_name}-")}


@pytest.fixture(scope="module")
def lab():
    lab = NamespaceLab(UNIT_LAB, load_topology())
    lab.down()
    lab.up()
    yield lab
    lab.down()
    assert leftovers(UNIT_LAB) == NOTHING


@pytest.fixture(scope="module")
def target(lab):
    return LabTarget(lab.topology, lab.name)


def machine(target, name) -> Machine:
    return Machine(target, target.topology.host(name))


def test_a_file_written_in_one_host_stays_there(target):
    server1, server2 = machine(target, "server1"), machine(target, "server2")
    server1.succeed("echo only-server1 > /etc/haconform-isolation")
    assert server1.host.file("/etc/haconform-isolation").content_string.strip() == "only-server1"
    assert not server2.host.file("/etc/haconform-isolation").exists
    assert not Path("/etc/haconform-isolation").exists()


def test_each_host_has_its_own_hostname(target):
    for name in target.topology.hosts:
        assert machine(target, name).succeed("hostname").strip() == name


def test_ps_in_a_host_shows_only_its_own_processes(target, lab):
    server2 = machine(target, "server2")
    comms = set(server2.succeed("ps -e -o comm=").split())
    assert "apache2" in comms, comms
    assert "haproxy" not in comms and "process_api" not in comms, comms
    # PID 1 inside is the lab's init, not the machine's
    assert "haconform.lab.init" in server2.succeed("tr '\\0' ' ' < /proc/1/cmdline")


def test_apache_on_two_hosts_serves_two_pages_from_one_install(target):
    client = machine(target, "client")
    for name in ("server2", "server3"):
        machine(target, name).succeed(f"echo page-of-{name} > /var/www/html/index.html")
    for name in ("server2", "server3"):
        assert client.succeed(f"curl -s -m 5 http://{name}/").strip() == f"page-of-{name}"


def test_only_role_services_run(target):
    assert machine(target, "server1").host.service("haproxy").is_running
    assert not machine(target, "server2").host.service("haproxy").is_running
    assert not machine(target, "client").host.service("apache2").is_running


def test_reset_gives_a_new_boot_id_and_enabled_services_return(target, lab):
    server3 = machine(target, "server3")
    before = server3.boot_id
    server3.succeed("echo kept > /etc/haconform-disk; echo gone > /tmp/haconform-tmp")
    server3.reset()
    after = server3.boot_id
    assert after != before
    assert lab.status()["hosts"]["server3"]["boot_id"] == after
    assert server3.host.service("apache2").is_running
    assert server3.host.file("/etc/haconform-disk").content_string.strip() == "kept", "the disk must survive a reboot"
    assert not server3.host.file("/tmp/haconform-tmp").exists, "/tmp must be fresh at each boot"


def test_crashed_host_answers_neither_ping_nor_arp_until_powered_on(target, lab):
    client, server3 = machine(target, "client"), machine(target, "server3")
    address = server3.address
    client.succeed(f"ping -c 1 -W 2 {address}")
    server3.crash()
    assert lab.power_state("server3") == "crashed"
    client.fail(f"ping -c 1 -W 1 {address}")
    client.fail(f"arping -c 2 -w 2 -i eth0 {address}")
    server3.power_on()
    client.wait_until_succeeds(f"ping -c 1 -W 1 {address}", timeout=BOUNDS.host_boot)
    client.succeed(f"arping -c 1 -w 2 -i eth0 {address}")


def test_nic_down_keeps_processes_and_cuts_traffic(target):
    client, server2 = machine(target, "client"), machine(target, "server2")
    pids_before = set(server2.succeed("pgrep apache2").split())
    server2.block()
    try:
        client.fail(f"ping -c 1 -W 1 {server2.address}")
        assert set(server2.succeed("pgrep apache2").split()) == pids_before
    finally:
        server2.unblock()
    client.wait_until_succeeds(f"ping -c 1 -W 1 {server2.address}", timeout=BOUNDS.host_boot)


def test_machine_namespace_never_reaches_the_lab(lab):
    result = subprocess.run(["ping", "-c", "1", "-W", "1", lab.topology.host("server2").address],
                            capture_output=True, text=True)
    assert result.returncode != 0
    routes = subprocess.run(["ip", "route", "show", "exact", str(lab.topology.subnet)],
                            capture_output=True, text=True).stdout
    assert routes.startswith("unreachable"), routes
    addresses = root_network()["addresses"]
    assert not [a for a in addresses if a[1].startswith(str(lab.topology.subnet.network_address)[:-1])]


def test_sigkill_during_up_then_down_leaves_nothing(lab):
    network_before = root_network()
    proc = subprocess.Popen([*HACONFORM, "lab", "up", "--name", OTHER_LABS["kill"]], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    # Kill it mid-way: once some hosts exist but before the last has booted.
    wait_until(f"{OTHER_LABS['kill']} has started creating hosts", lambda: len(leftovers(OTHER_LABS["kill"])["netns"]) >= 2,
               timeout=BOUNDS.host_boot)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert leftovers(OTHER_LABS["kill"])["netns"], "the kill came too late to test anything"
    down = subprocess.run([*HACONFORM, "lab", "down", "--name", OTHER_LABS["kill"]], capture_output=True, text=True)
    assert down.returncode == 0, down.stderr
    assert leftovers(OTHER_LABS["kill"]) == NOTHING
    network_after = root_network()
    others = other_labs_links(network_before, network_after, OTHER_LABS["kill"])
    assert without(network_after, others) == without(network_before, others)


def test_two_labs_run_at_once(lab):
    other = NamespaceLab(OTHER_LABS["two"], lab.topology)
    try:
        other.up()
        for each in (lab, other):
            result = each.run("client", f"ping -c 1 -W 2 {lab.topology.host('server2').address}")
            assert result.returncode == 0, (each.name, result.stderr)
        assert other.boot_id("server2") != lab.boot_id("server2")
    finally:
        other.down()
    assert leftovers(OTHER_LABS["two"]) == NOTHING
    assert lab.run("client", f"ping -c 1 -W 2 {lab.topology.host('server2').address}").returncode == 0


# A duration no other test runs: its processes are this test's own.
SLEEPER = b"sleep\x00317\x00"


def host_processes(lab, host: str, argv: bytes) -> list[int]:
    """Live processes in the host's PID namespace running exactly argv, by their machine-side PID."""
    namespace = os.readlink(f"/proc/{lab.init_pid(host)}/ns/pid")
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "pid") == namespace and (entry / "cmdline").read_bytes() == argv \
                        and process_alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


class Sampler:
    """Calls sample() every POLL_INTERVAL in a thread until stopped; keeps every result."""

    def __init__(self, sample):
        self.sample, self.seen, self._stop = sample, [], threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self):
        while not self._stop.is_set():
            self.seen.append(self.sample())
            self._stop.wait(POLL_INTERVAL)   # the sampling cadence, ended by stop()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("via", ["NamespaceLab.run", "LabBackend.run"])
def test_a_timed_out_command_takes_its_whole_process_tree_in_the_host(lab, target, via):
    command = "sleep 317 & sleep 317; "
    with Sampler(lambda: len(host_processes(lab, "server2", SLEEPER))) as running:
        if via == "NamespaceLab.run":
            with pytest.raises(subprocess.TimeoutExpired):
                lab.run("server2", command, timeout=3)
        else:
            result = target.testinfra_host("server2").run(command, timeout=3)
            assert result.rc == 124 and "timed out after 3s" in result.stderr, result
    assert max(running.seen) == 2, f"both sleeps should have run before the bound: {running.seen}"
    assert host_processes(lab, "server2", SLEEPER) == [], "a process of the timed-out command survived"


def test_input_reaches_a_host_command_on_stdin_and_no_command_line(target):
    secret = f"hacluster:{os.urandom(8).hex()}\n".encode()

    def command_lines_with_the_secret():
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and secret.strip() in (entry / "cmdline").read_bytes():
                    found.append(entry.name)
            except OSError:
                pass
        return found

    server2 = machine(target, "server2")
    go = "/run/haconform-stdin-test.go"
    answered = {}
    # The command waits in the host until the scan has looked enough times (a loaded machine scans /proc
    # slowly): a bounded wait for the sampler, not a sleep the scan may or may not fill.
    command = threading.Thread(target=lambda: answered.setdefault("out", server2.succeed(
        f"while [ ! -e {go} ]; do sleep 0.1; done; rm -f {go}; cat", input=secret)))
    with Sampler(command_lines_with_the_secret) as scan:
        command.start()
        wait_until("the /proc scan looked five times while the command waited", lambda: len(scan.seen) >= 5,
                   timeout=BOUNDS.command, observe=lambda: len(scan.seen))
        server2.succeed(f"touch {go}")
        command.join(timeout=float(BOUNDS.command))
    assert answered.get("out") == secret.decode(), answered
    assert len(scan.seen) >= 5 and not any(scan.seen), scan.seen


def test_write_file_in_a_host_gets_content_mode_and_owner_and_nothing_else(target):
    server2 = machine(target, "server2")
    key = os.urandom(128)
    try:
        server2.write_file("/etc/haconform-written/fence.key", key, mode="0600")
        server2.write_file("/etc/haconform-written/page.html", "<p>page</p>\n", mode="0640",
                           owner="root", group="www-data")
        assert server2.host.file("/etc/haconform-written/fence.key").content == key
        assert server2.succeed("stat -c '%n %a %U:%G' /etc/haconform-written/* /etc/haconform-written").split("\n") \
            == ["/etc/haconform-written/fence.key 600 root:root", "/etc/haconform-written/page.html 640 root:www-data",
                "/etc/haconform-written 755 root:root", ""]
    finally:
        server2.execute("rm -rf /etc/haconform-written")


BAD_TOPOLOGIES = {
    "duplicate address": ("hosts.server4.address", """
        network: {subnet: 10.99.0.0/24, vip: 10.99.0.100}
        hosts:
          server1: {role: director, address: 10.99.0.1}
          server4: {role: director, address: 10.99.0.1}
          server2: {role: realserver, address: 10.99.0.2}
          client: {role: client, address: 10.99.0.200}
        """),
    "unknown role": ("hosts.server2.role", """
        network: {subnet: 10.99.0.0/24, vip: 10.99.0.100}
        hosts:
          server1: {role: director, address: 10.99.0.1}
          server2: {role: webserver, address: 10.99.0.2}
          client: {role: client, address: 10.99.0.200}
        """),
    "missing field": ("hosts.server2.address", """
        network: {subnet: 10.99.0.0/24, vip: 10.99.0.100}
        hosts:
          server1: {role: director, address: 10.99.0.1}
          server2: {role: realserver}
          client: {role: client, address: 10.99.0.200}
        """),
}


@pytest.mark.parametrize("case", sorted(BAD_TOPOLOGIES))
def test_bad_topology_gets_one_clear_error_and_starts_nothing(case, tmp_path):
    key, text = BAD_TOPOLOGIES[case]
    path = tmp_path / "topology.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(HaconformError) as caught:
        load_topology(path)
    message = str(caught.value)
    assert str(path) in message and key in message and "fix:" in message, message
    result = subprocess.run([*HACONFORM, "lab", "up", "--name", OTHER_LABS["bad"], "--topology", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and key in lines[0], result.stderr
    assert leftovers(OTHER_LABS["bad"]) == NOTHING


def test_not_root_gets_one_clear_error(monkeypatch, capsys):
    from haconform import cli
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(["lab", "up", "--name", OTHER_LABS["nobody"]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs root" in err[0] and "fix:" in err[0], err
    assert leftovers(OTHER_LABS["nobody"]) == NOTHING
