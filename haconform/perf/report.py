"""One self-contained HTML page per perf run: figures, tables and plots (inline SVG)."""

from __future__ import annotations

import html
import io
import json

from ..redaction import redact
from .summary import Second

PHASE_TITLES = {
    "direct": "Direct to a real server (no load balancer)",
    "vip": "Through the VIP (HAProxy on the active director)",
    "reference": "Locust, one URL through the VIP (compared with wrk)",
    "reference_direct": "Locust, one URL straight to the real server (compared with wrk)",
    "fault": "Through the VIP with a fault mid-run",
}


WINDOW_COLORS = ("tab:gray", "tab:red", "tab:orange", "tab:purple")


def phase_plot_svg(series: list[Second], *, title: str, started: float,
                   windows: list[tuple[float, float, str]] = (), marks: list[tuple[float, str]] = ()) -> str:
    """requests/s, latency percentiles and failures/s over time; shaded windows, marked instants."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    t = [s.t - started for s in series]
    fig, (rate, latency, failures) = plt.subplots(3, 1, sharex=True, figsize=(9, 6.5))
    rate.plot(t, [s.requests_per_s for s in series], color="tab:blue")
    rate.set_ylabel("requests/s")
    for name, attr, color in (("p50", "p50_ms", "tab:green"), ("p95", "p95_ms", "tab:orange"),
                              ("p99", "p99_ms", "tab:red")):
        latency.plot(t, [getattr(s, attr) if getattr(s, attr) is not None else float("nan") for s in series],
                     label=name, color=color)
    latency.set_ylabel("latency ms (log)")
    latency.set_yscale("log")
    latency.legend(loc="upper left", fontsize="small")
    failures.bar(t, [s.failures_per_s for s in series], width=0.9, color="tab:red")
    failures.set_ylabel("failures/s")
    failures.set_xlabel("seconds since the phase started")
    colors = {}
    for axis in (rate, latency, failures):
        axis.grid(alpha=0.3)
        labelled = set()
        for start, end, label in windows:
            color = colors.setdefault(label, WINDOW_COLORS[len(colors) % len(WINDOW_COLORS)])
            axis.axvspan(start - started, end - started, color=color, alpha=0.15,
                         label=label if axis is rate and label not in labelled else None)
            labelled.add(label)
        for when, label in marks:
            axis.axvline(when - started, color="black", linestyle="--", linewidth=0.8)
    for when, label in marks:
        rate.annotate(label, (when - started, 1.0), xycoords=("data", "axes fraction"),
                      fontsize="small", rotation=90, va="top", ha="right")
    if windows:
        rate.legend(loc="lower left", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px} table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} th{background:#f4f4f4}
pre{background:#f8f8f8;padding:1em;overflow-x:auto;font-size:small} h2{margin-top:2em}
.warn{background:#fff3cd;padding:.6em;border:1px solid #e0c060}"""


def _fmt(value) -> str:
    return "" if value is None else str(value)


def generator_rows(phases: dict) -> list[dict]:
    rows = []
    for name, data in phases.items():
        verdict = data.get("generator")
        cpu = (verdict or {}).get("cpu") or data.get("wrk_cpu") or {}
        sut = data.get("sut_cpus_used") or {}
        rows.append({"phase": name, "generator": "wrk" if name.startswith("wrk") else "locust",
                     "generator_bound": "GENERATOR-BOUND" if (verdict or {}).get("generator_bound") else
                     ("" if verdict else "-"),
                     "locust/wrk same URL": _fmt((verdict or {}).get("locust_over_wrk_requests_per_s")),
                     "generator CPUs used": _fmt(cpu.get("cpus_used")),
                     "of CPUs allowed": _fmt(cpu.get("cpus_allowed")),
                     "runqueue wait (CPUs)": _fmt(cpu.get("runqueue_wait_cpus")),
                     "SUT CPUs used": ", ".join(f"{h} {v}" for h, v in sut.items() if v is not None),
                     "why": "; ".join((verdict or {}).get("reasons", []))})
    return rows


def render_html(summary: dict, plots: dict[str, str]) -> str:
    phases = summary.get("phases", {})
    columns = ["phase", "requests", "failures", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms"]
    rows = []
    for name, data in phases.items():
        bound = data.get("generator", {}).get("generator_bound")
        row = {"phase": name + (" (generator-bound)" if bound else ""), **{c: data.get(c) for c in columns[1:]}}
        if name.startswith("wrk"):
            row["failures"] = data.get("errors")
        rows.append(row)
    ratio_values = {k: v for k, v in summary.get("ratios", {}).items() if k != "ratios_flags"}
    flags = summary.get("ratios", {}).get("ratios_flags", {})
    ratio_rows = [{"ratio": k, "value": v, "flag": flags.get(k, "")} for k, v in ratio_values.items()]
    options = summary.get("options", {})
    placement = summary.get("placement") or {}
    loop = summary.get("loop") or {}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>haconform perf {summary.get('run')}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>haconform perf run {html.escape(str(summary.get('run')))}</h1>",
             f"<p>target {html.escape(json.dumps(summary.get('target')))}; seed {summary.get('seed')}; "
             f"{options.get('users')} users, {options.get('workers')} "
             f"locust workers in the client host"
             + (f", more in {html.escape(', '.join(options.get('worker_hosts') or []))}"
                if options.get("worker_hosts") else "") + "</p>",
             f"<p>placement: {html.escape(str(placement.get('how')))}; "
             f"loop: {html.escape(str(loop.get('mode')))}"
             + (f" at {loop.get('rate')} requests/s due, each timed from its due time" if loop.get("rate") else
                ", each request timed from when it was sent") + "</p>"]
    bound = summary.get("generator_bound_phases") or []
    if bound:
        parts.append(f"<p class='warn'><b>Generator-bound phases: {html.escape(', '.join(bound))}.</b> "
                     "Their figures describe locust on this machine, not the system under test; the ratios "
                     "computed from them are flagged below.</p>")
    parts += ["<h2>Figures</h2>", _table(rows, columns),
              "<h2>Ratios</h2>", _table(ratio_rows, ["ratio", "value", "flag"]),
              "<h2>Generator</h2>", _table(generator_rows(phases), list(generator_rows(phases)[0]) if phases else [])]
    fault = summary.get("fault")
    if fault:
        shown = {k: v for k, v in fault.items() if not isinstance(v, (list, dict))}
        parts += ["<h2>Fault</h2>", _table([shown], list(shown))]
        per_second = fault.get("per_second") or []
        if per_second:
            key = fault.get("per_second_key", "completion")
            parts += [f"<p>per second of the phase, the requests that "
                      f"{'were due' if key == 'due' else 'completed'} in it:</p>",
                      _table(per_second, ["s_into_phase", "requests", "failed", "p50_ms", "p95_ms", "p99_ms",
                                          "max_ms", "sent_late"])]
        parts.append("<pre>" + html.escape(json.dumps({k: v for k, v in fault.items()
                                                      if isinstance(v, (list, dict)) and k != "per_second"},
                                                     indent=1, default=str)) + "</pre>")
    for name, svg in plots.items():
        parts += [f"<h2>{html.escape(PHASE_TITLES.get(name, name))}</h2>", svg]
        served = phases.get(name, {}).get("served_by")
        if served:
            parts.append("<p>who answered (X-Real-Server), per request name:</p><pre>"
                         + html.escape(json.dumps(served, indent=1)) + "</pre>")
    parts += ["<h2>Options</h2><pre>" + html.escape(json.dumps(summary.get("options"), indent=1)) + "</pre>",
              "</body></html>"]
    return redact("\n".join(parts))   # run.py writes it as report.html
