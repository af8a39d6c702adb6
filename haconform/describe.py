"""`haconform describe`: a live deployment written down as stage data, read-only.

    haconform describe --out DIR [--lab-name NAME | --target ssh --inventory FILE] [--stage stageN]
    haconform describe --diff ...      the differences from the documented stage, by meaning

Every command goes through the target's HostGuard in read-only mode (a write
is refused before it reaches a host).  What comes out is a configuration
directory laid out like fixtures/documented/ (`--config` takes it):

    DIR/stageN/           the stage the deployment is at, as it runs there: the files the runbook's
                          stages manage (read from each host; one `role-` file where every host of the
                          role has the same bytes, else `host-` files), a stage.yaml with the cluster
                          block read from the CIB, the directories' owners and modes, the services
                          that run; self-contained (no `base:`)
    DIR/stage*/           the runbook's other stages, copied from the documented configuration: --config
                          needs all five; only stageN describes the deployment
    DIR/names.yaml        the runbook's ids -> the deployment's, where they differ (stage.yaml keeps the
                          runbook's ids, so it compares with the runbook by meaning)
    DIR/README.md         where, when and how it was described; what stage data cannot say

Which stage: the cluster's presence (crm_mon) and a stonith device decide
between the files stages and stages 4 and 5; among those, the documented
stage the deployment differs least from (the drift rows HAC-CFG-001 shows).
Which resource is the VIP, HAProxy or the fence device: the documented id
when it is there with a documented agent, else the one primitive with such an
agent (the VIP: the IPaddr2 holding the topology's VIP).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import yaml

from .cluster import Cluster, NoClusterAnswer
from .deployment import Deployment
from .errors import HaconformError
from .guard import READ_ONLY, HostGuard
from .readers.cluster import PCMK_INFINITY, CibColocation, CibConfiguration, CibPrimitive, score_value
from .redaction import discover as discover_secrets
from .stages.catalogue import documented as documented_stages
from .stages.manager import StageManager, load_all_stages
from .stages.model import ClusterSpec, Stage, parse_fence_virt_conf
from .stages.drift import LIMITS_FILES, RSYSLOG_FILES
from .topology import Topology

STAGE_YAML_HEAD = "# Described from a live deployment by `haconform describe` (read-only); see ../README.md.\n"


# ----- the target, read-only -------------------------------------------------------------------

def read_only_target(kind: str, topology: Topology, *, lab_name: str, inventory: str | None):
    """The target of `kind`, its guard read-only whatever the target's default: describe writes nothing."""
    guard = HostGuard(READ_ONLY)
    if kind == "lab":
        from .lab.lab import NamespaceLab
        from .targets.lab import LabTarget
        lab = NamespaceLab(lab_name, topology)
        if not lab.status().get("exists"):
            raise HaconformError(f"no lab {lab_name!r} on this machine", where="--lab-name",
                                 fix="name a running lab (`haconform lab list`), or bring one to a stage with "
                                     "`pytest suites -n 0 -k ... --keep-lab --lab-name NAME`")
        return LabTarget(topology, lab_name, lab=lab, guard=guard)
    if kind == "ssh":
        from .inventory import load_inventory
        from .targets.inventory_target import InventoryTarget
        if not inventory:
            raise HaconformError("--target ssh needs --inventory", where="haconform describe",
                                 fix="pass --inventory FILE (see fixtures/inventory.example.yaml)")
        target = InventoryTarget(topology, load_inventory(inventory, topology), guard=guard)
        target.up()   # every host answers, else one error naming those that do not
        return target
    if kind == "vagrant":
        import os

        from .targets.vagrant import VagrantTarget
        return VagrantTarget(topology, os.environ.get("HACONFORM_VM_NAME", "hacvm"), guard=guard)
    raise HaconformError(f"unknown target {kind!r}", where="--target", fix="use lab, ssh or vagrant")


# ----- which stage, which names --------------------------------------------------------------------

def cluster_configuration(deployment) -> CibConfiguration | None:
    """The CIB's configuration section from the first director that answers; None: no cluster runs."""
    try:
        _, director = Cluster(deployment).state_and_source()
    except NoClusterAnswer:
        return None
    return Cluster(deployment).configuration(director)


def _accepts(primitive: CibPrimitive, agents, *, stonith: bool) -> bool:
    wanted = {f"stonith:{a}" if stonith and not a.startswith("stonith:") else a for a in agents}
    return primitive.agent in wanted


