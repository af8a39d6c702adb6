"""What a run's files say, as data: no I/O here, so recorded CSVs test it.

Locust writes per phase:
    <phase>_stats.csv          totals per request name and an 'Aggregated' row
    <phase>_stats_history.csv  one row per second per name (current rate and
                               percentiles over locust's recent window, totals)
    <phase>_failures.csv       failures grouped by request and error
and the workload writes <phase>_seconds.json (exact per second: by completion in
closed loop, by due second in open loop), <phase>_completed.json (per completion
second) and <phase>_workers.json (mode, rate, requests per worker host).

A phase is generator_bound when locust, not the system under test, set its
figures: locust reached less than GENERATOR_BOUND_RATIO of wrk's rate on the same
URL and target, or its processes used (or waited for) >= 90 % of the CPUs they
may use.  Ratios computed from such a phase say so in ratios_flags.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

from ..redaction import redact_obj

AGGREGATED = "Aggregated"
GENERATOR_BOUND_RATIO = 0.8
GENERATOR_BOUND = "generator_bound"


def _number(value: str | None) -> float | None:
    if value in (None, "", "N/A"):
        return None
    return float(value)


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text or "")))


def percentile(histogram: dict[float, int], fraction: float) -> float | None:
    """The response time (ms) below which `fraction` of requests fell, from locust's buckets."""
    total = sum(histogram.values())
    if not total:
        return None
    wanted = fraction * total
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= wanted:
            return float(bucket)
    return float(max(histogram))


def entries_summary(entries: list[dict]) -> dict:
    """Totals over locust's final stats entries (its --json-file): written at shutdown, so
    complete, unlike the CSV totals, which are rewritten once a second and lag the end."""
    requests = sum(e["num_requests"] for e in entries)
    failures = sum(e["num_failures"] for e in entries)
    histogram: dict[float, int] = {}
    for entry in entries:
        for bucket, count in entry["response_times"].items():
            histogram[float(bucket)] = histogram.get(float(bucket), 0) + count
    started = min((e["start_time"] for e in entries), default=0.0)
    last = max((e["last_request_timestamp"] or 0.0 for e in entries), default=0.0)
    seconds = last - started if last and started else 0.0
    total_time = sum(e["total_response_time"] for e in entries)
    return {
        "requests": requests,
        "failures": failures,
        "failure_ratio": round(failures / requests, 6) if requests else None,
        "requests_per_s": round(requests / seconds, 2) if seconds > 0 else None,
        "p50_ms": percentile(histogram, 0.50), "p95_ms": percentile(histogram, 0.95),
        "p99_ms": percentile(histogram, 0.99),
        "mean_ms": round(total_time / requests, 3) if requests else None,
        "max_ms": round(max((e["max_response_time"] for e in entries), default=0.0), 3),
        "seconds": round(seconds, 3),
    }


@dataclass(frozen=True)
class Second:
    """One second of a locust run, from the history's Aggregated rows."""
    t: float                 # unix time
    users: int
    requests_per_s: float
    failures_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    total_requests: int
    total_failures: int


def history_series(history_text: str) -> list[Second]:
    series = []
    for row in _rows(history_text):
        if row.get("Name") != AGGREGATED:
            continue
        series.append(Second(
            t=float(row["Timestamp"]), users=int(row["User Count"]),
            requests_per_s=float(row["Requests/s"]), failures_per_s=float(row["Failures/s"]),
            p50_ms=_number(row["50%"]), p95_ms=_number(row["95%"]), p99_ms=_number(row["99%"]),
            total_requests=int(row["Total Request Count"]), total_failures=int(row["Total Failure Count"])))
    return series


def second_series(seconds_text: str) -> list[Second]:
    """Exact per-second figures from the workload's OUT_seconds.json; a second in which
    nothing completed is there with zero requests (a hang shows as a gap, not as nothing)."""
    observed = {int(t): v for t, v in json.loads(seconds_text or "{}").items()}
    series: list[Second] = []
    total_requests = total_failures = 0
    for t in range(min(observed, default=0), max(observed, default=-1) + 1):
        data = observed.get(t, {"ok": 0, "failed": 0, "ms": {}})
        histogram = {float(k): v for k, v in data["ms"].items()}
        done = data["ok"] + data["failed"]
        total_requests += done
        total_failures += data["failed"]
        series.append(Second(t=float(t + 1), users=0, requests_per_s=float(done),
                             failures_per_s=float(data["failed"]),
                             p50_ms=percentile(histogram, 0.50), p95_ms=percentile(histogram, 0.95),
                             p99_ms=percentile(histogram, 0.99),
                             total_requests=total_requests, total_failures=total_failures))
    return series


