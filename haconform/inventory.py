"""The inventory: how to reach the hosts of an existing deployment (--target ssh).

The topology (fixtures/topology.yaml) says what the deployment is: roles,
names, cluster addresses, the VIP.  Suites and configurations use only those.
The inventory says how the harness reaches each of those hosts:

    vip: 172.25.5.100          # must equal the topology's VIP: guards against the wrong file
    stage: stage5              # the runbook stage the deployment is in (what verification expects)
    names: {VIP: WebIP}        # optional: the deployment's own names for the runbook's resources, groups, backends
    defaults: {user: root, key: ~/.ssh/id_ed25519, port: 22, sudo: false, ssh_config: ~/.ssh/config}
    hosts:
      server1: {address: 10.0.0.11, cluster_nic: eth1,
                power: {via: foundation5, on: "virsh start Node1", off: "virsh destroy Node1"}}
      server4: {address: 10.0.0.14}
      server2: {address: 10.0.0.12}
      server3: {address: 10.0.0.13}
      client:  {netns: hcclient}          # or {local: true}, or an ssh host like the others
      foundation5: {local: true}          # the physical host running fence_virtd; `none` when absent

Every topology host has an entry; each entry is exactly one of
  - an ssh host: address (what ssh connects to: IP, name or a Host alias of
    ssh_config), user, key, port, sudo, ssh_config, cluster_nic, power
    (on/off/reset/crash command lines run on `via`: an inventory host or `local`);
    user/port left out are ssh_config's; sudo defaults to "unless root";
  - `local: true`: the harness machine itself (client and fence host only);
  - `netns: NAME`: a network namespace on the harness machine (client only);
  - `none`: not reachable (fence host only: fence device not inspected).

Two rules keep traffic out of the harness machine's root network namespace
where the runbook's lab range lives (172.25.0.0/16, see LAB_RANGE):
  - an ssh host whose resolved HostName (`ssh -G`) is in that range must be
    reached through a ProxyCommand or ProxyJump (e.g. `ip netns exec NS nc %h %p`);
  - `local: true` for the client is refused when the VIP or any host address
    of the topology is in that range: HTTP from the harness itself would leave
    from the root namespace.  Use `netns:` or an ssh client host instead.

A bad file raises one HaconformError naming the file, the key and the fix,
before anything is started.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path


from .errors import HaconformError
from .topology import Topology, read_yaml_mapping

LAB_RANGE = ipaddress.IPv4Network("172.25.0.0/16")
STAGES = ("stage1", "stage2", "stage3", "stage4", "stage5")
NETNS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
NIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,14}$")
SSH_FIELDS = {"address", "user", "key", "port", "sudo", "ssh_config", "cluster_nic", "power"}
DEFAULT_FIELDS = {"user", "key", "port", "sudo", "ssh_config"}
POWER_FIELDS = {"via", "on", "off", "reset", "crash"}
TOP_FIELDS = {"vip", "stage", "defaults", "hosts", "names"}
YAML_BOOLEAN_KEYS = {True: "on", False: "off"}


@dataclass(frozen=True)
class PowerCommands:
    """Commands that switch a host's power, run on another host (`via`)."""

    via: str                       # an inventory host name, or "local" (the harness machine)
    on: str | None = None
    off: str | None = None
    reset: str | None = None
    crash: str | None = None       # instead of sysrq: a panic injected from outside (virsh inject-nmi, ...)

    def command(self, action: str) -> str | None:
        return getattr(self, action, None)


@dataclass(frozen=True)
class HostAccess:
    """How the harness reaches one topology host."""

    name: str
    kind: str                      # "ssh", "local", "netns" or "none"
    address: str | None = None     # ssh destination
    user: str | None = None        # None: ssh_config's User (else the local login name)
    key: str | None = None
    port: int | None = None        # None: ssh_config's Port (else 22)
    sudo: bool | None = None       # None: decided from the login (sudo unless root)
    ssh_config: str | None = None
    netns: str | None = None
    cluster_nic: str | None = None  # the NIC pulled by block(); found by address when unset
    power: PowerCommands | None = None

    @property
    def needs_sudo(self) -> bool:
        return self.kind == "ssh" and bool(self.sudo)