def match_names(spec: ClusterSpec, cib: CibConfiguration, vip: str) -> dict[str, str]:
    """The runbook's resource, device and group ids -> the deployment's, matched by meaning (agent, the
    VIP's address); only the ids that differ."""
    names: dict[str, str] = {}
    for resource, stonith in [*((r, False) for r in spec.resources.values()),
                              *((r, True) for r in spec.stonith.values())]:
        own = cib.primitives.get(resource.id)
        if own is not None and _accepts(own, resource.agents(), stonith=stonith):
            continue
        candidates = [p for p in cib.primitives.values() if _accepts(p, resource.agents(), stonith=stonith)]
        if len(candidates) > 1 and "ip" in resource.params:
            candidates = [p for p in candidates if p.params.get("ip") == vip]
        if len(candidates) == 1:
            names[resource.id] = candidates[0].id
    if spec.group_id:
        members = {names.get(i, i) for i in spec.together_ids()}
        holding = [g for g, grouped in cib.groups.items() if members & set(grouped)]
        if spec.group_id not in cib.groups and len(holding) == 1:
            names[spec.group_id] = holding[0]
    return names


def detect_stage(manager: StageManager, stages: Mapping[str, Stage], cib: CibConfiguration | None) -> tuple[str, dict]:
    """The documented stage the deployment is at, and the drift counts that decided it."""
    stonith = cib is not None and any(p.agent.startswith("stonith:") for p in cib.primitives.values())
    candidates = [name for name in documented_stages().names if name in stages
                  and stages[name].is_cluster_stage == (cib is not None)
                  and (cib is None or bool(stages[name].cluster.stonith) == stonith)]
    if not candidates:
        raise HaconformError(f"no documented stage fits a deployment {'with' if cib else 'without'} a cluster"
                             f"{' and a stonith device' if stonith else ''}", where=str(manager.config_dir),
                             fix="pass --stage stageN")
    counts = {name: len(manager.drift(name)) for name in candidates}
    # Fewest differences; between equals the later stage, which says more of what runs.
    best = min(reversed(candidates), key=lambda name: counts[name])
    return best, counts


# ----- reading what the stage manages ------------------------------------------------------------

def read_bytes(machine, path: str) -> bytes | None:
    """A file's bytes (None: no such file), as base64 so that any content survives the transport."""
    result = machine.execute(f"test -f {shlex.quote(path)} && base64 -w0 -- {shlex.quote(path)}")
    if result.rc != 0:
        return None
    data = base64.b64decode(result.stdout.strip() or b"")
    discover_secrets(data, source=f"{machine.name}:{path}")
    return data


def family_files(machine, family: tuple[str, str]) -> list[str]:
    """The files of a configuration family on a host (rsyslog.conf + rsyslog.d/*.conf), as file_drift reads them."""
    listed = machine.execute(f"find {shlex.quote(family[1])} -maxdepth 1 -type f -name '*.conf' 2>/dev/null")
    return [family[0], *sorted(line for line in listed.stdout.split() if line)]


def _in_family(dest: str, family) -> bool:
    return dest == family[0] or (dest.startswith(family[1]) and dest.endswith(".conf"))


@dataclass
class Description:
    stage: str
    directory: Path
    names: dict[str, str]
    form: dict | None
    unsaid: list[str] = field(default_factory=list)      # what stage data cannot say about the deployment
    counts: dict = field(default_factory=dict)
    files: int = 0


def host_files(stage: Stage, deployment, unsaid: list[str]) -> dict[str, dict[str, bytes]]:
    """host -> path -> bytes of every file the stage manages there, as the host has it."""
    found: dict[str, dict[str, bytes]] = {}
    for host, files in sorted(stage.plan(deployment.topology).items()):
        machine = deployment.machine(host)
        paths = [f.dest for f in files]
        for family in (RSYSLOG_FILES, LIMITS_FILES):
            if any(_in_family(p, family) for p in paths):
                paths = [p for p in paths if not _in_family(p, family)] + family_files(machine, family)
        for path in paths:
            data = read_bytes(machine, path)
            if data is None:
                unsaid.append(f"{host}:{path} is missing (the runbook's stage has it)")
                continue
            found.setdefault(host, {})[path] = data
    return found


