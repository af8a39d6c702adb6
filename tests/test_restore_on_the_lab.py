"""Fail-stop restore on the lab: a restore that times out stops the run, and the dead-man switch still fires.

HAC-HA-005 (standby of the active director) runs on a lab of its own; a plugin
(tests/data/restore/impatient.py) makes its restore find the cluster stopped on one director and wait
only 50 ms for the cluster to be as it was.  The session must stop with the restore's exit status, say in its verdict
what was found and not put back, leave the standby test's dead-man switch armed, and that switch must
run its undo once the harness has exited (its pipe closed), as the director's syslog says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from haconform.lab.lab import NamespaceLab
from haconform.restore import EXIT_NOT_RESTORED
from haconform.topology import load_topology
from haconform.wait import wait_until

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.lab(expected_s=75), pytest.mark.skipif(os.geteuid() != 0, reason="the namespace lab needs root")]


def test_a_restore_that_times_out_stops_the_run_and_the_switch_undoes_the_fault(tmp_path):
    name = f"rt{os.getpid() % 10000}"
    lab = NamespaceLab(name, load_topology(REPO / "fixtures" / "topology.yaml"))
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "suites", "-n", "0", "-p", "no:cacheprovider", "-p",
             "tests.data.restore.impatient", "-k", "test_standby_moves_the_group", "--lab-name", name, "--keep-lab",
             "--history-dir", str(tmp_path / "h"), f"--junitxml={tmp_path / 'r' / 'c.xml'}"],
            cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(REPO)})
        (tmp_path / "run.log").write_text(run.stdout + run.stderr)
        assert run.returncode == EXIT_NOT_RESTORED, run.stdout[-3000:] + run.stderr[-2000:]
        verdict = json.loads(next((tmp_path / "h").glob("*/verdict.json")).read_text())
        stopped = verdict["run"]["stopped"]
        assert stopped["test"].endswith("test_standby_moves_the_group"), stopped
        said = json.dumps(stopped["evidence"])
        assert "nodes not online" in said and "left armed (restore failed)" in said, said
        assert {m["id"]: m["verdict"] for m in verdict["musts"]}["HAC-HA-005"] == "broken"

        # The switch the standby test armed (its undo: `pcs node unstandby`) fires as the harness exits.
        def undone() -> str:
            return "".join(lab.run(host, "grep -h haconform-deadman /var/log/syslog /var/log/messages 2>/dev/null",
                                   timeout=60).stdout for host in ("server1", "server4"))
        said = wait_until("the dead-man switch fired its undo once the harness was gone",
                          lambda: (lambda text: text if "the harness is gone" in text and
                                   "undoing: pcs node unstandby" in text else None)(undone()),
                          timeout=120, observe=undone)
        (tmp_path / "dead-man.log").write_text(said)
    finally:
        subprocess.run([sys.executable, "-m", "haconform.cli", "lab", "down", "--name", name], cwd=REPO,
                       capture_output=True, timeout=300)
