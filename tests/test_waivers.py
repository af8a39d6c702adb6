"""Waivers (haconform/waivers.py): the file, what a waiver accepts, the verdict's fourth value, JUnit."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from haconform.differences import DifferencesFound, fail_on_differences
from haconform.errors import HaconformError
from haconform.report.html import render_verdict_html
from haconform.report.verdict import BROKEN, HELD, NOT_TESTED, WAIVED, build_verdict, must_verdict
from haconform.waivers import (BROKEN as JUDGED_BROKEN, WAIVED as JUDGED_WAIVED, Waiver, WaiverSet,
                               check_waivers, load_waiver_file, same_value, waivers_of_inventory)

TODAY = dt.date(2026, 12, 7)
INTERVAL = "cluster.resources.vip.operations[monitor].interval"
GOOD = f"""\
waivers:
  - id: HAC-HA-007
    difference: {{key: "{INTERVAL}", found: 20s}}
    reason: monitor at 20 s, agreed with the application team
    expires: 2027-03-01
    ticket: OPS-1
  - id: HAC-LIM-002
    reason: the process cap is the kernel's
    expires: "2026-12-07"
"""


def write(tmp_path: Path, text: str, name: str = "waivers.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(HaconformError) as caught:
        load_waiver_file(path)
    return str(caught.value).replace(str(path), "W")


# ----- the file ------------------------------------------------------------------------------------------


def test_a_valid_file_reads_every_field(tmp_path):
    first, second = load_waiver_file(write(tmp_path, GOOD))
    assert (first.must, first.key, first.found, first.ticket) == ("HAC-HA-007", INTERVAL, "20s", "OPS-1")
    assert first.expires == dt.date(2027, 3, 1) and first.days_left(TODAY) == 84
    assert first.source == f"{tmp_path / 'waivers.yaml'}: waivers[0]"
    assert (second.key, second.found, second.ticket) == (None, None, None)
    assert not second.expired(TODAY) and second.expired(TODAY + dt.timedelta(days=1))   # it counts through its day
    assert load_waiver_file(write(tmp_path, "waivers:\n")) == []


@pytest.mark.parametrize("text,message", [
    ("waivers: {a: 1}",
     "W: waivers: must be a list, is a mapping (fix: write `waivers:` as a list (see the Waivers section of "
     "docs/verify-and-waivers.md))"),
    ("waivers:\n  - {id: HA-7, reason: x, expires: 2027-03-01}",
     "W: waivers[0].id: 'HA-7' is not a MUST ID (fix: write the ID as suites/conformance.yaml has it, "
     "e.g. HAC-HA-007)"),
    ("waivers:\n  - {id: HAC-HA-007, expires: 2027-03-01}",
     "W: waivers[0].reason: missing field (fix: add `reason:` (why the deviation is accepted))"),
    ("waivers:\n  - {id: HAC-HA-007, reason: '  ', expires: 2027-03-01}",
     "W: waivers[0].reason: must not be empty (fix: write `reason:` (why the deviation is accepted))"),
    ("waivers:\n  - {id: HAC-HA-007, reason: x}",
     "W: waivers[0].expires: missing field (fix: add `expires:` (the last day it counts, YYYY-MM-DD))"),
    ("waivers:\n  - {id: HAC-HA-007, reason: x, expires: 2027-3-1}",
     "W: waivers[0].expires: '2027-3-1' is not a date (fix: write YYYY-MM-DD, e.g. 2027-03-01)"),
    ("waivers:\n  - {id: HAC-HA-007, reason: x, expires: 2027-03-01 10:00:00}",
     "W: waivers[0].expires: 2027-03-01 10:00:00 has a time of day (fix: write the last day the waiver counts, "
     "e.g. 2027-03-01)"),
    ("waivers:\n  - {id: HAC-HA-007, reason: x, expires: 2027-03-01, difference: {key: vip.interval, found: 20s}}",
     "W: waivers[0].difference.key: 'vip.interval' is not a key path of a setting (fix: copy the `key` of the "
     "difference from the failure or the evidence; it starts with one of haproxy.cfg[, rsyslog[, limits.conf[, "
     "cluster., fencing., file[, directory[, service[)"),
    ("waivers:\n  - {id: HAC-HA-007, reason: x, expires: 2027-03-01, difference: {key: cluster.name}}",
     "W: waivers[0].difference.found: missing field (fix: add `found:` (the deployment's value the waiver "
     "accepts, e.g. 20s))"),
    ("waivers:\n  - {id: HAC-HA-007, reason: x, expires: 2027-03-01, difference: {key: cluster.name, found: [1]}}",
     "W: waivers[0].difference.found: must be a single value (fix: quote it, e.g. \"20s\")"),
    ("waivers:\n  - {id: HAC-HA-007, reason: x, expires: 2027-03-01, justification: y}",
     "W: waivers[0]: unknown field(s) justification (fix: allowed: difference, expires, id, reason, ticket)"),
    ("waivers:\n  - {id: HAC-HA-007, reason: x, expires: 2027-03-01}\n"
     "  - {id: HAC-HA-007, reason: y, expires: 2027-04-01}",
     "W: waivers[1]: the same waiver as W: waivers[0] (HAC-HA-007, any failure of its checks) "
     "(fix: keep one of them)"),
    ("- a", "W: (top level): must be a mapping (fix: see the Waivers section of docs/verify-and-waivers.md "
            "for the layout)"),
    ("waivers: [", "W:2: not valid YAML (expected the node content, but found '<stream end>') "
                   "(fix: correct the YAML syntax at that line)"),
])
def test_each_malformed_file_is_one_error(tmp_path, text, message):
    assert load_error(tmp_path, text + "\n") == message


def test_what_the_file_alone_cannot_say_is_checked_against_the_golden_list_and_the_stage_data(tmp_path):
    waivers = load_waiver_file(write(tmp_path, GOOD))
    check_waivers(waivers, musts=["HAC-HA-007", "HAC-LIM-002"], settings=[INTERVAL])
    with pytest.raises(HaconformError) as caught:
        check_waivers(waivers, musts=["HAC-HA-007"], settings=[INTERVAL])
    assert str(caught.value) == (f"{tmp_path / 'waivers.yaml'}: waivers[1].id: HAC-LIM-002 is not a MUST of "
                                 "suites/conformance.yaml (fix: use an ID the golden list has "
                                 "(`haconform conformance list`))")
    with pytest.raises(HaconformError) as caught:
        check_waivers(waivers, musts=None, settings=["cluster.resources.vip.operations[start].interval"])
    assert str(caught.value).endswith(
        f"waivers[0].difference.key: {INTERVAL} is not a setting of the stage data (fix: use a key path "
        "`haconform conformance coverage` lists, e.g. cluster.resources.vip.operations[start].interval)")


def test_the_inventory_names_a_file_or_holds_the_list(tmp_path):
    write(tmp_path, GOOD)
    inventory = tmp_path / "inventory.yaml"
    assert len(waivers_of_inventory("waivers.yaml", inventory)) == 2
    inline = waivers_of_inventory([{"id": "HAC-HA-007", "reason": "r", "expires": "2027-01-01"}], inventory)
    assert inline[0].source == f"{inventory}: waivers[0]"
    with pytest.raises(HaconformError) as caught:
        waivers_of_inventory({"id": "HAC-HA-007"}, inventory)
    assert str(caught.value).startswith(f"{inventory}: waivers: must be a list, is a mapping")


# ----- what a waiver accepts -------------------------------------------------------------------------------

def row(key=INTERVAL, found="20s"):
    return {"what": "resource VIP (vip): monitor interval", "expected": "30s", "found": found, "where": "cib",
            "key": key}


def differences(*rows):
    return DifferencesFound("the cluster differs", list(rows))


def waiver(**kw):
    base = dict(must="HAC-HA-007", reason="monitor at 20 s", expires=dt.date(2027, 3, 1), source="w: waivers[0]",
                key=INTERVAL, found="20s", ticket="OPS-1")
    return Waiver(**{**base, **kw})


def test_values_are_compared_by_meaning():
    assert same_value("20s", "20000ms") and same_value("1m", "60s") and same_value("a  b", "a b")
    assert not same_value("20s", "30s") and not same_value("20", "20s")


def test_a_failure_only_by_the_waived_difference_is_waived():
    judged = WaiverSet([waiver()]).judge("HAC-HA-007", differences(row(found="20000ms")), TODAY)
    assert judged.outcome == JUDGED_WAIVED and [w.source for w in judged.applied] == ["w: waivers[0]"]


def test_another_difference_beside_it_stays_broken_and_says_which():
    other = row(key="cluster.resources.haproxy.operations[monitor].interval", found="90s")
    judged = WaiverSet([waiver()]).judge("HAC-HA-007", differences(row(), other), TODAY)
    assert judged.outcome == JUDGED_BROKEN and [w.source for w in judged.seen] == ["w: waivers[0]"]
    assert judged.note == ("not waived: no waiver accepts cluster.resources.haproxy.operations[monitor].interval "
                           "= 90s")
    assert WaiverSet([waiver()]).judge("HAC-HA-007", differences(row(found="25s")), TODAY).outcome == JUDGED_BROKEN


def test_a_failure_that_is_no_difference_is_not_accepted_by_a_difference_waiver():
    judged = WaiverSet([waiver()]).judge("HAC-HA-007", AssertionError("the VIP did not move"), TODAY)
    assert judged.outcome == JUDGED_BROKEN and "accept only cluster.resources.vip" in judged.note


def test_a_waiver_of_the_whole_must_accepts_its_checks_but_never_an_error_of_the_harness():
    whole = WaiverSet([waiver(key=None, found=None)])
    assert whole.judge("HAC-HA-007", AssertionError("x"), TODAY).outcome == JUDGED_WAIVED
    refused = whole.judge("HAC-HA-007", RuntimeError("ReadOnlyRefused"), TODAY)
    assert refused.outcome == JUDGED_BROKEN and "RuntimeError is an error of the harness" in refused.note
    assert whole.judge("HAC-HA-005", AssertionError("x"), TODAY) is None   # no waiver names that MUST


def test_an_expired_waiver_counts_for_nothing():
    expired = WaiverSet([waiver(expires=dt.date(2026, 12, 6))])
    judged = expired.judge("HAC-HA-007", differences(row()), TODAY)
    assert judged.outcome == JUDGED_BROKEN
    assert judged.note == ("waiver expired on 2026-12-06 (w: waivers[0]: monitor at 20 s): it counts for nothing")
    assert WaiverSet([waiver(expires=TODAY)]).judge("HAC-HA-007", differences(row()), TODAY).outcome == JUDGED_WAIVED


def test_fail_on_differences_records_the_rows_and_raises_them(tmp_path):
    from haconform.evidence import Evidence
    evidence = Evidence("t")
    fail_on_differences([], "none", evidence=evidence, title="differences (0)")
    with pytest.raises(DifferencesFound) as caught:
        fail_on_differences([row()], "the cluster differs", evidence=evidence, title="differences (1)")
    assert caught.value.rows == [row()]
    assert str(caught.value) == ("the cluster differs:\n  resource VIP (vip): monitor interval: expected '30s', "
                                 f"found '20s' (cib; key {INTERVAL})")
    assert [item["title"] for item in evidence.to_json()] == ["differences (0)", "differences (1)"]


# ----- the verdict -----------------------------------------------------------------------------------------

REQ = {"id": "HAC-HA-007", "must": "It MUST be as documented", "section": "实现高可用", "stage": "stage4",
       "destructive": False}
JUDGED = {"outcome": "waived", "applied": ["w: waivers[0]"], "seen": ["w: waivers[0]"], "expired": [], "note": "",
          "waivers": [waiver().to_json(TODAY)], "must": "HAC-HA-007", "failure": "DifferencesFound: differs"}


def case(outcome="passed", reason=None, nodeid="t.py::test_x", waiver_record=None, requirement=REQ):
    return {"nodeid": nodeid, "outcome": outcome, "reason": reason, "left_out": False, "duration": 1.0,
            "requirement": requirement, "evidence": [], "properties": {}, "waiver": waiver_record}


def test_a_waived_case_makes_the_must_waived_with_reason_ticket_and_expiry():
    verdict, reason, known = must_verdict([case("waived", "DifferencesFound: differs", waiver_record=JUDGED)])
    assert (verdict, known) == (WAIVED, False)
    assert reason == (f"waived: monitor at 20 s (ticket OPS-1; expires 2027-03-01 (84 days left); accepts "
                      f"{INTERVAL} = 20s) — failed: DifferencesFound: differs")
    assert must_verdict([case("waived", "x", waiver_record=JUDGED), case("failed", "y")])[0] == BROKEN


def test_totals_count_waived_apart_and_stale_waivers_are_listed():
    lim = {**REQ, "id": "HAC-LIM-002"}
    ha5 = {**REQ, "id": "HAC-HA-005"}
    expired_record = {"outcome": "broken", "applied": [], "seen": ["w: waivers[2]"], "expired": ["w: waivers[2]"],
                      "note": "waiver expired on 2026-12-01 (w: waivers[2]: old): it counts for nothing",
                      "waivers": [], "must": "HAC-HA-005", "failure": "x"}
    records = [case("waived", "DifferencesFound: differs", waiver_record=JUDGED),
               case("passed", nodeid="t.py::test_lim", requirement=lim),
               case("failed", "AssertionError: the group did not move", nodeid="t.py::test_ha5", requirement=ha5,
                    waiver_record=expired_record)]
    waivers = [waiver().to_json(TODAY),
               waiver(must="HAC-LIM-002", key=None, found=None, source="w: waivers[1]").to_json(TODAY),
               waiver(must="HAC-HA-005", expires=dt.date(2026, 12, 1), source="w: waivers[2]").to_json(TODAY),
               waiver(must="HAC-RR-001", source="w: waivers[3]").to_json(TODAY)]
    verdict = build_verdict(records, waivers=waivers)
    assert verdict["run"]["verdicts"] == {HELD: 1, BROKEN: 1, WAIVED: 1, NOT_TESTED: 0}
    by_id = {m["id"]: m for m in verdict["musts"]}
    assert by_id["HAC-HA-005"]["reason"] == ("failed: AssertionError: the group did not move (waiver expired on "
                                             "2026-12-01 (w: waivers[2]: old): it counts for nothing)")
    assert by_id["HAC-HA-007"]["waivers"][0]["days_left"] == 84
    status = {w["source"]: (w["status"], w["stale"], w["stale_because"]) for w in verdict["waivers"]}
    assert status == {
        "w: waivers[0]": ("applied", False, None),
        "w: waivers[1]": ("stale", True, "HAC-LIM-002 held: the deviation it accepts is gone (remove the waiver)"),
        "w: waivers[2]": ("expired", False, None),
        "w: waivers[3]": ("stale", True, "HAC-RR-001 did not run")}
    assert verdict["stale_waivers"] == ["w: waivers[1]", "w: waivers[3]"]
    page = render_verdict_html(verdict, records)
    assert "class='must waived'" in page and "84 days left" in page and "OPS-1" in page
    assert "1 waived" in page and "id='waivers'" in page and "stale" in page


def test_a_run_without_waivers_keeps_its_verdict():
    verdict = build_verdict([case("failed", "AssertionError: x")])
    assert verdict["musts"][0]["verdict"] == BROKEN and verdict["waivers"] == [] and verdict["stale_waivers"] == []


# ----- a session: JUnit, history, verdict --------------------------------------------------------------------

SUITE = f'''
from haconform.conformance import conformance
from haconform.differences import fail_on_differences

ROW = {{"what": "resource VIP (vip): monitor interval", "expected": "30s", "found": "20s", "where": "cib",
        "key": "{INTERVAL}"}}
OTHER = {{"what": "property stonith-enabled", "expected": "true", "found": "false", "where": "cib",
          "key": "cluster.properties.stonith-enabled"}}

@conformance("HAC-T-001", stage="stage4", section="HA", must="The cluster MUST be as documented")
def test_only_the_waived_difference(evidence):
    fail_on_differences([ROW], "the cluster differs", evidence=evidence, title="differences")

@conformance("HAC-T-002", stage="stage4", section="HA", must="The fencing MUST be as documented")
def test_the_waived_difference_and_another(evidence):
    fail_on_differences([ROW, OTHER], "the cluster differs", evidence=evidence, title="differences")

@conformance("HAC-T-003", stage="stage4", section="HA", must="It MUST hold")
def test_expired(evidence):
    fail_on_differences([ROW], "the cluster differs", evidence=evidence, title="differences")

@conformance("HAC-T-004", stage="stage4", section="HA", must="It MUST pass")
def test_passes():
    pass
'''


def run_session(tmp_path: Path, waivers: str, *extra: str, env_file: bool = False) -> subprocess.CompletedProcess:
    (tmp_path / "test_suite.py").write_text(SUITE)
    (tmp_path / "cfg").mkdir(exist_ok=True)
    path = write(tmp_path, waivers)
    option = [] if env_file else ["--waivers", str(path)]
    env = {**__import__("os").environ, **({"HACONFORM_WAIVERS": str(path)} if env_file else {})}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
                           str(tmp_path / "test_suite.py"), "--rootdir", str(tmp_path), "--config",
                           str(tmp_path / "cfg"), "--history-dir", str(tmp_path / "results"),
                           "--junitxml", str(tmp_path / "out" / "junit.xml"), *option, *extra],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)


def session_waivers(today: dt.date) -> str:
    yesterday = today - dt.timedelta(days=1)
    in_30 = today + dt.timedelta(days=30)
    return (f"waivers:\n"
            f"  - {{id: HAC-T-001, difference: {{key: '{INTERVAL}', found: 20000ms}}, reason: faster VIP moves, "
            f"expires: {in_30}, ticket: OPS-7}}\n"
            f"  - {{id: HAC-T-002, difference: {{key: '{INTERVAL}', found: 20s}}, reason: same, expires: {in_30}}}\n"
            f"  - {{id: HAC-T-003, difference: {{key: '{INTERVAL}', found: 20s}}, reason: old, expires: {yesterday}}}\n"
            f"  - {{id: HAC-T-004, reason: never needed, expires: {in_30}}}\n")


def test_a_session_reports_a_waived_case_as_skipped_with_its_reason(tmp_path):
    today = dt.date.today()
    result = run_session(tmp_path, session_waivers(today))
    assert result.returncode == 1, result.stdout + result.stderr     # HAC-T-002 and HAC-T-003 stay broken
    assert "haconform verdict: 1 held, 2 broken, 1 waived, 0 not tested" in result.stdout, result.stdout
    assert "haconform waivers: stale (matched nothing in this run): " in result.stdout
    junit = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    cases = {c.get("name"): c for c in junit.iter("testcase")}
    skipped = cases["test_only_the_waived_difference"].find("skipped")
    assert skipped is not None and skipped.get("message", "").startswith(
        "waived: HAC-T-001 failed only as its waiver accepts: faster VIP moves (accepts "
        f"{INTERVAL} = 20000ms; ticket OPS-7; expires {today + dt.timedelta(days=30)}, 30 day(s) left;")
    assert cases["test_the_waived_difference_and_another"].find("failure") is not None
    expired = cases["test_expired"].find("failure")
    assert expired is not None and f"waiver expired on {today - dt.timedelta(days=1)}" in expired.text

    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    by_id = {m["id"]: m for m in verdict["musts"]}
    assert by_id["HAC-T-001"]["verdict"] == WAIVED and by_id["HAC-T-001"]["cases"][0]["outcome"] == "waived"
    assert "the cluster differs" in by_id["HAC-T-001"]["reason"]          # the failure is kept beside the waiver
    assert by_id["HAC-T-002"]["verdict"] == BROKEN
    assert "no waiver accepts cluster.properties.stonith-enabled = false" in by_id["HAC-T-002"]["reason"]
    assert by_id["HAC-T-003"]["verdict"] == BROKEN and "waiver expired on" in by_id["HAC-T-003"]["reason"]
    assert verdict["run"]["verdicts"] == {HELD: 1, BROKEN: 2, WAIVED: 1, NOT_TESTED: 0}
    assert [w["id"] for w in verdict["waivers"] if w["stale"]] == ["HAC-T-004"]
    assert {w["id"]: w["status"] for w in verdict["waivers"]} == {
        "HAC-T-001": "applied", "HAC-T-002": "seen", "HAC-T-003": "expired", "HAC-T-004": "stale"}
    (run_dir,) = (tmp_path / "results").iterdir()
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    waived_row = next(r for r in history if r["nodeid"].endswith("test_only_the_waived_difference"))
    assert waived_row["outcome"] == "waived" and waived_row["waiver"]["applied"]
    assert any(item["title"] == "differences" for item in waived_row["evidence"])   # the evidence is kept


def test_a_malformed_waiver_file_stops_the_session_before_any_test(tmp_path):
    result = run_session(tmp_path, "waivers:\n  - {id: HAC-T-001, reason: x}\n", env_file=True)
    assert result.returncode == 4, result.stdout + result.stderr
    assert (f"haconform: {tmp_path / 'waivers.yaml'}: waivers[0].expires: missing field (fix: add `expires:` "
            "(the last day it counts, YYYY-MM-DD))") in result.stderr
    assert "Traceback" not in result.stderr + result.stdout and not (tmp_path / "results").exists()


def test_the_example_file_is_valid_against_the_golden_list_and_the_documented_stages():
    from haconform.report.verdict import read_golden
    from haconform.stages.catalogue import documented as documented_stages
    from haconform.stages.model import load_stage
    from haconform.stages.settings import documented_settings
    from haconform.topology import load_topology

    repo = Path(__file__).resolve().parent.parent
    topology = load_topology(repo / "fixtures" / "topology.yaml")
    documented = repo / "fixtures" / "documented"
    settings = {s.key for name in documented_stages().names
                for s in documented_settings(load_stage(documented / name, topology, search=(documented,)))}
    waivers = load_waiver_file(repo / "fixtures" / "waivers.example.yaml")
    check_waivers(waivers, musts=[row["id"] for row in read_golden(repo / "suites" / "conformance.yaml")],
                  settings=settings)
    assert [w.must for w in waivers] == ["HAC-HA-007", "HAC-CFG-001", "HAC-LIM-002"]
