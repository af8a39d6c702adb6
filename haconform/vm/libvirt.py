"""libvirt for the VM target: daemons, the cluster network, the pool, leftovers.

This machine has no systemd as PID 1, so libvirtd, virtlogd and virtlockd are
started by hand (`-d`) when not running; the PIDs of the ones *we* started are
kept in the environment's state directory, and only those are stopped.

The cluster network carries the runbook's 172.25.5.0/24.  It is defined here,
without an <ip> element: libvirt then makes a bare bridge, gives the machine no
address on it, runs no DHCP and adds no NAT or forwarding.  (vagrant-libvirt's
private_network would put a host address on it.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from ..errors import HaconformError
from ..redaction import redacted_tail
from ..timeouts import BOUNDS
from ..wait import wait_until

LIBVIRT_URI = "qemu:///system"
# daemon -> (its pid file, its socket): started in this order, stopped in reverse.
DAEMONS = {
    "virtlogd": ("/run/virtlogd.pid", "/run/libvirt/virtlogd-sock"),
    "virtlockd": ("/run/virtlockd.pid", "/run/libvirt/virtlockd-sock"),
    "libvirtd": ("/run/libvirtd.pid", "/run/libvirt/libvirt-sock"),
}
DAEMON_DIRS = ("/var/log/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/run/libvirt")
FIREWALL_CHAIN = re.compile(r"^LIBVIRT_[A-Z]+$")


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["virsh", "-c", LIBVIRT_URI, "-q", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=BOUNDS.command)
    if check and result.returncode != 0:
        raise HaconformError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}", where="libvirt",
                             fix="see libvirtd's log in /var/log/libvirt/libvirtd.log")
    return result


def _pid_from(path: str) -> int | None:
    try:
        pid = int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def daemon_pid(name: str) -> int | None:
    """PID of a running daemon of that name, from its pid file (checked against /proc)."""
    pid = _pid_from(DAEMONS[name][0])
    return pid if pid and _process_name(pid) == name else None


def ensure_daemons(state_dir: Path) -> dict[str, int]:
    """Start the libvirt daemons that are not running; remember which ones we started."""
    for directory in DAEMON_DIRS:
        Path(directory).mkdir(parents=True, exist_ok=True)
    record = state_dir / "daemons.json"
    started = json.loads(record.read_text()) if record.exists() else {}
    for name, (_pid_file, socket) in DAEMONS.items():
        if daemon_pid(name):
            continue
        binary = shutil.which(name) or f"/usr/sbin/{name}"
        # -d: the daemon forks into the background and this returns at once.
        result = subprocess.run([binary, "-d"], capture_output=True, text=True, timeout=BOUNDS.vm_daemon)
        if result.returncode != 0:
            raise HaconformError(f"{name} did not start: {redacted_tail(result.stderr.strip(), 300)}", where="libvirt",
                                 fix=f"run `{name} -v` by hand to see why; `haconform vm install` installs it")
        pid = wait_until(f"{name} running with its pid file", lambda n=name: daemon_pid(n),
                         timeout=BOUNDS.vm_daemon)
        wait_until(f"{name} listens on {socket}", lambda s=socket: os.path.exists(s), timeout=BOUNDS.vm_daemon)
        started[name] = pid
        record.write_text(json.dumps(started))
    wait_until("libvirtd answers `virsh version`", lambda: virsh("version", check=False).returncode == 0,
               timeout=BOUNDS.vm_daemon)
    return started


def stop_started_daemons(state_dir: Path) -> list[str]:
    """Stop only the daemons this environment started (and that are still those processes)."""
    record = state_dir / "daemons.json"
    if not record.exists():
        return []
    started = json.loads(record.read_text())
    stopped = []
    for name in reversed(list(DAEMONS)):
        pid = started.get(name)
        if pid and daemon_pid(name) == pid:
            os.kill(pid, signal.SIGTERM)
            wait_until(f"{name} ({pid}) stopped", lambda p=pid: not Path(f"/proc/{p}").exists()
                       or _process_name(p) != name or _zombie(p), timeout=BOUNDS.vm_daemon)
            stopped.append(name)
    record.unlink()
    return stopped


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


# ----- the cluster network -----------------------------------------------------
def isolated_network_xml(name: str, bridge: str) -> str:
    """A libvirt network with no <ip> and no <forward>: a bare bridge, nothing on the machine's side."""
    network = ET.Element("network")
    ET.SubElement(network, "name").text = name
    ET.SubElement(network, "bridge", {"name": bridge, "stp": "off", "delay": "0"})
    return ET.tostring(network, encoding="unicode")


def check_network_has_no_host_address(xml_text: str) -> None:
    root = ET.fromstring(xml_text)
    if root.find("ip") is not None or root.find("forward") is not None:
        raise HaconformError(f"libvirt network {root.findtext('name')} has an <ip> or <forward> element",
                             where="libvirt", fix="the cluster network must give the machine no address: "
                                                  "`haconform vm down`, then up again")


def network_names() -> list[str]:
    return [line.strip() for line in virsh("net-list", "--all", "--name").stdout.splitlines() if line.strip()]


