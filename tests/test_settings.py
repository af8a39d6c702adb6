"""Key paths: every documented setting and every difference named the same way (haconform/stages/settings.py)."""

from __future__ import annotations

from pathlib import Path

from haconform.stages.semantic import compare_haproxy, compare_limits, compare_rsyslog
from haconform.stages.settings import documented_settings
from tests.test_stage_model import DOCUMENTED, TOPOLOGY, cib, differences, stage

STAGE3_CFG = (DOCUMENTED / "stage3" / "role-director" / "etc" / "haproxy" / "haproxy.cfg").read_text()


def settings_of(name: str) -> dict[str, str]:
    return {s.key: s.value for s in documented_settings(stage(name))}


def haproxy(found: str):
    return compare_haproxy(STAGE3_CFG, found, expected_source="runbook.cfg", found_source="deployed.cfg")


def test_a_stage_lists_its_directives_and_cluster_keys():
    stage2 = settings_of("stage2")
    assert stage2["haproxy.cfg[defaults].timeout server"] == "1m"
    assert stage2["haproxy.cfg[defaults].retries"] == "3"
    assert "haproxy.cfg[defaults].option redispatch" in stage2
    assert stage2["haproxy.cfg[frontend main].acl url_static"].startswith("path_beg -i /static")
    assert stage2["haproxy.cfg[frontend main].use_backend[1]"] == "use_backend static if url_static"
    assert stage2["limits.conf[haproxy hard nofile]"] == "65535"
    assert "rsyslog[local2 -> /var/log/haproxy.log]" in stage2
    assert stage2["rsyslog[imudp port]"] == "514"
    assert not any(key.startswith("cluster.") for key in stage2)
    stage5 = settings_of("stage5")
    assert stage5["cluster.resources.vip.operations[monitor].interval"] == "30s"
    assert stage5["cluster.resources.vip.params.ip"] == TOPOLOGY.vip
    assert stage5["cluster.group.members"] == "vip haproxy"
    assert stage5["cluster.properties.stonith-enabled"] == "true"
    assert stage5["cluster.stonith.fence.params.pcmk_host_map"] == "server1:Node1;server4:Node4"
    assert stage5["fencing.key_file"] == "/etc/cluster/fence_xvm.key"
    assert "haproxy.cfg[defaults].timeout server" in stage5   # cumulative: stage 3's files stay


def test_each_difference_carries_the_key_of_its_setting():
    changed = (STAGE3_CFG.replace("timeout client          1m", "timeout client 30s")
               .replace("    acl write method POST\n", "")
               .replace("use_backend static \t\tif write", "use_backend app if write")
               .replace("    stats uri /status\n", "    stats uri /status\n    stats refresh 10s\n"))
    keys = {d.key: d.found for d in haproxy(changed)}
    assert keys == {"haproxy.cfg[defaults].timeout client": "30s",
                    "haproxy.cfg[frontend main].acl write": "method PUT",
                    "haproxy.cfg[frontend main].use_backend[1]": "use_backend app if write",
                    "haproxy.cfg[listen stats].stats refresh": "stats refresh 10s"}
    documented = settings_of("stage3")
    assert {key for key in keys if key in documented} == {
        "haproxy.cfg[defaults].timeout client", "haproxy.cfg[frontend main].acl write",
        "haproxy.cfg[frontend main].use_backend[1]"}   # `stats refresh` is the deployment's own, not documented
    [section] = haproxy(STAGE3_CFG.replace("backend static\n", "backend other\n"))[:1]
    assert section.key == "haproxy.cfg[backend static]" and section.found == "missing"


def test_limits_rsyslog_and_cluster_differences_are_keyed():
    [limit] = compare_limits("haproxy - nofile 65535\n", "haproxy soft nofile 65535\nhaproxy hard nofile 1024\n",
                             expected_source="a", found_source="b")
    assert (limit.key, limit.found) == ("limits.conf[haproxy hard nofile]", "1024")
    expected = "$ModLoad imudp\n$UDPServerRun 514\nlocal2.* /var/log/haproxy.log\n"
    [port] = compare_rsyslog(expected, expected.replace("514", "515"), expected_source="a", found_source="b")
    assert (port.key, port.found) == ("rsyslog[imudp port]", "515")
    [route] = compare_rsyslog(expected, expected.replace("local2", "local3"), expected_source="a", found_source="b")
    assert route.key == "rsyslog[local2 -> /var/log/haproxy.log]"
    [interval] = differences(stage("stage4").cluster, cib(vip_interval="20s"))
    assert (interval.key, interval.found) == ("cluster.resources.vip.operations[monitor].interval", "20s")
    assert interval.row()["key"] == interval.key
    [ip] = differences(stage("stage4").cluster, cib(vip_ip="172.25.5.101"))
    assert ip.key == "cluster.resources.vip.params.ip"
    found = differences(stage("stage5").cluster, cib(host_map="server1:Node4;server4:Node1"))
    assert {d.key for d in found} == {"cluster.stonith.fence.params.pcmk_host_map",
                                      "cluster.properties.stonith-enabled"}
    assert {d.key for d in found} <= set(settings_of("stage5"))


def test_settings_hold_no_path_of_this_machine():
    """Key paths are the same on every checkout: what a waiver file written elsewhere names."""
    assert not [key for key in settings_of("stage5") if str(Path(__file__).parent.parent) in key]
