"""Restore after destructive tests, against fake hosts: what is recorded, what is done, when the session stops."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from haconform import restore as restore_module
from haconform.errors import HaconformError
from haconform.restore import ClusterView, cluster_differences, restore, take_snapshot
from haconform.topology import load_topology
from tests.fakes import FakeHost, FakeResult, GuardedFake

TOPOLOGY = load_topology()
DOCUMENTED = Path(__file__).resolve().parent.parent / "fixtures" / "documented"
pytest_plugins = ["pytester"]


def view(**changes) -> ClusterView:
    base = dict(online=["server1", "server4"], standby=[],
                started={"VIP": ["server1"], "haproxy": ["server1"], "vmfence": ["server4"]},
                groups={"hagroup": ["VIP", "haproxy"]},
                options={"stonith_enabled": True, "maintenance_mode": False}, quorum=True, dc="server1")
    base.update(changes)
    return ClusterView(**base)


class FakeService:
    def __init__(self, host, name):
        self.host, self.name = host, name

    @property
    def is_running(self):
        return self.host.running.get(self.name, False)


class ServiceHost(FakeHost):
    def __init__(self, name, running=None):
        super().__init__(name=name)
        self.running = dict(running or {})
        self.on(re.compile(r"^service (\S+) start$"), self._start)

    def _start(self, command):
        self.running[command.split()[1]] = True
        return FakeResult()

    def service(self, name):
        return FakeService(self, name)


@dataclass
class FakeMachine:
    name: str
    role: str
    host: ServiceHost
    target: "FakeTarget"

    def execute(self, command):
        return self.host.run(command)

    def succeed(self, command):
        result = self.host.run(command)
        assert result.rc == 0
        return result.stdout

    def power_on(self):
        self.target.power_on(self.name)

    def unblock(self):
        self.target.nic[self.name] = "up"
        self.target.actions.append(f"unblock {self.name}")


@dataclass
class FakeTarget(GuardedFake):
    power: dict = field(default_factory=dict)
    nic: dict = field(default_factory=dict)
    can_power_on: bool = True
    actions: list = field(default_factory=list)

    def power_state(self, name):
        return self.power.get(name, "on")

    def nic_state(self, name):
        return self.nic.get(name, "up")

    def power_on(self, name):
        if not self.can_power_on:
            raise HaconformError("an existing deployment has no power switch")
        self.power[name] = "on"
        self.actions.append(f"power on {name}")


class FakeDeployment:
    def __init__(self, target=None):
        self.topology = TOPOLOGY
        self.target = target or FakeTarget()
        running = {"director": {"rsyslog": True, "haproxy": True}, "realserver": {"rsyslog": True, "apache2": True}}
        self.machines = {spec.name: FakeMachine(spec.name, spec.role, ServiceHost(spec.name, running.get(spec.role)),
                                                self.target)
                         for spec in TOPOLOGY.hosts.values()}

    def _role(self, role):
        return [m for m in self.machines.values() if m.role == role]

    directors = property(lambda self: self._role("director"))
    realservers = property(lambda self: self._role("realserver"))


@pytest.fixture
def views(monkeypatch):
    """The cluster's answers to crm_mon, in order (the last one repeats)."""
    answers: list = [view()]

    def read(deployment):
        current = answers.pop(0) if len(answers) > 1 else answers[0]
        return current, (deployment.directors[0] if current else None)
    monkeypatch.setattr(restore_module, "read_cluster_view", read)
    return answers


def test_snapshot_records_power_nics_services_and_cluster(views):
    deployment = FakeDeployment()
    snapshot = take_snapshot(deployment)
    assert snapshot.power == {"server1": "on", "server4": "on", "server2": "on", "server3": "on"}
    assert snapshot.nics["server1"] == "up"
    # haproxy belongs to the cluster once there is one: not recorded per host
    assert snapshot.services["server1"] == {"rsyslog": True}
    assert snapshot.services["server2"] == {"rsyslog": True, "apache2": True}
    assert snapshot.cluster.started["VIP"] == ["server1"]