@dataclass(frozen=True)
class Inventory:
    path: Path
    stage: str
    hosts: dict[str, HostAccess] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)   # the runbook's name -> the deployment's (VIP: WebIP)

    def access(self, name: str) -> HostAccess:
        try:
            return self.hosts[name]
        except KeyError:
            raise HaconformError(f"hosts.{name}: no entry", where=str(self.path),
                                 fix=f"add `{name}:` under hosts") from None


def _fail(path: Path, key: str, what: str, fix: str):
    raise HaconformError(f"{key}: {what}", where=str(path), fix=fix)


def _expand(path: Path, value: str) -> str:
    """~ and relative paths: relative to the inventory file's directory."""
    expanded = Path(os.path.expanduser(str(value)))
    return str(expanded if expanded.is_absolute() else (path.parent / expanded))


def _check_file(path: Path, key: str, value, what: str) -> str:
    if not isinstance(value, str) or not value:
        _fail(path, key, f"must be a path to {what}", f"write `{key.rsplit('.', 1)[-1]}: /path/to/file`")
    resolved = _expand(path, value)
    if not Path(resolved).is_file():
        _fail(path, key, f"{resolved} does not exist", f"point it at an existing {what}")
    return resolved


def _ssh_host(path: Path, key: str, name: str, entry: dict, defaults: dict) -> HostAccess:
    unknown = set(entry) - SSH_FIELDS
    if unknown:
        _fail(path, key, f"unknown field(s) {', '.join(sorted(map(str, unknown)))}",
              f"allowed for an ssh host: {', '.join(sorted(SSH_FIELDS))}; or `local: true`, `netns: NAME`")
    merged = {**defaults, **entry}
    address = merged.get("address")
    if not isinstance(address, str) or not address.strip() or address.startswith("-") or " " in address:
        _fail(path, f"{key}.address", "missing or not a host name/address",
              "write what ssh connects to: an IP, a DNS name or a Host alias of ssh_config")
    user = merged.get("user")
    if user is not None and (not isinstance(user, str) or not re.match(r"^[a-z_][a-z0-9_.-]*$", user)):
        _fail(path, f"{key}.user", f"{user!r} is not a user name", "write the ssh login, e.g. `user: root`")
    port = merged.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        _fail(path, f"{key}.port", f"{port!r} is not a TCP port", "write a number from 1 to 65535")
    sudo = merged.get("sudo")
    if sudo is not None and not isinstance(sudo, bool):
        _fail(path, f"{key}.sudo", f"{sudo!r} is not yes/no", "write `sudo: true` or `sudo: false`")
    ssh_key = _check_file(path, f"{key}.key", merged["key"], "private key file") if merged.get("key") else None
    ssh_config = (_check_file(path, f"{key}.ssh_config", merged["ssh_config"], "ssh_config file")
                  if merged.get("ssh_config") else None)
    nic = entry.get("cluster_nic")
    if nic is not None and (not isinstance(nic, str) or not NIC_NAME.match(nic)):
        _fail(path, f"{key}.cluster_nic", f"{nic!r} is not an interface name", "write e.g. `cluster_nic: eth1`")
    power = None
    if entry.get("power") is not None:
        raw = entry["power"]
        if isinstance(raw, dict):
            # YAML 1.1 reads a bare `on:`/`off:` key as true/false.
            raw = {YAML_BOOLEAN_KEYS.get(k, k) if isinstance(k, bool) else k: v for k, v in raw.items()}
        if not isinstance(raw, dict) or not raw.get("via"):
            _fail(path, f"{key}.power", "must be a mapping with `via` and commands",
                  "write e.g. `power: {via: local, on: \"virsh start Node1\", off: \"virsh destroy Node1\"}`")
        unknown = set(raw) - POWER_FIELDS
        if unknown:
            _fail(path, f"{key}.power", f"unknown field(s) {', '.join(sorted(map(str, unknown)))}",
                  f"allowed: {', '.join(sorted(POWER_FIELDS))}")
        commands = {a: raw.get(a) for a in ("on", "off", "reset", "crash")}
        for action, command in commands.items():
            if command is not None and (not isinstance(command, str) or not command.strip()):
                _fail(path, f"{key}.power.{action}", "must be a command line", "write the command as a string")
        if not any(commands.values()):
            _fail(path, f"{key}.power", "names no command", "give at least one of on, off, reset, crash")
        power = PowerCommands(via=str(raw["via"]), **commands)
    return HostAccess(name=name, kind="ssh", address=address, user=user, key=ssh_key, port=port,
                      sudo=bool(sudo) if sudo is not None else None, ssh_config=ssh_config,
                      cluster_nic=nic, power=power)


