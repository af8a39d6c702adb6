"""Stages 4 (实现高可用) and 5 (Fence机制): the `cluster:` block of stage.yaml, applied with pcs.

The runbook gives these stages as pcs commands, not files; their data is the
stage's ClusterSpec (cluster name, properties, resources with parameters and
operation intervals, the group, the stonith device and its host map, the
fence key and fence_virtd's settings).  Applying converges: every step first
reads what is there (pcsd's known hosts, corosync.conf, the CIB's
configuration section, crm_mon XML) and acts only where it differs from the
spec, so a changed interval or host map is put back and a second application
changes nothing.  The VIP and HAProxy are tied by a group or by colocation +
order constraints (the stage says which to create); a deployment is compared
by what its ties mean, in either form (`together_differences`).  `cluster_differences` is the same comparison, used by the
verifier and the suites without acting.  pcs's dialect (0.9 as in the
runbook, or 0.10+) is detected.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..redaction import register as register_secret
from ..errors import HaconformError
from ..cluster import Cluster
from ..readers.cluster import CONSTRAINTS_PATH, PCMK_INFINITY, CibConfiguration, read_pcs_dialect, score_value
from ..timeouts import BOUNDS
from ..wait import wait_until
from . import catalogue
from .model import COLOCATION, ORDER, ClusterSpec, ResourceSpec
from .settings import cluster_key, operation_key

# Debian's corosync package ships a sample corosync.conf for a node called
# "node1"; pcs then believes the host is in that cluster and refuses to set up
# another.  A file with this marker is the sample, not a deployment's.
DEBIAN_SAMPLE_MARK = "cluster_name: debian"


@dataclass
class StageRecord:
    stage: str
    steps: list[str] = field(default_factory=list)
    observations: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def changed_anything(self) -> bool:
        return bool(self.steps)

    @contextmanager
    def timed(self, what: str):
        """How long each part of applying the stage took: evidence of where a slow target spends its time."""
        began = time.monotonic()
        try:
            yield
        finally:
            self.observations.setdefault("timings_s", {})[what] = round(time.monotonic() - began, 2)


@dataclass(frozen=True)
class ClusterDifference:
    """One way the live cluster differs from the stage's spec; `repair` is the pcs argv that converges it."""
    what: str
    expected: str
    found: str
    where: str
    repair: tuple[tuple[str, ...], ...] = ()
    key: str = ""      # the key path of the `cluster:` setting (haconform/stages/settings.py)

    def row(self) -> dict:
        return {"what": self.what, "expected": self.expected, "found": self.found, "where": self.where,
                "key": self.key}


def _pairs(values) -> list[str]:
    return [f"{k}={v}" for k, v in values.items()]


def _ops_argv(resource: ResourceSpec) -> list[str]:
    argv = []
    for op in resource.operations:
        argv += ["op", op.name, f"interval={op.interval}"]
    return argv


def _create_argv(resource: ResourceSpec, agent: str, *, stonith: bool) -> tuple[str, ...]:
    kind = ["stonith", "create", resource.id, agent.removeprefix("stonith:")] if stonith \
        else ["resource", "create", resource.id, agent]
    return ("pcs", *kind, *_pairs(resource.params), *_ops_argv(resource))


def resource_differences(resource: ResourceSpec, cib: CibConfiguration, *, agent: str,
                         stonith: bool) -> list[ClusterDifference]:
    """A resource (or stonith device) against the CIB: presence, agent, parameters, operation intervals."""
    wanted_agent = f"stonith:{agent}" if stonith and not agent.startswith("stonith:") else agent
    accepted = {f"stonith:{a}" if stonith and not a.startswith("stonith:") else a for a in resource.agents()}
    found = cib.primitives.get(resource.id)
    label = f"{'stonith device' if stonith else 'resource'} {resource.id} ({resource.role})"
    block = "stonith" if stonith else "resources"
    if found is None:
        return [ClusterDifference(label, wanted_agent, "missing", "/cib/configuration/resources",
                                  (_create_argv(resource, agent, stonith=stonith),),
                                  cluster_key(block, resource.role))]
    if found.agent not in accepted:
        kind = "stonith" if stonith else "resource"
        return [ClusterDifference(f"{label}: agent", wanted_agent, found.agent, found.path,
                                  (("pcs", kind, "delete", resource.id),
                                   _create_argv(resource, agent, stonith=stonith)),
                                  cluster_key(block, resource.role, "agent"))]
    update = ("pcs", "stonith" if stonith else "resource", "update", resource.id)
    differences = []
    for name, value in resource.params.items():
        have = found.params.get(name)
        if have != value:
            differences.append(ClusterDifference(f"{label}: {name}", value, "unset" if have is None else have,
                                                 found.path, ((*update, f"{name}={value}"),),
                                                 cluster_key(block, resource.role, "params", name)))
    for op in resource.operations:
        have = next((o for o in found.operations if o.name == op.name), None)
        if have is None or have.interval_ms != round(op.seconds * 1000):
            differences.append(ClusterDifference(
                f"{label}: {op.name} interval", op.interval, "no such operation" if have is None else have.interval,
                found.path, ((*update, "op", op.name, f"interval={op.interval}"),),
                operation_key(block, resource.role, op.name)))
    return differences


