"""Runbook coverage (haconform/coverage.py): sections, settings and the MUSTs that depend on them."""

from __future__ import annotations

from pathlib import Path

from haconform.cli import main as cli_main
from haconform.coverage import compute_coverage, coverage_for, coverage_html, coverage_text, depends
from haconform.topology import load_topology

REPO = Path(__file__).resolve().parent.parent
DOCUMENTED = REPO / "fixtures" / "documented"
GOLDEN = REPO / "suites" / "conformance.yaml"


def documented_coverage() -> dict:
    return coverage_for(DOCUMENTED, GOLDEN, load_topology(REPO / "fixtures" / "topology.yaml"))


def test_patterns_match_key_paths_literally_but_for_the_star():
    assert depends("haproxy.cfg[backend *].server *", "haproxy.cfg[backend app].server app1")
    assert depends("cluster.resources.*", "cluster.resources.vip.operations[monitor].interval")
    assert not depends("haproxy.cfg[listen stats].*", "haproxy.cfg[listen stats]")
    assert not depends("cluster.group.*", "cluster.groupx")
    assert depends("*", "anything")


def test_every_declared_setting_is_one_the_stages_document():
    coverage = documented_coverage()
    assert coverage["patterns_matching_nothing"] == {}
    assert coverage["configuration_diff"] == ["HAC-CFG-001"]


def test_the_settings_only_the_configuration_diff_checks():
    only = documented_coverage()["checked_only_by_configuration_diff"]
    for key in ("haproxy.cfg[defaults].timeout server", "haproxy.cfg[defaults].retries",
                "haproxy.cfg[defaults].option redispatch", "haproxy.cfg[defaults].option http-server-close"):
        assert key in only
    assert "haproxy.cfg[defaults].maxconn" not in only     # HAC-LIM-003 depends on it


def test_each_setting_lists_the_musts_that_depend_on_it_and_each_section_its_musts():
    coverage = documented_coverage()
    settings = {s["key"]: s for s in coverage["settings"]}
    interval = settings["cluster.resources.vip.operations[monitor].interval"]
    assert interval["musts"] == ["HAC-HA-003", "HAC-HA-007"] and interval["stages"] == ["stage4", "stage5"]
    assert settings["limits.conf[haproxy hard nofile]"]["musts"] == ["HAC-LIM-001"]
    sections = {s["section"]: s for s in coverage["sections"]}
    assert sections["读写分离"]["musts"] == ["HAC-RW-001", "HAC-RW-002", "HAC-RW-003", "HAC-RW-004", "HAC-RW-005"]
    assert sections["读写分离"]["stages"] == ["stage3"]


def test_a_section_without_a_must_shows_with_none():
    golden = [{"id": "HAC-X-001", "section": "A", "settings": ["x.*"]}]

    class Stage:
        name, sections, files, cluster, directory = "stage1", ["A", "B"], [], None, Path(".")
    coverage = compute_coverage(golden, {"stage1": Stage()})
    assert [(s["section"], s["musts"]) for s in coverage["sections"]] == [("A", ["HAC-X-001"]), ("B", [])]
    assert coverage["totals"]["sections_without_must"] == 1
    assert coverage["patterns_matching_nothing"] == {"HAC-X-001": ["x.*"]}
    assert "B [stage1]: (no MUST)" in coverage_text(coverage)
    assert "warning: HAC-X-001 declares settings no stage documents: x.*" in coverage_text(coverage)
    assert "no MUST" in coverage_html(coverage)


def test_the_command_prints_the_same_as_the_verdict_carries(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert cli_main(["conformance", "coverage"]) == 0
    text = capsys.readouterr().out
    assert text == coverage_text(documented_coverage())
    assert "checked only by the configuration diff: " in text
    assert "  haproxy.cfg[defaults].timeout server\n" in text
    assert cli_main(["conformance", "coverage", "--config", "/nonexistent"]) == 2
    assert "haconform: error: /nonexistent: not a directory (fix: " in capsys.readouterr().err
