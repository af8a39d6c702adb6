"""history.jsonl has a row for every phase of a conformance test that did not simply pass.

A test whose stage would not apply (setup error), whose deployment lacks what it needs (setup skip)
or whose restore failed (teardown error) never reaches, or outlives, its call: each still has its
row, with its phase, and the verdict read back from the history counts each test once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from haconform.report.verdict import BROKEN, HELD, NOT_TESTED, read_history, verdict_from_history

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent

PHASE_TESTS = """
    import pytest
    from haconform.conformance import conformance


    @pytest.fixture
    def stage_that_will_not_apply(evidence):
        evidence.text("stage4", "pcs cluster setup exited 1")
        raise RuntimeError("stage4 would not apply: pcs cluster setup failed")


    @pytest.fixture
    def restore_that_fails(evidence):
        yield
        evidence.text("restore", "the VIP stayed on director2")
        raise RuntimeError("restore failed: the VIP is still on director2")


    @pytest.fixture
    def stats_auth():
        pytest.skip("no `stats auth` line in a listen section of the deployment's haproxy.cfg")


    @conformance("HAC-PH-001", stage="stage4", section="s", must="A stage MUST apply")
    def test_setup_error(stage_that_will_not_apply):
        pass


    @conformance("HAC-PH-002", stage="stage4", section="s", must="The deployment MUST be restored")
    def test_teardown_error(restore_that_fails, evidence):
        evidence.text("call", "the test itself passed")


    @conformance("HAC-PH-003", stage="stage3", section="s", must="The stats page MUST ask for a password")
    def test_setup_skip(stats_auth):
        pass


    @conformance("HAC-PH-004", stage="stage1", section="s", must="A request MUST be answered")
    def test_passes(evidence):
        evidence.text("call", "answered")


    @conformance("HAC-PH-005", stage="stage5", section="s", must="A crash MUST be fenced", destructive=True)
    def test_destructive():
        pass


    def test_without_requirement():
        raise AssertionError("not a conformance test: no history row")
"""


def run(pytester, monkeypatch, *options: str):
    """The phases' tests in a subprocess, the haconform plugin loaded through its entry point; the
    checkout on PYTHONPATH so `-p fixtures.left_out` (what conftest.py loads) can be added."""
    pytester.makepyfile(test_phases=PHASE_TESTS)
    (pytester.path / "documented").mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--config", str(pytester.path / "documented"),
        "--history-dir", str(pytester.path / "results"), "--junitxml", str(pytester.path / "reports" / "junit.xml"),
        *options)
    histories = list((pytester.path / "results").glob("*/history.jsonl"))
    assert len(histories) == 1, result.stdout.str()
    rows = [json.loads(line) for line in histories[0].read_text(encoding="utf-8").splitlines()]
    return result, rows, histories[0]


def by_test(rows: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for row in rows:
        found.setdefault(row["nodeid"].split("::")[-1], []).append(row)
    return found


def test_every_phase_that_did_not_pass_has_its_row(pytester, monkeypatch):
    result, rows, history = run(pytester, monkeypatch)
    result.assert_outcomes(passed=3, failed=1, errors=2, skipped=1)
    tests = by_test(rows)
    assert "test_without_requirement" not in tests
    assert [(r["phase"], r["outcome"]) for r in tests["test_setup_error"]] == [("setup", "error")]
    assert [(r["phase"], r["outcome"]) for r in tests["test_teardown_error"]] == [("call", "passed"),
                                                                                 ("teardown", "error")]
    assert [(r["phase"], r["outcome"]) for r in tests["test_setup_skip"]] == [("setup", "skipped")]
    assert [(r["phase"], r["outcome"]) for r in tests["test_passes"]] == [("call", "passed")]
    assert [(r["phase"], r["outcome"]) for r in tests["test_destructive"]] == [("call", "passed")]

    setup_error = tests["test_setup_error"][0]
    assert setup_error["reason"].startswith("setup: ") and "stage4 would not apply" in setup_error["reason"]
    assert [e["title"] for e in setup_error["evidence"]] == ["stage4"]
    assert setup_error["requirement"]["id"] == "HAC-PH-001"
    call, teardown = tests["test_teardown_error"]
    assert teardown["reason"].startswith("teardown: ") and "restore failed" in teardown["reason"]
    # each evidence item in one row only: the rows of a test are merged when read back
    assert [e["title"] for e in call["evidence"]] == ["call"]
    assert [e["title"] for e in teardown["evidence"]] == ["restore"]
    skip = tests["test_setup_skip"][0]
    assert skip["reason"] == "no `stats auth` line in a listen section of the deployment's haproxy.cfg"
    assert "left_out" not in skip
    for row in rows:   # the keys the report code reads are all there
        assert {"nodeid", "phase", "outcome", "duration", "requirement", "evidence"} <= set(row), row

    records = {r["nodeid"].split("::")[-1]: r for r in read_history(history)}
    assert len(records) == 5, "one record per test, whatever its number of rows"
    assert records["test_teardown_error"]["outcome"] == "error"
    assert [e["title"] for e in records["test_teardown_error"]["evidence"]] == ["call", "restore"]

    verdicts = {m["id"]: m for m in verdict_from_history(history.parent)["musts"]}
    assert {must_id: m["verdict"] for must_id, m in verdicts.items()} == {
        "HAC-PH-001": BROKEN, "HAC-PH-002": BROKEN, "HAC-PH-003": NOT_TESTED, "HAC-PH-004": HELD,
        "HAC-PH-005": HELD}
    assert all(len(m["cases"]) == 1 for m in verdicts.values())

    # the session's own verdict (built from the reports) says why
    session = {m["id"]: m for m in json.loads((pytester.path / "reports" / "verdict.json").read_text())["musts"]}
    assert "stage4 would not apply" in session["HAC-PH-001"]["reason"]
    assert "restore failed" in session["HAC-PH-002"]["reason"]
    assert "no `stats auth` line" in session["HAC-PH-003"]["reason"]


@pytest.mark.parametrize("left_out_plugin", [True, False])
def test_a_test_left_out_has_one_row(pytester, monkeypatch, left_out_plugin):
    """Against --target ssh a destructive test is skipped in setup: fixtures/left_out.py writes its row
    when loaded (as the checkout's conftest.py does), this plugin otherwise — never both."""
    options = ["--target", "ssh", *(["-p", "fixtures.left_out"] if left_out_plugin else [])]
    result, rows, _ = run(pytester, monkeypatch, *options)
    result.assert_outcomes(passed=2, failed=1, errors=2, skipped=2)
    left_out = by_test(rows)["test_destructive"]
    assert len(left_out) == 1, left_out
    assert left_out[0]["outcome"] == "skipped"
    assert left_out[0]["left_out"].startswith("destructive: left out against an SSH target")
    # the other setup skip is not left out: its row is this plugin's either way
    assert [r.get("left_out") for r in by_test(rows)["test_setup_skip"]] == [None]
