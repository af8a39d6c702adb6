"""`haconform report --targets A B`: one commit's lab and VM runs side by side (haconform/report/target_comparison.py).

The runs are small hand-made verdict.json / history.jsonl files: a lab run in a results/<ts>/ directory, and a
VM run given as the reports directory its --junitxml wrote verdict.json into, its history found through the
verdict's run_path (as the nightly passes them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from haconform.cli import main as cli_main
from haconform.errors import HaconformError
from haconform.report.target_comparison import (calibration_quantities, compare_targets, join_waits, load_side, name_sides,
                                      parse_wait, render_targets_html, report_targets, targets_text, wait_rows)


def must(must_id, stage, verdict, figures=(), reason="passed", known=False):
    return {"id": must_id, "stage": stage, "must": f"{must_id} MUST hold", "section": "s", "verdict": verdict,
            "reason": reason, "known_finding": known,
            "figures": [{"name": n, "value": v, "unit": u} for n, v, u in figures]}


def history_line(must_id, nodeid, evidence):
    return json.dumps({"nodeid": nodeid, "outcome": "passed", "requirement": {"id": must_id, "stage": "stage5"},
                       "evidence": evidence})


def waits(rows):
    """As haconform/pytest_plugin.py records a test's bounded waits."""
    return {"kind": "table", "title": "waits: documented figure, allowance, measured", "at": 0.0, "content": rows}


def wait(condition, documented, allowance, bound, measured, outcome="held"):
    return {"phase": "call", "condition": condition, "figure": "—", "documented": documented,
            "allowance": allowance, "bound": bound, "measured": measured, "outcome": outcome}


def calibration(factor, capped, fork_s):
    """As haconform/calibration.py's to_json() records it (the parts read here)."""
    return {"enabled": True, "ceiling": 4.0, "summary": "…",
            "categories": [{"category": "process", "ratio": factor, "factor": factor, "capped": capped,
                            "fields": ["cluster_settle"]},
                           "not an entry"],
            "probes": [{"name": "fork_exec", "category": "process", "reference_s": 0.1, "measured_s": fork_s,
                        "ratio": round(fork_s / 0.1, 3), "slowest_host": "server1", "per_host": {"server1": fork_s}}]}


LAB_VERDICT = {
    "schema_version": 1,
    "run": {"target": {"target": "lab", "lab": "nightly"}, "run_dir": "20261201-020000", "duration_s": 600.0,
            "exit_status": 0, "figures": {"target_up_s": 2.5}, "verdicts": {"held": 4, "broken": 0}},
    "calibration": calibration(1.0, False, 0.1),
    "musts": [
        must("HAC-HA-003", "stage4", "held", [("outage", 29.7, "s"), ("restore", 1.76, "s")]),
        must("HAC-HA-005", "stage4", "held"),
        must("HAC-CFG-001", "stage5", "held"),
        must("HAC-FENCE-002", "stage5", "held", [("fence time", 6.6, "s"), ("rejoin after fence", 11.7, "s")]),
    ],
}
VM_VERDICT = {
    "schema_version": 1,
    "run": {"target": {"target": "vagrant", "vm": "nightly", "figures": {"vagrant_up_s": 150.0}},
            "run_dir": "20261201-021500", "duration_s": 2400.0, "exit_status": 1,
            "figures": {"target_up_s": 190.0, "calibration_s": 12.0}, "verdicts": {"held": 3, "broken": 1}},
    "calibration": calibration(4.0, True, 0.52),
    "musts": [
        must("HAC-HA-003", "stage4", "held", [("outage", 40.0, "s")]),
        must("HAC-HA-005", "stage4", "held"),
        must("HAC-CFG-001", "stage5", "held"),
        must("HAC-FENCE-002", "stage5", "broken", [("fence time", 19.8, "s")],
             reason="failed: the fenced node did not rejoin within 220 s"),
    ],
}
FENCE_NODE = "suites/test_fence.py::test_crash_is_fenced"


@pytest.fixture
def runs(tmp_path):
    lab = tmp_path / "results" / "20261201-020000"
    lab.mkdir(parents=True)
    (lab / "verdict.json").write_text(json.dumps(LAB_VERDICT))
    (lab / "history.jsonl").write_text(history_line("HAC-FENCE-002", FENCE_NODE, [waits([
        wait("fenced node back online", "60 s", "10 s (10 s × 1.00)", "70.0 s", "11.70 s"),
        wait("VIP served", "30 s", "10 s (10 s × 1.00)", "40.0 s", "7.70 s"),
    ])]) + "\n")
    vm_results = tmp_path / "results" / "20261201-021500"
    vm_results.mkdir()
    (vm_results / "history.jsonl").write_text(history_line("HAC-FENCE-002", FENCE_NODE, [waits([
        wait("fenced node back online", "60 s", "40 s (10 s × 4.00)", "100.0 s", "100.02 s", outcome="timed out"),
        wait("stonith history recorded", "—", "20 s (5 s × 4.00)", "20.0 s", "3.00 s"),
    ])]) + "\n")
    vm_reports = tmp_path / "reports" / "nightly-vm"
    vm_reports.mkdir(parents=True)
    (vm_reports / "verdict.json").write_text(json.dumps(
        {**VM_VERDICT, "run": {**VM_VERDICT["run"], "run_path": str(vm_results)}}))
    return lab, vm_reports