def selectors(found: dict[str, dict[str, bytes]], topology: Topology) -> dict[tuple[str, str], bytes]:
    """(selector, path) -> bytes: a role- file where every host of the role has the same bytes."""
    out: dict[tuple[str, str], bytes] = {}
    paths = sorted({p for files in found.values() for p in files})
    for path in paths:
        for role in sorted({topology.host(h).role for h in found}):
            hosts = [h.name for h in topology.by_role(role)]
            contents = [found.get(h, {}).get(path) for h in hosts]
            if all(c is not None for c in contents) and len(set(contents)) == 1:
                out[(f"role-{role}", path)] = contents[0]
                continue
            for host, content in zip(hosts, contents):
                if content is not None:
                    out[(f"host-{host}", path)] = content
    return out


def _params(values: Mapping[str, str]) -> dict[str, str]:
    # Stage data formats parameters with the topology ({vip}); a literal brace stays literal.
    return {name: value.replace("{", "{{").replace("}", "}}") for name, value in values.items()}


def _resource_block(primitive: CibPrimitive, runbook_id: str, *, stonith: bool) -> dict:
    block = {"id": runbook_id, "agent": primitive.agent.removeprefix("stonith:") if stonith else primitive.agent}
    if primitive.params:
        block["params"] = _params(primitive.params)
    operations = [{"name": op.name, "interval": op.interval} for op in primitive.operations if op.interval_ms]
    if operations:
        block["operations"] = operations
    return block


def cluster_block(spec: ClusterSpec, cib: CibConfiguration, names: Mapping[str, str], cluster_name: str,
                  unsaid: list[str]) -> dict:
    """The `cluster:` block of what runs, in the runbook's ids (names maps them to the deployment's)."""
    block: dict = {"name": cluster_name}
    properties = {k: cib.properties[k] for k in spec.properties if k in cib.properties}
    if properties:
        block["properties"] = properties
    for key, resources, stonith in (("resources", spec.resources, False), ("stonith", spec.stonith, True)):
        described = {}
        for role, resource in resources.items():
            primitive = cib.primitives.get(names.get(resource.id, resource.id))
            if primitive is None:
                unsaid.append(f"no {'stonith device' if stonith else 'resource'} for {role} "
                              f"({resource.id}, {' or '.join(resource.agents())})")
                continue
            described[role] = _resource_block(primitive, resource.id, stonith=stonith)
        if described:
            block[key] = described
    role_of = {names.get(r.id, r.id): role for role, r in spec.resources.items() if role in block.get("resources", {})}
    members = set(role_of)
    groups = [(g, grouped) for g, grouped in cib.groups.items() if set(grouped) & members]
    if len(groups) == 1 and set(groups[0][1]) == members:
        group_id, grouped = groups[0]
        runbook_group = next((ours for ours, theirs in names.items() if theirs == group_id), group_id)
        block["group"] = {"id": runbook_group, "members": [role_of[m] for m in grouped]}
    else:
        for g, grouped in groups:
            unsaid.append(f"group {g} ({', '.join(grouped)}): not all of, or more than, the members "
                          f"{sorted(members)}; stage data ties them by one group or by constraints")
        constraints = _constraints(cib, role_of, unsaid)
        if constraints:
            block["constraints"] = constraints
    for location in cib.locations:
        unsaid.append(f"{location.describe()}: stage data has no location constraints (HAC-CFG-001 reports it)")
    return block


def _score_word(score: int) -> str:
    return {PCMK_INFINITY: "INFINITY", -PCMK_INFINITY: "-INFINITY"}.get(score, str(score))


def _constraints(cib: CibConfiguration, role_of: Mapping[str, str], unsaid: list[str]) -> list[dict]:
    """The colocations and orders between members, as stage data (a set constraint: one entry per pair,
    without its id, which ids must be unique)."""
    entries = []
    for constraint in (*cib.colocations, *cib.orders):
        pairs = [p for p in constraint.pairs() if set(p) <= set(role_of)]
        if not pairs:
            continue
        named = {"id": constraint.id} if len(constraint.pairs()) == 1 and not constraint.sets else {}
        for a, b in pairs:
            if isinstance(constraint, CibColocation):
                score = score_value(constraint.score)
                if score is None:
                    unsaid.append(f"{constraint.describe()}: no score stage data can say")
                    continue
                entries.append({"colocation": {**named, "resource": role_of[a], "with": role_of[b],
                                               "score": _score_word(score)}})
            else:
                order = {**named, "first": role_of[a], "then": role_of[b]}
                if constraint.kind != "Mandatory":
                    order["kind"] = constraint.kind
                if not constraint.symmetrical:
                    order["symmetrical"] = False
                entries.append({"order": order})
    return entries


