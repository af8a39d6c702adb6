"""The MUSTs side by side (pytest-xdist): labs named per worker, groups from the suites' data, one run merged.

The merge is tested on a session of conformance tests that touch no host (pytester, two workers): one
history.jsonl, one verdict.json whose cases come from both workers with plain test ids (no xdist @group),
a JUnit with them all; and a restore that fails in one worker stops the run with the restore's status.
"""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from haconform.conformance import Requirement, conformance
from haconform.errors import HaconformError
from haconform.side_by_side import auto_labs, lab_group, merge_host_access, lab_groups, worker_lab_name

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent
DOCUMENTED = REPO / "fixtures" / "documented"


class Options:
    def __init__(self, target="lab"):
        self.target = target

    def getoption(self, name):
        return {"--target": self.target}[name]


def test_each_worker_gets_a_lab_named_after_the_session_s():
    assert worker_lab_name("haconform", None) == "haconform"
    assert worker_lab_name("haconform", "gw0") == "haconform0"
    assert worker_lab_name("ci", "gw11") == "ci11"
    with pytest.raises(HaconformError, match="leaves no room for the workers' numbers"):
        worker_lab_name("haconformxx", "gw3")


def test_the_number_of_labs_follows_the_machine_the_env_and_the_target(monkeypatch):
    monkeypatch.delenv("HACONFORM_LABS", raising=False)
    assert 1 <= auto_labs(Options()) <= 8
    monkeypatch.setenv("HACONFORM_LABS", "3")
    assert auto_labs(Options()) == 3
    assert auto_labs(Options("ssh")) == 0 and auto_labs(Options("vagrant")) == 0   # one deployment each
    monkeypatch.setenv("HACONFORM_LABS", "many")
    with pytest.raises(HaconformError, match="HACONFORM_LABS='many' is not a number of labs"):
        auto_labs(Options())


def test_a_cluster_stage_has_a_lab_the_files_stages_share_one_a_mus_may_declare_its_own():
    from haconform.stages.manager import load_all_stages
    from haconform.topology import load_topology
    stages = load_all_stages(DOCUMENTED, REPO / "fixtures" / "beyond" / "algorithms", load_topology())
    groups = {stage: lab_group(Requirement("HAC-X-001", "It MUST", "s", stage), stages) for stage in stages}
    assert groups["stage4"] == "stage4" and groups["stage5"] == "stage5"
    assert {groups[s] for s in ("stage1", "stage2", "stage3", "algorithm-leastconn")} == {"files"}
    assert lab_group(Requirement("HAC-X-002", "It MUST", "s", "stage4", True, "ha-haproxy"), stages) == "ha-haproxy"
    with pytest.raises(ValueError, match="lab='Bad Name'"):
        conformance("HAC-X-003", must="It MUST", section="s", stage="stage4", lab="Bad Name")


def test_the_suites_tests_map_to_their_labs():
    class Config:
        rootpath = REPO

    from haconform.stages.manager import load_all_stages
    from haconform.topology import load_topology
    Config._haconform_stages = load_all_stages(DOCUMENTED, REPO / "fixtures" / "beyond" / "algorithms",
                                               load_topology())
    groups = lab_groups(Config())
    assert groups["test_60_cluster.py::test_haproxy_stopped_is_restarted"] == "ha-haproxy"
    assert groups["test_60_cluster.py::test_vip_deleted_by_hand_is_restored"] == "stage4"
    assert groups["test_70_fencing.py::test_crashed_director_is_fenced"] == "stage5"
    assert groups["test_20_static_routing.py::test_static_prefix_goes_to_app2"] == "files"
    assert groups["test_50_algorithms.py::test_roundrobin_alternates"] == "files"
    assert set(groups.values()) == {"files", "stage4", "stage5", "ha-haproxy"}


