"""Verify mode: drift found without writing, and what the stage manager does with it."""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path

import pytest

import fixtures.stages as stages_module
from fixtures.stages import StageManager
from haconform.apply import load_stage
from haconform.topology import load_topology
from haconform.verify import file_stage_drift
from tests.fakes import FakeHost, FakeResult

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY = load_topology()
STAGE3 = load_stage(REPO / "fixtures" / "documented" / "stage3")


class Service:
    def __init__(self, running):
        self.is_running = running


class Machine:
    def __init__(self, name, files: dict[str, bytes], stopped=()):
        self.name = name
        self.host = FakeHost(name=name)
        self.host.service = lambda service: Service(service not in stopped)
        self.files = files

        def sha(command):
            path = shlex.split(command.split(" 2>")[0])[1]
            data = self.files.get(path)
            return FakeResult(stdout=f"{hashlib.sha256(data).hexdigest()}  {path}\n") if data is not None else FakeResult(rc=1)
        self.host.on(re.compile(r"^sha256sum "), sha)
        self.host.on(re.compile(r"^stat -c "), stdout="www-data:www-data 755\n")

    def execute(self, command):
        return self.host.run(command)


def deployed(stage=STAGE3, **changes) -> dict[str, Machine]:
    """Machines holding exactly the stage's files; changes: host -> {path: bytes or None}."""
    plan = stage.plan(TOPOLOGY)
    machines = {}
    for name in TOPOLOGY.hosts:
        files = {f.dest: f.source.read_bytes() for f in plan.get(name, [])}
        for path, data in changes.get(name, {}).items():
            files[path] = data
        machines[name] = Machine(name, {p: d for p, d in files.items() if d is not None})
    return machines


def test_no_drift_on_a_deployment_with_the_stage_files():
    machines = deployed()
    assert file_stage_drift(STAGE3, machines, TOPOLOGY, cluster_owns=("haproxy",)) == []
    assert not any(c.startswith(("mv ", "echo ", "mkdir", "service ", "update-rc.d"))
                   for m in machines.values() for c in m.host.commands), "verify must write nothing"


def test_changed_and_missing_files_are_named():
    machines = deployed(server1={"/etc/haproxy/haproxy.cfg": b"# edited by hand\n"},
                        server3={"/var/www/html/upload_file.php": None})
    drift = file_stage_drift(STAGE3, machines, TOPOLOGY, cluster_owns=("haproxy",))
    assert any(d.startswith("server1:/etc/haproxy/haproxy.cfg differs") for d in drift), drift
    assert any(d.startswith("server3:/var/www/html/upload_file.php missing") for d in drift), drift
    assert file_stage_drift(STAGE3, machines, TOPOLOGY, first_only=True) == drift[:1]


def test_stopped_service_is_drift_unless_the_cluster_owns_it():
    machines = deployed()
    machines["server2"].host.service = lambda service: Service(service != "apache2")
    machines["server1"].host.service = lambda service: Service(service != "haproxy")
    drift = file_stage_drift(STAGE3, machines, TOPOLOGY, cluster_owns=("haproxy",))
    assert drift == ["server2: service apache2 not running"]


class Deployment:
    def __init__(self):
        self.topology = TOPOLOGY
        self.machines = {}
        self.target = None
        self.vip = TOPOLOGY.vip
        self.frontend = None

    def use_frontend(self, address, label):
        self.frontend = (address, label)


@pytest.fixture
def manager(monkeypatch):
    drift = {"files": [], "cluster": [], "fencing": []}
    monkeypatch.setattr(stages_module, "file_stage_drift", lambda stage, *a, **k: list(drift["files"]))
    monkeypatch.setattr(stages_module, "cluster_stage_drift", lambda cluster, **k: list(drift["cluster"]))
    monkeypatch.setattr(stages_module, "fencing_stage_drift", lambda fencing: list(drift["fencing"]))
    monkeypatch.setattr(stages_module, "ClusterStage", lambda deployment, password: object())
    monkeypatch.setattr(stages_module, "FencingStage", lambda deployment, target, cluster: object())
    m = StageManager(Deployment(), REPO / "fixtures" / "documented", "pw", mode="verify", deployment_stage="stage5")
    m.drift = drift
    return m


def test_verify_mode_uses_the_vip_from_the_start(manager):
    assert manager.deployment.frontend == (TOPOLOGY.vip, "VIP")


def test_declared_stage_without_drift_passes(manager):
    assert manager.ensure("stage3")["drift"] == "none"
    assert manager.ensure("stage5")["mode"] == "verify"


def test_drift_in_the_declared_files_stage_fails_the_test(manager):
    manager.drift["files"] = ["server1:/etc/haproxy/haproxy.cfg differs from x"]
    with pytest.raises(pytest.fail.Exception, match="(?s)differs from stage3.*haproxy.cfg differs"):
        manager.ensure("stage3")


def test_other_files_stage_is_skipped_not_failed(manager):
    manager.drift["files"] = ["server1:/etc/haproxy/haproxy.cfg differs from y"]
    with pytest.raises(pytest.skip.Exception, match="verify-only.*stage1 would have to be applied"):
        manager.ensure("stage1")
    with pytest.raises(pytest.skip.Exception, match="algorithm-uri"):
        manager.ensure("algorithm-uri")


def test_later_stage_than_declared_is_skipped(manager):
    manager.deployment_stage = "stage4"
    with pytest.raises(pytest.skip.Exception, match="declared at stage4"):
        manager.ensure("stage5")


def test_cluster_drift_fails_and_the_outcome_is_remembered(manager):
    manager.drift["cluster"] = ["nodes online ['server1'], expected ['server1', 'server4']"]
    for _ in range(2):
        with pytest.raises(pytest.fail.Exception, match="server4"):
            manager.ensure("stage4")
    manager.drift["cluster"] = []
    with pytest.raises(pytest.fail.Exception):
        manager.ensure("stage4")   # verified once per session


def test_apply_on_ssh_needs_the_destructive_opt_in():
    class Config:
        def getoption(self, name, default=None):
            return {"--stages": "apply"}.get(name, default)

    class Target:
        kind, destructive_allowed = "ssh", False
    with pytest.raises(pytest.UsageError, match="--allow-destructive"):
        stages_module.stages_mode(Config(), Target())
    Target.destructive_allowed = True
    assert stages_module.stages_mode(Config(), Target()) == "apply"

    class Lab:
        kind, destructive_allowed = "lab", True
    assert stages_module.stages_mode(type("C", (), {"getoption": lambda self, n, d=None: None})(), Lab()) == "apply"