def cluster_differences(spec: ClusterSpec, cib: CibConfiguration, *, haproxy_agent_for) -> list[ClusterDifference]:
    """Properties, resources, group and stonith devices of the spec against the CIB; [] when it conforms.

    haproxy_agent_for(resource) picks the agent to create (systemd: or the init script)."""
    differences = []
    for resource in spec.resources.values():
        differences += resource_differences(resource, cib, agent=haproxy_agent_for(resource), stonith=False)
    differences += together_differences(spec, cib)
    for device in spec.stonith.values():
        differences += resource_differences(device, cib, agent=device.agent, stonith=True)
    # Properties last: stonith-enabled=true must not come before the device exists
    # (pacemaker would then refuse to run anything); =false lets the new resources start.
    for name, value in spec.properties.items():
        have = cib.properties.get(name)
        if have != value:
            differences.append(ClusterDifference(f"property {name}", value, "unset" if have is None else have,
                                                 "/cib/configuration/crm_config",
                                                 (("pcs", "property", "set", f"{name}={value}"),),
                                                 cluster_key("properties", name)))
    return differences


# ----- the members that must run together: a group, or colocation + order constraints, by meaning --------

@dataclass(frozen=True)
class Tie:
    """One relation between two resources, from a group or a constraint, as pacemaker reads it.

    colocation: pair = (resource, the one it is placed with), score; order: pair = (first, then), kind,
    symmetrical, actions.  `constraint` is the constraint's id (None: implied by group `group`)."""
    type: str
    pair: tuple[str, str]
    source: str
    path: str
    score: int | None = None
    kind: str = "Mandatory"
    symmetrical: bool = True
    actions: tuple[str | None, str | None] = ("start", "start")
    roles: tuple[str | None, str | None] = (None, None)
    constraint: str | None = None
    group: str | None = None

    def means(self, wanted: "Tie") -> bool:
        """The same promise: colocation in either direction (both give one node), order as written."""
        if self.type != wanted.type:
            return False
        if self.type == COLOCATION:
            return (set(self.pair) == set(wanted.pair) and self.score == wanted.score
                    and all(role in (None, "Started") for role in self.roles))
        return (self.pair == wanted.pair and self.kind == wanted.kind and self.symmetrical == wanted.symmetrical
                and self.actions == ("start", "start"))

    def says(self) -> str:
        """What it promises, in a person's words."""
        a, b = self.pair
        if self.type == COLOCATION:
            return f"{a} with {b}, score {_score_text(self.score)}"
        return (f"start {a} then start {b}, {self.kind}"
                + (", symmetrical (stopped in reverse)" if self.symmetrical else ", not symmetrical"))


def _score_text(score: int | None) -> str:
    return {PCMK_INFINITY: "INFINITY", -PCMK_INFINITY: "-INFINITY", None: "none"}.get(score, str(score))


def wanted_ties(spec: ClusterSpec) -> list[Tie]:
    """What the stage's group or constraints promise, as ties between CIB ids."""
    ids = {role: r.id for role, r in spec.resources.items()}
    if spec.group_id:
        members = spec.together_ids()
        ties = []
        for first, then in zip(members, members[1:]):
            ties.append(Tie(COLOCATION, (then, first), f"group {spec.group_id}", "", score=PCMK_INFINITY))
            ties.append(Tie(ORDER, (first, then), f"group {spec.group_id}", ""))
        return ties
    return [Tie(c.type, (ids[c.roles[0]], ids[c.roles[1]]), c.id or c.type, "", score=score_value(c.score),
                kind=c.kind, symmetrical=c.symmetrical, constraint=c.id) for c in spec.constraints]