def _modes(stage: Stage, deployment) -> dict:
    """The stage's directories (and files) with the owner, group and mode each has on its hosts, where they agree."""
    modes = {}
    for path, mode in stage.modes.items():
        hosts = stage.hosts_for(mode["selector"], deployment.topology) if mode.get("selector") \
            else list(stage.plan(deployment.topology))
        # The form file_drift reads and compares: `owner:group mode`.
        seen = {deployment.machine(h).execute(f"stat -c '%U:%G %a' {shlex.quote(path)} 2>/dev/null").stdout.strip()
                for h in hosts}
        if len(seen) == 1 and re.fullmatch(r"\S+:\S+ [0-7]+", next(iter(seen))):
            owners, octal = next(iter(seen)).split()
            owner, group = owners.split(":", 1)
            modes[path] = {k: v for k, v in (("selector", mode.get("selector")), ("owner", owner), ("group", group),
                                             ("mode", f"{int(octal, 8):04o}"),
                                             ("directory", mode.get("directory") or None)) if v is not None}
    return modes


def _services(stage: Stage, deployment, cluster_owns: tuple[str, ...], unsaid: list[str]) -> dict:
    """The stage's service rules, for the services that run on every host of their selector."""
    kept = {}
    for selector, rules in stage.services.items():
        hosts = stage.hosts_for(selector, deployment.topology)
        kept[selector] = []
        for rule in rules:
            stopped = [h for h in hosts if rule.name not in cluster_owns
                       and not deployment.machine(h).host.service(rule.name).is_running]
            if stopped:
                unsaid.append(f"service {rule.name} does not run on {', '.join(stopped)}: left out")
                continue
            kept[selector].append({"name": rule.name, "on_change": rule.on_change, "watches": list(rule.watches)})
    return kept


def _cluster_name(cib: CibConfiguration, deployment) -> str:
    if cib.properties.get("cluster-name"):
        return cib.properties["cluster-name"]
    for director in deployment.directors:
        for line in director.execute("cat /etc/corosync/corosync.conf 2>/dev/null").stdout.splitlines():
            if line.strip().startswith("cluster_name:"):
                return line.split(":", 1)[1].strip()
    return "unnamed"


def _fencing(stage: Stage, deployment, out: Path, unsaid: list[str]) -> dict:
    fencing = stage.cluster.fencing
    fence = deployment.fence_host
    conf = read_bytes(fence, "/etc/fence_virt.conf") if fence is not None and fence.transport_kind != "none" \
        else None
    if conf is not None:
        parsed = parse_fence_virt_conf(conf.decode("utf-8", "replace"))
        listener = parsed.get(f"listeners.{parsed.get('fence_virtd', {}).get('listener', 'multicast')}", {})
        if not (listener.get("address") and listener.get("port")):
            unsaid.append("fence_virt.conf on the fence host names no listener address and port")
            conf = None
    if conf is None:
        # The lab's fence device is the harness's own daemon, which reads no fence_virt.conf.
        unsaid.append(f"fence_virt.conf: not read from the fence host ({fence.name if fence else 'none'}); "
                      f"the runbook's {fencing.fence_virtd_conf.name} copied")
        conf = fencing.fence_virtd_conf.read_bytes()
    (out / "fence_virt.conf").write_bytes(conf)
    size = deployment.directors[0].execute(f"stat -c %s {shlex.quote(fencing.key_file)} 2>/dev/null").stdout.strip()
    return {"key_bytes": int(size) if size.isdigit() else fencing.key_bytes, "fence_virtd_conf": "fence_virt.conf"}


# ----- the whole description -----------------------------------------------------------------------

def describe(deployment: Deployment, runbook: Path, out: Path | None, *, stage: str | None = None,
             names: Mapping[str, str] | None = None) -> tuple[Description, StageManager]:
    """Describe the deployment (written under `out` unless None); also the StageManager that compares it
    with the runbook by meaning (drift()), with the names found."""
    topology = deployment.topology
    stages = load_all_stages(runbook, None, topology)
    if not stages:
        raise HaconformError("no stages", where=str(runbook), fix="pass --runbook a directory laid out like "
                                                                 "fixtures/documented/")
    cib = cluster_configuration(deployment)
    found_names: dict[str, str] = {}
    if cib is not None:
        for name in documented_stages().names:
            if name in stages and stages[name].is_cluster_stage:
                found_names.update(match_names(stages[name].cluster, cib, topology.vip))
    found_names.update(names or {})   # the operator's word wins over a match
    probe = StageManager(deployment, runbook, "", mode="verify",
                         deployment_stage=stage or documented_stages().names[0], names=found_names, preloaded=stages)
    counts = {}
    if stage is None:
        stage, counts = detect_stage(probe, stages, cib)
    elif stage not in stages:
        raise HaconformError(f"no stage {stage!r} in {runbook}", where="--stage", fix=f"use one of {', '.join(stages)}")
    manager = StageManager(deployment, runbook, "", mode="verify", deployment_stage=stage, names=found_names,
                           preloaded=stages)
    documented = stages[stage]
    form = manager.cluster_form(stage)
    description = Description(stage=stage, directory=out, names=dict(found_names), form=form, counts=counts)
    if out is None:
        return description, manager
    _write(description, deployment, runbook, stages, documented, cib)
    return description, manager


