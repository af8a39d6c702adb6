"""reports/verdict.html: the verdict a person reads in ten seconds, its evidence below.

Self-contained (inline CSS, inline SVG, no script, no external asset).  The
page: a banner (how many MUSTs held), the run (target, software, time, the
calibration's summary), one section per stage with a row per MUST (ID, runbook
section: its English title beside the runbook's own heading, so the page reads on
a machine without a CJK font; verdict and why, its figures, a link to its
evidence), the findings,
the calibration (probes, factors, the allowances they scaled), and the evidence: one
block per MUST, one collapsible block per test case, each evidence item as a
table, a sequence, a timeline or a log where one fits, JSON only as a last
resort.
"""

from __future__ import annotations

import html
import json
import re
from datetime import datetime
from typing import Any

from ..redaction import redacted_head
from .verdict import BROKEN, HELD, NOT_TESTED, WAIVED, format_value, reach_text, stage_key, waiver_terms

CSS = """
:root{--held:#1a7f37;--broken:#cf222e;--known:#9a6700;--waived:#ffbf00;--nt:#6e7781;--fg:#1f2328;--muted:#59636e;
--line:#d1d9e0;
--soft:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;background:#eef1f4;color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Sans CJK SC","WenQuanYi Micro Hei",
sans-serif}
main{max-width:1320px;margin:0 auto;padding:18px 28px 80px;background:#fff;min-height:100vh}
h1{font-size:22px;margin:4px 0 12px}
h2{font-size:18px;margin:28px 0 8px;padding-bottom:4px;border-bottom:2px solid var(--line)}
h3{font-size:15px;margin:18px 0 6px}h4{font-size:13px;margin:10px 0 4px;color:var(--muted)}
a{color:#0969da;text-decoration:none}a:hover{text-decoration:underline}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.banner{display:flex;gap:18px;align-items:center;padding:14px 18px;border-radius:8px;color:#fff;margin:0 0 14px}
.banner .big{font-size:26px;font-weight:700;white-space:nowrap}.banner .detail{font-size:14px}
.banner a{color:#fff;text-decoration:underline}
.banner.ok{background:var(--held)}.banner.bad{background:var(--broken)}.banner.warn{background:var(--known)}
.banner.none{background:var(--nt)}
dl.run{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0 0 10px}
dl.run dt{color:var(--muted)}dl.run dd{margin:0}
.stages{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0}
.stages a{display:block;border:1px solid var(--line);border-radius:6px;padding:4px 10px;color:var(--fg)}
.stages a b{margin-right:6px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px;color:#fff;
white-space:nowrap;line-height:18px}
.badge.held,.dot.held{background:var(--held)}.badge.broken,.dot.broken{background:var(--broken)}
.badge.known,.dot.known{background:var(--known)}.badge.nt,.dot.nt{background:var(--nt)}
.badge.waived,.dot.waived{background:var(--waived);color:#1f2328}
.badge.passed,.badge.xpassed{background:var(--held)}.badge.failed,.badge.error{background:var(--broken)}
.badge.xfailed{background:var(--known)}.badge.skipped{background:var(--nt)}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:3px;vertical-align:middle}
table{border-collapse:collapse}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600}
table.verdicts{width:100%;table-layout:fixed}
table.verdicts col.c-id{width:118px}table.verdicts col.c-sec{width:190px}table.verdicts col.c-ver{width:290px}
table.verdicts col.c-fig{width:250px}table.verdicts col.c-ev{width:78px}
tr.must.broken td.id{border-left:4px solid var(--broken)}tr.must.known td.id{border-left:4px solid var(--known)}
tr.must.held td.id{border-left:4px solid var(--held)}tr.must.nt td.id{border-left:4px solid var(--nt)}
tr.must.waived td.id{border-left:4px solid var(--waived)}tr.must.waived{background:#fff8e1}
.waiver{font-size:12px;margin-top:3px;padding:2px 6px;border-left:3px solid var(--waived);background:#fff3c4}
tr.stale td{color:var(--broken)}
td.id{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;white-space:nowrap}
.reason{color:var(--muted);font-size:12px;margin-top:2px;word-break:break-word}
tr.must.broken .reason{color:var(--broken)}
.fig{font-size:12.5px;display:inline-block}.fig b{font-variant-numeric:tabular-nums}
.muted{color:var(--muted)}
.keyfigs{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin:0 0 12px}
.keyfigs .kf{border:1px solid var(--line);border-radius:14px;padding:1px 10px;color:var(--fg);font-size:12.5px}
.keyfigs .kf.bad{border-color:var(--broken);color:var(--broken)}
ul.findings li{margin:4px 0}
section.ev{border-top:1px solid var(--line);margin-top:16px;padding-top:4px}
section.ev:target{background:#fff8c5}
details{margin:6px 0}details>summary{cursor:pointer}
details.case{border:1px solid var(--line);border-radius:6px;padding:4px 10px}
details.context{margin-left:4px}details.context>summary{color:var(--muted);font-size:12px}
pre{background:var(--soft);padding:6px 8px;overflow:auto;max-height:340px;font-size:12px;white-space:pre-wrap;
word-break:break-word;margin:4px 0}
pre.failure{border-left:3px solid var(--broken)}
.chips span{display:inline-block;padding:0 6px;margin:1px;border-radius:4px;background:#eef1f4;
font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
table.kv th{font-weight:normal;color:var(--muted);background:none;white-space:nowrap}
table.data{font-size:12.5px;max-width:100%}table.data td,table.data th{padding:2px 6px}
.value{font-size:15px;font-weight:600}
svg{max-width:100%;height:auto}
.note{font-size:12px;color:var(--muted)}
.sec-en{display:block}.sec-orig{color:var(--muted);font-size:12px}
"""

