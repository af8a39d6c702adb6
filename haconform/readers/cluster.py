"""Pacemaker/corosync cluster state, read from the tools' XML output.

crm_mon's XML follows Pacemaker's API schema (pacemaker 2.1.5 ships it as
/usr/share/pacemaker/api/crm_mon-2.25.rng with nodes-2.24, resources-2.24,
node-history-2.12, failure-2.8 and fence-event-2.15); the parser reads the
elements and attributes that schema defines.

The command used (see CRM_MON_COMMAND): crm_mon's XML output already carries
every section (nodes, resources, node history with fail counts, failures), but
fence history only at level 1 (failures and pending actions) unless asked;
--fence-history=3 lists every fence action, so a test can see the one reboot
it caused and count them.  --include=all makes the section list explicit
rather than depending on that default.  --show-detail is not used: it renames
clone instances (ping:0, ping:1) and the readers address resources by the
ids in the configuration.
"""

from __future__ import annotations

import re
import shlex
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from ..errors import HaconformError
from ..timeouts import BOUNDS
from . import CommandFailed, ParseError, excerpt, host_label, run_command

CRM_MON_COMMAND = "crm_mon --one-shot --output-as=xml --include=all --fence-history=3"
CRM_VERIFY_COMMAND = "crm_verify --live-check -V --output-as=xml"
# --verbose: without it stonith_admin prints only the latest successful action.
FENCE_HISTORY_COMMAND = "stonith_admin --history %s --verbose --output-as=xml"

# Pacemaker's score for INFINITY, which is also what a fail count of
# "INFINITY" means.
PCMK_INFINITY = 1_000_000


class ClusterUnavailable(HaconformError):
    """The cluster tools answered, but could not reach the cluster daemons."""


# --- values ------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    name: str
    id: str
    online: bool
    standby: bool
    standby_onfail: bool
    maintenance: bool
    pending: bool
    unclean: bool
    shutdown: bool
    expected_up: bool
    is_dc: bool
    resources_running: int
    type: str                     # member | remote | ping | unknown


@dataclass(frozen=True)
class Resource:
    """A primitive resource, or one instance of a cloned primitive."""

    id: str
    agent: str                    # e.g. ocf:heartbeat:IPaddr2, service:haproxy, stonith:fence_xvm
    role: str                     # Started, Stopped, Promoted, Unpromoted, ...
    active: bool
    failed: bool
    managed: bool
    orphaned: bool
    blocked: bool
    failure_ignored: bool
    nodes: tuple[str, ...]        # where it runs (cached=false nodes included)
    target_role: str | None
    group: str | None             # enclosing group id
    clone: str | None             # enclosing clone id
    pending: str | None = None    # e.g. "Starting" while an action runs (record-pending)


@dataclass(frozen=True)
class Group:
    id: str
    managed: bool
    disabled: bool
    members: tuple[str, ...]      # member resource ids in start order
    clone: str | None = None


@dataclass(frozen=True)
class Clone:
    id: str
    promotable: bool              # crm_mon's multi_state
    unique: bool
    managed: bool
    disabled: bool
    failed: bool
    target_role: str | None
    children: tuple[str, ...]     # ids of the cloned primitive or group instances


@dataclass(frozen=True)
class OperationRecord:
    call: int
    task: str
    rc: int
    rc_text: str
    interval_ms: int
    last_rc_change: str | None
    exec_ms: int | None = None      # how long the agent ran (crm_mon's exec-time)
    queue_ms: int | None = None     # how long it waited for the executor (queue-time)


@dataclass(frozen=True)
class ResourceHistory:
    """A resource's history on one node (crm_mon's node_history)."""

    node: str
    resource: str
    fail_count: int               # 0 when none recorded; INFINITY -> PCMK_INFINITY
    migration_threshold: int | None
    last_failure: str | None
    operations: tuple[OperationRecord, ...]


@dataclass(frozen=True)
class Failure:
    """A failed resource action (crm_mon's <failures>)."""

    op_key: str                   # e.g. haproxy_monitor_60000
    resource: str
    task: str | None              # monitor, start, stop, ...
    interval_ms: int | None
    node: str
    exit_status: str              # text, e.g. "not running"
    exit_reason: str
    exit_code: int
    call: int
    status: str                   # execution status, e.g. complete, Timed Out
    last_rc_change: str | None


@dataclass(frozen=True)
class FenceEvent:
    action: str                   # reboot, off, on
    target: str
    status: str                   # success | failed | pending
    client: str                   # e.g. pacemaker-controld.1207, stonith_admin.2231
    origin: str                   # node that asked
    delegate: str | None          # node that carried it out
    completed: datetime | None    # None while pending
    completed_text: str | None
    exit_reason: str | None = None
    extended_status: str | None = None


@dataclass(frozen=True)
class ClusterOptions:
    stonith_enabled: bool | None = None
    symmetric_cluster: bool | None = None
    no_quorum_policy: str | None = None
    maintenance_mode: bool | None = None
    stop_all_resources: bool | None = None