def active_network_names() -> list[str]:
    """Networks libvirt runs now (a defined but inactive one, like the package's `default`, has no rules)."""
    return [line.strip() for line in virsh("net-list", "--name").stdout.splitlines() if line.strip()]


def ensure_isolated_network(name: str, bridge: str, state_dir: Path) -> None:
    if name not in network_names():
        xml_path = state_dir / f"{name}.xml"
        xml_path.write_text(isolated_network_xml(name, bridge))
        virsh("net-define", str(xml_path))
    check_network_has_no_host_address(virsh("net-dumpxml", name).stdout)
    info = virsh("net-info", name).stdout
    if not re.search(r"^Active:\s+yes", info, re.M):
        virsh("net-start", name)
    # fence_xvm's request is multicast: flood it to every port, as the lab's bridge does.
    subprocess.run(["ip", "link", "set", "dev", bridge, "type", "bridge", "mcast_snooping", "0"],
                   capture_output=True, timeout=BOUNDS.cli_query)
    subprocess.run(["ip", "link", "set", "dev", bridge, "addrgenmode", "none"], capture_output=True,
                   timeout=BOUNDS.cli_query)


def remove_network(name: str) -> bool:
    if name not in network_names():
        return False
    virsh("net-destroy", name, check=False)
    virsh("net-undefine", name, check=False)
    return True


# ----- domains ---------------------------------------------------------------------
def domain_state(name: str) -> str | None:
    """libvirt's state of a domain ('running', 'shut off', ...) or None if undefined."""
    result = virsh("domstate", name, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def domain_id(name: str) -> str | None:
    result = virsh("domid", name, check=False)
    value = result.stdout.strip()
    return value if result.returncode == 0 and value.isdigit() else None


def remove_domain(name: str) -> bool:
    if domain_state(name) is None:
        return False
    virsh("destroy", name, check=False)
    virsh("undefine", name, "--nvram", check=False)
    if domain_state(name) is not None:
        virsh("undefine", name, check=False)
    return True


# ----- the storage pool --------------------------------------------------------------
def ensure_pool(name: str, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)
    pools = virsh("pool-list", "--all", "--name").stdout.split()
    if name not in pools:
        virsh("pool-define-as", name, "dir", "--target", str(path))
    if not re.search(r"^State:\s+running", virsh("pool-info", name).stdout, re.M):
        virsh("pool-start", name)
    virsh("pool-refresh", name, check=False)


def remove_pool(name: str) -> list[str]:
    pools = virsh("pool-list", "--all", "--name", check=False).stdout.split()
    if name not in pools:
        return []
    virsh("pool-start", name, check=False)
    volumes = virsh("vol-list", name, check=False).stdout.splitlines()
    removed = []
    for line in volumes:
        fields = line.split()
        if fields:
            virsh("vol-delete", fields[0], "--pool", name, check=False)
            removed.append(fields[0])
    virsh("pool-destroy", name, check=False)
    virsh("pool-undefine", name, check=False)
    return removed


# ----- firewall chains libvirt leaves -----------------------------------------------
def libvirt_chains() -> dict[str, list[str]]:
    """table -> LIBVIRT_* chains present, read from iptables-save."""
    chains: dict[str, list[str]] = {}
    if shutil.which("iptables-save") is None:
        return chains
    table = None
    for line in subprocess.run(["iptables-save"], capture_output=True, text=True,
                               timeout=BOUNDS.cli_query).stdout.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and table:
            chain = line[1:].split()[0]
            if FIREWALL_CHAIN.match(chain):
                chains.setdefault(table, []).append(chain)
    return chains


def remove_libvirt_chains() -> list[str]:
    """Drop the jumps into LIBVIRT_* chains and the chains themselves (iptables, IPv4 and IPv6)."""
    removed = []
    for tool, save in (("iptables", "iptables-save"), ("ip6tables", "ip6tables-save")):
        if shutil.which(save) is None:
            continue
        table = None
        jumps, chains = [], []
        for line in subprocess.run([save], capture_output=True, text=True, timeout=BOUNDS.cli_query).stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":") and FIREWALL_CHAIN.match(line[1:].split()[0]):
                chains.append((table, line[1:].split()[0]))
            elif line.startswith("-A ") and re.search(r" -j LIBVIRT_[A-Z]+\b", line):
                jumps.append((table, line[3:]))
        for table, rule in jumps:
            subprocess.run([tool, "-t", table, "-D", *rule.split()], capture_output=True, timeout=BOUNDS.cli_query)
        for table, chain in chains:
            subprocess.run([tool, "-t", table, "-F", chain], capture_output=True, timeout=BOUNDS.cli_query)
        for table, chain in chains:
            if subprocess.run([tool, "-t", table, "-X", chain], capture_output=True,
                              timeout=BOUNDS.cli_query).returncode == 0:
                removed.append(f"{tool}:{table}:{chain}")
    return removed


def ip_forward() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


def set_ip_forward(value: str) -> None:
    Path("/proc/sys/net/ipv4/ip_forward").write_text(value + "\n")
