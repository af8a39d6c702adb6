"""The inventory target (--target ssh) without a network: argv construction per access kind, the exec prefix's quoting, refusals, left-out bookkeeping."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra

from fixtures.left_out import LeftOut, left_out_reason, summarize
from haconform.client import agent_argv, agent_source
from haconform.errors import HaconformError
from haconform.guard import APPLY, HostGuard
from haconform.inventory import HostAccess, Inventory, PowerCommands
from haconform.targets import inventory_target as target_module
from haconform.readers.links import nic_holding
from haconform.targets.remote_shell import ShellPool
from haconform.targets.access import AccessBackend
from haconform.targets.access.ssh import SSH_EXEC, remote_command, ssh_options
from haconform.targets.inventory_target import InventoryTarget
from haconform.topology import load_topology
from tests.fakes import FakeResult

TOPOLOGY = load_topology()


def inventory(**overrides) -> Inventory:
    hosts = {
        "server1": HostAccess("server1", "ssh", address="10.9.0.1", user="vagrant", sudo=True, key="/k/id",
                              port=2222, cluster_nic="eth1",
                              power=PowerCommands(via="local", on="virsh start Node1")),
        "server4": HostAccess("server4", "ssh", address="10.9.0.4", user="root", sudo=False),
        "server2": HostAccess("server2", "ssh", address="srv2", ssh_config="/c/ssh-config", sudo=False),
        "server3": HostAccess("server3", "ssh", address="10.9.0.3", sudo=False),
        "client": HostAccess("client", "netns", netns="hcclient"),
        "foundation5": HostAccess("foundation5", "none"),
    }
    hosts.update(overrides)
    return Inventory(path=Path("/inv.yaml"), stage="stage5", hosts=hosts)


@pytest.fixture
def target():
    """The transport's mechanics, with an open guard (the read-only guard has tests of its own: test_guard.py)."""
    t = InventoryTarget(TOPOLOGY, inventory(), guard=HostGuard(APPLY))
    yield t
    shutil.rmtree(t._control_path, ignore_errors=True)


def test_ssh_options_carry_user_key_port_and_end_with_the_destination(target):
    options = ssh_options(target.inventory.access("server1"), "/ctl")
    assert options[-2:] == ["--", "10.9.0.1"]
    pairs = dict(zip(options, options[1:]))
    assert pairs["-i"] == "/k/id" and pairs["-p"] == "2222" and pairs["-l"] == "vagrant"
    assert "BatchMode=yes" in options and "ControlPath=/ctl/%C" in options
    assert "ControlPath=none" in ssh_options(target.inventory.access("server1"))   # long-lived: own connection


def test_ssh_config_host_leaves_user_and_port_to_the_config(target):
    options = ssh_options(target.inventory.access("server2"), "/ctl")
    assert ["-F", "/c/ssh-config"] == options[options.index("-F"):options.index("-F") + 2]
    assert "-l" not in options and "-p" not in options and options[-1] == "srv2"


def test_remote_command_runs_sh_via_sudo_only_when_needed(target):
    quoted = "printf '%s\\n' \"a b\""
    line = remote_command(target.inventory.access("server1"), quoted)
    assert shlex.split(line) == ["sudo", "-n", "--", "/bin/sh", "-c", quoted]
    assert shlex.split(remote_command(target.inventory.access("server4"), "id -u")) == ["/bin/sh", "-c", "id -u"]


def test_backend_argv_per_kind(target):
    assert target.backend("server4").argv("true")[0] == "ssh"
    assert target.backend("client").argv("true") == ["ip", "netns", "exec", "hcclient", "/bin/sh", "-c", "true"]
    with pytest.raises(HaconformError, match="none"):
        target.backend("foundation5").argv("true")


