"""Dead-man switches: armed, disarmed, fired when the harness dies (SIGKILL), by the backstop, retried.

Unit tests run the real switch (sh, timeout, head) on this machine with stub
commands first on PATH (StubHosts): an undo is recorded, nothing acts.  The
lab test arms one inside a namespace host and kills a harness-like parent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from haconform import deadman, redaction
from haconform.deadman import DeadManSwitch, LOG_TAG, switch_script
from haconform.errors import HaconformError
from haconform.wait import wait_until
from tests.fakes import GuardedFake

REPO = Path(__file__).resolve().parent.parent
STUBBED = ("pcs", "systemctl", "service", "logger")
# "A few seconds" for an undo after the harness dies: the pipe's end is seen at once.
UNDO_AFTER_DEATH_S = 5.0


class StubHosts(GuardedFake):
    """A target whose every host is this machine with stub pcs/systemctl/service/logger first on PATH.

    Each stub appends "HOST: COMMAND ARGS" to ran; a command listed in failing fails that many times first."""

    kind = "stub"

    def __init__(self, directory: Path, failing: dict[str, int] | None = None):
        self.bin = directory / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.ran = directory / "ran"
        self.ran.touch()
        for name in STUBBED:
            failures = (failing or {}).get(name, 0)
            counter = directory / f"{name}.failures"
            script = self.bin / name
            script.write_text(textwrap.dedent(f"""\
                #!/bin/sh
                n=$(cat {counter} 2>/dev/null || echo 0)
                if [ "$n" -lt {failures} ]; then echo $((n + 1)) > {counter}; exit 1; fi
                echo "$STUB_HOST: {name} $*" >> {self.ran}
                """))
            script.chmod(0o755)

    def exec_argv(self, host: str, *, keepalive: bool = True) -> list[str]:
        return ["env", f"PATH={self.bin}:/usr/bin:/bin", f"STUB_HOST={host}"]

    def commands(self) -> list[str]:
        return [line for line in self.ran.read_text().splitlines() if line]

    def undos(self) -> list[str]:
        return [line for line in self.commands() if " logger " not in line]


@pytest.fixture
def stub(tmp_path):
    return StubHosts(tmp_path)


@pytest.fixture(autouse=True)
def no_switch_left(request):
    """Every test leaves no switch armed (an armed one would fire when pytest exits)."""
    yield
    for target in list(deadman._armed):
        leftovers = deadman._armed.pop(target)
        for switch in leftovers:
            switch.disarm()
        assert not leftovers, f"{request.node.name} left switches armed: {leftovers}"


def kill_armed_parent(arming: str, *, armed_within: float, undone, undone_what: str) -> float:
    """A harness-like parent process runs `arming` (python that arms a switch), says so, sleeps; it is
    killed with SIGKILL once armed.  Returns the seconds from the kill until `undone()` held."""
    harness = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from haconform.deadman import arm
        from haconform.guard import HostGuard
        """) + textwrap.dedent(arming) + 'print("armed", flush=True)\ntime.sleep(600)\n'],
        stdout=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(harness.stdout), daemon=True).start()
        wait_until("the harness-like parent armed its switch", lambda: "armed\n" in lines, timeout=armed_within)
        killed_at = time.monotonic()
        os.kill(harness.pid, signal.SIGKILL)
        wait_until(undone_what, undone, timeout=UNDO_AFTER_DEATH_S)
        return time.monotonic() - killed_at
    finally:
        if harness.poll() is None:
            harness.kill()
        harness.wait(timeout=10)


def test_the_script_reads_one_line_with_the_backstop_and_quotes_the_undo():
    script = switch_script("pcs node unstandby server1", "standby on server1", 800)
    assert "line=$(timeout 800 head -n 1)" in script
    assert '[ "$line" = disarm ]' in script
    assert "until /bin/sh -c 'pcs node unstandby server1'; do" in script
    assert f"logger -t {LOG_TAG} --" in script
    # once fired, nothing is written where nobody reads (a closed stdout would kill the shell)
    assert script.index("exec </dev/null >/dev/null 2>&1") < script.index("until ")


def test_arm_then_disarm_ends_cleanly_without_undoing(stub):
    switch = DeadManSwitch(stub, "server1", "pcs node unstandby server1", what="standby on server1").arm()
    assert switch.running
    assert switch.disarm() == "server1: standby on server1: disarmed"
    assert not switch.running and switch._proc.returncode == deadman.EXIT_DISARMED
    assert stub.commands() == []


def test_the_switch_runs_in_its_own_session(stub):
    """A Ctrl-C to the harness's process group does not reach it."""
    switch = DeadManSwitch(stub, "server1", "pcs node unstandby server1", what="x").arm()
    try:
        assert os.getpgid(switch.pid) == switch.pid != os.getpgid(0)
    finally:
        switch.disarm()


def test_harness_killed_by_sigkill_the_undo_runs_at_once(stub, tmp_path):
    seconds = kill_armed_parent(f"""
        class Target:
            guard = HostGuard()

            def program_argv(self, host, argv, *, keepalive=True):
                return {stub.exec_argv("server1")!r} + argv
        arm(Target(), "server1", "pcs node unstandby server1", what="standby on server1")
        """, armed_within=20, undone=stub.undos, undone_what="the undo ran after the harness died")
    assert stub.undos() == ["server1: pcs node unstandby server1"]
    assert seconds < UNDO_AFTER_DEATH_S
    assert any(f"logger -t {LOG_TAG} -- standby on server1: undone" in c for c in stub.commands()), stub.commands()


