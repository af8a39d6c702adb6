"""The topology data file: load, validate, answer questions by role and name.

A malformed file gets one HaconformError naming the file, the key and the
fix; nothing is started before the whole file has been validated.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal, get_args

from pydantic import PlainValidator, model_validator

from .datafile import DataModel, ServiceName, checked, invalid, key_field, load_model, read_yaml_mapping
from .errors import HaconformError

Role = Literal["director", "realserver", "fence", "client"]
ROLES = get_args(Role)
LAYOUT = "fixtures/topology.yaml"
HOST_NAME = re.compile(r"^[a-z][a-z0-9]{0,15}$")
# A fence domain (virsh start NAME, fence_xvm -H NAME) and an HAProxy server name reach command lines.
FENCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
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


def _ipv4(value) -> str:
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        raise invalid(f"{value!r} is not an IPv4 address", "write a dotted IPv4 address") from None


def _subnet(value) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value))
    except ValueError as exc:
        raise invalid(str(exc), "write a network like 172.25.5.0/24") from None


IPv4 = Annotated[str, PlainValidator(_ipv4)]
HostName = Annotated[str, checked(lambda v: isinstance(v, str) and HOST_NAME.match(v), "bad host name",
                                  "use 1-16 lower-case letters/digits starting with a letter")]


class NetworkModel(DataModel):
    subnet: Annotated[ipaddress.IPv4Network, PlainValidator(_subnet)] = key_field(kind="CIDR")
    vip: IPv4 = key_field(kind="IPv4")

    @model_validator(mode="after")
    def _vip_in_subnet(self):
        _in_subnet(self.vip, self.subnet, at=("vip",))
        return self


class HostModel(DataModel):
    role: Role = key_field(kind=f"one of {', '.join(ROLES)}")
    address: IPv4 = key_field(kind="IPv4 in the subnet")
    fence_name: Annotated[str | None, checked(lambda v: isinstance(v, str) and FENCE_NAME.match(v),
                                              "{!r} is not a fence domain name",
                                              "use the domain's name as `virsh list` shows it, e.g. Node1",
                                              optional=True)] = None
    server_name: Annotated[str | None, checked(lambda v: isinstance(v, str) and SERVER_NAME.match(v),
                                               "{!r} is not an HAProxy server name",
                                               "use the name of its `server` line in haproxy.cfg, e.g. app1",
                                               optional=True)] = None


class RoleModel(DataModel):
    services: list[ServiceName] = key_field([], fix="write e.g. `services: [rsyslog, haproxy]` (init script names)")


class RolesModel(DataModel):
    unknown_fix: ClassVar[str] = f"use one of {', '.join(ROLES)}"
    director: RoleModel | None = None
    realserver: RoleModel | None = None
    fence: RoleModel | None = None
    client: RoleModel | None = None


class ClusterModel(DataModel):
    nodes: list[str] | None = key_field(None, fix="list director host names only")

    @model_validator(mode="before")
    @classmethod
    def _no_stage_data(cls, data):
        # What the runbook configures (cluster name, fence settings) is stage data, not topology.
        if isinstance(data, dict) and "name" in data:
            raise invalid("the cluster's name is stage data now",
                          "move it to `cluster: {name: ...}` in stage4/stage.yaml of the --config directory",
                          at=("name",))
        return data


class TopologyModel(DataModel):
    network: NetworkModel = key_field(kind="a mapping with subnet and vip")
    hosts: dict[HostName, HostModel] = key_field(
        kind="a mapping of host name to its fields", min_length=1,
        fix="list the hosts by name, each as `NAME: {role: ROLE, address: IPV4}`")
    roles: RolesModel | None = None
    cluster: ClusterModel | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_fence(cls, data):
        if isinstance(data, dict) and "fence" in data:
            raise invalid("fence settings are stage data now",
                          "move them to stage5/fence_virt.conf (address, port, key_file) of the --config directory",
                          at=("fence",))
        return data

    @property
    def cluster_nodes(self) -> list[str]:
        if self.cluster is not None and self.cluster.nodes is not None:
            return self.cluster.nodes
        return [name for name, host in self.hosts.items() if host.role == "director"]

    @model_validator(mode="after")
    def _consistent(self):
        seen_addresses = {self.network.vip: "network.vip"}
        seen_fence_names: dict[str, str] = {}
        for name, host in self.hosts.items():
            key = f"hosts.{name}"
            _in_subnet(host.address, self.network.subnet, at=("hosts", name, "address"))
            if host.address in seen_addresses:
                raise invalid(f"{host.address} is already used by {seen_addresses[host.address]}",
                              "give every host (and the VIP) its own address", at=("hosts", name, "address"))
            seen_addresses[host.address] = key
            if host.fence_name is not None:
                if host.fence_name in seen_fence_names:
                    raise invalid(f"{host.fence_name!r} is already used by {seen_fence_names[host.fence_name]}",
                                  "give every host its own fence name", at=("hosts", name, "fence_name"))
                seen_fence_names[host.fence_name] = key
        roles = [host.role for host in self.hosts.values()]
        for role in ("director", "realserver", "client"):
            if role not in roles:
                raise invalid(f"no host with role {role}", f"add a host with `role: {role}`", at=("hosts",))
        if roles.count("client") > 1:
            raise invalid("more than one client host", "keep exactly one host with role client", at=("hosts",))
        for node in self.cluster_nodes:
            if node not in self.hosts or self.hosts[node].role != "director":
                raise invalid(f"{node!r} is not a director host", "list director host names only",
                              at=("cluster", "nodes"))
        return self


def _in_subnet(address: str, subnet: ipaddress.IPv4Network, *, at: tuple):
    if ipaddress.IPv4Address(address) not in subnet:
        raise invalid(f"{address} is outside the lab subnet {subnet}", f"pick an address in {subnet}", at=at)


def load_topology(path: str | Path | None = None) -> Topology:
    path = Path(path or DEFAULT_TOPOLOGY).resolve()
    data = read_yaml_mapping(path, missing_fix="run from a haconform checkout or pass --topology with an existing file",
                             layout=LAYOUT, option="--topology")
    model = load_model(TopologyModel, data, path=path, layout=LAYOUT)
    hosts = {name: HostSpec(name=name, role=host.role, address=host.address, index=index,
                            fence_name=host.fence_name, server_name=host.server_name)
             for index, (name, host) in enumerate(model.hosts.items())}
    roles = model.roles or RolesModel()
    role_services = {role: list((getattr(roles, role) or RoleModel()).services) for role in ROLES}
    return Topology(path=path, subnet=model.network.subnet, vip=model.network.vip, hosts=hosts,
                    role_services=role_services, cluster_nodes=list(model.cluster_nodes))