def test_exec_argv_preserves_argv_through_ssh(target, tmp_path, monkeypatch):
    """The prefix + an argv must reach the remote side as that argv: ssh_exec.py quotes each word."""
    prefix = target._exec_prefix("server1")
    assert prefix[:2] == [sys.executable, SSH_EXEC] and prefix[-3:] == ["sudo", "-n", "--"]
    # A fake `ssh` on PATH prints the remote line it was given.
    fake = tmp_path / "ssh"
    fake.write_text("#!/bin/sh\nfor last; do :; done\nprintf '%s' \"$last\"\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    argv = ["/bin/sh", "-c", "echo \"$1 and 'quotes'\"", "x", "two words"]
    remote_line = subprocess.run([*prefix, *argv], capture_output=True, text=True, check=True).stdout
    assert shlex.split(remote_line) == ["sudo", "-n", "--", *argv]


def test_agent_is_not_quoted_twice(target):
    """goes_through_shell must not fire: the prefix quotes by itself."""
    argv = agent_argv(target._exec_prefix("server4"), ["--serve"])
    assert argv[-3:] == ["-c", agent_source(), "--serve"]


def test_exec_argv_for_netns_and_none(target):
    assert target._exec_prefix("client") == ["ip", "netns", "exec", "hcclient"]
    with pytest.raises(HaconformError, match="foundation5"):
        target._exec_prefix("foundation5")


def test_destructive_needs_the_opt_in():
    assert InventoryTarget(TOPOLOGY, inventory()).destructive_allowed is False
    assert InventoryTarget(TOPOLOGY, inventory(), allow_destructive=True).destructive_allowed is True


class ScriptedBackend:
    """Stands in for AccessBackend.run: answers by command substring, records what ran."""

    def __init__(self, answers: dict[str, FakeResult | Exception]):
        self.answers = answers
        self.commands: list[str] = []

    def run(self, command, timeout=None):
        self.commands.append(command)
        for key, answer in self.answers.items():
            if key in command:
                if isinstance(answer, Exception):
                    raise answer
                return answer
        raise AssertionError(f"unexpected command {command!r}")


def scripted(target, name, answers) -> ScriptedBackend:
    backend = ScriptedBackend(answers)
    target._backends[name] = backend
    return backend


def test_up_names_every_host_that_does_not_answer(target):
    for name in ("server1", "server4", "server3", "client"):
        scripted(target, name, {"boot_id": FakeResult(stdout="b\n")})
    scripted(target, "server2", {"boot_id": target_module.HostUnreachable("ssh to server2 failed: timed out")})
    with pytest.raises(HaconformError) as caught:
        target.up()
    assert "server2" in str(caught.value) and "server1" not in caught.value.what


def test_power_on_without_a_command_is_refused(target):
    with pytest.raises(HaconformError, match="no power switch"):
        target.power("server4", "on")


def test_power_state_crashed_then_on(target):
    backend = scripted(target, "server4", {"boot_id": target_module.HostUnreachable("gone")})
    target._crashed.add("server4")
    assert target.power_state("server4") == "crashed"
    backend.answers["boot_id"] = FakeResult(stdout="new\n")
    assert target.power_state("server4") == "on" and "server4" not in target._crashed


def test_nic_down_refused_when_ssh_comes_in_on_it(target, monkeypatch):
    links = '[{"ifname":"eth1","addr_info":[{"local":"172.25.5.4"}]}]'
    scripted(target, "server4", {"ip -j -4 addr": FakeResult(stdout=links)})
    monkeypatch.setattr(InventoryTarget, "management_nic", lambda self, name: "eth1")
    with pytest.raises(HaconformError, match="cut the ssh connection"):
        target.set_nic("server4", "down")


def test_nic_down_arms_a_dead_man_switch_and_up_disarms_it(target, monkeypatch):
    state = {"flags": '["BROADCAST","UP"]'}
    backend = scripted(target, "server1", {})
    backend.run = lambda command, timeout=None: (
        backend.commands.append(command),
        state.update(flags='["BROADCAST"]') if "link set dev eth1 down" in command else None,
        state.update(flags='["BROADCAST","UP"]') if "link set dev eth1 up &&" in command else None,
        FakeResult(stdout=f'[{{"ifname":"eth1","flags":{state["flags"]}}}]'))[-1]
    monkeypatch.setattr(InventoryTarget, "management_nic", lambda self, name: "eth0")
    target.set_nic("server1", "down")
    assert any(f"sleep {target_module.nic_dead_man_s()}; ip link set dev eth1 up" in c for c in backend.commands)
    assert target.nic_state("server1") == "down"
    target.set_nic("server1", "up")
    assert any("kill $(cat /run/haconform-nic-eth1.dead-man" in c for c in backend.commands)
    assert target.nic_state("server1") == "up"