@dataclass(frozen=True)
class ClusterState:
    """One crm_mon snapshot.  Never asserts; ask it questions."""

    quorum: bool                  # the DC's partition has quorum (False when there is no DC)
    dc: str | None                # name of the designated controller
    nodes: tuple[Node, ...]
    resources: tuple[Resource, ...]   # every primitive, groups and clones flattened
    groups: tuple[Group, ...]
    clones: tuple[Clone, ...]
    history: tuple[ResourceHistory, ...]
    failures: tuple[Failure, ...]
    fence_events: tuple[FenceEvent, ...] | None   # None: fence history was not available
    fence_history_status: int | None              # crm_mon's error code when not available
    options: ClusterOptions
    nodes_configured: int | None = None
    resources_configured: int | None = None
    last_update: str | None = None
    raw: str = field(default="", repr=False, compare=False)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r}; nodes: {[n.name for n in self.nodes]}")

    @property
    def online_nodes(self) -> list[str]:
        return [n.name for n in self.nodes if n.online]

    def resource(self, resource_id: str) -> list[Resource]:
        """The primitive(s) with this id: one, or one per instance of a clone."""
        found = [r for r in self.resources if r.id == resource_id]
        if not found:
            raise KeyError(f"no primitive {resource_id!r}; primitives: {self.resource_ids()}")
        return found

    def resource_ids(self) -> list[str]:
        return list(dict.fromkeys(r.id for r in self.resources))

    def where_is(self, resource_id: str) -> list[str]:
        """Nodes where a primitive, group or clone is active, in crm_mon's order.

        For a group: the nodes where any member runs (a healthy group gives one
        node; two means the group is split).  For a clone: every instance's node.
        """
        members = self._primitives_of(resource_id)
        nodes: dict[str, None] = {}
        for resource in members:
            for node in resource.nodes:   # crm_mon lists nodes only for running instances
                nodes.setdefault(node, None)
        return list(nodes)

    def group_members(self, group_id: str) -> list[str]:
        for group in self.groups:
            if group.id == group_id:
                return list(group.members)
        raise KeyError(f"no group {group_id!r}; groups: {[g.id for g in self.groups]}")

    def failcount(self, resource_id: str, node: str) -> int:
        """Fail count of a resource on a node (0 when none recorded)."""
        total = 0
        for entry in self.history:
            if entry.node == node and _base_id(entry.resource) == _base_id(resource_id):
                total += entry.fail_count
        return total

    def failures_of(self, resource_id: str) -> list[Failure]:
        return [f for f in self.failures if _base_id(f.resource) == _base_id(resource_id)]

    def fence_events_for(self, target: str, *, action: str | None = None,
                         status: str | None = None) -> list[FenceEvent]:
        """Fence actions against target (newest first as Pacemaker sorts them)."""
        if self.fence_events is None:
            raise ClusterUnavailable(
                f"fence history was not available in this snapshot "
                f"(crm_mon fence_history status={self.fence_history_status})",
                fix="is pacemaker-fenced running? read_fence_history() asks it directly")
        return [e for e in self.fence_events
                if e.target == target and (action is None or e.action == action)
                and (status is None or e.status == status)]

    def _primitives_of(self, resource_id: str) -> list[Resource]:
        primitives = [r for r in self.resources
                      if r.id == resource_id or _base_id(r.id) == resource_id
                      or r.group == resource_id or _base_id(r.group or "") == resource_id
                      or r.clone == resource_id]
        if not primitives:
            known = self.resource_ids() + [g.id for g in self.groups] + [c.id for c in self.clones]
            raise KeyError(f"no resource, group or clone {resource_id!r}; known: {known}")
        return primitives


def _base_id(resource_id: str) -> str:
    """Clone instance ids carry ':N' (ping:0); the configuration id does not."""
    return resource_id.split(":", 1)[0]


# --- crm_mon ---------------------------------------------------------------------

def read_cluster_state(host: Any, *, cib_file: str | None = None,
                       timeout: float | None = None) -> ClusterState:
    """Run crm_mon on host and parse its XML.

    cib_file: read a saved CIB instead of the live cluster (CIB_file=...), e.g.
    one written by `pcs cluster cib FILE` or crm_simulate; no daemon is needed.
    Raises ClusterUnavailable when crm_mon cannot reach the cluster.
    """
    timeout = BOUNDS.cli_query if timeout is None else timeout   # read when called: a calibration scales it
    prefix = f"CIB_file={shlex.quote(cib_file)} " if cib_file else ""
    command = f"{prefix}timeout {timeout:g} {CRM_MON_COMMAND}"
    result = host.run(command)
    return parse_crm_mon(result.stdout, rc=result.rc, stderr=result.stderr,
                         source=f"{host_label(host)}: {command}")


