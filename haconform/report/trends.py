"""Trends across kept runs, and what changed between two: `haconform report [RESULTS] [--compare A B]`.

Each results/<ts>/ is read for
  - its verdict: verdict.json (written at the end of every conformance session), or,
    for older runs, one built from history.jsonl (same builder, evidence only);
  - its perf figures: summary.json (perf runs): requests/s and percentiles per phase,
    the ratios, the fault's outage.

reports/trends.html plots every figure over the runs (one inline SVG line plot per
figure), the conformance wall time and the perf rates, with a verdict matrix (MUST x
run).  --compare A B prints what changed between two runs: verdicts that flipped, and
figures that moved beyond THRESHOLDS (a relative change AND an absolute floor, per
unit); the same text is a section of the page.  The exit status is 1 when a verdict
flipped from held to broken, else 0: a moved figure is reported, not failed.

Like with like: each run records what it ran against (RUN_CONTEXT: the target, the
stage mode, the configuration directory and a digest of its contents, the commit,
the waivers); the runs table shows it, --compare states every such difference
first (a flip across two configurations may be the configuration's, not a
regression), and --target / --config-digest keep only the runs that match.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HaconformError
from ..redaction import redact, redacted_head
from .html import anchor, duration_text, esc, page, verdict_class
from .verdict import BROKEN, HELD, NOT_TESTED, WAIVED, format_value, load_verdict, read_json_mapping, stage_key

# unit -> (relative change, absolute floor): a figure "moved" when |B - A| reaches both.
THRESHOLDS: dict[str, tuple[float, float]] = {
    "s": (0.20, 1.0),             # outage, fence, rejoin, restore, wall time: >= 20 % and >= 1 s
    "ms": (0.20, 5.0),            # perf latency percentiles
    "requests/s": (0.20, 10.0),   # perf rates
    "requests": (0.0, 1.0),       # requests to the wrong server: any new one
    "failures": (0.0, 1.0),       # perf failures
    "ratio": (0.20, 0.05),        # perf ratios (VIP over direct, locust over wrk)
}
DEFAULT_THRESHOLD = (0.20, 0.0)
LOWER_IS_BETTER = {"s", "ms", "requests", "failures"}
HIGHER_IS_BETTER = {"requests/s"}
MAX_RUNS = 60          # the trends page shows the newest runs only
PERF_PHASE_FIELDS = {"requests_per_s": ("requests/s", "requests/s"), "p50_ms": ("p50", "ms"),
                     "p95_ms": ("p95", "ms"), "p99_ms": ("p99", "ms"), "failures": ("failures", "failures")}
PERF_FAULT_FIELDS = {"prober_longest_outage_s": ("fault: prober's longest outage", "s"),
                     "longest_silence_s": ("fault: longest silence", "s"),
                     "failures_after_injection": ("fault: failures after injection", "failures")}


@dataclass
class Figure:
    group: str     # a MUST id, "run" or "perf"
    name: str
    value: float
    unit: str

    @property
    def key(self) -> str:
        return f"{self.group} · {self.name}"


@dataclass
class Run:
    name: str
    path: Path
    verdict: dict | None = None
    perf: dict | None = None
    figures: dict[str, Figure] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """20261129-225747 -> 11-29 22:57"""
        n = self.name
        return f"{n[4:6]}-{n[6:8]} {n[9:11]}:{n[11:13]}" if len(n) >= 13 and n[8] == "-" else n

    @property
    def context(self) -> dict[str, str | None]:
        context = run_context(self.verdict)
        if context["target"] is None:   # a perf run: its summary.json says where it ran, nothing more
            context["target"] = target_identity(self.recorded_target)
        return context

    @property
    def recorded_target(self) -> dict | None:
        for recorded in (((self.verdict or {}).get("run") or {}).get("target"), (self.perf or {}).get("target")):
            if isinstance(recorded, dict):
                return recorded
        return None

    @property
    def source(self) -> str:
        if self.verdict is None:
            return "summary.json" if self.perf else "—"
        return (self.verdict.get("run") or {}).get("source", "verdict.json")


# What a run ran against, as verdict.json's run records it (report/plugin.py): label -> its text, None when the
# run did not record it (an older run, a perf run).
RUN_CONTEXT = ("target", "stages", "configuration", "configuration digest", "commit", "waivers")
NOT_RECORDED = "not recorded"


def target_identity(target) -> str | None:
    """"lab haconform", "vagrant hacvm", "ssh /etc/haconform/inventory.yaml": the kind and which one."""
    if not isinstance(target, dict) or not target.get("target"):
        return None
    kind = str(target["target"])
    which = target.get("lab") or target.get("vm") or target.get("inventory")
    labs = target.get("labs")
    side = f" (+{len(labs) - 1} labs side by side)" if isinstance(labs, list) and len(labs) > 1 else ""
    return f"{kind} {which}{side}" if which else kind


def run_context(verdict: dict | None) -> dict[str, str | None]:
    run = (verdict or {}).get("run") or {}
    mode = run.get("stage_mode") if isinstance(run.get("stage_mode"), dict) else None
    stages = None
    if mode and mode.get("mode"):
        stages = mode["mode"] + (f" (deployment at {mode['deployment_stage']})" if mode.get("deployment_stage") else "")
    waivers = run.get("waivers") if isinstance(run.get("waivers"), dict) else None
    waiver_text = None
    if waivers is not None:
        waiver_text = ("none" if not waivers.get("count") else
                       f"{waivers['count']} from {', '.join(waivers.get('sources') or [])} "
                       f"(digest {str(waivers.get('digest'))[:12]})")
    return {"target": target_identity(run.get("target")), "stages": stages, "configuration": run.get("config"),
            "configuration digest": run.get("config_digest"), "commit": run.get("commit"), "waivers": waiver_text}


def context_differences(a: dict[str, str | None], b: dict[str, str | None]) -> list[dict]:
    """Every way two runs differ in what they ran against; "not recorded" on one side is a difference too."""
    return [{"what": label, "a": a.get(label) or NOT_RECORDED, "b": b.get(label) or NOT_RECORDED}
            for label in RUN_CONTEXT if (a.get(label) or NOT_RECORDED) != (b.get(label) or NOT_RECORDED)]


def matches_filter(run: "Run", *, target: str | None = None, config_digest: str | None = None) -> bool:
    """--target KIND or KIND:NAME (lab, vagrant, ssh; NAME: the lab, VM or inventory), --config-digest PREFIX."""
    recorded = ((run.verdict or {}).get("run") or {})
    if target:
        described = run.recorded_target or {}
        kind, _, name = target.partition(":")
        if described.get("target") != kind:
            return False
        names = {str(v) for v in (described.get("lab"), described.get("vm"), described.get("inventory")) if v}
        names |= {Path(n).name for n in names} | {Path(n).stem for n in names}
        if name and name not in names:
            return False
    if config_digest and not str(recorded.get("config_digest") or "").startswith(config_digest.lower()):
        return False
    return True


def perf_figures(summary: dict) -> list[Figure]:
    figures = []
    for phase, data in (summary.get("phases") or {}).items():
        if not isinstance(data, dict):
            continue
        for key, (name, unit) in PERF_PHASE_FIELDS.items():
            value = data.get(key)
            if key == "failures" and value is None:
                value = data.get("errors")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                figures.append(Figure("perf", f"{phase} {name}", float(value), unit))
    for key, value in (summary.get("ratios") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            figures.append(Figure("perf", key.replace("_", " "), float(value), "ratio"))
    for key, (name, unit) in PERF_FAULT_FIELDS.items():
        value = (summary.get("fault") or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            figures.append(Figure("perf", name, float(value), unit))
    return figures


def verdict_figures(verdict: dict) -> list[Figure]:
    figures = []
    duration = (verdict.get("run") or {}).get("duration_s")
    if isinstance(duration, (int, float)):
        figures.append(Figure("run", "conformance wall time", float(duration), "s"))
    for must in verdict.get("musts") or []:
        for f in must.get("figures") or []:
            figures.append(Figure(must["id"], f["name"], float(f["value"]), f["unit"]))
    return figures


def load_run(path: Path, *, golden: list[dict] | None = None, config_dir: Path | None = None) -> Run | None:
    path = Path(path)
    if not path.is_dir():
        return None
    run = Run(path.name, path)
    run.verdict = load_verdict(path, golden=golden, config_dir=config_dir)
    summary = path / "summary.json"
    if summary.exists():
        run.perf = read_json_mapping(summary, what="a perf summary")
    if run.verdict is None and run.perf is None:
        return None
    figures = (verdict_figures(run.verdict) if run.verdict else []) + (perf_figures(run.perf) if run.perf else [])
    run.figures = {f.key: f for f in figures}
    return run


def load_runs(results: Path, *, golden: list[dict] | None = None, config_dir: Path | None = None,
              warn=None) -> list[Run]:
    """Every run under results; a damaged one (a file cut short by a killed session) is left out with
    one line to warn(), and the others are still read."""
    results = Path(results)
    if not results.is_dir():
        raise HaconformError("no such directory" if not results.exists() else "not a directory", where=str(results),
                             fix="pass the directory the runs were kept in (default: results/ of the checkout)")
    runs = []
    for path in sorted(p for p in results.iterdir() if p.is_dir()):
        try:
            run = load_run(path, golden=golden, config_dir=config_dir)
        except HaconformError as exc:
            if warn is not None:
                warn(f"haconform report: warning: skipped run {path.name}: {exc}")
            continue
        if run is not None:
            runs.append(run)
    return runs


# ----- compare -----------------------------------------------------------------------------------

def moved(a: float, b: float, unit: str, thresholds: dict[str, tuple[float, float]] = THRESHOLDS) -> bool:
    relative, floor = thresholds.get(unit, DEFAULT_THRESHOLD)
    delta = abs(b - a)
    if delta == 0 or delta < floor:
        return False
    return a == 0 or delta >= relative * abs(a)


def direction(a: float, b: float, unit: str) -> str:
    if unit in LOWER_IS_BETTER:
        return "worse" if b > a else "better"
    if unit in HIGHER_IS_BETTER:
        return "worse" if b < a else "better"
    return "changed"


def verdict_label(must: dict | None) -> str:
    if must is None:
        return "absent"
    return "broken (known finding)" if must["verdict"] == BROKEN and must.get("known_finding") else must["verdict"]


def compare(a: Run, b: Run, thresholds: dict[str, tuple[float, float]] = THRESHOLDS) -> dict:
    musts_a = {m["id"]: m for m in (a.verdict or {}).get("musts", [])}
    musts_b = {m["id"]: m for m in (b.verdict or {}).get("musts", [])}
    flipped, fixed, changed = [], [], []
    for must_id in sorted(set(musts_a) | set(musts_b)):
        ma, mb = musts_a.get(must_id), musts_b.get(must_id)
        la, lb = verdict_label(ma), verdict_label(mb)
        if la == lb or {la, lb} == {"absent", NOT_TESTED}:
            continue   # a MUST missing from one run's list is as untested as one listed "not in this run"
        entry = {"id": must_id, "stage": (mb or ma)["stage"], "from": la, "to": lb,
                 "reason": (mb or {}).get("reason", "")}
        if ma and mb and ma["verdict"] == HELD and mb["verdict"] == BROKEN:
            flipped.append(entry)
        elif ma and mb and ma["verdict"] == BROKEN and mb["verdict"] == HELD:
            fixed.append(entry)
        else:
            changed.append(entry)
    moves, steady = [], 0
    for key in sorted(set(a.figures) & set(b.figures)):
        fa, fb = a.figures[key], b.figures[key]
        if moved(fa.value, fb.value, fb.unit, thresholds):
            moves.append({"key": key, "group": fb.group, "name": fb.name, "unit": fb.unit, "a": fa.value,
                          "b": fb.value, "delta": fb.value - fa.value,
                          "relative": (fb.value - fa.value) / abs(fa.value) if fa.value else None,
                          "direction": direction(fa.value, fb.value, fb.unit)})
        else:
            steady += 1
    moves.sort(key=lambda m: ({"worse": 0, "changed": 1, "better": 2}[m["direction"]], m["key"]))
    return {"a": a.name, "b": b.name, "context": context_differences(a.context, b.context),
            "flipped": flipped, "fixed": fixed, "changed": changed, "moved": moves,
            "steady": steady, "compared_musts": len(set(musts_a) & set(musts_b)),
            "only_a": sorted(set(a.figures) - set(b.figures)), "only_b": sorted(set(b.figures) - set(a.figures)),
            "regression": bool(flipped)}


def thresholds_text(thresholds: dict[str, tuple[float, float]] = THRESHOLDS) -> str:
    return "; ".join(f"{unit}: >= {rel:.0%} and >= {format_value(floor, unit)}" if rel
                     else f"{unit}: >= {format_value(floor, unit)}" for unit, (rel, floor) in thresholds.items())


def context_lines(result: dict) -> list[str]:
    differences = result.get("context") or []
    if not differences:
        return ["ran against: the same " + ", ".join(RUN_CONTEXT)]
    lines = [f"ran against: {len(differences)} difference(s) — a verdict that changed may be one of these, "
             "not a regression:"]
    lines += [f"  {d['what']}: {d['a']} -> {d['b']}" for d in differences]
    return lines


def compare_text(result: dict) -> str:
    lines = [f"compare {result['a']} -> {result['b']}", *context_lines(result),
             f"verdicts: {result['compared_musts']} MUSTs in both; {len(result['flipped'])} flipped held -> broken, "
             f"{len(result['fixed'])} fixed broken -> held, {len(result['changed'])} other change(s)"]
    for tag, entries in (("FLIPPED", result["flipped"]), ("fixed", result["fixed"])):
        for e in entries:
            reason = f": {e['reason']}" if e.get("reason") and e["to"] != HELD else ""
            lines.append(f"  {tag:8} {e['id']} ({e['stage']}) {e['from']} -> {e['to']}{redacted_head(reason, 300)}")
    transitions: dict[tuple[str, str], list[dict]] = {}
    for e in result["changed"]:
        transitions.setdefault((e["from"], e["to"]), []).append(e)
    for (was, now), entries in transitions.items():
        if len(entries) == 1:
            e = entries[0]
            reason = f": {e['reason']}" if e.get("reason") and now != HELD else ""
            lines.append(f"  {'changed':8} {e['id']} ({e['stage']}) {was} -> {now}{redacted_head(reason, 300)}")
        else:
            lines.append(f"  {'changed':8} {len(entries)} MUSTs {was} -> {now}: {', '.join(e['id'] for e in entries)}")
    lines.append(f"figures beyond thresholds: {len(result['moved'])} ({result['steady']} within; "
                 f"thresholds {thresholds_text()})")
    for m in result["moved"]:
        rel = f", {m['relative']:+.0%}" if m["relative"] is not None else ""
        sign = "+" if m["delta"] >= 0 else "-"
        lines.append(f"  {m['direction']:8} {m['key']}: {format_value(m['a'], m['unit'])} -> "
                     f"{format_value(m['b'], m['unit'])} ({sign}{format_value(abs(m['delta']), m['unit'])}{rel})")
    if result["only_a"] or result["only_b"]:
        lines.append(f"figures in one run only: {len(result['only_a'])} only in {result['a']}, "
                     f"{len(result['only_b'])} only in {result['b']}")
    lines.append("result: REGRESSION: a verdict flipped from held to broken" if result["regression"]
                 else "result: no verdict flipped from held to broken")
    return "\n".join(lines) + "\n"


# ----- the page ----------------------------------------------------------------------------------

def _axis(value: float) -> tuple[float, float]:
    """(axis maximum, tick step): 4 to 5 round steps from 0 up to at least value."""
    if value <= 0:
        return 1.0, 0.25
    raw = value / 4
    exponent = 10 ** math.floor(math.log10(raw))
    step = next(m * exponent for m in (1, 2, 2.5, 5, 10) if m * exponent >= raw)
    return step * math.ceil(value / step - 1e-9), step


def line_plot(title: str, unit: str, points: list[tuple[str, float | None]], *, width: int = 400,
              height: int = 190) -> str:
    """One figure over the runs: x = the runs in time order, y from 0; a gap where a run has no value."""
    left, right, top, bottom = 52, 12, 34, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, v in points if v is not None]
    y_max, step = _axis(max(values) * 1.05 if values else 0.0)
    n = len(points)

    def x(i: int) -> float:
        return left + (plot_w * (i + 0.5) / n)

    def y(v: float) -> float:
        return top + plot_h * (1 - v / y_max)

    parts = [f"<svg class='plot' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"viewBox='0 0 {width} {height}' font-family='sans-serif' font-size='10' role='img'>"
             f"<title>{esc(title)}</title>"
             f"<text x='{left}' y='14' font-size='12' font-weight='bold' fill='#1f2328'>{esc(title)}</text>"]
    for k in range(int(round(y_max / step)) + 1):
        v = step * k
        yy = y(v)
        parts.append(f"<line x1='{left}' y1='{yy:.1f}' x2='{width - right}' y2='{yy:.1f}' stroke='#e6e9ed'/>"
                     f"<text x='{left - 4}' y='{yy + 3:.1f}' text-anchor='end' fill='#59636e'>{v:g}</text>")
    parts.append(f"<text x='10' y='{top + plot_h / 2:.0f}' fill='#59636e' transform='rotate(-90 10 "
                 f"{top + plot_h / 2:.0f})' text-anchor='middle'>{esc(unit)}</text>")
    every = max(1, math.ceil(n / 10))
    for i, (label, _) in enumerate(points):
        if i % every == 0 or i == n - 1:
            parts.append(f"<text x='{x(i):.1f}' y='{height - bottom + 14}' text-anchor='end' fill='#59636e' "
                         f"transform='rotate(-30 {x(i):.1f} {height - bottom + 14})'>{esc(label)}</text>")
    segment: list[str] = []
    segments: list[list[str]] = []
    for i, (_, v) in enumerate(points):
        if v is None:
            if segment:
                segments.append(segment)
            segment = []
            continue
        segment.append(f"{x(i):.1f},{y(v):.1f}")
    if segment:
        segments.append(segment)
    if sum(len(seg) for seg in segments) > 1 and len(segments) > 1:   # across runs without the figure
        parts.append("<polyline fill='none' stroke='#0969da' stroke-opacity='0.35' stroke-dasharray='3,3' "
                     f"points='{' '.join(p for seg in segments for p in seg)}'/>")
    for seg in segments:
        if len(seg) > 1:
            parts.append(f"<polyline fill='none' stroke='#0969da' stroke-width='2' points='{' '.join(seg)}'/>")
    last = max((i for i, (_, v) in enumerate(points) if v is not None), default=None)
    for i, (label, v) in enumerate(points):
        if v is None:
            continue
        r = 4.5 if i == last else 3.2
        parts.append(f"<circle cx='{x(i):.1f}' cy='{y(v):.1f}' r='{r}' fill='{'#cf222e' if i == last else '#0969da'}'>"
                     f"<title>{esc(label)}: {esc(format_value(v, unit))}</title></circle>")
    if last is not None:
        v = points[last][1]
        parts.append(f"<text x='{width - right}' y='27' text-anchor='end' fill='#cf222e'>last: "
                     f"{esc(format_value(v, unit))} ({esc(points[last][0])})</text>")
    parts.append(f"<line x1='{left}' y1='{top + plot_h}' x2='{width - right}' y2='{top + plot_h}' stroke='#8c959f'/>")
    parts.append("</svg>")
    return "".join(parts)


TRENDS_CSS_EXTRA = """
.plots{display:flex;flex-wrap:wrap;gap:10px}.plots figure{margin:0;border:1px solid var(--line);border-radius:6px;
padding:4px}
table.matrix td.cell{width:22px;text-align:center;padding:2px}table.matrix th.run{writing-mode:vertical-rl;
transform:rotate(180deg);font-weight:normal;font-size:11px;padding:4px 2px}
.sq{display:inline-block;width:14px;height:14px;border-radius:3px}
.sq.held{background:var(--held)}.sq.broken{background:var(--broken)}.sq.known{background:var(--known)}
.sq.nt{background:#d0d7de}.sq.waived{background:var(--waived)}
.sq.absent{background:transparent;border:1px dashed #d0d7de}
pre.compare{max-height:none}
.flip{color:var(--broken);font-weight:700}
"""


def _matrix(runs: list[Run]) -> str:
    with_verdict = [r for r in runs if r.verdict]
    if not with_verdict:
        return "<p class='muted'>no conformance run</p>"
    ids: dict[str, str] = {}
    for run in with_verdict:
        for must in run.verdict["musts"]:
            ids.setdefault(must["id"], must["stage"])
    order = sorted(ids, key=lambda i: (stage_key(ids[i]), i))
    head = "".join(f"<th class='run' title='{esc(r.name)}'>{esc(r.label)}</th>" for r in with_verdict)
    rows = []
    for must_id in order:
        cells = []
        for run in with_verdict:
            must = next((m for m in run.verdict["musts"] if m["id"] == must_id), None)
            if must is None:
                cells.append("<td class='cell'><span class='sq absent' title='not in this run'></span></td>")
            else:
                tip = redacted_head(f"{run.name}: {must['verdict']} — {must['reason']}", 400)
                cells.append(f"<td class='cell'><span class='sq {verdict_class(must)}' title='{esc(tip)}'>"
                             f"</span></td>")
        rows.append(f"<tr><td class='id'>{esc(must_id)}</td><td class='muted'>{esc(ids[must_id])}</td>"
                    + "".join(cells) + "</tr>")
    return (f"<table class='matrix'><thead><tr><th>MUST</th><th>stage</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
            "<p class='note'><span class='sq held'></span> held <span class='sq broken'></span> broken "
            "<span class='sq known'></span> broken, known finding <span class='sq waived'></span> waived "
            "<span class='sq nt'></span> not tested "
            "<span class='sq absent'></span> not in the run</p>")


def _plots(runs: list[Run], group_filter) -> str:
    keys: dict[str, Figure] = {}
    for run in runs:
        for key, figure in run.figures.items():
            if group_filter(figure.group):
                keys.setdefault(key, figure)
    if not keys:
        return "<p class='muted'>no figure recorded</p>"
    out = ["<div class='plots'>"]
    for key in sorted(keys, key=lambda k: (keys[k].unit != "s", k)):   # times first, then counts and rates
        figure = keys[key]
        points = [(r.label, r.figures[key].value if key in r.figures else None) for r in runs]
        out.append(f"<figure id='{anchor('plot', key)}'>{line_plot(key, figure.unit, points)}</figure>")
    out.append("</div>")
    return "\n".join(out)


def _compare_html(result: dict) -> str:
    rows = []
    for tag, entries in (("flipped", result["flipped"]), ("fixed", result["fixed"])):
        for e in entries:
            cls = " class='flip'" if tag == "flipped" else ""
            rows.append(f"<tr><td{cls}>{tag}</td><td class='id'>{esc(e['id'])}</td><td>{esc(e['from'])} → "
                        f"{esc(e['to'])}</td><td class='reason'>{esc(e.get('reason') or '')}</td></tr>")
    transitions: dict[tuple[str, str], list[dict]] = {}
    for e in result["changed"]:
        transitions.setdefault((e["from"], e["to"]), []).append(e)
    for (was, now), entries in transitions.items():
        ids = ", ".join(e["id"] for e in entries)
        why = entries[0].get("reason") or "" if len(entries) == 1 else f"{len(entries)} MUSTs"
        rows.append(f"<tr><td>changed</td><td class='id' style='white-space:normal'>{esc(ids)}</td>"
                    f"<td>{esc(was)} → {esc(now)}</td><td class='reason'>{esc(why)}</td></tr>")
    verdicts = (f"<table class='data'><tr><th></th><th>MUST</th><th>verdict</th><th>why</th></tr>{''.join(rows)}"
                "</table>") if rows else "<p>no verdict changed</p>"
    move_rows = []
    for m in result["moved"]:
        change = "" if m["relative"] is None else f"{m['relative']:+.0%}"
        cls = "flip" if m["direction"] == "worse" else ""
        move_rows.append(f"<tr><td class='{cls}'>{esc(m['direction'])}</td><td>{esc(m['key'])}</td>"
                         f"<td>{esc(format_value(m['a'], m['unit']))}</td>"
                         f"<td>{esc(format_value(m['b'], m['unit']))}</td>"
                         f"<td>{esc(change)}</td></tr>")
    moves = "".join(move_rows)
    moves_html = (f"<table class='data'><tr><th></th><th>figure</th><th>{esc(result['a'])}</th>"
                  f"<th>{esc(result['b'])}</th><th>change</th></tr>{moves}</table>") if moves else \
        "<p>no figure moved beyond its threshold</p>"
    status = ("<p class='flip'>REGRESSION: a verdict flipped from held to broken</p>" if result["regression"]
              else "<p>no verdict flipped from held to broken</p>")
    context = result.get("context") or []
    context_html = ("<p>Both ran against the same " + esc(", ".join(RUN_CONTEXT)) + ".</p>" if not context else
                    "<div class='context-diff'><p class='flip'>They ran against different things: a verdict that "
                    "changed may be one of these, not a regression.</p><table class='data'><tr><th>what</th>"
                    f"<th>{esc(result['a'])}</th><th>{esc(result['b'])}</th></tr>"
                    + "".join(f"<tr><td>{esc(d['what'])}</td><td class='mono'>{esc(d['a'])}</td>"
                              f"<td class='mono'>{esc(d['b'])}</td></tr>" for d in context) + "</table></div>")
    return (f"<section id='compare'><h2>Compared: {esc(result['a'])} → {esc(result['b'])}</h2>{context_html}{status}"
            f"<h3>Verdicts</h3>{verdicts}<h3>Figures beyond thresholds</h3>{moves_html}"
            f"<p class='note'>thresholds (relative and absolute floor, per unit): {esc(thresholds_text())}; "
            f"{result['steady']} figure(s) within them</p>"
            f"<details><summary>as text</summary><pre class='compare'>{esc(compare_text(result))}</pre></details>"
            "</section>")


def _short(value: str | None, length: int = 12) -> str:
    return value[:length] if value else "—"


def render_trends(runs: list[Run], comparison: dict | None = None, *, results: str = "results/",
                  filtered: str = "") -> str:
    runs = runs[-MAX_RUNS:]
    conformance = [r for r in runs if r.verdict]
    perf = [r for r in runs if r.perf]
    rows = []
    for run in runs:
        counts = (run.verdict or {}).get("run", {}).get("verdicts") or {}
        known = (run.verdict or {}).get("run", {}).get("known_findings") or 0
        waived = counts.get(WAIVED, 0)
        verdicts = (f"{counts.get(HELD, 0)} held, {counts.get(BROKEN, 0)} broken"
                    + (f" ({known} known)" if known else "") + (f", {waived} waived" if waived else "")
                    + f", {counts.get(NOT_TESTED, 0)} not tested"
                    if run.verdict else "—")
        context = run.context
        config = context["configuration"]
        configuration = (f"{Path(config).name if config else '—'} · {_short(context['configuration digest'])}"
                         if config or context["configuration digest"] else "—")
        wall = run.figures.get("run · conformance wall time")
        kind = " + ".join(k for k, present in (("conformance", run.verdict), ("perf", run.perf)) if present)
        rows.append(f"<tr><td class='mono'>{esc(run.name)}</td><td>{esc(kind)}</td><td>{esc(verdicts)}</td>"
                    f"<td>{esc(duration_text(wall.value) if wall else '—')}</td>"
                    f"<td>{esc(context['target'] or '—')}</td><td>{esc(context['stages'] or '—')}</td>"
                    f"<td class='mono' title='{esc(config or '')}'>{esc(configuration)}</td>"
                    f"<td class='mono'>{esc(_short(context['commit'], 10))}</td>"
                    f"<td>{esc(context['waivers'] or '—')}</td>"
                    f"<td class='muted'>{esc(run.source)}</td></tr>")
    newest = runs[-1].name if runs else "—"
    body = (f"<header><h1>Trends across runs</h1><p>{len(runs)} run(s) in <code>{esc(results)}</code> "
            f"({len(conformance)} conformance, {len(perf)} perf); newest {esc(newest)}.</p>"
            + (f"<p class='filter'>{esc(filtered)}</p>" if filtered else "")
            + "<nav class='stages'><a href='#runs'>runs</a><a href='#matrix'>verdicts</a>"
            "<a href='#wall'>wall time</a><a href='#figures'>figures</a><a href='#perf'>perf</a>"
            + ("<a href='#compare'>compare</a>" if comparison else "") + "</nav></header>"
            + (_compare_html(comparison) if comparison else "")
            + "<section id='runs'><h2>Runs</h2><table class='data runs'><tr><th>run</th><th>kind</th><th>verdicts</th>"
              "<th>wall time</th><th>target</th><th>stages</th><th>configuration · digest</th><th>commit</th>"
              "<th>waivers</th><th>from</th></tr>" + "".join(rows) + "</table></section>"
            + f"<section id='matrix'><h2>Verdicts per run</h2>{_matrix(runs)}</section>"
            + f"<section id='wall'><h2>Conformance wall time</h2>{_plots(conformance, lambda g: g == 'run')}</section>"
            + "<section id='figures'><h2>Figures per MUST</h2>"
              "<p class='note'>The last value in red; a dashed line across runs without the figure; "
              "hover a point for its run and value.</p>"
            + _plots(conformance, lambda g: g not in ("run", "perf")) + "</section>"
            + "<section id='perf'><h2>Performance (summary.json)</h2>"
            + (_plots(perf, lambda g: g == "perf") if perf else "<p class='muted'>no perf run kept</p>")
            + "</section>")
    return page("haconform trends", body, extra_css=TRENDS_CSS_EXTRA)


# ----- the command -------------------------------------------------------------------------------

def _resolve(name: str, results: Path) -> Path:
    path = Path(name)
    if path.is_dir():
        return path
    if (results / name).is_dir():
        return results / name
    raise FileNotFoundError(f"{name}: no such run directory (fix: pass results/<timestamp> or a name under {results})")


def report(results: str = "results", *, compare_dirs: list[str] | None = None, out: str = "reports/trends.html",
           golden: str = "suites/conformance.yaml", config_dir: str = "fixtures/documented",
           target: str | None = None, config_digest: str | None = None, say=print) -> int:
    """`haconform report`: writes the trends page; with compare_dirs (A, B) prints what changed and
    returns 1 when a verdict flipped from held to broken.  target / config_digest: only the runs that
    recorded that target (KIND or KIND:NAME) and a configuration digest starting so (the pair compared
    is shown whatever it ran against: the comparison says how it differs)."""
    from .verdict import read_golden, register_configuration_secrets, stage_notes

    results_path = Path(results)
    golden_rows = read_golden(Path(golden))
    config_path = Path(config_dir) if Path(config_dir).is_dir() else None
    # Read here first: a malformed stage.yaml is one error naming it, not a skipped run per history.jsonl.
    stage_notes(config_path)
    runs = load_runs(results_path, golden=golden_rows, config_dir=config_path,
                     warn=lambda line: say(redact(line), file=sys.stderr))
    filtered = ""
    if target or config_digest:
        kept = [r for r in runs if matches_filter(r, target=target, config_digest=config_digest)]
        wanted = ", ".join(f"{option} {value}" for option, value in (("--target", target),
                                                                   ("--config-digest", config_digest)) if value)
        filtered = (f"filtered: {len(kept)} of {len(runs)} run(s) match {wanted} "
                    "(a run that recorded no target or digest matches no filter)")
        say(redact(filtered))
        runs = kept
    pair = None
    if compare_dirs:
        a_dir, b_dir = (_resolve(name, results_path) for name in compare_dirs)
        a = load_run(a_dir, golden=golden_rows, config_dir=config_path)
        b = load_run(b_dir, golden=golden_rows, config_dir=config_path)
        for path, run in ((a_dir, a), (b_dir, b)):
            if run is None:
                raise FileNotFoundError(f"{path}: neither verdict.json, a history.jsonl with conformance tests, "
                                        "nor summary.json (fix: pass a run directory of results/)")
        known = {r.path.resolve() for r in runs}
        runs = sorted(runs + [r for r in (a, b) if r.path.resolve() not in known], key=lambda r: r.name)
        pair = (a, b)
    register_configuration_secrets([r.verdict for r in runs], config_path)
    comparison = compare(*pair) if pair else None
    if comparison is not None:
        say(redact(compare_text(comparison)), end="")
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(redact(render_trends(runs, comparison, results=str(results), filtered=filtered)),
                        encoding="utf-8")
    say(redact(f"trends: {len(runs)} run(s) from {results} -> {out_path}"))
    return 1 if comparison and comparison["regression"] else 0