def completed_series(completed_text: str) -> list[Second]:
    """Per completion second (OUT_completed.json): what was answered, and failed, when."""
    observed = {int(t): v for t, v in json.loads(completed_text or "{}").items()}
    series: list[Second] = []
    total_requests = total_failures = 0
    for t in range(min(observed, default=0), max(observed, default=-1) + 1):
        data = observed.get(t, {})
        done = data.get("ok", 0) + data.get("failed", 0)
        total_requests += done
        total_failures += data.get("failed", 0)
        series.append(Second(t=float(t + 1), users=0, requests_per_s=float(done),
                             failures_per_s=float(data.get("failed", 0)), p50_ms=None, p95_ms=None, p99_ms=None,
                             total_requests=total_requests, total_failures=total_failures))
    return series


def per_second_table(seconds_text: str, started: float, *, key: str = "completion") -> list[dict]:
    """One row per second of the phase: requests, failures and latency percentiles of the
    requests that completed in it (closed loop) or were due in it (open loop)."""
    observed = {int(t): v for t, v in json.loads(seconds_text or "{}").items()}
    rows = []
    for t in range(min(observed, default=0), max(observed, default=-1) + 1):
        data = observed.get(t, {"ok": 0, "failed": 0, "ms": {}})
        histogram = {float(k): v for k, v in data["ms"].items()}
        rows.append({"second": t, "s_into_phase": round(t - started, 1), "key": key,
                     "requests": data["ok"] + data["failed"], "failed": data["failed"],
                     "p50_ms": percentile(histogram, 0.50), "p95_ms": percentile(histogram, 0.95),
                     "p99_ms": percentile(histogram, 0.99), "max_ms": max(histogram, default=None),
                     "sent_late": data.get("late", 0)})
    return rows


def failure_windows(series: list[Second]) -> list[dict]:
    """Runs of seconds in which the total failure count grew (a second covers (t-1, t])."""
    windows: list[dict] = []
    previous_total = 0
    for second in series:
        new = second.total_failures - previous_total
        previous_total = max(previous_total, second.total_failures)
        if new <= 0:
            continue
        if windows and windows[-1]["end"] >= second.t - 1.0:
            windows[-1]["end"] = second.t
            windows[-1]["failures"] += new
        else:
            windows.append({"start": second.t - 1.0, "end": second.t, "failures": new})
    for window in windows:
        window["seconds"] = window["end"] - window["start"]
    return windows


def silent_windows(series: list[Second]) -> list[dict]:
    """Runs of seconds in which no request succeeded, whether requests failed or hung:
    an outage as the users saw it (a second covers (t-1, t])."""
    windows: list[dict] = []
    for second in series:
        if second.requests_per_s - second.failures_per_s > 0:
            continue
        if windows and windows[-1]["end"] == second.t - 1.0:
            windows[-1]["end"] = second.t
        else:
            windows.append({"start": second.t - 1.0, "end": second.t})
    for window in windows:
        window["seconds"] = window["end"] - window["start"]
    return windows


def failure_kinds(failures_text: str) -> list[dict]:
    return [{"method": r.get("Method"), "name": r.get("Name"), "error": r.get("Error"),
             "occurrences": int(r.get("Occurrences") or 0)} for r in _rows(failures_text)]


