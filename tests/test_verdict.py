"""The verdict (held / broken / not tested per MUST, figures, findings) and the compare across runs.

Recorded runs: tests/data/verdict/results/ (cut from real kept runs, see cut.py there):
20261129-222637 (history.jsonl only), 20261129-225747 (verdict.json + history.jsonl),
20261130-021700 (a copy of 225747 with a deliberate regression: HAC-HA-005 failed,
HAC-FENCE-002 fenced 3.5 s slower, HAC-CFG-001 left out), two perf runs (summary.json).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from haconform.cli import main as cli_main
from haconform.report.trends import (THRESHOLDS, Run, compare, compare_text, direction, load_run, moved,
                                     perf_figures, render_trends, report)
from haconform.report.verdict import (BROKEN, HELD, NOT_TESTED, SCHEMA_VERSION, WAIVED, build_verdict, case_figures,
                                      expected_server, must_figures, must_verdict, parse_version_probe,
                                      reach_text, records_from_history, verdict_from_history,
                                      versions_from_evidence)
from haconform.report.html import render_verdict_html

DATA = Path(__file__).parent / "data" / "verdict" / "results"
OLD, NEWEST, REGRESSED = DATA / "20261129-222637", DATA / "20261129-225747", DATA / "20261130-021700"
PERF = DATA / "20261129-230354"
NO_FILE = Path("/nonexistent/haconform")

REQ = {"id": "HAC-X-001", "must": "It MUST hold", "section": "实现高可用", "stage": "stage4", "destructive": False}


def case(nodeid="suites/test_x.py::test_x", outcome="passed", reason=None, evidence=(), requirement=None,
         properties=None, left_out=False):
    return {"nodeid": nodeid, "outcome": outcome, "reason": reason, "left_out": left_out, "duration": 1.0,
            "requirement": requirement or REQ, "evidence": list(evidence), "properties": properties or {}}


def requirement(must_id, destructive=False):
    return {**REQ, "id": must_id, "destructive": destructive}


def data(title, content):
    return {"kind": "json", "title": title, "at": 0.0, "content": content}


# ----- held / broken / not tested ------------------------------------------------------------------

def test_the_verdict_counts_what_ran_read_only_what_needs_a_write_and_what_is_not_at_the_stage():
    """A read-only ssh run at stage 5: two MUSTs read, one is left out for its sentinel lines, one destructive,
    one belongs to stage 1 (its skip says verify-only even though it is destructive too)."""
    verify_only = ("verify-only (--stages verify): the deployment is declared at stage5, and haconform writes "
                   "nothing to it; stage1 would have to be applied")
    writes = "writes to a host: sentinel lines; left out against an SSH target without --allow-destructive"
    records = [
        case("t.py::test_a", requirement=requirement("HAC-X-001")),
        case("t.py::test_b", "failed", "AssertionError: 2 lines", requirement=requirement("HAC-X-002")),
        {**case("t.py::test_c", "skipped", writes, requirement=requirement("HAC-X-003"), left_out=True),
         "writes": "sentinel lines"},
        {**case("t.py::test_d", "skipped", "destructive: left out", requirement=requirement("HAC-X-004", True),
                left_out=True), "writes": "destructive"},
        {**case("t.py::test_e", "skipped", verify_only, requirement=requirement("HAC-X-005", True), left_out=True),
         "writes": "destructive"},
    ]
    golden = [{**requirement("HAC-X-006"), "test": "t.py::test_f"}]
    verdict = build_verdict(records, run={"deployment_stage": "stage5"}, golden=golden)
    reach = verdict["run"]["reach"]
    assert reach == {"deployment_stage": "stage5", "ran_read_only": ["HAC-X-001", "HAC-X-002"],
                     "read_only_not_run": [], "need_allow_destructive": ["HAC-X-003", "HAC-X-004"],
                     "needing_a_write_that_ran": [], "not_at_stage": ["HAC-X-005"], "not_in_run": ["HAC-X-006"]}
    assert {m["id"]: m["reach"] for m in verdict["musts"]}["HAC-X-003"] == "needs --allow-destructive"
    text = reach_text(reach)
    assert text == ("2 MUSTs ran read-only · 2 need --allow-destructive · 1 does not apply at the deployment's "
                    "stage (stage5) · 1 not in this run"), text
    assert "read-only reach" in render_verdict_html(verdict) and "2 MUSTs ran read-only" in render_verdict_html(verdict)


def test_on_the_lab_the_writing_musts_ran_and_are_counted_as_such():
    records = [case("t.py::test_a", requirement=requirement("HAC-X-001")),
               {**case("t.py::test_b", requirement=requirement("HAC-X-002")), "writes": "an upload"}]
    reach = build_verdict(records, run={"deployment_stage": None})["run"]["reach"]
    assert reach["ran_read_only"] == ["HAC-X-001"] and reach["needing_a_write_that_ran"] == ["HAC-X-002"]
    assert reach_text(reach) == "1 MUST ran read-only · 1 needs --allow-destructive (1 ran, writing)"


def test_history_rows_keep_what_a_test_writes():
    rows = [json.dumps({"nodeid": "t.py::test_c", "phase": "setup", "outcome": "skipped", "reason": "writes to a host: x",
                        "left_out": "writes to a host: x", "requirement": REQ, "writes": "x", "evidence": []})]
    assert records_from_history(rows)[0]["writes"] == "x"

def test_held_only_when_every_case_passed():
    cases = [case(f"t.py::test_x[{p}]") for p in ("a", "b", "c")]
    assert must_verdict(cases) == (HELD, "all 3 cases passed", False)
    assert must_verdict([case()]) == (HELD, "passed", False)


def test_one_failed_case_breaks_the_must_and_says_which():
    cases = [case("t.py::test_x[/a]"), case("t.py::test_x[/b]", "failed", "AssertionError: /b went to server2"),
             case("t.py::test_x[/c]", "skipped", "no")]
    verdict, reason, known = must_verdict(cases)
    assert (verdict, known) == (BROKEN, False)
    assert reason == "1 of 3 cases failed — [/b] failed: AssertionError: /b went to server2"
    assert must_verdict([case(outcome="error", reason="setup: boom")])[:2] == (BROKEN, "error: setup: boom")


def test_all_skipped_is_not_tested_with_the_reason():
    cases = [case("t.py::t[1]", "skipped", "verify-only: stage4", left_out=True),
             case("t.py::t[2]", "skipped", "verify-only: stage4", left_out=True)]
    assert must_verdict(cases) == (NOT_TESTED, "left out: verify-only: stage4", False)
    assert must_verdict([case(outcome="skipped", reason="no VIP")]) == (NOT_TESTED, "skipped: no VIP", False)


def test_some_cases_skipped_is_not_held():
    verdict, reason, _ = must_verdict([case("t.py::t[1]"), case("t.py::t[2]", "skipped", "no algorithm dir")])
    assert verdict == NOT_TESTED
    assert reason.startswith("only 1 of 2 cases ran (passed); 1 skipped: no algorithm dir")


def test_an_expected_failure_is_a_known_finding():
    cases = [case(f"t.py::t[stage{i}]", "xfailed", "finding: HAProxy 2.6 refuses `frontend main *:80`")
             for i in (1, 2)]
    assert must_verdict(cases) == (BROKEN, "known finding (expected failure): HAProxy 2.6 refuses "
                                           "`frontend main *:80`", True)
    verdict, reason, known = must_verdict([case(outcome="xpassed", reason="finding: refused")])
    assert (verdict, known) == (HELD, False) and "unexpectedly" in reason
    assert must_verdict([]) == (NOT_TESTED, "not in this run", False)


def test_build_verdict_aggregates_per_must_in_stage_order():
    lint = {**REQ, "id": "HAC-LINT-002", "stage": "stage1-3"}
    rr = {**REQ, "id": "HAC-RR-001", "stage": "stage1"}
    records = [case("t.py::test_fence", requirement=REQ, evidence=[data("outage (s)", 7.7)]),
               case("t.py::test_lint[stage1]", "xfailed", "finding: refused", requirement=lint),
               case("t.py::test_rr", requirement=rr),
               case("t.py::test_plain", requirement=None) | {"requirement": None}]
    golden = [{"id": "HAC-ALG-001", "must": "With roundrobin it MUST alternate", "section": "八种",
               "stage": "algorithms"}]
    notes = [{"stage": "stage3", "section": "读写分离", "text": "Stats page, logging and limits from stage2 stay."}]
    verdict = build_verdict(records, run={"target": {"target": "lab"}, "started": "x", "duration_s": 3.0},
                            golden=golden, notes=notes)
    assert verdict["schema_version"] == SCHEMA_VERSION == 1
    assert [m["id"] for m in verdict["musts"]] == ["HAC-RR-001", "HAC-LINT-002", "HAC-X-001", "HAC-ALG-001"]
    by_id = {m["id"]: m for m in verdict["musts"]}
    assert by_id["HAC-X-001"]["figures"] == [{"name": "outage", "value": 7.7, "unit": "s"}]
    assert by_id["HAC-X-001"]["nodeids"] == ["t.py::test_fence"]
    assert by_id["HAC-ALG-001"]["verdict"] == NOT_TESTED and by_id["HAC-ALG-001"]["reason"] == "not in this run"
    assert by_id["HAC-LINT-002"]["known_finding"]
    assert set(by_id["HAC-X-001"]) >= {"id", "stage", "section", "must", "verdict", "reason", "figures", "nodeids"}
    assert verdict["run"]["verdicts"] == {HELD: 2, BROKEN: 1, WAIVED: 0, NOT_TESTED: 1}
    assert verdict["run"]["tests"] == {"passed": 2, "xfailed": 1}
    assert [(f["kind"], f["id"] or f["stage"], f["text"]) for f in verdict["findings"]] == [
        ("xfail", "HAC-LINT-002", "refused"), ("note", "stage3", "Stats page, logging and limits from stage2 stay.")]


def test_history_lines_of_one_test_are_merged():
    lines = [json.dumps({"nodeid": "t.py::a", "outcome": "skipped", "duration": 0.1, "left_out": "destructive: ssh",
                         "requirement": REQ, "evidence": []}),
             json.dumps({"nodeid": "t.py::b", "outcome": "passed", "duration": 2, "requirement": REQ,
                         "evidence": [data("outage (s)", 1.0)]}),
             json.dumps({"nodeid": "t.py::a", "outcome": "skipped", "duration": 0.0, "requirement": REQ,
                         "evidence": [data("configuration: stage4", {})]})]
    records = records_from_history(lines)
    assert [r["nodeid"] for r in records] == ["t.py::a", "t.py::b"]
    assert records[0]["reason"] == "destructive: ssh" and records[0]["left_out"]
    assert len(records[0]["evidence"]) == 1


# ----- figures -----------------------------------------------------------------------------------

def test_figures_from_titles_the_figures_dict_and_properties():
    record = case(evidence=[
        data("outage (s)", 7.699),
        data("figures", {"crash -> fence completed (s)": 6.7, "crash -> fenced node back online (s)": 11.89,
                         "outage seen by the client (s)": 7.8, "note": "x"}),
        data("NIC down -> VIP served (s)", 7.75),
        data("time to first answer (s)", 0.4),                          # the generic "(s)" rule
        data("vip monitor interval (s)", {"documented (the bound)": 30.0}),   # not a value
        data("who answered, in order", ["server2", "server3"]),
        data("flag (s)", True),
    ], properties={"restore_seconds": 2.5, "restore_actions": ["x"]})
    assert case_figures(record) == {
        "outage": (7.8, "s"),   # the worst of "outage (s)" and the fence test's client outage
        "fence time": (6.7, "s"), "rejoin after fence": (11.89, "s"), "NIC down -> VIP served": (7.75, "s"),
        "time to first answer": (0.4, "s"), "restore": (2.5, "s")}


def test_requests_to_the_wrong_server_are_counted_where_the_must_names_the_server():
    static = {**REQ, "must": "A request whose path begins with /images MUST be served by app2 (server3)"}
    cases = [case(f"t.py::t[{path}]", requirement=static,
                  evidence=[data(f"GET {path}", {"status": 200, "X-Real-Server": server})])
             for path, server in (("/a", "server3"), ("/b", "server2"), ("/c", "server2"))]
    assert must_figures(cases) == [{"name": "requests to the wrong server", "value": 2, "unit": "requests"}]
    assert expected_server("The url_static prefixes MUST match in any letter case (-i), sending /IMAGES/..., "
                           "/x.JPG ... to app2 (server3)") == "server3"
    assert expected_server("GET and HEAD requests MUST be served by app1 (server2) and MUST NOT reach app2 "
                           "(server3)") == "server2"
    assert expected_server("The data-plane behaviour MUST hold through the VIP: GET to app1, POST to app2") is None
    assert expected_server("A GIF MUST be stored in upload/ on app2 (server3)") is None
    assert must_figures([case(evidence=[data("GET /", {"X-Real-Server": "server2"})])]) == []


def test_figures_of_parametrized_cases_take_the_worst():
    cases = [case("t.py::t[1]", evidence=[data("outage (s)", 1.2)]),
             case("t.py::t[2]", evidence=[data("outage (s)", 3.4)])]
    assert must_figures(cases) == [{"name": "outage", "value": 3.4, "unit": "s"}]


def test_versions_from_the_probe_and_from_evidence():
    output = textwrap.dedent("""\
        @@haproxy
        HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/
        @@pacemaker
        Pacemaker 2.1.5
        @@corosync
        Corosync Cluster Engine, version '3.1.7'
        @@pcs
        0.11.5
        """)
    assert parse_version_probe(output) == {"haproxy": "2.6.12-1+deb12u4", "pacemaker": "2.1.5",
                                           "corosync": "3.1.7", "pcs": "0.11.5"}
    assert parse_version_probe("@@haproxy\n@@pcs\n") == {}
    records = [case(evidence=[data("haproxy -c", {"rc": 0, "version": "HAProxy version 2.6.12-1+deb12u4 2026/10/17"}),
                              data("configuration: cluster", {"observations": {"pcs": {"version": "0.11.5"}}})])]
    assert versions_from_evidence(records) == {"haproxy": "2.6.12-1+deb12u4", "pcs": "0.11.5"}


def test_a_recorded_run_without_verdict_json():
    verdict = verdict_from_history(REGRESSED, golden=None, config_dir=None)
    by_id = {m["id"]: m for m in verdict["musts"]}
    assert by_id["HAC-HA-005"]["verdict"] == BROKEN
    assert by_id["HAC-CFG-001"]["verdict"] == NOT_TESTED
    assert by_id["HAC-CFG-001"]["reason"] == "left out: verify-only: the deployment is in stage4, not stage5"
    assert by_id["HAC-LINT-002"]["known_finding"] and len(by_id["HAC-LINT-002"]["nodeids"]) == 3
    assert {f["name"]: f["value"] for f in by_id["HAC-FENCE-002"]["figures"]}["fence time"] == 10.2
    assert by_id["HAC-ACL-001"]["figures"] == [{"name": "requests to the wrong server", "value": 0, "unit": "requests"}]
    assert verdict["run"]["versions"]["haproxy"] == "2.6.12-1+deb12u4"
    assert verdict["run"]["duration_estimated"]
    html = render_verdict_html(verdict, [])
    assert "HAC-HA-005" in html and "<script" not in html


# ----- compare -----------------------------------------------------------------------------------

@pytest.mark.parametrize("a,b,unit,expected", [
    (1.2, 1.5, "s", False),       # +25 % but below the 1 s floor
    (29.7, 33.0, "s", False),     # +3.3 s but only +11 %
    (6.7, 10.2, "s", True),       # +3.5 s, +52 %
    (10.2, 6.7, "s", True),       # faster is a move too (reported as better)
    (0.0, 1.5, "s", True),
    (0.0, 0.5, "s", False),
    (0, 1, "requests", True),     # any request to the wrong server
    (600.0, 450.0, "requests/s", True),
    (600.0, 590.0, "requests/s", False),
    (40.0, 44.0, "ms", False),
])
def test_thresholds(a, b, unit, expected):
    assert moved(a, b, unit) is expected


def test_thresholds_are_one_table():
    assert THRESHOLDS["s"] == (0.20, 1.0)
    assert direction(6.7, 10.2, "s") == "worse" and direction(600, 450, "requests/s") == "worse"
    assert direction(600, 700, "requests/s") == "better"


def _run(name, musts, figures=None):
    verdict = {"run": {"duration_s": 200.0}, "musts": [
        {"id": i, "stage": "stage4", "verdict": v, "known_finding": k, "reason": r,
         "figures": [{"name": n, "value": val, "unit": u} for n, val, u in (figures or {}).get(i, [])]}
        for i, v, k, r in musts]}
    from haconform.report.trends import verdict_figures
    run = Run(name, Path(name), verdict=verdict)
    run.figures = {f.key: f for f in verdict_figures(verdict)}
    return run


def test_compare_flags_a_held_must_that_broke():
    a = _run("A", [("HAC-HA-005", HELD, False, "passed"), ("HAC-ALG-001", BROKEN, False, "failed: x"),
                   ("HAC-LINT-002", BROKEN, True, "known"), ("HAC-CFG-001", HELD, False, "passed"),
                   ("HAC-FENCE-002", HELD, False, "passed")],
             {"HAC-FENCE-002": [("fence time", 6.7, "s"), ("outage", 7.7, "s")]})
    b = _run("B", [("HAC-HA-005", BROKEN, False, "failed: standby did not move the group"),
                   ("HAC-ALG-001", HELD, False, "passed"), ("HAC-LINT-002", BROKEN, True, "known"),
                   ("HAC-CFG-001", NOT_TESTED, False, "left out: verify-only"),
                   ("HAC-FENCE-002", HELD, False, "passed")],
             {"HAC-FENCE-002": [("fence time", 10.2, "s"), ("outage", 7.9, "s")]})
    result = compare(a, b)
    assert [e["id"] for e in result["flipped"]] == ["HAC-HA-005"] and result["regression"]
    assert [e["id"] for e in result["fixed"]] == ["HAC-ALG-001"]
    assert [(e["id"], e["to"]) for e in result["changed"]] == [("HAC-CFG-001", NOT_TESTED)]
    assert [(m["key"], m["direction"]) for m in result["moved"]] == [("HAC-FENCE-002 · fence time", "worse")]
    text = compare_text(result)
    assert "FLIPPED  HAC-HA-005 (stage4) held -> broken: failed: standby did not move the group" in text
    assert "worse    HAC-FENCE-002 · fence time: 6.7 s -> 10.2 s (+3.5 s, +52%)" in text
    assert text.rstrip().endswith("REGRESSION: a verdict flipped from held to broken")
    assert not compare(b, b)["regression"]
    assert compare(b, a)["regression"]   # HAC-ALG-001 broken in A, held in B: from B to A it flips


def test_compare_of_recorded_runs_and_the_command(tmp_path, capsys):
    newest = load_run(NEWEST, golden=None)
    regressed = load_run(REGRESSED, golden=None)
    result = compare(newest, regressed)
    assert [e["id"] for e in result["flipped"]] == ["HAC-HA-005"]
    assert {m["key"] for m in result["moved"] if m["direction"] == "worse"} == {
        "HAC-FENCE-002 · fence time", "HAC-FENCE-002 · outage"}
    assert not compare(load_run(OLD, golden=None), newest)["regression"]

    out = tmp_path / "trends.html"
    assert cli_main(["report", str(DATA), "--compare", str(NEWEST), "20261130-021700", "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "FLIPPED  HAC-HA-005" in printed and out.is_file()
    assert cli_main(["report", str(DATA), "--compare", OLD.name, NEWEST.name, "--out", str(out)]) == 0
    assert "no verdict flipped" in capsys.readouterr().out
    assert cli_main(["report", str(DATA), "--compare", "nope", NEWEST.name, "--out", str(out)]) == 2
    assert cli_main(["report", str(DATA), "--out", str(out)]) == 0
    page = out.read_text()
    assert page.count("<svg class='plot'") >= 10 and "<script" not in page and "http://" not in page.replace(
        "http://www.w3.org/2000/svg", "")


def test_perf_figures_from_summary():
    figures = {f.name: f for f in perf_figures(json.loads((PERF / "summary.json").read_text()))}
    assert figures["vip requests/s"].unit == "requests/s" and figures["vip p95"].unit == "ms"
    assert figures["vip over direct requests per s"].unit == "ratio"
    assert figures["wrk failures"].unit == "failures"


def test_trends_page_without_runs():
    assert "no conformance run" in render_trends([])


# ----- the session plugin ------------------------------------------------------------------------

SUITE = '''
import pytest
from haconform.conformance import conformance

@pytest.fixture
def restored(request):
    yield
    request.node.user_properties.append(("restore_seconds", 0.8))

@conformance("HAC-T-001", stage="stage4", section="实现高可用", must="The VIP MUST come back")
def test_pass(evidence, restored):
    evidence.data("outage (s)", 1.5)

@pytest.mark.parametrize("path", ["/a", "/b"])
@conformance("HAC-T-002", stage="stage2", section="ACL", must="A request MUST be served by app2 (server3)")
def test_param(path, evidence):
    evidence.data(f"GET {path}", {"status": 200, "X-Real-Server": "server3" if path == "/a" else "server2"})
    assert path == "/a", f"{path} went to server2"

@conformance("HAC-T-003", stage="stage1", section="RR", must="It MUST skip")
def test_skip():
    pytest.skip("verify-only: the deployment is in stage5")

@pytest.mark.xfail(reason="finding: the runbook's text is refused", strict=True)
@conformance("HAC-T-004", stage="stage1-3", section="lint", must="It MUST xfail")
def test_xfail():
    assert False

@pytest.fixture
def broken_setup():
    raise RuntimeError("no lab")

@conformance("HAC-T-005", stage="stage5", section="fence", must="It MUST error")
def test_error(broken_setup):
    pass
'''


def _pytest(tmp_path, source, *extra):
    (tmp_path / "test_suite.py").write_text(source)
    (tmp_path / "cfg").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           str(tmp_path / "test_suite.py"),
                           "--rootdir", str(tmp_path), "--config", str(tmp_path / "cfg"),
                           "--history-dir", str(tmp_path / "results"), *extra],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_session_writes_the_verdict_beside_junit_and_into_the_run(tmp_path):
    result = _pytest(tmp_path, SUITE, "--junitxml", str(tmp_path / "out" / "j.xml"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "haconform verdict: 1 held, 3 broken (1 known finding), 1 not tested" in result.stdout
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    (run_dir,) = (tmp_path / "results").iterdir()
    assert json.loads((run_dir / "verdict.json").read_text()) == verdict
    assert (tmp_path / "out" / "verdict.html").is_file()
    assert verdict["run"]["run_dir"] == run_dir.name and verdict["run"]["duration_s"] >= 0
    assert set(verdict["run"]) >= {"target", "started", "duration_s", "versions"}
    by_id = {m["id"]: m for m in verdict["musts"]}
    assert by_id["HAC-T-001"]["verdict"] == HELD
    assert by_id["HAC-T-001"]["figures"] == [{"name": "outage", "value": 1.5, "unit": "s"},
                                             {"name": "restore", "value": 0.8, "unit": "s"}]
    assert by_id["HAC-T-002"]["verdict"] == BROKEN
    assert "[/b] failed: AssertionError: /b went to server2" in by_id["HAC-T-002"]["reason"]
    assert by_id["HAC-T-002"]["figures"] == [{"name": "requests to the wrong server", "value": 1, "unit": "requests"}]
    assert by_id["HAC-T-003"]["reason"] == "left out: verify-only: the deployment is in stage5"
    assert by_id["HAC-T-004"]["known_finding"]
    assert by_id["HAC-T-005"]["reason"].startswith("error: setup: ") and "no lab" in by_id["HAC-T-005"]["reason"]
    assert verdict["findings"] == [{"kind": "xfail", "id": "HAC-T-004", "stage": "stage1-3", "section": "lint",
                                    "text": "the runbook's text is refused", "nodeids": ["test_suite.py::test_xfail"],
                                    "section_en": None}]   # "lint" is no heading of suites/sections.yaml


def test_session_without_conformance_tests_writes_no_verdict(tmp_path):
    result = _pytest(tmp_path, "def test_plain():\n    pass\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "reports").exists()
    assert "haconform verdict" not in result.stdout


def test_session_default_output_is_reports_under_the_rootdir(tmp_path):
    result = _pytest(tmp_path, SUITE, "-k", "test_pass")
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = json.loads((tmp_path / "reports" / "verdict.json").read_text())
    reasons = {m["id"]: m["reason"] for m in verdict["musts"]}
    assert reasons["HAC-T-001"] == "passed"
    assert "HAC-T-002" not in reasons   # no golden list here: only what was collected


# ----- English section titles ----------------------------------------------------------------------

def test_each_must_and_note_gets_the_english_title_of_its_section_and_the_page_shows_both():
    titles = {"实现高可用": "Making it highly available", "日志": "Logging", "读写分离": "Read/write split"}
    notes = [{"stage": "stage3", "section": "读写分离, 日志", "text": "stats stay"}]
    verdict = build_verdict([case()], notes=notes, section_titles=titles)
    must = verdict["musts"][0]
    assert (must["section"], must["section_en"]) == ("实现高可用", "Making it highly available")
    assert verdict["findings"][0]["section_en"] == "Read/write split, Logging"
    assert verdict["sections"] == {"实现高可用": "Making it highly available", "读写分离": "Read/write split",
                                   "日志": "Logging"}
    page = render_verdict_html(verdict)
    assert ("<td class='sec'><span class='sec-en'>Making it highly available</span> "
            "<span class='sec-orig' lang='zh-Hans'>实现高可用</span></td>") in page
    assert "Read/write split, Logging" in page


def test_a_verdict_written_before_titles_existed_gets_them_and_an_unknown_section_keeps_its_heading():
    from haconform.report.verdict import with_section_titles
    old = json.loads((NEWEST / "verdict.json").read_text())
    assert not any("section_en" in m for m in old["musts"])
    titled = with_section_titles(old, {"实现高可用": "Making it highly available"})
    by_section = {m["section"]: m["section_en"] for m in titled["musts"]}
    assert by_section["实现高可用"] == "Making it highly available"
    assert by_section["读写分离"] is None
    assert "<span class='sec-orig' lang='zh-Hans'>读写分离</span>" in render_verdict_html(titled)