STAGE_NAMES = {"stage1-3": "stages 1-3 (lint of the runbook's configs)", "algorithms": "balance algorithms"}
CONTEXT_TITLES = ("configuration:", "deployment state recorded")
MAX_ROWS = 300
MAX_TEXT = 20000


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def anchor(kind: str, ident: str) -> str:
    return f"{kind}-" + re.sub(r"[^A-Za-z0-9_.-]", "_", ident)


def verdict_class(must: dict) -> str:
    if must["verdict"] == BROKEN:
        return "known" if must.get("known_finding") else "broken"
    if must["verdict"] == WAIVED:
        return "waived"
    return "held" if must["verdict"] == HELD else "nt"


def verdict_badge(must: dict) -> str:
    label = "broken · known finding" if must.get("known_finding") else must["verdict"]
    return f"<span class='badge {verdict_class(must)}'>{esc(label)}</span>"


def section_html(item: dict, *, inline: bool = False) -> str:
    """A runbook section: its English title (section_en, from suites/sections.yaml) beside the runbook's own
    heading, which a machine without a CJK font draws as empty boxes."""
    original, english = item.get("section") or "", item.get("section_en")
    if not original:
        return "<span class='muted'>—</span>"
    heading = f"<span class='sec-orig' lang='zh-Hans'>{esc(original)}</span>"
    if not english:
        return heading
    style = " style='display:inline'" if inline else ""
    return f"<span class='sec-en'{style}>{esc(english)}</span> {heading}"


def figures_html(figures: list[dict]) -> str:
    return "<br>".join(f"<span class='fig'>{esc(f['name'])}: <b>{esc(format_value(f['value'], f['unit']))}</b></span>"
                       for f in figures)


def page(title: str, body: str, *, extra_css: str = "") -> str:
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{CSS}{extra_css}</style></head>\n"
            f"<body><main>\n{body}\n</main></body></html>\n")


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def target_text(target: Any) -> str:
    if not isinstance(target, dict):
        return str(target or "—")
    kind = target.get("target", "?")
    rest = ", ".join(f"{k} {v}" for k, v in target.items()
                     if k != "target" and isinstance(v, (str, int, float, bool)) and v not in ("", None))
    return f"{kind} ({rest})" if rest else str(kind)


VERSION_LABELS = {"haproxy": "HAProxy", "pacemaker": "Pacemaker", "corosync": "Corosync", "pcs": "pcs"}


def versions_text(versions: dict) -> str:
    if not versions:
        return "not recorded"
    return " · ".join(f"{VERSION_LABELS.get(k, k)} {v}" for k, v in versions.items())


# ----- the banner and the run ---------------------------------------------------------------------

