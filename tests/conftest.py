"""The harness's own tests: the safety job's lab tests planned by their expected time (tests/scheduling.py).

A lab test says what it takes in `pytest.mark.lab(expected_s=...)` (measured in CI) and, when it brings up a
lab of its own, `own_lab=True`; under `--dist loadfile` (the safety job) the units, files or tests with a lab
of their own, are planned longest first over the workers.  In one process the same order holds: the
longest units first, each unit's tests together and in their order."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.scheduling import PLAN_INPUT, make_scheduler, unit_and_expected, write_plan

PLAN_DIR = pytest.StashKey[Path]()


def pytest_configure(config):
    if not hasattr(config, "workerinput"):
        config.stash[PLAN_DIR] = Path(tempfile.mkdtemp(prefix="haconform-test-plan-"))


def pytest_unconfigure(config):
    plan_dir = config.stash.get(PLAN_DIR, None)
    if plan_dir is not None:
        shutil.rmtree(plan_dir, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    node.workerinput[PLAN_INPUT] = str(node.config.stash[PLAN_DIR] / "plan.json")


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") == "loadfile":
        return make_scheduler(config, log, config.stash[PLAN_DIR] / "plan.json")
    return None


def pytest_collection_modifyitems(config, items):
    units = {item.nodeid: unit_and_expected(item) for item in items}
    longest: dict[str, float] = {}
    for unit, seconds in units.values():
        longest[unit] = max(longest.get(unit, 0.0), seconds)
    items.sort(key=lambda item: -longest[units[item.nodeid][0]])   # stable: units stay whole and in order
    plan = getattr(config, "workerinput", {}).get(PLAN_INPUT)
    if plan:
        write_plan(Path(plan), units)
