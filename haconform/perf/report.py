"""One self-contained HTML page per perf run: figures, tables and plots (inline SVG)."""

from __future__ import annotations

import html
import io
import json

from .summary import Second

PHASE_TITLES = {
    "direct": "Direct to a real server (no load balancer)",
    "vip": "Through the VIP (HAProxy on the active director)",
    "reference": "Locust, one URL through the VIP (compared with wrk)",
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
pre{background:#f8f8f8;padding:1em;overflow-x:auto;font-size:small} h2{margin-top:2em}"""


def render_html(summary: dict, plots: dict[str, str]) -> str:
    phases = summary.get("phases", {})
    columns = ["phase", "requests", "failures", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms"]
    rows = [{"phase": name, **{c: data.get(c) for c in columns[1:]}} for name, data in phases.items()]
    if "wrk" in phases:
        rows = [r if r["phase"] != "wrk" else {**r, "failures": phases["wrk"].get("errors")} for r in rows]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>haconform perf {summary.get('run')}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>haconform perf run {html.escape(str(summary.get('run')))}</h1>",
             f"<p>target {html.escape(json.dumps(summary.get('target')))}; seed {summary.get('seed')}; "
             f"{summary.get('options', {}).get('users')} users, {summary.get('options', {}).get('workers')} "
             f"locust workers in the client host</p>",
             "<h2>Figures</h2>", _table(rows, columns),
             "<h2>Ratios</h2>", _table([summary.get("ratios", {})], list(summary.get("ratios", {}).keys()))]
    fault = summary.get("fault")
    if fault:
        shown = {k: v for k, v in fault.items() if not isinstance(v, (list, dict))}
        parts += ["<h2>Fault</h2>", _table([shown], list(shown)),
                  "<pre>" + html.escape(json.dumps({k: v for k, v in fault.items() if isinstance(v, (list, dict))},
                                                   indent=1, default=str)) + "</pre>"]
    for name, svg in plots.items():
        parts += [f"<h2>{html.escape(PHASE_TITLES.get(name, name))}</h2>", svg]
        served = phases.get(name, {}).get("served_by")
        if served:
            parts.append("<p>who answered (X-Real-Server), per request name:</p><pre>"
                         + html.escape(json.dumps(served, indent=1)) + "</pre>")
    parts += ["<h2>Options</h2><pre>" + html.escape(json.dumps(summary.get("options"), indent=1)) + "</pre>",
              "</body></html>"]
    return "\n".join(parts)
