"""The inventory: how to reach the hosts of an existing deployment (--target ssh).

The topology (fixtures/topology.yaml) says what the deployment is: roles,
names, cluster addresses, the VIP.  Suites and configurations use only those.
The inventory says how the harness reaches each of those hosts:

    vip: 172.25.5.100          # must equal the topology's VIP: guards against the wrong file
    stage: stage5              # the runbook stage the deployment is in (what verification expects; default: the last)
    names: {VIP: WebIP}        # optional: the deployment's own names for the runbook's resources, groups, backends
    waivers: waivers.yaml      # optional: accepted deviations (haconform/waivers.py), a file or the list inline
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
from typing import Annotated, Any, ClassVar

from pydantic import Field, PlainValidator, model_validator

from .datafile import DataModel, checked, fail, invalid, key_field, load_model, read_yaml_mapping
from .errors import HaconformError
from .redaction import redacted_tail
from .stages.catalogue import documented as documented_stages
from .topology import IPv4, Topology
from .waivers import waivers_of_inventory

LAB_RANGE = ipaddress.IPv4Network("172.25.0.0/16")
NETNS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
NIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,14}$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_.-]*$")
YAML_BOOLEAN_KEYS = {True: "on", False: "off"}
LAYOUT = "fixtures/inventory.example.yaml"


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
    waivers: tuple = ()        # haconform.waivers.Waiver, from `waivers:`

    def access(self, name: str) -> HostAccess:
        try:
            return self.hosts[name]
        except KeyError:
            raise HaconformError(f"hosts.{name}: no entry", where=str(self.path),
                                 fix=f"add `{name}:` under hosts") from None


# ----- the file's layout (pydantic models: datafile.load_model words their errors) ----------

def _is(kind: type, pattern: re.Pattern | None = None):
    return lambda value: isinstance(value, kind) and (pattern is None or pattern.match(value))


def _host_address(value) -> bool:
    return isinstance(value, str) and bool(value.strip()) and not value.startswith("-") and " " not in value


User = Annotated[str | None, checked(_is(str, USER_NAME), "{!r} is not a user name",
                                     "write the ssh login, e.g. `user: root`", optional=True)]
Port = Annotated[int | None, checked(lambda v: type(v) is int and 1 <= v <= 65535, "{!r} is not a TCP port",
                                     "write a number from 1 to 65535", optional=True)]
Sudo = Annotated[bool | None, checked(_is(bool), "{!r} is not yes/no", "write `sudo: true` or `sudo: false`",
                                      optional=True)]
Command = Annotated[str | None, checked(lambda v: isinstance(v, str) and v.strip(), "must be a command line",
                                        "write the command as a string", optional=True)]
Text = Annotated[str, PlainValidator(str)]


def _file(name: str, what: str):
    return checked(_is(str), f"must be a path to {what}", f"write `{name}: /path/to/file`", optional=True)


class SshSettings(DataModel):
    """What `defaults:` may set for every ssh host."""
    user: User = None
    key: Annotated[str | None, _file("key", "private key file")] = None
    port: Port = None
    sudo: Sudo = None
    ssh_config: Annotated[str | None, _file("ssh_config", "ssh_config file")] = None


class PowerModel(DataModel):
    via: Annotated[str, checked(lambda v: isinstance(v, str) and v, "{!r} names no host")] = key_field(
        kind="the inventory host that runs the commands, or `local`")
    on: Command = None
    off: Command = None
    reset: Command = None
    crash: Command = None

    @model_validator(mode="before")
    @classmethod
    def _yaml_booleans(cls, data):
        # YAML 1.1 reads a bare `on:`/`off:` key as true/false.
        if isinstance(data, dict):
            return {YAML_BOOLEAN_KEYS.get(k, k) if isinstance(k, bool) else k: v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _some_command(self):
        if not any((self.on, self.off, self.reset, self.crash)):
            raise invalid("names no command", "give at least one of on, off, reset, crash")
        return self


class SshHost(SshSettings):
    unknown_fix: ClassVar[str] = "allowed for an ssh host: {allowed}; or `local: true`, `netns: NAME`"
    address: Annotated[str, checked(_host_address, "missing or not a host name/address")] = key_field(
        kind="what ssh connects to: an IP, a DNS name or a Host alias of ssh_config",
        fix="write what ssh connects to: an IP, a DNS name or a Host alias of ssh_config")
    cluster_nic: Annotated[str | None, checked(_is(str, NIC_NAME), "{!r} is not an interface name",
                                               "write e.g. `cluster_nic: eth1`", optional=True)] = None
    power: PowerModel | None = key_field(None, fix="write e.g. `power: {via: local, on: \"virsh start Node1\", "
                                                   "off: \"virsh destroy Node1\"}`")


class LocalHost(DataModel):
    unknown_fix: ClassVar[str] = "write `{local: true}`: `local` stands alone"
    local: Annotated[bool, checked(lambda v: v is True, "`local` stands alone and is `true`", "write `{local: true}`")]


class NetnsHost(DataModel):
    unknown_fix: ClassVar[str] = "write `{netns: NAME}`: `netns` stands alone"
    netns: Annotated[str, checked(_is(str, NETNS_NAME), "{!r} is not a namespace name",
                                  "write the name `ip netns list` shows")]


def _documented_stage(value) -> str:
    # The names come from the stage data, so they are checked here rather than spelt in a Literal.
    names = documented_stages().names
    if not isinstance(value, str) or value not in names:
        raise invalid(f"unknown stage {value!r}", f"use one of {', '.join(names)}")
    return value


StageName = Annotated[str, PlainValidator(_documented_stage)]     # a runbook stage (fixtures/documented/)


class InventoryModel(DataModel):
    vip: IPv4 | None = None            # checked against the topology's
    stage: StageName = Field(default_factory=lambda: documented_stages().last)
    names: dict[Text, str] | None = key_field(None, fix="write e.g. `names: {VIP: WebIP, hagroup: web, app: dynamic}` "
                                                        "(the runbook's names to the deployment's)")
    defaults: SshSettings | None = key_field(None, fix="write e.g. `defaults: {user: root, key: ~/.ssh/id_ed25519}`")
    waivers: Any = key_field(None, fix="write `waivers: FILE` (relative to this inventory) or the list of waivers "
                                       "itself (docs/verify-and-waivers.md: Waivers)")
    hosts: dict[Text, Any] = key_field(kind="every topology host name mapped to how it is reached", min_length=1,
                                       fix="map every topology host name to how it is reached")


# ----- what needs the topology, the disk or ssh ----------------------------------------------

def _expand(path: Path, value: str) -> str:
    """~ and relative paths: relative to the inventory file's directory."""
    expanded = Path(os.path.expanduser(str(value)))
    return str(expanded if expanded.is_absolute() else (path.parent / expanded))


