"""Summary, plotting, placement and command lines of perf runs, on files recorded from real runs
(tests/data/perf/smoke: a --perf-smoke run on the lab; .../crash: a director crash under load,
closed loop; .../crash_open: the same in open loop), and the workload's open-loop schedule run
by locust itself against a stub server on this machine's loopback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from haconform.errors import HaconformError
from haconform.perf.load import (WORKLOAD, ClientHost, LoadShape, last_aggregated_row, load_running, master_argv,
                                 parse_wrk_report, progress_line, worker_argv, wrk_argv)
from haconform.perf.placement import (cpu_count, generator_cpu, locust_generator_cpu, parse_host_sample,
                                      parse_process_sample, plan_placement, process_usage, stat_ticks)
from haconform.perf.report import phase_plot_svg, render_html
from haconform.perf.run import plots_for
from tests.fakes import FakeResult
from haconform.perf.summary import (Second, completed_series, entries_summary, failure_windows, generator_verdict,
                                    history_series, incomplete, per_second_table, percentile, phase_summary, ratios,
                                    wrk_summary)

DATA = Path(__file__).parent / "data" / "perf"
pytest_plugins = ["pytester"]


def recorded(run: str) -> dict[str, str]:
    return {p.name: p.read_text() for p in (DATA / run).iterdir()}


def stats_csv_aggregated_count(text: str) -> int:
    line = next(l for l in text.splitlines() if ",Aggregated," in l)
    return int(line.split(",")[2])


@pytest.fixture(scope="module")
def smoke():
    return recorded("smoke")


LOCUST_PHASES = ("direct", "vip", "reference", "reference_direct")


def summary_of(files: dict[str, str]) -> dict:
    phases = {name: phase_summary(name, files) for name in LOCUST_PHASES}
    phases["wrk"] = wrk_summary(json.loads(files["wrk.json"]))
    phases["wrk_direct"] = wrk_summary(json.loads(files["wrk_direct.json"]))
    for name in LOCUST_PHASES:
        cpu = locust_generator_cpu(json.loads(files[f"{name}_cpu.json"]), shared=True)
        phases[name]["generator"] = generator_verdict(name, phases, cpu)
    return {"run": "recorded", "seed": 7, "options": {"users": 10}, "started": 1.0, "phases": phases,
            "ratios": ratios(phases), "fault": None, "placement": {"how": "auto"},
            "generator_bound_phases": [n for n in LOCUST_PHASES if phases[n]["generator"]["generator_bound"]],
            "timing": {name: {"started": history_series(files[f"{name}_stats_history.csv"])[0].t - 1}
                       for name in LOCUST_PHASES}}


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
    assert summary["ratios"]["wrk_vip_over_direct_requests_per_s"] == pytest.approx(
        phases["wrk"]["requests_per_s"] / phases["wrk_direct"]["requests_per_s"], rel=1e-3)
    assert incomplete(summary) == []
    broken = json.loads(json.dumps(summary))
    broken["phases"]["vip"]["requests_per_s"] = 0
    del broken["phases"]["wrk"]
    del broken["phases"]["direct"]["generator"]
    del broken["placement"]
    broken["ratios"] = ratios(broken["phases"])
    problems = incomplete(broken)
    assert "vip.requests_per_s is 0" in problems and "phase wrk missing" in problems
    assert any(p.startswith("ratios.locust_over_wrk") for p in problems)
    assert "direct.generator (the generator-bound verdict) missing" in problems and "placement missing" in problems


def test_report_is_one_self_contained_page(smoke):
    summary = summary_of(smoke)
    page = render_html(summary, plots_for(summary, smoke))
    assert page.count("<svg") == 4
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
    transport_kind = "nsenter"

    def program(self, argv):
        return ["nsenter", "-t", "1", "--", *argv]


def test_locust_runs_distributed_master_and_workers():
    client = ClientHost(FakeMachine(), "/venv/bin/python", "/tmp/w")
    shape = LoadShape(users=20, spawn_rate=5, duration_s=15, workers=3, seed=42)
    master = master_argv(client, "vip", "http://vip:80", ("A", "B"), shape)
    assert master[:3] == ["env", "HACONFORM_PERF_SEED=42", "HACONFORM_PERF_WAIT=0.0"]
    assert {"HACONFORM_PERF_OUT=/tmp/w/vip", "HACONFORM_PERF_RATE=0.0", "HACONFORM_PERF_WORKERS=3",
            "HACONFORM_PERF_CLASSES=A,B"} <= set(master)
    assert master[master.index("--master-bind-host") + 1] == "127.0.0.1"
    assert "--master" in master and master[master.index("--expect-workers") + 1] == "3"
    assert master[master.index("-t") + 1] == "15s" and master[-2:] == ["A", "B"]
    assert master[master.index("--json-file") + 1] == "/tmp/w/vip_final"
    worker = worker_argv(client, "vip", shape, master_host="10.0.0.9")
    assert "--worker" in worker and worker[worker.index("--master-host") + 1] == "10.0.0.9"
    wrk = wrk_argv(client, "http://vip:80/index.php", shape, 10)
    assert wrk[wrk.index("-c") + 1] == "20" and wrk[-1] == "http://vip:80/index.php"
    # wrk asks the server for what locust asks (a compressed index.php)
    assert wrk[wrk.index("-H") + 1] == "Accept-Encoding: gzip, deflate, br"


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


# ----- placement and the generator's CPU ------------------------------------------------

def test_placement_pins_only_the_lab_and_splits_the_cpus():
    assert plan_placement("auto", "lab", 2).describe()["generator_cpus"] == "0"
    two = plan_placement("auto", "lab", 2)
    assert (two.generator_cpus, two.sut_cpus) == ("0", "1")
    eight = plan_placement("auto", "lab", 8)
    assert (eight.generator_cpus, eight.sut_cpus) == ("0-3", "4-7")
    assert plan_placement("auto", "ssh", 8).generator_cpus is None
    assert plan_placement("auto", "vagrant", 8).sut_cpus is None
    assert plan_placement("auto", "lab", 1).generator_cpus is None
    assert plan_placement("none", "lab", 2).generator_cpus is None
    explicit = plan_placement("0:", "ssh", 2)
    assert (explicit.generator_cpus, explicit.sut_cpus) == ("0", None)
    with pytest.raises(ValueError):
        plan_placement("0", "lab", 2)
    assert [cpu_count(c) for c in ("0", "1-3", "0,2-3", None)] == [1, 3, 3, None]


def test_generator_processes_start_under_taskset_when_pinned():
    pinned = ClientHost(FakeMachine(), "/venv/bin/python", "/tmp/w", cpus="0")
    argv = pinned.spawn_argv("vip-worker0", ["python", "-m", "locust"])
    assert argv[:4] == ["nsenter", "-t", "1", "--"] and argv[4:6] == ["/bin/sh", "-c"]
    assert argv[6] == "echo $$ > /tmp/w/vip-worker0.pid; exec taskset -c 0 python -m locust"
    free = ClientHost(FakeMachine(), "/venv/bin/python", "/tmp/w")
    assert free.spawn_argv("wrk", ["wrk"])[6].endswith("; exec wrk")


STAT = "1234 (python3 -m x) R 1 1 1 0 -1 4194304 1221 0 0 0 150 50 7 3 20 0 1 0 341968 14327808 2218"


def test_cpu_counters_are_read_from_proc():
    assert stat_ticks(STAT) == 200
    assert stat_ticks(STAT, children=True) == 210
    a = parse_process_sample(f"P vip-master 100 200 5|{STAT}\nU 1000.00 3.0\n")
    later = STAT.replace(" 150 50 ", " 250 120 ")
    b = parse_process_sample(f"P vip-master 100 200000200 5|{later}\nU 1002.00 3.0\n")
    assert a["processes"]["vip-master"] == {"ticks": 200, "run_ns": 100, "wait_ns": 200}
    usage = process_usage(a, b, 100)
    assert usage["cpus_used"] == pytest.approx(0.85) and usage["runqueue_wait_cpus"] == pytest.approx(0.1)
    host = parse_host_sample(f"{STAT}\n{STAT}\n\nU 5.5 1\n")
    assert host == {"t": 5.5, "ticks": 420, "processes": 2}


def test_a_generator_is_saturated_at_90_percent_of_its_cpus_used_or_wanted():
    busy = generator_cpu({"processes": ["w"], "seconds": 10, "cpus_used": 0.95, "runqueue_wait_cpus": 0.0}, 1)
    assert busy["cpu_saturated"] and busy["cpu_fraction"] == 0.95
    starved = generator_cpu({"processes": ["w"], "seconds": 10, "cpus_used": 0.6, "runqueue_wait_cpus": 0.35}, 1)
    assert starved["cpu_saturated"] and starved["cpu_wanted_fraction"] == 0.95
    idle = generator_cpu({"processes": ["w"], "seconds": 10, "cpus_used": 0.6, "runqueue_wait_cpus": 0.1}, 2)
    assert idle["cpu_saturated"] is False
    assert generator_cpu(None, 1)["cpu_saturated"] is None


def test_locust_processes_report_their_own_cpu(smoke):
    processes = json.loads(smoke["direct_cpu.json"])
    assert {p["role"] for p in processes} == {"master", "worker"}
    cpu = locust_generator_cpu(processes, shared=True)
    assert cpu["cpus_allowed"] == 1 and cpu["cpus_used"] > 0.3
    per_host = locust_generator_cpu(processes + [{**processes[0], "host": "foundation5", "cpu_s": 0.1}], shared=False)
    assert set(per_host["per_host"]) == {"client", "foundation5"}
    assert per_host["cpus_used"] == per_host["per_host"]["client"]["cpus_used"]


def test_load_window_starts_with_users_running():
    assert load_running({"User Count": "20", "Total Request Count": "0"})
    assert not load_running({"User Count": "0", "Total Request Count": "500"})   # after the run
    assert not load_running(None)


# ----- the generator-bound verdict and the ratios' flags --------------------------------

def phases_with(reference_rps, wrk_rps, *, cpu_fraction=0.5, loop="closed", rate=None):
    cpu = generator_cpu({"processes": ["w"], "seconds": 10, "cpus_used": cpu_fraction, "runqueue_wait_cpus": 0}, 1)
    phases = {"reference": {"requests_per_s": reference_rps}, "wrk": {"requests_per_s": wrk_rps},
              "reference_direct": {"requests_per_s": 4000.0}, "wrk_direct": {"requests_per_s": 4400.0},
              "vip": {"requests_per_s": 900.0, "p50_ms": 3.0, "p95_ms": 9.0, "loop": loop, "rate_due": rate},
              "direct": {"requests_per_s": 1000.0, "p50_ms": 1.0, "p95_ms": 3.0, "loop": loop, "rate_due": rate}}
    return phases, cpu


def test_a_phase_is_generator_bound_below_0_8_of_wrk_or_with_its_cpu_saturated():
    phases, cpu = phases_with(700.0, 1000.0)
    verdict = generator_verdict("vip", phases, cpu)
    assert verdict["generator_bound"] and verdict["locust_over_wrk_requests_per_s"] == 0.7
    assert verdict["compared_with"] == "reference / wrk" and "0.70 x wrk" in verdict["reasons"][0]
    phases, cpu = phases_with(900.0, 1000.0)
    assert not generator_verdict("vip", phases, cpu)["generator_bound"]
    # the direct phase is compared on its own target
    assert generator_verdict("direct", phases, cpu)["compared_with"] == "reference_direct / wrk_direct"
    phases, cpu = phases_with(900.0, 1000.0, cpu_fraction=0.93)
    saturated = generator_verdict("vip", phases, cpu)
    assert saturated["generator_bound"] and "CPU 93% used" in saturated["reasons"][0]
    # open loop: bound when its rate is near what locust can send at all on that target
    phases, cpu = phases_with(700.0, 1000.0, loop="open", rate=600.0)
    assert generator_verdict("vip", phases, cpu)["generator_bound"]
    phases, cpu = phases_with(700.0, 1000.0, loop="open", rate=300.0)
    assert not generator_verdict("vip", phases, cpu)["generator_bound"]


def test_ratios_from_generator_bound_phases_are_flagged():
    phases, cpu = phases_with(700.0, 1000.0)
    for name in ("vip", "direct", "reference", "reference_direct"):
        phases[name]["generator"] = generator_verdict(name, phases, cpu)
    out = ratios({**phases, "wrk": {**phases["wrk"], "p50_ms": 2.0, "p95_ms": 4.0},
                  "wrk_direct": {**phases["wrk_direct"], "p50_ms": 1.0, "p95_ms": 2.0}})
    assert out["ratios_flags"]["vip_over_direct_requests_per_s"] == "generator_bound"
    assert out["ratios_flags"]["vip_over_direct_p95"] == "generator_bound"
    assert "wrk_vip_over_direct_requests_per_s" not in out["ratios_flags"]
    assert out["wrk_vip_over_direct_p50"] == 2.0
    phases, cpu = phases_with(950.0, 1000.0)
    for name in ("vip", "direct", "reference", "reference_direct"):
        phases[name]["generator"] = generator_verdict(name, phases, cpu)
    assert ratios(phases)["ratios_flags"] == {}


def test_report_says_which_phases_are_generator_bound(smoke):
    summary = summary_of(smoke)
    summary["phases"]["vip"]["generator"]["generator_bound"] = True
    summary["generator_bound_phases"] = ["vip"]
    summary["ratios"]["ratios_flags"] = {"vip_over_direct_requests_per_s": "generator_bound"}
    page = render_html(summary, {})
    assert "Generator-bound phases: vip" in page and "vip (generator-bound)" in page
    assert re.search(r"<td>vip_over_direct_requests_per_s</td><td>[0-9.]+</td><td>generator_bound</td>", page)


# ----- open loop --------------------------------------------------------------------------

def test_per_second_rows_are_keyed_as_recorded():
    seconds = json.dumps({"100": {"ok": 3, "failed": 1, "ms": {"2": 2, "900": 2}, "late": 2},
                          "102": {"ok": 1, "failed": 0, "ms": {"3": 1}}})
    rows = per_second_table(seconds, 99.5, key="due")
    assert [r["second"] for r in rows] == [100, 101, 102]
    assert rows[0] == {"second": 100, "s_into_phase": 0.5, "key": "due", "requests": 4, "failed": 1,
                       "p50_ms": 2.0, "p95_ms": 900.0, "p99_ms": 900.0, "max_ms": 900.0, "sent_late": 2}
    assert rows[1]["requests"] == 0 and rows[1]["p50_ms"] is None
    done = completed_series(json.dumps({"100": {"ok": 2}, "102": {"failed": 1}}))
    assert [(s.t, s.requests_per_s, s.failures_per_s) for s in done] == [(101.0, 2.0, 0.0), (102.0, 0.0, 0.0),
                                                                        (103.0, 1.0, 1.0)]


def workload_python(code: str, **env) -> str:
    """Run code in a fresh python that imports the locustfile (locust patches its process with gevent)."""
    environment = {**os.environ, **{f"HACONFORM_PERF_{k}": str(v) for k, v in env.items()}}
    done = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(WORKLOAD.parent)!r})\n"
                           "import workload as w\n" + code], capture_output=True, text=True, env=environment,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_open_loop_shares_the_rate_by_weight_and_workers():
    out = workload_python(
        "print(w.class_interval(w.DynamicPageVisitor, 1000, [], 2), w.class_interval(w.Uploader, 1000, [], 2),"
        " w.class_interval(w.DynamicPageVisitor, 1000, ['DynamicPageVisitor'], 1))\n"
        "s = w.Schedule(0.1, 100.0)\n"
        "print(s.take(), s.take(), s.backlog(100.35), s.backlog(99.0))")
    intervals, schedule = out.splitlines()
    dynamic, upload, alone = map(float, intervals.split())
    # 1000/s over 2 workers, dynamic pages 6/10 of the requests: 300/s each; an upload is 2 requests, 1/10
    assert dynamic == pytest.approx(1 / 300) and upload == pytest.approx(2 / 50) and alone == pytest.approx(1 / 1000)
    assert schedule.split() == ["100.0", "100.1", "2", "0"]


class StallingServer(BaseHTTPRequestHandler):
    """Answers at once, except that from 1 s after the first request, for 1 s, every request
    waits for the end of that second: an outage the clients wait through."""
    first: float | None = None

    def do_GET(self):
        now = time.monotonic()
        cls = type(self)
        cls.first = cls.first or now
        stall_from, stall_to = cls.first + 1.0, cls.first + 2.0
        if stall_from <= now < stall_to:
            time.sleep(stall_to - now)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Real-Server", "stub")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def run_workload_against_stub(tmp_path, rate: float) -> dict:
    handler = type("Stall", (StallingServer,), {"first": None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path / f"rate{rate:g}"
    try:
        env = {**os.environ, "HACONFORM_PERF_RATE": str(rate), "HACONFORM_PERF_OUT": str(out),
               "HACONFORM_PERF_CLASSES": "DynamicPageVisitor"}
        done = subprocess.run([sys.executable, "-m", "locust", "-f", str(WORKLOAD), "--headless", "-u", "4",
                               "-r", "4", "-t", "4s", "--stop-timeout", "2", "--only-summary", "--loglevel",
                               "WARNING", "--exit-code-on-error", "0", "--host",
                               f"http://127.0.0.1:{server.server_address[1]}", "--json-file", f"{out}_final",
                               "DynamicPageVisitor"], capture_output=True, text=True, env=env, timeout=90)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-2000:]
    return {"seconds": json.loads(Path(f"{out}_seconds.json").read_text()),
            "workers": json.loads(Path(f"{out}_workers.json").read_text()),
            "final": json.loads(Path(f"{out}_final.json").read_text())}


def test_open_loop_times_requests_from_when_they_were_due(tmp_path):
    """A 1-second stall, 4 users.  Closed loop: only the 4 requests in flight see it, the rest
    were never sent (coordinated omission).  Open loop at 40/s: the ~40 requests due during
    the stall wait for it, and their latency, counted from when they were due, says so."""
    closed = run_workload_against_stub(tmp_path, 0)
    opened = run_workload_against_stub(tmp_path, 40)
    assert opened["workers"]["mode"] == "open" and closed["workers"]["mode"] == "closed"

    def slow(run):
        return sum(n for second in run["seconds"].values() for ms, n in second["ms"].items() if float(ms) >= 300)

    assert slow(closed) <= 4
    assert slow(opened) >= 15
    # the rate held: about 40 requests due in every whole second of the run, stall or not
    due = [s["ok"] + s["failed"] for s in list(opened["seconds"].values())[1:-1]]
    assert due and all(35 <= n <= 45 for n in due), due
    # locust's own figures carry the latency from due time too
    assert max(e["max_response_time"] for e in opened["final"]) >= 700


@pytest.fixture(scope="module")
def crash_open():
    return recorded("crash_open")


def test_open_loop_crash_shows_the_wait_of_the_requests_due_during_the_failover(crash, crash_open):
    """The same director crash, closed loop (20 users, timed from sending) and open loop
    (1000 requests/s due, timed from due time): in closed loop only the 20 requests in flight
    saw the outage; in open loop every request due during it did."""
    summary = json.loads(crash_open["summary.json"])
    injected = summary["fault"]["injected_at"]
    phase = phase_summary("fault", crash_open)
    assert (phase["loop"], phase["per_second_key"], phase["rate_due"]) == ("open", "due", 1000.0)
    rows = per_second_table(crash_open["fault_seconds.json"], summary["timing"]["fault"]["started"], key="due")
    # the schedule held through the outage: every whole second had its requests due
    assert all(r["requests"] >= 900 for r in rows[1:-1])
    due_after_crash = [r for r in rows if injected <= r["second"] < injected + 5]
    assert due_after_crash and min(r["p50_ms"] for r in due_after_crash) >= 1000
    assert all(r["sent_late"] > 0 for r in due_after_crash)
    well_before = [r for r in rows if r["second"] < injected - 2]
    assert max(r["p50_ms"] for r in well_before) < 100
    # nothing was answered for a while after the crash: by completion second
    assert phase["silent_windows"] and phase["silent_windows"][0]["start"] >= injected - 1.0

    def waited(files, ms=1000):
        seconds = json.loads(files["fault_seconds.json"]).values()
        return sum(n for s in seconds for bucket, n in s["ms"].items() if float(bucket) >= ms)

    assert waited(crash) <= 20 * 2                   # the closed loop's users, about once each
    assert waited(crash_open) >= 50 * waited(crash)  # every request due during the failover


# ----- an existing deployment: the suites' opt-in, the host's python, private work directories ---------------

def test_a_perf_fault_against_ssh_needs_allow_destructive():
    from haconform.perf.run import read_only_refusal

    for fault in ("standby", "haproxy-stop", "crash"):
        refused = read_only_refusal(target_kind="ssh", destructive_allowed=False, fault=fault, placement="auto")
        assert refused and refused.startswith(f"--perf-fault {fault} injects a fault") and \
            "needs --allow-destructive" in refused and "fix: add --allow-destructive" in refused, refused
        assert read_only_refusal(target_kind="ssh", destructive_allowed=True, fault=fault, placement="auto") is None
        assert read_only_refusal(target_kind="lab", destructive_allowed=True, fault=fault, placement="auto") is None
    moved = read_only_refusal(target_kind="ssh", destructive_allowed=False, fault=None, placement="0:1")
    assert moved and moved.startswith("--perf-placement 0:1 moves the deployment's processes"), moved
    for placement in ("auto", "none", "0:"):    # the generator's own CPUs only, or none: nothing of the deployment
        assert read_only_refusal(target_kind="ssh", destructive_allowed=False, fault=None, placement=placement) is None


class UntouchableMachine:
    """A client host that fails the test if the run sends it anything."""
    name = "client"

    def argv(self):
        return ["nsenter", "-t", "1", "--"]

    def __getattr__(self, name):
        raise AssertionError(f"the refused run used the client host: {name}")


def test_run_perf_refuses_a_fault_on_ssh_before_anything_starts(tmp_path):
    from haconform.perf.run import PerfOptions, run_perf

    class Target:
        kind, destructive_allowed = "ssh", False

    class Deployment:
        target = Target()
        client = UntouchableMachine()

    out_dir = tmp_path / "run"
    with pytest.raises(HaconformError, match=r"--perf-fault crash .* needs --allow-destructive"):
        run_perf(Deployment(), PerfOptions(fault="crash"), out_dir)
    assert not out_dir.exists()


def test_the_perf_session_refuses_a_fault_on_ssh_with_one_usage_error(pytester):
    pytester.makeconftest("from perf.conftest import pytest_configure  # noqa: F401\n")
    pytester.makepyfile(test_nothing="def test_nothing():\n    raise AssertionError('the session started')\n")
    documented = Path(__file__).resolve().parent.parent / "fixtures" / "documented"
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--config", str(documented),
                                          "--history-dir", str(pytester.path / "h"),
                                          "--target", "ssh", "--perf-fault", "crash")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = result.stderr.str()
    assert "--perf-fault crash injects a fault into the deployment" in errors and "--allow-destructive" in errors, \
        errors
    assert "the session started" not in result.stdout.str()


def ssh_target_machine(client_access):
    from haconform.inventory import HostAccess, Inventory
    from haconform.targets.base import Machine
    from haconform.targets.inventory_target import InventoryTarget
    from haconform.topology import load_topology

    topology = load_topology()
    hosts = {name: HostAccess(name, "none") for name in topology.hosts}
    hosts["client"] = client_access
    target = InventoryTarget(topology, Inventory(path=Path("/inv.yaml"), stage="stage5", hosts=hosts))
    return Machine(target, topology.host("client"))


def test_a_client_host_over_ssh_runs_python3_never_the_harness_python():
    from haconform.inventory import HostAccess
    from haconform.perf.load import generator_python

    over_ssh = ssh_target_machine(HostAccess("client", "ssh", address="10.9.0.5", user="root", sudo=False))
    assert sys.executable in over_ssh.program(["true"])   # the prefix runs ssh_exec.py here: not the host's python
    assert generator_python(over_ssh, None) == "python3"
    assert ClientHost(over_ssh, None).python == "python3"
    assert generator_python(over_ssh, "/opt/venv/bin/python") == "/opt/venv/bin/python"
    in_netns = ssh_target_machine(HostAccess("client", "netns", netns="hcclient"))
    assert generator_python(in_netns, None) == sys.executable
    assert generator_python(FakeMachine(), None) == sys.executable     # a lab host shares this machine's files
    shutil.rmtree(over_ssh.target._control_path, ignore_errors=True)


class LocalMachine:
    """A generator host that is this machine's own shell (commands really run; files really land)."""
    name = "client"
    transport_kind = "local"

    def __init__(self):
        self.commands: list[str] = []

    def program(self, argv):
        return list(argv)

    def execute(self, command: str):
        self.commands.append(command)
        done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=30)
        return FakeResult(done.returncode, done.stdout, done.stderr, command)

    def succeed(self, command: str) -> str:
        result = self.execute(command)
        assert result.rc == 0, (command, result.stderr)
        return result.stdout

    def write_file(self, path: str, content) -> None:
        Path(path).write_text(content)


