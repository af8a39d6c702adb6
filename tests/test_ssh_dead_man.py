"""A harness SIGKILLed in the middle of a destructive SSH test leaves the deployment as it found it.

Against a stage-5 lab reached only over ssh (tests/sshlab.py), each destructive
test that changes cluster state is started with --allow-destructive; once its
change is visible in the cluster (crm_mon XML, the CIB), the harness process is
killed with SIGKILL, nothing else.  The dead-man switch the fault armed on the
host must put the deployment back: every node online and not in standby, every
resource started, no failed action, stonith-enabled as recorded, within the
bound below.  Rounds per test: HACONFORM_KILL_ROUNDS (default 1; the closing
note's figures come from 5).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from haconform.deadman import LOG_TAG
from haconform.readers.cluster import parse_crm_mon
from haconform.timeouts import BOUNDS
from haconform.wait import wait_until
from tests.sshlab import REPO, SshDeployment, built_deployment

ROUNDS = int(os.environ.get("HACONFORM_KILL_ROUNDS", "1"))
# Seen changed: the harness has made its change (from start: session, ssh, verify, inject).
CHANGE_SEEN_S = BOUNDS.cluster_form
# Back as recorded after the kill: the switch fires on EOF at once; the undo, then the cluster settling.
RESTORED_S = BOUNDS.cluster_settle
POLL_S = 0.25
# The destructive tests whose change is cluster state (NIC and power faults cannot run on a lab reached over
# ssh: its one NIC carries the ssh session, and sysrq would hit the harness machine's kernel).
STATE_CHANGING = {
    "HAC-HA-004": "test_haproxy_stopped_is_restarted",
    "HAC-HA-005": "test_standby_moves_the_group",
}

pytestmark = [
    pytest.mark.lab(expected_s=135),
    pytest.mark.skipif(os.geteuid() != 0, reason="the namespace lab needs root"),
    pytest.mark.skipif(not (shutil.which("sshd", path="/usr/sbin:/usr/bin") and shutil.which("nc")),
                       reason="needs openssh-server and netcat-openbsd (`haconform lab install` installs them)"),
]


def cluster_state(deployment: SshDeployment) -> dict:
    """What restore compares, read from the first director that answers."""
    for director in ("server1", "server4"):
        mon = deployment.host_run(director, "crm_mon --output-as=xml")
        if mon.returncode != 0:
            continue
        state = parse_crm_mon(mon.stdout, rc=mon.returncode, stderr=mon.stderr)
        cib = deployment.host_run(director, "cibadmin --query --scope crm_config")
        stonith = [nv.get("value") for nv in ET.fromstring(cib.stdout).iter("nvpair")
                   if nv.get("name") == "stonith-enabled"]
        return {"nodes": {n.name: {"online": n.online, "standby": n.standby} for n in state.nodes},
                "started": sorted(r.id for r in state.resources if r.active),
                "failed": sorted({f.resource for f in state.failures}),
                "stonith-enabled": stonith[-1] if stonith else None}
    return {"nodes": None}


def switch_reports(deployment: SshDeployment) -> list[str]:
    """The lines dead-man switches logged on the directors ("undone", "undo failed")."""
    lines = []
    for director in ("server1", "server4"):
        result = deployment.host_run(director, f"grep -h -- {LOG_TAG} /var/log/syslog || true")
        lines += [f"{director}: {line}" for line in result.stdout.splitlines()]
    return lines


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for task in os.listdir(f"/proc/{current}/task") if os.path.exists(f"/proc/{current}/task") else []:
            try:
                children = open(f"/proc/{current}/task/{task}/children").read().split()
            except OSError:
                continue
            found += map(int, children)
            todo += map(int, children)
    return found


def poll(condition, timeout: float, what: str, observe) -> float:
    """wait_until, returning how long the condition took to hold."""
    began = time.monotonic()
    wait_until(what, condition, timeout=timeout, observe=observe, interval=POLL_S)
    return time.monotonic() - began


@pytest.fixture(scope="module")
def ssh_deployment(tmp_path_factory):
    yield from built_deployment("dm", tmp_path_factory)


@pytest.mark.parametrize("conformance_id", sorted(STATE_CHANGING))
def test_sigkill_mid_test_leaves_the_deployment_as_recorded(ssh_deployment, conformance_id):
    recorded = cluster_state(ssh_deployment)
    assert recorded["nodes"] and all(n["online"] and not n["standby"] for n in recorded["nodes"].values()), recorded
    figures = []
    for round_ in range(ROUNDS):
        log = ssh_deployment.workdir / f"{conformance_id}-{round_}.log"
        # A harness killed by SIGKILL cannot remove its ssh control directory: it is left in this test's tmp.
        killed_tmp = ssh_deployment.workdir / f"{conformance_id}-{round_}.tmp"
        killed_tmp.mkdir()
        with open(log, "w") as out:
            harness = subprocess.Popen(
                [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "-q",
                 "--target", "ssh", "--inventory", str(ssh_deployment.inventory), "--allow-destructive",
                 "--history-dir", str(ssh_deployment.workdir / "results"), "-k", STATE_CHANGING[conformance_id]],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(killed_tmp)})
        left_behind: list[int] = []
        last: dict = {}
        try:

            def changed() -> bool:
                last["state"] = cluster_state(ssh_deployment)
                return last["state"] != recorded or harness.poll() is not None
            poll(changed, CHANGE_SEEN_S, f"{conformance_id}'s change seen in the cluster", lambda: last)
            assert harness.poll() is None, f"the harness ended before its change was seen:\n{log.read_text()[-2000:]}"
            changed_to = last["state"]
            reports_before = set(switch_reports(ssh_deployment))
            left_behind = descendants(harness.pid)
            os.kill(harness.pid, signal.SIGKILL)
            harness.wait(timeout=10)

            def back() -> bool:
                last["state"] = cluster_state(ssh_deployment)
                return last["state"] == recorded
            seconds = poll(back, RESTORED_S, f"round {round_}: the deployment back as recorded {recorded}",
                           lambda: last)
            # It was the switch that put it back, and it says so in the host's syslog.
            def new_reports() -> list[str]:
                return [line for line in switch_reports(ssh_deployment) if line not in reports_before]
            poll(lambda: any(line.endswith("undone") for line in new_reports()),
                 RESTORED_S, f"round {round_}: a switch's `undone` line in a director's syslog", new_reports)
            figures.append({"round": round_, "changed": changed_to, "restored_s": round(seconds, 1),
                            "switch": new_reports()})
        finally:
            if harness.poll() is None:
                harness.kill()
                harness.wait(timeout=10)
            # The harness's children (ssh shells, switches) end on EOF; any that did not are ended by PID.
            for pid in left_behind:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    (ssh_deployment.workdir / f"{conformance_id}-kills.json").write_text(json.dumps(figures, indent=1))
    print(conformance_id, json.dumps([f["restored_s"] for f in figures]))
