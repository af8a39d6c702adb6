"""Stage 5 — split brain and fencing (脑裂现象与Fence机制)."""

import datetime as dt

import pytest

from haconform.conformance import conformance
from haconform.faults import (REJOIN_NOISE, FaultRun, audit, cluster_views, cluster_whole, group_location,
                              vip_holders)
from haconform.readers.cluster import read_cib_configuration, read_cluster_state, read_crm_verify, read_fence_history
from haconform.stages.cluster import ClusterStage, fence_list
from haconform.timeouts import BOUNDS
from haconform.wait import wait_until

SECTION = "脑裂现象与Fence机制"


def group_node(machine, deployment):
    """Where `machine`'s own pacemaker says the whole group runs (None: nowhere/split)."""
    return group_location(machine, deployment.cluster_spec.group_id)


def settled_active(deployment):
    for director in deployment.directors:
        node = group_node(director, deployment)
        if node:
            return deployment.machine(node)
    return None


def successful_fences(survivor, target_name, after: dt.datetime):
    try:
        events = read_fence_history(survivor.host)
    except Exception:
        return []
    return [e for e in events if e.target == target_name and e.status == "success"
            and e.completed is not None and e.completed.replace(tzinfo=None) >= after]


@pytest.fixture
def fenced_cluster(deployment, fencing_settings, request, target):
    if not target.can_power:
        pytest.skip(f"target {target.kind} cannot crash or cut a host")

    def restore():
        for director in deployment.directors:
            if target.power_state(director.name) != "on":
                director.power_on()
            elif target.nic_state(director.name) == "down":
                director.unblock()
        first = deployment.directors[0]
        first.execute("pcs property set stonith-enabled=true")
        first.execute("pcs resource cleanup")
    request.addfinalizer(restore)
    return wait_until(f"{deployment.cluster_spec.group_id} settled on one director", lambda: settled_active(deployment),
                      timeout=BOUNDS.cluster_settle)


def now_utc_naive():
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@conformance("HAC-FENCE-001", stage="stage5", section=SECTION,
             must="From each director `fence_xvm -o list` MUST show both directors' domains, the stonith "
                  "resource MUST be started and `crm_verify -LV` MUST be clean")
def test_fence_device_is_usable(deployment, fencing_settings, cluster_spec, evidence):
    device = cluster_spec.resource("fence")
    wanted = set(cluster_spec.host_map("fence").values())
    for director in deployment.directors:
        listed = fence_list(director)
        evidence.data(f"fence_xvm -o list on {director.name}", listed)
        assert wanted <= set(listed), f"{director.name} sees {listed}, wanted {wanted}"
        assert all(listed[name] == "on" for name in wanted), listed
    state = read_cluster_state(deployment.directors[0].host)
    assert state.where_is(device.id), f"{device.id} not started: {state.resources}"
    verify = read_crm_verify(deployment.directors[0].host)
    evidence.data("crm_verify -LV", {"valid": verify.valid, "errors": list(verify.errors)})
    assert verify.valid and not verify.errors, verify


@conformance("HAC-FENCE-005", stage="stage5", section=SECTION,
             must="The stonith device MUST be configured as documented (fence_xvm, "
                  "pcmk_host_map=\"server1:Node1;server4:Node4\", monitor 30s) and stonith-enabled MUST be true")
def test_stonith_configured_as_documented(deployment, fencing_settings, cluster_spec, evidence):
    cib = read_cib_configuration(deployment.directors[0].host)
    documented = {role: {"id": d.id, "agent": d.agent, "params": dict(d.params),
                         "operations": {op.name: op.interval for op in d.operations}}
                  for role, d in cluster_spec.stonith.items()}
    evidence.data("documented stonith devices", documented)
    evidence.data("the deployment's (CIB)", {
        "stonith-enabled": cib.properties.get("stonith-enabled"),
        "devices": {p.id: {"agent": p.agent, "params": p.params,
                           "operations": {op.name: op.interval for op in p.operations}}
                    for p in cib.primitives.values() if p.agent.startswith("stonith:")}})
    differences = [d for d in ClusterStage(deployment, cluster_spec).differences()
                   if d.what.startswith(("stonith device", "property stonith-enabled"))]
    evidence.table("differences (documented vs the deployment's)", [d.row() for d in differences])
    assert not differences, "fencing differs from the documented configuration:\n  " + "\n  ".join(
        f"{d.what}: documented {d.expected}, found {d.found} ({d.where})" for d in differences)


@conformance("HAC-FENCE-002", stage="stage5", section=SECTION, destructive=True,
             must="When the active director crashes the survivor MUST fence it, run the group and serve the VIP; "
                  "the fenced director MUST boot again and rejoin")
