"""Secrets travel on a command's stdin, never on its command line: Machine.write_file and
succeed(input=...), the cluster stage's chpasswd / password check / pcs auth / fence key, and
the candidate a validator reads (in a private directory, removed afterwards)."""

from __future__ import annotations

import base64
import grp
import os
import pwd
import re
import shlex
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from haconform.deployment import Deployment
from haconform.errors import CommandFailed, HaconformError
from haconform.stages import cluster as cluster_stage
from haconform.stages.cluster import ClusterStage, FencingStage
from haconform.stages.files import _validate
from haconform.stages.model import StageFile, load_stage
from haconform.targets.base import Machine
from haconform.timeouts import BOUNDS
from haconform.topology import load_topology
from haconform.wait import wait_until
from tests.fakes import FakeHost, FakeResult, GuardedFake

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY = load_topology(REPO / "fixtures" / "topology.yaml")
PASSWORD = "Pw-hacluster-" + os.urandom(6).hex()


@dataclass
class InputHost(FakeHost):
    """A FakeHost that also takes testinfra's run(..., input=...) and records what came on stdin."""

    inputs: list[tuple[str, bytes | None]] = field(default_factory=list)
    services: dict[str, tuple[bool, bool]] = field(default_factory=dict)   # name -> (enabled, running)

    def run(self, command: str, *args: str, input: bytes | None = None) -> FakeResult:
        assert input is None or isinstance(input, bytes), f"input must reach the transport as bytes: {input!r}"
        result = super().run(command, *args)
        self.inputs.append((result.command, input))
        return result

    def service(self, name: str):
        enabled, running = self.services.get(name, (True, True))
        return type("Service", (), {"is_enabled": enabled, "is_running": running})()

    def input_of(self, pattern: str) -> list[bytes | None]:
        return [data for command, data in self.inputs if re.search(pattern, command)]


class LocalHost:
    """testinfra's Host.run on this machine's /bin/sh, stdin included: write_file's real command."""

    def __init__(self):
        self.commands: list[str] = []

    def run(self, command: str, input: bytes | None = None) -> FakeResult:
        self.commands.append(command)
        proc = subprocess.run(["/bin/sh", "-c", command], input=input, capture_output=True, timeout=30,
                              **({} if input is not None else {"stdin": subprocess.DEVNULL}))
        return FakeResult(rc=proc.returncode, stdout=proc.stdout, stderr=proc.stderr.decode(), command=command)


class FakeTarget(GuardedFake):
    """Hands each host its fake; fence_device_running() ends FencingStage.apply once the key is copied."""

    kind = "fake"

    def __init__(self, hosts):
        self.topology = TOPOLOGY
        self.hosts = hosts

    def testinfra_host(self, name):
        return self.hosts[name]

    def fence_device_running(self):
        raise KeyCopied()


class KeyCopied(Exception):
    pass


def every_command(hosts) -> list[str]:
    return [c for h in hosts.values() for c in getattr(h, "commands", [])]


# ----- Machine ---------------------------------------------------------------------------

def test_succeed_hands_input_to_the_transport_as_bytes_and_keeps_it_off_the_command():
    host = InputHost().on("chpasswd", stdout="")
    machine = Machine(FakeTarget({"server1": host}), TOPOLOGY.host("server1"))
    machine.succeed("chpasswd", input=f"hacluster:{PASSWORD}\n")
    machine.execute("chpasswd", input=b"\x00\xff")
    assert host.inputs == [("chpasswd", f"hacluster:{PASSWORD}\n".encode()), ("chpasswd", b"\x00\xff")]
    plain = FakeHost().on("true")                  # a host without input support still serves plain commands
    assert Machine(FakeTarget({"server1": plain}), TOPOLOGY.host("server1")).succeed("true") == ""


def test_write_file_sends_the_content_on_stdin_only():
    key = os.urandom(512)
    host = InputHost().on(re.compile(r"mktemp"), stdout="")
    Machine(FakeTarget({"server1": host}), TOPOLOGY.host("server1")).write_file(
        "/etc/cluster/fence_xvm.key", key, mode="0600")
    [(command, data)] = host.inputs
    assert data == key
    for form in (key.hex(), base64.b64encode(key).decode(), key.decode("latin-1")):
        assert form not in command
    # a temp name beside the file that no other user can guess, 0600 from the start, then the mode asked
    assert "umask 077" in command and "mktemp /etc/cluster/fence_xvm.key.XXXXXX" in command
    assert command.index("chown") < command.index("chmod 0600") < command.index("mv -f")


@pytest.fixture
def local_machine():
    host = LocalHost()
    return Machine(FakeTarget({"server1": host}), TOPOLOGY.host("server1")), host


def own_owner() -> dict:
    return {"owner": pwd.getpwuid(os.geteuid()).pw_name, "group": grp.getgrgid(os.getegid()).gr_name}


