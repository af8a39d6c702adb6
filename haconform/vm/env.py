"""One set of guests: `haconform vm up|down|status|inventory`.

Everything an environment makes carries its name (default `hacvm`), so `down`
finds all of it from names alone, even after the harness was SIGKILLed:

    state directory   /var/lib/haconform/vm/NAME/ (env.json, ssh_config, logs,
                      Vagrant's dotfile directory, daemons we started, fence_virtd)
    libvirt           networks NAME-cluster (bridge hcbr-NAME, no <ip>) and
                      NAME-mgmt (vagrant-libvirt's management network), pool
                      NAME-pool, domains = the guests' fence names (Node1, ...)
    namespace lab     NAME (the topology's fence and client hosts, plugged into
                      virbr-NAMEc; see haconform.lab.lab.NamespaceLab)

The machine's root namespace gets no address or route in the topology's
subnet: the cluster network has no host side, and the lab adds its
`unreachable` guard route.  The harness reaches guests over the management
network only (ssh with the ssh_config written here).
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import HaconformError
from ..timeouts import BOUNDS
from ..topology import Topology, load_topology
from ..wait import wait_until
from . import STATE_ROOT, libvirt
from .box import BOX_DIR, BOX_NAME, BoxFiles, box_is_current, current_inputs, vagrant_env
from .fence import FenceVirtd

REPO = Path(__file__).resolve().parents[2]
ENV_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")
DEFAULT_ENV = "hacvm"
GUEST_ROLES = ("director", "realserver")
LAB_RANGE = ipaddress.IPv4Network("172.25.0.0/16")
DEFAULT_MGMT = "10.231.5.0/24"
DEFAULT_MEMORY_MIB = 640


def mgmt_subnet() -> ipaddress.IPv4Network:
    """The management /24 (HACONFORM_VM_MGMT_ADDRESS): never inside the runbook's 172.25.0.0/16."""
    text = os.environ.get("HACONFORM_VM_MGMT_ADDRESS", DEFAULT_MGMT)
    try:
        subnet = ipaddress.IPv4Network(text)
    except ValueError as exc:
        raise HaconformError(f"HACONFORM_VM_MGMT_ADDRESS={text!r}: {exc}", where="environment",
                             fix=f"write a /24 such as {DEFAULT_MGMT}") from None
    if subnet.overlaps(LAB_RANGE) or subnet.prefixlen != 24:
        raise HaconformError(f"management network {subnet} must be a /24 outside {LAB_RANGE}",
                             where="HACONFORM_VM_MGMT_ADDRESS",
                             fix=f"the machine gets an address on it; use e.g. {DEFAULT_MGMT}")
    return subnet


def domain_driver() -> str:
    """qemu (TCG) unless HACONFORM_VM_DRIVER says kvm: KVM guests hang at 'Booting from ROM' here."""
    driver = os.environ.get("HACONFORM_VM_DRIVER", "qemu")
    if driver not in ("qemu", "kvm"):
        raise HaconformError(f"HACONFORM_VM_DRIVER={driver!r}", where="environment", fix="use qemu or kvm")
    return driver