def banner(verdict: dict) -> str:
    musts = verdict["musts"]
    total = len(musts)
    held = [m for m in musts if m["verdict"] == HELD]
    broken = [m for m in musts if m["verdict"] == BROKEN and not m.get("known_finding")]
    known = [m for m in musts if m["verdict"] == BROKEN and m.get("known_finding")]
    untested = [m for m in musts if m["verdict"] == NOT_TESTED]
    waived = [m for m in musts if m["verdict"] == WAIVED]
    if broken:
        cls, big = "bad", f"{len(broken)} MUST{'s' if len(broken) != 1 else ''} broken"
    elif not held and not waived:
        cls, big = "none", "nothing tested"
    elif known or untested or waived:
        cls, big = "warn", f"{len(held)} of {total} MUSTs held"
    else:
        cls, big = "ok", f"all {total} MUSTs held"

    def links(items: list[dict]) -> str:
        shown = ", ".join(f"<a href='#{anchor('must', m['id'])}'>{esc(m['id'])}</a>" for m in items[:8])
        return shown + (f" and {len(items) - 8} more" if len(items) > 8 else "")

    parts = [f"{len(held)} held"]
    if broken:
        parts.append(f"{len(broken)} broken: {links(broken)}")
    if known:
        parts.append(f"{len(known)} broken as known finding{'s' if len(known) != 1 else ''}: {links(known)}")
    if waived:
        parts.append(f"{len(waived)} waived: {links(waived)}")
    if untested:
        parts.append(f"{len(untested)} not tested" + (f": {links(untested)}" if len(untested) <= 8 else ""))
    return (f"<div class='banner {cls}' id='banner'><div class='big'>{esc(big)}</div>"
            f"<div class='detail'>{' · '.join(parts)} (of {total} MUSTs)</div></div>")


def key_figures(verdict: dict) -> str:
    """The figures an operator looks for first: times per MUST, and the requests that reached the wrong server."""
    times, wrong, wrong_musts = [], 0, 0
    for must in verdict["musts"]:
        for figure in must["figures"]:
            if figure["unit"] == "s" and figure["name"] != "restore":
                times.append((must, figure))
            elif figure["unit"] == "requests":
                wrong += figure["value"]
                wrong_musts += 1
    if not times and not wrong_musts:
        return ""
    cells = [f"<a href='#{anchor('must', m['id'])}' class='kf' title='{esc(m['must'])}'>"
             f"<span class='muted'>{esc(m['id'])}</span> "
             f"{esc(f['name'])} <b>{esc(format_value(f['value'], f['unit']))}</b></a>" for m, f in times]
    if wrong_musts:
        cells.append(f"<span class='kf{' bad' if wrong else ''}'>requests to the wrong server <b>{wrong:g}</b> "
                     f"<span class='muted'>(over {wrong_musts} routing MUSTs)</span></span>")
    return "<div class='keyfigs'><b>Key figures</b> " + "".join(cells) + "</div>"


