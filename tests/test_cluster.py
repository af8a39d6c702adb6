"""The cluster object and the faults, on fake directors answering with recorded pacemaker output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from haconform import deadman
from haconform.cluster import Cluster, NoClusterAnswer, cleanup_command, property_command, unstandby_command
from haconform.errors import HaconformError
from haconform.faults import Crash, NicDown, PropertyChange, Reset, ServiceStop, Standby, VipDeleted
from haconform.readers.cluster import parse_fence_list
from haconform.stages.model import load_stage
from haconform.topology import load_topology
from tests.fakes import FakeHost, FakeResult, GuardedFake, read_sample

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY = load_topology(REPO / "fixtures" / "topology.yaml")
SPEC = load_stage(REPO / "fixtures" / "documented" / "stage5", TOPOLOGY).cluster
STAGE1_SPEC = None   # before the cluster stage: no documented cluster
VIP_LINK = {"ifname": "eth0", "addr_info": [{"family": "inet", "local": TOPOLOGY.vip, "prefixlen": 24}]}


class Director:
    def __init__(self, name, *, crm_mon=None, holds_vip=False, cib="cib_running.xml"):
        self.name = name
        self.address = TOPOLOGY.host(name).address
        self.host = FakeHost(name=name)
        self.commands: list[str] = []
        if crm_mon is None:
            self.host.on(re.compile(r"crm_mon "), FakeResult(rc=102, stderr="not connected"))
        else:
            self.host.on(re.compile(r"crm_mon "), stdout=read_sample(f"pacemaker/{crm_mon}"))
        self.host.on(re.compile(r"cibadmin --query --scope configuration"), stdout=read_sample(f"pacemaker/{cib}"))
        links = [{"ifname": "lo", "addr_info": []}] + ([VIP_LINK] if holds_vip else [])
        self.host.on(re.compile(r"ip -j -4 addr show"), stdout=f"boot-of-{name}\n" + json.dumps(links))

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

    def reset(self):
        self.commands.append("reset")

    def crash(self):
        self.commands.append("crash")


class Deployment:
    def __init__(self, **directors):
        self.topology = TOPOLOGY
        self.vip = TOPOLOGY.vip
        self.machines = directors
        self.cluster_spec = SPEC
        self.target = SwitchRecorder(self)   # dead-man switches recorded, not started

    @property
    def directors(self):
        return list(self.machines.values())

    def machine(self, name):
        return self.machines[name]


class SwitchRecorder(GuardedFake):
    """The deployment's target, as far as dead-man switches go: arm() is recorded, and lands in the
    host's command list too, so a test sees whether the switch came BEFORE the change."""

    def __init__(self, deployment):
        self.deployment = deployment
        self.armed: list[tuple[str, str]] = []
        self.backstops: list[int] = []


@pytest.fixture(autouse=True)
def recorded_switches(monkeypatch):
    def arm(target, host, undo, *, what, backstop_s):
        target.armed.append((host, undo))
        target.backstops.append(backstop_s)
        target.deployment.machine(host).commands.append(f"ARM {undo}")
        return ("switch", host, undo)
    monkeypatch.setattr(deadman, "arm", arm)


def running(server1="crm_mon_running.xml", server4="crm_mon_running.xml", holder="server1", cib="cib_running.xml"):
    return Deployment(server1=Director("server1", crm_mon=server1, holds_vip=holder == "server1", cib=cib),
                      server4=Director("server4", crm_mon=server4, holds_vip=holder == "server4", cib=cib))


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


def test_each_answer_says_which_kernel_gave_it():
    # one command per director: the boot id first, then the address table (a reboot shows as a new boot id)
    deployment = running(holder="server1")
    survey = Cluster(deployment).vip_survey()
    assert survey.boot_ids == {"server1": "boot-of-server1", "server4": "boot-of-server4"}
    assert deployment.machine("server1").commands[-1] == "cat /proc/sys/kernel/random/boot_id && ip -j -4 addr show"


class PowerControl:
    """A target whose power control has some hosts off."""

    def __init__(self, *down):
        self.down = set(down)

    def known_down(self, name):
        return name in self.down


def cut_off(director, *, target=None):
    """director answers nothing (its transport fails); target: what its power control says of it."""
    def unreachable(command):
        raise HaconformError(f"ssh to {director.name}: Connection timed out")
    director.execute = unreachable
    director.target = target
    return director


def test_a_director_that_cannot_be_asked_is_unknown_never_not_holding():
    deployment = running(holder="server1")
    cut_off(deployment.machine("server4"), target=PowerControl())
    cluster = Cluster(deployment)
    survey = cluster.vip_survey()
    assert survey.holders == ("server1",) and not survey.complete
    assert survey.unasked == {"server4": f"server4 could not be asked whether it holds {TOPOLOGY.vip}: "
                                         "HaconformError: ssh to server4: Connection timed out"}
    with pytest.raises(HaconformError) as caught:
        cluster.vip_holders()
    assert str(caught.value) == (f"haconform.cluster: VIP holders unknown: server4 could not be asked whether it "
                                 f"holds {TOPOLOGY.vip}: HaconformError: ssh to server4: Connection timed out "
                                 "(holding it among those asked: ['server1'])")


