"""Verify a stage instead of applying it: what differs, written nowhere.

On an existing deployment (--target ssh) the stage appliers would overwrite
the deployment's own files and cluster configuration.  In verify mode the
stage manager asks these functions instead.  Each returns a list of
differences ("drift"), empty when the deployment is in that stage; nothing
here writes to a host.

    drift = file_stage_drift(stage, deployment.machines, topology, cluster_owns=("haproxy",))
    drift = cluster_stage_drift(ClusterStage(deployment, password), with_fencing=False)
    drift = fencing_stage_drift(FencingStage(deployment, target, cluster))
"""

from __future__ import annotations

import hashlib
import shlex

from .apply import Stage, _hosts_of_selector, _sha256_on
from .errors import HaconformError
from .ha import GROUP, HAPROXY_RESOURCE, STONITH_RESOURCE, VIP_RESOURCE, cluster_property, primitive_ids
from .topology import Topology


def file_stage_drift(stage: Stage, machines: dict, topology: Topology, *,
                     cluster_owns: tuple[str, ...] = (), first_only: bool = False) -> list[str]:
    """Files whose content differs, directories with other owner/mode, services not running.

    cluster_owns: services the cluster starts on one node only (not checked per host).
    first_only: stop at the first file that differs (enough to tell the stage is not there).
    """
    drift: list[str] = []
    plan = stage.plan(topology)
    for host, files in sorted(plan.items()):
        machine = machines[host]
        for f in files:
            have = _sha256_on(machine, f.dest)
            if have is None:
                drift.append(f"{host}:{f.dest} missing (expected {f.source})")
            elif have != hashlib.sha256(f.source.read_bytes()).hexdigest():
                drift.append(f"{host}:{f.dest} differs from {f.source}")
            if drift and first_only:
                return drift
    for path, mode in stage.modes.items():
        if not mode.get("directory"):
            continue
        want = f"{mode.get('owner', 'root')}:{mode.get('group', 'root')} {int(str(mode.get('mode', '0755')), 8):o}"
        for host in _hosts_of_selector(stage, mode.get("selector"), topology, plan):
            have = machines[host].execute(f"stat -c '%U:%G %a' {shlex.quote(path)} 2>/dev/null").stdout.strip()
            if have != want:
                drift.append(f"{host}:{path}/ is {have or 'missing'}, expected {want}")
    for selector, rules in stage.services.items():
        for host in stage.hosts_for(selector, topology):
            for rule in rules:
                if rule.name in cluster_owns:
                    continue
                if not machines[host].host.service(rule.name).is_running:
                    drift.append(f"{host}: service {rule.name} not running")
    return drift


def cluster_stage_drift(cluster, *, with_fencing: bool) -> list[str]:
    """Stage 4 as the runbook leaves it: formed, the group VIP+haproxy started on one node.

    with_fencing: the deployment went on to stage 5, which turns stonith-enabled
    back to true; only without it is stonith-enabled=false expected.
    """
    first = cluster.first
    try:
        state = cluster.state()
    except HaconformError as exc:
        return [f"crm_mon on {first.name}: {exc}"]
    drift = []
    wanted = set(cluster.topology.cluster_nodes)
    if not state.quorum or not state.dc:
        drift.append(f"cluster without quorum or DC (quorum={state.quorum}, dc={state.dc})")
    if not wanted <= set(state.online_nodes):
        drift.append(f"nodes online {state.online_nodes}, expected {sorted(wanted)}")
    for node in state.nodes:
        if node.standby or node.maintenance:
            drift.append(f"node {node.name} in {'standby' if node.standby else 'maintenance'}")
    try:
        members = state.group_members(GROUP)
    except KeyError:
        members = None
    if members != [VIP_RESOURCE, HAPROXY_RESOURCE]:
        drift.append(f"group {GROUP} has {members}, expected [{VIP_RESOURCE}, {HAPROXY_RESOURCE}]")
    elif cluster.group_node() is None:
        drift.append(f"group {GROUP} not started on exactly one node: "
                     f"{ {m: state.where_is(m) for m in members} }")
    stonith = cluster_property(first, "stonith-enabled")
    if not with_fencing and stonith != "false":
        drift.append(f"stonith-enabled is {stonith}, stage 4 sets false")
    return drift


def fencing_stage_drift(fencing) -> list[str]:
    """Stage 5: the key on every director, the fence device listing them, the stonith resource on."""
    drift = []
    first = fencing.cluster.first
    key_path = fencing.key_path
    digests = {}
    for director in fencing.cluster.nodes:
        have = director.execute(f"sha256sum {shlex.quote(key_path)} 2>/dev/null").stdout.split()
        digests[director.name] = have[0] if have else None
        if not have:
            drift.append(f"{director.name}:{key_path} missing")
    if len({d for d in digests.values() if d}) > 1:
        drift.append(f"{key_path} differs between directors")
    if not fencing.target.fence_device_running():
        drift.append("fence device: `fence_xvm -o list` on a director does not list every cluster node")
    if STONITH_RESOURCE not in primitive_ids(first):
        drift.append(f"no stonith resource {STONITH_RESOURCE}")
    else:
        try:
            if not fencing.cluster.state().where_is(STONITH_RESOURCE):
                drift.append(f"{STONITH_RESOURCE} not started")
        except HaconformError as exc:
            drift.append(f"crm_mon: {exc}")
    stonith = cluster_property(first, "stonith-enabled")
    if stonith != "true":
        drift.append(f"stonith-enabled is {stonith}, stage 5 sets true")
    return drift