def test_the_labs_host_access_is_one_statement():
    lab = {"mode": "apply", "commands": 10, "allow_listed": 0, "granted": {}, "apply": 10, "refused": [],
           "transcript": "t0"}
    merged = merge_host_access([lab, {**lab, "commands": 5, "apply": 5, "transcript": "t1"}])
    assert merged["commands"] == 15 and merged["transcript"] == ["t0", "t1"]
    assert merged["statement"] == "apply: the harness built these deployments; 15 host commands and actions on 2 labs, all allowed"


SUITE = '''
import pytest
from haconform.conformance import conformance

@conformance("HAC-RR-001", stage="stage1", section="s", must="Requests MUST alternate")
def test_one():
    pass

@conformance("HAC-RR-002", stage="stage1", section="s", must="A failed check MUST take a server out")
@pytest.mark.parametrize("case", ["a", "b"])
def test_two(case):
    pass

@conformance("HAC-HA-004", stage="stage4", section="s", destructive=True, lab="ha-haproxy",
             must="The monitor MUST restart haproxy")
def test_own_lab():
    pass
'''


# The restore of a destructive test, with nothing to restore: a session that touches no host.
QUIET_RESTORE = """
import pytest
from haconform.restore import Restoration, Snapshot
import fixtures.restore as restore_fixture

pytest_plugins = ["fixtures.restore"]

@pytest.fixture
def deployment():
    return object()

def pytest_configure(config):
    restore_fixture.take_snapshot = lambda d: Snapshot()
    restore_fixture.restore = lambda d, before: Restoration(problems=PROBLEMS)

PROBLEMS = []
"""


def run_side_by_side(pytester, suite: str, conftest: str = QUIET_RESTORE, *args: str):
    pytester.makeconftest(conftest)
    suites = pytester.mkdir("suites")
    (suites / "test_s.py").write_text(textwrap.dedent(suite))
    history = pytester.path / "h"
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rootdir", str(pytester.path),
                                         "--config", str(DOCUMENTED), "--history-dir",
                                         str(history), f"--junitxml={pytester.path / 'r' / 'c.xml'}",
                                         "-n", "2", "suites", *args), history


def test_two_workers_make_one_history_one_verdict_one_junit(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    result, history = run_side_by_side(pytester, SUITE)
    assert result.ret == 0, result.stdout.str()[-3000:]
    runs = list(history.iterdir())
    assert len(runs) == 1, runs
    rows = [json.loads(line) for line in (runs[0] / "history.jsonl").read_text().splitlines()]
    assert sorted({row["nodeid"] for row in rows}) == [
        "suites/test_s.py::test_one", "suites/test_s.py::test_own_lab", "suites/test_s.py::test_two[a]",
        "suites/test_s.py::test_two[b]"]
    verdict = json.loads((runs[0] / "verdict.json").read_text())
    held = {m["id"] for m in verdict["musts"] if m["verdict"] == "held"}
    assert held == {"HAC-RR-001", "HAC-RR-002", "HAC-HA-004"}
    assert verdict["run"]["figures"]["labs"] == 2, verdict["run"]["figures"]
    names = sorted(case.get("name") for case in ET.parse(pytester.path / "r" / "c.xml").getroot().iter("testcase"))
    assert names == ["test_one", "test_own_lab", "test_two[a]", "test_two[b]"]


def test_a_failed_restore_in_one_worker_stops_the_run_with_its_status(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    conftest = QUIET_RESTORE.replace("PROBLEMS = []", "PROBLEMS = [\"nodes not online: ['server4']\"]")
    result, history = run_side_by_side(pytester, SUITE, conftest)
    assert result.ret == 7, result.stdout.str()[-3000:]
    run = next(history.iterdir())
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    stopped = [row for row in rows if row.get("stopped_session")]
    assert [row["nodeid"] for row in stopped] == ["suites/test_s.py::test_own_lab"]
    verdict = json.loads((run / "verdict.json").read_text())
    assert "nodes not online" in verdict["run"]["stopped"]["message"]
    assert {m["id"]: m["verdict"] for m in verdict["musts"]}["HAC-HA-004"] == "broken"
