"""haconform/wait.py: a bounded wait records itself (condition, bound and its parts, time, outcome), its
timeout message says what the bound is made of, and the pytest plugin shows a test's waits as evidence."""

from __future__ import annotations

import time

import json
import re
import subprocess
import sys

import pytest

from haconform.errors import WaitTimeout
from haconform.pytest_plugin import WAITS_TITLE, wait_row
from haconform.timeouts import Bound, documented
from haconform.wait import HELD, TIMED_OUT, record_waits, wait_until

SHORT = Bound(0.1, 0.1, base=0.05, name="short")


@pytest.fixture
def records():
    found: list[dict] = []
    record_waits(found)
    yield found
    record_waits(None)


def test_a_wait_that_held_is_recorded_with_its_parts(records):
    assert wait_until("always", lambda: "yes", timeout=documented(30)) == "yes"
    (record,) = records
    assert record["condition"] == "always" and record["outcome"] == HELD
    assert (record["bound_s"], record["documented_s"], record["allowance_s"], record["base_s"], record["factor"]) \
        == (45.0, 30.0, 15.0, 15.0, 1.0)
    assert record["name"] == "documented(30)" and 0 <= record["elapsed_s"] < 5


def test_a_wait_that_timed_out_is_recorded_and_says_its_composition(records):
    with pytest.raises(WaitTimeout) as raised:
        wait_until("never", lambda: None, timeout=SHORT, observe=lambda: "still no")
    message = str(raised.value)
    assert message.startswith("timed out after 0.2s (")
    assert ("waiting for: never; bound 0.2 s = documented 0.1 s + allowance 0.1 s (0.05 s × 2.00); "
            "last observed: 'still no'") in message
    (record,) = records
    assert record["outcome"] == TIMED_OUT and record["elapsed_s"] >= 0.2 and record["factor"] == 2.0


def test_a_plain_number_keeps_today_s_message_and_has_no_parts(records):
    with pytest.raises(WaitTimeout) as raised:
        wait_until("never", lambda: None, timeout=0.1)
    assert re.fullmatch(r"timed out after 0\.1s \(\d+ polls\) waiting for: never; last observed: None",
                        str(raised.value)), str(raised.value)
    assert records[0]["bound_s"] == 0.1 and records[0]["documented_s"] is None and records[0]["factor"] is None


def test_nothing_is_recorded_without_a_recorder():
    record_waits(None)
    found: list[dict] = []
    wait_until("always", lambda: True, timeout=SHORT)
    record_waits(found)
    record_waits(None)
    wait_until("always", lambda: True, timeout=SHORT)
    assert found == []


def test_a_row_shows_documented_figure_allowance_and_measured():
    row = wait_row({"condition": "VIP back", "bound_s": 45.0, "name": "documented(30)", "documented_s": 30.0,
                    "allowance_s": 15.0, "base_s": 15.0, "factor": 1.0, "elapsed_s": 3.214, "outcome": HELD,
                    "phase": "call"})
    assert row == {"phase": "call", "condition": "VIP back", "figure": "documented(30)", "documented": "30 s",
                   "allowance": "15 s (15 s × 1.00)", "bound": "45.0 s", "measured": "3.21 s", "outcome": "held"}
    plain = wait_row({"condition": "x", "bound_s": 2.0, "name": None, "documented_s": None, "allowance_s": None,
                      "base_s": None, "factor": None, "elapsed_s": 2.0, "outcome": TIMED_OUT})
    assert plain["documented"] == "—" and plain["allowance"].startswith("—") and plain["figure"] == "—"


SUITE = '''
import pytest
from haconform.conformance import conformance
from haconform.timeouts import BOUNDS, documented
from haconform.wait import wait_until

@pytest.fixture
def prepared():
    wait_until("prepared", lambda: True, timeout=BOUNDS.service_start)

@conformance("HAC-T-001", stage="stage4", section="HA", must="The VIP MUST come back")
def test_held(prepared):
    wait_until("VIP back", lambda: True, timeout=documented(30))

@conformance("HAC-T-002", stage="stage4", section="HA", must="It MUST answer")
def test_timed_out():
    wait_until("answer", lambda: None, timeout=BOUNDS.probe_request * 0.2)

def test_not_conformance():
    wait_until("anything", lambda: True, timeout=BOUNDS.command)
'''


def test_the_plugin_shows_each_test_s_waits_as_evidence(tmp_path):
    (tmp_path / "test_suite.py").write_text(SUITE)
    (tmp_path / "cfg").mkdir()
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                             str(tmp_path / "test_suite.py"), "--rootdir", str(tmp_path),
                             "--config", str(tmp_path / "cfg"), "--history-dir", str(tmp_path / "results")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    (history,) = (tmp_path / "results").glob("*/history.jsonl")
    tables = {}
    for line in history.read_text().splitlines():
        row = json.loads(line)
        for item in row["evidence"]:
            if item["title"] == WAITS_TITLE:
                tables.setdefault(row["nodeid"].split("::")[-1], []).extend(item["content"])
    assert set(tables) == {"test_held", "test_timed_out"}   # the plain test has no evidence to add to
    held = tables["test_held"]
    assert [(r["phase"], r["condition"], r["figure"], r["outcome"]) for r in held] == [
        ("setup", "prepared", "service_start", "held"), ("call", "VIP back", "documented(30)", "held")]
    assert held[1]["documented"] == "30 s" and held[1]["allowance"] == "15 s (15 s × 1.00)"
    (timed_out,) = tables["test_timed_out"]
    assert timed_out["outcome"] == "timed out" and timed_out["figure"] == "0.2×probe_request"
    assert "bound 0.2 s = allowance 0.2 s (0.2 s × 1.00)" in result.stdout


def test_a_long_wait_looks_less_often_but_within_a_tenth_of_its_time():
    """A condition that holds after 3 s: seen within 10 % of that (and within 1 s), asked far fewer
    times than every 0.1 s (labs side by side share two cores with their pollers)."""
    start = time.monotonic()
    polls = []

    def held():
        polls.append(time.monotonic() - start)
        return polls[-1] >= 3.0

    wait_until("three seconds passed", held, timeout=10)
    assert polls[-1] - 3.0 <= 0.3 + 0.05, polls[-3:]
    assert len(polls) <= 24, len(polls)      # every 0.1 s: 30; a 20 s wait: some 40 against 200
    assert polls[1] - polls[0] < 0.2, "a short wait still looks every 0.1 s"
