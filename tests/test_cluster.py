"""The cluster object and the faults, on fake directors answering with recorded pacemaker output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from haconform.cluster import Cluster, NoClusterAnswer
from haconform.errors import HaconformError
from haconform.faults import NicDown, Standby, VipDeleted
from haconform.readers.cluster import parse_fence_list
from haconform.stages.model import load_stage
from haconform.topology import load_topology
from tests.fakes import FakeHost, FakeResult, read_sample

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY = load_topology(REPO / "fixtures" / "topology.yaml")
SPEC = load_stage(REPO / "fixtures" / "documented" / "stage5", TOPOLOGY).cluster
VIP_LINK = {"ifname": "eth0", "addr_info": [{"family": "inet", "local": TOPOLOGY.vip, "prefixlen": 24}]}


class Director:
    def __init__(self, name, *, crm_mon=None, holds_vip=False):
        self.name = name
        self.address = TOPOLOGY.host(name).address
        self.host = FakeHost(name=name)
        self.commands: list[str] = []
        if crm_mon is None:
            self.host.on(re.compile(r"crm_mon "), FakeResult(rc=102, stderr="not connected"))
        else:
            self.host.on(re.compile(r"crm_mon "), stdout=read_sample(f"pacemaker/{crm_mon}"))
        links = [{"ifname": "lo", "addr_info": []}] + ([VIP_LINK] if holds_vip else [])
        self.host.on("ip -j -4 addr show", stdout=json.dumps(links))

    def execute(self, command):
        self.commands.append(command)
        return self.host.run(command)

    def succeed(self, command):
        self.commands.append(command)
        return ""

    def block(self):
        self.commands.append("block")

    def unblock(self):
        self.commands.append("unblock")


class Deployment:
    def __init__(self, **directors):
        self.topology = TOPOLOGY
        self.vip = TOPOLOGY.vip
        self.machines = directors
        self.cluster_spec = SPEC

    @property
    def directors(self):
        return list(self.machines.values())

    def machine(self, name):
        return self.machines[name]


def running(server1="crm_mon_running.xml", server4="crm_mon_running.xml", holder="server1"):
    return Deployment(server1=Director("server1", crm_mon=server1, holds_vip=holder == "server1"),
                      server4=Director("server4", crm_mon=server4, holds_vip=holder == "server4"))


def test_the_group_node_and_the_active_director():
    deployment = running()
    cluster = Cluster(deployment)
    node = cluster.group_node()
    assert node in ("server1", "server4")
    assert cluster.active_director(timeout=1).name == node
    assert cluster.whole()


def test_state_comes_from_the_first_director_that_answers():
    deployment = running(server1=None)
    state, source = Cluster(deployment).state_and_source()
    assert source.name == "server4" and state.quorum


def test_no_director_answering_is_said_not_guessed():
    cluster = Cluster(running(server1=None, server4=None))
    with pytest.raises(NoClusterAnswer, match="no director answered crm_mon"):
        cluster.state()
    assert cluster.group_node() is None
    assert cluster.snapshot()["from"] is None


def test_vip_holders_are_read_from_each_director():
    assert Cluster(running(holder="server4")).vip_holders() == ["server4"]
    assert Cluster(running(holder=None)).vip_holders() == []


def test_fence_list_parses_fence_xvm_output():
    text = "Node1                            3c1f...  on\nNode4                            9a2e...  off\n"
    assert parse_fence_list(text) == {"Node1": "on", "Node4": "off"}


def test_faults_act_with_the_runbook_commands():
    deployment = running(holder="server1")
    victim = deployment.machine("server1")
    standby = Standby(deployment)
    assert standby.inject(victim) == "pcs node standby server1"
    standby.heal()
    assert victim.commands[-1] == "pcs node unstandby server1"
    action = VipDeleted(deployment).inject(victim)
    assert action == f"ip addr del {TOPOLOGY.vip}/24 dev eth0 on server1"
    nic = NicDown(deployment)
    nic.inject(victim)
    nic.heal()
    assert victim.commands[-2:] == ["block", "unblock"]


def test_deleting_the_vip_where_it_is_not_held_is_refused():
    deployment = running(holder="server4")
    with pytest.raises(HaconformError, match="holds no VIP"):
        VipDeleted(deployment).inject(deployment.machine("server1"))


def test_a_fault_without_a_victim_hits_the_active_director():
    deployment = running()
    fault = Standby(deployment)
    fault.inject()
    assert fault.victim.name == Cluster(deployment).group_node()
