"""Stage 4 — high availability with pacemaker (实现高可用)."""

import pytest

from haconform.conformance import conformance
from haconform.faults import REJOIN_NOISE, FaultRun, audit, link_holding, vip_holders
from haconform.patterns import ANY, pattern
from haconform.readers.cluster import read_cib_configuration, read_cluster_state
from haconform.stages.cluster import ClusterStage
from haconform.timeouts import BOUNDS, documented
from haconform.wait import wait_until

SECTION = "实现高可用"


def cluster_state(deployment):
    for director in deployment.directors:
        try:
            return read_cluster_state(director.host)
        except Exception:
            continue
    raise AssertionError("no director answers crm_mon")


def group_node(deployment):
    """The one director running the whole group, else None."""
    state = cluster_state(deployment)
    places = [state.where_is(member) for member in deployment.cluster_spec.group_ids()]
    if all(len(p) == 1 for p in places) and len({p[0] for p in places}) == 1:
        return places[0][0]
    return None


def active_director(deployment):
    node = wait_until(f"{deployment.cluster_spec.group_id} runs on exactly one director",
                      lambda: group_node(deployment),
                      timeout=BOUNDS.cluster_settle, observe=lambda: cluster_state(deployment).resources)
    return deployment.machine(node)


def documented_monitor(active, resource, evidence) -> float:
    """The documented monitor interval (the bound), shown beside the deployment's own (CIB)."""
    found = read_cib_configuration(active.host).primitives.get(resource.id)
    interval_ms = found.interval_ms("monitor") if found else None
    interval = resource.interval("monitor")
    evidence.data(f"{resource.role} monitor interval (s)", {
        "documented (the bound)": interval,
        "the deployment's (CIB)": None if interval_ms is None else interval_ms / 1000})
    assert interval, f"the stage documents no monitor operation for {resource.role}"
    return interval


@pytest.fixture
def clean_cluster(deployment, cluster_settings, request):
    """Before: the group settled. After (registered first, runs even on failure):
    fail counts and failed actions cleared, both nodes out of standby."""
    def restore():
        first = deployment.directors[0]
        for director in deployment.directors:
            first.execute(f"pcs node unstandby {director.name}")
        first.execute("pcs resource cleanup")
    request.addfinalizer(restore)
    return active_director(deployment)


@conformance("HAC-HA-001", stage="stage4", section=SECTION,
             must="The VIP and HAProxy MUST run on the same director, and HAProxy on exactly one director")
def test_vip_and_haproxy_run_together_on_one_director(deployment, cluster_settings, cluster_spec, evidence):
    vip, haproxy = cluster_spec.resource("vip").id, cluster_spec.resource("haproxy").id
    state = cluster_state(deployment)
    evidence.data("resources (crm_mon XML)", {r.id: {"role": r.role, "nodes": list(r.nodes)} for r in state.resources})
    members = state.group_members(cluster_spec.group_id)
    assert members == cluster_spec.group_ids(), \
        f"group {cluster_spec.group_id} has {members}, documented {cluster_spec.group_ids()}"
    assert len(state.where_is(vip)) == 1, state.where_is(vip)
    assert state.where_is(vip) == state.where_is(haproxy)
    running = [d.name for d in deployment.directors if d.host.process.filter(comm="haproxy")]
    evidence.data("directors with haproxy processes", running)
    assert running == state.where_is(haproxy), f"haproxy processes on {running}"
    assert vip_holders(deployment) == running, f"VIP held by {vip_holders(deployment)}"


@conformance("HAC-HA-002", stage="stage4", section=SECTION,
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
             must="When the VIP is deleted by hand on the active director the cluster MUST restore it "
                  "within the VIP's monitor interval")