def found_ties(cib: CibConfiguration, members) -> list[Tie]:
    """Every relation in the CIB touching one of `members`: groups' implied ones, colocations, orders."""
    members = set(members)
    ties = []
    for group_id, grouped in cib.groups.items():
        path = f"/cib/configuration/resources/group[@id='{group_id}']"
        for first, then in zip(grouped, grouped[1:]):
            ties.append(Tie(COLOCATION, (then, first), f"group {group_id}", path, score=PCMK_INFINITY, group=group_id))
            ties.append(Tie(ORDER, (first, then), f"group {group_id}", path, group=group_id))
    for c in cib.colocations:
        for pair in c.pairs():
            ties.append(Tie(COLOCATION, pair, c.describe(), c.path, score=score_value(c.score),
                            roles=(c.rsc_role, c.with_rsc_role), constraint=c.id))
    for o in cib.orders:
        actions = (o.first_action, o.then_action)
        if o.sets:   # a set's action is its members'; the first set's come first, the last set's after
            actions = (o.sets[0].action or "start", o.sets[-1].action or "start")
        for pair in o.pairs():
            ties.append(Tie(ORDER, pair, o.describe(), o.path, kind=o.kind, symmetrical=o.symmetrical,
                            actions=actions, constraint=o.id))
    return [t for t in ties if set(t.pair) & members]


def _pinning(cib: CibConfiguration, members) -> list:
    """Location constraints on a member, or on a group holding one, or by a pattern matching one."""
    held = set(members) | {g for g, grouped in cib.groups.items() if set(grouped) & set(members)}

    def matches(pattern: str) -> bool:
        try:
            return any(re.search(pattern, m) for m in held)
        except re.error:
            return True    # a pattern Python cannot read may pin them: shown rather than passed over
    return [location for location in cib.locations
            if set(location.resources) & held or (location.rsc_pattern and matches(location.rsc_pattern))]


def together_form(spec: ClusterSpec, cib: CibConfiguration) -> dict:
    """How the documented members are tied on the deployment, in words: the form the stage documents, the
    form found (groups, constraints, locations), and whether they mean the same."""
    members = spec.together_ids()
    if spec.group_id:
        documented = f"group {spec.group_id} ({', '.join(members)})"
    else:
        documented = "constraints: " + "; ".join(t.says() for t in wanted_ties(spec))
    found = found_ties(cib, members)
    groups = sorted({t.group for t in found if t.group})
    constraints = list(dict.fromkeys(t.source for t in found if t.constraint))
    parts = [f"group {g} ({', '.join(cib.groups[g])})" for g in groups]
    if constraints:
        parts.append("constraints: " + "; ".join(constraints))
    parts += [location.describe() for location in _pinning(cib, members)]
    form = "group" if groups and not constraints else "constraints" if constraints and not groups \
        else "group and constraints" if groups else "none"
    return {"documented": documented, "found": "; ".join(parts) or "nothing ties them", "form found": form,
            "same meaning": not together_differences(spec, cib)}


def _create(tie: Tie) -> tuple[str, ...]:
    """The pcs command creating a constraint the stage declares, as the runbook's pcs would write it."""
    named = (f"id={tie.constraint}",) if tie.constraint else ()
    a, b = tie.pair
    if tie.type == COLOCATION:
        return ("pcs", "constraint", "colocation", "add", a, "with", b, _score_text(tie.score), *named)
    options = (f"kind={tie.kind}",) if tie.kind != "Mandatory" else ()
    options += ("symmetrical=false",) if not tie.symmetrical else ()
    return ("pcs", "constraint", "order", "start", a, "then", "start", b, *options, *named)


class _Removals:
    """The pcs commands taking away ties that say something else, each constraint and group once."""

    def __init__(self):
        self.done: set[str] = set()

    def of(self, ties) -> tuple[tuple[str, ...], ...]:
        argv = []
        for tie in ties:
            key = tie.constraint or f"group:{tie.group}"
            if key in self.done:
                continue
            self.done.add(key)
            argv.append(("pcs", "constraint", "delete", tie.constraint) if tie.constraint
                        else ("pcs", "resource", "ungroup", tie.group))
        return tuple(argv)


