"""No false alarm at any stage: verify mode on an unmodified deployment at each documented stage.

Each of the runbook's stages is brought up on a lab of its own, as documented:
HAC-CFG-001 run in apply mode with `--deployment-stage stageN` applies the
stage (and those it builds on) to freshly installed hosts, and finds no
difference from it.  Then the suites run against that lab in verify mode,
declared at that stage (`--stages verify --deployment-stage stageN`),
writing nothing, as an operator's read-only run would (`-m "not
destructive"`: faults are not a verification of a deployment left as it
was).  Every stage: no failure, no error; the stage's own read-only MUSTs
held; every test left out says why with one of the left-out reasons
(fixtures/left_out.py); the verdict counts the MUSTs not at that stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from fixtures.left_out import LEFT_OUT_PREFIXES

REPO = Path(__file__).resolve().parent.parent
LAB = f"ev{os.getpid() % 10000}"
# Each stage on a lab of its own (the safety job runs them side by side), with what it takes in CI.
STAGES = [pytest.param(stage, marks=pytest.mark.lab(expected_s=seconds, own_lab=True), id=stage)
          for stage, seconds in (("stage1", 30), ("stage2", 30), ("stage3", 30), ("stage4", 70), ("stage5", 75))]
BUILD_TIMEOUT_S = 300
VERIFY_TIMEOUT_S = 300

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="the namespace lab needs root")]


def run_suites(workdir: Path, lab: str, name: str, *args: str, timeout: float) -> dict[str, list[tuple[str, str]]]:
    """pytest suites on the lab in a subprocess; conformance id -> [(outcome, message)] of its cases."""
    junit = workdir / f"{name}.xml"
    command = [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "-q", "-n", "0",
               "--lab-name", lab, "--history-dir", str(workdir / name), f"--junitxml={junit}", *args]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    (workdir / f"{name}.log").write_text(result.stdout + result.stderr)
    assert junit.exists(), f"{name}: no JUnit report (exit {result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
    cases: dict[str, list[tuple[str, str]]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        ids = [p.get("value") for p in case.iter("property") if p.get("name") == "conformance_id"]
        outcome, message = "passed", ""
        for tag, word in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            element = case.find(tag)
            if element is not None:
                outcome, message = word, element.get("message") or ""
                break
        for cid in ids or [case.get("name")]:
            cases.setdefault(cid, []).append((outcome, message))
    return cases


def own_read_only_musts(stage: str) -> set[str]:
    """The MUSTs the golden list places at this stage that no fault and no write is needed for."""
    golden = yaml.safe_load((REPO / "suites" / "conformance.yaml").read_text())
    return {row["id"] for row in golden if row["stage"] == stage and not row["destructive"]}


@pytest.fixture
def stage_lab(stage, tmp_path):
    """The stage's lab (the session's lab name and the stage's number) and a directory for its runs."""
    lab = f"{LAB}{stage.removeprefix('stage')}"
    try:
        yield lab, tmp_path
    finally:   # a build or a run that failed half-way kept its lab too (--keep-lab): it goes as well
        subprocess.run([sys.executable, "-m", "haconform.cli", "lab", "down", "--name", lab], cwd=REPO,
                       capture_output=True, timeout=300)


@pytest.mark.parametrize("stage", STAGES)
def test_verify_mode_gives_no_failure_on_a_deployment_at_the_stage(stage, stage_lab):
    lab, workdir = stage_lab
    # Built on freshly installed hosts (no --reuse-lab): the stage as documented, nothing left of another.
    built = run_suites(workdir, lab, f"build-{stage}", "--keep-lab", "--deployment-stage", stage,
                       "-k", "test_configuration_means_the_documented_stage", timeout=BUILD_TIMEOUT_S)
    assert built.get("HAC-CFG-001") == [("passed", "")], \
        f"the lab did not come to {stage}: {built}\n{(workdir / f'build-{stage}.log').read_text()[-3000:]}"

    cases = run_suites(workdir, lab, f"verify-{stage}", "--reuse-lab", "--keep-lab", "--stages", "verify",
                       "--deployment-stage", stage, "-m", "not destructive", timeout=VERIFY_TIMEOUT_S)
    log = (workdir / f"verify-{stage}.log").read_text()
    failed = {cid: [m[:300] for o, m in seen if o in ("failed", "error")] for cid, seen in cases.items()
              if any(o in ("failed", "error") for o, _ in seen)}
    assert not failed, f"verify mode at {stage} on an unmodified deployment failed: {failed}\n{log[-4000:]}"
    held = {cid for cid, seen in cases.items() if all(o == "passed" for o, _ in seen)}
    not_held = sorted(own_read_only_musts(stage) - held)
    assert not not_held, f"{stage}'s own read-only MUSTs did not all hold: { {c: cases.get(c) for c in not_held} }"
    # JUnit shows an expected failure (a known finding of the runbook's text) as skipped too.
    unexplained = {cid: m for cid, seen in cases.items() for o, m in seen
                   if o == "skipped" and not m.startswith((*LEFT_OUT_PREFIXES, "finding:"))}
    assert not unexplained, f"left out at {stage} without a left-out reason: {unexplained}"

    verdict = json.loads(next((workdir / f"verify-{stage}").glob("*/verdict.json")).read_text())
    reach = verdict["run"]["reach"]
    assert verdict["run"]["verdicts"]["broken"] == sum(m["known_finding"] for m in verdict["musts"]), \
        verdict["run"]["verdicts"]
    assert reach["deployment_stage"] == stage and held <= set(reach["ran_read_only"]) | set(
        reach["needing_a_write_that_ran"]), reach
    not_at_stage = {cid for cid, seen in cases.items() if all(m.startswith("verify-only") for _, m in seen)}
    assert not_at_stage and set(reach["not_at_stage"]) == not_at_stage, (stage, reach)
