"""Stages as data: the documented stages load, malformed ones get one clear error, the cluster spec compares."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from haconform.errors import HaconformError
from haconform.readers.cluster import parse_cib_configuration
from haconform.stages.cluster import ClusterDifference, cluster_differences
from haconform.stages.model import load_stage, parse_fence_virt_conf
from haconform.topology import load_topology

REPO = Path(__file__).resolve().parent.parent
DOCUMENTED = REPO / "fixtures" / "documented"
TOPOLOGY = load_topology(REPO / "fixtures" / "topology.yaml")
HOST_MAP = "server1:Node1;server4:Node4"


def stage(name: str):
    return load_stage(DOCUMENTED / name, TOPOLOGY)


def haproxy_agent(resource):
    return resource.agent_without_systemd or resource.agent


# ----- the documented stages ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["stage1", "stage2", "stage3", "stage4", "stage5"])
def test_documented_stages_load(name):
    loaded = stage(name)
    assert loaded.name == name
    assert loaded.files, "every stage puts files on hosts (stages 4-5 by inheritance)"
    assert loaded.is_cluster_stage == (name in ("stage4", "stage5"))


def test_stage4_inherits_stage3s_files_and_services():
    stage3, stage4 = stage("stage3"), stage("stage4")
    assert stage4.base == "stage3"
    key = lambda s: sorted((f.selector, f.dest, f.source) for f in s.files)
    assert key(stage4) == key(stage3)
    assert stage4.plan(TOPOLOGY)["server4"] == stage3.plan(TOPOLOGY)["server4"]
    assert stage4.services.keys() == stage3.services.keys()
    assert "cluster" in stage4.provides and "cluster" not in stage3.provides


def test_stage4_cluster_has_no_stonith():
    spec = stage("stage4").cluster
    assert spec.name == "TestCluster"
    assert spec.nodes == ("server1", "server4")
    assert spec.properties == {"stonith-enabled": "false"}
    assert spec.stonith == {} and spec.fencing is None


def test_stage5_spec():
    spec = stage("stage5").cluster
    assert spec.name == "TestCluster", "inherited from stage4"
    assert spec.properties["stonith-enabled"] == "true"
    assert spec.resource("vip").interval() == 30
    assert spec.resource("haproxy").interval() == 60
    assert spec.resource("haproxy").agents() == ("systemd:haproxy", "service:haproxy")
    assert spec.resource("fence").id == "vmfence" and spec.resource("fence").interval() == 30
    assert spec.host_map() == {"server1": "Node1", "server4": "Node4"}
    assert dict(spec.resource("vip").params) == {"ip": TOPOLOGY.vip, "cidr_netmask": "24"}
    assert spec.group_id == "hagroup" and spec.group_ids() == ["VIP", "haproxy"]
    fencing = spec.fencing
    assert (fencing.multicast_address, fencing.port, fencing.key_file, fencing.key_bytes) == \
        ("225.0.0.12", 1229, "/etc/cluster/fence_xvm.key", 128)
    assert fencing.fence_virtd_conf == DOCUMENTED / "stage5" / "fence_virt.conf"
    with pytest.raises(KeyError, match="no resource with role 'web'"):
        spec.resource("web")


def test_fence_virt_conf_is_read_by_block():
    conf = parse_fence_virt_conf((DOCUMENTED / "stage5" / "fence_virt.conf").read_text())
    assert conf["fence_virtd"]["listener"] == "multicast"
    assert conf["listeners.multicast"] == {"key_file": "/etc/cluster/fence_xvm.key", "address": "225.0.0.12",
                                           "interface": "br0", "family": "ipv4", "port": "1229"}
    assert conf["backends.libvirt"] == {"uri": "qemu:///system"}


def test_renamed_maps_ids_and_the_group():
    spec = stage("stage5").cluster
    renamed = spec.renamed({"VIP": "WebIP", "haproxy": "lb", "hagroup": "web", "vmfence": "fencer", "app": "x"})
    assert renamed.resource("vip").id == "WebIP"
    assert renamed.resource("haproxy").id == "lb"
    assert renamed.resource("fence").id == "fencer"
    assert renamed.group_id == "web"
    assert renamed.group_ids() == ["WebIP", "lb"]
    assert renamed.group_members == spec.group_members == ("vip", "haproxy")
    assert renamed.host_map() == spec.host_map()
    assert spec.resource("vip").id == "VIP", "the documented spec is unchanged"
    assert spec.renamed({}) is spec


# ----- malformed stage.yaml -----------------------------------------------------------------

@pytest.fixture
def config(tmp_path) -> Path:
    """A copy of the documented configuration directory to break."""
    return Path(shutil.copytree(DOCUMENTED, tmp_path / "config"))


def edit(config: Path, name: str, old: str, new: str) -> Path:
    path = config / name / "stage.yaml"
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))
    return path


def refused(directory: Path) -> str:
    with pytest.raises(HaconformError) as caught:
        load_stage(directory, TOPOLOGY)
    assert type(caught.value) is HaconformError
    return str(caught.value)


def assert_names(message: str, path: Path, key: str):
    assert str(path) in message, message
    assert key in message, message
    assert "fix" in message, message


# (edited stage, old text, new text, stage loaded, key named, words the message must hold)
MALFORMED = {
    "unknown top-level key": ("stage3", "title:", "colour: blue\ntitle:", "stage3", "(top level)", ["colour"]),
    "bad interval": ("stage4", "interval: 30s", "interval: 30 parsecs", "stage4",
                     "cluster.resources.vip.operations[0].interval", []),
    "bad interval in a base stage names the base file": (
        "stage4", "interval: 60s", "interval: 60 parsecs", "stage5",
        "cluster.resources.haproxy.operations[0].interval", []),
    "group member that is not a resource role": (
        "stage4", "members: [vip, haproxy]", "members: [vip, VIP]", "stage4", "cluster.group.members", ["'VIP'"]),
    "host map naming a node outside the cluster": (
        "stage5", f'pcmk_host_map: "{HOST_MAP}"', 'pcmk_host_map: "server1:Node1;server2:Node2"', "stage5",
        "cluster.stonith.fence.params.pcmk_host_map", ["'server2'"]),
    "host map domain disagreeing with the topology": (
        "stage5", f'pcmk_host_map: "{HOST_MAP}"', 'pcmk_host_map: "server1:Node1;server4:Node9"', "stage5",
        "cluster.stonith.fence.params.pcmk_host_map", ["Node9", "'Node4'", "fence_name"]),
    "unknown base": ("stage4", "base: stage3", "base: stage9", "stage4", "base", ["'stage9'"]),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_stage_yaml_is_refused_naming_file_and_key(config, case):
    edited, old, new, loaded, key, words = MALFORMED[case]
    path = edit(config, edited, old, new)
    message = refused(config / loaded)
    assert_names(message, path, key)
    for word in words:
        assert word in message, message


def test_host_map_pairs_without_a_colon_are_read_or_refused_clearly(config):
    path = edit(config, "stage5", f'pcmk_host_map: "{HOST_MAP}"', 'pcmk_host_map: "server1=Node1;server4=Node4"')
    try:
        spec = load_stage(config / "stage5", TOPOLOGY).cluster
    except HaconformError as exc:
        assert_names(str(exc), path, "cluster.stonith.fence.params.pcmk_host_map")
    else:
        assert spec.host_map() == {"server1": "Node1", "server4": "Node4"}


def test_missing_fence_virt_conf(config):
    (config / "stage5" / "fence_virt.conf").unlink()
    path = config / "stage5" / "stage.yaml"
    message = refused(config / "stage5")
    assert_names(message, path, "fencing.fence_virtd_conf")
    assert "fence_virt.conf" in message


def test_base_cycle(config):
    edit(config, "stage3", "base: stage2", "base: stage4")
    message = refused(config / "stage4")
    assert "cycle" in message and "stage3" in message and "stage4" in message, message
    assert "base" in message and "fix" in message, message
    assert str(config / "stage4" / "stage.yaml") in message or str(config / "stage3" / "stage.yaml") in message


def test_yaml_syntax_error_names_the_line(config):
    path = config / "stage3" / "stage.yaml"
    lines = path.read_text().splitlines()
    lines.insert(3, "subtitle: a: b")      # line 4: a mapping value where none may be
    path.write_text("\n".join(lines) + "\n")
    message = refused(config / "stage3")
    assert f"{path}:4:" in message, message
    assert "YAML" in message and "fix" in message


def test_a_malformed_base_fails_the_stage_built_on_it(config):
    path = edit(config, "stage3", "title:", "colour: blue\ntitle:")
    assert_names(refused(config / "stage5"), path, "(top level)")


# ----- the spec against a CIB ---------------------------------------------------------------

def cib(*, vip_interval="30s", order=("VIP", "haproxy"), stonith_enabled="false", host_map=None,
        vip_ip=TOPOLOGY.vip) -> str:
    primitives = {
        "VIP": f"""
      <primitive id="VIP" class="ocf" provider="heartbeat" type="IPaddr2">
        <instance_attributes id="VIP-instance_attributes">
          <nvpair id="VIP-instance_attributes-cidr_netmask" name="cidr_netmask" value="24"/>
          <nvpair id="VIP-instance_attributes-ip" name="ip" value="{vip_ip}"/>
        </instance_attributes>
        <operations>
          <op id="VIP-monitor-interval-{vip_interval}" interval="{vip_interval}" name="monitor"/>
          <op id="VIP-start-interval-0s" interval="0s" name="start" timeout="20s"/>
        </operations>
      </primitive>""",
        "haproxy": """
      <primitive id="haproxy" class="service" type="haproxy">
        <operations>
          <op id="haproxy-monitor-interval-60s" interval="60s" name="monitor"/>
        </operations>
      </primitive>""",
    }
    stonith = "" if host_map is None else f"""
    <primitive id="vmfence" class="stonith" type="fence_xvm">
      <instance_attributes id="vmfence-instance_attributes">
        <nvpair id="vmfence-instance_attributes-pcmk_host_map" name="pcmk_host_map" value="{host_map}"/>
      </instance_attributes>
      <operations>
        <op id="vmfence-monitor-interval-30s" interval="30s" name="monitor"/>
      </operations>
    </primitive>"""
    return f"""<configuration>
  <crm_config>
    <cluster_property_set id="cib-bootstrap-options">
      <nvpair id="cib-bootstrap-options-have-watchdog" name="have-watchdog" value="false"/>
      <nvpair id="cib-bootstrap-options-cluster-name" name="cluster-name" value="TestCluster"/>
      <nvpair id="cib-bootstrap-options-stonith-enabled" name="stonith-enabled" value="{stonith_enabled}"/>
    </cluster_property_set>
  </crm_config>
  <nodes>
    <node id="1" uname="server1"/>
    <node id="2" uname="server4"/>
  </nodes>
  <resources>
    <group id="hagroup">{''.join(primitives[p] for p in order)}
    </group>{stonith}
  </resources>
  <constraints/>