def test_snapshot_without_a_cluster_records_haproxy_per_host(views):
    views[:] = [None]
    snapshot = take_snapshot(FakeDeployment())
    assert snapshot.cluster is None and snapshot.services["server1"] == {"rsyslog": True, "haproxy": True}


def test_nothing_to_do_when_nothing_changed(views):
    deployment = FakeDeployment()
    before = take_snapshot(deployment)
    outcome = restore(deployment, before)
    assert outcome.actions == [] and outcome.problems == []
    assert not any("pcs" in c for m in deployment.machines.values() for c in m.host.commands)


def test_moved_group_is_not_a_difference():
    moved = view(started={"VIP": ["server4"], "haproxy": ["server4"], "vmfence": ["server1"]})
    assert cluster_differences(view(), moved) == []


@pytest.mark.parametrize("now, expected", [
    (view(online=["server1"]), "nodes not online: ['server4']"),
    (view(standby=["server4"]), "nodes in standby: ['server4']"),
    (view(started={"VIP": ["server1"], "haproxy": ["server1"]}), "resources not started: ['vmfence']"),
    (view(started={"VIP": ["server1"], "haproxy": ["server4"], "vmfence": ["server4"]}), "group hagroup"),
    (view(started={"VIP": ["server1", "server4"], "haproxy": ["server1", "server4"], "vmfence": ["server4"]}),
     "group hagroup"),
    (view(options={"stonith_enabled": False, "maintenance_mode": False}), "stonith-enabled is False, was True"),
    (view(quorum=False, dc=None), "no quorum or no DC"),
    (None, "no director answers crm_mon"),
])
def test_each_cluster_difference_is_named(now, expected):
    problems = cluster_differences(view(), now)
    assert any(expected in p for p in problems), problems


def test_group_not_whole_before_is_not_demanded_after():
    split = view(started={"VIP": ["server1"], "vmfence": ["server4"]})
    assert cluster_differences(split, split) == []


def test_restore_unstandbys_resets_properties_cleans_up_and_waits(views):
    deployment = FakeDeployment()
    before = take_snapshot(deployment)
    first = deployment.directors[0].host
    first.on(re.compile(r"^pcs "), stdout="")
    broken = view(standby=["server1"], options={"stonith_enabled": False, "maintenance_mode": False},
                  started={"VIP": ["server4"], "haproxy": ["server4"]})
    views[:] = [broken, broken, broken, view(started={"VIP": ["server4"], "haproxy": ["server4"], "vmfence": ["server1"]})]
    outcome = restore(deployment, before, settle_timeout=5)
    assert outcome.problems == []
    assert outcome.actions == ["pcs node unstandby server1", "pcs property set stonith-enabled=true",
                               "pcs resource cleanup"]
    assert first.commands[-3:] == outcome.actions


def test_restore_powers_on_plugs_nics_and_starts_services(views):
    target = FakeTarget(power={"server4": "crashed"}, nic={"server1": "up"})
    deployment = FakeDeployment(target)
    before = take_snapshot(deployment)
    before.power["server4"] = "on"            # as it was before the test crashed it
    before.services["server4"] = {"rsyslog": True}
    target.nic["server1"] = "down"
    deployment.machines["server2"].host.running["apache2"] = False
    outcome = restore(deployment, before, settle_timeout=5)
    assert target.actions == ["unblock server1", "power on server4"] or \
        set(target.actions) == {"unblock server1", "power on server4"}
    assert "started apache2 on server2" in outcome.actions and outcome.problems == []
    assert deployment.machines["server2"].host.running["apache2"]


def crashed_server4_without_power_on(views):
    """A deployment whose server4 crashed on a target that cannot power it on: restore must fail."""
    target = FakeTarget(can_power_on=False)
    deployment = FakeDeployment(target)
    before = take_snapshot(deployment)
    target.power["server4"] = "crashed"
    deployment.directors[0].host.on(re.compile(r"^pcs "), stdout="")
    views[:] = [view(online=["server1"])]
    return target, deployment, before