def run_header(verdict: dict) -> str:
    run = verdict.get("run", {})
    tests = run.get("tests") or {}
    duration = duration_text(run.get("duration_s")) + (" (estimated from the evidence)"
                                                        if run.get("duration_estimated") else "")
    rows = [("target", esc(target_text(run.get("target")))),
            ("software", esc(versions_text(run.get("versions") or {}))),
            ("started", esc(run.get("started") or "—")),
            ("run time", esc(duration)),
            ("test cases", esc(", ".join(f"{n} {o}" for o, n in sorted(tests.items())) or "none")),
            ("calibration", calibration_text(verdict.get("calibration"))),
            ("host access", esc(host_access_text(run))),
            ("waivers", waivers_text(verdict)),
            ("read-only reach", esc(reach_text(run.get("reach")) or "— (not recorded)")),
            *([("stopped", esc(run["stopped"].get("message", "")))] if run.get("stopped") else []),
            ("run", esc(run.get("run_path") or (f"results/{run['run_dir']}/" if run.get("run_dir") else "—")))]
    return "<dl class='run'>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def waivers_text(verdict: dict) -> str:
    waivers = verdict.get("waivers") or []
    if not waivers:
        return "<span class='muted'>none</span>"
    counts: dict[str, int] = {}
    for waiver in waivers:
        counts[waiver["status"]] = counts.get(waiver["status"], 0) + 1
    return (esc(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
            + " (<a href='#waivers'>details</a>)")


def host_access_text(run: dict) -> str:
    """What the run did to the hosts: read-only and how many commands, or the grants (haconform/guard.py)."""
    access = run.get("host_access")
    if not access:
        return "— (not recorded)"
    transcript = f"; every command in {access['transcript']}" if access.get("transcript") else ""
    return access.get("statement", access.get("mode", "")) + transcript


def calibration_text(calibration: dict | None) -> str:
    if not calibration:
        return "<span class='muted'>not recorded</span>"
    summary = str(calibration.get("summary", "")).removeprefix("calibration: ")
    return f"{esc(summary)} (<a href='#calibration'>details</a>)"


def stage_title(verdict: dict, stage: str) -> str:
    title = (verdict.get("stages") or {}).get(stage) or STAGE_NAMES.get(stage, "")
    return f"{stage} — {title}" if title else stage


def stages_of(verdict: dict) -> list[tuple[str, list[dict]]]:
    groups: dict[str, list[dict]] = {}
    for must in verdict["musts"]:
        groups.setdefault(must["stage"], []).append(must)
    return sorted(groups.items(), key=lambda kv: stage_key(kv[0]))


def stage_counts(musts: list[dict]) -> str:
    counts: dict[str, int] = {}
    for must in musts:
        counts[verdict_class(must)] = counts.get(verdict_class(must), 0) + 1
    names = {"held": "held", "broken": "broken", "known": "known finding", "waived": "waived", "nt": "not tested"}
    return " ".join(f"<span class='dot {c}'></span>{counts[c]} {names[c]}"
                    for c in ("broken", "known", "waived", "nt", "held") if counts.get(c))


# ----- the verdict table -------------------------------------------------------------------------

def verdict_tables(verdict: dict) -> str:
    out = ["<section id='verdicts'><h2>MUSTs by stage</h2>"]
    for stage, musts in stages_of(verdict):
        out.append(f"<h3 id='{anchor('stage', stage)}'>{esc(stage_title(verdict, stage))} "
                   f"<span class='muted' style='font-weight:normal'>· {stage_counts(musts)}</span></h3>")
        out.append("<table class='verdicts'><colgroup><col class='c-id'><col class='c-sec'><col>"
                   "<col class='c-ver'><col class='c-fig'><col class='c-ev'></colgroup>"
                   "<thead><tr><th>ID</th><th>runbook section</th><th>MUST</th><th>verdict</th>"
                   "<th>figures</th><th>evidence</th></tr></thead><tbody>")
        for must in musts:
            out.append(
                f"<tr class='must {verdict_class(must)}' id='{anchor('must', must['id'])}'>"
                f"<td class='id'>{esc(must['id'])}</td><td class='sec'>{section_html(must)}</td><td>{esc(must['must'])}</td>"
                f"<td class='verdict'>{verdict_badge(must)}{waiver_notes(must)}"
                f"<div class='reason'>{esc(shown_reason(must))}</div></td>"
                f"<td class='figures'>{figures_html(must['figures']) or '<span class=muted>—</span>'}</td>"
                f"<td><a class='ev' href='#{anchor('ev', must['id'])}'>evidence</a></td></tr>")
        out.append("</tbody></table>")
    out.append("</section>")
    return "\n".join(out)


def shown_reason(must: dict) -> str:
    """A waived MUST's row shows its waivers apart (waiver_notes); the reason line keeps the failure."""
    reason = must["reason"]
    if must["verdict"] == WAIVED and must.get("waivers") and " — failed: " in reason:
        return "failed: " + reason.split(" — failed: ", 1)[1]
    return reason


def waiver_notes(must: dict) -> str:
    """A waived MUST's waivers, each in a line: the reason, the ticket, the days to its expiry."""
    return "".join(f"<div class='waiver' data-days-left='{esc(w.get('days_left'))}'>{esc(w['reason'])} · "
                   f"{esc(waiver_terms(w))}</div>" for w in must.get("waivers") or [])


def waivers_section(verdict: dict) -> str:
    """Every waiver of the run and what it did: applied, expired, or stale (it matched nothing)."""
    waivers = verdict.get("waivers") or []
    out = ["<section id='waivers'><h2>Waivers</h2>"]
    if not waivers:
        out.append("<p class='muted'>none in this run</p></section>")
        return "\n".join(out)
    out.append("<p class='note'>A case that fails only by what a waiver accepts is <b>waived</b>; any other "
               "failure of the MUST stays broken (status <i>seen</i>: the waiver's difference was there beside "
               "it); an expired waiver counts for nothing; a stale one matched nothing in this run.</p>")
    rows = []
    for w in waivers:
        accepts = (f"<code>{esc(w['difference']['key'])}</code> = <code>{esc(w['difference']['found'])}</code>"
                   if w.get("difference") else "any failure of its checks")
        status = w["status"] + (f": {w['stale_because']}" if w.get("stale_because") else "")
        cases = ", ".join(w.get("waived_cases") or w.get("seen_in") or []) or "—"
        stale = " stale" if w.get("stale") and w["status"] != "stale" else ""   # an expired one can be stale too
        rows.append(f"<tr class='{esc(w['status'])}{stale}'>"
                    f"<td><a href='#{anchor('must', w['id'])}'>{esc(w['id'])}</a></td><td>{accepts}</td>"
                    f"<td>{esc(w['reason'])}</td><td>{esc(w.get('ticket') or '—')}</td>"
                    f"<td>{esc(waiver_terms(w))}</td><td>{esc(status)}</td><td class='mono'>{esc(cases)}</td>"
                    f"<td class='muted'>{esc(w['source'])}</td></tr>")
    out.append("<table class='data waivers'><thead><tr><th>MUST</th><th>accepts</th><th>reason</th><th>ticket</th>"
               "<th>expiry</th><th>status</th><th>cases</th><th>where</th></tr></thead><tbody>"
               + "".join(rows) + "</tbody></table></section>")
    return "\n".join(out)


def findings_list(verdict: dict) -> str:
    findings = verdict.get("findings") or []
    out = ["<section id='findings'><h2>Findings</h2>"]
    if not findings:
        out.append("<p class='muted'>none</p>")
    xfails = [f for f in findings if f["kind"] == "xfail"]
    notes = [f for f in findings if f["kind"] == "note"]
    if xfails:
        out.append("<h3>What the runbook says that today's software refuses (expected failures)</h3>"
                   "<ul class='findings'>")
        for f in xfails:
            out.append(f"<li><a href='#{anchor('ev', f['id'])}'><b>{esc(f['id'])}</b></a> "
                       f"<span class='muted'>({esc(f['stage'])}, {section_html(f, inline=True)})</span>: "
                       f"{esc(f['text'])}</li>")
        out.append("</ul>")
    if notes:
        out.append("<h3>Notes of the documented configuration (stage.yaml <code>notes:</code>)</h3>"
                   "<ul class='findings'>")
        for f in notes:
            section = f" <span class='muted'>({section_html(f, inline=True)})</span>" if f.get("section") else ""
            out.append(f"<li><b>{esc(f['stage'])}</b>{section}: {esc(f['text'])}</li>")
        out.append("</ul>")
    out.append("</section>")
    return "\n".join(out)


# ----- calibration -------------------------------------------------------------------------------

def _s(value: Any) -> str:
    return "—" if value is None else f"{value:g} s"


def _factor(value: Any) -> str:
    return "—" if value is None else f"×{value:.2f}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    """rows: cells already escaped."""
    return ("<table class='data'><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
            + "</tbody></table>")


def calibration_section(verdict: dict) -> str:
    """What the harness measured on the target at bring-up and how it scaled its own allowances."""
    calibration = verdict.get("calibration")
    out = ["<section id='calibration'><h2>Calibration</h2>"]
    if not calibration:
        out.append("<p class='muted'>not recorded in this run: the allowances were the lab's figures</p></section>")
        return "\n".join(out)
    reference = calibration.get("reference") or {}
    ceiling = calibration.get("ceiling")
    out.append(f"<p>{esc(calibration.get('summary', ''))}</p>"
               "<p class='note'>The documented interval of a MUST never scales; only the harness's own allowances "
               f"do, by a factor within [1, {esc(f'{ceiling:g}' if ceiling is not None else '?')}] (the ceiling). "
               f"Reference: the lab, measured {esc(reference.get('measured_at') or '?')} on "
               f"{esc(reference.get('measured_on') or '?')}"
               + (f" — {esc(reference['note'])}" if reference.get("note") else "")
               + (f". The probes took {esc(_s(calibration.get('took_s')))}." if calibration.get("enabled") else ".")
               + "</p>")
    if calibration.get("probes"):
        out.append("<h3>Probes (median of each host's runs; the slowest host counts)</h3>" + _table(
            ["probe", "category", "reference", "measured", "slowest host", "ratio", "per host"],
            [[esc(p["name"]), esc(p["category"]), esc(_s(p["reference_s"])), f"<b>{esc(_s(p['measured_s']))}</b>",
              esc(p["slowest_host"]), esc(f"{p['ratio']:.2f}"),
              esc(", ".join(f"{h} {m:g} s" for h, m in (p.get("per_host") or {}).items()))]
             for p in calibration["probes"]]))
    out.append("<h3>Categories</h3>" + _table(
        ["category", "ratio", "factor", "capped", "allowances"],
        [[esc(c["category"]), esc("not probed" if c["ratio"] is None else f"{c['ratio']:.2f}"),
          f"<b>{esc(_factor(c['factor']))}</b>",
          f"<span class='badge known'>capped at ×{esc(f'{ceiling:g}')}</span>" if c.get("capped") else "no",
          esc(", ".join(c.get("fields") or []))]
         for c in calibration.get("categories") or []]))
    out.append("<h3>Allowances (haconform/timeouts.py)</h3>" + _table(
        ["field", "category", "base", "factor", "applied"],
        [[f"<code>{esc(a['field'])}</code>", esc(a["category"]), esc(_s(a["base_s"])), esc(_factor(a["factor"])),
          f"<b>{esc(_s(a['applied_s']))}</b>"] for a in calibration.get("allowances") or []]))
    if calibration.get("not_scaled"):
        out.append("<p class='note'>Not scaled: " + ", ".join(f"<code>{esc(n)}</code>" for n in calibration["not_scaled"])
                   + ".</p>")
    out.append("</section>")
    return "\n".join(out)


# ----- evidence ----------------------------------------------------------------------------------

def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


TIME_KEYS = {"t", "at", "start", "end", "first_t", "last_t", "injected_at", "started", "ended"}


def _scalar_text(value: Any, key: str | None = None) -> str:
    if value is None:
        return "<span class='muted'>—</span>"
    if isinstance(value, float):
        if key in TIME_KEYS and 1e9 < value < 1e10:   # a unix time: the clock time, to the millisecond
            return esc(datetime.fromtimestamp(value).strftime("%H:%M:%S.%f")[:-3])
        if not value.is_integer():
            return esc(f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) >= 0.01 else f"{value:.3g}")
    if isinstance(value, str) and ("\n" in value or len(value) > 240):
        return f"<pre>{esc(redacted_head(value, MAX_TEXT))}</pre>"
    return esc(value)


def _is_timeline(value: Any) -> bool:
    return (isinstance(value, list) and len(value) >= 2 and all(isinstance(v, dict) and set(v) == {"t", "mark"}
                                                                and isinstance(v["t"], (int, float)) for v in value))


def timeline_html(marks: list[dict]) -> str:
    t0 = marks[0]["t"]
    span = max((m["t"] - t0 for m in marks), default=0.0) or 1.0
    width, left, right = 900, 20, 20
    usable = width - left - right
    dots, labels = [], []
    for i, mark in enumerate(marks):
        x = left + usable * (mark["t"] - t0) / span
        y = 18 + (i % 3) * 14
        dots.append(f"<circle cx='{x:.1f}' cy='58' r='4' fill='#0969da'><title>{esc(mark['mark'])}: "
                    f"+{mark['t'] - t0:.2f} s</title></circle>"
                    f"<line x1='{x:.1f}' y1='{y + 3}' x2='{x:.1f}' y2='54' stroke='#afb8c1' stroke-dasharray='2,2'/>")
        anchor_ = "start" if x < width / 2 else "end"
        labels.append(f"<text x='{x:.1f}' y='{y}' text-anchor='{anchor_}'>{esc(mark['mark'])} "
                      f"+{mark['t'] - t0:.2f} s</text>")
    svg = (f"<svg class='timeline' xmlns='http://www.w3.org/2000/svg' width='{width}' height='70' "
           f"viewBox='0 0 {width} 70' font-family='sans-serif' font-size='11'>"
           f"<line x1='{left}' y1='58' x2='{width - right}' y2='58' stroke='#57606a'/>"
           + "".join(dots) + "".join(labels) + "</svg>")
    rows = "".join(f"<tr><td class='mono'>+{m['t'] - t0:.2f} s</td><td>{esc(m['mark'])}</td></tr>" for m in marks)
    return svg + f"<table class='data'><tr><th>time</th><th>event</th></tr>{rows}</table>"


def rows_table(rows: list[dict], depth: int) -> str:
    columns: list[str] = []
    for row in rows[:MAX_ROWS]:
        for key in row:
            if key not in columns:
                columns.append(key)
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{render_json(row.get(c), depth + 1, c)}</td>" for c in columns) + "</tr>"
                   for row in rows[:MAX_ROWS])
    more = f"<p class='note'>({len(rows) - MAX_ROWS} more rows)</p>" if len(rows) > MAX_ROWS else ""
    return f"<table class='data'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def render_json(value: Any, depth: int = 0, key: str | None = None) -> str:
    """Data as a person reads it: a value, a sequence, a table, a timeline; JSON only when nothing fits."""
    if _scalar(value):
        return _scalar_text(value, key)
    if depth >= 3:
        return f"<code>{esc(redacted_head(json.dumps(value, ensure_ascii=False), 600))}</code>"
    if isinstance(value, list):
        if not value:
            return "<span class='muted'>(none)</span>"
        if _is_timeline(value):
            return timeline_html(value)
        if all(_scalar(v) for v in value):
            shown = "".join(f"<span>{esc(v)}</span>" for v in value[:MAX_ROWS])
            more = f" … ({len(value) - MAX_ROWS} more)" if len(value) > MAX_ROWS else ""
            return f"<div class='chips'>{shown}{more}</div>"
        if all(isinstance(v, dict) for v in value):
            return rows_table(value, depth)
        return f"<pre>{esc(redacted_head(json.dumps(value, indent=1, ensure_ascii=False), MAX_TEXT))}</pre>"
    if isinstance(value, dict):
        if not value:
            return "<span class='muted'>(empty)</span>"
        inner = list(value.values())
        if (len(value) > 1 and all(isinstance(v, dict) and v and all(_scalar(x) for x in v.values()) for v in inner)
                and len({k for v in inner for k in v}) <= 12):
            return rows_table([{"": k, **v} for k, v in value.items()], depth)
        rows = "".join(f"<tr><th>{esc(k)}</th><td>{render_json(v, depth + 1, k)}</td></tr>"
                       for k, v in list(value.items())[:MAX_ROWS])
        return f"<table class='kv data'>{rows}</table>"
    return _scalar_text(str(value))


SAFE_SVG = re.compile(r"^\s*<svg[\s>]", re.I)
UNSAFE_SVG = re.compile(r"<script|javascript:|\son\w+\s*=|<foreignObject|href\s*=\s*['\"]?(?!#)", re.I)


def render_item(item: dict) -> str:
    kind, title, content = item.get("kind"), item.get("title", ""), item.get("content")
    head = f"<h4>{esc(title)}</h4>"
    if kind == "svg" and isinstance(content, str) and SAFE_SVG.match(content) and not UNSAFE_SVG.search(content):
        return head + f"<div class='svg'>{content}</div>"
    if kind == "table" and isinstance(content, list):
        return head + (rows_table(content, 0) if content else "<span class='muted'>(no rows)</span>")
    if kind == "log" and isinstance(content, list):
        shown = content[-300:]
        cut = f"<p class='note'>(last 300 of {len(content)} lines)</p>" if len(content) > 300 else ""
        return head + cut + f"<pre>{esc(chr(10).join(map(str, shown)))}</pre>"
    if kind == "json":
        if _number_like(content):
            return f"<h4>{esc(title)}: <span class='value'>{esc(content)}</span></h4>"
        return head + render_json(content)
    return head + f"<pre>{esc(redacted_head(str(content), MAX_TEXT))}</pre>"


def _number_like(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def case_html(case: dict, record: dict | None, open_: bool) -> str:
    outcome = case["outcome"]
    summary = (f"<span class='badge {esc(outcome)}'>{esc(outcome)}</span> <code>{esc(case['nodeid'])}</code> "
               f"<span class='muted'>· {duration_text(case.get('duration_s'))}</span>")
    parts = []
    if case.get("reason"):
        cls = "failure" if outcome in ("failed", "error") else ""
        parts.append(f"<pre class='{cls}'>{esc(case['reason'])}</pre>")
    evidence = (record or {}).get("evidence") or []
    context = [i for i in evidence if str(i.get("title", "")).startswith(CONTEXT_TITLES)]
    main = [i for i in evidence if i not in context]
    parts.extend(render_item(i) for i in main)
    if context:
        parts.append("<details class='context'><summary>context: "
                     + esc(", ".join(str(i.get("title")) for i in context))
                     + "</summary>" + "".join(render_item(i) for i in context) + "</details>")
    if not evidence:
        parts.append("<p class='muted'>no evidence recorded for this case</p>")
    return f"<details class='case'{' open' if open_ else ''}><summary>{summary}</summary>{''.join(parts)}</details>"


def evidence_sections(verdict: dict, records: dict[str, dict]) -> str:
    out = ["<section id='evidence'><h2>Evidence</h2>"
           "<p class='note'>One block per MUST, one per test case; set-up context is folded.</p>"]
    for must in verdict["musts"]:
        cases = must.get("cases") or [{"nodeid": n, "outcome": "?", "reason": None} for n in must.get("nodeids", [])]
        figures = figures_html(must["figures"])
        out.append(f"<section class='ev' id='{anchor('ev', must['id'])}'>"
                   f"<h3><a href='#{anchor('must', must['id'])}'>{esc(must['id'])}</a> {verdict_badge(must)} "
                   f"<span class='muted' style='font-weight:normal'>{esc(must['stage'])} · "
                   f"{section_html(must, inline=True)}</span></h3>"
                   f"<p>{esc(must['must'])}</p><p class='reason'>{esc(must['reason'])}</p>"
                   + (f"<p>{figures}</p>" if figures else ""))
        few = len(cases) <= 2
        for case in cases:
            open_ = few or case.get("outcome") in ("failed", "error", "xfailed")
            out.append(case_html(case, records.get(case["nodeid"]), open_))
        if not cases:
            out.append("<p class='muted'>no test case of this MUST ran</p>")
        out.append("</section>")
    out.append("</section>")
    return "\n".join(out)


def coverage_section(verdict: dict) -> str:
    """The runbook's coverage (haconform/coverage.py): its sections' MUSTs, each setting's MUSTs, and the
    settings only the configuration diff checks."""
    from ..coverage import coverage_html
    return coverage_html(verdict.get("coverage"), {m["id"] for m in verdict["musts"]})


def render_verdict_html(verdict: dict, records: list[dict] | None = None) -> str:
    by_nodeid = {r["nodeid"]: r for r in records or []}
    stages = "".join(f"<a href='#{anchor('stage', stage)}'><b>{esc(stage)}</b>{stage_counts(musts)}</a>"
                     for stage, musts in stages_of(verdict))
    body = ("<header><h1>Runbook conformance verdict</h1>" + banner(verdict) + key_figures(verdict)
            + run_header(verdict)
            + f"<nav class='stages'>{stages}<a href='#findings'><b>findings</b>{len(verdict.get('findings') or [])}</a>"
            + "<a href='#waivers'><b>waivers</b></a><a href='#coverage'><b>coverage</b></a>"
            + "<a href='#calibration'><b>calibration</b></a></nav></header>"
            + verdict_tables(verdict) + findings_list(verdict) + waivers_section(verdict)
            + coverage_section(verdict) + calibration_section(verdict)
            + evidence_sections(verdict, by_nodeid))
    run = verdict.get("run", {})
    return page(f"verdict — {run.get('run_dir') or run.get('started') or 'haconform'}", body)
