"""A runbook stage as data: its files, its services, and (stages 4-5) its cluster.

A stage directory holds plain files laid out by selector and target path,
and a `stage.yaml` (layout: fixtures/documented/README.md):

    stage2/role-director/etc/haproxy/haproxy.cfg
    stage2/host-server2/var/www/html/index.html
    stage4/stage.yaml          base: stage3, cluster: {name, properties, resources, group}
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
from typing import Mapping

from ..errors import HaconformError
from ..readers.cluster import pcmk_seconds
from ..topology import Topology, read_yaml_mapping

SELECTOR = re.compile(r"^(role|host)-([a-z][a-z0-9]*)$")
ON_CHANGE = ("none", "reload", "restart")
STAGE_KEYS = {"stage", "title", "runbook_sections", "base", "validate", "modes", "services", "notes",
              "provides", "cluster", "fencing", "expectation"}
CLUSTER_KEYS = {"name", "properties", "resources", "group", "stonith"}
RESOURCE_KEYS = {"id", "agent", "agent_without_systemd", "params", "operations"}
FENCING_KEYS = {"key_file", "key_bytes", "fence_virtd_conf"}
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


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    nodes: tuple[str, ...]
    properties: Mapping[str, str]
    resources: Mapping[str, ResourceSpec]          # role -> resource, in creation order
    group_id: str | None
    group_members: tuple[str, ...]                  # roles, in start order
    stonith: Mapping[str, ResourceSpec] = field(default_factory=dict)
    fencing: FencingSpec | None = None

    def resource(self, role: str) -> ResourceSpec:
        found = self.resources.get(role) or self.stonith.get(role)
        if found is None:
            raise KeyError(f"the stage declares no resource with role {role!r} "
                           f"(has {sorted([*self.resources, *self.stonith])})")
        return found

    def group_ids(self) -> list[str]:
        """CIB ids of the group's members, in order."""
        return [self.resources[role].id for role in self.group_members]

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
                       group_id=names.get(self.group_id, self.group_id) if self.group_id else None)


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


def _fail(path: Path, key: str, what: str, fix: str):
    raise HaconformError(f"{key}: {what}", where=str(path), fix=fix)


def _mapping(path, key, value, fix) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(path, key, f"must be a mapping, is {type(value).__name__}", fix)
    return value


def _strings(path, key, value) -> dict[str, str]:
    out = {}
    for name, item in _mapping(path, key, value, f"write `{key}: {{name: value}}`").items():
        if isinstance(item, (dict, list)) or item is None:
            _fail(path, f"{key}.{name}", "must be a single value", "quote it, e.g. \"30s\"")
        out[str(name)] = "true" if item is True else "false" if item is False else str(item)
    return out


def _resource(path: Path, key: str, role: str, raw, topology: Topology | None) -> ResourceSpec:
    raw = _mapping(path, key, raw, "give id, agent, params and operations")
    unknown = set(raw) - RESOURCE_KEYS
    if unknown:
        _fail(path, key, f"unknown field(s) {', '.join(sorted(unknown))}", f"allowed: {', '.join(sorted(RESOURCE_KEYS))}")
    for needed in ("id", "agent"):
        if not raw.get(needed):
            _fail(path, f"{key}.{needed}", "missing field", f"add `{needed}:` (see {LAYOUT})")
    params = _strings(path, f"{key}.params", raw.get("params"))
    if topology is not None:
        values = {"vip": topology.vip, "prefixlen": str(topology.prefixlen)}
        try:
            params = {name: value.format(**values) for name, value in params.items()}
        except (KeyError, ValueError, IndexError) as exc:
            _fail(path, f"{key}.params", f"unknown placeholder {exc}", "use {vip} or {prefixlen} (from the topology)")
    operations = []
    for index, op in enumerate(raw.get("operations") or []):
        op_key = f"{key}.operations[{index}]"
        if not isinstance(op, dict) or set(op) != {"name", "interval"}:
            _fail(path, op_key, f"{op!r} is not {{name, interval}}", "write e.g. `{name: monitor, interval: 30s}`")
        try:
            pcmk_seconds(op["interval"])
        except ValueError:
            _fail(path, f"{op_key}.interval", f"{op['interval']!r} is not an interval", "write e.g. 30s, 1min, 60")
        operations.append(Operation(str(op["name"]), str(op["interval"])))
    return ResourceSpec(role=role, id=str(raw["id"]), agent=str(raw["agent"]),
                        agent_without_systemd=raw.get("agent_without_systemd"),
                        params=params, operations=tuple(operations))


