"""Verify mode: drift found by meaning without writing, and what the stage manager does in verify mode."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import shlex
from pathlib import Path

import pytest

from haconform.stages.manager import StageInForce, StageLeftOut, StageManager
from haconform.stages.model import load_stage
from haconform.stages.drift import file_drift
from haconform.topology import load_topology
from tests.fakes import FakeHost, FakeResult

REPO = Path(__file__).resolve().parent.parent
DOCUMENTED = REPO / "fixtures" / "documented"
TOPOLOGY = load_topology()
STAGE3 = load_stage(DOCUMENTED / "stage3", TOPOLOGY)
CFG = "/etc/haproxy/haproxy.cfg"
UPLOAD_PHP = "/var/www/html/upload_file.php"
# The only commands a verifier may run: reading files, hashing them, stat.
READS = ("test -f ", "cat ", "sha256sum ", "stat -c ")


class Service:
    def __init__(self, running):
        self.is_running = running


class Machine:
    """A host holding `files` (path -> bytes) and directories (path -> 'owner:group mode'), read-only commands only."""

    def __init__(self, name, files: dict[str, bytes], directories: dict[str, str], stopped=()):
        self.name = name
        self.files = files
        self.directories = directories
        self.stopped = set(stopped)
        self.host = FakeHost(name=name)
        self.host.service = lambda service: Service(service not in self.stopped)
        self.host.on(re.compile(r"^test -f "), self._test)
        self.host.on(re.compile(r"^cat "), self._cat)
        self.host.on(re.compile(r"^sha256sum "), self._sha)
        self.host.on(re.compile(r"^stat -c "), self._stat)

    @staticmethod
    def _words(command):
        return shlex.split(command.split(" 2>")[0])[1:]

    def _test(self, command):
        path = self._words(command)[-1]
        return FakeResult(rc=0 if path in self.files else 1)

    def _cat(self, command):
        out, rc = b"", 0
        for word in self._words(command):
            matches = sorted(p for p in self.files if fnmatch.fnmatchcase(p, word)) if "*" in word \
                else [word] if word in self.files else []
            rc = rc if matches else 1
            for path in matches:
                out += self.files[path]
        return FakeResult(rc=rc, stdout=out)

    def _sha(self, command):
        path = self._words(command)[0]
        data = self.files.get(path)
        if data is None:
            return FakeResult(rc=1)
        return FakeResult(stdout=f"{hashlib.sha256(data).hexdigest()}  {path}\n")

    def _stat(self, command):
        path = self._words(command)[-1]
        return FakeResult(stdout=f"{self.directories[path]}\n") if path in self.directories else FakeResult(rc=1)

    def execute(self, command):
        return self.host.run(command)


def deployed(stage=STAGE3, **changes) -> dict[str, Machine]:
    """Machines holding exactly the stage's files and directories; changes: host -> {path: bytes or None}."""
    plan = stage.plan(TOPOLOGY)
    machines = {}
    for name in TOPOLOGY.hosts:
        files = {f.dest: f.source.read_bytes() for f in plan.get(name, [])}
        for path, data in changes.get(name, {}).items():
            files[path] = data
        directories = {}
        for path, mode in stage.modes.items():
            if mode.get("directory") and name in stage.hosts_for(mode["selector"], TOPOLOGY):
                directories[path] = f"{mode['owner']}:{mode['group']} {int(mode['mode'], 8):o}"
        machines[name] = Machine(name, {p: d for p, d in files.items() if d is not None}, directories)
    return machines


def documented_cfg() -> str:
    return STAGE3.text("role-director", CFG)


# Stage 3's haproxy.cfg as an operator might type it: own comments, tabs,
# sections and directives in another order, other time units, ACL patterns on
# one line; use_backend order (which is meaning) kept.
HANDWRITTEN = """\
# my load balancer
defaults
\tmaxconn 65535
\ttimeout check 10s
\ttimeout http-keep-alive 10000ms
\ttimeout server 60s
\ttimeout client 60s
\ttimeout connect 10s
\ttimeout queue 60s
\ttimeout http-request 10s
\tretries 3
\toption redispatch
\toption forwardfor except 127.0.0.0/8
\toption http-server-close
\toption dontlognull
\toption httplog
\tlog global
\tmode http

backend {app}
\tserver app1 172.25.5.2:80 check
\tbalance roundrobin

backend static
\tserver app2 172.25.5.3:80 check
\tbalance roundrobin

frontend main
\tbind *:80
\tacl write method POST
\tacl write method PUT
\tacl read method get HEAD   # reads
\tacl url_static path_end -i .jpg .gif .png .css .js
\tacl url_static path_beg -i /static /images /javascript /stylesheets
\tuse_backend static if write
\tdefault_backend {app}

listen stats
\tstats auth admin:password
\tstats uri /status
\tbind *:8080

global
\tstats socket /var/lib/haproxy/stats
\tdaemon
\tgroup haproxy
\tuser haproxy
\tmaxconn 4000
\tpidfile /var/run/haproxy.pid
\tchroot /var/lib/haproxy
\tlog 127.0.0.1 local2
"""


