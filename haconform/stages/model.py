"""A runbook stage as data: its files, its services, and (stages 4-5) its cluster.

A stage directory holds plain files laid out by selector and target path,
and a `stage.yaml` (layout: fixtures/documented/README.md):

    stage2/role-director/etc/haproxy/haproxy.cfg
    stage2/host-server2/var/www/html/index.html
    stage4/stage.yaml          base: stage3, cluster: {name, properties, resources, group or constraints}
    stage5/stage.yaml          base: stage4, cluster: {properties, stonith}, fencing: {...}

`base:` makes a stage cumulative: it has its base's files (its own win) and
its base's cluster block, deep-merged under its own.  Everything the appliers,
the verifier and the suites know about a stage comes from here; a malformed
file gets one HaconformError naming the file, the key and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, get_args

from pydantic import Field, PlainValidator, field_validator, model_validator

from ..datafile import (AccountName, DataModel, Mode, ServiceName, checked, fail, invalid, key_field, load_model,
                        read_yaml_mapping)
from ..errors import HaconformError
from ..readers.cluster import pcmk_seconds
from ..redaction import discover as discover_secrets
from ..topology import Topology

SELECTOR = re.compile(r"^(role|host)-([a-z][a-z0-9]*)$")
OnChange = Literal["none", "reload", "restart"]
ON_CHANGE = get_args(OnChange)
LAYOUT = "fixtures/documented/README.md"


@dataclass(frozen=True)
class StageFile:
    selector: str
    dest: str
    source: Path


@dataclass
class ServiceRule:
    name: str
    on_change: str
    watches: list[str]


@dataclass(frozen=True)
class Operation:
    name: str
    interval: str

    @property
    def seconds(self) -> float:
        return pcmk_seconds(self.interval)


@dataclass(frozen=True)
class ResourceSpec:
    """One pacemaker resource (or stonith device) as the runbook creates it.

    role: the name suites know it by (vip, haproxy, fence); id: its name in
    the CIB, which a deployment may spell its own way (see ClusterSpec.renamed).
    """
    role: str
    id: str
    agent: str
    agent_without_systemd: str | None
    params: Mapping[str, str]
    operations: tuple[Operation, ...]

    def interval(self, operation: str = "monitor") -> float | None:
        """The documented interval of an operation, in seconds."""
        for op in self.operations:
            if op.name == operation:
                return op.seconds
        return None

    def agents(self) -> tuple[str, ...]:
        """Agents that run what the runbook means (systemd:haproxy, or the init script without systemd)."""
        return tuple(a for a in (self.agent, self.agent_without_systemd) if a)


@dataclass(frozen=True)
class FencingSpec:
    key_file: str
    key_bytes: int
    multicast_address: str
    port: int
    interface: str
    fence_virtd_conf: Path


COLOCATION, ORDER = "colocation", "order"
ORDER_KINDS = ("Mandatory", "Optional", "Serialize")


@dataclass(frozen=True)
class ConstraintSpec:
    """A colocation or order constraint between two resources (roles), as pcs creates it:

        colocation: roles = (resource, with)   pcs constraint colocation add haproxy with VIP INFINITY
        order:      roles = (first, then)      pcs constraint order VIP then haproxy

    id: the constraint's id when the stage names one (pcs makes one up otherwise); it is used when the
    constraint is created, never to compare: a deployment's constraint means what it says, whatever its id.
    """
    type: str
    roles: tuple[str, str]
    id: str | None = None
    score: str = "INFINITY"          # colocation
    kind: str = "Mandatory"          # order
    symmetrical: bool = True         # order: stopped in the reverse order


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster stage's cluster.  The VIP and HAProxy are tied together either by a group (`group:`, the
    runbook's form) or by colocation + order constraints (`constraints:`); both say which members must run
    together (together_ids()), and a deployment in either form is compared by what it means."""
    name: str
    nodes: tuple[str, ...]
    properties: Mapping[str, str]
    resources: Mapping[str, ResourceSpec]          # role -> resource, in creation order
    group_id: str | None
    group_members: tuple[str, ...]                  # roles, in start order
    stonith: Mapping[str, ResourceSpec] = field(default_factory=dict)
    fencing: FencingSpec | None = None
    constraints: tuple[ConstraintSpec, ...] = ()

    def resource(self, role: str) -> ResourceSpec:
        found = self.resources.get(role) or self.stonith.get(role)
        if found is None:
            raise KeyError(f"the stage declares no resource with role {role!r} "
                           f"(has {sorted([*self.resources, *self.stonith])})")
        return found

    @property
    def form(self) -> str:
        """How the stage ties the members together: "group" or "constraints" ("" when it does not)."""
        return "group" if self.group_id else "constraints" if self.constraints else ""

    @property
    def together(self) -> tuple[str, ...]:
        """Roles of the members that must run together, in start order: the group's members, or the roles
        the constraints tie (the order constraints' chain first, then any only colocated)."""
        if self.group_id:
            return self.group_members
        orders = [c.roles for c in self.constraints if c.type == ORDER]
        roles: list[str] = []
        # A chain first -> then: start from the roles nothing is ordered after.
        pending = list(orders)
        while pending:
            starts = [first for first, _ in pending if all(then != first for _, then in pending)] \
                or [pending[0][0]]     # a cycle (refused at load): keep the written order
            for first, then in [p for p in pending if p[0] == starts[0]]:
                for role in (first, then):
                    if role not in roles:
                        roles.append(role)
                pending.remove((first, then))
        for constraint in self.constraints:
            roles += [role for role in constraint.roles if role not in roles]
        return tuple(roles)

    def together_ids(self) -> list[str]:
        """CIB ids of the members that must run together, in start order (a group's, or the constraints')."""
        return [self.resources[role].id for role in self.together]

    def group_ids(self) -> list[str]:
        """The name of the group-only model: the same as together_ids()."""
        return self.together_ids()

    @property
    def together_label(self) -> str:
        """What messages call the members: the group's id, or the members joined ("VIP + haproxy")."""
        return self.group_id or " + ".join(self.together_ids())

    def host_map(self, role: str = "fence") -> dict[str, str]:
        """pcmk_host_map of a stonith device: node -> fence domain."""
        text = self.stonith[role].params.get("pcmk_host_map", "")
        return dict(pair.split(":", 1) for pair in re.split(r"[;\s,]+", text.strip()) if pair)

    def renamed(self, names: Mapping[str, str]) -> "ClusterSpec":
        """The same cluster with the deployment's own ids (runbook id -> deployment id)."""
        if not names:
            return self

        def rename(resources):
            return {role: replace(r, id=names.get(r.id, r.id)) for role, r in resources.items()}
        return replace(self, resources=rename(self.resources), stonith=rename(self.stonith),
                       group_id=names.get(self.group_id, self.group_id) if self.group_id else None,
                       constraints=tuple(replace(c, id=names.get(c.id, c.id)) if c.id else c
                                         for c in self.constraints))