def parse_crm_mon(text: str, *, rc: int = 0, stderr: str = "",
                  source: str = "crm_mon") -> ClusterState:
    """Parse `crm_mon --output-as=xml` (pacemaker-result, api 2.x)."""
    root = _result_root(text, rc=rc, stderr=stderr, source=source)
    summary = root.find("summary")
    nodes_xml = root.find("nodes")
    if summary is None or nodes_xml is None:
        raise ParseError(f"crm_mon XML without <summary> and <nodes>: {excerpt(text)}",
                         where=source)
    reader = _Attrs(source)

    dc_xml = summary.find("current_dc")
    dc = None
    quorum = False
    if dc_xml is not None and reader.bool(dc_xml, "present"):
        dc = reader.text(dc_xml, "name")
        quorum = reader.bool(dc_xml, "with_quorum")

    resources: list[Resource] = []
    groups: list[Group] = []
    clones: list[Clone] = []
    resources_xml = root.find("resources")
    if resources_xml is not None:
        _walk_resources(resources_xml, reader, resources, groups, clones,
                        group=None, clone=None)

    fence_events: tuple[FenceEvent, ...] | None = None
    fence_status = None
    fence_xml = root.find("fence_history")
    if fence_xml is not None:
        if fence_xml.get("status") not in (None, "0"):
            fence_status = reader.int(fence_xml, "status")
        else:
            fence_events = tuple(_fence_event(e, reader) for e in fence_xml.findall("fence_event"))

    def number(element_name: str) -> int | None:
        element = summary.find(element_name)
        return reader.int(element, "number") if element is not None else None

    last_update = summary.find("last_update")
    return ClusterState(
        quorum=quorum, dc=dc, nodes=_nodes(nodes_xml, reader), resources=tuple(resources),
        groups=tuple(groups), clones=tuple(clones), history=_node_history(root.find("node_history"), reader),
        failures=_failures(root.find("failures"), reader), fence_events=fence_events,
        fence_history_status=fence_status, options=_cluster_options(summary.find("cluster_options"), reader),
        nodes_configured=number("nodes_configured"),
        resources_configured=number("resources_configured"),
        last_update=last_update.get("time") if last_update is not None else None,
        raw=text,
    )


def _cluster_options(options_xml: ET.Element | None, reader: "_Attrs") -> ClusterOptions:
    if options_xml is None:
        return ClusterOptions()
    return ClusterOptions(
        stonith_enabled=reader.bool(options_xml, "stonith-enabled", None),
        symmetric_cluster=reader.bool(options_xml, "symmetric-cluster", None),
        no_quorum_policy=options_xml.get("no-quorum-policy"),
        maintenance_mode=reader.bool(options_xml, "maintenance-mode", None),
        stop_all_resources=reader.bool(options_xml, "stop-all-resources", None),
    )


def _nodes(nodes_xml: ET.Element, reader: "_Attrs") -> tuple[Node, ...]:
    return tuple(
        Node(
            name=reader.text(n, "name"), id=reader.text(n, "id"),
            online=reader.bool(n, "online"), standby=reader.bool(n, "standby"),
            standby_onfail=reader.bool(n, "standby_onfail"),
            maintenance=reader.bool(n, "maintenance"), pending=reader.bool(n, "pending"),
            unclean=reader.bool(n, "unclean"), shutdown=reader.bool(n, "shutdown"),
            expected_up=reader.bool(n, "expected_up"), is_dc=reader.bool(n, "is_dc"),
            resources_running=reader.int(n, "resources_running"),
            type=n.get("type", "unknown"),
        )
        for n in nodes_xml.findall("node")
    )


def _node_history(history_xml: ET.Element | None, reader: "_Attrs") -> tuple[ResourceHistory, ...]:
    if history_xml is None:
        return ()
    source = reader.source
    return tuple(
        ResourceHistory(
            node=reader.text(node_xml, "name"),
            resource=reader.text(rsc, "id"),
            fail_count=_fail_count(rsc.get("fail-count"), source),
            migration_threshold=reader.int(rsc, "migration-threshold", None),
            last_failure=rsc.get("last-failure"),
            operations=tuple(
                OperationRecord(
                    call=reader.int(op, "call"), task=reader.text(op, "task"),
                    rc=reader.int(op, "rc"), rc_text=op.get("rc_text", ""),
                    interval_ms=_milliseconds(op.get("interval", "0ms"), source),
                    last_rc_change=op.get("last-rc-change"),
                    exec_ms=_optional_ms(op.get("exec-time"), source),
                    queue_ms=_optional_ms(op.get("queue-time"), source),
                )
                for op in rsc.findall("operation_history")
            ),
        )
        for node_xml in history_xml.findall("node")
        for rsc in node_xml.findall("resource_history")
    )


def _failures(failures_xml: ET.Element | None, reader: "_Attrs") -> tuple[Failure, ...]:
    if failures_xml is None:
        return ()
    failures = []
    for f in failures_xml.findall("failure"):
        op_key = f.get("op_key") or reader.text(f, "id")
        resource, task, interval = _split_op_key(op_key)
        failures.append(Failure(
            op_key=op_key,
            resource=resource,
            task=f.get("task") or task,
            interval_ms=reader.int(f, "interval", None) if f.get("interval") else interval,
            node=reader.text(f, "node"),
            exit_status=f.get("exitstatus", ""),
            exit_reason=f.get("exitreason", ""),
            exit_code=reader.int(f, "exitcode"),
            call=reader.int(f, "call"),
            status=f.get("status", ""),
            last_rc_change=f.get("last-rc-change"),
        ))
    return tuple(failures)


