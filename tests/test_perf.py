"""Summary, plotting and command lines of perf runs, on CSVs recorded from real runs
(tests/data/perf/smoke: a --perf-smoke run on the lab; .../crash: a director crash under load)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from haconform.errors import HaconformError
from haconform.perf.load import (ClientHost, LoadShape, last_aggregated_row, master_argv, parse_wrk_report,
                                 progress_line, worker_argv, wrk_argv)
from haconform.perf.report import phase_plot_svg, render_html
from haconform.perf.run import plots_for
from haconform.perf.summary import (Second, entries_summary, failure_windows, history_series, incomplete,
                                    percentile, phase_summary, ratios, wrk_summary)

DATA = Path(__file__).parent / "data" / "perf"


def recorded(run: str) -> dict[str, str]:
    return {p.name: p.read_text() for p in (DATA / run).iterdir()}


def stats_csv_aggregated_count(text: str) -> int:
    line = next(l for l in text.splitlines() if ",Aggregated," in l)
    return int(line.split(",")[2])


@pytest.fixture(scope="module")
def smoke():
    return recorded("smoke")


def summary_of(files: dict[str, str]) -> dict:
    phases = {name: phase_summary(name, files) for name in ("direct", "vip", "reference")}
    phases["wrk"] = wrk_summary(json.loads(files["wrk.json"]))
    return {"run": "recorded", "seed": 7, "options": {"users": 10}, "started": 1.0, "phases": phases,
            "ratios": ratios(phases), "fault": None,
            "timing": {name: {"started": history_series(files[f"{name}_stats_history.csv"])[0].t - 1}
                       for name in ("direct", "vip", "reference")}}


def test_phase_totals_come_from_locusts_final_json(smoke):
    summary = phase_summary("vip", smoke)
    entries = json.loads(smoke["vip_final.json"])
    assert summary["requests"] == sum(e["num_requests"] for e in entries)
    assert summary["requests"] == sum(r["requests"] for r in summary["by_request"].values())
    # the CSV's totals are rewritten once a second and lag the end of the run
    assert summary["requests"] >= stats_csv_aggregated_count(smoke["vip_stats.csv"])
    assert summary["requests_per_s"] == pytest.approx(summary["requests"] / summary["seconds"], rel=0.01)
    assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"] <= summary["max_ms"]


def test_served_by_is_read_from_the_real_servers_header(smoke):
    direct = phase_summary("direct", smoke)
    assert direct["served_by"] and all(set(counts) == {"server2"} for counts in direct["served_by"].values())
    total_served = sum(sum(c.values()) for c in direct["served_by"].values())
    assert total_served == direct["requests"]


def test_percentile_walks_locusts_buckets():
    histogram = {1.0: 50, 2.0: 40, 10.0: 9, 100.0: 1}
    assert percentile(histogram, 0.5) == 1.0
    assert percentile(histogram, 0.9) == 2.0
    assert percentile(histogram, 0.95) == 10.0
    assert percentile(histogram, 0.999) == 100.0
    assert percentile({}, 0.5) is None


def test_entries_summary_of_nothing_has_no_rate():
    assert entries_summary([])["requests_per_s"] is None


def second(t, total_failures, fps=0.0):
    return Second(t=t, users=10, requests_per_s=100.0, failures_per_s=fps, p50_ms=1.0, p95_ms=2.0, p99_ms=3.0,
                  total_requests=int(t * 100), total_failures=total_failures)


def test_failure_windows_join_consecutive_seconds_and_split_on_gaps():
    series = [second(100, 0), second(101, 3), second(102, 9), second(103, 9), second(104, 9), second(105, 10)]
    windows = failure_windows(series)
    assert windows == [{"start": 100.0, "end": 102.0, "failures": 9, "seconds": 2.0},
                       {"start": 104.0, "end": 105.0, "failures": 1, "seconds": 1.0}]
    assert failure_windows([second(100, 0), second(101, 0)]) == []


def test_history_series_reads_only_aggregated_rows(smoke):
    series = history_series(smoke["vip_stats_history.csv"])
    assert series and all(b.t > a.t for a, b in zip(series, series[1:]))
    assert max(s.total_requests for s in series) > 0


def test_wrk_report_line_is_parsed_and_summarized(smoke):
    report = json.loads(smoke["wrk.json"])
    line = "Running 2s test\nHACONFORM-WRK " + json.dumps({k: report[k] for k in
                                                          ("requests", "duration_us", "bytes", "errors",
                                                           "latency_ms")}) + "\n"
    parsed = parse_wrk_report(line)
    assert parsed["requests"] == report["requests"]
    summary = wrk_summary(report)
    assert summary["requests_per_s"] == pytest.approx(report["requests"] / (report["duration_us"] / 1e6), rel=1e-3)
    with pytest.raises(ValueError, match="HACONFORM-WRK"):
        parse_wrk_report("Running 2s test\n  Latency 1ms\n")


def test_ratios_and_completeness(smoke):
    summary = summary_of(smoke)
    phases = summary["phases"]
    assert summary["ratios"]["vip_over_direct_requests_per_s"] == pytest.approx(
        phases["vip"]["requests_per_s"] / phases["direct"]["requests_per_s"], rel=1e-3)
    assert summary["ratios"]["locust_over_wrk_requests_per_s"] == pytest.approx(
        phases["reference"]["requests_per_s"] / phases["wrk"]["requests_per_s"], rel=1e-3)
    assert incomplete(summary) == []
    broken = json.loads(json.dumps(summary))
    broken["phases"]["vip"]["requests_per_s"] = 0
    del broken["phases"]["wrk"]
    broken["ratios"] = ratios(broken["phases"])
    problems = incomplete(broken)
    assert "vip.requests_per_s is 0" in problems and "phase wrk missing" in problems
    assert any(p.startswith("ratios.locust_over_wrk") for p in problems)


def test_report_is_one_self_contained_page(smoke):
    summary = summary_of(smoke)
    page = render_html(summary, plots_for(summary, smoke))
    assert page.count("<svg") == 3
    assert not re.search(r"""(src|href)=["']https?:""", page)
    assert "vip_over_direct_requests_per_s" in page


