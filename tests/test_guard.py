"""Read-only by construction: the guard every host command, program and mutating verb passes.

The allow-list judges commands as the shell parses them (haconform/readonly_commands.py); the guard
(haconform/guard.py) refuses, grants and writes the transcript; the targets ask it before anything
reaches a host.  Here the "deployment" is this machine's own shell behind an InventoryTarget's `local`
access kind, so a command the guard failed to stop would really run and leave a file behind.
"""

from __future__ import annotations

import json
import shlex
import textwrap
from pathlib import Path

import pytest

from haconform.cluster import Cluster
from haconform.deadman import DeadManSwitch
from haconform.deployment import Deployment
from haconform.faults import Standby
from haconform.guard import APPLY, GRANTED, READ_ONLY, HostGuard, ReadOnlyRefused
from haconform.inventory import HostAccess, Inventory
from haconform.readonly_commands import harness_program, judge
from haconform.redaction import MASK, register
from haconform.targets.inventory_target import InventoryTarget
from haconform.topology import load_topology

pytest_plugins = ["pytester"]

TOPOLOGY = load_topology()
REPO = Path(__file__).resolve().parent.parent


READS = [
    "cat /etc/haproxy/haproxy.cfg",
    "cat /run/haconform/booted 2>/dev/null || cat /proc/sys/kernel/random/boot_id",
    "echo 'show stat' | timeout 5 socat stdio UNIX-CONNECT:/var/lib/haproxy/stats",
    "timeout 10 crm_mon --one-shot --output-as=xml --include=all --fence-history=3",
    "CIB_file=/tmp/cib.xml timeout 10 crm_mon --one-shot --output-as=xml",
    "timeout 10 cibadmin --query --scope status",
    "timeout 10 crm_verify --live-check -V --output-as=xml",
    "timeout 10 stonith_admin --history '*' --verbose --output-as=xml",
    "crm_attribute --query --name stonith-enabled",
    "pcs --version",
    "pcs resource config --output-format=json",
    "pcs status --full",
    "pcs constraint config",
    "ip -j -4 addr show",
    "ip -j link show dev eth0",
    "haproxy -c -f /dev/stdin",
    "haproxy -vv",
    "fence_xvm -o list",
    "stat -L -c '%i %s' /var/log/haproxy.log",
    "tail -c +1001 /var/log/haproxy.log | head -c 65536",
    "sha256sum /etc/haproxy/haproxy.cfg 2>/dev/null",
    "if test -d /run/systemd/system; then systemctl is-system-running; else echo running; fi",
    "i=0; while [ $i -lt 30 ]; do /bin/true; i=$((i + 1)); done",
    "service haproxy status",
    "OCF_ROOT=/usr/lib/ocf /usr/lib/ocf/resource.d/heartbeat/IPaddr2 meta-data",
    "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1/",
    "echo $SSH_CONNECTION",
    "bash -c 'cat /etc/hosts'",
    "date +%Y-%m-%dT%H:%M:%S%z",
]

WRITES = [
    ("touch /tmp/x", "`touch` is not on the read-only allow-list"),
    ("echo x > /etc/motd", "a redirect into /etc/motd"),
    ("x=/tmp/y; echo hi >> $x", "a redirect into a file named only when it runs"),
    ("logger -t haconform sentinel", "`logger` is not on the read-only allow-list"),
    ("pcs node standby server1", "not one of pcs's read-only commands"),
    ("pcs resource refresh", "`pcs resource refresh` changes the cluster"),
    ("pcs constraint location add x y z 100", "changes the cluster"),
    ("pcs property set stonith-enabled=false", "`pcs property set` changes the cluster"),
    ("crm_attribute --name maintenance-mode --update true", "writes"),
    ("crm_resource --cleanup", "writes"),
    ("cibadmin --replace --xml-file /tmp/cib.xml", "only"),
    ("stonith_admin --reboot server1", "writes"),
    ("fence_xvm -H Node1", "fences a node"),
    ("ip addr del 172.25.0.100/24 dev eth0", "changes the host's network"),
    ("ip link set dev eth0 down", "changes the host's network"),
    ("service haproxy stop", "is not `service NAME status`"),
    ("systemctl restart haproxy", "systemctl's read-only subcommands"),
    ("echo 'disable server app/app1' | socat stdio UNIX-CONNECT:/var/lib/haproxy/stats", "only `show ...` verbs"),
    ("haproxy -f /etc/haproxy/haproxy.cfg -D", "would start a proxy"),
    ("curl -F file=@/etc/passwd http://x/upload_file.php", "sends a body"),
    ("curl -o /tmp/page http://x/", "writes a file"),
    ("find /var/www -name '*.gif' -delete", "`find -delete` writes"),
    ("PATH=/tmp cat /etc/hosts", "setting PATH"),
    ("$CMD /etc/hosts", "a program named only when it runs"),
    ("/tmp/cat /etc/hosts", "not in the system's own directories"),
    ("f() { rm -rf /tmp/x; }; f", "a function definition"),
    ("sh -c 'rm -f /tmp/x'", "`rm` is not on the read-only allow-list"),
    ("timeout 5 dd if=/dev/zero of=/tmp/x", "`dd` is not on the read-only allow-list"),
    ("cat $(touch /tmp/x; echo /etc/hosts)", "`touch` is not on the read-only allow-list"),
    ("python3 -c 'import os; os.remove(\"/tmp/x\")'", "not one of the harness's registered"),
    ("echo $((x[$(touch /tmp/y)]))", "runs a command"),
    ("cat <<EOF\n$(touch /tmp/x)\nEOF\n", "a here-document that may run commands"),
]