def compared(lab: Path, vm: Path) -> dict:
    a, b = load_side(lab), load_side(vm)
    name_sides(a, b)
    return compare_targets(a, b)


def cells(text: str, first: str) -> list[str]:
    """The cells of the text table's line that starts with `first` (columns are two or more spaces apart)."""
    line = next(line for line in text.splitlines() if line.strip().startswith(first))
    return re.split(r"\s{2,}", line.strip())


def test_the_table_puts_each_figure_of_both_targets_side_by_side_with_the_ratio(runs):
    text = targets_text(compared(*runs))
    assert cells(text, "figure") == ["figure", "lab", "VM", "VM ÷ lab"]
    assert cells(text, "target bring-up") == ["target bring-up", "2.5 s", "190 s", "76.00×"]
    assert cells(text, "conformance wall time") == ["conformance wall time", "600 s", "2400 s", "4.00×"]
    assert cells(text, "outage") == ["outage", "29.7 s", "40 s", "1.35×"]
    assert cells(text, "fence time") == ["fence time", "6.6 s", "19.8 s", "3.00×"]


def test_a_figure_missing_on_one_side_is_a_dash(runs):
    text = targets_text(compared(*runs))
    assert cells(text, "restore") == ["restore", "1.76 s", "—", "—"]
    assert cells(text, "rejoin after fence") == ["rejoin after fence", "11.7 s", "—", "—"]
    # described by the VM target only
    assert cells(text, "bring-up step: vagrant up") == ["bring-up step: vagrant up", "—", "150 s", "—"]
    assert cells(text, "calibration probes") == ["calibration probes", "—", "12 s", "—"]


def test_musts_whose_verdict_differs_come_first(runs):
    result = compared(*runs)
    assert [e["id"] for e in result["differ"]] == ["HAC-FENCE-002"]
    assert [e["id"] for e in result["musts"]] == ["HAC-FENCE-002", "HAC-HA-003"]   # stage5 before stage4
    assert result["quiet"] == 2   # HAC-HA-005, HAC-CFG-001: same verdict, nothing to show
    text = targets_text(result)
    assert "MUSTs whose verdict differs: 1" in text
    assert "VM: broken: failed: the fenced node did not rejoin within 220 s" in text
    assert text.index("HAC-FENCE-002 (stage5): held | broken   <- verdict differs") < text.index(
        "HAC-HA-003 (stage4): held | held")


def test_calibration_factors_read_defensively(runs):
    text = targets_text(compared(*runs))
    assert cells(text, "factor: process") == ["factor: process", "1×", "4× (capped)", "4.00×"]
    assert cells(text, "ceiling") == ["ceiling", "4×", "4×", "1.00×"]
    assert cells(text, "probe: fork_exec measured_s") == ["probe: fork_exec measured_s", "0.1 s", "0.52 s", "5.20×"]
    assert cells(text, "probe: fork_exec ratio") == ["probe: fork_exec ratio", "1×", "5.2×", "5.20×"]
    assert "not an entry" not in text and "per_host" not in text
    assert calibration_quantities({"calibration": None}) == {}
    assert calibration_quantities({"calibration": {"categories": "x", "probes": 3}}) == {}
    as_mapping = calibration_quantities({"calibration": {"categories": {"agent": {"factor": 2.5}, "php": "?"},
                                                         "probes": {"php_cli": 0.2}}})
    assert {k: q.text() for k, q in as_mapping.items()} == {"factor: agent": "2.5×", "probe: php_cli": "0.2"}


def test_waits_of_both_targets_joined_by_condition(runs):
    result = compared(*runs)
    rows = {w["condition"]: w for w in result["musts"][0]["waits"]}
    assert list(rows) == ["fenced node back online", "VIP served", "stonith history recorded"]
    back = rows["fenced node back online"]
    assert (back["documented"], back["allowance"], back["bound"]) == (
        "60 s", "10 s (10 s × 1.00) / 40 s (10 s × 4.00)", "70.0 s / 100.0 s")
    assert (back["measured_a"], back["measured_b"]) == ("11.70 s", "100.02 s")
    assert back["other"] == "phase=call; figure=—; outcome=held / timed out"
    assert (rows["VIP served"]["measured_b"], rows["stonith history recorded"]["measured_a"]) == ("—", "—")
    text = targets_text(result)
    assert cells(text, "condition") == ["condition", "documented", "allowance", "bound", "measured lab",
                                        "measured VM", "other"]
    assert cells(text, "VIP served") == ["VIP served", "30 s", "10 s (10 s × 1.00)", "40.0 s", "7.70 s", "—",
                                         "phase=call; figure=—; outcome=held"]


