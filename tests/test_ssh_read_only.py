"""Read-only means read-only: a `--target ssh` run without --allow-destructive writes nothing to the hosts.

A stage-5 lab is turned into an existing deployment reached only over ssh
(tests/sshlab.py).  Every regular file under /etc, /var/www, /var/log and /tmp
of each host is hashed before and after a read-only run.  Nothing may be
created, removed or rewritten, the CIB's epoch may not move; a log may only have grown by lines its own
daemons wrote (the sshd that logs the harness's logins, haproxy and Apache
logging the requests the tests make, the cluster's periodic work) — a line
from `logger` or any program of the harness's is a write.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.sshlab import built_deployment, compare_snapshots, junit_outcomes

ATTEMPTS = Path(__file__).resolve().parent / "data" / "read_only" / "attempts_to_write.py"


def junit_failure_texts(junit: Path) -> dict[str, str]:
    """test name -> the whole text of its failure (JUnit's message attribute is cut short)."""
    import xml.etree.ElementTree as ET
    return {case.get("name"): (case.find("failure").text or "") for case in ET.parse(junit).getroot().iter("testcase")
            if case.find("failure") is not None}


def attempt_names() -> list[str]:
    return [line.split("(")[0].removeprefix("def ") for line in ATTEMPTS.read_text().splitlines()
            if line.startswith("def test_")]

# Programs of the deployment itself: what they append to their logs during a run is the deployment working
# (the harness's ssh logins, the requests it sends, pacemaker's own timers, the kernel noting tcpdump's
# promiscuous mode), not the harness writing.
DEPLOYMENT_PROGRAMS = {"kernel", "sshd", "haproxy", "apache2", "corosync", "pacemakerd", "pacemaker-based",
                       "pacemaker-fenced", "pacemaker-execd", "pacemaker-attrd", "pacemaker-schedulerd",
                       "pacemaker-controld", "pcsd", "rsyslogd", "fence_xvm", "IPaddr2", "haproxy(lb)"}

pytestmark = [
    pytest.mark.lab(expected_s=85),
    pytest.mark.skipif(os.geteuid() != 0, reason="the namespace lab needs root"),
    pytest.mark.skipif(not (shutil.which("sshd", path="/usr/sbin:/usr/bin") and shutil.which("nc")),
                       reason="needs openssh-server and netcat-openbsd (`haconform lab install` installs them)"),
]


@pytest.fixture(scope="module")
def ssh_deployment(tmp_path_factory):
    yield from built_deployment("ro", tmp_path_factory)


def test_read_only_ssh_run_writes_nothing_to_the_hosts(ssh_deployment):
    """The suites, and beside them tests that try to write in ten ways without a marker
    (tests/data/read_only/attempts_to_write.py): the guard refuses each at run time, nothing on the hosts
    changes, and the transcript holds only allow-listed commands."""
    before, cib_before = ssh_deployment.snapshot(), ssh_deployment.cib_epochs()
    ssh_deployment.ssh_run([str(ATTEMPTS)], "read-only")
    after, cib_after = ssh_deployment.snapshot(), ssh_deployment.cib_epochs()
    log = (ssh_deployment.workdir / "read-only.log").read_text()
    outcomes = junit_outcomes(ssh_deployment.workdir / "read-only.xml")
    attempts = {name: outcomes.pop(name) for name in attempt_names()}
    ran = {cid for cid, (outcome, _) in outcomes.items() if outcome == "passed"}
    broken = {cid: message[:300] for cid, (outcome, message) in outcomes.items() if outcome in ("failed", "error")}
    # JUnit shows an xfail (a known finding, "finding: ...") as skipped too.
    left_out = {cid: message for cid, (outcome, message) in outcomes.items() if outcome == "skipped"}
    changes = compare_snapshots(before, after)
    (ssh_deployment.workdir / "read-only-changes.json").write_text(
        json.dumps({"changes": changes, "left_out": left_out, "passed": sorted(ran)}, indent=1))

    assert not broken, f"read-only tests failed against the ssh deployment: {broken}\n{log[-3000:]}"
    texts = junit_failure_texts(ssh_deployment.workdir / "read-only.xml")
    not_refused = {name: outcome[0] for name, outcome in attempts.items()
                   if outcome[0] != "failed" or "ReadOnlyRefused" not in texts.get(name, "")}
    assert not not_refused, f"attempts to write that were not refused by the guard: {not_refused}"
    verdict = json.loads(next((ssh_deployment.workdir / "results").glob("*/verdict.json")).read_text())
    access = verdict["run"]["host_access"]
    assert access["mode"] == "read-only" and not access["granted"], access
    assert len(access["refused"]) == len(attempts), access["refused"]
    transcript = [json.loads(line) for line in Path(access["transcript"]).read_text().splitlines()]
    let_through = {entry["decision"] for entry in transcript if entry["decision"] != "refused"}
    assert let_through == {"allow-listed"}, let_through
    assert len(transcript) == access["commands"] and access["allow_listed"] >= 100, access
    assert len(ran) >= 15, f"only {sorted(ran)} passed: the run proves little\n{log[-3000:]}"
    # The logging MUSTs that find their own request lines by a unique request need no write any more.
    assert {"HAC-LOG-001", "HAC-LOG-003", "HAC-LOG-004"} <= ran, sorted(ran)
    reach = verdict["run"]["reach"]
    (ssh_deployment.workdir / "read-only-reach.json").write_text(json.dumps(reach, indent=1))
    assert reach["deployment_stage"] == "stage5" and ran <= set(reach["ran_read_only"]), (sorted(ran), reach)
    assert "HAC-LOG-002" in reach["need_allow_destructive"] and not reach["needing_a_write_that_ran"], reach
    assert {"HAC-RR-001", "HAC-RR-002"} <= set(reach["not_at_stage"]), reach
    # The cluster's configuration lives in the CIB, not in /etc: a `pcs property set`, a constraint or a
    # resource change by the run would raise its epoch.
    assert cib_after == cib_before, f"the CIB changed during a read-only run: {cib_before} -> {cib_after}"
    for kind in ("created", "removed", "rewritten"):
        assert not changes[kind], f"files {kind} on the hosts by a read-only run: {changes[kind]}"
    by_harness = {path: {p: n for p, n in programs.items() if p not in DEPLOYMENT_PROGRAMS}
                  for path, programs in changes["appended"].items()}
    by_harness = {path: programs for path, programs in by_harness.items() if programs}
    assert not by_harness, f"log lines not written by the deployment's own daemons: {by_harness}"
    reasons = {cid: reason for cid, reason in left_out.items()
               if not reason.startswith(("destructive:", "writes to a host:", "verify-only", "finding:"))}
    assert not reasons, f"left out without a read-only reason: {reasons}"
