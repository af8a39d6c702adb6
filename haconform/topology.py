"""The topology data file: load, validate, answer questions by role and name.

A malformed file gets one HaconformError naming the file, the key and the
fix; nothing is started before the whole file has been validated.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import HaconformError

ROLES = ("director", "realserver", "fence", "client")
HOST_NAME = re.compile(r"^[a-z][a-z0-9]{0,15}$")
# Relative to the working directory (a checkout); the package itself holds no data.
DEFAULT_TOPOLOGY = Path("fixtures") / "topology.yaml"


@dataclass(frozen=True)
class HostSpec:
    name: str
    role: str
    address: str
    index: int                      # stable position in the file: names NICs
    fence_name: str | None = None   # the fence device's name for this host (Node1)
    server_name: str | None = None  # HAProxy's name for this real server (app1)


@dataclass(frozen=True)
class Topology:
    path: Path
    subnet: ipaddress.IPv4Network
    vip: str
    hosts: dict[str, HostSpec]
    role_services: dict[str, list[str]]
    cluster_nodes: list[str]

    @property
    def prefixlen(self) -> int:
        return self.subnet.prefixlen

    def by_role(self, role: str) -> list[HostSpec]:
        return [h for h in self.hosts.values() if h.role == role]

    @property
    def directors(self) -> list[HostSpec]:
        return self.by_role("director")

    @property
    def realservers(self) -> list[HostSpec]:
        return self.by_role("realserver")

    @property
    def client(self) -> HostSpec:
        return self.by_role("client")[0]

    @property
    def fence_host(self) -> HostSpec | None:
        hosts = self.by_role("fence")
        return hosts[0] if hosts else None

    def host(self, name: str) -> HostSpec:
        try:
            return self.hosts[name]
        except KeyError:
            raise HaconformError(
                f"no host named {name!r}", where=str(self.path),
                fix=f"use one of: {', '.join(self.hosts)}") from None

    def by_address(self, address: str) -> HostSpec | None:
        return next((h for h in self.hosts.values() if h.address == address), None)

    def by_fence_name(self, fence_name: str) -> HostSpec | None:
        return next((h for h in self.hosts.values() if h.fence_name == fence_name), None)

    def by_server_name(self, server_name: str) -> HostSpec | None:
        return next((h for h in self.hosts.values() if h.server_name == server_name), None)


def _fail(path, key, what, fix):
    raise HaconformError(f"{key}: {what}", where=str(path), fix=fix)


def _require(path, mapping, key, kind, where_key):
    if not isinstance(mapping, dict) or key not in mapping:
        _fail(path, f"{where_key}.{key}" if where_key else key, "missing field",
              f"add `{key}:` ({kind})")
    return mapping[key]


def _address(path, key, value, subnet=None):
    try:
        addr = ipaddress.IPv4Address(str(value))
    except ValueError:
        _fail(path, key, f"{value!r} is not an IPv4 address", "write a dotted IPv4 address")
    if subnet is not None and addr not in subnet:
        _fail(path, key, f"{addr} is outside the lab subnet {subnet}",
              f"pick an address in {subnet}")
    return str(addr)


def read_yaml_mapping(path: Path, *, missing_fix: str, layout: str) -> dict:
    """A YAML file whose top level is a mapping; one HaconformError naming file (and line) otherwise."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise HaconformError("file not found", where=str(path), fix=missing_fix) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise HaconformError(f"not valid YAML ({getattr(exc, 'problem', exc)})", where=where,
                             fix="correct the YAML syntax at that line") from None
    if not isinstance(data, dict):
        _fail(path, "(top level)", "must be a mapping", f"see {layout} for the layout")
    return data