def test_a_condition_waited_for_twice_keeps_both_rows():
    first, again = (parse_wait({"condition": "VIP served", "measured": m}) for m in ("7 s", "2 s"))
    vm = parse_wait({"condition": "VIP served", "measured": "30 s"})
    rows = join_waits([{**first, "nodeid": "t"}, {**again, "nodeid": "t"}], [{**vm, "nodeid": "t"}])
    assert [(r["condition"], r["measured_a"], r["measured_b"]) for r in rows] == [
        ("VIP served", "7 s", "30 s"), ("VIP served (2)", "2 s", "—")]


def test_wait_rows_in_other_shapes():
    rows = wait_rows({"rows": [{"Condition": "VIP served", "documented_s": 30, "elapsed (s)": 7.5}, "junk"]})
    assert [parse_wait(r) for r in rows] == [{"condition": "VIP served", "documented": "30", "allowance": None,
                                              "bound": None, "measured": "7.5", "other": {}}]
    by_condition = wait_rows({"VIP served": {"bound": "40 s"}, "group moved": {"bound": "60 s"}})
    assert [parse_wait(r)["condition"] for r in by_condition] == ["VIP served", "group moved"]
    assert wait_rows("not a table") == [] and wait_rows(None) == []


def test_the_page_renders_the_figures(runs, tmp_path):
    result = compared(*runs)
    page = render_targets_html(result)
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    for shown in ("76.00×", "29.7 s", "4× (capped)", "100.02 s", "verdict differs", "HAC-FENCE-002",
                  "failed: the fenced node did not rejoin within 220 s"):
        assert shown in page, shown
    assert page.index("HAC-FENCE-002") < page.index("HAC-HA-003")


def test_the_command_prints_writes_the_page_and_exits_0(runs, tmp_path, capsys):
    lab, vm = runs
    out = tmp_path / "out" / "targets.html"
    assert cli_main(["report", "--targets", str(lab), str(vm), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "target bring-up" in printed and f"-> {out}" in printed
    assert "76.00×" in out.read_text()


def test_a_failed_session_fails_the_command_only_when_asked(runs, tmp_path, capsys):
    lab, vm = runs
    out = str(tmp_path / "targets.html")
    assert cli_main(["report", "--targets", str(lab), str(vm), "--out", out, "--fail-on-failed-session"]) == 1
    assert "a session failed: VM (pytest exit status 1)" in capsys.readouterr().out
    assert cli_main(["report", "--targets", str(lab), str(lab), "--out", out, "--fail-on-failed-session"]) == 0
    assert cli_main(["report", "--out", out, "--fail-on-failed-session"]) == 2


def test_two_runs_on_one_kind_of_target_are_named_by_their_runs(runs):
    lab, _ = runs
    result = compared(lab, lab)
    assert (result["a"].label, result["b"].label) == ("lab 20261201-020000", "lab 20261201-020000")
    assert result["differ"] == []


@pytest.mark.parametrize("content", [None, "{not json", json.dumps({"run": {}})])
def test_a_bad_directory_is_one_clear_error(tmp_path, capsys, content):
    bad = tmp_path / "20261201-030000"
    bad.mkdir()
    if content is not None:
        (bad / "verdict.json").write_text(content)
    with pytest.raises(HaconformError, match=re.escape(str(bad)) + r": .*\(fix: pass the results/<timestamp>"):
        load_side(bad)
    assert cli_main(["report", "--targets", str(bad), str(bad), "--out", str(tmp_path / "t.html")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "fix:" in err and "Traceback" not in err


def test_a_missing_directory_names_it(tmp_path, runs, capsys):
    lab, _ = runs
    missing = tmp_path / "reports" / "nightly-lab"
    assert cli_main(["report", "--targets", str(missing), str(lab), "--out", str(tmp_path / "t.html")]) == 2
    assert f"{missing}: not a directory" in capsys.readouterr().err


def test_names_under_results_and_exclusive_modes(runs, tmp_path, capsys):
    lab, vm = runs
    out = tmp_path / "t.html"
    assert report_targets(lab.name, str(vm), results=str(lab.parent), out=str(out), say=lambda *a, **k: None) == 0
    with pytest.raises(SystemExit):
        cli_main(["report", "--targets", str(lab), str(vm), "--compare", str(lab), str(vm)])