def _walk_resources(parent: ET.Element, reader: "_Attrs", resources: list[Resource],
                    groups: list[Group], clones: list[Clone], *,
                    group: str | None, clone: str | None) -> list[str]:
    """Flatten crm_mon's resource tree; returns the ids of parent's children."""
    children = []
    for element in parent:
        if element.tag == "resource":
            resources.append(Resource(
                id=reader.text(element, "id"),
                agent=reader.text(element, "resource_agent"),
                role=reader.text(element, "role"),
                active=reader.bool(element, "active"),
                failed=reader.bool(element, "failed"),
                managed=reader.bool(element, "managed"),
                orphaned=reader.bool(element, "orphaned"),
                blocked=reader.bool(element, "blocked", False),
                failure_ignored=reader.bool(element, "failure_ignored"),
                nodes=tuple(reader.text(n, "name") for n in element.findall("node")),
                target_role=element.get("target_role"),
                group=group, clone=clone,
                pending=element.get("pending"),
            ))
            children.append(element.get("id"))
        elif element.tag == "group":
            group_id = reader.text(element, "id")
            members = _walk_resources(element, reader, resources, groups, clones,
                                      group=group_id, clone=clone)
            groups.append(Group(id=group_id, managed=reader.bool(element, "managed"),
                                disabled=reader.bool(element, "disabled"),
                                members=tuple(members), clone=clone))
            children.append(group_id)
        elif element.tag == "clone":
            clone_id = reader.text(element, "id")
            instances = _walk_resources(element, reader, resources, groups, clones,
                                        group=None, clone=clone_id)
            clones.append(Clone(
                id=clone_id, promotable=reader.bool(element, "multi_state"),
                unique=reader.bool(element, "unique"), managed=reader.bool(element, "managed"),
                disabled=reader.bool(element, "disabled"), failed=reader.bool(element, "failed"),
                target_role=element.get("target_role"),
                children=tuple(dict.fromkeys(instances)),
            ))
            children.append(clone_id)
        elif element.tag == "bundle":
            # Bundles are outside the runbook; their replicas' primitives still count.
            for replica in element.findall("replica"):
                children.extend(_walk_resources(replica, reader, resources, groups, clones,
                                                 group=None, clone=reader.text(element, "id")))
    return children


def _fail_count(value: str | None, source: str) -> int:
    if value is None:
        return 0
    if value.upper() in ("INFINITY", "+INFINITY"):
        return PCMK_INFINITY
    try:
        return int(value)
    except ValueError:
        raise ParseError(f"fail-count {value!r} is not a number", where=source) from None


def _milliseconds(value: str, source: str) -> int:
    match = re.fullmatch(r"(\d+)(ms)?", value)
    if match is None:
        raise ParseError(f"interval {value!r} is not N or Nms", where=source)
    return int(match.group(1))


def _optional_ms(value: str | None, source: str) -> int | None:
    """A timing crm_mon may leave out or spell otherwise: evidence, never a reason to refuse the state."""
    match = re.fullmatch(r"(\d+)(ms)?", value or "")
    return int(match.group(1)) if match else None


def _split_op_key(op_key: str) -> tuple[str, str | None, int | None]:
    """'haproxy_monitor_60000' -> ('haproxy', 'monitor', 60000); resource ids may hold '_'."""
    match = re.fullmatch(r"(?P<rsc>.+)_(?P<task>[a-z_]+?)_(?P<interval>\d+)", op_key)
    if match is None:
        return op_key, None, None
    return match["rsc"], match["task"], int(match["interval"])


# --- fence history --------------------------------------------------------------

def read_fence_history(host: Any, target: str = "*", *,
                       timeout: float | None = None) -> list[FenceEvent]:
    """Every fence action the fencer remembers against target ('*': all nodes)."""
    timeout = BOUNDS.cli_query if timeout is None else timeout   # read when called: a calibration scales it
    command = f"timeout {timeout:g} " + FENCE_HISTORY_COMMAND % shlex.quote(target)
    result = host.run(command)
    return parse_fence_history(result.stdout, rc=result.rc, stderr=result.stderr,
                               source=f"{host_label(host)}: {command}")


def parse_fence_history(text: str, *, rc: int = 0, stderr: str = "",
                        source: str = "stonith_admin --history") -> list[FenceEvent]:
    """Parse fence_event elements from stonith_admin's or crm_mon's XML."""
    root = _result_root(text, rc=rc, stderr=stderr, source=source)
    reader = _Attrs(source)
    return [_fence_event(e, reader) for e in root.iter("fence_event")]


def _fence_event(element: ET.Element, reader: "_Attrs") -> FenceEvent:
    completed_text = element.get("completed")
    return FenceEvent(
        action=reader.text(element, "action"),
        target=reader.text(element, "target"),
        status=reader.text(element, "status"),
        client=element.get("client", ""),
        origin=element.get("origin", ""),
        delegate=element.get("delegate"),
        completed=parse_pacemaker_time(completed_text, reader.source) if completed_text else None,
        completed_text=completed_text,
        exit_reason=element.get("exit-reason"),
        extended_status=element.get("extended-status"),
    )


def parse_pacemaker_time(text: str, source: str = "pacemaker") -> datetime:
    """Pacemaker's crm_time_as_string with date, time and zone:
    '2025-11-26 11:41:07 +08:00' or '2025-11-26 03:41:07Z' (UTC)."""
    match = re.fullmatch(
        r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:Z| ([+-])(\d\d):(\d\d))?", text.strip())
    if match is None:
        raise ParseError(f"time {text!r} is not 'YYYY-MM-DD hh:mm:ss' with Z or +hh:mm",
                         where=source)
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    offset = timedelta(0)
    if match.group(7):
        offset = timedelta(hours=int(match.group(8)), minutes=int(match.group(9)))
        if match.group(7) == "-":
            offset = -offset
    return datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))