@pytest.mark.parametrize("command", READS)
def test_reads_are_on_the_allow_list(command):
    verdict = judge(command)
    assert verdict.read_only, verdict.why


@pytest.mark.parametrize("command, why", WRITES)
def test_writes_are_refused_with_the_reason(command, why):
    verdict = judge(command)
    assert not verdict.read_only, f"{command!r} passed as read-only: {verdict.rule}"
    assert why in verdict.why, verdict.why


def test_socat_takes_its_verbs_from_the_command_input_too():
    command = "timeout 5 socat stdio UNIX-CONNECT:/var/lib/haproxy/stats"
    assert judge(command, input=b"show info\n").read_only
    assert not judge(command, input=b"set server app/app1 state maint\n").read_only
    assert not judge(command).read_only, "socat with no known input"


def test_a_harness_program_is_allowed_by_its_exact_source_only():
    source = harness_program("python3", "print('read-only probe of test_guard')", "a test's probe")
    assert judge(f"python3 -c {shlex.quote(source)}").read_only
    changed = source + "; open('/tmp/x', 'w')"
    assert not judge(f"python3 -c {shlex.quote(changed)}").read_only


# ----- the guard's modes -----------------------------------------------------------------------

def test_apply_lets_everything_through_and_transcribes_it(tmp_path):
    guard = HostGuard(APPLY)
    guard.transcript_to(tmp_path / "transcript.jsonl")
    guard.check_command("server1", "touch /tmp/x").finished(0)
    guard.check_action("server1", "power reset")
    guard.close_transcript()
    lines = [json.loads(line) for line in (tmp_path / "transcript.jsonl").read_text().splitlines()]
    assert [(line["command"], line["decision"], line["rc"]) for line in lines] == \
        [("touch /tmp/x", "apply", 0), ("(power reset)", "apply", None)]
    assert guard.summary()["statement"].startswith("apply:")


def test_read_only_refuses_writes_and_grants_and_keeps_every_refusal():
    guard = HostGuard(READ_ONLY)
    with guard.running("tests/x.py::test_y"):
        guard.check_command("server1", "cat /etc/hosts").finished(0)
        with pytest.raises(ReadOnlyRefused, match=r"refused `touch /tmp/x` on server1 in tests/x.py::test_y"):
            guard.check_command("server1", "touch /tmp/x")
        with pytest.raises(ReadOnlyRefused, match="power crash"):
            guard.check_action("server4", "power crash")
        with pytest.raises(ReadOnlyRefused, match="a grant for"):
            with guard.grant("destructive test tests/x.py::test_y"):
                pass
    assert [r["host"] for r in guard.refusals] == ["server1", "server4", "host"]
    summary = guard.summary()
    assert summary["allow_listed"] == 1 and len(summary["refused"]) == 3
    assert "3 refused" in summary["statement"]


def test_granted_mode_writes_only_inside_a_grant():
    guard = HostGuard(GRANTED)
    with pytest.raises(ReadOnlyRefused, match="no grant is held"):
        guard.check_action("server1", "power reset")
    with guard.grant("destructive test t"):
        guard.check_command("server1", "pcs node standby server1").finished(0)
        guard.check_action("server1", "power reset")
    with pytest.raises(ReadOnlyRefused):
        guard.check_command("server1", "pcs node standby server1")
    assert guard.summary()["granted"] == {"destructive test t": 2}
    assert "granted: destructive test t (2)" in guard.statement()