def together_differences(spec: ClusterSpec, cib: CibConfiguration) -> list[ClusterDifference]:
    """The documented members' ties against the CIB's, by meaning; [] when the deployment keeps the same
    promises (members on one node, started in order, stopped in reverse) in either form.

    Each unkept promise is a row; so is each tie that says something else (another score, an order the
    other way round or optional, a member tied to a resource outside them) and each location constraint
    on a member or its group (it pins them).  Every row carries the pcs commands that converge it to the
    stage's own form."""
    members = spec.together_ids()
    if len(members) < 2:
        return []
    group_path = f"/cib/configuration/resources/group[@id='{spec.group_id}']"
    have = cib.groups.get(spec.group_id) if spec.group_id else None
    found = found_ties(cib, members)
    removals = _Removals()
    rows: list[ClusterDifference] = []
    wanted = wanted_ties(spec)
    if spec.group_id and have is not None and have != members:
        # The documented group holding something else: the row an operator reads it by.
        removals.done.add(f"group:{spec.group_id}")
        rows.append(ClusterDifference(f"group {spec.group_id}", " ".join(members), " ".join(have) or "empty",
                                      group_path, (("pcs", "resource", "ungroup", spec.group_id),
                                                   ("pcs", "resource", "group", "add", spec.group_id, *members)),
                                      cluster_key("group", "members")))
        found, wanted = [t for t in found if t.group != spec.group_id], []
    elif spec.group_id and not found:
        return [ClusterDifference(f"group {spec.group_id}", " ".join(members), "missing", group_path,
                                  (("pcs", "resource", "group", "add", spec.group_id, *members),),
                                  cluster_key("group", "members"))] \
            + _pin_rows(cib, members)
    reported: set = set()
    among = [f for f in found if set(f.pair) <= set(members)]
    # A group goes whole (ungrouping takes every tie it made): then the stage's own form is made again from
    # nothing, once, in the first row; constraints alone are put right one by one.
    rebuild = bool(spec.group_id) or any(f.group for f in among)
    rebuilt = False
    for tie in wanted:
        if any(f.means(tie) for f in found):
            continue
        same_pair = [f for f in found if f.type == tie.type and set(f.pair) == set(tie.pair)]
        reported.add((tie.type, frozenset(tie.pair)))
        a, b = tie.pair
        what = f"{a} and {b} on one node" if tie.type == COLOCATION else \
            f"{a} started before {b}" + (", stopped after" if tie.symmetrical else "")
        expected = f"{tie.says()} (group {spec.group_id}, or a constraint meaning the same)" if spec.group_id \
            else tie.says()
        if not rebuild:
            repair = removals.of(same_pair) + (_create(tie),)
        elif rebuilt:
            repair = ()
        else:
            made = (("pcs", "resource", "group", "add", spec.group_id, *members),) if spec.group_id \
                else tuple(_create(w) for w in wanted)
            repair, rebuilt = removals.of(among) + made, True
        rows.append(ClusterDifference(what, expected, "; ".join(f.source for f in same_pair)
                                      or f"no {tie.type} constraint", same_pair[0].path if same_pair
                                      else CONSTRAINTS_PATH, repair, together_key(spec, tie.type)))
    for tie in found:
        if (tie.type, frozenset(tie.pair)) in reported or any(tie.means(w) for w in wanted_ties(spec)):
            continue
        reported.add((tie.type, frozenset(tie.pair)))
        a, b = tie.pair
        outside = [r for r in tie.pair if r not in members]
        rows.append(ClusterDifference(
            f"{tie.type} of {a} and {b}" + (f" (ties {', '.join(outside)} to the members)" if outside else ""),
            "not documented" if outside else "only what the stage documents for them",
            tie.source, tie.path, removals.of([tie]), cluster_key("together", "other ties")))
    return rows + _pin_rows(cib, members)


def _pin_rows(cib: CibConfiguration, members) -> list[ClusterDifference]:
    return [ClusterDifference(f"location constraint {location.id}", "none (the members may run on either node)",
                              location.describe(), location.path, (("pcs", "constraint", "delete", location.id),),
                              cluster_key("together", "location"))
            for location in _pinning(cib, members)]