# --- crm_verify ------------------------------------------------------------------

@dataclass(frozen=True)
class CrmVerifyResult:
    """What `crm_verify -L -V` said about the configuration."""

    valid: bool
    exit_code: int
    message: str                  # e.g. "OK", "Invalid configuration"
    errors: tuple[str, ...]       # e.g. "Resource start-up disabled since no STONITH ..."
    warnings: tuple[str, ...]


# Pacemaker 2.1 logs configuration problems to stderr as "(function) \tlevel: text".
_LOG_LINE = re.compile(r"^\(\S+\)\s+(?P<level>error|warning):\s*(?P<text>.*)$")


def read_crm_verify(host: Any, *, cib_file: str | None = None,
                    timeout: float | None = None) -> CrmVerifyResult:
    """Run crm_verify on the live CIB (or a saved one) and report errors and warnings."""
    timeout = BOUNDS.cli_query if timeout is None else timeout   # read when called: a calibration scales it
    if cib_file:
        command = (f"timeout {timeout:g} crm_verify --xml-file {shlex.quote(cib_file)} "
                   f"-V --output-as=xml")
    else:
        command = f"timeout {timeout:g} {CRM_VERIFY_COMMAND}"
    result = host.run(command)
    return parse_crm_verify(result.stdout, result.stderr, rc=result.rc,
                            source=f"{host_label(host)}: {command}")


def parse_crm_verify(stdout: str, stderr: str = "", *, rc: int = 0,
                     source: str = "crm_verify") -> CrmVerifyResult:
    """Parse crm_verify's XML status plus the problems it logs to stderr.

    In pacemaker 2.1.5 the XML holds only the verdict (<status code message>);
    the problems themselves are log lines on stderr.  Later versions also put
    them in <status><errors>; both are read.
    """
    root = _parse_xml(stdout, source=source, rc=rc, stderr=stderr)
    status = root.find("status")
    if status is None:
        raise ParseError(f"crm_verify XML without <status>: {excerpt(stdout)}", where=source)
    reader = _Attrs(source)
    code = reader.int(status, "code")
    errors: list[str] = [e.text.strip() for e in status.iter("error") if e.text]
    warnings: list[str] = []
    for line in stderr.splitlines():
        logged = _LOG_LINE.match(line.strip())
        if logged:
            (errors if logged["level"] == "error" else warnings).append(logged["text"].strip())
    return CrmVerifyResult(valid=code == 0 and not errors, exit_code=code,
                        message=status.get("message", ""), errors=tuple(errors),
                        warnings=tuple(warnings))


# --- pcs ------------------------------------------------------------------------

@dataclass(frozen=True)
class PcsDialect:
    """How a pcs version spells the runbook's cluster setup commands.

    The runbook uses pcs 0.9 (`pcs cluster auth`, `pcs cluster setup --name`);
    pcs 0.10 and later use `pcs host auth` and `pcs cluster setup NAME NODE...`.
    Passwords are not part of these argv lists: callers add them out of logs.
    """

    name: str                     # "0.9" or "0.10+"
    version: tuple[int, ...]

    def argv(self, *words: str) -> list[str]:
        """pcs with the harness's time limit on each request to a node's pcsd (--request-timeout; pcs's own
        default is 60 s): BOUNDS.pcs_request, calibrated, read when called.  Only for commands that take
        it: pcs 0.10+ refuses the option where a command has no use for it."""
        return ["pcs", f"--request-timeout={max(1, round(BOUNDS.pcs_request))}", *words]

    def auth_argv(self, nodes: Iterable[str], user: str = "hacluster") -> list[str]:
        verb = ["cluster", "auth"] if self.name == "0.9" else ["host", "auth"]
        return self.argv(*verb, *nodes, "-u", user)

    def setup_argv(self, cluster_name: str, nodes: Iterable[str]) -> list[str]:
        if self.name == "0.9":
            return self.argv("cluster", "setup", "--name", cluster_name, *nodes)
        # pcs 0.10+ `cluster setup` refuses --request-timeout ("not supported in this command": its
        # ensure_only_supported), although a slow node's timeout tells the user to set it: its requests
        # keep pcs's own 60 s, the one time limit here that is not the harness's (see the stage's record).
        return ["pcs", "cluster", "setup", cluster_name, *nodes]


def parse_pcs_version(text: str) -> tuple[int, ...]:
    """`pcs --version` output ('0.11.5', '0.9.169') -> (0, 11, 5)."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    match = re.match(r"(\d+(?:\.\d+)+)", first)
    if match is None:
        raise ParseError(f"not a pcs version: {excerpt(text)}", where="pcs --version")
    return tuple(int(part) for part in match.group(1).split("."))


def pcs_dialect(version: tuple[int, ...]) -> PcsDialect:
    """'0.9' for pcs before 0.10, else '0.10+'."""
    if len(version) < 2:
        raise ValueError(f"pcs version needs major and minor parts, got {version!r}")
    return PcsDialect(name="0.9" if version[:2] < (0, 10) else "0.10+", version=tuple(version))


def read_pcs_version(host: Any) -> tuple[int, ...]:
    return parse_pcs_version(run_command(host, "pcs --version").stdout)


def read_pcs_dialect(host: Any) -> PcsDialect:
    return pcs_dialect(read_pcs_version(host))


# --- fence_xvm -o list -------------------------------------------------------------

def fence_list_command() -> str:
    """`fence_xvm -o list`, waiting BOUNDS.fence_list for the device's answer (read when called: calibrated)."""
    return f"fence_xvm -o list -t {max(1, round(BOUNDS.fence_list))}"


