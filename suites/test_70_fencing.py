"""Stage 5 — split brain and fencing (脑裂现象与Fence机制)."""

import datetime as dt

import pytest

from haconform.conformance import conformance
from haconform.differences import fail_on_differences
from haconform.faults import Crash, FaultRun, NicDown, PropertyChange, audit
from haconform.stages.drift import documented_cluster_differences
from haconform.timeouts import BOUNDS
from haconform.wait import wait_until

SECTION = "脑裂现象与Fence机制"


def successful_fences(cluster, survivor, target_name, after: dt.datetime):
    try:
        events = cluster.fence_history(survivor)
    except Exception:
        return []
    return [e for e in events if e.target == target_name and e.status == "success"
            and e.completed is not None and e.completed.replace(tzinfo=None) >= after]


@pytest.fixture
def victim(fencing_settings, cluster, target):
    """The director running the group, the one each experiment hits.  After the test the deployment is
    restored (fixtures/restore.py: power, NICs, stonith-enabled, failed actions)."""
    if not target.can_power:
        pytest.skip(f"target {target.kind} cannot crash or cut a host")
    return cluster.active_director()


def now_utc_naive():
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@conformance("HAC-FENCE-001", stage="stage5", section=SECTION,
             settings=("cluster.stonith.*", "fencing.*"),
             must="From each director `fence_xvm -o list` MUST show both directors' domains, the stonith "
                  "resource MUST be started and `crm_verify -LV` MUST be clean")
def test_fence_device_is_usable(deployment, fencing_settings, cluster_spec, cluster, evidence):
    device = cluster_spec.resource("fence")
    wanted = set(cluster_spec.host_map("fence").values())
    for director in deployment.directors:
        listed = cluster.fence_list(director)
        evidence.data(f"fence_xvm -o list on {director.name}", listed)
        assert wanted <= set(listed), f"{director.name} sees {listed}, wanted {wanted}"
        assert all(listed[name] == "on" for name in wanted), listed
    state = cluster.state()
    assert state.where_is(device.id), f"{device.id} not started: {state.resources}"
    verify = cluster.crm_verify()
    evidence.data("crm_verify -LV", {"valid": verify.valid, "errors": list(verify.errors)})
    assert verify.valid and not verify.errors, verify


@conformance("HAC-FENCE-005", stage="stage5", section=SECTION,
             settings=("cluster.stonith.*", "cluster.properties.stonith-enabled"),
             must="The stonith device MUST be configured as documented (fence_xvm, "
                  "pcmk_host_map=\"server1:Node1;server4:Node4\", monitor 30s) and stonith-enabled MUST be true")
def test_stonith_configured_as_documented(deployment, fencing_settings, cluster_spec, cluster, evidence):
    cib = cluster.configuration()
    documented = {role: {"id": d.id, "agent": d.agent, "params": dict(d.params),
                         "operations": {op.name: op.interval for op in d.operations}}
                  for role, d in cluster_spec.stonith.items()}
    evidence.data("documented stonith devices", documented)
    evidence.data("the deployment's (CIB)", {
        "stonith-enabled": cib.properties.get("stonith-enabled"),
        "devices": {p.id: {"agent": p.agent, "params": p.params,
                           "operations": {op.name: op.interval for op in p.operations}}
                    for p in cib.primitives.values() if p.agent.startswith("stonith:")}})
    differences = [d for d in documented_cluster_differences(deployment, cluster_spec)
                   if d.what.startswith(("stonith device", "property stonith-enabled"))]
    fail_on_differences([d.row() for d in differences], "fencing differs from the documented configuration",
                        evidence=evidence, title="differences (documented vs the deployment's)")


@conformance("HAC-FENCE-002", stage="stage5", section=SECTION, destructive=True,
             settings=("cluster.stonith.*", "cluster.properties.stonith-enabled", "fencing.*"),
             must="When the active director crashes the survivor MUST fence it, run the group and serve the VIP; "
                  "the fenced director MUST boot again and rejoin")
def test_crashed_director_is_fenced(deployment, victim, cluster, evidence, target):
    survivor = next(d for d in deployment.directors if d.name != victim.name)
    boot_before = victim.boot_id
    with FaultRun(deployment, evidence, f"crash of {victim.name}") as run:
        crashed_at = now_utc_naive()
        crash = Crash(deployment)
        run.inject(crash, victim, mark="crash")               # on a VM: echo c > /proc/sysrq-trigger
        events = wait_until(f"{survivor.name} fenced {victim.name} (fence history: success)",
                            lambda: successful_fences(cluster, survivor, victim.name, crashed_at),
                            timeout=BOUNDS.fence_complete, observe=lambda: cluster.fence_history(survivor))
        run.mark("fence completed")
        wait_until(f"{deployment.cluster_spec.together_label} runs on {survivor.name}", lambda: cluster.group_node(survivor) == survivor.name,
                   timeout=BOUNDS.resource_move, observe=lambda: cluster.group_node(survivor))
        run.wait_served(timeout=BOUNDS.resource_move)
        run.mark("VIP served")
        wait_until(f"{victim.name} booted again", lambda: target.booted(victim.name),
                   timeout=BOUNDS.node_rejoin)
        wait_until(f"{victim.name} rejoined: every director sees quorum, a DC and both nodes", cluster.whole,
                   timeout=BOUNDS.node_rejoin, observe=cluster.views)
        crash.rejoined()          # rejoin noise in the logs is excused up to here only
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
    problems = audit(deployment, run=run, excused_lines=crash.excused_lines)
    assert not problems, problems


