"""`haconform describe`: a live deployment written down as stage data, read-only, that verifies with 0 differences.

Unit tests describe fake hosts holding a documented stage's files, and CIBs recorded with pcs 0.11
(tests/data/pacemaker/cib_configuration_*.xml); the lab tests (marked `lab`) describe labs brought to
stage 5 and to stage 2, verify the labs against what came out, and show a change made by hand in --diff.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from haconform.describe import cluster_block, describe, match_names, selectors
from haconform.readers.cluster import parse_cib_configuration
from haconform.stages.cluster import cluster_differences, together_differences
from haconform.stages.manager import load_all_stages
from haconform.stages.model import load_stage
from haconform.stages.drift import file_drift
from tests.fakes import FakeResult, read_sample
from tests.test_drift import CFG, DOCUMENTED, READS, TOPOLOGY, Machine, deployed

REPO = Path(__file__).resolve().parent.parent
STAGES = load_all_stages(DOCUMENTED, None, TOPOLOGY)


class Describable(Machine):
    """test_drift's read-only host, answering describe's reads too: base64 of a file, find, crm_mon (no cluster)."""

    def __init__(self, machine: Machine):
        super().__init__(machine.name, machine.files, machine.directories, machine.stopped)
        self.host.on(re.compile(r"^test -f \S+ && base64 -w0 -- "), self._base64)
        self.host.on(re.compile(r"^find "), self._find)
        self.host.on(re.compile(r"crm_mon "), FakeResult(rc=102, stdout=read_sample(
            "pacemaker/crm_mon_not_connected.xml")))

    def _base64(self, command):
        import base64
        path = re.search(r"-- (\S+)$", command).group(1)
        data = self.files.get(path)
        return FakeResult(rc=1) if data is None else FakeResult(stdout=base64.b64encode(data).decode())

    def _find(self, command):
        directory = command.split()[1]
        return FakeResult(stdout="".join(f"{p}\n" for p in sorted(self.files) if p.startswith(directory)
                                         and p.endswith(".conf")))


class FakeTarget:
    kind = "fake"

    def describe(self):
        return {"target": "fake"}


class FakeDeployment:
    def __init__(self, machines):
        self.topology = TOPOLOGY
        self.machines = {name: Describable(m) for name, m in machines.items()}
        self.target = FakeTarget()
        self.cluster_spec = None
        self.vip = TOPOLOGY.vip

    def machine(self, name):
        return self.machines[name]

    @property
    def directors(self):
        return [self.machines[h.name] for h in TOPOLOGY.directors]

    @property
    def fence_host(self):
        return None

    def use_frontend(self, address, label):
        pass


@pytest.mark.parametrize("stage", ["stage2", "stage3"])
def test_a_files_stage_is_described_and_verifies_with_no_difference(tmp_path, stage):
    deployment = FakeDeployment(deployed(STAGES[stage]))
    description, _ = describe(deployment, DOCUMENTED, tmp_path / "out")
    assert description.stage == stage, description.counts
    assert description.counts[stage] == 0
    out = load_all_stages(tmp_path / "out", None, TOPOLOGY)
    described = out[stage]
    assert described.base is None, "self-contained"
    assert file_drift(described, deployment.machines, TOPOLOGY) == []
    assert yaml.safe_load((tmp_path / "out" / "names.yaml").read_text()) == {}
    assert (tmp_path / "out" / stage / "role-director" / CFG.lstrip("/")).read_bytes() == \
        STAGES[stage].text("role-director", CFG).encode()
    commands = [c for m in deployment.machines.values() for c in m.host.commands]
    assert not [c for c in commands if not c.startswith((*READS, "find ", "timeout "))], "describe only reads"


def test_a_change_by_hand_is_in_the_description_and_in_the_diff(tmp_path):
    changed = re.sub(r"(?m)^(\s+maxconn\s+)65535$", r"\g<1>30000", STAGES["stage3"].text("role-director", CFG))
    deployment = FakeDeployment(deployed(STAGES["stage3"], server1={CFG: changed.encode()}))
    description, manager = describe(deployment, DOCUMENTED, tmp_path / "out", stage="stage3")
    rows = manager.drift("stage3")
    assert [(r["expected"], r["found"]) for r in rows] == [("65535", "30000")], rows
    assert (tmp_path / "out" / "stage3" / "host-server1" / CFG.lstrip("/")).read_text() == changed
    out = load_all_stages(tmp_path / "out", None, TOPOLOGY)
    assert file_drift(out["stage3"], deployment.machines, TOPOLOGY) == []


def test_a_file_shared_by_a_role_is_one_role_file():
    found = {"server2": {"/a": b"x", "/b": b"2"}, "server3": {"/a": b"x", "/b": b"3"}}
    assert selectors(found, TOPOLOGY) == {("role-realserver", "/a"): b"x", ("host-server2", "/b"): b"2",
                                          ("host-server3", "/b"): b"3"}


# ----- the cluster block, from recorded CIBs -------------------------------------------------------------

def described_spec(tmp_path: Path, block: dict):
    directory = tmp_path / "stage5"
    directory.mkdir()
    (directory / "fence_virt.conf").write_bytes((DOCUMENTED / "stage5" / "fence_virt.conf").read_bytes())
    (directory / "stage.yaml").write_text(yaml.safe_dump({"stage": "stage5", "cluster": block}))
    return load_stage(directory, TOPOLOGY).cluster


@pytest.mark.parametrize("sample, form", [("group", "group"), ("constraints", "constraints"),
                                          ("colocation_reversed", "constraints"), ("sets", "constraints"),
                                          ("no_order", "constraints")])
def test_the_cluster_block_says_what_the_cib_says(tmp_path, sample, form):
    spec = STAGES["stage5"].cluster
    cib = parse_cib_configuration(read_sample(f"pacemaker/cib_configuration_{sample}.xml"))
    unsaid: list[str] = []
    block = cluster_block(spec, cib, {}, "TestCluster", unsaid)
    described = described_spec(tmp_path, block)
    assert described.form == form
    assert sorted(described.together_ids()) == ["VIP", "haproxy"]   # without an order, in no particular order
    assert cluster_differences(described, cib, haproxy_agent_for=lambda r: r.agent) == []
    assert unsaid == []
    # ...and the runbook's difference, if any, is still there when compared with the runbook.
    assert bool(together_differences(spec, cib)) == (sample == "no_order")


def test_the_deployments_own_ids_are_matched_by_meaning(tmp_path):
    xml = read_sample("pacemaker/cib_configuration_constraints.xml")
    for ours, theirs in {"VIP": "WebIP", "haproxy": "lb", "vmfence": "fencer"}.items():
        xml = re.sub(rf'(id|rsc|with-rsc|first|then)="{ours}"', rf'\1="{theirs}"', xml)
    cib = parse_cib_configuration(xml)
    spec = STAGES["stage5"].cluster
    names = match_names(spec, cib, TOPOLOGY.vip)
    assert names == {"VIP": "WebIP", "haproxy": "lb", "vmfence": "fencer"}
    block = cluster_block(spec, cib, names, "TestCluster", [])
    assert block["resources"]["vip"]["id"] == "VIP" and block["stonith"]["fence"]["id"] == "vmfence"
    described = described_spec(tmp_path, block).renamed(names)
    assert cluster_differences(dataclasses.replace(described, properties={}), cib,
                               haproxy_agent_for=lambda r: r.agent) == []


def test_a_location_constraint_is_said_not_to_be_said():
    cib = parse_cib_configuration(read_sample("pacemaker/cib_configuration_pinned.xml"))
    unsaid: list[str] = []
    block = cluster_block(STAGES["stage5"].cluster, cib, {}, "TestCluster", unsaid)
    assert "group" in block
    assert unsaid and "location-hagroup-server1-INFINITY" in unsaid[0]


# ----- on labs: describe, verify with the output, --diff after a change by hand ------------------------------

LAB = f"eqd{os.getpid() % 10000}"


def haconform(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "haconform.cli", *args], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    if check:
        assert result.returncode == 0, f"haconform {' '.join(args)}: {result.stdout}{result.stderr}"
    return result


def run_suites(tmp: Path, name: str, *args: str) -> tuple[dict[str, set[str]], str]:
    from tests.test_cluster_equivalence import REPO as ROOT
    import xml.etree.ElementTree as ET
    junit = tmp / f"{name}.xml"
    command = [sys.executable, "-m", "pytest", "suites", "-n", "0", "-p", "no:cacheprovider", "-q",
               "--lab-name", LAB, "--history-dir", str(tmp / "results"), f"--junitxml={junit}", *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    log = result.stdout + result.stderr
    (tmp / f"{name}.log").write_text(log)
    outcomes: dict[str, set[str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "failed" if case.find("failure") is not None or case.find("error") is not None \
            else "skipped" if case.find("skipped") is not None else "passed"
        for prop in case.iter("property"):
            if prop.get("name") == "conformance_id":
                outcomes.setdefault(prop.get("value"), set()).add(outcome)
    return outcomes, log


def lab_exec(host: str, *command: str) -> str:
    return haconform("lab", "exec", "--name", LAB, host, "--", *command).stdout


@pytest.fixture
def lab_down():
    if os.geteuid() != 0:
        pytest.skip("the namespace lab needs root")
    yield
    subprocess.run([sys.executable, "-m", "haconform.cli", "lab", "down", "--name", LAB], cwd=REPO,
                   capture_output=True, timeout=300)


def describe_and_verify(tmp: Path, stage: str, build_k: str) -> Path:
    built, log = run_suites(tmp, "build", "--keep-lab", "-k", build_k)
    assert built and all(seen == {"passed"} for seen in built.values()), log[-3000:]
    out = tmp / "described"
    said = haconform("describe", "--lab-name", LAB, "--out", str(out))
    assert said.stdout.startswith(f"{stage} of fixtures/documented"), said.stdout
    assert "all on the read-only allow-list" in said.stdout, said.stdout
    outcomes, log = run_suites(tmp, "verify", "--reuse-lab", "--keep-lab", "--stages", "verify",
                               "--deployment-stage", stage, "--config", str(out), "--names",
                               str(out / "names.yaml"), "-k", "configuration_means or configured_as")
    assert outcomes.get("HAC-CFG-001") == {"passed"}, log[-3000:]
    return out


@pytest.mark.lab(expected_s=105)
def test_describe_a_stage5_lab_verify_it_and_diff_a_change(tmp_path, lab_down):
    describe_and_verify(tmp_path, "stage5", "test_80_configuration")
    clean = haconform("describe", "--lab-name", LAB, "--diff")
    assert "0 difference(s) from stage5" in clean.stdout, clean.stdout
    lab_exec("server1", "pcs", "resource", "update", "VIP", "op", "monitor", "interval=20s")
    changed = haconform("describe", "--lab-name", LAB, "--diff", check=False)
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert re.search(r"VIP.*monitor interval: expected '30s', found '20s'", changed.stdout), changed.stdout


@pytest.mark.lab
def test_describe_a_stage2_lab_verify_it_and_diff_a_change(tmp_path, lab_down):
    describe_and_verify(tmp_path, "stage2", "test_40_stats_page")
    lab_exec("server1", "sed", "-i", "-E", r"s/maxconn( +)65535/maxconn\130000/", "/etc/haproxy/haproxy.cfg")
    changed = haconform("describe", "--lab-name", LAB, "--diff", "--stage", "stage2", check=False)
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert "expected '65535', found '30000'" in changed.stdout and "server1:/etc/haproxy/haproxy.cfg" \
        in changed.stdout, changed.stdout