def parse_fence_list(text: str) -> dict[str, str]:
    """`fence_xvm -o list`: one `DOMAIN UUID STATE` line per domain -> {domain: state}."""
    return {line.split()[0]: line.split()[-1] for line in text.splitlines() if len(line.split()) >= 3}


# --- the CIB's configuration section -------------------------------------------

CIB_CONFIGURATION_COMMAND = "cibadmin --query --scope configuration"


@dataclass(frozen=True)
class CibOperation:
    name: str
    interval: str          # as written in the CIB ("30s")
    interval_ms: int


@dataclass(frozen=True)
class CibPrimitive:
    id: str
    agent: str             # class[:provider]:type, e.g. ocf:heartbeat:IPaddr2, stonith:fence_xvm
    params: dict[str, str]
    operations: tuple[CibOperation, ...]
    path: str              # where it is in the CIB, for a person: /cib/configuration/resources/group[@id=..]/...

    def interval_ms(self, operation: str = "monitor") -> int | None:
        return next((op.interval_ms for op in self.operations if op.name == operation), None)


@dataclass(frozen=True)
class CibResourceSet:
    """A <resource_set> of a set constraint (pcs constraint colocation|order set ...)."""
    id: str
    members: tuple[str, ...]
    sequential: bool              # members related one after another (pacemaker's default: true)
    role: str | None = None
    action: str | None = None


def score_value(text: str | None) -> int | None:
    """A pacemaker score as a number (INFINITY = PCMK_INFINITY, clamped); None when it is no number."""
    if text is None:
        return None
    word = text.strip().upper()
    if word in ("INFINITY", "+INFINITY"):
        return PCMK_INFINITY
    if word == "-INFINITY":
        return -PCMK_INFINITY
    try:
        return max(-PCMK_INFINITY, min(PCMK_INFINITY, int(word)))
    except ValueError:
        return None


def _chain(sets: tuple[CibResourceSet, ...]) -> list[tuple[str, str]]:
    """(earlier, later) pairs of a set constraint: within each sequential set one after another, and every
    member of a set with every member of the next set."""
    pairs = []
    for resource_set in sets:
        if resource_set.sequential:
            pairs += list(zip(resource_set.members, resource_set.members[1:]))
    for earlier, later in zip(sets, sets[1:]):
        pairs += [(a, b) for a in earlier.members for b in later.members]
    return pairs


@dataclass(frozen=True)
class CibColocation:
    """<rsc_colocation>: rsc placed with with-rsc (or resource sets); score as written."""
    id: str
    rsc: str | None
    with_rsc: str | None
    score: str | None             # None: a score-attribute or none at all
    path: str
    rsc_role: str | None = None
    with_rsc_role: str | None = None
    sets: tuple[CibResourceSet, ...] = ()

    def pairs(self) -> list[tuple[str, str]]:
        """(resource, the resource it is placed with); for sets, each later member with the earlier one."""
        if self.sets:
            return [(later, earlier) for earlier, later in _chain(self.sets)]
        return [(self.rsc, self.with_rsc)] if self.rsc and self.with_rsc else []

    def describe(self) -> str:
        if self.sets:
            return (f"colocation set {' ; '.join(' '.join(s.members) for s in self.sets)} "
                    f"score {self.score} ({self.id})")
        roles = "".join(f" ({role})" for role in (self.rsc_role, self.with_rsc_role) if role)
        return f"colocation {self.rsc} with {self.with_rsc} score {self.score}{roles} ({self.id})"


@dataclass(frozen=True)
class CibOrder:
    """<rsc_order>: first then `then`; kind and symmetrical as pacemaker reads them (defaults filled in)."""
    id: str
    first: str | None
    then: str | None
    first_action: str
    then_action: str
    kind: str                     # Mandatory | Optional | Serialize
    symmetrical: bool             # stopped in the reverse order
    path: str
    sets: tuple[CibResourceSet, ...] = ()

    def pairs(self) -> list[tuple[str, str]]:
        if self.sets:
            return _chain(self.sets)
        return [(self.first, self.then)] if self.first and self.then else []

    def describe(self) -> str:
        symmetry = "symmetrical" if self.symmetrical else "not symmetrical"
        if self.sets:
            return f"order set {' ; '.join(' '.join(s.members) for s in self.sets)} {self.kind}, {symmetry} ({self.id})"
        return (f"order {self.first_action} {self.first} then {self.then_action} {self.then} "
                f"{self.kind}, {symmetry} ({self.id})")


