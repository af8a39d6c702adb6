"""Compare a deployment with a documented stage, by meaning; nothing here writes to a host.

A deployment built by hand from the runbook has its own comments, ordering
and names.  So configuration is compared by what it means: haproxy.cfg as
sections and directives, rsyslog as the routes and exclusions of its
selectors, limits.conf as effective limits, the cluster as the CIB's
configuration against the stage's `cluster:` block.  Files of no such kind
(web content, the harness's own Apache header snippet) are compared by bytes.
Each difference is a row: what, expected, found, where (host:file:line or a
CIB path), and key: the key path of the setting it is about
(haconform/stages/settings.py), which a waiver names.
"""

from __future__ import annotations

import hashlib
import shlex
from typing import Mapping

from ..errors import HaconformError
from ..topology import Topology
from .cluster import ClusterDifference, ClusterStage
from .model import ClusterSpec, Stage
from .semantic import compare_haproxy, compare_limits, compare_rsyslog
from .settings import cluster_key, file_key

HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
RSYSLOG_FILES = ("/etc/rsyslog.conf", "/etc/rsyslog.d/")
LIMITS_FILES = ("/etc/security/limits.conf", "/etc/security/limits.d/")


def _row(what: str, expected: str, found: str, where: str, key: str) -> dict:
    """key: the key path of what differs (haconform/stages/settings.py), what a waiver names."""
    return {"what": what, "expected": expected, "found": found, "where": where, "key": key}


def _on_host(host: str, differences) -> list[dict]:
    """Rows of a comparison, each naming the host (something missing points at the documented line)."""
    rows = []
    for difference in differences:
        row = difference.row()
        if not row["where"].startswith(f"{host}:"):
            row["where"] = f"{host} (documented at {row['where']})"
        rows.append(row)
    return rows


def _read(machine, paths: str) -> str | None:
    """Files' text concatenated (a shell glob allowed); None when the first is missing."""
    first = paths.split()[0]
    if machine.execute(f"test -f {shlex.quote(first)}").rc != 0:
        return None
    return machine.execute(f"cat {paths} 2>/dev/null").stdout


def _is_under(dest: str, family: tuple[str, ...]) -> bool:
    return dest == family[0] or (dest.startswith(family[1]) and dest.endswith(".conf"))


def file_drift(stage: Stage, machines: dict, topology: Topology, *, cluster_owns: tuple[str, ...] = (),
               names: Mapping[str, str] | None = None) -> list[dict]:
    """The stage's files, directories and services against each host's.

    cluster_owns: services the cluster starts on one node only (not checked per host).
    names: the runbook's name -> the deployment's (backends, servers, proxies in haproxy.cfg)."""
    to_runbook = {theirs: ours for ours, theirs in (names or {}).items()}
    rows: list[dict] = []
    for host, files in sorted(stage.plan(topology).items()):
        machine = machines[host]
        rsyslog = sorted((f for f in files if _is_under(f.dest, RSYSLOG_FILES)), key=lambda f: f.dest != RSYSLOG_FILES[0])
        limits = sorted((f for f in files if _is_under(f.dest, LIMITS_FILES)), key=lambda f: f.dest != LIMITS_FILES[0])
        for f in files:
            if f in rsyslog or f in limits:
                continue
            if f.dest == HAPROXY_CFG:
                found = _read(machine, HAPROXY_CFG)
                if found is None:
                    rows.append(_row(f"{HAPROXY_CFG}", "present", "missing", f"{host}:{f.dest}", file_key(HAPROXY_CFG)))
                    continue
                rows += _on_host(host, compare_haproxy(f.source.read_text(), found, expected_source=str(f.source),
                                                       found_source=f"{host}:{f.dest}", names=to_runbook))
                continue
            have = machine.execute(f"sha256sum {shlex.quote(f.dest)} 2>/dev/null").stdout.split()
            want = hashlib.sha256(f.source.read_bytes()).hexdigest()
            if not have:
                rows.append(_row(f.dest, f"as {f.source}", "missing", f"{host}:{f.dest}", file_key(f.dest)))
            elif have[0] != want:
                rows.append(_row(f.dest, f"the bytes of {f.source} (no comparison by meaning for this file)",
                                 f"sha256 {have[0][:12]}…", f"{host}:{f.dest}", file_key(f.dest)))
        for group, family, compare in ((rsyslog, RSYSLOG_FILES, compare_rsyslog), (limits, LIMITS_FILES, compare_limits)):
            if not group:
                continue
            found = _read(machine, f"{family[0]} {family[1]}*.conf")
            where = f"{host}:{family[0]} (+ {family[1]}*.conf)"
            if found is None:
                rows.append(_row(family[0], "present", "missing", where, file_key(family[0])))
                continue
            expected = "\n".join(f.source.read_text() for f in group)
            rows += _on_host(host, compare(expected, found, expected_source=", ".join(str(f.source) for f in group),
                                           found_source=where))
    for path, mode in stage.modes.items():
        if not mode.get("directory"):
            continue
        want = f"{mode.get('owner', 'root')}:{mode.get('group', 'root')} {int(str(mode.get('mode', '0755')), 8):o}"
        hosts = stage.hosts_for(mode["selector"], topology) if mode.get("selector") else list(stage.plan(topology))
        for host in hosts:
            have = machines[host].execute(f"stat -c '%U:%G %a' {shlex.quote(path)} 2>/dev/null").stdout.strip()
            if have != want:
                rows.append(_row(f"directory {path}/", want, have or "missing", f"{host}:{path}",
                                 f"directory[{path}]"))
    for selector, rules in stage.services.items():
        for host in stage.hosts_for(selector, topology):
            for rule in rules:
                if rule.name not in cluster_owns and not machines[host].host.service(rule.name).is_running:
                    rows.append(_row(f"service {rule.name}", "running", "not running", host,
                                     f"service[{rule.name}]"))
    return rows