</configuration>"""


def differences(spec, xml):
    return cluster_differences(spec, parse_cib_configuration(xml), haproxy_agent_for=haproxy_agent)


def test_a_conforming_cib_has_no_differences():
    assert differences(stage("stage4").cluster, cib()) == []
    assert differences(stage("stage5").cluster, cib(stonith_enabled="true", host_map=HOST_MAP)) == []


def test_the_systemd_agent_is_accepted_too():
    xml = cib().replace('class="service" type="haproxy"', 'class="systemd" type="haproxy"')
    assert differences(stage("stage4").cluster, xml) == []


def test_a_changed_monitor_interval_is_one_difference_with_its_repair():
    found = differences(stage("stage4").cluster, cib(vip_interval="300s"))
    assert len(found) == 1, found
    difference = found[0]
    assert isinstance(difference, ClusterDifference)
    assert (difference.expected, difference.found) == ("30s", "300s")
    assert "VIP" in difference.what and "monitor" in difference.what
    assert "VIP" in difference.where
    assert difference.repair == (("pcs", "resource", "update", "VIP", "op", "monitor", "interval=30s"),)


def test_the_same_interval_in_other_units_is_no_difference():
    assert differences(stage("stage4").cluster, cib(vip_interval="30000ms")) == []


def test_a_changed_parameter_is_updated():
    found = differences(stage("stage4").cluster, cib(vip_ip="172.25.5.101"))
    assert [(d.expected, d.found, d.repair) for d in found] == [
        (TOPOLOGY.vip, "172.25.5.101", (("pcs", "resource", "update", "VIP", f"ip={TOPOLOGY.vip}"),))]


def test_a_changed_host_map_is_updated():
    found = differences(stage("stage5").cluster, cib(stonith_enabled="true", host_map="server1:Node4;server4:Node1"))
    assert len(found) == 1, found
    assert (found[0].expected, found[0].found) == (HOST_MAP, "server1:Node4;server4:Node1")
    assert found[0].repair == (("pcs", "stonith", "update", "vmfence", f"pcmk_host_map={HOST_MAP}"),)


def test_a_missing_stonith_device_is_created_before_stonith_is_enabled():
    found = differences(stage("stage5").cluster, cib())
    assert [d.what for d in found][-1] == "property stonith-enabled"
    assert len(found) == 2, found
    device, enable = found
    assert device.found == "missing" and device.expected == "stonith:fence_xvm"
    assert device.repair == (("pcs", "stonith", "create", "vmfence", "fence_xvm", f"pcmk_host_map={HOST_MAP}",
                              "op", "monitor", "interval=30s"),)
    assert (enable.expected, enable.found) == ("true", "false")
    assert enable.repair == (("pcs", "property", "set", "stonith-enabled=true"),)


def test_a_group_in_the_wrong_order_is_regrouped():
    found = differences(stage("stage4").cluster, cib(order=("haproxy", "VIP")))
    assert len(found) == 1, found
    assert (found[0].expected, found[0].found) == ("VIP haproxy", "haproxy VIP")
    assert found[0].repair == (("pcs", "resource", "ungroup", "hagroup"),
                               ("pcs", "resource", "group", "add", "hagroup", "VIP", "haproxy"))


def test_properties_come_last():
    found = differences(stage("stage5").cluster, cib(vip_interval="300s", order=("haproxy", "VIP")))
    whats = [d.what for d in found]
    assert len(whats) == 4, whats
    assert whats[-1] == "property stonith-enabled"
    assert not any(w.startswith("property") for w in whats[:-1]), whats


def test_a_renamed_deployment_conforms_to_the_renamed_spec():
    names = {"VIP": "WebIP", "haproxy": "lb", "hagroup": "web", "vmfence": "fencer"}
    xml = cib(stonith_enabled="true", host_map=HOST_MAP)
    for ours, theirs in names.items():
        xml = xml.replace(f'id="{ours}"', f'id="{theirs}"')
    spec = stage("stage5").cluster
    assert differences(spec, xml), "the documented ids are not the deployment's"
    assert differences(spec.renamed(names), xml) == []


# ----- what the topology no longer holds ----------------------------------------------------

def topology_with(tmp_path, **changes) -> Path:
    data = yaml.safe_load((REPO / "fixtures" / "topology.yaml").read_text())
    for key, value in changes.items():
        data[key] = value
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_topology_refuses_a_cluster_name(tmp_path):
    path = topology_with(tmp_path, cluster={"nodes": ["server1", "server4"], "name": "X"})
    with pytest.raises(HaconformError) as caught:
        load_topology(path)
    message = str(caught.value)
    assert str(path) in message and "cluster.name" in message and "fix" in message
    assert "stage4/stage.yaml" in caught.value.fix


def test_topology_refuses_fence_settings(tmp_path):
    path = topology_with(tmp_path, fence={"multicast_address": "225.0.0.12", "port": 1229})
    with pytest.raises(HaconformError) as caught:
        load_topology(path)
    message = str(caught.value)
    assert str(path) in message and "fence" in message and "fix" in message
    assert "stage5" in caught.value.fix and "stage data" in caught.value.what
