"""Stage 4 — high availability with pacemaker (实现高可用)."""

import pytest

from haconform.conformance import conformance
from haconform.differences import fail_on_differences
from haconform.faults import FaultRun, Reset, ServiceStop, Standby, VipDeleted, audit
from haconform.patterns import ANY, pattern
from haconform.stages.cluster import together_differences, together_form
from haconform.stages.drift import documented_cluster_differences
from haconform.timeouts import BOUNDS, documented
from haconform.wait import wait_until

SECTION = "实现高可用"


def documented_monitor(cluster, active, resource, evidence) -> float:
    """The documented monitor interval (the bound), shown beside the deployment's own (CIB)."""
    interval = resource.interval("monitor")
    evidence.data(f"{resource.role} monitor interval (s)", {
        "documented (the bound)": interval,
        "the deployment's (CIB)": cluster.monitor_interval_s(resource.id, active)})
    assert interval, f"the stage documents no monitor operation for {resource.role}"
    return interval


@pytest.fixture
def active(cluster_settings, cluster):
    """The director running the group, once it is settled.  After a destructive test the deployment is
    restored (fixtures/restore.py: standby, properties, failed actions, power, NICs)."""
    return cluster.active_director()


@conformance("HAC-HA-001", stage="stage4", section=SECTION,
             settings=("cluster.group.*", "cluster.resources.vip", "cluster.resources.haproxy"),
             must="The VIP and HAProxy MUST run on the same director, and HAProxy on exactly one director")
def test_vip_and_haproxy_run_together_on_one_director(deployment, cluster_settings, cluster_spec, cluster, evidence):
    vip, haproxy = cluster_spec.resource("vip").id, cluster_spec.resource("haproxy").id
    state = cluster.state()
    evidence.data("resources (crm_mon XML)", {r.id: {"role": r.role, "nodes": list(r.nodes)} for r in state.resources})
    # What keeps them together may be the runbook's group or colocation + order constraints meaning the same.
    cib = cluster.configuration()
    evidence.data("the members that must run together (CIB)", together_form(cluster_spec, cib))
    untied = together_differences(cluster_spec, cib)
    assert not untied, f"{cluster_spec.together_label} are not tied as documented:\n  " + "\n  ".join(
        f"{d.what}: documented {d.expected}, found {d.found} ({d.where})" for d in untied)
    assert len(state.where_is(vip)) == 1, state.where_is(vip)
    assert state.where_is(vip) == state.where_is(haproxy)
    running = [d.name for d in deployment.directors if d.host.process.filter(comm="haproxy")]
    evidence.data("directors with haproxy processes", running)
    assert running == state.where_is(haproxy), f"haproxy processes on {running}"
    holders = cluster.vip_holders()
    assert holders == running, f"VIP held by {holders}"


@conformance("HAC-HA-002", stage="stage4", section=SECTION,
             settings=("cluster.resources.vip.params.*", "haproxy.cfg[frontend main].acl write",
                       "haproxy.cfg[frontend main].use_backend[*]", "haproxy.cfg[frontend main].default_backend"),
             must="The data-plane behaviour of stages 1-3 MUST hold through the VIP: GET to app1, POST to app2")
def test_data_plane_through_the_vip(deployment, http, cluster_settings, client_evidence):
    app1 = deployment.realserver_by_server_name("app1").name
    app2 = deployment.realserver_by_server_name("app2").name
    assert deployment.frontend_address == deployment.vip
    got = http.get(deployment.url("/"))
    assert got.ok and got.headers.get("X-Real-Server") == app1, got
    posted = http.post(deployment.url("/upload_file.php"), b"")
    assert posted.headers.get("X-Real-Server") == app2, posted


@conformance("HAC-HA-003", stage="stage4", section=SECTION, destructive=True,
             settings=("cluster.resources.vip.params.*", "cluster.resources.vip.operations[monitor].interval"),
             must="When the VIP is deleted by hand on the active director the cluster MUST restore it "
                  "within the VIP's monitor interval")