def ssh_resolved(access: HostAccess) -> dict[str, str]:
    """What ssh would do for this host (`ssh -G`: parses config, connects to nothing)."""
    argv = ["ssh", "-G"]
    if access.ssh_config:
        argv += ["-F", access.ssh_config]
    if access.port:
        argv += ["-p", str(access.port)]
    if access.user:
        argv += ["-l", access.user]
    argv += ["--", access.address]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise HaconformError("ssh is not installed on the harness machine", where="--target ssh",
                             fix="apt-get install -y openssh-client") from None
    if result.returncode != 0:
        raise HaconformError(f"hosts.{access.name}: ssh -G refused the settings: {result.stderr.strip()[-300:]}",
                             where=access.ssh_config or "ssh", fix="correct the ssh_config or the address")
    resolved: dict[str, str] = {}
    for line in result.stdout.splitlines():
        option, _, value = line.partition(" ")
        resolved.setdefault(option.lower(), value)
    return resolved


def _goes_through_proxy(resolved: dict[str, str]) -> bool:
    return any(resolved.get(option, "none").lower() != "none" for option in ("proxycommand", "proxyjump"))


def _in_lab_range(text: str | None) -> bool:
    try:
        return ipaddress.IPv4Address(str(text)) in LAB_RANGE
    except ValueError:
        return False


def _resolves_into_lab_range(hostname: str | None) -> str | None:
    """The lab-range address a host name stands for (/etc/hosts, DNS), else None."""
    if not hostname:
        return None
    try:
        return hostname if ipaddress.ip_address(hostname) in LAB_RANGE else None
    except ValueError:
        pass   # a name, not an address
    try:
        addresses = socket.getaddrinfo(hostname, None, socket.AF_INET)
    except (socket.gaierror, UnicodeError):
        return None   # ssh will say it cannot resolve it, naming the host
    return next((a[4][0] for a in addresses if _in_lab_range(a[4][0])), None)