@dataclass
class Stage:
    name: str
    directory: Path
    title: str
    sections: list[str]
    files: list[StageFile]
    validate: dict[str, str]
    modes: dict[str, dict]
    services: dict[str, list[ServiceRule]]
    base: str | None = None
    provides: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    cluster: ClusterSpec | None = None
    cluster_raw: dict | None = None     # the merged `cluster:` block, for stages based on this one

    def hosts_for(self, selector: str, topology: Topology) -> list[str]:
        kind, value = SELECTOR.match(selector).groups()
        if kind == "host":
            topology.host(value)
            return [value]
        return [h.name for h in topology.by_role(value)]

    def plan(self, topology: Topology) -> dict[str, list[StageFile]]:
        """host -> files it receives (a host-specific file wins over a role's)."""
        per_host: dict[str, dict[str, StageFile]] = {}
        for f in sorted(self.files, key=lambda f: f.selector.startswith("host-")):
            for host in self.hosts_for(f.selector, topology):
                per_host.setdefault(host, {})[f.dest] = f
        return {h: list(files.values()) for h, files in per_host.items()}

    def file(self, selector: str, dest: str) -> StageFile | None:
        return next((f for f in self.files if f.selector == selector and f.dest == dest), None)

    def text(self, selector: str, dest: str) -> str:
        """A documented file's content; LookupError naming the stage when it has none."""
        found = self.file(selector, dest)
        if found is None:
            raise LookupError(f"stage {self.name} ({self.directory}) documents no {selector}{dest}")
        return found.source.read_text()

    @property
    def is_cluster_stage(self) -> bool:
        return self.cluster is not None


