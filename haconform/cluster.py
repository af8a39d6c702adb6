"""The deployment's cluster, as the harness asks it (after Pacemaker CTS's ClusterManager).

    cluster = Cluster(deployment)              # the documented cluster: deployment.cluster_spec
    cluster.state()                            # crm_mon XML from the first director that answers
    cluster.group_node()                       # the node running every member that must run together, else None
    cluster.active_director()                  # waits until they run on exactly one director
    cluster.vip_holders()                      # directors holding the VIP (their own address tables)
    cluster.vip_survey()                       # the same, and the directors that could not be asked
    cluster.configuration() / verify()         # the CIB's configuration section / crm_verify -LV
    cluster.transient_attributes()             # every node's transient attributes (cibadmin, status section)
    cluster.fence_list(director)               # `fence_xvm -o list` on a director
    cluster.standby(node) / unstandby(node) / cleanup() / set_property(name, value)
    unstandby_command(node) / property_command(name, value) / cleanup_command()   # the command lines

Every crm_mon, cibadmin and fence_xvm answer is read here, through the
readers; suites, stages, faults, restore and perf ask this object.  It reads
and acts; it never asserts.  The commands it acts with are built by the
*_command functions; the nemesis's heal steps (haconform/faults/nemesis.py)
build theirs with them too, and those one lines are what a fault's heal(),
restore and a dead-man switch (haconform/deadman.py) run to undo a change.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .errors import HaconformError
from .readers.cluster import (CibConfiguration, ClusterState, CrmVerifyResult, read_cib_configuration,
                              read_cluster_state, read_crm_verify, read_fence_history, read_transient_attributes,
                              fence_list_command, parse_fence_list)
from .readers.links import nic_holding
from .timeouts import BOUNDS
from .wait import wait_until

log = logging.getLogger("haconform.cluster")


def standby_command(node: str) -> str:
    return f"pcs node standby {shlex.quote(node)}"


def unstandby_command(node: str) -> str:
    return f"pcs node unstandby {shlex.quote(node)}"


def property_command(name: str, value: str | None) -> str:
    """Set a cluster property; None: remove it (the property was not set, pacemaker's default applies)."""
    if value is None:
        return f"pcs property unset {shlex.quote(name)}"
    return f"pcs property set {shlex.quote(f'{name}={value}')}"


def cleanup_command(resource: str | None = None) -> str:
    return "pcs resource cleanup" + (f" {shlex.quote(resource)}" if resource else "")


class NoClusterAnswer(HaconformError):
    """No director answered crm_mon (all off, cut off, or no cluster yet)."""


class DirectorNotAsked(HaconformError):
    """A director that could not be asked whether it holds an address: unknown, never "not holding"."""


def _known_down(machine) -> bool:
    """The target's own power control has the machine off or crashed (not merely silent)."""
    target = getattr(machine, "target", None)
    try:
        return bool(target is not None and target.known_down(machine.name))
    except Exception:   # noqa: BLE001 - a power control that cannot say leaves the director unknown
        return False


BOOT_ID = "/proc/sys/kernel/random/boot_id"


def link_holding(machine, address: str) -> str | None:
    """The machine's link holding `address` (read with `ip -j`); None: it answered and holds no such address,
    or the target's power control has it off or crashed.  DirectorNotAsked when it could not be asked."""
    return holding_and_boot(machine, address)[0]


def holding_and_boot(machine, address: str) -> tuple[str | None, str | None]:
    """(link holding `address` or None, the boot id of the kernel that answered; None when the target's power
    control has the machine off or crashed).  DirectorNotAsked when it could not be asked.

    The power control is asked first: a crashed guest's ssh takes its connect timeout to fail, which would
    make each of the VIP watch's samples that long."""
    if _known_down(machine):
        return None, None
    try:
        result = machine.execute(f"cat {BOOT_ID} && ip -j -4 addr show")
    except Exception as exc:   # noqa: BLE001 - powered off, cut off, timed out: the answer is unknown
        why = f"{type(exc).__name__}: {exc}"
    else:
        if result.rc == 0:
            boot_id, _, links = (result.stdout or "").partition("\n")
            try:
                return nic_holding(json.loads(links), address), boot_id.strip() or None
            except ValueError as exc:
                why = f"`ip -j -4 addr show` printed no JSON ({exc})"
        else:
            why = f"`ip -j -4 addr show` exited {result.rc}: {result.stderr.strip()[-200:]}"
    raise DirectorNotAsked(f"{machine.name} could not be asked whether it holds {address}: {why}",
                           where="haconform.cluster")


@dataclass(frozen=True)
class VipSurvey:
    """Who holds the VIP, asked of every director at once: the holders, and the directors that could not
    be asked (director -> why).  Only a survey with nobody unasked says who does *not* hold it."""
    holders: tuple[str, ...]
    unasked: Mapping[str, str] = field(default_factory=dict)
    boot_ids: Mapping[str, str] = field(default_factory=dict)   # director -> the boot id it answered with

    @property
    def complete(self) -> bool:
        return not self.unasked


class Cluster:
    def __init__(self, deployment, spec=None):
        """spec: the documented cluster (default: the one the deployment's current stage has)."""
        self.deployment = deployment
        self._spec = spec

    @property
    def spec(self):
        spec = self._spec or self.deployment.cluster_spec
        if spec is None:
            raise HaconformError("no cluster stage applied or verified yet", where="haconform.cluster",
                                 fix="ask for the cluster after a cluster stage fixture (stage4, cluster_settings…)")
        return spec

    @property
    def directors(self):
        return [self.deployment.machine(name) for name in self.deployment.topology.cluster_nodes]

    # ----- reading -----------------------------------------------------------------------
    def state(self, director=None) -> ClusterState:
        """crm_mon from `director`, or from the first director that answers."""
        if director is not None:
            return read_cluster_state(director.host)
        state, _ = self.state_and_source()
        return state

    def state_and_source(self):
        """(crm_mon state, the director that answered); NoClusterAnswer when none does."""
        errors = {}
        for director in self.directors:
            try:
                return read_cluster_state(director.host), director
            except Exception as exc:   # a crashed or cut-off node does not answer
                log.debug("no crm_mon from %s: %s", director.name, exc)
                errors[director.name] = str(exc)
        raise NoClusterAnswer(f"no director answered crm_mon: {errors}")

    def answers(self) -> ClusterState | None:
        try:
            return self.state()
        except NoClusterAnswer:
            return None

    def group_node(self, director=None) -> str | None:
        """The node running every member that must run together (a group's, or those tied by colocation
        and order constraints), as `director` (or the first that answers) sees it; None: nowhere, split,
        or no answer."""
        try:
            state = self.state(director)
            places = [state.where_is(member) for member in self.spec.together_ids()]
        except (HaconformError, KeyError):
            return None
        if places and all(len(p) == 1 for p in places) and len({p[0] for p in places}) == 1:
            return places[0][0]
        return None

    def active_director(self, *, timeout: float | None = None):
        """The director running the group, once exactly one does (asked of each director in turn;
        default bound BOUNDS.cluster_settle)."""
        timeout = BOUNDS.cluster_settle if timeout is None else timeout
        def seen():
            for director in self.directors:
                node = self.group_node(director)
                if node:
                    return self.deployment.machine(node)
            return None
        return wait_until(f"{self.spec.together_label} runs on exactly one director", seen, timeout=timeout,
                          observe=self.views)

    def views(self) -> dict:
        """Each director's own view: quorum, DC, online nodes (None: it does not answer)."""
        views = {}
        for director in self.directors:
            try:
                state = read_cluster_state(director.host)
            except Exception:
                views[director.name] = None
                continue
            views[director.name] = {"quorum": state.quorum, "dc": state.dc, "online": state.online_nodes}
        return views

    def whole(self) -> bool:
        """Every director sees quorum, a DC and all cluster nodes online."""
        wanted = set(self.deployment.topology.cluster_nodes)
        return all(view and view["quorum"] and view["dc"] and wanted <= set(view["online"])
                   for view in self.views().values())

    def snapshot(self) -> dict:
        """crm_mon state from the first director that answers, as data for the report."""
        try:
            state, director = self.state_and_source()
        except NoClusterAnswer as exc:
            return {"from": None, "error": str(exc)}
        return {"from": director.name, "dc": state.dc, "quorum": state.quorum,
                "online": state.online_nodes,
                "nodes": {n.name: {"online": n.online, "standby": n.standby, "unclean": n.unclean}
                          for n in state.nodes},
                "resources": {r.id: {"role": r.role, "nodes": list(r.nodes), "failed": r.failed}
                              for r in state.resources},
                "failures": [{"resource": f.resource, "node": f.node, "status": f.status} for f in state.failures],
                "operations": [{"node": h.node, "resource": h.resource, "call": op.call, "task": op.task,
                                "interval_ms": op.interval_ms, "rc": op.rc, "exec_ms": op.exec_ms,
                                "queue_ms": op.queue_ms, "last_rc_change": op.last_rc_change}
                               for h in state.history for op in h.operations]}

    def describe(self) -> str:
        """One line for a wait's failure message."""
        try:
            state = self.state()
        except HaconformError as exc:
            return str(exc)
        return (f"quorum={state.quorum} dc={state.dc} online={state.online_nodes} "
                f"resources={[(r.id, r.role, r.nodes) for r in state.resources]} "
                f"failures={[(f.resource, f.node, f.status) for f in state.failures]}")

    def configuration(self, director=None) -> CibConfiguration:
        """The CIB's configuration section, from `director` or the first director that answers."""
        if director is not None:
            return read_cib_configuration(director.host)
        _, source = self.state_and_source()
        return read_cib_configuration(source.host)

    def transient_attributes(self, director=None) -> dict[str, dict[str, str]]:
        """Each node's transient attributes in the CIB's status section, from `director` or the first
        director that answers."""
        return read_transient_attributes((director or self.state_and_source()[1]).host)

    def crm_verify(self, director=None) -> CrmVerifyResult:
        """`crm_verify -LV` on the live CIB, from `director` or the first director that answers."""
        return read_crm_verify((director or self.state_and_source()[1]).host)

    def monitor_interval_s(self, resource_id: str, director=None) -> float | None:
        """The deployment's own monitor interval of a resource (CIB), in seconds."""
        primitive = self.configuration(director).primitives.get(resource_id)
        interval_ms = primitive.interval_ms("monitor") if primitive else None
        return None if interval_ms is None else interval_ms / 1000

    def vip_survey(self) -> VipSurvey:
        """Which directors hold the VIP right now, and which could not be asked.  Asked all at once: read
        one after another over a slow transport, a VIP that moved between two reads would show on both."""
        directors = self.deployment.directors

        def ask(director):
            try:
                return (*holding_and_boot(director, self.deployment.vip), None)
            except DirectorNotAsked as exc:
                return None, None, exc.what
        with ThreadPoolExecutor(max_workers=len(directors)) as pool:
            answers = list(pool.map(ask, directors))
        return VipSurvey(holders=tuple(d.name for d, (link, _, _) in zip(directors, answers) if link),
                         unasked={d.name: why for d, (_, _, why) in zip(directors, answers) if why},
                         boot_ids={d.name: boot for d, (_, boot, _) in zip(directors, answers) if boot})

    def vip_holders(self) -> list[str]:
        """Directors holding the VIP right now; DirectorNotAsked when one could not be asked (a list
        that left it out would say it does not hold the VIP)."""
        survey = self.vip_survey()
        if not survey.complete:
            raise DirectorNotAsked(f"VIP holders unknown: {'; '.join(survey.unasked.values())} "
                                   f"(holding it among those asked: {list(survey.holders)})",
                                   where="haconform.cluster")
        return list(survey.holders)

    def fence_list(self, director) -> dict[str, str]:
        """`fence_xvm -o list` on a director: domain -> state ({} when it gets no answer)."""
        result = director.execute(fence_list_command())
        return parse_fence_list(result.stdout) if result.rc == 0 else {}

    def fence_history(self, director) -> list:
        return read_fence_history(director.host)

    # ----- acting (the runbook's own commands) --------------------------------------------
    def _first_answering(self):
        try:
            return self.state_and_source()[1]
        except NoClusterAnswer:
            return self.directors[0]

    def _may_change(self, machine, command: str):
        """The guard's word before a change to the cluster: a read-only run refuses it by name."""
        self.deployment.target.guard.check_action(machine.name, f"change the cluster: `{command}`")
        return machine

    def change(self, command: str, *, via=None) -> None:
        """Run a command that changes the cluster on via (default: the first director that answers), once
        the guard lets it: the acts below, and the nemesis's heal steps (haconform/faults/nemesis.py)."""
        self._may_change(via or self._first_answering(), command).succeed(command)

    def standby(self, node: str) -> None:
        self.change(standby_command(node), via=self.deployment.machine(node))

    def unstandby(self, node: str, *, via=None) -> None:
        self.change(unstandby_command(node), via=via)

    def set_property(self, name: str, value: str | None, *, via=None) -> None:
        """value None: remove the property (back to pacemaker's default)."""
        self.change(property_command(name, value), via=via)

    def property_value(self, name: str, director=None) -> str | None:
        """A cluster property as the CIB sets it (None: not set, pacemaker's default applies)."""
        return self.configuration(director).properties.get(name)

    def cleanup(self, *, via=None, resource: str | None = None) -> None:
        self.change(cleanup_command(resource), via=via)
