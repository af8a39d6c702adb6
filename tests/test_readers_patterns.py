"""Named log patterns: parameters, escaping, and the lines they are meant for."""

from __future__ import annotations

import re

import pytest

from fakes import read_sample
from haconform.errors import HaconformError
from haconform.patterns import ANY, PATTERNS, pattern, placeholders

HAPROXY_LOG = read_sample("haproxy/haproxy_traditional.log").splitlines() \
    + read_sample("haproxy/haproxy_rfc3339.log").splitlines()
CLUSTER_LOG = [line for line in read_sample("logs/cluster_lines.txt").splitlines()
               if line and not line.startswith("#")]


def matching(regex: re.Pattern[str], lines: list[str]) -> list[str]:
    return [line for line in lines if regex.search(line)]


def test_every_pattern_compiles_with_any_and_says_where_it_comes_from():
    for name, spec in PATTERNS.items():
        compiled = pattern(name, **{p: ANY for p in placeholders(name)})
        assert isinstance(compiled, re.Pattern)
        assert spec.source and spec.description, name


def test_every_pattern_matches_at_least_one_sample_line():
    lines = HAPROXY_LOG + CLUSTER_LOG
    unmatched = [name for name in PATTERNS
                 if not matching(pattern(name, **{p: ANY for p in placeholders(name)}), lines)]
    assert unmatched == []


def test_parameters_are_required_and_checked():
    with pytest.raises(HaconformError, match=r"missing \['server'\]"):
        pattern("haproxy.server_down", backend="app")
    with pytest.raises(HaconformError, match=r"unknown \['node'\]"):
        pattern("haproxy.server_down", backend="app", server="app1", node="x")
    with pytest.raises(HaconformError, match="no log pattern named 'nope'"):
        pattern("nope")
    assert placeholders("pcmk.rsc_op_result") == ("operation", "resource", "node", "result")


def test_values_are_escaped_not_interpreted():
    exact = pattern("pcmk.node_state", node="server.1", state="lost")
    assert exact.search("Node server.1 state is now lost | nodeid=1")
    assert not exact.search("Node serverX1 state is now lost | nodeid=1")
    hostile = pattern("pcmk.node_state", node="a|b", state="lost")
    assert not hostile.search("Node a state is now lost")


def test_values_match_whole_names_only():
    server1 = pattern("pcmk.node_state", node="server1", state="lost")
    assert not server1.search("Node server11 state is now lost | nodeid=11")
    assert server1.search("Node server1 state is now lost")


# --- HAProxy, against recorded haproxy 2.6.12 lines --------------------------------------

def test_haproxy_server_state_patterns_on_recorded_lines():
    assert matching(pattern("haproxy.server_down", backend="app", server="app3"), HAPROXY_LOG)
    assert not matching(pattern("haproxy.server_down", backend="app", server="app1"),
                        HAPROXY_LOG)
    assert matching(pattern("haproxy.server_up", backend="static", server="app2"), HAPROXY_LOG)
    maintenance = pattern("haproxy.server_maintenance", backend="static", server="app2")
    assert len(matching(maintenance, HAPROXY_LOG)) == 2         # once in each file
    # The other wording, recorded when the server was already down:
    assert maintenance.search("Nov 26 11:35:42 localhost haproxy[13842]: Server static/app2 "
                              "was DOWN and now enters maintenance.")
    assert matching(pattern("haproxy.backend_no_server", backend="static"), HAPROXY_LOG)


