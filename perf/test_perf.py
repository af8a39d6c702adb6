"""Locust performance runs through the VIP (tox -e perf).

Not conformance tests: they measure.  What they check is that a run is whole
(every phase has requests, rates and percentiles, a generator verdict; the
ratios exist, with their flags), that a healthy deployment fails no request,
that after a scheduled fault the cluster is audited healthy again, and that a
locust worker in a second lab host joins the master across the lab network.
The figures are in results/<ts>/summary.json and report.html.
"""

from __future__ import annotations

import contextlib

import pytest

from haconform.perf.load import REFERENCE_CLASS, ClientHost, LoadShape, run_locust
from haconform.perf.placement import plan_placement
from haconform.perf.run import PerfOptions, run_perf, worker_host
from haconform.perf.summary import incomplete, phase_summary


@pytest.fixture
def perf_options(request) -> PerfOptions:
    option = request.config.getoption
    smoke = option("--perf-smoke")
    shape = LoadShape(users=option("--perf-users") or (10 if smoke else 20),
                      spawn_rate=option("--perf-spawn-rate") or (10 if smoke else 20),
                      duration_s=option("--perf-duration") or (3 if smoke else 15),
                      workers=option("--perf-workers") or 0, seed=option("--perf-seed"),
                      think_s=option("--perf-think"), rate=option("--perf-rate"), timeout_s=option("--perf-timeout"))
    return PerfOptions(shape=shape, reference_duration_s=option("--perf-reference-duration") or (2 if smoke else 10),
                       fault=option("--perf-fault"), fault_at_s=option("--perf-fault-at"),
                       fault_duration_s=option("--perf-fault-duration"),
                       python=option("--perf-python"),
                       placement=option("--perf-placement"), worker_hosts=tuple(option("--perf-worker-host")),
                       remote_workers=option("--perf-remote-workers"))


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
    for phase in ("wrk", "wrk_direct"):
        assert summary["phases"][phase]["errors"] == 0, summary["phases"][phase]["errors_by_kind"]
    flagged = summary["ratios"]["ratios_flags"]
    for name in ("vip_over_direct_requests_per_s", "vip_over_direct_p50", "vip_over_direct_p95"):
        bound = any(summary["phases"][p]["generator"]["generator_bound"] for p in ("vip", "direct"))
        assert (flagged.get(name) == "generator_bound") == bound, (name, flagged)
    if summary["fault"]:
        fault = summary["fault"]
        assert fault["injected_at"] is not None, "the fault was never injected (run shorter than --perf-fault-at?)"
        assert fault["vip_max_simultaneous_holders"] <= 1, fault
        assert not fault["audit_problems"], fault["audit_problems"]


def test_a_worker_in_a_second_lab_host_joins_the_master(deployment, stage5, perf_options, progress):
    """A locust worker in the fence host joins the master in the client host across the lab
    network and sends part of the load.  The fence host is on the lab network and in no
    request's path (a real server's worker would take CPU from the Apache it measures)."""
    host = deployment.fence_host
    if host is None:
        pytest.skip("the topology has no fence host to run a second worker in")
    placement = plan_placement(perf_options.placement, deployment.target.kind)
    try:
        worker = worker_host(deployment, host.name, perf_options.python, placement.generator_cpus)
    except Exception as exc:        # e.g. a fence host that is the harness machine itself
        pytest.skip(f"no locust worker in {host.name}: {exc}")
    client = ClientHost(deployment.client, perf_options.python, cpus=placement.generator_cpus)
    try:
        client.prepare()
        worker.prepare()
        shape = LoadShape(users=4, spawn_rate=4, duration_s=3, workers=1, seed=perf_options.shape.seed)
        result = run_locust(client, "joined", deployment.url("", address=deployment.vip), (REFERENCE_CLASS,),
                            shape, progress=progress, worker_hosts=[worker], remote_workers=1)
    finally:
        client.cleanup()
        worker.cleanup()
    summary = phase_summary("joined", result.files)
    assert summary["failures"] == 0, summary["failure_kinds"]
    assert summary["worker_hosts"].get(host.name, 0) > 0, summary["worker_hosts"]
    assert summary["worker_hosts"].get(deployment.client.name, 0) > 0, summary["worker_hosts"]
    assert sum(summary["worker_hosts"].values()) == summary["requests"]