def phase_summary(phase: str, files: dict[str, str]) -> dict:
    """Totals, per-request figures, per-second windows and who answered, for one locust phase."""
    final = files.get(f"{phase}_final.json")
    if not final:
        raise ValueError(f"{phase}_final.json (locust's --json-file) is missing")
    entries = json.loads(final)
    history = history_series(files.get(f"{phase}_stats_history.csv", ""))
    exact = files.get(f"{phase}_seconds.json")
    series = second_series(exact) if exact else history
    workers = json.loads(files.get(f"{phase}_workers.json") or "{}")
    open_loop = workers.get("mode") == "open"
    done = files.get(f"{phase}_completed.json")
    # an outage as the users saw it: by completion second (in open loop, seconds.json is by due second)
    answered = completed_series(done) if open_loop and done else series
    summary = entries_summary(entries)
    by_name: dict[str, list[dict]] = {}
    for entry in entries:
        by_name.setdefault(entry["name"], []).append(entry)
    summary.update({
        "by_request": {name: entries_summary(group) for name, group in sorted(by_name.items())},
        "served_by": json.loads(files.get(f"{phase}_served_by.json") or "{}"),
        "seconds_recorded": len(series),
        "per_second_source": f"{phase}_seconds.json" if exact else f"{phase}_stats_history.csv (locust's window)",
        "per_second_key": ("due" if open_loop else "completion") if exact else "completion",
        "loop": "open" if open_loop else "closed",
        "rate_due": workers.get("rate") if open_loop else None,
        "worker_hosts": workers.get("hosts", {}),
        "peak_users": max((s.users for s in history), default=0),
        "worst_second_p99_ms": max((s.p99_ms for s in series if s.p99_ms is not None), default=None),
        "failure_windows": failure_windows(answered),
        "silent_windows": silent_windows(answered),
        "failure_kinds": failure_kinds(files.get(f"{phase}_failures.csv", "")),
    })
    if open_loop and exact:
        observed = json.loads(exact).values()
        summary["sent_late"] = sum(v.get("late", 0) for v in observed)
        summary["sent_late_fraction"] = round(summary["sent_late"] / summary["requests"], 4) \
            if summary["requests"] else None
    return redact_obj(summary)   # failure texts quote URLs and errors: it goes into summary.json


def wrk_summary(report: dict) -> dict:
    seconds = report["duration_us"] / 1e6
    errors = sum(report["errors"].values())
    summary = {"requests": report["requests"], "errors": errors, "errors_by_kind": report["errors"],
               "requests_per_s": round(report["requests"] / seconds, 2) if seconds else None,
               "p50_ms": report["latency_ms"]["p50"], "p95_ms": report["latency_ms"]["p95"],
               "p99_ms": report["latency_ms"]["p99"], "mean_ms": report["latency_ms"]["mean"],
               "max_ms": report["latency_ms"]["max"], "url": report.get("url"),
               "connections": report.get("connections"), "threads": report.get("threads"),
               "duration_s": round(seconds, 3),
               # wrk's own CPU, and the SUT's, while it ran
               "wrk_cpu": (report.get("cpu") or {}).get("generator"),
               "sut_cpus_used": (report.get("cpu") or {}).get("sut_cpus_used")}
    return redact_obj(summary)   # it goes into summary.json


def _ratio(a, b) -> float | None:
    return round(a / b, 4) if a is not None and b else None


# Which locust one-URL phase and which wrk phase compare the generators on each target.
COMPARISONS = {"vip": ("reference", "wrk"), "direct": ("reference_direct", "wrk_direct")}
PHASE_TARGET = {"direct": "direct", "reference_direct": "direct", "vip": "vip", "reference": "vip", "fault": "vip"}