def test_vip_deleted_by_hand_is_restored(deployment, clean_cluster, cluster_spec, evidence):
    active = clean_cluster
    vip = cluster_spec.resource("vip")
    interval = documented_monitor(active, vip, evidence)
    vip_id = vip.id
    before = cluster_state(deployment).failcount(vip_id, active.name)
    with FaultRun(deployment, evidence, "VIP deleted by hand") as run:
        watch = run.watch(active)
        run.mark("fault injected")
        link = link_holding(active, deployment.vip)
        assert link, f"{active.name} runs the group but holds no VIP"
        active.succeed(f"ip addr del {deployment.vip}/{deployment.topology.prefixlen} dev {link}")
        wait_until("the VIP is held by a director again", lambda: vip_holders(deployment),
                   timeout=documented(interval), observe=lambda: vip_holders(deployment))
        run.mark("VIP back")
        # The group is ordered (VIP, then haproxy): restoring the VIP restarts haproxy too.
        run.prober.wait_for("requests through the VIP succeed again", lambda s: s and s[-1].ok,
                            timeout=BOUNDS.service_start + BOUNDS.http_request + BOUNDS.probe_request * 3)
        seen = watch.wait_for({"monitor saw VIP gone": pattern(
            "pcmk.rsc_op_result", operation="monitor", resource=vip_id, node=active.name,
            result="not running")}, timeout=BOUNDS.log_line)
    evidence.log("pacemaker's evidence", [m.string for m in seen.values()])
    evidence.data("outage (s)", run.outage_s)
    assert run.time_of("VIP back") - run.time_of("fault injected") <= documented(interval)
    after = cluster_state(deployment).failcount(vip_id, active.name)
    assert after == before + 1, f"VIP fail count on {active.name}: {before} -> {after}"
    assert run.vip_watch.max_holders() <= 1
    problems = audit(deployment, allowed_failures=(vip_id,), run=run)
    assert not problems, problems


@conformance("HAC-HA-004", stage="stage4", section=SECTION, destructive=True,
             must="When HAProxy is stopped on the active director the cluster's monitor MUST notice, "
                  "restart it and count one failure")
def test_haproxy_stopped_is_restarted(deployment, clean_cluster, cluster_spec, evidence):
    active = clean_cluster
    haproxy = cluster_spec.resource("haproxy")
    interval = documented_monitor(active, haproxy, evidence)
    haproxy_id = haproxy.id
    before = cluster_state(deployment).failcount(haproxy_id, active.name)
    with FaultRun(deployment, evidence, "haproxy stopped") as run:
        watch = run.watch(active)
        run.mark("fault injected")
        active.succeed("systemctl stop haproxy")   # the runbook's own command
        seen = watch.wait_for({"monitor saw haproxy stopped": pattern(
            "pcmk.rsc_op_result", operation="monitor", resource=haproxy_id, node=ANY,
            result="not running")}, timeout=documented(interval))
        wait_until("haproxy running again under the cluster",
                   lambda: any(d.host.process.filter(comm="haproxy") for d in deployment.directors)
                   and group_node(deployment), timeout=BOUNDS.cluster_settle)
        run.mark("haproxy back")
        run.prober.wait_for("requests through the VIP succeed again", lambda s: s and s[-1].ok,
                            timeout=BOUNDS.http_request + BOUNDS.probe_request * 3)
    evidence.log("pacemaker's evidence", [m.string for m in seen.values()])
    evidence.data("outage (s)", run.outage_s)
    after = cluster_state(deployment).failcount(haproxy_id, active.name)
    assert after == before + 1, f"haproxy fail count on {active.name}: {before} -> {after}"
    problems = audit(deployment, allowed_failures=(haproxy_id,), run=run)
    assert not problems, problems


@conformance("HAC-HA-005", stage="stage4", section=SECTION, destructive=True,
             must="`pcs node standby` of the active director MUST move the group to the other director, "
                  "and `unstandby` MUST bring the node back online")