# ----- stage.yaml's layout (pydantic models: datafile.load_model words their errors) --------

def _scalar(value) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise invalid("must be a single value", "quote it, e.g. \"30s\"")
    return "true" if value is True else "false" if value is False else str(value)


def _name(value) -> str:
    if not _scalar(value).strip():
        raise invalid("must not be empty")
    return _scalar(value)


def _interval(value) -> str:
    try:
        pcmk_seconds(value)
    except ValueError:
        raise invalid(f"{value!r} is not an interval", "write e.g. 30s, 1min, 60") from None
    return str(value)


Text = Annotated[str, PlainValidator(str)]               # a mapping's key
Scalar = Annotated[str, PlainValidator(_scalar)]         # a single value, as text (true/false for booleans)
Name = Annotated[str, PlainValidator(_name)]             # a single value, not empty
Selector = Annotated[str, checked(lambda v: isinstance(v, str) and SELECTOR.match(v), "unknown selector",
                                  "use role-<role> or host-<hostname>")]


class OperationModel(DataModel):
    name: Name = key_field(kind="the operation, e.g. monitor")
    interval: Annotated[str, PlainValidator(_interval)] = key_field(kind="e.g. 30s, 1min, 60")


class ResourceModel(DataModel):
    id: Name
    agent: Name
    agent_without_systemd: Scalar | None = None
    params: dict[Text, Scalar] | None = key_field(None, fix="write `params: {name: value}`")
    operations: list[OperationModel] | None = key_field(
        None, fix="write e.g. `operations: [{name: monitor, interval: 30s}]`")


class GroupModel(DataModel):
    id: Name = key_field(kind="the group's id, as in pcs resource group add ID ...")
    members: list[Text] | None = key_field(
        None, fix="write e.g. `members: [vip, haproxy]` (roles of cluster.resources)")


def _score(value) -> str:
    text = _scalar(value).strip()
    if not re.fullmatch(r"[+-]?(INFINITY|\d+)", text, re.IGNORECASE):
        raise invalid(f"{text!r} is not a pacemaker score", "write INFINITY, -INFINITY or a whole number")
    return text.upper()


Score = Annotated[str, PlainValidator(_score)]
CONSTRAINTS_FIX = ("write e.g. `constraints: [{colocation: {resource: haproxy, with: vip, score: INFINITY}}, "
                   "{order: {first: vip, then: haproxy}}]` (roles of cluster.resources)")


class ColocationModel(DataModel):
    id: Name | None = None
    resource: Text = key_field(kind="the role placed with the other, as in colocation add RESOURCE with ...")
    with_: Text = key_field(alias="with", kind="the role it is placed with")
    score: Score = "INFINITY"


class OrderModel(DataModel):
    id: Name | None = None
    first: Text = key_field(kind="the role started first, as in pcs constraint order FIRST then ...")
    then: Text = key_field(kind="the role started after it")
    kind: Literal["Mandatory", "Optional", "Serialize"] = "Mandatory"
    symmetrical: bool = True