def test_vip_deleted_by_hand_is_restored(deployment, active, cluster_spec, cluster, evidence):
    vip = cluster_spec.resource("vip")
    interval = documented_monitor(cluster, active, vip, evidence)
    vip_id = vip.id
    before = cluster.state().failcount(vip_id, active.name)
    with FaultRun(deployment, evidence, "VIP deleted by hand") as run:
        watch = run.watch(active)
        run.inject(VipDeleted(deployment), active, mark="fault injected")
        wait_until("the VIP is held by a director again", cluster.vip_holders,
                   timeout=documented(interval), observe=cluster.vip_holders)
        run.mark("VIP back")
        # VIP then haproxy (the group's order, or the order constraint): restoring the VIP restarts haproxy too.
        run.wait_served(timeout=BOUNDS.service_start + BOUNDS.http_request + BOUNDS.probe_request * 3)
        seen = watch.wait_for({"monitor saw VIP gone": pattern(
            "pcmk.rsc_op_result", operation="monitor", resource=vip_id, node=active.name,
            result="not running")}, timeout=BOUNDS.log_line)
    evidence.log("pacemaker's evidence", [m.string for m in seen.values()])
    evidence.data("outage (s)", run.outage_s)
    assert run.time_of("VIP back") - run.time_of("fault injected") <= documented(interval)
    after = cluster.state().failcount(vip_id, active.name)
    assert after == before + 1, f"VIP fail count on {active.name}: {before} -> {after}"
    assert run.vip_watch.max_holders() <= 1
    problems = audit(deployment, allowed_failures=(vip_id,), run=run)
    assert not problems, problems


@conformance("HAC-HA-004", stage="stage4", section=SECTION, destructive=True, lab="ha-haproxy",   # a 60 s one
             settings=("cluster.resources.haproxy.agent", "cluster.resources.haproxy.operations[monitor].interval"),
             must="When HAProxy is stopped on the active director the cluster's monitor MUST notice, "
                  "restart it and count one failure")
def test_haproxy_stopped_is_restarted(deployment, active, cluster_spec, cluster, evidence):
    haproxy = cluster_spec.resource("haproxy")
    interval = documented_monitor(cluster, active, haproxy, evidence)
    haproxy_id = haproxy.id
    before = cluster.state().failcount(haproxy_id, active.name)
    with FaultRun(deployment, evidence, "haproxy stopped") as run:
        watch = run.watch(active)
        run.inject(ServiceStop(deployment), active, mark="fault injected")   # the runbook's own command
        seen = watch.wait_for({"monitor saw haproxy stopped": pattern(
            "pcmk.rsc_op_result", operation="monitor", resource=haproxy_id, node=ANY,
            result="not running")}, timeout=documented(interval))
        wait_until("haproxy running again under the cluster",
                   lambda: any(d.host.process.filter(comm="haproxy") for d in deployment.directors)
                   and cluster.group_node(), timeout=BOUNDS.cluster_settle)
        run.mark("haproxy back")
        run.wait_served(timeout=BOUNDS.http_request + BOUNDS.probe_request * 3)
    evidence.log("pacemaker's evidence", [m.string for m in seen.values()])
    evidence.data("outage (s)", run.outage_s)
    after = cluster.state().failcount(haproxy_id, active.name)
    assert after == before + 1, f"haproxy fail count on {active.name}: {before} -> {after}"
    problems = audit(deployment, allowed_failures=(haproxy_id,), run=run)
    assert not problems, problems


@conformance("HAC-HA-005", stage="stage4", section=SECTION, destructive=True,
             settings=("cluster.group.*",),
             must="`pcs node standby` of the active director MUST move the group to the other director, "
                  "and `unstandby` MUST bring the node back online")