def test_standby_moves_the_group(deployment, clean_cluster, cluster_spec, evidence):
    group = cluster_spec.group_id
    active = clean_cluster
    other = next(d for d in deployment.directors if d.name != active.name)
    with FaultRun(deployment, evidence, "standby of the active director") as run:
        run.mark("fault injected")
        active.succeed(f"pcs node standby {active.name}")
        wait_until(f"{group} started on {other.name}", lambda: group_node(deployment) == other.name,
                   timeout=BOUNDS.resource_move, observe=lambda: group_node(deployment))
        run.mark("group moved")
        run.prober.wait_for("requests through the VIP succeed again", lambda s: s and s[-1].ok,
                            timeout=BOUNDS.http_request + BOUNDS.probe_request * 3)
        assert cluster_state(deployment).node(active.name).standby
        active.succeed(f"pcs node unstandby {active.name}")
        wait_until(f"{active.name} online and not in standby",
                   lambda: (lambda n: n.online and not n.standby)(cluster_state(deployment).node(active.name)),
                   timeout=BOUNDS.cluster_settle)
        run.mark("unstandby")
        ends_on = wait_until(f"{group} settled", lambda: group_node(deployment), timeout=BOUNDS.cluster_settle)
    evidence.data("outage (s)", run.outage_s)
    evidence.data("where the group ended up after unstandby", ends_on)
    assert vip_holders(deployment) == [ends_on]
    assert run.vip_watch.max_holders() <= 1, run.vip_watch.double_ownership()[:5]
    problems = audit(deployment, run=run)
    assert not problems, problems


@conformance("HAC-HA-006", stage="stage4", section=SECTION, destructive=True,
             must="A director that reboots MUST start the cluster by itself and rejoin with no failed actions")
def test_rebooted_director_rejoins(deployment, clean_cluster, cluster_spec, evidence, target):
    group = cluster_spec.group_id
    if not target.can_power:
        pytest.skip(f"target {target.kind} has no power control")
    passive = next(d for d in deployment.directors if d.name != clean_cluster.name)
    boot_before = passive.boot_id
    with FaultRun(deployment, evidence, f"reboot of {passive.name}") as run:
        run.mark("power reset")
        passive.reset()
        assert passive.boot_id != boot_before
        # Asked of the rebooted node itself: only its freshly started pacemaker,
        # once joined, can say so (the survivor may not have noticed it left).
        rejoined = lambda: (lambda s: s.quorum and s.dc and set(deployment.topology.cluster_nodes) <= set(s.online_nodes))(  # noqa: E731
            read_cluster_state(passive.host))
        wait_until(f"{passive.name} back online in the cluster, seen by itself", rejoined,
                   timeout=BOUNDS.node_rejoin, observe=lambda: read_cluster_state(passive.host).online_nodes)
        run.mark("rejoined")
        wait_until(f"{group} settled", lambda: group_node(deployment), timeout=BOUNDS.cluster_settle)
    evidence.data("rejoin after reset (s)", round(run.time_of("rejoined") - run.time_of("power reset"), 2))
    evidence.data("outage (s)", run.outage_s)
    problems = audit(deployment, run=run, allowed_log=REJOIN_NOISE)
    assert not problems, problems


@conformance("HAC-HA-007", stage="stage4", section=SECTION,
             must="The cluster MUST be configured as documented: the resources with their agents, parameters "
                  "and monitor intervals (VIP 30s, haproxy 60s), the group's members in order, the properties")
def test_cluster_configured_as_documented(deployment, cluster_settings, cluster_spec, evidence):
    cluster = ClusterStage(deployment, cluster_spec)
    cib = read_cib_configuration(cluster.first.host)
    evidence.table("documented resources", [
        {"role": r.role, "id": r.id, "agent": " or ".join(r.agents()), "params": dict(r.params),
         "operations": {op.name: op.interval for op in r.operations}}
        for r in [*cluster_spec.resources.values(), *cluster_spec.stonith.values()]])
    evidence.table("the deployment's primitives (CIB)", [
        {"id": p.id, "agent": p.agent, "params": p.params, "operations": {op.name: op.interval for op in p.operations},
         "where": p.path} for p in cib.primitives.values()])
    differences = cluster.differences()
    evidence.table("differences (documented vs the deployment's)", [d.row() for d in differences])
    assert not differences, "the cluster differs from the documented one:\n  " + "\n  ".join(
        f"{d.what}: documented {d.expected}, found {d.found} ({d.where})" for d in differences)