@conformance("HAC-FENCE-003", stage="stage5", section=SECTION, destructive=True,
             settings=("cluster.stonith.*", "cluster.properties.stonith-enabled", "fencing.*"),
             must="When the active director's NIC goes down exactly one director MUST be fenced, the other MUST "
                  "run the group, and two directors MUST never hold the VIP at once")
def test_split_brain_fences_exactly_one(deployment, victim, cluster, evidence):
    cut = victim
    survivor = next(d for d in deployment.directors if d.name != cut.name)
    with FaultRun(deployment, evidence, f"NIC of {cut.name} down") as run:
        cut_at = now_utc_naive()
        nic = NicDown(deployment)
        run.inject(nic, cut, mark="NIC down")
        wait_until(f"{survivor.name} fenced {cut.name}", lambda: successful_fences(cluster, survivor, cut.name, cut_at),
                   timeout=BOUNDS.fence_complete, observe=lambda: cluster.fence_history(survivor))
        run.mark("fence completed")
        wait_until(f"{deployment.cluster_spec.together_label} runs on {survivor.name}", lambda: cluster.group_node(survivor) == survivor.name,
                   timeout=BOUNDS.resource_move)
        run.wait_served(timeout=BOUNDS.resource_move)
        run.mark("VIP served")
        wait_until(f"{cut.name} rejoined: every director sees quorum, a DC and both nodes", cluster.whole,
                   timeout=BOUNDS.node_rejoin, observe=cluster.views)
        nic.rejoined()            # rejoin noise in the logs is excused up to here only
        run.mark("rejoined")
    fenced = {d.name for d in deployment.directors if successful_fences(cluster, survivor, d.name, cut_at)}
    evidence.data("directors fenced", sorted(fenced))
    evidence.data("NIC down -> VIP served (s)", round(run.time_of("VIP served") - run.time_of("NIC down"), 2))
    evidence.data("outage (s)", run.outage_s)
    assert fenced == {cut.name}, f"fenced: {fenced}"
    assert run.vip_watch.max_holders() <= 1, run.vip_watch.double_ownership()[:5]
    problems = audit(deployment, run=run, excused_lines=nic.excused_lines)
    assert not problems, problems


@conformance("HAC-FENCE-004", stage="stage5", section=SECTION, destructive=True,
             settings=("cluster.properties.stonith-enabled",),
             must="Without fencing the same NIC cut MUST leave both directors running the group (the runbook's "
                  "reason for fencing), and the cluster MUST be whole again once the NIC returns")
def test_without_fencing_split_brain_runs_the_group_twice(deployment, victim, cluster, evidence):
    cut = victim
    survivor = next(d for d in deployment.directors if d.name != cut.name)
    # Through the survivor, whose dead-man switch sets the recorded value back if the harness dies: there
    # it ends the split by fencing the cut node, where on the cut node it would fence the survivor.
    stonith_off = PropertyChange(deployment, "stonith-enabled", "false")
    evidence.text("fencing disabled for the test", stonith_off.inject(survivor))
    with FaultRun(deployment, evidence, f"NIC of {cut.name} down, stonith disabled") as run:
        nic = NicDown(deployment)
        run.inject(nic, cut, mark="NIC down")
        both = wait_until("each director's own pacemaker runs the group locally",
                          lambda: all(cluster.group_node(d) == d.name for d in deployment.directors),
                          timeout=BOUNDS.resource_move,
                          observe=lambda: {d.name: cluster.group_node(d) for d in deployment.directors})
        run.mark("group running twice")
        holders = cluster.vip_holders()
        nic.heal()
        run.mark("NIC up")
        wait_until(f"{deployment.cluster_spec.together_label} on exactly one director again (seen by both)",
                   lambda: len({cluster.group_node(d) for d in deployment.directors} - {None}) == 1
                   and all(cluster.group_node(d) for d in deployment.directors), timeout=BOUNDS.cluster_settle)
        stonith_off.heal()
        cluster.cleanup()
        wait_until("no failed actions after cleanup",
                   lambda: not audit(deployment), timeout=BOUNDS.cluster_settle, observe=lambda: audit(deployment))
        run.mark("whole again")
    evidence.data("VIP holders during the split", holders)
    evidence.text("why the runbook fences", "With stonith-enabled=false both halves of the split believed they "
                  f"owned {deployment.cluster_spec.together_label}: both held the VIP ({holders}).")
    assert both
    assert sorted(holders) == sorted(d.name for d in deployment.directors), holders
    assert not run.vip_watch_problems(), run.vip_watch_problems()
    assert run.vip_watch.max_holders() == 2
