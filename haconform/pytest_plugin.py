"""pytest plugin: options, markers, conformance bookkeeping, evidence in reports."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from .conformance import requirement_of
from .evidence import Evidence
from .secrets import install_log_filter, redact

REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    group = parser.getgroup("haconform")
    group.addoption("--target", choices=["lab", "vagrant", "ssh"], default=os.environ.get("HACONFORM_TARGET", "lab"),
                    help="where the topology runs (default: lab, the embedded namespace lab)")
    group.addoption("--lab-name", default=os.environ.get("HACONFORM_LAB", "haconform"),
                    help="name of the namespace lab (default: haconform)")
    group.addoption("--topology", default=os.environ.get("HACONFORM_TOPOLOGY"),
                    help="topology file (default: fixtures/topology.yaml)")
    group.addoption("--config", default=os.environ.get("HACONFORM_CONFIG", str(REPO / "fixtures" / "documented")),
                    help="directory of stage configurations, laid out like fixtures/documented/")
    group.addoption("--inventory", default=os.environ.get("HACONFORM_INVENTORY"),
                    help="inventory file for --target ssh")
    group.addoption("--allow-destructive", action="store_true",
                    default=os.environ.get("HACONFORM_ALLOW_DESTRUCTIVE") == "1",
                    help="let destructive suites run against an SSH target")
    group.addoption("--keep-lab", action="store_true", default=os.environ.get("HACONFORM_KEEP_LAB") == "1",
                    help="leave the lab running after the session (default: lab down at the end)")
    group.addoption("--reuse-lab", action="store_true", default=os.environ.get("HACONFORM_REUSE_LAB") == "1",
                    help="use the lab as it is instead of starting from a fresh one (development)")
    group.addoption("--history-dir", default=os.environ.get("HACONFORM_HISTORY", str(REPO / "results")),
                    help="where each run keeps its history (evidence JSON per test)")


    perf = parser.getgroup("haconform perf", "locust performance runs (pytest perf; tox -e perf)")
    perf.addoption("--perf-users", type=int, default=None, help="locust users (default 20; smoke 10), spread over the classes by weight 6:3:1")
    perf.addoption("--perf-spawn-rate", type=float, default=None, help="users started per second (default 20)")
    perf.addoption("--perf-duration", type=int, default=None,
                   help="seconds of load in each of the direct and VIP phases (default 15; smoke 3)")
    perf.addoption("--perf-reference-duration", type=int, default=None,
                   help="seconds of the one-URL locust phase and of wrk (default 10; smoke 2)")
    perf.addoption("--perf-workers", type=int, default=2, help="locust worker processes (default 2)")
    perf.addoption("--perf-seed", type=int, default=int(time.time()) % 100000,
                   help="seed of the users' random choices (default: a new one, recorded)")
    perf.addoption("--perf-think", type=float, default=0.0,
                   help="think time per user, seconds (default 0: each user sends as fast as answered)")
    perf.addoption("--perf-fault", choices=["standby", "haproxy-stop", "crash"], default=None,
                   help="a fault injected mid-run in an extra phase through the VIP")
    perf.addoption("--perf-fault-at", type=float, default=10.0, help="seconds into the fault phase (default 10)")
    perf.addoption("--perf-fault-duration", type=int, default=60,
                   help="length of the fault phase, seconds (default 60; haproxy-stop needs ~90)")
    perf.addoption("--perf-python", default=None,
                   help="python with locust in the client host (default: the harness's own on the lab)")
    perf.addoption("--perf-smoke", action="store_true", help="a ~10 s run that checks the pipeline (CI)")


def pytest_configure(config):
    config.addinivalue_line("markers", "conformance(requirement): a conformance test with a stable ID and MUST")
    config.addinivalue_line("markers", "destructive: injects faults or changes cluster state")
    install_log_filter()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    config._haconform_run_dir = Path(config.getoption("--history-dir")) / stamp


def pytest_collection_modifyitems(session, config, items):
    seen: dict[str, str] = {}
    problems = []
    for item in items:
        requirement = requirement_of(item)
        in_suites = "suites" in Path(str(item.fspath)).parts
        if in_suites and requirement is None:
            problems.append(f"{item.nodeid}: suite test without @conformance(...)")
            continue
        if requirement is None:
            continue
        if requirement.id in seen and seen[requirement.id] != item.originalname:
            problems.append(f"{requirement.id} used by both {seen[requirement.id]} and {item.nodeid}")
        seen[requirement.id] = item.originalname
        item.user_properties.append(("conformance_id", requirement.id))
        item.user_properties.append(("must", requirement.must))
        item.user_properties.append(("runbook_section", requirement.section))
        item.user_properties.append(("stage", requirement.stage))
    if problems:
        raise pytest.UsageError("conformance metadata:\n  " + "\n  ".join(problems))

    target = config.getoption("--target")
    if target == "ssh" and not config.getoption("--allow-destructive"):
        skip = pytest.mark.skip(reason="destructive: left out against an SSH target without --allow-destructive")
        for item in items:
            if item.get_closest_marker("destructive"):
                item.add_marker(skip)


@pytest.fixture
def evidence(request) -> Evidence:
    """What this test saw; rendered into the HTML report and the run history."""
    ev = Evidence(request.node.nodeid)
    request.node._haconform_evidence = ev
    return ev


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if isinstance(report.longrepr, tuple):   # a skip: (path, line, reason), kept a tuple for JUnit
        report.longrepr = (*report.longrepr[:2], redact(str(report.longrepr[2])))
    elif report.longrepr is not None:
        report.longrepr = redact(str(report.longrepr))
    if report.when != "call":
        return
    ev: Evidence | None = getattr(item, "_haconform_evidence", None)
    requirement = requirement_of(item)
    header = ""
    if requirement:
        header = (f"<p><b>{requirement.id}</b> — {requirement.must}<br>"
                  f"runbook: {requirement.section} ({requirement.stage})</p>")
    try:
        from pytest_html import extras
    except ImportError:
        extras = None
    if extras is not None and (ev or header):
        report.extras = getattr(report, "extras", []) + [extras.html(header + (ev.to_html() if ev else ""))]
    run_dir: Path = item.config._haconform_run_dir
    if ev is not None or requirement is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        outcome = report.outcome
        if hasattr(report, "wasxfail"):   # an expected failure is a finding, not a skip
            outcome = "xfailed" if report.skipped else "xpassed"
        record = {"nodeid": item.nodeid, "outcome": outcome, "duration": report.duration,
                  "requirement": requirement.__dict__ if requirement else None,
                  "evidence": ev.to_json() if ev else []}
        with open(run_dir / "history.jsonl", "a") as fh:
            fh.write(redact(json.dumps(record, default=str, ensure_ascii=False)) + "\n")