def _check_file(path: Path, key: str, value: str, what: str) -> str:
    resolved = _expand(path, value)
    if not Path(resolved).is_file():
        fail(path, key, f"{resolved} does not exist", f"point it at an existing {what}")
    return resolved


def _ssh_host(path: Path, key: str, name: str, entry: dict, defaults: dict) -> HostAccess:
    ssh = load_model(SshHost, {**defaults, **entry}, path=path, layout=LAYOUT, at=("hosts", name))
    power = PowerCommands(**ssh.power.model_dump()) if ssh.power else None
    return HostAccess(name=name, kind="ssh", address=ssh.address, user=ssh.user,
                      key=_check_file(path, f"{key}.key", ssh.key, "private key file") if ssh.key else None,
                      port=ssh.port, sudo=ssh.sudo,
                      ssh_config=(_check_file(path, f"{key}.ssh_config", ssh.ssh_config, "ssh_config file")
                                  if ssh.ssh_config else None),
                      cluster_nic=ssh.cluster_nic, power=power)


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
        raise HaconformError(f"hosts.{access.name}: ssh -G refused the settings: "
                             f"{redacted_tail(result.stderr.strip(), 300)}",
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
        layout=LAYOUT, option="--inventory")
    model = load_model(InventoryModel, data, path=path, layout=LAYOUT)
    if model.vip is None:
        fail(path, "vip", "missing field", f"add `vip: {topology.vip}` (the topology's VIP)")
    if model.vip != topology.vip:
        fail(path, "vip", f"{model.vip} is not the topology's VIP {topology.vip} ({topology.path})",
             "use the inventory written for this deployment, or pass the matching --topology")
    defaults = data.get("defaults") or {}
    for name in model.hosts:
        if name not in topology.hosts:
            fail(path, f"hosts.{name}", f"not a host of the topology {topology.path}",
                 f"use the topology's names: {', '.join(topology.hosts)}")
    hosts = {name: _host_access(path, topology, name, model.hosts, defaults) for name in topology.hosts}
    _check_power_via(path, hosts)
    for name, access in list(hosts.items()):
        if access.kind == "ssh":
            hosts[name] = _with_login_checked(path, name, access, resolve_ssh=resolve_ssh)
    waivers = waivers_of_inventory(model.waivers, path) if model.waivers is not None else []
    return Inventory(path=path, stage=model.stage, hosts=hosts, names=dict(model.names or {}),
                     waivers=tuple(waivers))