@dataclass(frozen=True)
class CibLocation:
    """<rsc_location>: a resource (or a pattern, or sets) preferred on or banned from a node, or by rules."""
    id: str
    resources: tuple[str, ...]    # the resource, or every member of its sets
    node: str | None
    score: str | None
    path: str
    rsc_pattern: str | None = None
    rules: int = 0                # <rule> children (placement by node attributes)

    def describe(self) -> str:
        what = self.rsc_pattern and f"resources matching {self.rsc_pattern!r}" or " ".join(self.resources)
        where = f"on {self.node}" if self.node else f"by {self.rules} rule(s)" if self.rules else "(no node)"
        return f"location {what} {where} score {self.score} ({self.id})"


@dataclass(frozen=True)
class CibConfiguration:
    properties: dict[str, str]                 # cluster options (crm_config)
    primitives: dict[str, CibPrimitive]        # every primitive, grouped or not, stonith included
    groups: dict[str, list[str]]               # group id -> member ids, in order
    colocations: tuple[CibColocation, ...] = ()
    orders: tuple[CibOrder, ...] = ()
    locations: tuple[CibLocation, ...] = ()


def _query_cib(host: Any, query: str, timeout: float | None) -> tuple[str, str]:
    """(cibadmin's XML, where it came from) for one query, bounded by timeout (default BOUNDS.cli_query)."""
    timeout = BOUNDS.cli_query if timeout is None else timeout
    command = f"timeout {timeout:g} {query}"
    result = host.run(command)
    source = f"{host_label(host)}: {command}"
    if result.rc != 0:
        raise CommandFailed(f"exit {result.rc}: {excerpt(result.stderr)}", where=source,
                            fix="are corosync and pacemaker running on that host?")
    return result.stdout, source


def read_cib_configuration(host: Any, *, timeout: float | None = None) -> CibConfiguration:
    """The live CIB's configuration section (cibadmin's XML), bounded by timeout (default BOUNDS.cli_query)."""
    text, source = _query_cib(host, CIB_CONFIGURATION_COMMAND, timeout)
    return parse_cib_configuration(text, source=source)


CIB_STATUS_COMMAND = "cibadmin --query --scope status"


def read_transient_attributes(host: Any, *, timeout: float | None = None) -> dict[str, dict[str, str]]:
    """Every node's transient attributes (those that last until the node reboots) in the live CIB's status
    section, node -> {name: value}; the internal ones (#feature-set, ...) included, which crm_mon hides."""
    text, source = _query_cib(host, CIB_STATUS_COMMAND, timeout)
    return parse_transient_attributes(text, source=source)


def parse_transient_attributes(text: str, *, source: str = "cibadmin") -> dict[str, dict[str, str]]:
    root = _parse_xml(text, source=source, rc=0, stderr="")
    return {state.get("uname"): {nvpair.get("name"): nvpair.get("value")
                                 for nvpair in state.findall("./transient_attributes/instance_attributes/nvpair")}
            for state in root.iter("node_state") if state.get("uname")}


def parse_cib_configuration(text: str, *, source: str = "cibadmin") -> CibConfiguration:
    root = _parse_xml(text, source=source, rc=0, stderr="")
    if root.tag != "configuration":
        root = root.find(".//configuration") or root
    properties = {nv.get("name"): nv.get("value", "") for block in root.iter("cluster_property_set")
                  for nv in block.iter("nvpair")}
    primitives: dict[str, CibPrimitive] = {}
    groups: dict[str, list[str]] = {}
    resources = root.find("resources")
    for element, path in _resource_elements(resources, "/cib/configuration/resources"):
        if element.tag == "group":
            groups[element.get("id")] = [p.get("id") for p in element.findall("primitive")]
            continue
        agent = ":".join(x for x in (element.get("class"), element.get("provider"), element.get("type")) if x)
        params = {nv.get("name"): nv.get("value", "") for block in element.findall("instance_attributes")
                  for nv in block.findall("nvpair")}
        ops = tuple(CibOperation(op.get("name"), op.get("interval", "0"),
                                 round(_interval_seconds(op.get("interval", "0"), source) * 1000))
                    for op in element.iter("op"))
        primitives[element.get("id")] = CibPrimitive(element.get("id"), agent, params, ops, path)
    colocations, orders, locations = _constraints(root.find("constraints"))
    return CibConfiguration(properties=properties, primitives=primitives, groups=groups,
                            colocations=colocations, orders=orders, locations=locations)


CONSTRAINTS_PATH = "/cib/configuration/constraints"


def _resource_sets(element: ET.Element) -> tuple[CibResourceSet, ...]:
    return tuple(CibResourceSet(id=s.get("id", ""), members=tuple(r.get("id") for r in s.findall("resource_ref")),
                                sequential=s.get("sequential", "true").lower() in ("true", "1", "yes", "on"),
                                role=s.get("role"), action=s.get("action"))
                 for s in element.findall("resource_set"))


def _truth(text: str | None, default: bool) -> bool:
    return default if text is None else text.strip().lower() in ("true", "1", "yes", "on", "y")


def _order_kind(element: ET.Element) -> str:
    """Pacemaker's reading: `kind` when set, else the old `score` (0: Optional, else Mandatory)."""
    if element.get("kind"):
        return element.get("kind").capitalize()
    score = score_value(element.get("score"))
    return "Optional" if score == 0 else "Mandatory"


