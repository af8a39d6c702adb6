"""Trends compare like with like: what each run ran against, recorded, shown, compared and filtered."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from haconform.cli import main as cli_main
from haconform.report.trends import (Run, compare, compare_text, context_differences, load_runs, matches_filter,
                                     render_trends, run_context)
from haconform.report.verdict import tree_digest

DATA = Path(__file__).parent / "data" / "verdict" / "results"
NEWEST = DATA / "20261129-225747"


def verdict_with(run: dict) -> dict:
    return {"run": {"duration_s": 10.0, **run}, "musts": [
        {"id": "HAC-HA-007", "stage": "stage4", "verdict": "held", "known_finding": False, "reason": "passed",
         "figures": []}]}


LAB = {"target": {"target": "lab", "lab": "haconform"}, "stage_mode": {"mode": "apply", "deployment_stage": None},
       "config": "/src/fixtures/documented", "config_digest": "a" * 64, "commit": "1" * 40,
       "waivers": {"sources": [], "count": 0, "digest": None}}
SSH = {"target": {"target": "ssh", "inventory": "/etc/haconform/prod.yaml"},
       "stage_mode": {"mode": "verify", "deployment_stage": "stage5"}, "config": "/etc/haconform/variant",
       "config_digest": "b" * 64, "commit": "2" * 40,
       "waivers": {"sources": ["/etc/haconform/waivers.yaml"], "count": 1, "digest": "c" * 64}}


def run(name: str, recorded: dict) -> Run:
    return Run(name, Path(name), verdict=verdict_with(recorded))


def test_the_context_of_a_run_in_words():
    assert run_context(verdict_with(SSH)) == {
        "target": "ssh /etc/haconform/prod.yaml", "stages": "verify (deployment at stage5)",
        "configuration": "/etc/haconform/variant", "configuration digest": "b" * 64, "commit": "2" * 40,
        "waivers": f"1 from /etc/haconform/waivers.yaml (digest {'c' * 12})"}
    side_by_side = {**LAB, "target": {"target": "lab", "lab": "haconform1", "labs": ["haconform1", "haconform2"]}}
    assert run_context(verdict_with(side_by_side))["target"] == "lab haconform1 (+1 labs side by side)"
    assert set(run_context(None).values()) == {None}


def test_compare_states_every_difference_of_what_the_runs_ran_against_first():
    result = compare(run("A", LAB), run("B", SSH))
    assert [d["what"] for d in result["context"]] == ["target", "stages", "configuration", "configuration digest",
                                                      "commit", "waivers"]
    text = compare_text(result).splitlines()
    assert text[1] == ("ran against: 6 difference(s) — a verdict that changed may be one of these, not a "
                       "regression:")
    assert text[2] == "  target: lab haconform -> ssh /etc/haconform/prod.yaml"
    assert text[5] == f"  configuration digest: {'a' * 64} -> {'b' * 64}"
    same = compare_text(compare(run("A", LAB), run("B", LAB))).splitlines()
    assert same[1] == "ran against: the same target, stages, configuration, configuration digest, commit, waivers"
    assert context_differences(run_context(verdict_with(LAB)), run_context(None))[0] == {
        "what": "target", "a": "lab haconform", "b": "not recorded"}
    page = render_trends([run("A", LAB), run("B", SSH)], result)
    assert "They ran against different things" in page and "ssh /etc/haconform/prod.yaml" in page


def test_the_runs_table_shows_target_stages_configuration_commit_and_waivers():
    page = render_trends([run("20261201-010101", SSH)])
    row = page[page.index("<table class='data runs'>"):]
    for shown in ("ssh /etc/haconform/prod.yaml", "verify (deployment at stage5)", f"variant · {'b' * 12}",
                  "2" * 10, "1 from /etc/haconform/waivers.yaml"):
        assert shown in row, shown


def test_filters_by_target_and_configuration_digest():
    lab, ssh, old = run("A", LAB), run("B", SSH), Run("C", Path("C"), verdict={"run": {}, "musts": []})
    assert [r.name for r in (lab, ssh, old) if matches_filter(r, target="lab")] == ["A"]
    assert [r.name for r in (lab, ssh, old) if matches_filter(r, target="ssh:prod.yaml")] == ["B"]
    assert [r.name for r in (lab, ssh, old) if matches_filter(r, target="ssh:other")] == []
    assert [r.name for r in (lab, ssh, old) if matches_filter(r, config_digest="BBB")] == ["B"]
    assert [r.name for r in (lab, ssh, old) if matches_filter(r)] == ["A", "B", "C"]


def test_the_command_filters_and_says_so(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(DATA, results)
    recorded = json.loads((NEWEST / "verdict.json").read_text())
    recorded["run"].update(SSH)
    (results / "20261201-000000").mkdir()
    (results / "20261201-000000" / "verdict.json").write_text(json.dumps(recorded))
    out = tmp_path / "trends.html"
    assert cli_main(["report", str(results), "--target", "ssh", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "filtered: 1 of 6 run(s) match --target ssh (a run that recorded no target or digest matches no filter)" \
        in printed
    assert "trends: 1 run(s)" in printed
    assert cli_main(["report", str(results), "--config-digest", "bbbb", "--out", str(out)]) == 0
    assert "filtered: 1 of 6" in capsys.readouterr().out
    assert cli_main(["report", str(results), "--compare", NEWEST.name, "20261201-000000", "--out", str(out)]) == 0
    assert "  target: lab haconform -> ssh /etc/haconform/prod.yaml" in capsys.readouterr().out
    assert len(load_runs(results)) == 6


def test_a_configuration_digest_follows_the_contents_not_the_place(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for directory in (first, second):
        (directory / "stage1").mkdir(parents=True)
        (directory / "stage1" / "stage.yaml").write_text("stage: stage1\n")
    assert tree_digest(first) == tree_digest(second)
    (second / "stage1" / "stage.yaml").write_text("stage: stage1\ntitle: x\n")
    assert tree_digest(first) != tree_digest(second)
    assert tree_digest(tmp_path / "missing") is None


def test_a_session_records_what_it_ran_against(tmp_path):
    (tmp_path / "test_suite.py").write_text(
        "from haconform.conformance import conformance\n\n"
        "@conformance('HAC-T-001', stage='stage1', section='S', must='It MUST pass')\n"
        "def test_pass():\n    pass\n")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "note.txt").write_text("x")
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                             str(tmp_path / "test_suite.py"), "--rootdir", str(tmp_path), "--config",
                             str(tmp_path / "cfg"), "--history-dir", str(tmp_path / "results")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    recorded = json.loads((tmp_path / "reports" / "verdict.json").read_text())["run"]
    assert recorded["config"] == str(tmp_path / "cfg") and recorded["config_digest"] == tree_digest(tmp_path / "cfg")
    assert recorded["stage_mode"] == {"mode": "apply", "deployment_stage": None}
    assert recorded["waivers"] == {"sources": [], "count": 0, "digest": None}
    assert "commit" in recorded and recorded["target"] == {"target": "lab"}


def test_filters_do_not_apply_to_the_targets_table(capsys):
    assert cli_main(["report", str(DATA), "--targets", "a", "b", "--target", "lab"]) == 2
    assert "--target and --config-digest filter the trends" in capsys.readouterr().err


def test_a_perf_run_shows_and_filters_by_the_target_its_summary_records():
    perf = Run("P", Path("P"), perf={"target": {"target": "lab", "lab": "pf"}})
    assert perf.context["target"] == "lab pf" and perf.context["commit"] is None
    assert matches_filter(perf, target="lab:pf") and not matches_filter(perf, target="ssh")