def together_key(spec: ClusterSpec, tie_type: str) -> str:
    """The key path a waiver and the coverage name an unkept promise of the members by: the group's members,
    or the stage's colocation or order (settings.py lists the same keys as documented settings)."""
    return cluster_key("group", "members") if spec.group_id else cluster_key("constraints", tie_type)


def runs_systemd(machine) -> bool:
    return machine.execute("test -d /run/systemd/system").rc == 0


class ClusterStage:
    """A cluster stage's spec applied to the directors: corosync + pacemaker via pcs, then the CIB converged."""

    def __init__(self, deployment, spec: ClusterSpec, password: str | None = None, *, name: str | None = None):
        """password: hacluster's, needed to apply (not to compare); name: the stage's, by default the one
        that introduces the cluster."""
        self.deployment = deployment
        self.spec = spec
        self.name = name or catalogue.documented().introduced_at("cluster")
        self.nodes = [deployment.machine(n) for n in spec.nodes]
        self.password = password
        register_secret(password)
        self.cluster = Cluster(deployment, spec)
        self._dialect = None   # pcs's, read once per application (each `pcs` start is most of a CPU second)
        self._systemd: bool | None = None

    @property
    def first(self):
        return self.nodes[0]

    def state(self):
        return self.cluster.state(self.first)

    def agent_for(self, resource: ResourceSpec) -> str:
        """The agent to create: the documented one, or its no-systemd form where systemd does not run."""
        if resource.agent_without_systemd is None:
            return resource.agent
        if self._systemd is None:
            self._systemd = runs_systemd(self.first)
        return resource.agent if self._systemd else resource.agent_without_systemd

    def differences(self) -> list[ClusterDifference]:
        return cluster_differences(self.spec, self.cluster.configuration(self.first), haproxy_agent_for=self.agent_for)

    def together_form(self) -> dict:
        """How the members are tied on the deployment (group or constraints), beside the documented form."""
        return together_form(self.spec, self.cluster.configuration(self.first))

    def formed(self):
        try:
            state = self.state()
        except HaconformError:
            return None
        names = {n.name for n in self.nodes}
        return state if (state.quorum and state.dc and names <= set(state.online_nodes)) else None

    def apply(self) -> StageRecord:
        record = StageRecord(self.name)
        began = time.monotonic()
        self._form(record)
        with record.timed("resources and properties converged"):
            self._converge(record)
        if self.spec.together_ids():
            with record.timed(f"{self.spec.together_label} started"):
                wait_until(f"{self.spec.together_label} started on one director", self.group_node,
                           timeout=BOUNDS.cluster_settle, observe=self.describe)
        with record.timed("crm_verify"):
            verify = self.cluster.crm_verify(self.first)
        record.observations["crm_verify after"] = {"valid": verify.valid, "errors": list(verify.errors)}
        record.seconds = round(time.monotonic() - began, 2)
        return record

    def _form(self, record: StageRecord) -> None:
        if self._dialect is None:
            with record.timed("pcs version read"):
                self._dialect = read_pcs_dialect(self.first.host)
        dialect = self._dialect
        record.observations["pcs"] = {"version": ".".join(map(str, dialect.version)), "dialect": dialect.name}
        node_names = [n.name for n in self.nodes]
        # The nodes are prepared side by side: on slow guests each one's pcsd start-up takes tens of seconds.
        steps: dict[str, list[str]] = {node.name: [] for node in self.nodes}
        with record.timed("nodes prepared (hacluster login, pcsd started)"):
            with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
                futures = {node.name: pool.submit(self._prepare_node, node, steps[node.name])
                           for node in self.nodes}
            failed = {name: future.exception() for name, future in futures.items() if future.exception()}
        for node in self.nodes:   # what each node had done, also when another failed
            record.steps.extend(steps[node.name])
        if failed:
            if len(failed) == 1:
                raise next(iter(failed.values()))
            raise HaconformError("preparing the cluster's nodes failed on " + "; ".join(
                f"{name}: {error}" for name, error in failed.items()), where=f"{self.name} (cluster nodes)",
                fix="see each node's error")
        with record.timed("pcsd answers"):
            for node in self.nodes:
                wait_until(f"pcsd answers on {node.name}",
                           lambda n=node: n.execute("ss -Htln sport = :2224").stdout.strip(),
                           timeout=BOUNDS.pcsd_ready)
        if not self._known_hosts(self.first) >= set(node_names):
            # The password on stdin, not `-p` (an argv shows in ps): given `-u` only, pcs prompts,
            # and reads the answer from stdin when stdin is not a tty: 0.10+ `host auth` and 0.9
            # `cluster auth` alike (utils.get_terminal_password -> get_terminal_input -> input()).
            # The oldest 0.9 releases called getpass, which reads stdin as well when there is no
            # controlling terminal, as under nsenter in a session of its own or ssh -T.
            with record.timed("pcs host auth"):
                self.first.succeed(shlex.join(dialect.auth_argv(node_names)), input=f"{self.password}\n")
            record.steps.append(f"pcs {'cluster' if dialect.name == '0.9' else 'host'} auth {' '.join(node_names)}")
        name = self.spec.name
        if f"cluster_name: {name}" not in self.first.execute("cat /etc/corosync/corosync.conf 2>/dev/null").stdout:
            with record.timed("pcs cluster setup"):
                self.first.succeed(shlex.join(dialect.setup_argv(name, node_names)))
            record.steps.append(f"pcs cluster setup {name} {' '.join(node_names)}")
        if not all(n.host.service("corosync").is_running and n.host.service("pacemaker").is_running
                   for n in self.nodes):
            with record.timed("pcs cluster start --all"):
                self.first.succeed(shlex.join(dialect.argv("cluster", "start", "--all")))
            record.steps.append("pcs cluster start --all")
        if not all(n.host.service("corosync").is_enabled and n.host.service("pacemaker").is_enabled
                   for n in self.nodes):
            with record.timed("pcs cluster enable --all"):
                self.first.succeed(shlex.join(dialect.argv("cluster", "enable", "--all")))
            record.steps.append("pcs cluster enable --all")
        with record.timed("cluster formed"):
            wait_until(f"cluster {name} formed: quorum, a DC, {node_names} online", self.formed,
                       timeout=BOUNDS.cluster_form, observe=self.describe)

    def _prepare_node(self, node, steps: list[str]) -> None:
        """One node made ready for `pcs host auth`: the runbook's password, pcsd enabled and running;
        each change is added to steps as it is made."""
        conf = node.execute("cat /etc/corosync/corosync.conf 2>/dev/null").stdout
        if DEBIAN_SAMPLE_MARK in conf:
            node.succeed("rm -f /etc/corosync/corosync.conf")
            steps.append(f"{node.name}: removed Debian's sample corosync.conf")
        if not self._password_works(node):
            node.succeed("chpasswd", input=f"hacluster:{self.password}\n")
            steps.append(f"{node.name}: hacluster password set")
        for service in ("pcsd-ruby", "pcsd"):
            svc = node.host.service(service)
            if not svc.is_enabled:
                node.succeed(f"systemctl enable {service}")
                steps.append(f"{node.name}: enabled {service}")
            if not svc.is_running:
                node.succeed(f"systemctl start {service}")
                steps.append(f"{node.name}: started {service}")
        # HAProxy becomes the cluster's to start: the init system must not start it too.
        if node.host.service("haproxy").is_enabled:
            node.succeed("systemctl disable haproxy")
            steps.append(f"{node.name}: haproxy no longer started at boot (the cluster starts it)")

    def _converge(self, record: StageRecord) -> None:
        """Run the repair of every difference, properties first (stonith-enabled=false lets resources start)."""
        differences = self.differences()
        for difference in differences:
            if difference.what == "property stonith-enabled" and "crm_verify before" not in record.observations:
                verify = self.cluster.crm_verify(self.first)
                record.observations["crm_verify before"] = {"valid": verify.valid, "errors": list(verify.errors)}
            for argv in difference.repair:
                self.first.succeed(shlex.join(argv))
            record.steps.append(f"{difference.what}: {difference.found} -> {difference.expected} "
                                f"({'; '.join(shlex.join(a) for a in difference.repair)})")
        if differences:
            record.observations["converged"] = [d.row() for d in differences]

    def group_node(self) -> str | None:
        """The one node running every member that must run together (as the first node sees it), else None."""
        return self.cluster.group_node(self.first)

    def describe(self) -> str:
        return self.cluster.describe()

    def _password_works(self, node) -> bool:
        # pcsd checks the password through PAM; so does this, without printing it.
        code = ("import crypt,spwd,sys;e=spwd.getspnam('hacluster').sp_pwdp;"
                "sys.exit(0 if crypt.crypt(sys.stdin.read(),e)==e else 1)")
        result = node.execute(f"python3 -W ignore -c {shlex.quote(code)}", input=self.password)
        return result.rc == 0

    @staticmethod
    def _known_hosts(node) -> set[str]:
        result = node.execute("cat /var/lib/pcsd/known-hosts 2>/dev/null")
        try:
            return set(json.loads(result.stdout).get("known_hosts", {}))
        except ValueError:
            return set()