class ConstraintModel(DataModel):
    colocation: ColocationModel | None = None
    order: OrderModel | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.colocation is None) == (self.order is None):
            raise invalid("each constraint is one `colocation:` or one `order:`", CONSTRAINTS_FIX)
        return self

    def spec(self) -> ConstraintSpec:
        if self.colocation is not None:
            c = self.colocation
            return ConstraintSpec(COLOCATION, (c.resource, c.with_), id=c.id, score=c.score)
        o = self.order
        return ConstraintSpec(ORDER, (o.first, o.then), id=o.id, kind=o.kind, symmetrical=o.symmetrical)


class ClusterModel(DataModel):
    name: Name = key_field(kind="the cluster's name, as in pcs cluster setup NAME")
    properties: dict[Text, Scalar] | None = key_field(None, fix="write `properties: {name: value}`")
    resources: dict[Text, ResourceModel] | None = key_field(None, fix="write `ROLE: {id, agent, ...}` per resource")
    group: GroupModel | None = key_field(None, fix="write `group: {id: hagroup, members: [vip, haproxy]}`")
    constraints: list[ConstraintModel] | None = key_field(None, fix=CONSTRAINTS_FIX)
    stonith: dict[Text, ResourceModel] | None = key_field(None, fix="write `ROLE: {id, agent, ...}` per device")

    @field_validator("group", mode="before")
    @classmethod
    def _empty_group(cls, value):
        return None if value == {} else value

    @model_validator(mode="after")
    def _consistent(self):
        resources, stonith = self.resources or {}, self.stonith or {}
        for role in (self.group.members or []) if self.group else []:
            if role not in resources:
                raise invalid(f"{role!r} is not a resource role of cluster.resources",
                              f"name roles from {sorted(resources)}", at=("group", "members"))
        if self.group and self.constraints:
            raise invalid("the members are tied by a group or by constraints, not both",
                          "keep one; a stage based on one with `group:` switches to constraints with `group: null`",
                          at=("constraints",))
        for i, constraint in enumerate(self.constraints or []):
            kind = "colocation" if constraint.colocation else "order"
            keys = ("resource", "with") if constraint.colocation else ("first", "then")
            spec = constraint.spec()
            for key, role in zip(keys, spec.roles):
                if role not in resources:
                    raise invalid(f"{role!r} is not a resource role of cluster.resources",
                                  f"name roles from {sorted(resources)}", at=("constraints", i, kind, key))
            if spec.roles[0] == spec.roles[1]:
                raise invalid(f"a constraint of {spec.roles[0]!r} with itself", "name two roles",
                              at=("constraints", i, kind))
        orders = [c.spec().roles for c in self.constraints or [] if c.order]
        if _cyclic(orders):
            raise invalid(f"the order constraints {orders} form a cycle", "order each role after one other",
                          at=("constraints",))
        ids = [r.id for r in [*resources.values(), *stonith.values()]] + ([self.group.id] if self.group else [])
        ids += [c.spec().id for c in self.constraints or [] if c.spec().id]
        if len(set(ids)) != len(ids):
            raise invalid(f"ids {ids} are not unique", "give each resource, device and group its own id")
        for role, device in stonith.items():
            text = (device.params or {}).get("pcmk_host_map", "")
            if any(":" not in pair for pair in re.split(r"[;\s,]+", text.strip()) if pair):
                raise invalid(f"{text!r} is not NODE:DOMAIN;…",
                              "write it as pcs takes it, e.g. \"server1:Node1;server4:Node4\"",
                              at=("stonith", role, "params", "pcmk_host_map"))
        return self


def _cyclic(pairs: list[tuple[str, str]]) -> bool:
    after = {}
    for first, then in pairs:
        after.setdefault(first, set()).add(then)

    def reaches(start, goal, seen=()):
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, (*seen, nxt))) for nxt in after.get(start, ()))
    return any(reaches(first, first) for first in after)