def on_directors(data: bytes) -> dict:
    return {d.name: {CFG: data} for d in TOPOLOGY.directors}


# ----- file_drift -------------------------------------------------------------------------

def test_no_drift_on_a_deployment_with_the_stage_files():
    machines = deployed()
    assert file_drift(STAGE3, machines, TOPOLOGY) == []
    commands = [c for m in machines.values() for c in m.host.commands]
    assert any(c.startswith("cat /etc/rsyslog.conf ") for c in commands), commands
    assert any(c.startswith("stat -c ") for c in commands), commands
    writes = [c for c in commands
              if not c.startswith(READS) or ">" in c.replace("2>/dev/null", "")
              or re.search(r"\b(mv|echo|mkdir|service|update-rc\.d|tee|cp|rm|chmod|chown)\b", c)]
    assert writes == [], "verify must write nothing"


def test_a_handwritten_haproxy_cfg_with_the_same_meaning_is_no_drift():
    machines = deployed(**on_directors(HANDWRITTEN.format(app="app").encode()))
    assert file_drift(STAGE3, machines, TOPOLOGY) == []


def test_a_changed_maxconn_is_one_row_with_both_values():
    changed = re.sub(r"(?m)^(\s+maxconn\s+)65535$", r"\g<1>30000", documented_cfg())
    assert changed != documented_cfg()
    drift = file_drift(STAGE3, deployed(server1={CFG: changed.encode()}), TOPOLOGY)
    assert len(drift) == 1, drift
    row = drift[0]
    assert "defaults" in row["what"] and "maxconn" in row["what"], row
    assert (row["expected"], row["found"]) == ("65535", "30000"), row
    assert f"server1:{CFG}" in row["where"], row
    line = next(n for n, text in enumerate(changed.splitlines(), 1) if "30000" in text)
    assert row["where"] == f"server1:{CFG}:{line}"


def test_a_missing_directive_names_the_host_that_lacks_it():
    cfg = re.sub(r"(?m)^\s+maxconn\s+65535\n", "", documented_cfg())
    drift = file_drift(STAGE3, deployed(server4={CFG: cfg.encode()}), TOPOLOGY)
    assert [(r["what"], r["found"]) for r in drift] == [("defaults: maxconn", "missing")], drift
    assert "server4" in drift[0]["where"], drift


def test_a_missing_haproxy_cfg_is_named():
    drift = file_drift(STAGE3, deployed(server4={CFG: None}), TOPOLOGY)
    assert drift == [{"what": CFG, "expected": "present", "found": "missing", "where": f"server4:{CFG}",
                      "key": f"file[{CFG}]"}]


def test_missing_and_changed_files_without_a_meaning_are_compared_by_bytes():
    machines = deployed(server3={UPLOAD_PHP: None}, server2={UPLOAD_PHP: b"<?php echo 'edited'; ?>\n"})
    drift = file_drift(STAGE3, machines, TOPOLOGY)
    assert len(drift) == 2, drift
    changed = next(r for r in drift if r["where"] == f"server2:{UPLOAD_PHP}")
    missing = next(r for r in drift if r["where"] == f"server3:{UPLOAD_PHP}")
    assert changed["what"] == UPLOAD_PHP and "sha256" in changed["found"], changed
    assert missing["what"] == UPLOAD_PHP and missing["found"] == "missing", missing


def test_rsyslog_and_limits_are_read_with_their_drop_in_directories():
    limits = "/etc/security/limits.conf"
    machines = deployed(server1={limits: b"haproxy soft nofile 65535\nhaproxy hard nofile 65535\n",
                                 "/etc/security/limits.d/90-other.conf": b"haproxy hard nofile 1024\n"})
    drift = file_drift(STAGE3, machines, TOPOLOGY)
    assert [(r["what"], r["expected"], r["found"]) for r in drift] == \
        [("limits: haproxy hard nofile", "65535", "1024")], drift
    assert drift[0]["where"].startswith("server1:/etc/security/limits.conf (+ /etc/security/limits.d/*.conf)")
    commands = machines["server1"].host.commands
    assert "cat /etc/security/limits.conf /etc/security/limits.d/*.conf 2>/dev/null" in commands
    assert "cat /etc/rsyslog.conf /etc/rsyslog.d/*.conf 2>/dev/null" in commands


def test_a_wrongly_owned_upload_directory_is_drift():
    machines = deployed()
    machines["server2"].directories["/var/www/html/upload"] = "root:root 755"
    del machines["server3"].directories["/var/www/html/upload"]
    drift = file_drift(STAGE3, machines, TOPOLOGY)
    assert [(r["where"], r["expected"], r["found"]) for r in drift] == [
        ("server2:/var/www/html/upload", "www-data:www-data 755", "root:root 755"),
        ("server3:/var/www/html/upload", "www-data:www-data 755", "missing")], drift


