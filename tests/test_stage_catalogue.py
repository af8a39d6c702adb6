"""The stages as a whole come from the stage data (haconform/stages/catalogue.py), and say what was hard-coded."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from haconform.cli import main as cli_main
from haconform.errors import HaconformError
from haconform.stages.catalogue import documented, load_catalogue, report_key

REPO = Path(__file__).resolve().parent.parent

# What was spelt out before the catalogue: the names, the setting fixtures' stages, the reports' order.
RUNBOOK_STAGES = ("stage1", "stage2", "stage3", "stage4", "stage5")
SETTING_STAGES = {"stats": "stage2", "logging": "stage2", "limits": "stage2", "write-routing": "stage3",
                  "cluster": "stage4", "fencing": "stage5"}
STAGE_ORDER = ["stage1", "stage2", "stage3", "stage1-3", "stage4", "stage5", "algorithms"]


def test_the_documented_stages_in_order_and_the_last():
    assert documented().names == RUNBOOK_STAGES
    assert documented().last == "stage5"


def test_a_setting_is_introduced_by_the_first_stage_providing_it():
    assert {s: documented().introduced_at(s) for s in SETTING_STAGES} == {**SETTING_STAGES, "logging": "stage1"}
    with pytest.raises(HaconformError, match="no stage provides 'colour'"):
        documented().introduced_at("colour")


def test_the_stage_and_setting_fixtures_are_what_they_were():
    from fixtures.stages import STAGE_NEEDS

    assert {name for name, needs in STAGE_NEEDS.items() if "stage" in needs} == {*RUNBOOK_STAGES, "algorithm"}
    settings = {needs["setting"]: needs["introduced_in"] for needs in STAGE_NEEDS.values() if "setting" in needs}
    assert settings == SETTING_STAGES
    # A setting's tests run in a stage that keeps it (logging: stage 2, though stage 1 introduces it).
    provides = {stage.name: stage.provides for stage in documented().stages}
    assert all(setting in provides[stage] for setting, stage in settings.items())


def test_reports_order_stage_labels_as_before():
    labels = [*STAGE_ORDER, "beyond", "zzz"]
    shuffled = random.Random(26).sample(labels, len(labels))
    assert sorted(shuffled, key=report_key) == labels


def test_a_stage_comes_after_its_base_and_otherwise_by_name(tmp_path):
    # As `haconform describe --out` writes it: the described stage has no base, those after it keep theirs.
    for name, base in {"stage1": None, "stage2": "stage1", "stage3": None, "stage4": "stage3"}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "stage.yaml").write_text(f"base: {base}\n" if base else "title: x\n")
    assert load_catalogue(tmp_path).names == ("stage1", "stage2", "stage3", "stage4")


def test_a_cycle_of_bases_is_refused_naming_the_file(tmp_path):
    for name, base in {"a": "b", "b": "c", "c": "b"}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "stage.yaml").write_text(f"base: {base}\n")
    with pytest.raises(HaconformError) as caught:
        load_catalogue(tmp_path)
    assert str(caught.value) == (f"{tmp_path}/c/stage.yaml: base: cycle through a -> b -> c -> b "
                                 "(fix: a stage's base must be an earlier stage)")


def test_a_report_with_a_malformed_stage_yaml_says_so_once(tmp_path, monkeypatch, capsys):
    # `haconform report` reads fixtures/documented of the directory it runs in for the stages' notes and titles.
    stage = tmp_path / "fixtures" / "documented" / "stage1"
    stage.mkdir(parents=True)
    (stage / "stage.yaml").write_text("stage: stage1\nnotes: [oops\n")
    monkeypatch.chdir(tmp_path)
    assert cli_main(["report", str(REPO / "tests" / "data" / "verdict" / "results"),
                     "--out", str(tmp_path / "trends.html")]) == 2
    assert capsys.readouterr().err == ("haconform: error: fixtures/documented/stage1/stage.yaml:3: not valid YAML "
                                       "(expected ',' or ']', but got '<stream end>') "
                                       "(fix: correct the YAML syntax at that line)\n")