def test_nic_holding_finds_the_link_by_address():
    links = [{"ifname": "lo", "addr_info": [{"local": "127.0.0.1"}]},
             {"ifname": "eth1", "addr_info": [{"local": "172.25.5.1"}, {"local": "172.25.5.100"}]}]
    assert nic_holding(links, "172.25.5.100") == "eth1" and nic_holding(links, "10.0.0.1") is None


def test_existing_fence_device_is_checked_not_started(target):
    scripted(target, "server1", {"fence_xvm": FakeResult(stdout="Node1  uuid-1 on\nNode4  uuid-4 on\n")})
    assert target.fence_device_running()
    info = target.start_fence_device(b"k" * 128, key_file="/etc/cluster/fence_xvm.key", multicast_address="225.0.0.12", port=1229)
    assert "started nothing" in info["fence device"]
    scripted(target, "server1", {"fence_xvm": FakeResult(stdout="Node1  uuid-1 on\n")})
    scripted(target, "server4", {"fence_xvm": FakeResult(rc=1, stderr="Timed out")})
    assert not target.fence_device_running()
    with pytest.raises(HaconformError, match="fence_virtd"):
        target.start_fence_device(b"k" * 128, key_file="/etc/cluster/fence_xvm.key", multicast_address="225.0.0.12", port=1229)


# ----- left-out bookkeeping ---------------------------------------------------------

class Report:
    def __init__(self, nodeid, reason, when="setup"):
        self.nodeid, self.when, self.skipped, self.duration = nodeid, when, True, 0.0
        self.longrepr = ("suites/x.py", 1, f"Skipped: {reason}")


def test_left_out_reasons_are_recognised_and_grouped(tmp_path):
    destructive = "destructive: left out against an SSH target without --allow-destructive"
    assert left_out_reason(Report("a", destructive)) == destructive
    assert left_out_reason(Report("b", "target lab has no power control")) is None
    grouped = summarize([("t1[a]", "HAC-HA-003", destructive), ("t1[b]", "HAC-HA-003", destructive),
                         ("t2", "HAC-RR-001", "verify-only: x"), ("t3", None, destructive)])
    assert grouped == [(destructive, ["HAC-HA-003", "t3"]), ("verify-only: x", ["HAC-RR-001"])]


def test_left_out_tests_are_written_to_history(tmp_path):
    class Config:
        _haconform_run_dir = tmp_path / "run"

        def getoption(self, name):
            return "ssh"

    plugin = LeftOut(Config())
    plugin.pytest_runtest_logreport(Report("suites/t.py::t", "destructive: no"))
    plugin.pytest_runtest_logreport(Report("suites/t.py::u", "something else"))
    lines = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"left_out": "destructive: no"' in lines[0] and '"outcome": "skipped"' in lines[0]


def test_sysrq_refused_on_a_host_sharing_the_harness_kernel(target, monkeypatch):
    started = []
    monkeypatch.setattr(target_module.subprocess, "Popen", lambda argv, **kw: started.append(argv))
    scripted(target, "server4", {"boot_id": FakeResult(stdout=target_module.own_boot_id() + "\n")})
    with pytest.raises(HaconformError, match="harness machine's own kernel"):
        target.power("server4", "crash")
    assert started == []