def test_a_renamed_backend_is_drift_unless_names_map_it():
    machines = deployed(**on_directors(HANDWRITTEN.format(app="dynamic").encode()))
    unmapped = file_drift(STAGE3, machines, TOPOLOGY)
    assert unmapped, "backend dynamic is not backend app without a names mapping"
    assert any("backend app" in r["what"] for r in unmapped), unmapped
    assert file_drift(STAGE3, machines, TOPOLOGY, names={"app": "dynamic"}) == []


def test_stopped_service_is_drift_unless_the_cluster_owns_it():
    machines = deployed()
    machines["server2"].stopped = {"apache2"}
    machines["server1"].stopped = {"haproxy"}
    drift = file_drift(STAGE3, machines, TOPOLOGY, cluster_owns=("haproxy",))
    assert drift == [{"what": "service apache2", "expected": "running", "found": "not running", "where": "server2",
                      "key": "service[apache2]"}]
    drift = file_drift(STAGE3, machines, TOPOLOGY)
    assert {(r["what"], r["where"]) for r in drift} == {("service apache2", "server2"), ("service haproxy", "server1")}


# ----- the stage manager in verify mode ------------------------------------------------------

class Deployment:
    def __init__(self, machines=None):
        self.topology = TOPOLOGY
        self.machines = machines if machines is not None else deployed()
        self.target = None
        self.vip = TOPOLOGY.vip
        self.frontend = None
        self.cluster_spec = None

    def use_frontend(self, address, label):
        self.frontend = (address, label)


def manager(declared: str, deployment=None, **kwargs) -> StageManager:
    return StageManager(deployment or Deployment(), DOCUMENTED, "pw", mode="verify", deployment_stage=declared,
                        **kwargs)


def test_a_deployment_declared_at_a_cluster_stage_is_reached_through_the_vip():
    m = manager("stage5")
    assert m.deployment.frontend == (TOPOLOGY.vip, "VIP")
    assert m.deployment.cluster_spec.stonith["fence"].id == "vmfence"
    assert manager("stage3").deployment.frontend is None


def test_a_stage_other_than_the_declared_one_is_left_out():
    m = manager("stage5")
    with pytest.raises(StageLeftOut, match="declared at stage5.*stage3 would have to be applied"):
        m.ensure("stage3")
    assert all(not machine.host.commands for machine in m.deployment.machines.values()), "nothing read or written"


def test_a_setting_the_declared_stage_keeps_runs_against_it():
    m = manager("stage3")
    in_force = m.ensure_setting("stats", "stage2")
    assert isinstance(in_force, StageInForce)
    assert in_force.stage.name == "stage3" and in_force.cluster is None
    assert in_force.record["mode"] == "verify"
    assert in_force.record["drift (reported by the configuration test)"] == "none"
    read = sum(len(machine.host.commands) for machine in m.deployment.machines.values())
    assert read > 0
    assert m.ensure("stage3").record is in_force.record, "verified once per session"
    assert sum(len(machine.host.commands) for machine in m.deployment.machines.values()) == read


def test_a_setting_the_declared_stage_does_not_keep_is_left_out():
    with pytest.raises(StageLeftOut, match=r"stage3 does not keep `roundrobin`"):
        manager("stage3").ensure_setting("roundrobin", "stage1")


def test_drift_is_recorded_not_raised_and_uses_the_names():
    machines = deployed(**on_directors(HANDWRITTEN.format(app="dynamic").encode()))
    in_force = manager("stage3", Deployment(machines)).ensure("stage3")
    assert in_force.record["drift (reported by the configuration test)"] != "none"
    mapped = manager("stage3", Deployment(deployed(**on_directors(HANDWRITTEN.format(app="dynamic").encode()))),
                     names={"app": "dynamic"})
    assert mapped.drift("stage3") == []


def test_a_stage_that_failed_to_apply_is_not_applied_again(monkeypatch):
    """The VM nightly on a slower machine: stage 4's `pcs cluster setup` ran out, and every later stage-4 test
    applied the whole cluster stage again, two minutes each, to fail the same way.  Now the first test
    fails with the stage's error and every later one at once, naming it and the test it failed in."""
    from haconform.errors import HaconformError
    from haconform.guard import HostGuard
    from haconform.stages.manager import StageFailedEarlier

    deployment = Deployment()
    deployment.target = type("Target", (), {"guard": HostGuard()})()
    m = StageManager(deployment, DOCUMENTED, "pw")
    tries = []

    def pcs_times_out(name):
        tries.append(name)
        raise HaconformError("pcs cluster setup: Connection timeout", where="server1")
    monkeypatch.setattr(m, "_apply", pcs_times_out)
    with deployment.target.guard.running("suites/test_60_cluster.py::test_first"):
        with pytest.raises(HaconformError, match="Connection timeout"):
            m.ensure("stage4")
    for _ in range(3):
        with pytest.raises(StageFailedEarlier, match=r"stage4 did not apply earlier in this session \(in "
                                                     r"suites/test_60_cluster.py::test_first\): HaconformError: "
                                                     r"server1: pcs cluster setup: Connection timeout"):
            m.ensure("stage4")
    assert tries == ["stage4"]