class FencingModel(DataModel):
    key_file: Scalar | None = None
    key_bytes: int = key_field(128, fix="write the key's size in bytes, e.g. `key_bytes: 128`")
    fence_virtd_conf: Scalar = "fence_virt.conf"


class ServiceRuleModel(DataModel):
    name: ServiceName = key_field(kind="the init script's name")
    on_change: OnChange = "none"
    watches: list[Text] | None = key_field(None, fix="write e.g. `watches: [/etc/haproxy/haproxy.cfg]`")


class ModeModel(DataModel):
    selector: Selector | None = None
    owner: AccountName | None = None
    group: AccountName | None = None
    mode: Mode | None = None
    directory: bool = False


class StageModel(DataModel):
    stage: Scalar | None = None
    title: Scalar = ""
    runbook_sections: list[Scalar] | None = None
    base: Scalar | None = None
    validate_: dict[Text, Scalar] | None = Field(None, alias="validate")
    modes: dict[Text, ModeModel] | None = key_field(
        None, fix=f"write `PATH: {{selector, owner, group, mode}}` (see {LAYOUT})")
    services: dict[Selector, list[ServiceRuleModel] | None] | None = key_field(
        None, fix="write `services: {role-director: [{name: haproxy, on_change: reload, watches: [...]}]}`")
    notes: list[Scalar] | None = None
    provides: list[Scalar] = key_field([], fix="write e.g. `provides: [stats, logging, limits]` (setting names)")
    cluster: dict[Text, Any] | None = key_field(None, fix=f"see {LAYOUT}")    # validated once merged with the base's
    fencing: FencingModel | None = None
    expectation: Any = None


# ----- what needs the topology, the base stage or the disk -----------------------------------

def _resource(path: Path, key: str, role: str, model: ResourceModel, topology: Topology | None) -> ResourceSpec:
    params = dict(model.params or {})
    if topology is not None:
        values = {"vip": topology.vip, "prefixlen": str(topology.prefixlen)}
        try:
            params = {name: value.format(**values) for name, value in params.items()}
        except (KeyError, ValueError, IndexError) as exc:
            fail(path, f"{key}.params", f"unknown placeholder {exc}",
                 "use {vip} or {prefixlen} (from the topology)")
    return ResourceSpec(role=role, id=model.id, agent=model.agent, agent_without_systemd=model.agent_without_systemd,
                        params=params,
                        operations=tuple(Operation(op.name, op.interval) for op in model.operations or ()))


def _resources(path, key, models, topology) -> dict[str, ResourceSpec]:
    return {role: _resource(path, f"{key}.{role}", role, model, topology) for role, model in (models or {}).items()}


def _merged(base: dict, own: dict) -> dict:
    """own over base, mappings merged key by key (a later stage changes what it names, keeps the rest)."""
    out = dict(base)
    for key, value in own.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_fence_virt_conf(text: str) -> dict[str, dict[str, str]]:
    """fence_virt.conf(5): `block { key = "value"; sub { ... } }` as {"listeners.multicast": {...}}."""
    found: dict[str, dict[str, str]] = {}
    path: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.endswith("{"):
            path.append(line[:-1].strip())
        elif line == "}":
            if path:
                path.pop()
        elif "=" in line:
            key, _, value = line.rstrip(";").partition("=")
            found.setdefault(".".join(path), {})[key.strip()] = value.strip().strip('"')
    return found