def parse_ssh_config(text: str) -> dict[str, dict[str, str]]:
    """`vagrant ssh-config` output -> {Host alias: {Option: value}} (option names as written)."""
    hosts: dict[str, dict[str, str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key.lower() == "host":
            current = hosts.setdefault(value.strip(), {})
        elif current is not None:
            current[key] = value.strip()
    return hosts


def render_ssh_config(by_host: dict[str, dict[str, str]], control_dir: str | None = None) -> str:
    """An ssh_config naming guests by their topology names (server1), not Vagrant's (Node1)."""
    blocks = []
    for host, options in by_host.items():
        lines = [f"Host {host}"]
        for key, value in options.items():
            lines.append(f"  {key} {value}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def guest_ssh_config(vagrant_text: str, domain_to_host: dict[str, str]) -> str:
    parsed = parse_ssh_config(vagrant_text)
    missing = set(domain_to_host) - set(parsed)
    if missing:
        raise HaconformError(f"`vagrant ssh-config` has no entry for {sorted(missing)}", where="vagrant",
                             fix="are the guests up? see `haconform vm status`")
    renamed = {}
    for domain, host in domain_to_host.items():
        options = dict(parsed[domain])
        options.update({"StrictHostKeyChecking": "no", "UserKnownHostsFile": "/dev/null",
                        "IdentitiesOnly": "yes", "LogLevel": "ERROR"})
        renamed[host] = options
    return render_ssh_config(renamed)


def inventory_text(topology: Topology, ssh_config: Path, netns_of: dict[str, str], stage: str = "stage5") -> str:
    """An inventory for --target ssh (haconform/inventory.py) reaching the running guests."""
    lines = ["# haconform vm inventory: the running guests of this VM environment",
             f"vip: {topology.vip}", f"stage: {stage}",
             f"defaults: {{user: root, sudo: false, ssh_config: {ssh_config}}}", "hosts:"]
    for spec in topology.hosts.values():
        if spec.role in GUEST_ROLES:
            power = ""
            if spec.fence_name:
                virsh = "virsh -c qemu:///system"
                power = (f", power: {{via: local, on: \"{virsh} start {spec.fence_name}\", "
                         f"off: \"{virsh} destroy {spec.fence_name}\", reset: \"{virsh} reset {spec.fence_name}\"}}")
            lines.append(f"  {spec.name}: {{address: {spec.name}, cluster_nic: eth0{power}}}")
        elif spec.role == "client" and spec.name in netns_of:
            lines.append(f"  {spec.name}: {{netns: {netns_of[spec.name]}}}")
        else:
            lines.append(f"  {spec.name}: none")
    return "\n".join(lines) + "\n"


class VmEnvironment:
    def __init__(self, name: str = DEFAULT_ENV, topology: Topology | None = None):
        if not ENV_NAME.match(name) or name == "box":
            raise HaconformError(f"bad VM environment name {name!r}", where="--name",
                                 fix="use 1-8 lower-case letters or digits, starting with a letter (not `box`)")
        self.name = name
        self.dir = Path(STATE_ROOT) / name
        saved = self._saved()
        self.topology = topology or load_topology(saved.get("topology"))
        self.fence_virtd = FenceVirtd(self.dir)

    # ----- names -------------------------------------------------------------------
    cluster_network = property(lambda self: f"{self.name}-cluster")
    cluster_bridge = property(lambda self: f"hcbr-{self.name}")
    mgmt_network = property(lambda self: f"{self.name}-mgmt")
    pool = property(lambda self: f"{self.name}-pool")
    ssh_config = property(lambda self: self.dir / "ssh_config")
    dotfile_dir = property(lambda self: self.dir / "vagrant")

    def guests(self) -> dict[str, str]:
        """topology host -> libvirt domain (its fence name) for the hosts that are VMs."""
        return {h.name: h.fence_name or h.name for h in self.topology.hosts.values() if h.role in GUEST_ROLES}

    def lab_hosts(self) -> list[str]:
        return [h.name for h in self.topology.hosts.values() if h.role not in GUEST_ROLES]

    def lab(self):
        from ..lab.lab import NamespaceLab
        return NamespaceLab(self.name, self.topology, bridge=self.cluster_bridge, hosts=self.lab_hosts())

    def _saved(self) -> dict:
        try:
            return json.loads((self.dir / "env.json").read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, **fields) -> None:
        data = {**self._saved(), **fields}
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "env.json").write_text(json.dumps(data, indent=1))

    def exists(self) -> bool:
        return (self.dir / "env.json").exists()

    @contextmanager
    def locked(self):
        Path(STATE_ROOT).mkdir(parents=True, exist_ok=True)
        with open(Path(STATE_ROOT) / f"{self.name}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def vagrant_environment(self) -> dict:
        return {**vagrant_env(),
                "VAGRANT_CWD": str(REPO), "VAGRANT_DOTFILE_PATH": str(self.dotfile_dir),
                "HACONFORM_TOPOLOGY": str(self.topology.path), "HACONFORM_VM_NAME": self.name,
                "HACONFORM_VM_BOX_DIR": str(BOX_DIR), "HACONFORM_VM_DRIVER": domain_driver(),
                "HACONFORM_VM_MEMORY": os.environ.get("HACONFORM_VM_MEMORY", str(DEFAULT_MEMORY_MIB)),
                "HACONFORM_VM_CLUSTER_BRIDGE": self.cluster_bridge,
                "HACONFORM_VM_MGMT_NETWORK": self.mgmt_network,
                "HACONFORM_VM_MGMT_ADDRESS": str(mgmt_subnet()),
                "HACONFORM_VM_POOL": self.pool, "HACONFORM_VM_STATE_DIR": str(self.dir)}

    def vagrant(self, log_name: str):
        try:
            import vagrant as python_vagrant
        except ImportError:
            raise HaconformError("python-vagrant is not installed", where="haconform vm",
                                 fix="pip install 'haconform[vm]' (or `haconform vm install`)") from None
        log = self.dir / log_name
        return python_vagrant.Vagrant(root=str(REPO), env=self.vagrant_environment(),
                                      out_cm=python_vagrant.make_file_cm(str(log)),
                                      err_cm=python_vagrant.make_file_cm(str(log)))

    # ----- lifecycle -------------------------------------------------------------------
    def up(self, say=print) -> dict:
        """Start libvirt, the networks and the guests, then the fence and client hosts."""
        require_root()
        from ..packages import VM_PACKAGES, ensure_installed
        ensure_installed(VM_PACKAGES, install=False)
        mgmt_subnet()
        inputs = current_inputs()
        if not box_is_current(BoxFiles(BOX_DIR), inputs):
            raise HaconformError(f"the box {BOX_NAME} is missing or older than its inputs", where="haconform vm up",
                                 fix="haconform vm box build")
        figures: dict[str, float] = {}
        began = time.monotonic()
        with self.locked():
            self.dir.mkdir(parents=True, exist_ok=True)
            if "ip_forward_before" not in self._saved():
                self._save(ip_forward_before=libvirt.ip_forward())
            self._save(name=self.name, topology=str(self.topology.path), domains=sorted(self.guests().values()),
                       driver=domain_driver(), created=time.time())
            started = libvirt.ensure_daemons(self.dir)
            if started:
                say(f"vm {self.name}: started {', '.join(started)}")
            libvirt.ensure_pool(self.pool, self.dir / "pool")
            libvirt.ensure_isolated_network(self.cluster_network, self.cluster_bridge, self.dir)
            say(f"vm {self.name}: vagrant up {', '.join(f'{h}={d}' for h, d in self.guests().items())} "
                f"(driver {domain_driver()}; log {self.dir / 'vagrant-up.log'})")
            step = time.monotonic()
            try:
                self.vagrant("vagrant-up.log").up(provider="libvirt")
            except subprocess.CalledProcessError:
                raise HaconformError("`vagrant up` failed: " + self._log_tail("vagrant-up.log"),
                                     where=str(self.dir / "vagrant-up.log"),
                                     fix="read the log; `haconform vm down` then up again") from None
            figures["vagrant_up_s"] = round(time.monotonic() - step, 1)
            self.write_ssh_config()
            say(f"vm {self.name}: guests up in {figures['vagrant_up_s']}s; starting the fence and client hosts")
            step = time.monotonic()
            self.lab().up(install_packages=False)
            figures["lab_hosts_s"] = round(time.monotonic() - step, 1)
        figures["total_s"] = round(time.monotonic() - began, 1)
        self._save(figures=figures)
        say(f"vm {self.name}: up in {figures['total_s']}s ({figures})")
        return figures

    def write_ssh_config(self) -> Path:
        text = self.vagrant("vagrant-ssh-config.log").ssh_config()
        self.ssh_config.write_text(guest_ssh_config(text, {d: h for h, d in self.guests().items()}))
        return self.ssh_config

    def down(self, say=print) -> dict:
        """Remove every guest, network, volume, chain, process and namespace of this environment."""
        require_root()
        removed: dict[str, list] = {}
        with self.locked():
            saved = self._saved()
            lab_json = Path("/var/lib/haconform/labs") / self.name / "lab.json"
            if not saved and not lab_json.exists() and not self._libvirt_leftovers_possible():
                return {"nothing": []}
            removed["fence_virtd"] = ["stopped"] if self.fence_virtd.stop() else []
            if self.dir.exists():
                libvirt.ensure_daemons(self.dir)   # to clean up after a SIGKILL; stopped below
            if self.dotfile_dir.exists() and shutil.which("vagrant"):
                try:
                    self.vagrant("vagrant-destroy.log").destroy()
                except (subprocess.CalledProcessError, HaconformError):
                    say(f"vm {self.name}: vagrant destroy failed ({self._log_tail('vagrant-destroy.log')}); "
                        "removing the domains with virsh")
            domains = saved.get("domains") or sorted(self.guests().values())
            removed["domains"] = [d for d in domains if self._domain_is_ours(d) and libvirt.remove_domain(d)]
            if self.dir.exists() or lab_json.exists():
                from ..lab.lab import NamespaceLab
                lab = NamespaceLab(self.name, self.topology)
                removed["lab"] = [f"{k}: {len(v)}" for k, v in lab.down().items()]
            if self._libvirt_running():
                removed["networks"] = [n for n in (self.cluster_network, self.mgmt_network)
                                       if libvirt.remove_network(n)]
                removed["volumes"] = libvirt.remove_pool(self.pool)
                if not libvirt.active_network_names():
                    removed["firewall"] = libvirt.remove_libvirt_chains()
            elif not libvirt.daemon_pid("libvirtd"):
                removed["firewall"] = libvirt.remove_libvirt_chains()
            removed["daemons"] = libvirt.stop_started_daemons(self.dir) if self.dir.exists() else []
            before = saved.get("ip_forward_before")
            if before is not None and libvirt.ip_forward() != before:
                libvirt.set_ip_forward(before)
                removed["ip_forward"] = [f"restored to {before}"]
            shutil.rmtree(self.dir, ignore_errors=True)
        (Path(STATE_ROOT) / f"{self.name}.lock").unlink(missing_ok=True)
        return removed

    def _domain_is_ours(self, domain: str) -> bool:
        """A domain of that name whose disk lives in this environment's pool (not someone else's Node1)."""
        if libvirt.domain_state(domain) is None:
            return False
        xml = libvirt.virsh("dumpxml", domain, check=False).stdout
        return f"{self.pool}" in xml or str(self.dir) in xml

    def _libvirt_running(self) -> bool:
        return libvirt.daemon_pid("libvirtd") is not None

    def _libvirt_leftovers_possible(self) -> bool:
        return self._libvirt_running() and (self.cluster_network in libvirt.network_names())

    def _log_tail(self, name: str) -> str:
        try:
            lines = [l for l in (self.dir / name).read_text(errors="replace").splitlines() if l.strip()]
        except OSError:
            return "(no log)"
        return " | ".join(lines[-6:])

    # ----- views -----------------------------------------------------------------------
    def status(self) -> dict:
        running = self._libvirt_running()
        guests = {}
        for host, domain in self.guests().items():
            guests[host] = {"domain": domain, "address": self.topology.host(host).address,
                            "state": (libvirt.domain_state(domain) or "undefined") if running else "libvirtd down",
                            "domain_id": libvirt.domain_id(domain) if running else None}
        lab = self.lab()
        return {"vm": self.name, "exists": self.exists(), "state_dir": str(self.dir),
                "libvirtd": "running" if running else "not running",
                "cluster_network": self.cluster_network, "bridge": self.cluster_bridge,
                "ssh_config": str(self.ssh_config) if self.ssh_config.exists() else None,
                "fence_virtd_pid": self.fence_virtd.pid(), "guests": guests,
                "lab_hosts": lab.status()["hosts"] if lab.exists() else {},
                "figures": self._saved().get("figures", {})}

    def inventory(self) -> str:
        if not self.ssh_config.exists():
            raise HaconformError(f"VM environment {self.name} is not up (no ssh_config)", where=str(self.dir),
                                 fix=f"haconform vm up --name {self.name}")
        lab = self.lab()
        return inventory_text(self.topology, self.ssh_config,
                              {h: lab.netns(h) for h in self.lab_hosts()})


def require_root() -> None:
    if os.geteuid() != 0:
        raise HaconformError("the VM target needs root (libvirt daemons, networks, namespaces)",
                             where="haconform vm", fix="run as root")


def wait_for_guests(target_booted, hosts: list[str]) -> None:
    wait_until(f"guests {hosts} booted (ssh answers, systemd finished)",
               lambda: all(target_booted(h) for h in hosts), timeout=BOUNDS.vm_boot)