def _write(description: Description, deployment, runbook: Path, stages, documented: Stage, cib) -> None:
    out, stage, unsaid = description.directory, description.stage, description.unsaid
    out.mkdir(parents=True, exist_ok=True)
    for name in documented_stages().names:
        if name != stage and name in stages:
            shutil.copytree(stages[name].directory, out / name)
    here = out / stage
    here.mkdir()
    files = selectors(host_files(documented, deployment, unsaid), deployment.topology)
    for (selector, path), data in sorted(files.items()):
        target = here / selector / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    description.files = len(files)
    manifest: dict = {"stage": stage, "title": f"{documented.title} (as described from the deployment)",
                      "runbook_sections": documented.sections, "provides": list(documented.provides)}
    if documented.validate:
        manifest["validate"] = dict(documented.validate)
    modes = _modes(documented, deployment)
    manifest["modes"] = modes
    cluster_owns = ("haproxy",) if documented.is_cluster_stage else ()
    manifest["services"] = _services(documented, deployment, cluster_owns, unsaid)
    manifest["notes"] = [f"Described on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC from "
                         f"{deployment.target.describe().get('target')}; compare with the runbook by meaning: "
                         "haconform describe --diff"]
    if documented.is_cluster_stage and cib is None:
        unsaid.append(f"no cluster answers crm_mon: {stage}'s cluster block is left out")
    if documented.is_cluster_stage and cib is not None:
        manifest["cluster"] = cluster_block(documented.cluster, cib, description.names,
                                            _cluster_name(cib, deployment), unsaid)
        if documented.cluster.stonith:
            manifest["fencing"] = _fencing(documented, deployment, here, unsaid)
    (here / "stage.yaml").write_text(STAGE_YAML_HEAD + yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True,
                                                                      width=120))
    names_text = yaml.safe_dump(description.names, sort_keys=True) if description.names else "{}\n"
    (out / "names.yaml").write_text("# The runbook's ids -> this deployment's (pass with --names).\n" + names_text)
    (out / "README.md").write_text(_readme(description, deployment, runbook, stages))


def _readme(description: Description, deployment, runbook: Path, stages) -> str:
    stage = description.stage
    lines = [f"# {stage}, described from a live deployment", "",
             f"Written by `haconform describe` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, read-only, "
             f"from {deployment.target.describe()}; the runbook compared with: `{runbook}`.", "",
             f"- `{stage}/` is the deployment as it runs: {description.files} files the runbook's stages manage, "
             "its stage.yaml (the cluster block from the CIB, in the runbook's ids)."
             if description.files else f"- `{stage}/` is the deployment as it runs.",
             f"- `names.yaml`: the runbook's ids -> the deployment's ({description.names or 'none differ'}).",
             f"- {', '.join(n for n in documented_stages().names if n != stage and n in stages)}: the runbook's own stages, "
             "copied (`--config` needs all five); they do not describe the deployment.", "",
             "Verify the deployment against it (0 differences expected):", "",
             f"    pytest suites --stages verify --deployment-stage {stage} --config DIR --names DIR/names.yaml ...", ""]
    if description.counts:
        lines += [f"Stage chosen by the fewest differences from the runbook's: {description.counts}.", ""]
    if description.form:
        lines += [f"The members that must run together: {description.form['found']} "
                  f"(the runbook: {description.form['documented']}).", ""]
    if description.unsaid:
        lines += ["Not said by this stage data:", ""] + [f"- {item}" for item in description.unsaid] + [""]
    return "\n".join(lines)


def diff_rows(manager: StageManager, stage: str) -> list[dict]:
    """The deployment against the documented stage: the rows HAC-CFG-001 shows (StageManager.drift)."""
    return manager.drift(stage)