def test_what_cannot_be_restored_is_reported(views):
    target, deployment, before = crashed_server4_without_power_on(views)
    outcome = restore(deployment, before, settle_timeout=0.5)
    assert any("server4 is off and cannot be powered on" in p for p in outcome.problems), outcome.problems
    assert any("nodes not online: ['server4']" in p for p in outcome.problems), outcome.problems


def test_fixture_stops_the_session_when_restore_fails(pytester):
    pytester.makeconftest("""
        import pytest
        from haconform.restore import Restoration, Snapshot
        import fixtures.restore as restore_fixture

        pytest_plugins = ["fixtures.restore"]

        @pytest.fixture
        def deployment():
            return object()

        @pytest.fixture
        def evidence():
            class E:
                def data(self, title, value): pass
            return E()

        def pytest_configure(config):
            config.addinivalue_line("markers", "destructive: x")
            restore_fixture.take_snapshot = lambda d: Snapshot()
            restore_fixture.restore = lambda d, before: Restoration(actions=["pcs resource cleanup"],
                                                                   problems=["nodes not online: ['server4']"])
    """)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.destructive
        def test_one():
            pass

        def test_two():
            pass
    """)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--config", str(DOCUMENTED),
                                          "--history-dir", str(pytester.path / "h"))
    assert result.ret == 7   # fixtures/restore.py EXIT_NOT_RESTORED: none of pytest's own 0..5
    result.stdout.fnmatch_lines(["*could not be restored*nodes not online*server4*"])
    assert "test_two" not in result.stdout.str().split("could not be restored")[1]
    rows = [json.loads(line) for line in next((pytester.path / "h").glob("*/history.jsonl")).read_text().splitlines()]
    stopped = [row for row in rows if row.get("stopped_session")]
    assert [(r["nodeid"], r["phase"], r["outcome"]) for r in stopped] == [("test_fixture_stops_the_session_when_restore_fails.py::test_one", "teardown", "error")]
    assert "nodes not online" in stopped[0]["reason"]


def test_a_restore_that_times_out_stops_the_session_with_the_switches_armed(pytester, monkeypatch):
    """A slow guest: the restore's wait runs out (WaitTimeout, an AssertionError, not a HaconformError).
    The session stops at once with its own exit status, says what was found and not put back, and the
    dead-man switches stay armed so they still undo the test's change."""
    pytester.makeconftest("""
        import pytest
        from haconform import deadman, restore as restore_module
        from haconform.errors import WaitTimeout
        from haconform.restore import Snapshot
        import fixtures.restore as restore_fixture

        pytest_plugins = ["fixtures.restore"]

        class Target:
            pass

        class Switch:
            disarmed = False
            def disarm(self):
                Switch.disarmed = True
                return "disarmed"
            def __repr__(self):
                return "<switch: pcs node unstandby server1>"

        TARGET = Target()

        class Deployment:
            target = TARGET

        @pytest.fixture
        def deployment():
            return Deployment()

        def slow_guest(deployment, before, outcome, settle_timeout):
            outcome.found.append("nodes in standby: ['server1']")
            outcome.actions.append("pcs node unstandby server1")
            raise WaitTimeout("the cluster as it was before the test (placement aside): not within 0.1 s")

        def pytest_configure(config):
            restore_fixture.take_snapshot = lambda d: Snapshot()
            restore_module._restore = slow_guest
            deadman._armed[id(TARGET)] = [Switch()]

        def pytest_unconfigure(config):
            print("SWITCHES AT EXIT:", deadman.armed(TARGET), "disarmed" if Switch.disarmed else "never disarmed")
    """)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.destructive
        def test_one():
            pass

        def test_two():
            raise AssertionError("ran after a failed restore")
    """)
    monkeypatch.setenv("PYTHONPATH", str(DOCUMENTED.parent.parent))   # a process of its own: the patches stay there
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--config", str(DOCUMENTED),
                                           "--history-dir", str(pytester.path / "h"), "-s")
    assert result.ret == 7
    out = result.stdout.str()
    assert "the restore itself stopped (WaitTimeout: the cluster as it was before the test" in out
    assert "ran after a failed restore" not in out
    assert "SWITCHES AT EXIT: [<switch: pcs node unstandby server1>] never disarmed" in out
    row = next(json.loads(line) for line in next((pytester.path / "h").glob("*/history.jsonl")).read_text().splitlines()
               if json.loads(line).get("stopped_session"))
    shown = json.dumps(row["evidence"])
    assert "nodes in standby" in shown and "pcs node unstandby server1" in shown and "left armed" in shown


def test_fixture_records_after_setup_and_skips_tests_that_never_ran(pytester):
    pytester.makeconftest("""
        import pytest
        from haconform.restore import Restoration, Snapshot
        import fixtures.restore as restore_fixture

        pytest_plugins = ["fixtures.restore"]
        calls = []

        @pytest.fixture
        def deployment():
            return object()

        @pytest.fixture
        def evidence():
            class E:
                def data(self, title, value): pass
            return E()

        @pytest.fixture
        def stage():
            calls.append("stage applied")

        def pytest_configure(config):
            config.addinivalue_line("markers", "destructive: x")
            restore_fixture.take_snapshot = lambda d: calls.append("snapshot") or Snapshot()
            restore_fixture.restore = lambda d, before: calls.append("restore") or Restoration()

        def pytest_unconfigure(config):
            print("CALLS", calls)
    """)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.destructive
        def test_runs(stage):
            pass

        @pytest.fixture
        def not_there():
            pytest.skip("verify-only: not in this stage")

        @pytest.mark.destructive
        def test_skipped_in_setup(not_there):
            pass
    """)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:haconform", "-s")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["CALLS ['stage applied', 'snapshot', 'restore']"])