def test_standby_moves_the_group(deployment, active, cluster_spec, cluster, evidence):
    group = cluster_spec.together_label
    other = next(d for d in deployment.directors if d.name != active.name)
    with FaultRun(deployment, evidence, "standby of the active director") as run:
        standby = Standby(deployment)
        run.inject(standby, active, mark="fault injected")
        wait_until(f"{group} started on {other.name}", lambda: cluster.group_node() == other.name,
                   timeout=BOUNDS.resource_move, observe=cluster.group_node)
        run.mark("group moved")
        run.wait_served(timeout=BOUNDS.http_request + BOUNDS.probe_request * 3)
        assert cluster.state().node(active.name).standby
        standby.heal()
        wait_until(f"{active.name} online and not in standby",
                   lambda: (lambda n: n.online and not n.standby)(cluster.state().node(active.name)),
                   timeout=BOUNDS.cluster_settle)
        run.mark("unstandby")
        ends_on = wait_until(f"{group} settled", cluster.group_node, timeout=BOUNDS.cluster_settle)
    evidence.data("outage (s)", run.outage_s)
    evidence.data("where the group ended up after unstandby", ends_on)
    assert cluster.vip_holders() == [ends_on]
    assert run.vip_watch.max_holders() <= 1, run.vip_watch.double_ownership()[:5]
    problems = audit(deployment, run=run)
    assert not problems, problems


@conformance("HAC-HA-006", stage="stage4", section=SECTION, destructive=True,
             settings=("cluster.name", "cluster.group.*"),
             must="A director that reboots MUST start the cluster by itself and rejoin with no failed actions")
def test_rebooted_director_rejoins(deployment, active, cluster_spec, cluster, evidence, target):
    group = cluster_spec.together_label
    if not target.can_power:
        pytest.skip(f"target {target.kind} has no power control")
    passive = next(d for d in cluster.directors if d.name != active.name)
    boot_before = passive.boot_id
    with FaultRun(deployment, evidence, f"reboot of {passive.name}") as run:
        reset = Reset(deployment)
        run.inject(reset, passive, mark="power reset")
        assert passive.boot_id != boot_before
        # Asked of the rebooted node itself: only its freshly started pacemaker,
        # once joined, can say so (the survivor may not have noticed it left).
        rejoined = lambda: (lambda s: s.quorum and s.dc and set(deployment.topology.cluster_nodes) <= set(s.online_nodes))(  # noqa: E731
            cluster.state(passive))
        wait_until(f"{passive.name} back online in the cluster, seen by itself", rejoined,
                   timeout=BOUNDS.node_rejoin, observe=lambda: cluster.state(passive).online_nodes)
        reset.rejoined()          # rejoin noise in the logs is excused up to here only
        run.mark("rejoined")
        wait_until(f"{group} settled", cluster.group_node, timeout=BOUNDS.cluster_settle)
    evidence.data("rejoin after reset (s)", round(run.time_of("rejoined") - run.time_of("power reset"), 2))
    evidence.data("outage (s)", run.outage_s)
    problems = audit(deployment, run=run, excused_lines=reset.excused_lines)
    assert not problems, problems


@conformance("HAC-HA-007", stage="stage4", section=SECTION,
             settings=("cluster.resources.*", "cluster.group.*", "cluster.properties.*"),
             must="The cluster MUST be configured as documented: the resources with their agents, parameters "
                  "and monitor intervals (VIP 30s, haproxy 60s), the VIP and HAProxy tied in order (the group, or "
                  "colocation and order constraints meaning the same), the properties")
def test_cluster_configured_as_documented(deployment, cluster_settings, cluster_spec, cluster, evidence):
    cib = cluster.configuration()
    evidence.data("the members that must run together (CIB)", together_form(cluster_spec, cib))
    evidence.table("documented resources", [
        {"role": r.role, "id": r.id, "agent": " or ".join(r.agents()), "params": dict(r.params),
         "operations": {op.name: op.interval for op in r.operations}}
        for r in [*cluster_spec.resources.values(), *cluster_spec.stonith.values()]])
    evidence.table("the deployment's primitives (CIB)", [
        {"id": p.id, "agent": p.agent, "params": p.params, "operations": {op.name: op.interval for op in p.operations},
         "where": p.path} for p in cib.primitives.values()])
    differences = documented_cluster_differences(deployment, cluster_spec)
    fail_on_differences([d.row() for d in differences], "the cluster differs from the documented one",
                        evidence=evidence, title="differences (documented vs the deployment's)")
