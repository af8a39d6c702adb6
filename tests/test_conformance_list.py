"""The golden list (suites/conformance.yaml) equals what the suites declare."""

from pathlib import Path

import yaml

from haconform.conformance import declared, golden_text

SUITES = Path(__file__).resolve().parent.parent / "suites"


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