def _resources(path, key, raw, topology) -> dict[str, ResourceSpec]:
    return {str(role): _resource(path, f"{key}.{role}", str(role), spec, topology)
            for role, spec in _mapping(path, key, raw, "write `ROLE: {id, agent, ...}` per resource").items()}


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


def _fencing(path: Path, directory: Path, raw) -> FencingSpec:
    raw = _mapping(path, "fencing", raw, "give key_file, key_bytes and fence_virtd_conf")
    unknown = set(raw) - FENCING_KEYS
    if unknown:
        _fail(path, "fencing", f"unknown field(s) {', '.join(sorted(unknown))}", f"allowed: {', '.join(sorted(FENCING_KEYS))}")
    conf_path = directory / str(raw.get("fence_virtd_conf", "fence_virt.conf"))
    if not conf_path.is_file():
        _fail(path, "fencing.fence_virtd_conf", f"{conf_path} not found",
              "put the fence host's fence_virt.conf (as `fence_virtd -c` writes it) next to stage.yaml")
    conf = parse_fence_virt_conf(conf_path.read_text())
    listener = conf.get("fence_virtd", {}).get("listener", "multicast")
    settings = conf.get(f"listeners.{listener}", {})
    if not settings.get("address") or not settings.get("port"):
        _fail(conf_path, f"listeners.{listener}", "no address or port", "write the multicast listener's address and port")
    key_file = str(raw.get("key_file") or settings.get("key_file") or "/etc/cluster/fence_xvm.key")
    if settings.get("key_file") and settings["key_file"] != key_file:
        _fail(path, "fencing.key_file", f"{key_file} but {conf_path.name} says {settings['key_file']}",
              "make the directors' key path and fence_virtd's key_file the same file")
    try:
        key_bytes, port = int(raw.get("key_bytes", 128)), int(settings["port"])
    except ValueError as exc:
        _fail(path, "fencing", str(exc), "key_bytes and the listener's port are numbers")
    return FencingSpec(key_file=key_file, key_bytes=key_bytes, multicast_address=settings["address"],
                       port=port, interface=settings.get("interface", ""), fence_virtd_conf=conf_path)


def _cluster(path: Path, raw: dict, topology: Topology | None, directory: Path, fencing_raw,
             inherited: FencingSpec | None) -> ClusterSpec:
    unknown = set(raw) - CLUSTER_KEYS
    if unknown:
        _fail(path, "cluster", f"unknown field(s) {', '.join(sorted(unknown))}", f"allowed: {', '.join(sorted(CLUSTER_KEYS))}")
    if not raw.get("name"):
        _fail(path, "cluster.name", "missing field", "add the cluster's name (pcs cluster setup NAME)")
    resources = _resources(path, "cluster.resources", raw.get("resources"), topology)
    stonith = _resources(path, "cluster.stonith", raw.get("stonith"), topology)
    group = _mapping(path, "cluster.group", raw.get("group"), "write `group: {id: hagroup, members: [vip, haproxy]}`")
    members = tuple(str(m) for m in group.get("members") or ())
    for role in members:
        if role not in resources:
            _fail(path, "cluster.group.members", f"{role!r} is not a resource role of cluster.resources",
                  f"name roles from {sorted(resources)}")
    if group and not group.get("id"):
        _fail(path, "cluster.group.id", "missing field", "add the group's id (pcs resource group add ID ...)")
    nodes = tuple(topology.cluster_nodes) if topology is not None else ()
    spec = ClusterSpec(name=str(raw["name"]), nodes=nodes, properties=_strings(path, "cluster.properties",
                       raw.get("properties")), resources=resources, group_id=group.get("id"),
                       group_members=members, stonith=stonith,
                       fencing=None)
    if stonith:
        fencing = _fencing(path, directory, fencing_raw) if fencing_raw is not None or inherited is None else inherited
        spec = replace(spec, fencing=fencing)
    ids = [r.id for r in [*resources.values(), *stonith.values()]] + ([spec.group_id] if spec.group_id else [])
    if len(set(ids)) != len(ids):
        _fail(path, "cluster", f"ids {ids} are not unique", "give each resource, device and group its own id")
    for role in spec.stonith:
        text = spec.stonith[role].params.get("pcmk_host_map", "")
        if any(":" not in pair for pair in re.split(r"[;\s,]+", text.strip()) if pair):
            _fail(path, f"cluster.stonith.{role}.params.pcmk_host_map", f"{text!r} is not NODE:DOMAIN;…",
                  "write it as pcs takes it, e.g. \"server1:Node1;server4:Node4\"")
        host_map = spec.host_map(role)
        if topology is None:
            continue
        for node, domain in host_map.items():
            if node not in topology.cluster_nodes:
                _fail(path, f"cluster.stonith.{role}.params.pcmk_host_map", f"{node!r} is not a cluster node",
                      f"map the nodes {topology.cluster_nodes} of {topology.path}")
            if topology.host(node).fence_name not in (None, domain):
                _fail(path, f"cluster.stonith.{role}.params.pcmk_host_map",
                      f"{node}:{domain}, but the topology names {node}'s fence domain "
                      f"{topology.host(node).fence_name!r}", f"make them agree (fence_name in {topology.path})")
    return spec


