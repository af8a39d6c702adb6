"""Cluster reader: crm_mon / stonith_admin / crm_verify XML, pcs dialect."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fakes import DATA, FakeHost, read_sample
from haconform.readers import CommandFailed, ParseError
from haconform.readers.cluster import (
    CRM_MON_COMMAND,
    PCMK_INFINITY,
    ClusterUnavailable,
    parse_crm_mon,
    parse_crm_verify,
    parse_fence_history,
    parse_pacemaker_time,
    parse_pcs_version,
    pcs_dialect,
    read_cluster_state,
    read_crm_verify,
    read_fence_history,
    read_pcs_dialect,
)

PCMK = DATA / "pacemaker"


def state(name: str):
    return parse_crm_mon(read_sample(f"pacemaker/{name}"), source=name)


# --- the runbook's cluster, recorded with pacemaker 2.1.5 ------------------------------

def test_running_cluster():
    running = state("crm_mon_running.xml")
    assert running.quorum is True and running.dc == "server1"
    assert running.online_nodes == ["server1", "server4"]
    assert running.node("server1").is_dc and not running.node("server4").is_dc
    assert running.group_members("hagroup") == ["VIP", "haproxy"]
    [active] = running.where_is("hagroup")
    assert running.where_is("VIP") == running.where_is("haproxy") == [active]
    assert running.where_is("vmfence") == ["server1"]
    assert running.node(active).resources_running == 2
    assert running.failures == () and running.failcount("haproxy", active) == 0
    assert running.options.stonith_enabled is True
    assert running.options.no_quorum_policy == "stop"
    assert running.nodes_configured == 2 and running.resources_configured == 3


def test_resources_carry_agent_role_and_parent():
    running = state("crm_mon_running.xml")
    [vip] = running.resource("VIP")
    assert vip.agent == "ocf:heartbeat:IPaddr2" and vip.role == "Started"
    assert vip.active and vip.managed and not vip.failed and vip.group == "hagroup"
    [fence] = running.resource("vmfence")
    assert fence.agent == "stonith:fence_xvm" and fence.group is None and fence.clone is None
    [haproxy] = running.resource("haproxy")
    assert haproxy.agent == "service:haproxy"


def test_monitor_failure_gives_failure_and_fail_count():
    failed = state("crm_mon_monitor_failed.xml")
    [failure] = failed.failures
    assert (failure.resource, failure.task, failure.interval_ms) == ("haproxy", "monitor", 60000)
    assert failure.op_key == "haproxy_monitor_60000"
    assert failure.exit_code == 7 and failure.exit_status == "not running"
    assert failure.status == "complete"
    assert failed.failcount("haproxy", failure.node) == 1
    other = [n for n in failed.online_nodes if n != failure.node][0]
    assert failed.failcount("haproxy", other) == 0
    assert failed.failcount("VIP", failure.node) == 0
    assert failed.failures_of("haproxy") == [failure]
    # recovered in place: still running where it failed
    assert failed.where_is("haproxy") == [failure.node]
    [history] = [h for h in failed.history if h.resource == "haproxy"]
    assert [op.rc for op in history.operations] == [7, 0, 0]
    assert history.operations[0].interval_ms == 60000 and history.operations[0].task == "monitor"


def test_standby_moves_the_group():
    running, standby = state("crm_mon_running.xml"), state("crm_mon_standby.xml")
    [before] = running.where_is("hagroup")
    assert standby.node(before).standby is True
    assert standby.node(before).resources_running == 0
    [after] = standby.where_is("hagroup")
    assert after != before and not standby.node(after).standby


def test_lost_node_is_offline_and_group_on_survivor():
    lost = state("crm_mon_node_lost.xml")
    assert lost.online_nodes == ["server1"]
    assert lost.node("server4").online is False and lost.node("server4").unclean is False
    assert lost.where_is("hagroup") == ["server1"]
    assert lost.fence_events is None          # no fence history in a CIB file


def test_partition_without_quorum():
    no_quorum = state("crm_mon_no_quorum.xml")
    assert no_quorum.quorum is False and no_quorum.dc == "server1"
    assert no_quorum.node("server4").unclean is True
    assert no_quorum.where_is("vmfence") == []


def test_no_dc_means_no_quorum():
    no_dc = state("crm_mon_no_dc.xml")
    assert no_dc.dc is None and no_dc.quorum is False
    assert no_dc.online_nodes == []
    assert all(node.unclean for node in no_dc.nodes)
    assert no_dc.where_is("hagroup") == []


def test_clones_promotable_unmanaged_and_maintenance():
    clones = state("crm_mon_clones.xml")
    by_id = {c.id: c for c in clones.clones}
    assert set(by_id) == {"ping-clone", "state-clone"}
    assert by_id["state-clone"].promotable and not by_id["ping-clone"].promotable
    assert by_id["ping-clone"].children == ("ping",)
    assert clones.where_is("ping-clone") == ["server1", "server4"]
    assert clones.where_is("ping") == ["server1", "server4"]
    assert len(clones.resource("ping")) == 2
    assert {r.role for r in clones.resource("state")} == {"Unpromoted"}
    assert all(r.clone == "state-clone" for r in clones.resource("state"))
    [frozen] = clones.resource("frozen")
    assert not frozen.managed and frozen.role == "Stopped"
    assert clones.node("server1").maintenance is True
    # Everything on a node in maintenance is unmanaged.
    assert {r.managed for r in clones.resources if "server1" in r.nodes} == {False}


def test_unknown_ids_are_key_errors_listing_what_exists():
    running = state("crm_mon_running.xml")
    with pytest.raises(KeyError, match="hagroup"):
        running.where_is("nosuch")
    with pytest.raises(KeyError, match="groups"):
        running.group_members("VIP")
    with pytest.raises(KeyError, match="server1"):
        running.node("server9")
    with pytest.raises(KeyError, match="primitives"):
        running.resource("hagroup")


# --- fence history ---------------------------------------------------------------------

def test_fence_history_in_crm_mon():
    fenced = state("crm_mon_fenced.xml")
    [success] = fenced.fence_events_for("server4", action="reboot", status="success")
    assert success.delegate == "server1" and success.origin == "server1"
    assert success.client == "pacemaker-controld.1207"
    assert success.completed == datetime(2025, 11, 26, 3, 41, 7, tzinfo=timezone.utc)
    assert len(fenced.fence_events_for("server4")) == 2
    [pending] = fenced.fence_events_for("server1")
    assert pending.status == "pending" and pending.completed is None
    assert pending.extended_status == "2"


def test_fence_history_absent_or_unavailable():
    lost = state("crm_mon_node_lost.xml")
    with pytest.raises(ClusterUnavailable, match="fence history was not available"):
        lost.fence_events_for("server4")
    text = read_sample("pacemaker/crm_mon_node_lost.xml").replace(
        '  <status code="0"', '  <fence_history status="102"/>\n  <status code="0"')
    unavailable = parse_crm_mon(text)
    assert unavailable.fence_events is None and unavailable.fence_history_status == 102
    assert unavailable.where_is("hagroup") == ["server1"]   # the rest still parsed


def test_stonith_admin_history():
    events = parse_fence_history(read_sample("pacemaker/stonith_admin_history.xml"))
    assert [(e.target, e.action, e.status) for e in events] == [
        ("server4", "reboot", "success"), ("server1", "reboot", "failed")]
    assert events[1].exit_reason == "Fence agent did not complete in time"
    assert events[0].completed == datetime(2025, 11, 26, 3, 41, 7, tzinfo=timezone.utc)


def test_read_fence_history_command_and_no_fencer():
    host = FakeHost()
    host.on(re.compile(r"stonith_admin --history server4 --verbose --output-as=xml$"),
            stdout=read_sample("pacemaker/stonith_admin_history.xml"))
    assert len(read_fence_history(host, "server4")) == 2
    host.on(re.compile(r"stonith_admin --history '\*' "), rc=102,
            stdout=read_sample("pacemaker/stonith_admin_not_connected.xml"))
    with pytest.raises(ClusterUnavailable, match="Could not connect to fencer"):
        read_fence_history(host)
    assert host.commands[-1] == ("timeout 30 stonith_admin --history '*' --verbose "
                                 "--output-as=xml")


@pytest.mark.parametrize("text, expected", [
    ("2025-11-26 03:41:07Z", datetime(2025, 11, 26, 3, 41, 7, tzinfo=timezone.utc)),
    ("2025-11-26 11:41:07 +08:00", datetime(2025, 11, 26, 3, 41, 7, tzinfo=timezone.utc)),
    ("2025-11-25 22:41:07 -05:00", datetime(2025, 11, 26, 3, 41, 7, tzinfo=timezone.utc)),
])
def test_pacemaker_time_forms(text, expected):
    assert parse_pacemaker_time(text) == expected


def test_pacemaker_time_other_forms_are_rejected():
    with pytest.raises(ParseError, match="not 'YYYY-MM-DD"):
        parse_pacemaker_time("Thu Nov 26 11:33:52 2026")


# --- reading through a host -------------------------------------------------------------

def test_read_cluster_state_runs_the_documented_command():
    host = FakeHost()
    host.on(re.compile("crm_mon"), stdout=read_sample("pacemaker/crm_mon_running.xml"))
    assert read_cluster_state(host).dc == "server1"
    assert host.commands == [f"timeout 30 {CRM_MON_COMMAND}"]
    assert CRM_MON_COMMAND == ("crm_mon --one-shot --output-as=xml --include=all "
                               "--fence-history=3")
    read_cluster_state(host, cib_file="/tmp/a cib.xml")
    assert host.commands[-1].startswith("CIB_file='/tmp/a cib.xml' timeout 30 crm_mon ")


def test_cluster_not_running_is_cluster_unavailable_with_the_tools_words():
    host = FakeHost()
    host.on(re.compile("crm_mon"), rc=102, stdout=read_sample("pacemaker/crm_mon_not_connected.xml"))
    with pytest.raises(ClusterUnavailable, match=r"exit 102 \(Not connected\).*Connection "
                                                 r"to cluster failed") as raised:
        read_cluster_state(host)
    assert "fakehost" in str(raised.value) and "corosync and pacemaker" in str(raised.value)


def test_crm_mon_not_installed():
    host = FakeHost()
    host.on(re.compile("crm_mon"), rc=127, stderr="sh: 1: crm_mon: not found\n")
    with pytest.raises(CommandFailed, match="no XML output.*not found"):
        read_cluster_state(host)


# --- malformed input --------------------------------------------------------------------

RUNNING = read_sample("pacemaker/crm_mon_running.xml")


@pytest.mark.parametrize("text, message", [
    ("<pacemaker-result><summary>", "not well-formed XML"),
    ("<crm_mon version='2.1.5'><summary/><nodes/></crm_mon>", "not <pacemaker-result>"),
    ('<pacemaker-result api-version="2.25"><status code="0" message="OK"/></pacemaker-result>',
     "without <summary> and <nodes>"),
    (RUNNING.replace('online="true" standby', 'online="yes" standby', 1),
     "<node online='yes'> is not a boolean"),
    (RUNNING.replace('resources_running="1"', 'resources_running="one"', 1),
     "resources_running='one'> is not a number"),
    (re.sub(r'<node name="server1" id="1" online', '<node id="1" online', RUNNING, count=1),
     "<node> lacks attribute 'name'"),
    (RUNNING.replace('<status code="0" message="OK"/>',
                     '<status code="1" message="Error occurred"/>'),
     "exit 1 \\(Error occurred\\)"),
])
def test_malformed_crm_mon_is_a_clear_error(text, message):
    with pytest.raises((ParseError, CommandFailed), match=message):
        parse_crm_mon(text, source="sample")


def test_bad_fail_count_and_interval_are_rejected():
    failed = read_sample("pacemaker/crm_mon_monitor_failed.xml")
    with pytest.raises(ParseError, match="fail-count 'lots'"):
        parse_crm_mon(failed.replace('fail-count="1"', 'fail-count="lots"'))
    with pytest.raises(ParseError, match="interval '60s'"):
        parse_crm_mon(failed.replace('interval="60000ms"', 'interval="60s"', 1))


def test_infinite_fail_count():
    failed = read_sample("pacemaker/crm_mon_monitor_failed.xml")
    parsed = parse_crm_mon(failed.replace('fail-count="1"', 'fail-count="INFINITY"'))
    assert parsed.failcount("haproxy", parsed.failures[0].node) == PCMK_INFINITY


def test_resource_ids_with_underscores_split_from_op_key():
    failed = read_sample("pacemaker/crm_mon_monitor_failed.xml")
    text = re.sub(r' interval="60000" task="monitor"', "",
                  failed.replace('op_key="haproxy_monitor_60000"', 'op_key="web_vip_2_monitor_30000"'))
    [failure] = parse_crm_mon(text).failures
    assert (failure.resource, failure.task, failure.interval_ms) == ("web_vip_2", "monitor", 30000)


# --- crm_verify ---------------------------------------------------------------------------

def test_crm_verify_runbook_stonith_error():
    result = parse_crm_verify(read_sample("pacemaker/crm_verify_no_stonith.xml"),
                              read_sample("pacemaker/crm_verify_no_stonith.stderr"), rc=78)
    assert not result.valid and result.exit_code == 78
    assert result.message == "Invalid configuration"
    assert "Resource start-up disabled since no STONITH resources have been defined" \
        in result.errors
    assert len(result.errors) == 3 and result.warnings == ()


def test_crm_verify_clean():
    result = parse_crm_verify(read_sample("pacemaker/crm_verify_ok.xml"),
                              read_sample("pacemaker/crm_verify_ok.stderr"))
    assert result.valid and result.errors == () and result.message == "OK"


def test_crm_verify_warnings_and_newer_xml_errors():
    stdout = ('<pacemaker-result api-version="2.30" request="crm_verify">'
              '<status code="78" message="Invalid configuration"><errors>'
              '<error>error: Resource start-up disabled</error></errors></status>'
              '</pacemaker-result>')
    stderr = "(unpack_config) \twarning: Blind faith: not fencing unseen nodes\n"
    result = parse_crm_verify(stdout, stderr, rc=78)
    assert result.errors == ("error: Resource start-up disabled",)
    assert result.warnings == ("Blind faith: not fencing unseen nodes",)
    assert not result.valid


def test_crm_verify_through_host_and_garbage():
    host = FakeHost()
    host.on(re.compile(r"^timeout 30 crm_verify --live-check -V --output-as=xml$"), rc=78,
            stdout=read_sample("pacemaker/crm_verify_no_stonith.xml"),
            stderr=read_sample("pacemaker/crm_verify_no_stonith.stderr"))
    assert not read_crm_verify(host).valid
    with pytest.raises(ParseError, match="without <status>"):
        parse_crm_verify("<pacemaker-result/>")
    with pytest.raises(CommandFailed, match="no XML output"):
        parse_crm_verify("", "crm_verify: command not found", rc=127)


# --- pcs -------------------------------------------------------------------------------

def test_pcs_versions_and_dialects():
    assert parse_pcs_version("0.11.5\n") == (0, 11, 5)
    assert parse_pcs_version("0.9.169\n") == (0, 9, 169)
    assert pcs_dialect((0, 9, 169)).name == "0.9"
    assert pcs_dialect((0, 10, 1)).name == "0.10+"
    assert pcs_dialect((0, 11, 5)).name == "0.10+"
    assert pcs_dialect((1, 0)).name == "0.10+"


def test_pcs_dialect_commands():
    old, new = pcs_dialect((0, 9, 169)), pcs_dialect((0, 11, 5))
    nodes = ["server1", "server4"]
    limit = "--request-timeout=60"   # BOUNDS.pcs_request, uncalibrated: never pcs's own default left implicit
    assert old.auth_argv(nodes) == ["pcs", limit, "cluster", "auth", "server1", "server4",
                                    "-u", "hacluster"]
    assert new.auth_argv(nodes) == ["pcs", limit, "host", "auth", "server1", "server4",
                                    "-u", "hacluster"]
    assert old.setup_argv("TestCluster", nodes) == ["pcs", limit, "cluster", "setup", "--name",
                                                    "TestCluster", "server1", "server4"]
    assert new.setup_argv("TestCluster", nodes) == ["pcs", "cluster", "setup", "TestCluster",   # pcs refuses it there
                                                    "server1", "server4"]


def test_pcs_version_garbage_and_reader():
    with pytest.raises(ParseError, match="not a pcs version"):
        parse_pcs_version("pcs: command not found\n")
    with pytest.raises(ValueError):
        pcs_dialect((1,))
    host = FakeHost().on("pcs --version", stdout="0.11.5\n")
    assert read_pcs_dialect(host).name == "0.10+"
    broken = FakeHost().on("pcs --version", rc=127, stderr="sh: pcs: not found")
    with pytest.raises(CommandFailed, match="not installed"):
        read_pcs_dialect(broken)


# --- against the real tools ------------------------------------------------------------

API_SCHEMA = Path("/usr/share/pacemaker/api/api-result-2.25.rng")


@pytest.mark.skipif(not API_SCHEMA.exists() or shutil.which("xmllint") is None,
                    reason="pacemaker API schema or xmllint not installed")
@pytest.mark.parametrize("sample", sorted(p.name for p in PCMK.glob("crm_mon_*.xml"))
                         + sorted(p.name for p in PCMK.glob("stonith_admin_*.xml")))
def test_samples_validate_against_pacemaker_api_schema(sample):
    # The constructed samples (fence history) must be as valid as the recorded ones.
    checked = subprocess.run(["xmllint", "--noout", "--relaxng", str(API_SCHEMA),
                              str(PCMK / sample)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


@pytest.fixture
def local_host():
    if shutil.which("crm_mon") is None:
        pytest.skip("pacemaker tools not installed")
    testinfra = pytest.importorskip("testinfra")
    return testinfra.get_host("local://")


def test_real_crm_mon_on_a_saved_cib(local_host):
    parsed = read_cluster_state(local_host, cib_file=str(PCMK / "cib_running.xml"))
    assert parsed.dc == "server1" and parsed.quorum
    assert len(parsed.where_is("hagroup")) == 1
    assert parsed.group_members("hagroup") == ["VIP", "haproxy"]


def test_real_crm_verify_on_saved_cibs(local_host):
    assert read_crm_verify(local_host, cib_file=str(PCMK / "cib_running.xml")).valid
    broken = read_crm_verify(local_host, cib_file=str(PCMK / "cib_no_stonith.xml"))
    assert not broken.valid
    assert any("STONITH" in error for error in broken.errors)


def test_operations_carry_their_agent_run_and_queue_times():
    fenced = state("crm_mon_fenced.xml")
    operations = [op for h in fenced.history for op in h.operations]
    assert operations and all(op.exec_ms == 0 and op.queue_ms == 0 for op in operations)


def test_operations_during_a_fault_are_the_new_ones():
    from haconform.faults.experiment import operations_since
    start = {"node": "server1", "resource": "VIP", "call": 2, "task": "start", "exec_ms": 40}
    before = {"operations": [start]}
    stop = {"node": "server1", "resource": "VIP", "call": 5, "task": "stop", "exec_ms": 1200}
    restart = {"node": "server1", "resource": "VIP", "call": 6, "task": "start", "exec_ms": 900}
    assert operations_since(before, {"operations": [start, stop, restart]}) == [stop, restart]
    assert operations_since({}, {"operations": [start]}) == [start]
    assert operations_since(before, {"error": "no director answered"}) == []