def generator_verdict(phase: str, phases: dict[str, dict], cpu: dict | None) -> dict:
    """Whether locust, not the system under test, set this phase's figures.

    Compared with wrk on the same URL and target (the one-URL locust phase against wrk, run
    beside it); the generator's CPU is this phase's own."""
    cpu = cpu or {}
    target = PHASE_TARGET.get(phase)
    reference, wrk = (phases.get(n) for n in COMPARISONS.get(target, (None, None)))
    over_wrk = _ratio(reference.get("requests_per_s"), wrk.get("requests_per_s")) if reference and wrk else None
    reasons = []
    data = phases.get(phase, {})
    if data.get("loop") == "open":
        # an open-loop phase sends at its rate: it is bound when that rate is near what locust can send
        locust_max = reference.get("requests_per_s") if reference else None
        if locust_max and data.get("rate_due") and data["rate_due"] > GENERATOR_BOUND_RATIO * locust_max:
            reasons.append(f"rate {data['rate_due']:g}/s > {GENERATOR_BOUND_RATIO} x locust's closed-loop "
                           f"maximum {locust_max:g}/s on this target")
    elif over_wrk is not None and over_wrk < GENERATOR_BOUND_RATIO:
        reasons.append(f"locust {over_wrk:.2f} x wrk on the same URL (< {GENERATOR_BOUND_RATIO})")
    if cpu.get("cpu_saturated"):
        reasons.append(f"generator CPU {cpu['cpu_fraction']:.0%} used, {cpu.get('cpu_wanted_fraction', 0):.0%} "
                       f"wanted, of {cpu['cpus_allowed']} CPU(s) it may use")
    return {"generator_bound": bool(reasons), "reasons": reasons,
            "locust_over_wrk_requests_per_s": over_wrk,
            "compared_with": f"{COMPARISONS[target][0]} / {COMPARISONS[target][1]}" if target else None,
            "cpu": cpu}


def ratios(phases: dict[str, dict]) -> dict:
    """The load balancer's cost (VIP vs direct), by locust and by wrk, and locust against wrk
    on the same URL; ratios_flags names every ratio computed from a generator-bound phase."""
    out: dict = {}
    flags: dict = {}

    def bound(*names: str) -> bool:
        return any(phases.get(n, {}).get("generator", {}).get("generator_bound") for n in names)

    # mean too: locust's buckets are whole milliseconds below 100 ms, too coarse for a p50 ratio at 1-2 ms
    def pair(prefix: str, vip: str, direct: str,
             fields=("requests_per_s", "p50_ms", "p95_ms", "p99_ms", "mean_ms")) -> None:
        if vip not in phases or direct not in phases:
            return
        for name in fields:
            key = f"{prefix}vip_over_direct_{name if name == 'requests_per_s' else name[:-3]}"
            out[key] = _ratio(phases[vip].get(name), phases[direct].get(name))
            if bound(vip, direct):
                flags[key] = GENERATOR_BOUND

    pair("", "vip", "direct")
    pair("reference_", "reference", "reference_direct")
    pair("wrk_", "wrk", "wrk_direct")
    for suffix, (reference, wrk) in (("", COMPARISONS["vip"]), ("_direct", COMPARISONS["direct"])):
        if reference in phases and wrk in phases:
            out[f"locust_over_wrk{suffix}_requests_per_s"] = _ratio(phases[reference]["requests_per_s"],
                                                                   phases[wrk]["requests_per_s"])
    out["ratios_flags"] = flags
    return out


REQUIRED_PHASE_FIELDS = ("requests", "requests_per_s", "p50_ms", "p95_ms", "p99_ms")
REQUIRED_PHASES = ("direct", "vip", "reference", "wrk", "reference_direct", "wrk_direct")
REQUIRED_RATIOS = ("vip_over_direct_requests_per_s", "locust_over_wrk_requests_per_s",
                   "locust_over_wrk_direct_requests_per_s", "wrk_vip_over_direct_requests_per_s")


def incomplete(summary: dict) -> list[str]:
    """What a summary lacks or has at zero (empty: complete)."""
    problems = []
    for phase in REQUIRED_PHASES:
        data = summary.get("phases", {}).get(phase)
        if not data:
            problems.append(f"phase {phase} missing")
            continue
        for name in REQUIRED_PHASE_FIELDS:
            value = data.get(name)
            if not value:
                problems.append(f"{phase}.{name} is {value!r}")
        if phase not in ("wrk", "wrk_direct") and "generator" not in data:
            problems.append(f"{phase}.generator (the generator-bound verdict) missing")
    for name in REQUIRED_RATIOS:
        if not summary.get("ratios", {}).get(name):
            problems.append(f"ratios.{name} is {summary.get('ratios', {}).get(name)!r}")
    if "ratios_flags" not in summary.get("ratios", {}):
        problems.append("ratios.ratios_flags missing")
    for name in ("seed", "options", "started", "placement"):
        if summary.get(name) in (None, ""):
            problems.append(f"{name} missing")
    return problems