def load_topology(path: str | Path | None = None) -> Topology:
    path = Path(path or DEFAULT_TOPOLOGY).resolve()
    data = read_yaml_mapping(path, missing_fix="run from a haconform checkout or pass --topology with an existing file",
                             layout="fixtures/topology.yaml")

    network = _require(path, data, "network", "a mapping with subnet and vip", "")
    try:
        subnet = ipaddress.IPv4Network(str(_require(path, network, "subnet", "CIDR", "network")))
    except ValueError as exc:
        _fail(path, "network.subnet", str(exc), "write a network like 172.25.5.0/24")
    vip = _address(path, "network.vip", _require(path, network, "vip", "IPv4", "network"), subnet)

    raw_hosts = _require(path, data, "hosts", "a mapping of host name to its fields", "")
    if not isinstance(raw_hosts, dict) or not raw_hosts:
        _fail(path, "hosts", "must be a non-empty mapping", "list the hosts by name")
    hosts: dict[str, HostSpec] = {}
    seen_addresses = {vip: "network.vip"}
    seen_fence_names: dict[str, str] = {}
    for index, (name, spec) in enumerate(raw_hosts.items()):
        key = f"hosts.{name}"
        if not HOST_NAME.match(str(name)):
            _fail(path, key, "bad host name", "use 1-16 lower-case letters/digits starting with a letter")
        role = _require(path, spec, "role", f"one of {', '.join(ROLES)}", key)
        if role not in ROLES:
            _fail(path, f"{key}.role", f"unknown role {role!r}", f"use one of {', '.join(ROLES)}")
        address = _address(path, f"{key}.address",
                           _require(path, spec, "address", "IPv4 in the subnet", key), subnet)
        if address in seen_addresses:
            _fail(path, f"{key}.address", f"{address} is already used by {seen_addresses[address]}",
                  "give every host (and the VIP) its own address")
        seen_addresses[address] = key
        fence_name = spec.get("fence_name")
        if fence_name is not None:
            if fence_name in seen_fence_names:
                _fail(path, f"{key}.fence_name", f"{fence_name!r} is already used by {seen_fence_names[fence_name]}",
                      "give every host its own fence name")
            seen_fence_names[fence_name] = key
        unknown = set(spec) - {"role", "address", "fence_name", "server_name"}
        if unknown:
            _fail(path, key, f"unknown field(s) {', '.join(sorted(unknown))}",
                  "allowed: role, address, fence_name, server_name")
        hosts[name] = HostSpec(name=name, role=role, address=address, index=index,
                               fence_name=fence_name, server_name=spec.get("server_name"))

    for role, minimum in (("director", 1), ("realserver", 1), ("client", 1)):
        if sum(h.role == role for h in hosts.values()) < minimum:
            _fail(path, "hosts", f"no host with role {role}", f"add a host with `role: {role}`")
    if sum(h.role == "client" for h in hosts.values()) > 1:
        _fail(path, "hosts", "more than one client host", "keep exactly one host with role client")

    raw_roles = data.get("roles", {}) or {}
    role_services = {}
    for role in ROLES:
        services = (raw_roles.get(role) or {}).get("services", [])
        if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
            _fail(path, f"roles.{role}.services", "must be a list of init script names",
                  "write e.g. `services: [rsyslog, haproxy]`")
        role_services[role] = services
    for role in raw_roles:
        if role not in ROLES:
            _fail(path, f"roles.{role}", "unknown role", f"use one of {', '.join(ROLES)}")

    cluster = data.get("cluster") or {}
    # What the runbook configures (cluster name, fence settings) is stage data, not topology.
    if "name" in cluster:
        _fail(path, "cluster.name", "the cluster's name is stage data now",
              "move it to `cluster: {name: ...}` in stage4/stage.yaml of the --config directory")
    if "fence" in data:
        _fail(path, "fence", "fence settings are stage data now",
              "move them to stage5/fence_virt.conf (address, port, key_file) of the --config directory")
    unknown_cluster = set(cluster) - {"nodes"}
    if unknown_cluster:
        _fail(path, "cluster", f"unknown field(s) {', '.join(sorted(unknown_cluster))}", "allowed: nodes")
    cluster_nodes = cluster.get("nodes", [h.name for h in hosts.values() if h.role == "director"])
    for node in cluster_nodes:
        if node not in hosts or hosts[node].role != "director":
            _fail(path, "cluster.nodes", f"{node!r} is not a director host",
                  "list director host names only")
    return Topology(path=path, subnet=subnet, vip=vip, hosts=hosts, role_services=role_services,
                    cluster_nodes=list(cluster_nodes))