def test_a_director_its_power_control_has_off_holds_nothing():
    deployment = running(holder="server1")
    cut_off(deployment.machine("server4"), target=PowerControl("server4"))
    assert Cluster(deployment).vip_survey().complete
    assert Cluster(deployment).vip_holders() == ["server1"]


def test_a_director_printing_garbage_is_not_asked():
    deployment = running(holder="server1")
    deployment.machine("server4").host.on(re.compile(r"ip -j -4 addr show"), stdout="Segmentation fault")
    assert list(Cluster(deployment).vip_survey().unasked) == ["server4"]


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


# ----- dead-man switches: each fault that changes cluster state arms one, before the change -------------

def cib_with_stonith(value: str) -> str:
    return read_sample("pacemaker/cib_running.xml").replace(
        '<nvpair id="cib-bootstrap-options-cluster-name"',
        f'<nvpair id="cib-bootstrap-options-stonith-enabled" name="stonith-enabled" value="{value}"/>'
        '<nvpair id="cib-bootstrap-options-cluster-name"')


def test_standby_arms_unstandby_on_the_victim_before_the_change():
    deployment = running()
    victim = deployment.machine("server1")
    Standby(deployment).inject(victim)
    assert deployment.target.armed == [("server1", "pcs node unstandby server1")]
    assert victim.commands == ["ARM pcs node unstandby server1", "pcs node standby server1"]
    assert unstandby_command("server1") == "pcs node unstandby server1"   # what restore runs too


def test_stopping_a_service_the_cluster_runs_arms_a_cleanup_of_its_resource():
    deployment = running()
    victim = deployment.machine("server1")
    ServiceStop(deployment).inject(victim)
    assert victim.commands == [f"ARM {cleanup_command('haproxy')}", "systemctl stop haproxy"]
    assert cleanup_command("haproxy") == "pcs resource cleanup haproxy"


def test_stopping_a_service_outside_the_cluster_arms_its_start():
    deployment = running()
    deployment.cluster_spec = STAGE1_SPEC
    server = deployment.machine("server4")
    ServiceStop(deployment, service="apache2").inject(server)
    assert server.commands == ["ARM systemctl start apache2", "systemctl stop apache2"]


@pytest.mark.parametrize("in_cib, undo", [
    ("true", "pcs property set stonith-enabled=true"),
    (None, "pcs property unset stonith-enabled"),
])
def test_a_property_change_arms_the_recorded_value_and_heals_to_it(in_cib, undo):
    deployment = running()
    via = deployment.machine("server4")
    if in_cib is not None:
        via.host.on(re.compile(r"cibadmin --query"), stdout=cib_with_stonith(in_cib))
    change = PropertyChange(deployment, "stonith-enabled", "false")
    action = change.inject(via)
    assert via.commands == [f"ARM {undo}", "pcs property set stonith-enabled=false"]
    assert action.startswith("pcs property set stonith-enabled=false on server4 (was ")
    change.heal()
    assert via.commands[-1] == undo == property_command("stonith-enabled", in_cib)


@pytest.mark.parametrize("make", [Standby, lambda deployment: PropertyChange(deployment, "stonith-enabled", "false")])
def test_a_fault_heals_with_the_very_line_its_dead_man_switch_would_run(make):
    """One source of undo commands (the nemesis's heal steps): heal() and the switch cannot disagree."""
    deployment = running()
    victim = deployment.machine("server1")
    fault = make(deployment)
    fault.inject(victim)
    fault.heal()
    [(host, armed)] = deployment.target.armed
    assert host == victim.name and victim.commands[-1] == armed == fault.heal_step().command


@pytest.mark.parametrize("fault", [VipDeleted, NicDown, Reset, Crash])
def test_faults_the_cluster_or_restore_heal_arm_nothing(fault):
    deployment = running(holder="server1")
    fault(deployment).inject(deployment.machine("server1"))
    assert deployment.target.armed == []


def test_a_switch_that_cannot_arm_stops_the_fault_before_the_change(monkeypatch):
    def refuse(target, host, undo, *, what, backstop_s):
        raise HaconformError(f"the dead-man switch on {host} did not arm")
    monkeypatch.setattr(deadman, "arm", refuse)
    deployment = running()
    victim = deployment.machine("server1")
    with pytest.raises(HaconformError, match="did not arm"):
        Standby(deployment).inject(victim)
    assert victim.commands == []


def test_rejoin_noise_is_allowed_only_once_the_fault_recorded_its_window():
    deployment = running()
    reset = Reset(deployment)
    assert reset.excused_lines and all(a.span is None for a in reset.excused_lines)   # no window: excuses nothing
    reset.inject(deployment.machine("server4"))
    assert all(a.span is None for a in reset.excused_lines)
    reset.rejoined()
    assert {a.span for a in reset.excused_lines} == {(reset.injected_at, reset.rejoined_at)}
    assert Standby(deployment).excused_lines == ()


def test_a_change_meant_to_last_gets_a_longer_backstop():
    """perf keeps a fault for its whole phase: the switch must not fire under a live harness."""
    deployment = running()
    Standby(deployment).inject(deployment.machine("server1"), lasts_s=900)
    assert deployment.target.backstops == [deadman.dead_man_s() + 900]
