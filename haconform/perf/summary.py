"""What a run's files say, as data: no I/O here, so recorded CSVs test it.

Locust writes per phase:
    <phase>_stats.csv          totals per request name and an 'Aggregated' row
    <phase>_stats_history.csv  one row per second per name (current rate and
                               percentiles over locust's recent window, totals)
    <phase>_failures.csv       failures grouped by request and error
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

AGGREGATED = "Aggregated"


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
    summary = entries_summary(entries)
    by_name: dict[str, list[dict]] = {}
    for entry in entries:
        by_name.setdefault(entry["name"], []).append(entry)
    summary.update({
        "by_request": {name: entries_summary(group) for name, group in sorted(by_name.items())},
        "served_by": json.loads(files.get(f"{phase}_served_by.json") or "{}"),
        "seconds_recorded": len(series),
        "per_second_source": f"{phase}_seconds.json" if exact else f"{phase}_stats_history.csv (locust's window)",
        "peak_users": max((s.users for s in history), default=0),
        "worst_second_p99_ms": max((s.p99_ms for s in series if s.p99_ms is not None), default=None),
        "failure_windows": failure_windows(series),
        "silent_windows": silent_windows(series),
        "failure_kinds": failure_kinds(files.get(f"{phase}_failures.csv", "")),
    })
    return summary


def wrk_summary(report: dict) -> dict:
    seconds = report["duration_us"] / 1e6
    errors = sum(report["errors"].values())
    return {"requests": report["requests"], "errors": errors, "errors_by_kind": report["errors"],
            "requests_per_s": round(report["requests"] / seconds, 2) if seconds else None,
            "p50_ms": report["latency_ms"]["p50"], "p95_ms": report["latency_ms"]["p95"],
            "p99_ms": report["latency_ms"]["p99"], "mean_ms": report["latency_ms"]["mean"],
            "max_ms": report["latency_ms"]["max"], "url": report.get("url"),
            "connections": report.get("connections"), "threads": report.get("threads"),
            "duration_s": round(seconds, 3)}


def _ratio(a, b) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def ratios(phases: dict[str, dict]) -> dict:
    """The load balancer's cost (VIP vs direct) and locust against wrk on the same URL."""
    direct, vip = phases.get("direct"), phases.get("vip")
    reference, wrk = phases.get("reference"), phases.get("wrk")
    out = {}
    if direct and vip:
        out["vip_over_direct_requests_per_s"] = _ratio(vip["requests_per_s"], direct["requests_per_s"])
        out["vip_over_direct_p50"] = _ratio(vip["p50_ms"], direct["p50_ms"])
        out["vip_over_direct_p95"] = _ratio(vip["p95_ms"], direct["p95_ms"])
    if reference and wrk:
        out["locust_over_wrk_requests_per_s"] = _ratio(reference["requests_per_s"], wrk["requests_per_s"])
    return out


REQUIRED_PHASE_FIELDS = ("requests", "requests_per_s", "p50_ms", "p95_ms", "p99_ms")
REQUIRED_RATIOS = ("vip_over_direct_requests_per_s", "locust_over_wrk_requests_per_s")


def incomplete(summary: dict) -> list[str]:
    """What a summary lacks or has at zero (empty: complete)."""
    problems = []
    for phase in ("direct", "vip", "reference", "wrk"):
        data = summary.get("phases", {}).get(phase)
        if not data:
            problems.append(f"phase {phase} missing")
            continue
        for name in REQUIRED_PHASE_FIELDS:
            value = data.get(name)
            if not value:
                problems.append(f"{phase}.{name} is {value!r}")
    for name in REQUIRED_RATIOS:
        if not summary.get("ratios", {}).get(name):
            problems.append(f"ratios.{name} is {summary.get('ratios', {}).get(name)!r}")
    for name in ("seed", "options", "started"):
        if summary.get(name) in (None, ""):
            problems.append(f"{name} missing")
    return problems