def test_fault_window_is_shaded_in_the_plot():
    series = [second(100 + k, 0 if k < 5 else 7) for k in range(10)]
    plain = phase_plot_svg(series, title="t", started=99.0)
    shaded = phase_plot_svg(series, title="t", started=99.0, windows=[(104.0, 106.0, "failures")],
                            marks=[(104.0, "crash injected")])
    assert "crash injected" in shaded and "crash injected" not in plain
    assert shaded.count("<path") > plain.count("<path")


class FakeMachine:
    name = "client"

    def argv(self):
        return ["nsenter", "-t", "1", "--"]


def test_locust_runs_distributed_master_and_workers():
    client = ClientHost(FakeMachine(), "/venv/bin/python", "/tmp/w")
    shape = LoadShape(users=20, spawn_rate=5, duration_s=15, workers=3, seed=42)
    master = master_argv(client, "vip", "http://vip:80", ("A", "B"), shape)
    assert master[:4] == ["env", "HACONFORM_PERF_SEED=42", "HACONFORM_PERF_WAIT=0.0",
                          "HACONFORM_PERF_OUT=/tmp/w/vip"]
    assert "--master" in master and master[master.index("--expect-workers") + 1] == "3"
    assert master[master.index("-t") + 1] == "15s" and master[-2:] == ["A", "B"]
    assert master[master.index("--json-file") + 1] == "/tmp/w/vip_final"
    worker = worker_argv(client, "vip", shape, master_host="10.0.0.9")
    assert "--worker" in worker and worker[worker.index("--master-host") + 1] == "10.0.0.9"
    wrk = wrk_argv(client, "http://vip:80/index.php", shape, 10)
    assert wrk[wrk.index("-c") + 1] == "20" and wrk[-1] == "http://vip:80/index.php"


def test_progress_line_reads_the_newest_aggregated_row(smoke):
    text = smoke["vip_stats_history.csv"]
    header, body = text.split("\n", 1)
    row = last_aggregated_row(body, header)
    assert row["Name"] == "Aggregated"
    assert "req/s" in progress_line("vip", 3.0, 15, row)
    assert "starting" in progress_line("vip", 1.0, 15, None)


def test_unknown_fault_and_powerless_crash_are_refused():
    from haconform.faults import make_fault

    class Target:
        kind, can_power = "ssh", False

    class Deployment:
        target = Target()

    with pytest.raises(HaconformError, match="choose one of"):
        make_fault("meteor", Deployment())
    with pytest.raises(HaconformError, match="power control"):
        make_fault("crash", Deployment())
    assert make_fault("standby", Deployment()).name == "standby"


@pytest.fixture(scope="module")
def crash():
    return recorded("crash")


def test_director_crash_shows_as_a_silent_window_around_the_injection(crash):
    fault = json.loads(crash["summary.json"])["fault"]
    summary = phase_summary("fault", crash)
    assert summary["per_second_source"] == "fault_seconds.json"
    longest = max(summary["silent_windows"], key=lambda w: w["seconds"])
    # the users saw nothing succeed from just after the crash (in-flight requests still
    # completed within its second) for several seconds
    assert fault["injected_at"] - 1.0 <= longest["start"] <= fault["injected_at"] + 2.0
    assert longest["seconds"] >= 5
    assert summary["failures"] == sum(k["occurrences"] for k in summary["failure_kinds"])
    # locust's own history averages over a window: the same outage is not a run of zero-rate seconds there
    smoothed = history_series(crash["fault_stats_history.csv"])
    assert max(s.requests_per_s for s in smoothed) > 0


def test_fault_plot_marks_the_injection_and_shades_the_windows(crash):
    summary = json.loads(crash["summary.json"])
    plots = plots_for(summary, crash)
    assert set(plots) == {"fault"}
    svg = plots["fault"]
    assert "crash injected" in svg and "no request succeeded" in svg and "prober outage" in svg