# ----- dead-man switches: disarmed after the restore, left armed when it failed ------------------

class FakeSwitch:
    """Stands in for a deadman.DeadManSwitch; says what restore had done when it was disarmed."""

    def __init__(self, deployment):
        self.deployment = deployment
        self.seen_at_disarm = None

    def disarm(self):
        self.seen_at_disarm = (list(self.deployment.directors[0].host.commands), list(self.deployment.target.actions))
        return "server1: standby on server1: disarmed"


def test_switches_are_disarmed_after_the_restore(views):
    from haconform import deadman
    target = FakeTarget(nic={"server1": "up"})
    deployment = FakeDeployment(target)
    before = take_snapshot(deployment)
    deployment.directors[0].host.on(re.compile(r"^pcs "), stdout="")
    switch = FakeSwitch(deployment)
    deadman._armed[id(target)] = [switch]
    target.nic["server1"] = "down"
    views[:] = [view(standby=["server1"]), view()]
    outcome = restore(deployment, before, settle_timeout=5)
    assert outcome.problems == [] and outcome.switches == ["server1: standby on server1: disarmed"]
    commands, actions = switch.seen_at_disarm
    assert "pcs node unstandby server1" in commands and "pcs resource cleanup" in commands
    assert actions == ["unblock server1"]
    assert deadman.armed(target) == []


def test_switches_stay_armed_when_the_restore_failed(views):
    from haconform import deadman
    target, deployment, before = crashed_server4_without_power_on(views)
    switch = FakeSwitch(deployment)
    deadman._armed[id(target)] = [switch]
    try:
        outcome = restore(deployment, before, settle_timeout=0.5)
        assert outcome.problems and switch.seen_at_disarm is None
        assert outcome.switches == [f"left armed (restore failed): {switch!r}"]
        assert deadman.armed(target) == [switch]
    finally:
        deadman._armed.pop(id(target), None)