def test_crashed_director_is_fenced(deployment, fenced_cluster, evidence, target):
    victim = fenced_cluster
    survivor = next(d for d in deployment.directors if d.name != victim.name)
    boot_before = victim.boot_id
    with FaultRun(deployment, evidence, f"crash of {victim.name}") as run:
        crashed_at = now_utc_naive()
        run.mark("crash")
        victim.crash()                     # on a VM: echo c > /proc/sysrq-trigger
        events = wait_until(f"{survivor.name} fenced {victim.name} (fence history: success)",
                            lambda: successful_fences(survivor, victim.name, crashed_at),
                            timeout=BOUNDS.fence_complete, observe=lambda: read_fence_history(survivor.host))
        run.mark("fence completed")
        wait_until(f"{deployment.cluster_spec.group_id} runs on {survivor.name}", lambda: group_node(survivor, deployment) == survivor.name,
                   timeout=BOUNDS.resource_move, observe=lambda: group_node(survivor, deployment))
        run.prober.wait_for("requests through the VIP succeed again", lambda s: s and s[-1].ok,
                            timeout=BOUNDS.resource_move)
        run.mark("VIP served")
        wait_until(f"{victim.name} booted again", lambda: target.booted(victim.name),
                   timeout=BOUNDS.node_rejoin)
        wait_until(f"{victim.name} rejoined: every director sees quorum, a DC and both nodes", lambda: cluster_whole(deployment),
                   timeout=BOUNDS.node_rejoin, observe=lambda: cluster_views(deployment))
        run.mark("rejoined")
    event = events[0]
    figures = {"crash -> fence completed (s)": round(run.time_of("fence completed") - run.time_of("crash"), 2),
               "crash -> VIP served (s)": round(run.time_of("VIP served") - run.time_of("crash"), 2),
               "crash -> fenced node back online (s)": round(run.time_of("rejoined") - run.time_of("crash"), 2),
               "outage seen by the client (s)": run.outage_s}
    evidence.data("figures", figures)
    evidence.data("fence event", event.__dict__)
    evidence.data("fence device's request log", target.fence_requests()[-5:])
    assert event.action == "reboot", event
    assert survivor.name in (event.origin, event.delegate), event
    assert victim.boot_id != boot_before
    assert run.vip_watch.max_holders() <= 1, run.vip_watch.double_ownership()[:5]
    problems = audit(deployment, run=run, allowed_log=REJOIN_NOISE)
    assert not problems, problems


@conformance("HAC-FENCE-003", stage="stage5", section=SECTION, destructive=True,
             must="When the active director's NIC goes down exactly one director MUST be fenced, the other MUST "
                  "run the group, and two directors MUST never hold the VIP at once")
def test_split_brain_fences_exactly_one(deployment, fenced_cluster, evidence, target):
    cut = fenced_cluster
    survivor = next(d for d in deployment.directors if d.name != cut.name)
    with FaultRun(deployment, evidence, f"NIC of {cut.name} down") as run:
        cut_at = now_utc_naive()
        run.mark("NIC down")
        cut.block()
        wait_until(f"{survivor.name} fenced {cut.name}", lambda: successful_fences(survivor, cut.name, cut_at),
                   timeout=BOUNDS.fence_complete, observe=lambda: read_fence_history(survivor.host))
        run.mark("fence completed")
        wait_until(f"{deployment.cluster_spec.group_id} runs on {survivor.name}", lambda: group_node(survivor, deployment) == survivor.name,
                   timeout=BOUNDS.resource_move)
        run.prober.wait_for("requests through the VIP succeed again", lambda s: s and s[-1].ok,
                            timeout=BOUNDS.resource_move)
        run.mark("VIP served")
        wait_until(f"{cut.name} rejoined: every director sees quorum, a DC and both nodes", lambda: cluster_whole(deployment),
                   timeout=BOUNDS.node_rejoin, observe=lambda: cluster_views(deployment))
        run.mark("rejoined")
    fenced = {d.name for d in deployment.directors if successful_fences(survivor, d.name, cut_at)}
    evidence.data("directors fenced", sorted(fenced))
    evidence.data("NIC down -> VIP served (s)", round(run.time_of("VIP served") - run.time_of("NIC down"), 2))
    evidence.data("outage (s)", run.outage_s)
    assert fenced == {cut.name}, f"fenced: {fenced}"
    assert run.vip_watch.max_holders() <= 1, run.vip_watch.double_ownership()[:5]
    problems = audit(deployment, run=run, allowed_log=REJOIN_NOISE)
    assert not problems, problems


@conformance("HAC-FENCE-004", stage="stage5", section=SECTION, destructive=True,
             must="Without fencing the same NIC cut MUST leave both directors running the group (the runbook's "
                  "reason for fencing), and the cluster MUST be whole again once the NIC returns")
def test_without_fencing_split_brain_runs_the_group_twice(deployment, fenced_cluster, evidence):
    cut = fenced_cluster
    first = deployment.directors[0]
    first.succeed("pcs property set stonith-enabled=false")
    with FaultRun(deployment, evidence, f"NIC of {cut.name} down, stonith disabled") as run:
        run.mark("NIC down")
        cut.block()
        both = wait_until("each director's own pacemaker runs the group locally",
                          lambda: all(group_node(d, deployment) == d.name for d in deployment.directors),
                          timeout=BOUNDS.resource_move,
                          observe=lambda: {d.name: group_node(d, deployment) for d in deployment.directors})
        run.mark("group running twice")
        holders = vip_holders(deployment)
        cut.unblock()
        run.mark("NIC up")
        wait_until(f"{deployment.cluster_spec.group_id} on exactly one director again (seen by both)",
                   lambda: len({group_node(d, deployment) for d in deployment.directors} - {None}) == 1
                   and all(group_node(d, deployment) for d in deployment.directors), timeout=BOUNDS.cluster_settle)
        first.succeed("pcs property set stonith-enabled=true")
        first.succeed("pcs resource cleanup")
        wait_until("no failed actions after cleanup",
                   lambda: not audit(deployment), timeout=BOUNDS.cluster_settle, observe=lambda: audit(deployment))
        run.mark("whole again")
    evidence.data("VIP holders during the split", holders)
    evidence.text("why the runbook fences", "With stonith-enabled=false both halves of the split believed they "
                  f"owned {deployment.cluster_spec.group_id}: both held the VIP ({holders}).")
    assert both
    assert sorted(holders) == sorted(d.name for d in deployment.directors), holders
    assert run.vip_watch.max_holders() == 2