def test_haproxy_httplog_patterns_on_recorded_lines():
    to_app2 = matching(pattern("haproxy.httplog", backend="static", server="app2", status=200),
                       HAPROXY_LOG)
    assert to_app2 and all("/images/a.gif" in line for line in to_app2)
    unavailable = pattern("haproxy.httplog", backend="static", server="<NOSRV>", status=503)
    refused = [line for line in HAPROXY_LOG if "static/<NOSRV>" in line]
    assert refused and matching(unavailable, HAPROXY_LOG) == refused
    posts = matching(pattern("haproxy.httplog_request", method="POST",
                             path="/upload_file.php"), HAPROXY_LOG)
    assert len(posts) == 2
    assert not matching(pattern("haproxy.httplog_request", method="PUT", path=ANY), HAPROXY_LOG)
    # A path is matched as logged: the query string is part of it, literally.
    assert matching(pattern("haproxy.httplog_request", method="GET",
                            path="/q?a=%22x%20y%22"), HAPROXY_LOG)


# --- Pacemaker and corosync, against lines built from their format strings -------------

@pytest.mark.parametrize("name, params, count", [
    ("pcmk.rsc_op_result", dict(operation="monitor", resource="haproxy", node="server4",
                                result="not running"), 1),
    ("pcmk.rsc_op_result", dict(operation="start", resource="haproxy", node=ANY,
                                result="ok"), 1),
    ("pcmk.rsc_op_result", dict(operation="probe", resource="VIP", node="server1",
                                result="not running"), 1),
    ("pcmk.rsc_op_result", dict(operation="monitor", resource="haproxy", node="server4",
                                result="ok"), 0),
    ("pcmk.rsc_op_result", dict(operation=ANY, resource="haproxy", node=ANY,
                                result=ANY), 2),
    ("pcmk.fence_scheduled", dict(action="reboot", target="server4"), 1),
    ("pcmk.fence_requested", dict(action="reboot", target="server4"), 1),
    ("pcmk.fence_result", dict(action="reboot", target="server4", result="OK"), 1),
    ("pcmk.fence_result", dict(action="reboot", target="server4", result=ANY), 2),
    ("pcmk.fence_result", dict(action="off", target="server4", result="OK"), 0),
    ("pcmk.fence_result", dict(action="reboot", target="server4", result="Error occurred"), 1),
    ("pcmk.peer_terminated", dict(target="server4", action="reboot"), 1),
    ("pcmk.node_state", dict(node="server4", state="lost"), 1),
    ("pcmk.node_state", dict(node="server4", state="member"), 0),
    ("pcmk.quorum_acquired", {}, 1),
    ("pcmk.quorum_lost", {}, 1),
    ("pcmk.state_transition", dict(state="S_IDLE"), 1),
    ("corosync.membership_formed", {}, 2),
    ("corosync.member_joined", dict(node_id=2), 1),
    ("corosync.member_joined", dict(node_id=1), 0),
    ("corosync.member_left", dict(node_id=2), 1),
    ("corosync.member_failed", dict(node_id=2), 1),
    ("corosync.quorum_members", dict(count=1), 1),
    ("corosync.primary_component", {}, 1),
    ("corosync.non_primary_component", {}, 1),
    ("corosync.sync_completed", {}, 1),
    ("corosync.link_down", dict(node_id=2, link=0), 1),
    ("corosync.no_active_links", dict(node_id=2), 1),
])
def test_cluster_patterns(name, params, count):
    assert len(matching(pattern(name, **params), CLUSTER_LOG)) == count


def test_joined_and_left_lists_are_told_apart():
    both = "corosync[700]:   [TOTEM ] A new membership (1.10) was formed. Members joined: 3 left: 2"
    assert pattern("corosync.member_joined", node_id=3).search(both)
    assert not pattern("corosync.member_joined", node_id=2).search(both)
    assert pattern("corosync.member_left", node_id=2).search(both)
    assert not pattern("corosync.member_left", node_id=3).search(both)
    assert not pattern("corosync.member_left", node_id=1).search(
        "[TOTEM ] A new membership (1.10) was formed. Members left: 12")


def test_patterns_are_cached_but_distinct_per_parameters():
    a = pattern("pcmk.node_state", node="server1", state="lost")
    assert a is pattern("pcmk.node_state", state="lost", node="server1")
    assert a is not pattern("pcmk.node_state", node="server4", state="lost")