@pytest.mark.parametrize("mode", ["0600", "0640", "0755"])
def test_write_file_puts_content_and_mode_in_place_and_leaves_nothing_else(local_machine, tmp_path, mode):
    machine, host = local_machine
    data = bytes(range(256)) * 40
    path = tmp_path / "new" / "dir" / "file.cfg"
    machine.write_file(str(path), data, mode=mode, **own_owner())
    assert path.read_bytes() == data and stat.S_IMODE(path.stat().st_mode) == int(mode, 8)
    assert os.listdir(path.parent) == ["file.cfg"]
    # a directory it makes is made as by hand (the umask 077 is for the file only)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o777 & ~current_umask()
    machine.write_file(str(path), "replaced\n", mode=mode, **own_owner())
    assert path.read_text() == "replaced\n" and os.listdir(path.parent) == ["file.cfg"]


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_file_that_fails_leaves_no_temp_file_and_the_old_file_intact(local_machine, tmp_path):
    machine, _ = local_machine
    path = tmp_path / "file.cfg"
    path.write_text("old\n")
    with pytest.raises(CommandFailed):
        machine.write_file(str(path), "new\n", owner="no-such-user-haconform", group="root")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["file.cfg"]


class SlowStdinHost(LocalHost):
    """Feeds stdin in two parts and looks at the file being written in between."""

    def __init__(self, directory: Path, pattern: str):
        super().__init__()
        self.directory, self.pattern = directory, pattern
        self.modes_while_writing: list[int] = []

    def run(self, command: str, input: bytes | None = None) -> FakeResult:
        proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        proc.stdin.write(input[:8])
        proc.stdin.flush()
        partial = wait_until("the temp file holds the first bytes",
                             lambda: [p for p in self.directory.glob(self.pattern) if p.stat().st_size == 8],
                             timeout=BOUNDS.command, observe=lambda: list(self.directory.iterdir()))
        self.modes_while_writing = [stat.S_IMODE(p.stat().st_mode) for p in partial]
        stdout, stderr = proc.communicate(input[8:], timeout=BOUNDS.command)
        return FakeResult(rc=proc.returncode, stdout=stdout, stderr=stderr.decode(), command=command)


@pytest.mark.parametrize("mode", ["0600", "0644"])
def test_write_file_never_makes_the_file_more_permissive_than_asked_even_while_writing(tmp_path, mode):
    host = SlowStdinHost(tmp_path, "secret.key.*")
    machine = Machine(FakeTarget({"server1": host}), TOPOLOGY.host("server1"))
    machine.write_file(str(tmp_path / "secret.key"), b"k" * 64, mode=mode, **own_owner())
    assert host.modes_while_writing == [0o600]
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == int(mode, 8)
    assert os.listdir(tmp_path) == ["secret.key"]


# ----- the cluster stage -----------------------------------------------------------------------

def cluster_hosts(pcs_version: str) -> dict:
    hosts = {name: InputHost(name=name) for name in TOPOLOGY.hosts}
    for name in TOPOLOGY.cluster_nodes:
        host = hosts[name]
        host.on(re.compile(r"."), stdout="")                       # anything else: succeeds silently
        host.on("pcs --version", stdout=pcs_version + "\n")
        host.on(re.compile(r"^python3 -W ignore -c "), rc=1)          # the password does not work yet
        host.on("ss -Htln sport = :2224", stdout="LISTEN 0 128 *:2224 *:*\n")
        host.services = {"pcsd-ruby": (False, False), "pcsd": (False, False), "haproxy": (True, True),
                         "corosync": (False, False), "pacemaker": (False, False)}
    return hosts


@pytest.mark.parametrize("pcs_version, auth", [("0.11.5", "pcs host auth"), ("0.9.169", "pcs cluster auth")])
def test_the_hacluster_password_reaches_chpasswd_the_check_and_pcs_auth_on_stdin_only(monkeypatch, pcs_version,
                                                                                        auth):
    hosts = cluster_hosts(pcs_version)
    deployment = Deployment(FakeTarget(hosts))
    spec = load_stage(REPO / "fixtures" / "documented" / "stage4", TOPOLOGY).cluster
    stage = ClusterStage(deployment, spec, PASSWORD)
    monkeypatch.setattr(ClusterStage, "formed", lambda self: True)
    stage._form(cluster_stage.StageRecord("stage4"))
    nodes = list(TOPOLOGY.cluster_nodes)
    for name in nodes:
        host = hosts[name]
        assert host.input_of(r"^chpasswd$") == [f"hacluster:{PASSWORD}\n".encode()]
        assert host.input_of(r"^python3 -W ignore -c ") == [PASSWORD.encode()]
    first = hosts[nodes[0]]
    auth = auth.replace("pcs ", "pcs --request-timeout=60 ")
    assert first.input_of(rf"^{auth} ") == [f"{PASSWORD}\n".encode()]
    assert [c for c in first.commands if c.startswith(auth)] == [f"{auth} {' '.join(nodes)} -u hacluster"]
    commands = every_command(hosts)
    assert commands and not [c for c in commands if PASSWORD in c]
    assert not [c for c in commands if " -p " in c]