@pytest.fixture
def python_with_locust(tmp_path):
    """A stand-in for the host's python: it answers the locust check as a python with locust does."""
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\nexit 0\n")
    python.chmod(0o755)
    return str(python)


def test_each_run_gets_a_private_work_directory_removed_afterwards(python_with_locust):
    first, second = ClientHost(LocalMachine(), python_with_locust), ClientHost(LocalMachine(), python_with_locust)
    first.prepare()
    second.prepare()
    try:
        made = Path(first.workdir)
        assert made != Path(second.workdir) and made.name.startswith("haconform-perf.")
        assert made.is_dir() and made.stat().st_mode & 0o777 == 0o700
        assert (made / "locustfile.py").read_text() == WORKLOAD.read_text()
        assert first.path("vip_stats.csv") == f"{made}/vip_stats.csv"
        assert not any("rm -rf" in c for c in first.machine.commands)   # nothing removed before: nothing guessed
    finally:
        removed = first.cleanup()
        second.cleanup()
    assert removed == str(made) and not made.exists() and first.workdir is None


def test_a_python_without_locust_is_named_with_the_option_to_fix_it(tmp_path):
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\nexit 1\n")
    python.chmod(0o755)
    host = ClientHost(LocalMachine(), str(python))
    with pytest.raises(HaconformError, match="has no locust") as raised:
        host.prepare()
    assert "--perf-python" in str(raised.value)
    assert host.workdir is None
    with pytest.raises(HaconformError, match="does not run"):
        ClientHost(LocalMachine(), str(tmp_path / "missing")).prepare()