def _host_access(path: Path, topology: Topology, name: str, entries: dict, defaults: dict) -> HostAccess:
    """How the inventory says the topology's host `name` is reached: none, local, a netns, or ssh."""
    spec = topology.hosts[name]
    key = f"hosts.{name}"
    if name not in entries:
        fail(path, key, f"missing ({spec.role} in the topology)",
             f"add `{name}:` with how to reach it" + (" (or `none`)" if spec.role == "fence" else ""))
    entry = entries[name]
    if entry in (None, "none"):
        if spec.role != "fence":
            fail(path, key, f"a {spec.role} cannot be `none`", "give its ssh address")
        return HostAccess(name=name, kind="none")
    if not isinstance(entry, dict):
        fail(path, key, "must be a mapping (or `none` for the fence host)", "write e.g. `{address: 10.0.0.11}`")
    if "local" in entry:
        load_model(LocalHost, entry, path=path, layout=LAYOUT, at=("hosts", name))
        if spec.role not in ("client", "fence"):
            fail(path, key, f"a {spec.role} cannot be the harness machine", "give its ssh address")
        if spec.role == "client":
            lab_addresses = [a for a in [topology.vip, *(h.address for h in topology.hosts.values())]
                             if _in_lab_range(a)]
            if lab_addresses:
                fail(path, key, f"HTTP from the harness machine would go to {lab_addresses[0]}, in "
                     f"{LAB_RANGE}, from its root network namespace",
                     "use `netns: NAME` (a namespace on the deployment's network) or an ssh client host")
        return HostAccess(name=name, kind="local")
    if "netns" in entry:
        netns = load_model(NetnsHost, entry, path=path, layout=LAYOUT, at=("hosts", name)).netns
        if spec.role != "client":
            fail(path, key, f"a {spec.role} cannot be a network namespace", "only the client host can")
        return HostAccess(name=name, kind="netns", netns=netns)
    return _ssh_host(path, key, name, entry, defaults)


def _check_power_via(path: Path, hosts: dict[str, HostAccess]) -> None:
    for name, access in hosts.items():
        if access.power and access.power.via != "local":
            via = hosts.get(access.power.via)
            if via is None or via.kind not in ("ssh", "local"):
                fail(path, f"hosts.{name}.power.via", f"{access.power.via!r} is not an ssh host or `local`",
                      "name the inventory host that runs the power command (e.g. the fence host), or `local`")
            if access.power.via == name:
                fail(path, f"hosts.{name}.power.via", "a host cannot switch its own power on",
                      "name the physical host (the fence host) or `local`")


def _with_login_checked(path: Path, name: str, access: HostAccess, *, resolve_ssh: bool) -> HostAccess:
    """The ssh host with its sudo decided: its login as ssh resolves it (never into the lab's range from
    the root namespace), and sudo unless that login is root."""
    login = access.user or "root"
    if resolve_ssh:
        resolved = ssh_resolved(access)
        login = access.user or resolved.get("user", "root")
        lab_address = None if _goes_through_proxy(resolved) else _resolves_into_lab_range(resolved.get("hostname"))
        if lab_address:
            fail(path, f"hosts.{name}.address",
                  f"ssh would connect to {lab_address} (in {LAB_RANGE}) from the harness "
                  "machine's root network namespace",
                  "reach it through a ProxyCommand (e.g. `ip netns exec NS nc %h %p`) or ProxyJump in "
                  "ssh_config, or use the host's management address")
    sudo = access.sudo if access.sudo is not None else login != "root"
    if login != "root" and not sudo:
        fail(path, f"hosts.{name}.sudo", f"user {login} without sudo cannot read or change the cluster",
              "log in as root or set `sudo: true` (passwordless sudo: haconform runs `sudo -n`)")
    return replace(access, sudo=sudo)