def _fencing(path: Path, directory: Path, model: FencingModel | None) -> FencingSpec:
    model = model or FencingModel()
    conf_path = directory / model.fence_virtd_conf
    if not conf_path.is_file():
        fail(path, "fencing.fence_virtd_conf", f"{conf_path} not found",
             "put the fence host's fence_virt.conf (as `fence_virtd -c` writes it) next to stage.yaml")
    conf = parse_fence_virt_conf(conf_path.read_text())
    listener = conf.get("fence_virtd", {}).get("listener", "multicast")
    settings = conf.get(f"listeners.{listener}", {})
    if not settings.get("address") or not settings.get("port"):
        fail(conf_path, f"listeners.{listener}", "no address or port",
             "write the multicast listener's address and port")
    key_file = model.key_file or settings.get("key_file") or "/etc/cluster/fence_xvm.key"
    if settings.get("key_file") and settings["key_file"] != key_file:
        fail(path, "fencing.key_file", f"{key_file} but {conf_path.name} says {settings['key_file']}",
             "make the directors' key path and fence_virtd's key_file the same file")
    try:
        port = int(settings["port"])
    except ValueError as exc:
        fail(conf_path, f"listeners.{listener}.port", str(exc), "write the listener's port as a number")
    return FencingSpec(key_file=key_file, key_bytes=model.key_bytes, multicast_address=settings["address"],
                       port=port, interface=settings.get("interface", ""), fence_virtd_conf=conf_path)


def _cluster(path: Path, raw: dict, topology: Topology | None, directory: Path, fencing: FencingModel | None,
             inherited: FencingSpec | None) -> ClusterSpec:
    model = load_model(ClusterModel, raw, path=path, layout=LAYOUT, at=("cluster",))
    stonith = _resources(path, "cluster.stonith", model.stonith, topology)
    spec = ClusterSpec(name=model.name, nodes=tuple(topology.cluster_nodes) if topology is not None else (),
                       properties=dict(model.properties or {}),
                       resources=_resources(path, "cluster.resources", model.resources, topology),
                       group_id=model.group.id if model.group else None,
                       group_members=tuple(model.group.members or ()) if model.group else (), stonith=stonith,
                       fencing=None, constraints=tuple(c.spec() for c in model.constraints or ()))
    if stonith:
        spec = replace(spec, fencing=_fencing(path, directory, fencing)
                       if fencing is not None or inherited is None else inherited)
    for role in spec.stonith:
        if topology is None:
            continue
        for node, domain in spec.host_map(role).items():
            if node not in topology.cluster_nodes:
                fail(path, f"cluster.stonith.{role}.params.pcmk_host_map", f"{node!r} is not a cluster node",
                     f"map the nodes {topology.cluster_nodes} of {topology.path}")
            if topology.host(node).fence_name not in (None, domain):
                fail(path, f"cluster.stonith.{role}.params.pcmk_host_map",
                     f"{node}:{domain}, but the topology names {node}'s fence domain "
                     f"{topology.host(node).fence_name!r}", f"make them agree (fence_name in {topology.path})")
    return spec


def read_manifest(directory: Path) -> tuple[Path, StageModel]:
    """A stage directory's stage.yaml, validated on its own (its `base:` not resolved)."""
    path = directory / "stage.yaml"
    if not path.exists():
        raise HaconformError("no stage.yaml", where=str(directory),
                             fix="point --config at a directory laid out like fixtures/documented/")
    return path, load_model(StageModel, read_yaml_mapping(path, missing_fix="add stage.yaml", layout=LAYOUT),
                            path=path, layout=LAYOUT)


def _own_files(directory: Path) -> list[StageFile]:
    files = []
    for selector_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        if not SELECTOR.match(selector_dir.name):
            raise HaconformError(f"unknown selector directory {selector_dir.name!r}", where=str(selector_dir),
                                 fix="name it role-<role> or host-<hostname>")
        for path in sorted(selector_dir.rglob("*")):
            if path.is_file():
                files.append(StageFile(selector_dir.name, "/" + str(path.relative_to(selector_dir)), path))
    return files


def _selects_a_host(selector: str, topology: Topology) -> bool:
    kind, value = SELECTOR.match(selector).groups()
    return value in topology.hosts if kind == "host" else bool(topology.by_role(value))


def _selector_fix(topology: Topology) -> str:
    roles = sorted({h.role for h in topology.hosts.values()})
    return f"use role-<role> (roles there: {', '.join(roles)}) or host-<host> (hosts: {', '.join(topology.hosts)})"