def load_inventory(path: str | Path | None, topology: Topology, *, resolve_ssh: bool = True) -> Inventory:
    """Read and validate an inventory against the topology; raise one HaconformError on the first problem."""
    if not path:
        raise HaconformError("--target ssh needs an inventory", where="--inventory",
                             fix="pass --inventory FILE (see fixtures/inventory.example.yaml)")
    path = Path(path)
    data = read_yaml_mapping(
        path, missing_fix="pass --inventory with an existing file (see fixtures/inventory.example.yaml)",
        layout="fixtures/inventory.example.yaml")
    unknown = set(data) - TOP_FIELDS
    if unknown:
        _fail(path, ", ".join(sorted(unknown)), "unknown top-level field(s)", f"allowed: {', '.join(sorted(TOP_FIELDS))}")

    vip = data.get("vip")
    if vip is None:
        _fail(path, "vip", "missing field", f"add `vip: {topology.vip}` (the topology's VIP)")
    if str(vip) != topology.vip:
        _fail(path, "vip", f"{vip} is not the topology's VIP {topology.vip} ({topology.path})",
              "use the inventory written for this deployment, or pass the matching --topology")
    stage = data.get("stage", "stage5")
    if stage not in STAGES:
        _fail(path, "stage", f"unknown stage {stage!r}", f"use one of {', '.join(STAGES)}")

    names = data.get("names") or {}
    if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
        _fail(path, "names", "must map the runbook's names to the deployment's",
              "write e.g. `names: {VIP: WebIP, hagroup: web, app: dynamic}`")

    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        _fail(path, "defaults", "must be a mapping", "write e.g. `defaults: {user: root, key: ~/.ssh/id_ed25519}`")
    unknown = set(defaults) - DEFAULT_FIELDS
    if unknown:
        _fail(path, "defaults", f"unknown field(s) {', '.join(sorted(map(str, unknown)))}",
              f"allowed: {', '.join(sorted(DEFAULT_FIELDS))}")

    raw_hosts = data.get("hosts")
    if not isinstance(raw_hosts, dict) or not raw_hosts:
        _fail(path, "hosts", "missing or empty", "map every topology host name to how it is reached")
    for name in raw_hosts:
        if name not in topology.hosts:
            _fail(path, f"hosts.{name}", f"not a host of the topology {topology.path}",
                  f"use the topology's names: {', '.join(topology.hosts)}")
    hosts: dict[str, HostAccess] = {}
    for name, spec in topology.hosts.items():
        key = f"hosts.{name}"
        if name not in raw_hosts:
            _fail(path, key, f"missing ({spec.role} in the topology)",
                  f"add `{name}:` with how to reach it" + (" (or `none`)" if spec.role == "fence" else ""))
        entry = raw_hosts[name]
        if entry in (None, "none"):
            if spec.role != "fence":
                _fail(path, key, f"a {spec.role} cannot be `none`", "give its ssh address")
            hosts[name] = HostAccess(name=name, kind="none")
            continue
        if not isinstance(entry, dict):
            _fail(path, key, "must be a mapping (or `none` for the fence host)", "write e.g. `{address: 10.0.0.11}`")
        if "local" in entry:
            if entry["local"] is not True or set(entry) != {"local"}:
                _fail(path, key, "`local` stands alone and is `true`", "write `{local: true}`")
            if spec.role not in ("client", "fence"):
                _fail(path, key, f"a {spec.role} cannot be the harness machine", "give its ssh address")
            if spec.role == "client":
                lab_addresses = [a for a in [topology.vip, *(h.address for h in topology.hosts.values())]
                                 if _in_lab_range(a)]
                if lab_addresses:
                    _fail(path, key, f"HTTP from the harness machine would go to {lab_addresses[0]}, in "
                          f"{LAB_RANGE}, from its root network namespace",
                          "use `netns: NAME` (a namespace on the deployment's network) or an ssh client host")
            hosts[name] = HostAccess(name=name, kind="local")
            continue
        if "netns" in entry:
            netns = entry["netns"]
            if set(entry) != {"netns"}:
                _fail(path, key, "`netns` stands alone", "write `{netns: NAME}`")
            if spec.role != "client":
                _fail(path, key, f"a {spec.role} cannot be a network namespace", "only the client host can")
            if not isinstance(netns, str) or not NETNS_NAME.match(netns):
                _fail(path, f"{key}.netns", f"{netns!r} is not a namespace name", "write the name `ip netns list` shows")
            hosts[name] = HostAccess(name=name, kind="netns", netns=netns)
            continue
        hosts[name] = _ssh_host(path, key, name, entry, defaults)

    for name, access in hosts.items():
        if access.power and access.power.via != "local":
            via = hosts.get(access.power.via)
            if via is None or via.kind not in ("ssh", "local"):
                _fail(path, f"hosts.{name}.power.via", f"{access.power.via!r} is not an ssh host or `local`",
                      "name the inventory host that runs the power command (e.g. the fence host), or `local`")
            if access.power.via == name:
                _fail(path, f"hosts.{name}.power.via", "a host cannot switch its own power on",
                      "name the physical host (the fence host) or `local`")

    for name, access in list(hosts.items()):
        if access.kind != "ssh":
            continue
        login = access.user or "root"
        if resolve_ssh:
            resolved = ssh_resolved(access)
            login = access.user or resolved.get("user", "root")
            lab_address = None if _goes_through_proxy(resolved) else _resolves_into_lab_range(resolved.get("hostname"))
            if lab_address:
                _fail(path, f"hosts.{name}.address",
                      f"ssh would connect to {lab_address} (in {LAB_RANGE}) from the harness "
                      "machine's root network namespace",
                      "reach it through a ProxyCommand (e.g. `ip netns exec NS nc %h %p`) or ProxyJump in "
                      "ssh_config, or use the host's management address")
        sudo = access.sudo if access.sudo is not None else login != "root"
        if login != "root" and not sudo:
            _fail(path, f"hosts.{name}.sudo", f"user {login} without sudo cannot read or change the cluster",
                  "log in as root or set `sudo: true` (passwordless sudo: haconform runs `sudo -n`)")
        hosts[name] = replace(access, sudo=sudo)
    return Inventory(path=path, stage=stage, hosts=hosts, names={str(k): v for k, v in names.items()})