def test_the_fence_key_reaches_the_directors_on_stdin_only():
    hosts = cluster_hosts("0.11.5")
    key = os.urandom(128)
    spec = load_stage(REPO / "fixtures" / "documented" / "stage5", TOPOLOGY).cluster
    fence_name = TOPOLOGY.fence_host.name
    fence = hosts[fence_name]
    fence.add_file(spec.fencing.key_file, key)
    fence.on(re.compile(r"^sha256sum "), stdout="f" * 64 + f"  {spec.fencing.key_file}\n")
    for name in TOPOLOGY.cluster_nodes:
        hosts[name].on(re.compile(r"^sha256sum "), rc=1)          # no key there yet
    deployment = Deployment(FakeTarget(hosts))
    stage = FencingStage(deployment, deployment.target, ClusterStage(deployment, spec, PASSWORD))
    with pytest.raises(KeyCopied):
        stage.apply()
    for name in TOPOLOGY.cluster_nodes:
        writes = [(c, data) for c, data in hosts[name].inputs if data is not None]
        assert [data for _, data in writes] == [key], name
        assert "chmod 0600" in writes[0][0] and spec.fencing.key_file in writes[0][0]
    for form in (key.hex(), base64.b64encode(key).decode(), key.decode("latin-1")):
        assert not [c for c in every_command(hosts) if form in c]


# ----- the validator's candidate -------------------------------------------------------------------

def validating_host(validator_rc: int) -> InputHost:
    host = InputHost()
    host.on(re.compile(r"^mktemp -d /tmp/haconform-validate\.XXXXXXXX$"), stdout="/tmp/haconform-validate.Q7x9Lw2p\n")
    host.on(re.compile(r"^mkdir -p /tmp/haconform-validate\.Q7x9Lw2p && umask 077"), stdout="")
    host.on(re.compile(r"^haproxy -c -f "), rc=validator_rc, stderr="[ALERT] parsing error\n")
    host.on("rm -rf /tmp/haconform-validate.Q7x9Lw2p", stdout="")
    return host


class OneStage:
    validate = {"/etc/haproxy/haproxy.cfg": "haproxy -c -f {path}"}


@pytest.mark.parametrize("validator_rc", [0, 1])
def test_a_candidate_is_validated_in_a_private_directory_removed_afterwards(tmp_path, validator_rc):
    host = validating_host(validator_rc)
    machine = Machine(FakeTarget({"server1": host}), TOPOLOGY.host("server1"))
    source = tmp_path / "haproxy.cfg"
    data = b"userlist stats\n  user admin insecure-password " + PASSWORD.encode() + b"\n"
    source.write_bytes(data)
    stage_file = StageFile("role-director", "/etc/haproxy/haproxy.cfg", source)
    if validator_rc:
        with pytest.raises(HaconformError, match="parsing error") as caught:
            _validate(machine, OneStage(), stage_file, data)
        assert "Q7x9Lw2p" not in str(caught.value), "the message names the source, not the temp copy"
    else:
        _validate(machine, OneStage(), stage_file, data)
    assert host.commands[0] == "mktemp -d /tmp/haconform-validate.XXXXXXXX"
    assert host.commands[2] == f"haproxy -c -f {shlex.quote('/tmp/haconform-validate.Q7x9Lw2p/haproxy.cfg')}"
    assert host.commands[-1] == "rm -rf /tmp/haconform-validate.Q7x9Lw2p"
    assert host.input_of(r"mktemp /tmp/haconform-validate\.Q7x9Lw2p/haproxy\.cfg\.XXXXXX") == [data]
    assert "chmod 0600" in host.commands[1]
    assert not [c for c in host.commands if PASSWORD in c]


def test_nodes_prepared_side_by_side_keep_their_steps_and_a_failure_names_every_node(monkeypatch):
    hosts = cluster_hosts("0.11.5")
    nodes = list(TOPOLOGY.cluster_nodes)
    for name in nodes:
        hosts[name].on("systemctl start pcsd", rc=1, stderr="Job for pcsd.service failed")
    stage = ClusterStage(Deployment(FakeTarget(hosts)), load_stage(REPO / "fixtures" / "documented" / "stage4",
                                                                   TOPOLOGY).cluster, PASSWORD)
    record = cluster_stage.StageRecord("stage4")
    with pytest.raises(HaconformError) as failed:
        stage._form(record)
    assert all(name in str(failed.value) for name in nodes) and "pcsd" in str(failed.value)
    for name in nodes:   # what each node did before its failure is still on the record
        assert f"{name}: hacluster password set" in record.steps and f"{name}: started pcsd-ruby" in record.steps
    assert "nodes prepared (hacluster login, pcsd started)" in record.observations["timings_s"]
