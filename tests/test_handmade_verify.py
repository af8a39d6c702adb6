"""A deployment built by hand from the runbook's text is verified by meaning and by behaviour.

tests/data/handmade/ is such a deployment's configuration: its own comments,
order, RainerScript, soft+hard limits, backend `dynamic`, resources `WebIP`,
`lb`, group `web`, stonith `fencer`.  It is applied to a lab of its own, then
the conformance suites run against it in verify mode with the runbook's
documented configuration (fixtures/documented) and the names file: nothing is
written, the drift test finds no difference, and the read-only behavioural
tests of stage 5 and of the settings it keeps pass.  A second verify run with
one documented value changed (the haproxy monitor interval) must fail the
tests that read it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from haconform.stages.model import load_stage
from haconform.topology import load_topology

REPO = Path(__file__).resolve().parent.parent
HANDMADE = REPO / "tests" / "data" / "handmade"
LAB = f"hm{os.getpid() % 10000}"
# Every read-only conformance test that must hold on a stage-5 deployment.
EXPECTED_TO_PASS = {"HAC-CFG-001", "HAC-HA-001", "HAC-HA-002", "HAC-HA-007", "HAC-FENCE-001", "HAC-FENCE-005",
                    "HAC-STATS-001", "HAC-STATS-002", "HAC-STATS-003", "HAC-LIM-001", "HAC-LIM-002", "HAC-LIM-003",
                    "HAC-LOG-001", "HAC-LOG-002", "HAC-LOG-003", "HAC-LOG-004", "HAC-RW-001", "HAC-RW-002"}

pytestmark = [pytest.mark.lab(expected_s=110), pytest.mark.skipif(os.geteuid() != 0, reason="the namespace lab needs root")]


def run_suites(tmp_path: Path, name: str, *args: str) -> dict[str, set[str]]:
    """pytest suites in a subprocess; conformance id -> outcomes seen (passed/failed/skipped)."""
    junit = tmp_path / f"{name}.xml"
    command = [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "-q", "--lab-name", LAB,
               "--history-dir", str(tmp_path / "results"), f"--junitxml={junit}", *args]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200)
    (tmp_path / f"{name}.log").write_text(result.stdout + result.stderr)
    outcomes: dict[str, set[str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        ids = [p.get("value") for p in case.iter("property") if p.get("name") == "conformance_id"]
        outcome = "failed" if case.find("failure") is not None or case.find("error") is not None \
            else "skipped" if case.find("skipped") is not None else "passed"
        for cid in ids:
            outcomes.setdefault(cid, set()).add(outcome)
    return outcomes


def handmade_config(tmp: Path) -> Path:
    """The operator's own director and cluster configuration, plus the real servers' files, which are the
    harness's instrumentation (X-Real-Server, probes) and the runbook's PHP: taken from fixtures/documented."""
    config = tmp / "handmade"
    shutil.copytree(HANDMADE, config)
    topology = load_topology(REPO / "fixtures" / "topology.yaml")
    for stage in sorted(config.glob("stage[1-3]")):
        for f in load_stage(REPO / "fixtures" / "documented" / stage.name, topology).files:
            if f.selector.startswith("host-") or f.selector == "role-realserver":
                dest = stage / f.selector / f.dest.lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f.source, dest)
    return config


@pytest.fixture(scope="module")
def handmade_lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("handmade")
    try:
        # Built as its operator would have it: their own files, their own names (HAC-CFG-001 against itself).
        built = run_suites(tmp, "build", "--config", str(handmade_config(tmp)), "--keep-lab", "-k",
                           "test_80_configuration")
        assert built.get("HAC-CFG-001") == {"passed"}, (tmp / "build.log").read_text()[-3000:]
        yield tmp
    finally:   # a build that failed half-way kept its lab too (--keep-lab): it goes as well
        subprocess.run([sys.executable, "-m", "haconform.cli", "lab", "down", "--name", LAB], cwd=REPO,
                       capture_output=True, timeout=300)


def test_handmade_deployment_verified_by_meaning_and_behaviour(handmade_lab):
    outcomes = run_suites(handmade_lab, "verify", "--reuse-lab", "--keep-lab", "--stages", "verify",
                          "--names", str(HANDMADE / "names.yaml"), "-m", "not destructive")
    log = (handmade_lab / "verify.log").read_text()
    failed = sorted(cid for cid, seen in outcomes.items() if "failed" in seen)
    assert not failed, f"failed against the hand-made deployment: {failed}\n{log[-4000:]}"
    missing = sorted(cid for cid in EXPECTED_TO_PASS if outcomes.get(cid) != {"passed"})
    assert not missing, f"not passed: { {cid: outcomes.get(cid) for cid in missing} }\n{log[-4000:]}"


def test_a_changed_documented_interval_is_caught_without_destructive_tests(handmade_lab, tmp_path):
    # The runbook documents haproxy's monitor at 60s; say 20s: the deployment (60s) now deviates.
    variant = tmp_path / "documented"
    shutil.copytree(REPO / "fixtures" / "documented", variant)
    stage4 = variant / "stage4" / "stage.yaml"
    stage4.write_text(stage4.read_text().replace("interval: 60s", "interval: 20s"))
    outcomes = run_suites(handmade_lab, "variant", "--reuse-lab", "--keep-lab", "--stages", "verify",
                          "--config", str(variant), "--names", str(HANDMADE / "names.yaml"),
                          "-m", "not destructive", "-k", "cluster_configured or configuration_means")
    assert outcomes.get("HAC-HA-007") == {"failed"}, outcomes
    assert outcomes.get("HAC-CFG-001") == {"failed"}, outcomes
    log = (handmade_lab / "variant.log").read_text()
    assert "monitor interval" in log and "20s" in log and "60s" in log, log[-3000:]


def interval_variant(tmp_path: Path) -> Path:
    """The documented configuration with haproxy's monitor at 20s: the hand-made deployment (60s) deviates."""
    variant = tmp_path / "documented"
    shutil.copytree(REPO / "fixtures" / "documented", variant)
    stage4 = variant / "stage4" / "stage.yaml"
    stage4.write_text(stage4.read_text().replace("interval: 60s", "interval: 20s"))
    return variant