def _check_selectors(path: Path, directory: Path, manifest: StageModel, topology: Topology | None) -> None:
    """Every selector of the stage's own names a host: one that names none would apply nothing, silently."""
    if topology is None:
        return
    for selector_dir in sorted(p for p in directory.iterdir() if p.is_dir() and SELECTOR.match(p.name)):
        if not _selects_a_host(selector_dir.name, topology):
            raise HaconformError(f"selector {selector_dir.name!r} matches no host of {topology.path}",
                                 where=str(selector_dir), fix=_selector_fix(topology))
    for selector in manifest.services or {}:
        if not _selects_a_host(selector, topology):
            fail(path, f"services.{selector}", f"selector {selector!r} matches no host of {topology.path}",
                 _selector_fix(topology))
    for target, mode in (manifest.modes or {}).items():
        if mode.selector and not _selects_a_host(mode.selector, topology):
            fail(path, f"modes.{target}.selector", f"selector {mode.selector!r} matches no host of {topology.path}",
                 _selector_fix(topology))


def load_stage(directory: str | Path, topology: Topology | None = None, *,
               search: tuple[Path, ...] = ()) -> Stage:
    """The stage in `directory`, its `base:` chain resolved in the same parent directory (then `search`)."""
    return _load(Path(directory), topology, tuple(search), seen=())


def _find_base(name: str, directory: Path, search: tuple[Path, ...], path: Path) -> Path:
    for root in (directory.parent, *search):
        if (root / name / "stage.yaml").is_file():
            return root / name
    fail(path, "base", f"no stage {name!r} next to {directory}", f"add {directory.parent / name}/stage.yaml")


def _load(directory: Path, topology, search, *, seen: tuple[str, ...]) -> Stage:
    path, manifest = read_manifest(directory)
    name = manifest.stage if manifest.stage is not None else directory.name
    if name in seen:
        fail(path, "base", f"cycle through {' -> '.join([*seen, name])}", "a stage's base must be an earlier stage")
    base = None
    if manifest.base:
        base = _load(_find_base(manifest.base, directory, search, path), topology, search, seen=(*seen, name))
    own = _own_files(directory)
    _check_selectors(path, directory, manifest, topology)
    for f in own:
        # A documented file may carry credentials (`stats auth`): registered before any of it is logged,
        # and one too short to redact is refused here, naming the file and the line.
        if f.source.stat().st_size < 1 << 20:
            discover_secrets(f.source.read_bytes(), source=str(f.source))
    overridden = {(f.selector, f.dest) for f in own}
    files = [f for f in (base.files if base else []) if (f.selector, f.dest) not in overridden] + own
    cluster_raw = manifest.cluster
    if base is not None and base.cluster_raw is not None:
        cluster_raw = _merged(base.cluster_raw, cluster_raw or {})
    cluster = None
    if cluster_raw is not None:
        cluster = _cluster(path, cluster_raw, topology, directory, manifest.fencing,
                           base.cluster.fencing if base and base.cluster else None)
    if "services" in manifest.model_fields_set:
        services = {selector: [ServiceRule(rule.name, rule.on_change, list(rule.watches or [])) for rule in rules or []]
                    for selector, rules in (manifest.services or {}).items()}
    else:
        services = base.services if base else {}
    return Stage(
        name=name, directory=directory, title=manifest.title, sections=list(manifest.runbook_sections or []),
        files=files, validate={**(base.validate if base else {}), **(manifest.validate_ or {})},
        modes={**(base.modes if base else {}),
               **{p: mode.model_dump(exclude_unset=True) for p, mode in (manifest.modes or {}).items()}},
        services=services, base=manifest.base or None, provides=tuple(manifest.provides),
        notes=list(manifest.notes or []), cluster=cluster, cluster_raw=cluster_raw)