def test_crash_fires_sysrq_and_waits_for_silence(target, monkeypatch):
    started = []
    backend = scripted(target, "server4", {"boot_id": FakeResult(stdout="other-kernel\n")})

    def popen(argv, **kwargs):
        started.append(argv)
        backend.answers["boot_id"] = target_module.HostUnreachable("gone")
    monkeypatch.setattr(target_module.subprocess, "Popen", popen)
    backend.argv = lambda command, multiplexed=True: ["ssh", "server4", command]
    target.power("server4", "crash")
    assert started == [["ssh", "server4", "echo c > /proc/sysrq-trigger"]]
    assert target.power_state("server4") == "crashed"


def test_a_target_that_never_connects_leaves_no_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(target_module.tempfile, "tempdir", str(tmp_path))
    target = InventoryTarget(TOPOLOGY, inventory())
    target.describe()
    assert target._control_path is None and list(tmp_path.iterdir()) == []


# ----- the ControlPath directory ------------------------------------------------------

def test_control_directory_is_private_and_not_guessable(tmp_path, monkeypatch):
    monkeypatch.setattr(target_module.tempfile, "tempdir", str(tmp_path))
    first, second = InventoryTarget(TOPOLOGY, inventory()), InventoryTarget(TOPOLOGY, inventory())
    paths = [first.backend("server4").control_dir, second.backend("server4").control_dir]
    assert paths[0] != paths[1] and all(Path(p).parent == tmp_path for p in paths)
    for path in paths:
        info = os.lstat(path)
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid()
    assert f"-{os.getpid()}-" not in paths[0], "the pid would make the name guessable"
    assert f"ControlPath={paths[0]}/%C" in first.backend("server4").argv("true")


def test_control_directory_made_again_after_down(tmp_path, monkeypatch):
    monkeypatch.setattr(target_module.tempfile, "tempdir", str(tmp_path))
    target = InventoryTarget(TOPOLOGY, inventory())
    backend = target.backend("server4")
    target.down()
    assert not Path(backend.control_dir).exists()
    backend.argv("true")
    assert stat.S_IMODE(os.lstat(backend.control_dir).st_mode) == 0o700


@pytest.mark.parametrize("spoil", ["mode 0755", "a symlink", "another owner"])
def test_a_control_directory_that_is_not_private_is_refused(tmp_path, monkeypatch, spoil):
    monkeypatch.setattr(target_module.tempfile, "tempdir", str(tmp_path))
    target = InventoryTarget(TOPOLOGY, inventory())
    backend = target.backend("server4")
    path = backend.control_dir
    if spoil == "mode 0755":
        os.chmod(path, 0o755)
    elif spoil == "a symlink":
        os.rmdir(path)
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        os.symlink(tmp_path / "elsewhere", path)
    else:
        if os.geteuid() != 0:
            pytest.skip("chown to another user needs root")
        os.chown(path, 65534, 65534)
    for attempt in (lambda: backend.argv("true"), lambda: target.backend("server1")):
        with pytest.raises(HaconformError) as caught:
            attempt()
        message = str(caught.value)
        assert path in message and "not private" in message and f"remove {path}" in message, message


# ----- a command's input -----------------------------------------------------------------

def test_input_reaches_local_and_persistent_commands_on_stdin(tmp_path):
    data = bytes(range(256)) + b"hacluster:pw\n"
    local = AccessBackend("client", access=HostAccess("client", "local"), control_dir=str(tmp_path / "ctl"),
                          guard=HostGuard())
    assert local.run("cat", input=data).stdout_bytes == data
    assert local.run("cat").stdout_bytes == b"", "without input a command reads nothing"
    persistent = AccessBackend("server4", access=HostAccess("server4", "ssh", address="x"),
                               control_dir=str(tmp_path / "ctl"), guard=HostGuard())
    persistent._shells.close()
    persistent._shells = ShellPool(["/bin/sh"], tmp_root=str(tmp_path))   # a local shell stands in for ssh
    try:
        host = testinfra.host.Host(persistent)
        assert host.run("cat", input=data).stdout_bytes == data
        assert host.run("echo %s", "still the Host API").stdout == "still the Host API\n"
        assert host.check_output("echo ok") == "ok"
    finally:
        persistent.close()
