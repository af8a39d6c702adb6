"""Locust performance runs through the VIP (tox -e perf).

Not conformance tests: they measure.  What they check is that a run is whole
(every phase has requests, rates and percentiles; the ratios exist), that a
healthy deployment fails no request, and that after a scheduled fault the
cluster is audited healthy again.  The figures are in results/<ts>/summary.json
and report.html.
"""

from __future__ import annotations

import contextlib
import sys

import pytest

from haconform.client import goes_through_shell
from haconform.perf.load import LoadShape
from haconform.perf.run import PerfOptions, run_perf
from haconform.perf.summary import incomplete


@pytest.fixture
def perf_options(request, deployment) -> PerfOptions:
    option = request.config.getoption
    smoke = option("--perf-smoke")
    shape = LoadShape(users=option("--perf-users") or (10 if smoke else 20),
                      spawn_rate=option("--perf-spawn-rate") or (10 if smoke else 20),
                      duration_s=option("--perf-duration") or (3 if smoke else 15),
                      workers=option("--perf-workers"), seed=option("--perf-seed"),
                      think_s=option("--perf-think"))
    return PerfOptions(shape=shape, reference_duration_s=option("--perf-reference-duration") or (2 if smoke else 10),
                       fault=option("--perf-fault"), fault_at_s=option("--perf-fault-at"),
                       fault_duration_s=option("--perf-fault-duration"),
                       python=option("--perf-python") or client_python(deployment.client))


def client_python(client) -> str:
    """A client host on this machine (a namespace host, on the lab and the VM target) sees the
    harness's own files, so the harness's python, which has locust, runs there; over ssh it is the
    host's python3, which needs locust installed."""
    return "python3" if goes_through_shell(client.argv()) else sys.executable


@pytest.fixture
def progress(request):
    """A progress line on the terminal while locust runs (pytest's capture is bypassed for it)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def show(line: str) -> None:
        if reporter is None:
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            if reporter.isatty:
                reporter.rewrite(line, erase=True)
            else:
                reporter.write_line(line)
    return show


def test_load_through_the_vip(deployment, stage5, perf_options, progress, evidence, request):
    out_dir = request.config._haconform_run_dir
    summary = run_perf(deployment, perf_options, out_dir, evidence=evidence, progress=progress)
    progress(f"perf run stored in {out_dir}")
    evidence.data("perf summary (phases)", {name: {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
                                            for name, data in summary["phases"].items()})
    evidence.data("perf ratios", summary["ratios"])
    if summary["fault"]:
        evidence.data("perf fault", summary["fault"])
    problems = incomplete(summary)
    assert not problems, f"summary.json is incomplete: {problems}"
    for phase in ("direct", "vip", "reference"):
        data = summary["phases"][phase]
        assert data["failures"] == 0, f"{phase}: {data['failures']} failed requests on a healthy deployment: " \
                                      f"{data['failure_kinds'][:5]}"
    assert summary["phases"]["wrk"]["errors"] == 0, summary["phases"]["wrk"]["errors_by_kind"]
    if summary["fault"]:
        fault = summary["fault"]
        assert fault["injected_at"] is not None, "the fault was never injected (run shorter than --perf-fault-at?)"
        assert fault["vip_max_simultaneous_holders"] <= 1, fault
        assert not fault["audit_problems"], fault["audit_problems"]
