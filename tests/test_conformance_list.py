"""The golden list (suites/conformance.yaml) equals what the suites declare."""

from pathlib import Path

import pytest
import yaml

from haconform.conformance import SECTION_TITLES, declared, english_title, golden_text, read_section_titles
from haconform.errors import HaconformError

SUITES = Path(__file__).resolve().parent.parent / "suites"
FIXTURES = SUITES.parent / "fixtures"


def test_golden_list_matches_the_suites():
    golden = yaml.safe_load((SUITES / "conformance.yaml").read_text())
    current = declared(SUITES)
    assert golden == current, (
        "suites changed their conformance tests; review and run `haconform conformance list --write`:\n"
        + "\n".join(sorted({r["id"] for r in current} ^ {r["id"] for r in golden})))


def test_ids_are_unique_and_every_statement_says_must():
    rows = declared(SUITES)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), ids
    assert all(" MUST " in f" {r['must']} " for r in rows)


def test_golden_text_is_stable():
    rows = declared(SUITES)
    assert yaml.safe_load(golden_text(rows)) == rows


def test_every_runbook_section_has_an_english_title():
    """What the suites declare and what each stage.yaml names (notes on the verdict page carry it)."""
    titles = read_section_titles(SUITES / SECTION_TITLES)
    declared_sections = {r["section"] for r in declared(SUITES)}
    stage_sections = {section for path in [*FIXTURES.glob("documented/*/stage.yaml"),
                                           *FIXTURES.glob("beyond/algorithms/*/stage.yaml")]
                      for section in yaml.safe_load(path.read_text()).get("runbook_sections") or []}
    assert declared_sections and stage_sections
    missing = sorted((declared_sections | stage_sections) - set(titles))
    assert not missing, f"add their English titles to suites/{SECTION_TITLES}: {missing}"
    assert all(title.isascii() for title in titles.values()), titles


def test_english_title_of_several_sections():
    titles = {"日志": "Logging", "读写分离": "Read/write split"}
    assert english_title("日志, 读写分离", titles) == "Logging, Read/write split"
    assert english_title("日志, 实现高可用", titles) is None and english_title("", titles) is None


@pytest.mark.parametrize("text, says", [
    ("日志: ''\n", "日志: needs its English title"),
    ("日志: [a, b]\n", "日志: needs its English title"),
    ("- 日志\n", "must be a mapping"),
])
def test_a_damaged_titles_file_says_which_heading_and_the_fix(tmp_path, text, says):
    path = tmp_path / SECTION_TITLES
    path.write_text(text, encoding="utf-8")
    with pytest.raises(HaconformError) as raised:
        read_section_titles(path)
    assert says in str(raised.value) and str(path) in str(raised.value), raised.value