class FencingStage:
    """Stage 5: the fence key on the fence host and the directors, the fence device, then the CIB converged."""

    def __init__(self, deployment, target, cluster_stage: ClusterStage, *, name: str | None = None):
        """name: the stage's, by default the one that introduces fencing."""
        introduced_at = catalogue.documented().introduced_at("fencing")
        self.deployment = deployment
        self.target = target
        self.cluster_stage = cluster_stage
        self.name = name = name or introduced_at
        self.fencing = cluster_stage.spec.fencing
        if self.fencing is None:
            raise HaconformError(f"{name} declares no stonith device and fencing settings", where=f"{name}/stage.yaml",
                                 fix=f"add cluster.stonith and fencing (see {introduced_at})")

    @property
    def key_path(self) -> str:
        return self.fencing.key_file

    def wanted_domains(self) -> set[str]:
        return {domain for role in self.cluster_stage.spec.stonith for domain in self.cluster_stage.spec.host_map(role).values()}

    def apply(self) -> StageRecord:
        record = StageRecord(self.name)
        began = time.monotonic()
        fence, key_path, fencing = self.deployment.fence_host, self.key_path, self.fencing
        if fence is None:
            raise HaconformError("no fence host in the topology", where=str(self.deployment.topology.path),
                                 fix="add a host with `role: fence`")
        if not fence.host.file(key_path).exists:
            # The runbook's own command on the physical host.
            # umask 077 after mkdir: the key is never readable by others, not even before chmod.
            fence.succeed(f"mkdir -p {shlex.quote(key_path.rsplit('/', 1)[0] or '/')} && umask 077 && "
                          f"dd if=/dev/urandom of={shlex.quote(key_path)} bs={fencing.key_bytes} count=1 2>/dev/null"
                          f" && chmod 600 {shlex.quote(key_path)}")
            record.steps.append(f"{fence.name}: made a {fencing.key_bytes}-byte key with dd")
        key = fence.read_secret(key_path)
        register_secret(key)
        digest = fence.succeed(f"sha256sum {shlex.quote(key_path)}").split()[0]
        for director in self.cluster_stage.nodes:
            have = director.execute(f"sha256sum {shlex.quote(key_path)} 2>/dev/null").stdout.split()
            if not have or have[0] != digest:
                director.write_file(key_path, key, mode="0600")   # on stdin; never readable by others
                record.steps.append(f"{director.name}: key copied to {key_path}")
        if not self.target.fence_device_running() or record.steps:
            info = self.target.start_fence_device(key, key_file=key_path,
                                                  multicast_address=fencing.multicast_address, port=fencing.port)
            record.steps.append(f"fence device started on {fence.name}")
            record.observations["fence device"] = info
        wanted = self.wanted_domains()
        for director in self.cluster_stage.nodes:
            listed = wait_until(f"`fence_xvm -o list` on {director.name} shows {sorted(wanted)}",
                                lambda d=director: (lambda got: got if wanted <= set(got) else None)(self.cluster_stage.cluster.fence_list(d)),
                                timeout=BOUNDS.fence_request * 2)
            record.observations[f"fence_xvm -o list on {director.name}"] = listed
        self.cluster_stage._converge(record)
        for device in self.cluster_stage.spec.stonith.values():
            wait_until(f"{device.id} started", lambda d=device: self.cluster_stage.state().where_is(d.id),
                       timeout=BOUNDS.cluster_settle, observe=self.cluster_stage.describe)
        verify = self.cluster_stage.cluster.crm_verify(self.cluster_stage.first)
        record.observations["crm_verify"] = {"valid": verify.valid, "errors": list(verify.errors)}
        record.seconds = round(time.monotonic() - began, 2)
        return record