def test_the_backstop_fires_under_a_live_harness_and_disarm_says_so(stub):
    switch = DeadManSwitch(stub, "server4", "pcs property set stonith-enabled=true", what="stonith off",
                           backstop_s=1).arm()
    wait_until("the backstop fired", lambda: not switch.running, timeout=10)
    assert stub.undos() == ["server4: pcs property set stonith-enabled=true"]
    outcome = switch.disarm()
    assert "fired before disarm (its undo ran, exit 3" in outcome, outcome


def test_a_refused_undo_is_tried_again(tmp_path, monkeypatch):
    monkeypatch.setattr(deadman, "UNDO_RETRY_S", 0)
    stub = StubHosts(tmp_path, failing={"pcs": 2})
    switch = DeadManSwitch(stub, "server1", "pcs node unstandby server1", what="x", backstop_s=1).arm()
    wait_until("the switch ended", lambda: not switch.running, timeout=10)
    assert stub.undos() == ["server1: pcs node unstandby server1"]
    assert "its undo ran" in switch.disarm()


def test_an_undo_that_keeps_failing_is_given_up_and_said(tmp_path, monkeypatch):
    monkeypatch.setattr(deadman, "UNDO_RETRY_S", 0)
    stub = StubHosts(tmp_path, failing={"pcs": 100})
    switch = DeadManSwitch(stub, "server1", "pcs node unstandby server1", what="x", backstop_s=1).arm()
    wait_until("the switch ended", lambda: not switch.running, timeout=10)
    assert (tmp_path / "pcs.failures").read_text().strip() == str(deadman.UNDO_ATTEMPTS)
    assert "its undo FAILED" in switch.disarm()


def test_a_host_that_cannot_run_the_switch_is_refused_before_the_change():
    class Broken(GuardedFake):
        def exec_argv(self, host, *, keepalive=True):
            return ["false"]
    with pytest.raises(HaconformError, match="did not arm"):
        DeadManSwitch(Broken(), "server1", "pcs node unstandby server1", what="x").arm()


def test_an_undo_carrying_a_secret_is_refused(stub, monkeypatch):
    # a set of this test's own: every 8-character run of a registered secret is masked from then on
    monkeypatch.setattr(redaction, "_secrets", set(redaction._secrets))
    redaction.register("dead-man-test-secret-9f2c")
    with pytest.raises(HaconformError, match="secret"):
        DeadManSwitch(stub, "server1", "fence_xvm -k dead-man-test-secret-9f2c", what="x")


def test_switches_are_kept_per_target_and_disarmed_newest_first(tmp_path):
    one, other = StubHosts(tmp_path / "one"), StubHosts(tmp_path / "other")
    first = deadman.arm(one, "server1", "pcs node unstandby server1", what="first")
    second = deadman.arm(one, "server4", "pcs resource cleanup haproxy", what="second")
    elsewhere = deadman.arm(other, "server1", "systemctl start apache2", what="elsewhere")
    assert deadman.armed(one) == [first, second] and deadman.armed(other) == [elsewhere]
    assert deadman.disarm_all(one) == ["server4: second: disarmed", "server1: first: disarmed"]
    assert deadman.armed(one) == [] and deadman.armed(other) == [elsewhere]
    assert deadman.disarm_all(other) == ["server1: elsewhere: disarmed"]
    assert one.commands() == [] and other.commands() == []


# ----- on the namespace lab ---------------------------------------------------------------

LAB = os.environ.get("HACONFORM_DEADMAN_LAB", "hcdeadman")
MARK = "/var/tmp/haconform-deadman-test"


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the namespace lab needs root")
    from haconform.lab.lab import NamespaceLab
    from haconform.topology import load_topology
    lab = NamespaceLab(LAB, load_topology(), hosts=["server2"])
    lab.down()
    lab.up()
    yield lab
    lab.down()


@pytest.fixture
def lab_target(lab):
    from haconform.targets.lab import LabTarget
    lab.run("server2", f"rm -f {MARK}", check=True)
    return LabTarget(lab.topology, lab.name, lab=lab)


def switches_in_host(lab) -> str:
    """Shells of switches still running in the host (their script names the log tag)."""
    return lab.run("server2", f"ps -eo pid,args | grep -v grep | grep -- '{LOG_TAG}' || true").stdout.strip()


@pytest.mark.lab
def test_on_the_lab_disarm_ends_the_switch_in_the_host(lab, lab_target):
    switch = DeadManSwitch(lab_target, "server2", f"echo undone > {MARK}", what="lab disarm").arm()
    assert switches_in_host(lab)
    assert switch.disarm() == "server2: lab disarm: disarmed"
    assert switches_in_host(lab) == ""
    assert lab.run("server2", f"test -e {MARK}").returncode != 0


@pytest.mark.lab
def test_on_the_lab_a_sigkilled_harness_is_undone_within_seconds(lab, lab_target):
    seconds = kill_armed_parent(f"""
        from haconform.lab.lab import NamespaceLab
        from haconform.targets.lab import LabTarget
        from haconform.topology import load_topology
        lab = NamespaceLab({LAB!r}, load_topology(), hosts=["server2"])
        arm(LabTarget(lab.topology, lab.name, lab=lab), "server2", "echo undone > {MARK}", what="lab kill")
        """, armed_within=30, undone=lambda: lab.run("server2", f"cat {MARK}").stdout.strip() == "undone",
        undone_what="the undo ran in server2")
    assert seconds < UNDO_AFTER_DEATH_S
    wait_until("the fired switch ended in the host", lambda: switches_in_host(lab) == "", timeout=10,
               observe=lambda: switches_in_host(lab))