def _raw_manifest(directory: Path) -> dict:
    path = directory / "stage.yaml"
    if not path.is_file():
        raise HaconformError("no stage.yaml", where=str(directory),
                             fix="point --config at a directory laid out like fixtures/documented/")
    manifest = read_yaml_mapping(path, missing_fix="add stage.yaml", layout=LAYOUT)
    unknown = set(manifest) - STAGE_KEYS
    if unknown:
        _fail(path, "(top level)", f"unknown field(s) {', '.join(sorted(unknown))}",
              f"allowed: {', '.join(sorted(STAGE_KEYS))}")
    return manifest


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


def _services(path: Path, raw) -> dict[str, list[ServiceRule]]:
    services = {}
    for selector, rules in _mapping(path, "services", raw, "write `services: {role-director: [...]}`").items():
        if not SELECTOR.match(selector):
            _fail(path, f"services.{selector}", "unknown selector", "use role-<role> or host-<hostname>")
        parsed = []
        for rule in rules or []:
            on_change = rule.get("on_change", "none") if isinstance(rule, dict) else None
            if on_change not in ON_CHANGE or "name" not in rule:
                _fail(path, f"services.{selector}", f"{rule!r} needs a name and on_change in {ON_CHANGE}",
                      f"see {LAYOUT}")
            parsed.append(ServiceRule(rule["name"], on_change, list(rule.get("watches") or [])))
        services[selector] = parsed
    return services


def load_stage(directory: str | Path, topology: Topology | None = None, *,
               search: tuple[Path, ...] = ()) -> Stage:
    """The stage in `directory`, its `base:` chain resolved in the same parent directory (then `search`)."""
    return _load(Path(directory), topology, tuple(search), seen=())


def _find_base(name: str, directory: Path, search: tuple[Path, ...], path: Path) -> Path:
    for root in (directory.parent, *search):
        if (root / name / "stage.yaml").is_file():
            return root / name
    _fail(path, "base", f"no stage {name!r} next to {directory}", f"add {directory.parent / name}/stage.yaml")


def _load(directory: Path, topology, search, *, seen: tuple[str, ...]) -> Stage:
    manifest = _raw_manifest(directory)
    path = directory / "stage.yaml"
    name = str(manifest.get("stage", directory.name))
    if name in seen:
        _fail(path, "base", f"cycle through {' -> '.join([*seen, name])}", "a stage's base must be an earlier stage")
    base = None
    base_name = manifest.get("base")
    if base_name:
        base = _load(_find_base(str(base_name), directory, search, path), topology, search, seen=(*seen, name))
    own = _own_files(directory)
    overridden = {(f.selector, f.dest) for f in own}
    files = [f for f in (base.files if base else []) if (f.selector, f.dest) not in overridden] + own
    cluster_raw = manifest.get("cluster")
    if base is not None and base.cluster_raw is not None:
        cluster_raw = _merged(base.cluster_raw, _mapping(path, "cluster", cluster_raw, f"see {LAYOUT}"))
    cluster = None
    if cluster_raw is not None:
        cluster = _cluster(path, _mapping(path, "cluster", cluster_raw, f"see {LAYOUT}"), topology, directory,
                           manifest.get("fencing"), base.cluster.fencing if base and base.cluster else None)
    provides = manifest.get("provides", [])
    if not isinstance(provides, list):
        _fail(path, "provides", "must be a list of setting names", "write e.g. `provides: [stats, logging, limits]`")
    stage = Stage(
        name=name, directory=directory, title=str(manifest.get("title", "")),
        sections=list(manifest.get("runbook_sections") or []), files=files,
        validate={**(base.validate if base else {}), **_strings(path, "validate", manifest.get("validate"))},
        modes={**(base.modes if base else {}), **_mapping(path, "modes", manifest.get("modes"), f"see {LAYOUT}")},
        services=_services(path, manifest["services"]) if "services" in manifest else (base.services if base else {}),
        base=str(base_name) if base_name else None, provides=tuple(str(p) for p in provides),
        notes=list(manifest.get("notes") or []), cluster=cluster, cluster_raw=cluster_raw)
    return stage