def _constraints(constraints: ET.Element | None):
    """The <constraints> section: colocations, orders and locations (rsc_ticket is not read)."""
    colocations, orders, locations = [], [], []
    for element in constraints if constraints is not None else ():
        cid = element.get("id", "")
        path = f"{CONSTRAINTS_PATH}/{element.tag}[@id='{cid}']"
        sets = _resource_sets(element)
        if element.tag == "rsc_colocation":
            colocations.append(CibColocation(id=cid, rsc=element.get("rsc"), with_rsc=element.get("with-rsc"),
                                             score=element.get("score"), path=path, rsc_role=element.get("rsc-role"),
                                             with_rsc_role=element.get("with-rsc-role"), sets=sets))
        elif element.tag == "rsc_order":
            kind = _order_kind(element)
            orders.append(CibOrder(id=cid, first=element.get("first"), then=element.get("then"),
                                   first_action=element.get("first-action", "start"),
                                   then_action=element.get("then-action", "start"), kind=kind,
                                   symmetrical=_truth(element.get("symmetrical"), kind != "Serialize"),
                                   path=path, sets=sets))
        elif element.tag == "rsc_location":
            members = (element.get("rsc"),) if element.get("rsc") else tuple(m for s in sets for m in s.members)
            locations.append(CibLocation(id=cid, resources=members, node=element.get("node"),
                                         score=element.get("score"), path=path,
                                         rsc_pattern=element.get("rsc-pattern"),
                                         rules=len(element.findall("rule"))))
    return tuple(colocations), tuple(orders), tuple(locations)


_PCMK_UNITS = {"ms": 0.001, "msec": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}


def pcmk_seconds(text: str) -> float:
    """A pacemaker interval ("30s", "1min", "60", "500ms") in seconds; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", str(text))
    if not match or match.group(2) not in ("", *_PCMK_UNITS):
        raise ValueError(f"not a pacemaker interval: {text!r}")
    return float(match.group(1)) * _PCMK_UNITS.get(match.group(2), 1)


def _interval_seconds(text: str, source: str) -> float:
    try:
        return pcmk_seconds(text)
    except ValueError as exc:
        raise ParseError(str(exc), where=source) from None


def _resource_elements(parent: ET.Element | None, path: str):
    if parent is None:
        return
    for element in parent:
        if element.tag in ("primitive", "group"):
            here = f"{path}/{element.tag}[@id='{element.get('id')}']"
            yield element, here
            if element.tag == "group":
                yield from ((p, f"{here}/primitive[@id='{p.get('id')}']") for p in element.findall("primitive"))
        elif element.tag in ("clone", "master", "bundle"):
            yield from _resource_elements(element, f"{path}/{element.tag}[@id='{element.get('id')}']")


# --- XML helpers ----------------------------------------------------------------

def _parse_xml(text: str, *, source: str, rc: int, stderr: str) -> ET.Element:
    if not text.strip():
        raise CommandFailed(f"no XML output (exit {rc}); stderr: {excerpt(stderr)}",
                            where=source,
                            fix="exit 127 means the pacemaker tools are not installed"
                            if rc == 127 else None)
    try:
        return ET.fromstring(text)
    except ET.ParseError as error:
        raise ParseError(f"output is not well-formed XML ({error}): {excerpt(text)}",
                         where=source) from None


def _result_root(text: str, *, rc: int, stderr: str, source: str) -> ET.Element:
    """The <pacemaker-result> root; raises when the tool reported a failure."""
    root = _parse_xml(text, source=source, rc=rc, stderr=stderr)
    if root.tag != "pacemaker-result":
        raise ParseError(f"root element is <{root.tag}>, not <pacemaker-result>",
                         where=source, fix="use --output-as=xml, not the legacy --as-xml")
    status = root.find("status")
    code = status.get("code") if status is not None else None
    if code not in (None, "0"):
        messages = [e.text.strip() for e in status.iter("error") if e.text]
        error_type = ClusterUnavailable if code == "102" else CommandFailed
        raise error_type(
            f"exit {code} ({status.get('message')}): {'; '.join(messages) or excerpt(stderr)}",
            where=source,
            fix="are corosync and pacemaker running on that host?" if code == "102" else None)
    return root


class _Attrs:
    """Typed attribute access that names the element when a value is bad."""

    _MISSING = object()

    def __init__(self, source: str):
        self.source = source

    def text(self, element: ET.Element, name: str) -> str:
        value = element.get(name)
        if value is None:
            raise ParseError(f"<{element.tag}> lacks attribute {name!r}: "
                             f"{excerpt(ET.tostring(element, encoding='unicode'))}",
                             where=self.source)
        return value

    def bool(self, element: ET.Element, name: str, default: Any = _MISSING) -> Any:
        value = element.get(name)
        if value is None and default is not self._MISSING:
            return default
        value = self.text(element, name).lower()
        if value in ("true", "1"):
            return True
        if value in ("false", "0"):
            return False
        raise ParseError(f"<{element.tag} {name}={value!r}> is not a boolean", where=self.source)

    def int(self, element: ET.Element, name: str, default: Any = _MISSING) -> Any:
        value = element.get(name)
        if value is None and default is not self._MISSING:
            return default
        value = self.text(element, name)
        try:
            return int(value)
        except ValueError:
            if value.upper().lstrip("+") == "INFINITY":
                return PCMK_INFINITY
            raise ParseError(f"<{element.tag} {name}={value!r}> is not a number",
                             where=self.source) from None