def test_run_perf_removes_the_work_directory_and_keeps_its_path(tmp_path, monkeypatch, python_with_locust):
    from haconform.perf import run as run_module

    class Target:
        kind, destructive_allowed = "lab", True

        def describe(self):
            return {"target": "lab"}

    class Deployment:
        target = Target()
        client = LocalMachine()

    seen = {}

    def phases(deployment, options, out_dir, client, workers, placement, *, evidence, progress):
        seen["workdir"] = client.workdir
        assert Path(client.workdir).is_dir()
        return {"run": out_dir.name}, {"vip_stats.csv": "x"}

    monkeypatch.setattr(run_module, "_run_phases", phases)
    monkeypatch.setattr(run_module, "render_html", lambda summary, plots: "<html></html>")
    monkeypatch.setattr(run_module, "plots_for", lambda summary, files: {})
    summary = run_module.run_perf(Deployment(), run_module.PerfOptions(python=python_with_locust, placement="none"),
                                  tmp_path / "run")
    assert summary["workdirs"] == {"client": seen["workdir"]} and not Path(seen["workdir"]).exists()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["workdirs"] == summary["workdirs"]

    def failing(*args, **kwargs):
        seen["failed_in"] = args[3].workdir
        raise RuntimeError("locust phase failed")

    monkeypatch.setattr(run_module, "_run_phases", failing)
    with pytest.raises(RuntimeError):
        run_module.run_perf(Deployment(), run_module.PerfOptions(python=python_with_locust, placement="none"),
                            tmp_path / "run2")
    assert not Path(seen["failed_in"]).exists()


def test_the_uploader_is_left_out_against_ssh_without_allow_destructive():
    from haconform.perf.load import MIXED_CLASSES
    from haconform.perf.run import mixed_classes

    class Target:
        def __init__(self, kind, allowed):
            self.kind, self.destructive_allowed = kind, allowed

    classes, left_out = mixed_classes(Target("ssh", False))
    assert "Uploader" not in classes and set(classes) == set(MIXED_CLASSES) - {"Uploader"}
    assert left_out["Uploader"].startswith("writes to a host: GIFs stored in /var/www/html/upload")
    assert mixed_classes(Target("ssh", True)) == (MIXED_CLASSES, {})
    assert mixed_classes(Target("lab", True)) == (MIXED_CLASSES, {})