def waivers_file(tmp_path: Path, expires: str) -> Path:
    # The deviation as the failure names it: the resource's runbook name (the names file maps it to `lb`),
    # the value the deployment runs.
    entries = "".join(
        f"""  - id: {must}
    difference:
      key: cluster.resources.haproxy.operations[monitor].interval
      found: 60s
    reason: "haproxy is monitored every 60 s on this deployment; accepted"
    expires: {expires}
    ticket: OPS-42
""" for must in ("HAC-HA-007", "HAC-CFG-001"))
    path = tmp_path / f"waivers-{expires}.yaml"
    path.write_text("waivers:\n" + entries)
    return path


@pytest.mark.parametrize("expires, verdict", [("2999-12-31", "waived"), ("2000-01-01", "broken")])
def test_a_deviation_accepted_by_a_waiver_is_waived_until_it_expires(handmade_lab, tmp_path, expires, verdict):
    import json

    outcomes = run_suites(handmade_lab, f"waived-{verdict}", "--reuse-lab", "--keep-lab", "--stages", "verify",
                          "--config", str(interval_variant(tmp_path)), "--names", str(HANDMADE / "names.yaml"),
                          "--waivers", str(waivers_file(tmp_path, expires)),
                          "-m", "not destructive", "-k", "cluster_configured or configuration_means")
    log = (handmade_lab / f"waived-{verdict}.log").read_text()
    musts = {m["id"]: m for m in json.loads((handmade_lab / "verdict.json").read_text())["musts"]}
    for must in ("HAC-HA-007", "HAC-CFG-001"):
        assert musts[must]["verdict"] == verdict, (must, musts[must], log[-3000:])
    if verdict == "waived":
        assert {"skipped"} == outcomes.get("HAC-HA-007"), outcomes   # JUnit: skipped with the waiver's reason
        assert all(w["ticket"] == "OPS-42" for w in musts["HAC-HA-007"]["waivers"]), musts["HAC-HA-007"]
    else:
        assert "waiver expired on 2000-01-01" in musts["HAC-HA-007"]["reason"], musts["HAC-HA-007"]
    # Nothing else changed its verdict: every other MUST the run judged held.
    others = {mid: m["verdict"] for mid, m in musts.items()
              if mid not in ("HAC-HA-007", "HAC-CFG-001") and m["verdict"] in ("broken", "waived")}
    assert not others, others