def test_the_transcript_masks_secrets(tmp_path):
    register("transcript-secret-4e1f")
    guard = HostGuard(APPLY)
    guard.transcript_to(tmp_path / "t.jsonl")
    guard.check_command("server1", "echo transcript-secret-4e1f | chpasswd").finished(0)
    guard.close_transcript()
    text = (tmp_path / "t.jsonl").read_text()
    assert "transcript-secret" not in text and MASK in text


# ----- a read-only target: nothing reaches the host ---------------------------------------------

def local_inventory() -> Inventory:
    """Every host is this machine's own shell: a command the guard let through would really run."""
    hosts = {name: HostAccess(name, "local") for name in TOPOLOGY.hosts}
    return Inventory(path=Path("/inv.yaml"), stage="stage5", hosts=hosts)


@pytest.fixture
def read_only_deployment(tmp_path):
    target = InventoryTarget(TOPOLOGY, local_inventory())
    assert target.guard.mode == READ_ONLY
    deployment = Deployment(target)
    yield deployment, tmp_path
    target.down()


def test_every_way_to_write_is_refused_and_nothing_runs(read_only_deployment):
    deployment, tmp_path = read_only_deployment
    machine = deployment.machine("server1")
    victim = tmp_path / "written"
    command = "touch " + shlex.quote(str(victim))
    attempts = {
        "an f-string": lambda: machine.succeed(f"touch {shlex.quote(str(victim))}"),
        "a variable": lambda: machine.execute(command),
        "%-formatting": lambda: machine.execute("echo %s > %s" % ("x", shlex.quote(str(victim)))),
        "shlex.join": lambda: machine.execute(shlex.join(["tee", str(victim)]), input="x"),
        "a cluster-changing command": lambda: machine.execute("crm_attribute --name maintenance-mode --update true"),
        "pcs resource refresh": lambda: machine.execute("pcs resource refresh"),
        "a library call (Cluster.standby)": lambda: Cluster(deployment).standby("server1"),
        "a library call (Machine.write_file)": lambda: machine.write_file(str(victim), "x"),
        "testinfra's host directly": lambda: machine.host.run("touch %s", str(victim)),
        "a long-running program": lambda: machine.program(["/bin/sh", "-c", command]),
        "power": lambda: machine.crash(),
        "the NIC": lambda: machine.block(),
        "a dead-man switch": lambda: DeadManSwitch(deployment.target, "server1", command, what="x").arm(),
    }
    for how, attempt in attempts.items():
        with pytest.raises(ReadOnlyRefused):
            attempt()
        assert not victim.exists(), f"{how} wrote to the host"
    assert len(deployment.target.guard.refusals) == len(attempts)


def test_a_fault_is_refused_before_its_switch_or_its_change(read_only_deployment, monkeypatch):
    deployment, _ = read_only_deployment
    victim = deployment.machine("server1")
    with pytest.raises(ReadOnlyRefused, match="inject the fault standby"):
        Standby(deployment).inject(victim)


def test_reads_run_on_a_read_only_target(read_only_deployment):
    deployment, _ = read_only_deployment
    machine = deployment.machine("server1")
    assert machine.succeed("echo read-only works") == "read-only works\n"
    assert machine.host.file("/etc/hostname").exists


# ----- the plugin: a refusal is never a pass ---------------------------------------------------------

def test_a_test_that_swallows_a_refusal_still_fails(pytester):
    pytester.makepyfile(test_swallow=textwrap.dedent("""
        from haconform.guard import ReadOnlyRefused
        from haconform.stash import GUARD

        def test_swallows(request):
            guard = request.config.stash[GUARD]
            guard.mode = "read-only"
            try:
                guard.check_command("server1", "touch /etc/motd")
            except ReadOnlyRefused:
                pass

        def test_reads(request):
            request.config.stash[GUARD].check_command("server1", "cat /etc/motd").finished(0)
        """))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--config", str(REPO / "fixtures" / "documented"),
                                          "--history-dir", str(pytester.path / "h"))
    result.assert_outcomes(passed=1, failed=1)
    assert "the guard refused `touch /etc/motd` on server1" in result.stdout.str()
