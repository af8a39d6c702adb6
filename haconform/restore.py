"""Record the deployment's state before a destructive test; restore it after.

    before = take_snapshot(deployment)
    ... the destructive test (its own cleanups run first) ...
    outcome = restore(deployment, before)
    if outcome.problems: stop the session, saying what could not be restored

What is recorded: each director's and real server's power and cluster-NIC
state (where the target can tell), whether each role service of the topology
runs on its hosts, and from crm_mon XML: nodes online / in standby, which
resources are started and where, failed actions, stonith-enabled and maintenance-mode.

The restore policy: hosts powered and NICs plugged as before; services that
ran run again; nodes that were not in standby leave standby; the cluster
properties get their values back; failed actions the test left are cleaned
up; then, within
a bound, every node online before is online again, the cluster has quorum
and a DC, and every resource started before is started again.  WHERE the
group runs may differ (a failover test legitimately moves it, and moving it
back would be one more failover); that it runs, on exactly one node, may not.

Every undo is the nemesis's (haconform/faults/nemesis.py): the same command
lines a fault's heal() runs and its dead-man switch would run, so restore,
heal and the switches cannot disagree on how a change is put back.

Last, the dead-man switches the test's faults armed (haconform/deadman.py)
are disarmed: after the restore, so a harness dying during it still leaves
the switches to undo what it had not yet.  When the restore failed they stay
armed: the session stops, and as the harness exits they undo once more.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import deadman
from .errors import HaconformError, WaitTimeout
from .cluster import Cluster, NoClusterAnswer
from .faults import nemesis
from .timeouts import BOUNDS
from .wait import wait_until

log = logging.getLogger("haconform.restore")

# The exit status of a session stopped because a restore failed: pytest's own are 0 to 5.
EXIT_NOT_RESTORED = 7
CLUSTER_OWNED_SERVICES = ("haproxy",)   # started by the cluster on one director, not per host
TOUCHED_PROPERTIES = ("stonith_enabled", "maintenance_mode")   # ClusterOptions fields suites change


@dataclass
class ClusterView:
    online: list[str]
    standby: list[str]
    started: dict[str, list[str]]      # resource id -> nodes it runs on
    groups: dict[str, list[str]]       # group id (or the members' label when constraints tie them) -> members
    options: dict[str, object]         # TOUCHED_PROPERTIES -> value
    quorum: bool
    dc: str | None
    failures: list[str] = field(default_factory=list)   # "resource on node: status"


@dataclass
class Snapshot:
    power: dict[str, str] = field(default_factory=dict)
    nics: dict[str, str] = field(default_factory=dict)
    services: dict[str, dict[str, bool]] = field(default_factory=dict)   # host -> service -> running
    cluster: ClusterView | None = None
    seconds: float = 0.0

    def as_evidence(self) -> dict:
        return {"power": self.power, "nics": self.nics, "services": self.services,
                "cluster": self.cluster.__dict__ if self.cluster else None, "seconds": self.seconds}


@dataclass
class Restoration:
    found: list[str] = field(default_factory=list)      # cluster differences seen before acting
    actions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # what was not put back
    switches: list[str] = field(default_factory=list)   # what became of each dead-man switch
    seconds: float = 0.0
    stopped_by: str | None = None                       # the exception that ended the restore early

    def as_evidence(self) -> dict:
        return {"found": self.found, "did": self.actions, "not put back": self.problems,
                "dead-man switches": self.switches, "stopped by": self.stopped_by, "seconds": self.seconds}


def _fault_hosts(deployment) -> list:
    return [*deployment.directors, *deployment.realservers]


def read_cluster_view(deployment) -> tuple[ClusterView | None, object]:
    """crm_mon from the first director that answers, and that director (None, None: no cluster)."""
    try:
        state, director = Cluster(deployment).state_and_source()
    except NoClusterAnswer as exc:   # powered off, cut off, or no cluster (yet)
        log.debug("%s", exc)
        return None, None
    started = {}
    for resource in state.resources:
        if resource.active and resource.nodes:
            started.setdefault(resource.id, [])
            started[resource.id] += [n for n in resource.nodes if n not in started[resource.id]]
    groups = {g.id: list(g.members) for g in state.groups}
    spec = getattr(deployment, "cluster_spec", None)
    together = spec.together_ids() if spec is not None else []
    if len(together) > 1 and together not in groups.values():
        # Tied by constraints, not a group: they must run whole after the test all the same.
        groups[spec.together_label] = together
    view = ClusterView(online=state.online_nodes,
                       standby=[n.name for n in state.nodes if n.standby],
                       started=started, groups=groups,
                       options={p: getattr(state.options, p) for p in TOUCHED_PROPERTIES},
                       quorum=state.quorum, dc=state.dc,
                       failures=[f"{f.resource} on {f.node}: {f.status}" for f in state.failures])
    return view, director


def _maybe(call, default):
    try:
        return call()
    except HaconformError:
        return default   # the target has no such control (e.g. no NIC control)


def _host_state(deployment, machine, cluster_owned: tuple[str, ...]) -> tuple[str, str | None, dict[str, bool]]:
    target = deployment.target
    power = _maybe(lambda: target.power_state(machine.name), "unknown")
    if power != "on":
        return power, None, {}
    nic = _maybe(lambda: target.nic_state(machine.name), "unknown")
    services = {service: bool(machine.host.service(service).is_running)
                for service in deployment.topology.role_services.get(machine.role, []) if service not in cluster_owned}
    return power, nic, services


def take_snapshot(deployment) -> Snapshot:
    """Hosts are asked in parallel: over ssh each question is a round trip."""
    began = time.monotonic()
    snapshot = Snapshot()
    snapshot.cluster, _ = read_cluster_view(deployment)
    owned = CLUSTER_OWNED_SERVICES if snapshot.cluster else ()
    machines = _fault_hosts(deployment)
    with ThreadPoolExecutor(max_workers=len(machines) or 1) as pool:
        states = list(pool.map(lambda m: _host_state(deployment, m, owned), machines))
    for machine, (power, nic, services) in zip(machines, states):
        snapshot.power[machine.name] = power
        if power == "on":
            snapshot.nics[machine.name] = nic
            snapshot.services[machine.name] = services
    snapshot.seconds = round(time.monotonic() - began, 2)
    return snapshot


def cluster_differences(before: ClusterView, now: ClusterView | None) -> list[str]:
    """What keeps the cluster from being as it was (placement of the groups aside)."""
    if now is None:
        return ["no director answers crm_mon"]
    problems = []
    if not now.quorum or not now.dc:
        problems.append(f"no quorum or no DC (quorum={now.quorum}, dc={now.dc})")
    missing = sorted(set(before.online) - set(now.online))
    if missing:
        problems.append(f"nodes not online: {missing}")
    new_standby = sorted(set(now.standby) - set(before.standby))
    if new_standby:
        problems.append(f"nodes in standby: {new_standby}")
    stopped = sorted(set(before.started) - set(now.started))
    if stopped:
        problems.append(f"resources not started: {stopped}")
    for group, members in before.groups.items():
        if not _whole(before, members):
            continue   # it was not running whole before the test either
        if not _whole(now, members):
            problems.append(f"group {group} not running whole on exactly one node: "
                            f"{ {m: now.started.get(m, []) for m in members} }")
    for prop, value in before.options.items():
        if now.options.get(prop) != value:
            problems.append(f"{prop.replace('_', '-')} is {now.options.get(prop)}, was {value}")
    new_failures = sorted(set(now.failures) - set(before.failures))
    if new_failures:
        problems.append(f"failed actions: {new_failures}")
    return problems


def _whole(view: ClusterView, members: list[str]) -> bool:
    places = {tuple(view.started.get(m, [])) for m in members}
    return len(places) == 1 and len(next(iter(places))) == 1


def restore(deployment, before: Snapshot, *, settle_timeout: float | None = None) -> Restoration:
    """Bring back what before recorded (see the module docstring); say what could not be.
    settle_timeout: how long the cluster may take to settle (default BOUNDS.cluster_settle).

    Fail-stop: whatever ends the restore early (a wait that ran out on a slow guest, a refused
    command, a bug) is a problem like any other: it is recorded with what was done and found so
    far, and the switches stay armed, so the caller stops the session and the switches undo what
    the restore did not."""
    began = time.monotonic()
    outcome = Restoration()
    try:
        _restore(deployment, before, outcome,
                 BOUNDS.cluster_settle if settle_timeout is None else settle_timeout)
    except Exception as exc:
        outcome.stopped_by = f"{type(exc).__name__}: {exc}"
        outcome.problems.append(f"the restore itself stopped ({outcome.stopped_by})")
    target = deployment.target
    if outcome.problems:
        outcome.switches = [f"left armed (restore failed): {s!r}" for s in deadman.armed(target)]
    else:
        outcome.switches = deadman.disarm_all(target)
        # A switch that fired while the harness lived undid the test's change under it: say so.
        outcome.problems += [f"dead-man switch fired before disarm: {s}" for s in outcome.switches
                             if "fired before disarm" in s]
    outcome.seconds = round(time.monotonic() - began, 2)
    return outcome


def _restore(deployment, before: Snapshot, outcome: Restoration, settle_timeout: float) -> None:
    target = deployment.target
    rebooted = False

    def bring_back(machine) -> tuple[list[str], list[str], bool]:
        name, actions, problems = machine.name, [], []
        if before.power.get(name) == "on" and _maybe(lambda: target.power_state(name), "unknown") not in ("on", "unknown"):
            try:
                nemesis.power_back_on(machine)
                actions.append(f"powered {name} on")
            except HaconformError as exc:
                return actions, [f"{name} is off and cannot be powered on: {exc}"], False
        if before.nics.get(name) == "up" and _maybe(lambda: target.nic_state(name), "unknown") == "down":
            try:
                nemesis.plug_back_in(machine)
                actions.append(f"plugged {name}'s cluster NIC back in")
            except HaconformError as exc:
                problems.append(f"{name}'s cluster NIC stays down: {exc}")
        return actions, problems, bool(actions and actions[0].startswith("powered"))

    machines = _fault_hosts(deployment)
    with ThreadPoolExecutor(max_workers=len(machines) or 1) as pool:
        for actions, problems, powered in pool.map(bring_back, machines):
            outcome.actions += actions
            outcome.problems += problems
            rebooted = rebooted or powered

    if before.cluster is not None:
        _restore_cluster(deployment, before.cluster, outcome,
                         timeout=BOUNDS.node_rejoin if rebooted else settle_timeout)

    def start_services(machine) -> tuple[list[str], list[str]]:
        actions, problems = [], []
        for service, was_running in before.services.get(machine.name, {}).items():
            if not was_running:
                continue
            try:
                if machine.host.service(service).is_running:
                    continue
                nemesis.start_service(machine, service).run(deployment)
                actions.append(f"started {service} on {machine.name}")
            except HaconformError as exc:
                problems.append(f"{service} on {machine.name} not running and not startable: {exc}")
        return actions, problems

    with ThreadPoolExecutor(max_workers=len(machines) or 1) as pool:
        for actions, problems in pool.map(start_services, machines):
            outcome.actions += actions
            outcome.problems += problems


def _restore_cluster(deployment, before: ClusterView, outcome: Restoration, *, timeout: float) -> None:
    now, director = read_cluster_view(deployment)
    outcome.found = cluster_differences(before, now)
    if not outcome.found:
        return
    if director is None:
        try:
            now, director = wait_until("a director answers crm_mon", lambda: (lambda v: v if v[0] else None)(
                read_cluster_view(deployment)), timeout=timeout)
        except WaitTimeout:
            outcome.problems.append("no director answers crm_mon")
            return
    steps = [nemesis.unstandby(node, via=director) for node in sorted(set(now.standby) - set(before.standby))]
    for prop, value in before.options.items():
        if value is not None and now.options.get(prop) != value:
            steps.append(nemesis.set_property(prop.replace("_", "-"), "true" if value else "false", via=director))
    steps.append(nemesis.cleanup(via=director))
    for step in steps:
        try:
            step.run(deployment)
        except HaconformError as exc:   # a pcs command refused
            outcome.problems.append(f"{step.command} failed: {exc}")
            continue
        outcome.actions.append(step.command)
    last: dict[str, list[str]] = {}

    def restored() -> bool:
        last["problems"] = cluster_differences(before, read_cluster_view(deployment)[0])
        return not last["problems"]

    try:
        wait_until("the cluster as it was before the test (placement aside)", restored, timeout=timeout,
                   observe=lambda: last.get("problems"))
    except WaitTimeout:
        outcome.problems.extend(last.get("problems") or ["cluster not restored"])