def cluster_drift(cluster) -> list[dict]:
    """A cluster stage: formed, its configuration as the spec says (the members tied by a group or by
    constraints meaning the same), the members started together on one node."""
    first = cluster.first
    try:
        state = cluster.state()
    except HaconformError as exc:
        return [_row("cluster", "running (crm_mon answers)", str(exc), first.name, cluster_key("state"))]
    rows = []
    wanted = set(cluster.spec.nodes)
    if not state.quorum or not state.dc:
        rows.append(_row("quorum and DC", "yes", f"quorum={state.quorum}, dc={state.dc}", "crm_mon",
                         cluster_key("state", "quorum")))
    if not wanted <= set(state.online_nodes):
        rows.append(_row("nodes online", " ".join(sorted(wanted)), " ".join(state.online_nodes), "crm_mon",
                         cluster_key("state", "online")))
    for node in state.nodes:
        if node.standby or node.maintenance:
            rows.append(_row(f"node {node.name}", "online", "standby" if node.standby else "maintenance", "crm_mon",
                             cluster_key("state", f"node[{node.name}]")))
    try:
        rows += [d.row() for d in cluster.differences()]
    except HaconformError as exc:
        rows.append(_row("CIB configuration", "readable", str(exc), first.name, cluster_key("state", "cib")))
    members = cluster.spec.together_ids()
    if members and cluster.group_node() is None:
        what = f"group {cluster.spec.group_id}" if cluster.spec.group_id else cluster.spec.together_label
        rows.append(_row(what, "started on exactly one node, together",
                         str({m: state.where_is(m) for m in members if m in state.resource_ids()}), "crm_mon",
                         cluster_key("state", "group started")))
    return rows


def documented_cluster_differences(deployment, spec: ClusterSpec) -> list[ClusterDifference]:
    """How the deployment's CIB differs from a documented cluster (the stage's, in the deployment's names), by
    meaning; what a configuration test of the cluster reports."""
    return ClusterStage(deployment, spec).differences()


def cluster_form(cluster) -> dict:
    """How the members that must run together are tied on the deployment: the documented form, the form
    found (a group, colocation + order constraints, locations) and whether they mean the same."""
    try:
        return cluster.together_form()
    except HaconformError as exc:
        return {"documented": cluster.spec.together_label, "found": f"unreadable: {exc}", "same meaning": None}


def fencing_drift(fencing) -> list[dict]:
    """A fencing stage: the key on every director (the same), the fence device answering for the host map."""
    rows = []
    key_path = fencing.key_path
    digests = {}
    for director in fencing.cluster_stage.nodes:
        have = director.execute(f"sha256sum {shlex.quote(key_path)} 2>/dev/null").stdout.split()
        digests[director.name] = have[0] if have else None
        if not have:
            rows.append(_row("fence key", "present", "missing", f"{director.name}:{key_path}", "fencing.key_file"))
    if len({d for d in digests.values() if d}) > 1:
        rows.append(_row("fence key", "the same on every director", "differs", key_path, "fencing.key_file"))
    if not fencing.target.fence_device_running():
        rows.append(_row("fence device", f"answers for {sorted(fencing.wanted_domains())}",
                         "`fence_xvm -o list` on a director does not list them", "fence_xvm",
                         "fencing.device"))
    return rows
