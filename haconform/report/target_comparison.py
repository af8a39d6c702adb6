"""One commit on two targets, side by side: `haconform report --targets A B`.

A and B are two conformance runs (the nightly: the lab's, then the VM's), each a
results/<ts>/ directory or the directory its --junitxml wrote verdict.json into
(then the history is found through the verdict's run_path).  The table, figure by
figure: the target's bring-up, the wall time, the calibration factors (the
verdict's top-level "calibration", when recorded), each MUST's figures, and each
MUST's waits (evidence titled "waits..." in history.jsonl: documented value,
allowance, bound, and what each target measured).  MUSTs whose verdict differs
between the two targets come first.  Printed as text; reports/targets.html is
the same on a page.

Everything but the verdict's own keys is read defensively: a run recorded before
a figure existed shows "—" for it, not an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HaconformError
from ..redaction import redact, redacted_head
from .html import duration_text, esc, page, target_text, verdict_badge, versions_text
from .trends import verdict_label
from .verdict import (NOT_TESTED, case_label, format_value, load_verdict, read_golden, read_history, stage_notes,
                      register_configuration_secrets, stage_key)

MISSING = "—"
# A target kind (verdict.json's run.target.target) -> its name in the table.
TARGET_NAMES = {"lab": "lab", "vagrant": "VM", "ssh": "deployment"}
# The session's own figures (verdict.json's run.figures, from fixtures/deployment.py) -> their names here.
RUN_FIGURES = {"target_up_s": "target bring-up", "calibration_s": "calibration probes"}
WAITS_TITLE = "waits"
# A waits row's columns -> the keys each may be recorded under (lower case, unit suffix dropped).
WAIT_KEYS: dict[str, tuple[str, ...]] = {
    "condition": ("condition", "wait", "what", "name"),
    "documented": ("documented",),
    "allowance": ("allowance",),
    "bound": ("bound",),
    "measured": ("measured", "elapsed"),
}
BAD_DIR_FIX = ("pass the results/<timestamp> directory of a conformance run, or the directory its --junitxml "
               "wrote verdict.json into")


@dataclass
class Quantity:
    value: float
    unit: str           # "s", "requests", "x" (a factor), "" (a plain number)
    note: str = ""

    def text(self) -> str:
        shown = f"{self.value:g}×" if self.unit == "x" else format_value(self.value, self.unit)
        return f"{shown} ({self.note})" if self.note else shown


@dataclass
class Side:
    path: Path
    verdict: dict
    records: list[dict] = field(default_factory=list)
    history: Path | None = None
    label: str = ""

    @property
    def run(self) -> dict:
        run = self.verdict.get("run")
        return run if isinstance(run, dict) else {}

    @property
    def kind(self) -> str:
        target = self.run.get("target")
        kind = target.get("target") if isinstance(target, dict) else target
        return str(kind or "unknown target")


# ----- reading -----------------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def load_side(path: Path, *, golden: list[dict] | None = None, config_dir: Path | None = None) -> Side:
    path = Path(path)
    if not path.is_dir():
        raise HaconformError("not a directory", where=str(path), fix=BAD_DIR_FIX)
    try:
        verdict = load_verdict(path, golden=golden, config_dir=config_dir)
    except (OSError, ValueError, KeyError, HaconformError) as exc:
        why = f"{exc.where}: {exc.what}" if isinstance(exc, HaconformError) else exc
        raise HaconformError(f"its verdict.json or history.jsonl cannot be read ({why})", where=str(path),
                             fix=BAD_DIR_FIX) from None
    if not isinstance(verdict, dict) or not isinstance(verdict.get("musts"), list):
        raise HaconformError("neither a verdict.json nor a history.jsonl with conformance tests", where=str(path),
                             fix=BAD_DIR_FIX)
    side = Side(path, verdict)
    run_path = side.run.get("run_path")
    for history in (path / "history.jsonl", Path(run_path) / "history.jsonl" if run_path else None):
        if history is not None and history.is_file():
            try:
                side.records = read_history(history)
                side.history = history
            except (OSError, ValueError, KeyError, HaconformError):
                continue   # a history cut short by a killed session: the verdict's figures still stand
            break
    return side


def _seconds_name(key: str) -> str:
    return (key[:-2] if key.endswith("_s") else key).replace("_", " ")


def run_quantities(verdict: dict) -> dict[str, Quantity]:
    """The run's own figures: the target's bring-up (the session's, and the steps a target describes) and
    the wall time."""
    run = verdict.get("run") if isinstance(verdict.get("run"), dict) else {}
    found: dict[str, Quantity] = {}
    figures = run.get("figures") if isinstance(run.get("figures"), dict) else {}
    for key, value in figures.items():
        number = _number(value)
        if number is not None:
            found[RUN_FIGURES.get(key, _seconds_name(key))] = Quantity(number, "s" if key.endswith("_s") else "")
    target = run.get("target") if isinstance(run.get("target"), dict) else {}
    described = target.get("figures") if isinstance(target.get("figures"), dict) else {}
    for key, value in described.items():
        number = _number(value)
        if number is not None:
            found[f"bring-up step: {_seconds_name(key)}"] = Quantity(number, "s" if key.endswith("_s") else "")
    wall = _number(run.get("duration_s"))
    if wall is not None:
        found["conformance wall time"] = Quantity(wall, "s", "estimated" if run.get("duration_estimated") else "")
    return found


def _named(value: Any, name_keys: tuple[str, ...]) -> list[tuple[str, Any]]:
    """(name, entry) pairs of {name: entry} or of [{"name": ..., ...}] (the name under one of name_keys)."""
    if isinstance(value, dict):
        return [(str(name), entry) for name, entry in value.items()]
    if isinstance(value, list):
        return [(str(next((entry[k] for k in name_keys if entry.get(k)), f"#{index + 1}")), entry)
                for index, entry in enumerate(value) if isinstance(entry, dict)]
    return []


def calibration_quantities(verdict: dict) -> dict[str, Quantity]:
    """The factors each target's allowances were scaled by, the ceiling, and what the probes measured
    (haconform/calibration.py's to_json(): categories and probes as lists; {name: ...} read as well)."""
    calibration = verdict.get("calibration")
    if not isinstance(calibration, dict):
        return {}
    found: dict[str, Quantity] = {}
    for name, entry in _named(calibration.get("categories"), ("category", "name")):
        factor = _number(entry.get("factor")) if isinstance(entry, dict) else _number(entry)
        if factor is not None:
            capped = isinstance(entry, dict) and entry.get("capped") is True
            found[f"factor: {name}"] = Quantity(factor, "x", "capped" if capped else "")
    ceiling = _number(calibration.get("ceiling"))
    if ceiling is not None:
        found["ceiling"] = Quantity(ceiling, "x")
    for name, probe in _named(calibration.get("probes"), ("name",)):
        for key, value in probe.items() if isinstance(probe, dict) else [("", probe)]:
            number = _number(value)
            if number is not None:
                unit = "s" if key.endswith("_s") else "x" if key == "ratio" else ""
                found[f"probe: {name}" + (f" {key}" if key else "")] = Quantity(number, unit)
    return found


def must_quantities(must: dict) -> dict[str, Quantity]:
    found: dict[str, Quantity] = {}
    for figure in must.get("figures") or []:
        number = _number(figure.get("value")) if isinstance(figure, dict) else None
        if number is not None and figure.get("name"):
            found[str(figure["name"])] = Quantity(number, str(figure.get("unit") or ""))
    return found


def _key_base(key: str) -> str:
    base = str(key).strip().lower()
    for suffix in (" (s)", "_s", " s"):
        if base.endswith(suffix):
            return base[:-len(suffix)].strip()
    return base


def _cell(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def wait_rows(content: Any) -> list[dict]:
    """A waits evidence item's rows: a table (a list of dicts), {"rows": [...]}, or {condition: {...}}."""
    if isinstance(content, dict):
        if isinstance(content.get("rows"), list):
            content = content["rows"]
        elif content and all(isinstance(v, dict) for v in content.values()):
            content = [{"condition": k, **v} for k, v in content.items()]
        else:
            content = [content]
    return [row for row in content if isinstance(row, dict)] if isinstance(content, list) else []


def parse_wait(row: dict) -> dict:
    """One row -> {"condition", "documented", "allowance", "bound", "measured", "other": {key: text}}."""
    parsed: dict[str, Any] = {column: None for column in WAIT_KEYS}
    parsed["other"] = {}
    for key, value in row.items():
        base = _key_base(key)
        column = next((c for c, names in WAIT_KEYS.items() if base in names), None)
        if column is not None and parsed[column] is None:
            parsed[column] = _cell(value)
        elif _cell(value) is not None:
            parsed["other"][str(key)] = _cell(value)
    return parsed


def waits_by_must(records: list[dict]) -> dict[str, list[dict]]:
    """{MUST id: [parsed wait + "nodeid"]} from every evidence item whose title starts with "waits"."""
    found: dict[str, list[dict]] = {}
    for record in records:
        must_id = (record.get("requirement") or {}).get("id")
        if not must_id:
            continue
        for item in record.get("evidence") or []:
            if not str(item.get("title", "")).lower().startswith(WAITS_TITLE):
                continue
            for row in wait_rows(item.get("content")):
                found.setdefault(must_id, []).append({**parse_wait(row), "nodeid": record.get("nodeid", "")})
    return found


# ----- the comparison ----------------------------------------------------------------------------

def quantity_rows(a: dict[str, Quantity], b: dict[str, Quantity]) -> list[dict]:
    rows = []
    for name in list(a) + [n for n in b if n not in a]:
        qa, qb = a.get(name), b.get(name)
        ratio = qb.value / qa.value if qa and qb and qa.value else None
        rows.append({"figure": name, "a": qa, "b": qb, "ratio": ratio})
    return rows


def _pair(a: str | None, b: str | None) -> str:
    """One value when both targets agree (or only one recorded it), else both: "lab's / VM's"."""
    if a == b or b is None:
        return a or MISSING
    if a is None:
        return b
    return f"{a} / {b}"


def join_waits(a: list[dict], b: list[dict]) -> list[dict]:
    """Rows of both targets joined by (test case, condition, occurrence)."""
    cases = {w["nodeid"] for w in a + b}

    def keyed(waits: list[dict]) -> dict[tuple, dict]:
        out: dict[tuple, dict] = {}
        for index, wait in enumerate(waits):
            condition = wait["condition"] or f"#{index + 1}"
            key = (wait["nodeid"], condition, 0)
            while key in out:
                key = (key[0], key[1], key[2] + 1)
            out[key] = wait
        return out

    ka, kb = keyed(a), keyed(b)
    rows = []
    for key in list(ka) + [k for k in kb if k not in ka]:
        wa, wb = ka.get(key, {}), kb.get(key, {})
        nodeid, condition, occurrence = key
        label = (f"{case_label(nodeid)} " if len(cases) > 1 else "") + condition
        label += f" ({occurrence + 1})" if occurrence else ""
        other_a, other_b = wa.get("other") or {}, wb.get("other") or {}
        other = "; ".join(f"{k}={_pair(other_a.get(k), other_b.get(k))}"
                          for k in list(other_a) + [k for k in other_b if k not in other_a])
        rows.append({"condition": label,
                     **{c: _pair(wa.get(c), wb.get(c)) for c in ("documented", "allowance", "bound")},
                     "measured_a": wa.get("measured") or MISSING, "measured_b": wb.get("measured") or MISSING,
                     "other": other})
    return rows


def _absent_or_untested(label: str) -> bool:
    return label in ("absent", NOT_TESTED)


def compare_targets(a: Side, b: Side) -> dict:
    musts_a = {m["id"]: m for m in a.verdict.get("musts") or [] if isinstance(m, dict) and "id" in m}
    musts_b = {m["id"]: m for m in b.verdict.get("musts") or [] if isinstance(m, dict) and "id" in m}
    waits_a, waits_b = waits_by_must(a.records), waits_by_must(b.records)
    entries = []
    for must_id in list(musts_a) + [i for i in musts_b if i not in musts_a]:
        ma, mb = musts_a.get(must_id), musts_b.get(must_id)
        la, lb = verdict_label(ma), verdict_label(mb)
        figures = quantity_rows(must_quantities(ma or {}), must_quantities(mb or {}))
        waits = join_waits(waits_a.get(must_id, []), waits_b.get(must_id, []))
        differs = la != lb and not (_absent_or_untested(la) and _absent_or_untested(lb))
        entries.append({"id": must_id, "stage": str((ma or mb).get("stage", "")), "must": (ma or mb).get("must", ""),
                        "a": ma, "b": mb, "label_a": la, "label_b": lb, "differs": differs,
                        "figures": figures, "waits": waits})
    entries.sort(key=lambda e: (not e["differs"], stage_key(e["stage"]), e["id"]))
    shown = [e for e in entries if e["differs"] or e["figures"] or e["waits"]]
    return {"a": a, "b": b, "musts": shown, "quiet": len(entries) - len(shown),
            "differ": [e for e in entries if e["differs"]],
            "run": quantity_rows(run_quantities(a.verdict), run_quantities(b.verdict)),
            "calibration": quantity_rows(calibration_quantities(a.verdict), calibration_quantities(b.verdict))}


def name_sides(a: Side, b: Side) -> None:
    """Each side named by its target; by its run too when both ran on the same kind of target."""
    a.label, b.label = (TARGET_NAMES.get(s.kind, s.kind.split(" (")[0]) for s in (a, b))
    if a.label == b.label:
        a.label += f" {a.run.get('run_dir') or a.path.name}"
        b.label += f" {b.run.get('run_dir') or b.path.name}"


# ----- text --------------------------------------------------------------------------------------

def _q(q: Quantity | None) -> str:
    return q.text() if q else MISSING


def _ratio(ratio: float | None) -> str:
    return f"{ratio:.2f}×" if ratio is not None else MISSING


def _columns(rows: list[list[str]], indent: str = "") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def side_summary(side: Side) -> str:
    run = side.run
    counts = run.get("verdicts") if isinstance(run.get("verdicts"), dict) else {}
    verdicts = ", ".join(f"{n} {v}" for v, n in counts.items()) or "verdicts not counted"
    exit_status = run.get("exit_status")
    parts = [target_text(run.get("target")), f"run {run.get('run_dir') or side.path.name}",
             f"pytest exit status {exit_status}" if exit_status is not None else "exit status not recorded",
             verdicts, f"wall time {duration_text(run.get('duration_s'))}"]
    if run.get("commit"):
        parts.append(f"commit {run['commit']}")
    if not side.history:
        parts.append("no history.jsonl found: waits not shown")
    return " · ".join(parts)


def verdict_text(entry: dict, side: str) -> str:
    must = entry[side]
    label = entry[f"label_{side}"]
    return label if must is None or label == "held" else f"{label}: {redacted_head(str(must.get('reason') or ''), 240)}"


def targets_text(result: dict) -> str:
    a, b = result["a"], result["b"]
    lines = [f"{a.label} and {b.label}, side by side", f"  {a.label}: {side_summary(a)}",
             f"  {b.label}: {side_summary(b)}"]
    commits = {s.run.get("commit") for s in (a, b)}
    if len(commits) > 1 and None not in commits:
        lines.append("  WARNING: the two runs are of different commits")
    lines.append(f"MUSTs whose verdict differs: {len(result['differ'])}")
    for e in result["differ"]:
        lines.append(f"  {e['id']} ({e['stage']})")
        lines.append(f"    {a.label}: {verdict_text(e, 'a')}")
        lines.append(f"    {b.label}: {verdict_text(e, 'b')}")
    table = [["figure", a.label, b.label, f"{b.label} ÷ {a.label}"]]
    marks: list[tuple[int, str]] = []     # (row index, line before it)

    def add(group: str, rows: list[dict]) -> None:
        if rows:
            marks.append((len(table), group))
        table.extend([f"  {r['figure']}", _q(r["a"]), _q(r["b"]), _ratio(r["ratio"])] for r in rows)

    add("run", result["run"])
    add("calibration", result["calibration"])
    for e in result["musts"]:
        if e["figures"]:
            add(f"{e['id']} ({e['stage']}): {e['label_a']} | {e['label_b']}"
                + ("   <- verdict differs" if e["differs"] else ""), e["figures"])
    formatted = _columns(table)
    lines.append(formatted[0])
    groups = dict(marks)
    for index, line in enumerate(formatted[1:], start=1):
        if index in groups:
            lines.append(groups[index])
        lines.append(line)
    with_waits = [e for e in result["musts"] if e["waits"]]
    if with_waits:
        lines.append(f"waits (documented | allowance | bound | measured; \"x / y\": {a.label}'s / {b.label}'s)")
    for e in with_waits:
        lines.append(f"{e['id']} ({e['stage']}): {e['label_a']} | {e['label_b']}")
        header = ["condition", "documented", "allowance", "bound", f"measured {a.label}", f"measured {b.label}"]
        other = any(w["other"] for w in e["waits"])
        rows = [header + (["other"] if other else [])]
        rows += [[w["condition"], w["documented"], w["allowance"], w["bound"], w["measured_a"], w["measured_b"]]
                 + ([w["other"] or MISSING] if other else []) for w in e["waits"]]
        lines.extend(_columns(rows, "  "))
    if result["quiet"]:
        lines.append(f"{result['quiet']} other MUST(s): the same verdict on both, no figure, no wait recorded")
    return "\n".join(lines) + "\n"


# ----- the page ----------------------------------------------------------------------------------

TARGETS_CSS_EXTRA = """
table.targets td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
table.targets tr.group th{background:#fff;border-bottom:2px solid var(--line);padding-top:14px}
table.targets tr.group.differs th{border-left:4px solid var(--broken)}
table.targets td.figname{padding-left:18px}
table.targets tr.group .reason{font-weight:normal}
table.waits{margin:2px 0 8px 18px}
.differs-tag{color:var(--broken);font-weight:600;margin-left:6px}
pre.targets{max-height:none}
"""


def _badge(entry: dict, side: str) -> str:
    must = entry[side]
    if must is None:
        return "<span class='badge nt'>absent</span>"
    return verdict_badge(must)


def _quantity_rows_html(rows: list[dict]) -> str:
    return "".join(f"<tr><td class='figname'>{esc(r['figure'])}</td><td class='num'>{esc(_q(r['a']))}</td>"
                   f"<td class='num'>{esc(_q(r['b']))}</td><td class='num'>{esc(_ratio(r['ratio']))}</td></tr>"
                   for r in rows)


def _waits_html(entry: dict, a: Side, b: Side) -> str:
    other = any(w["other"] for w in entry["waits"])
    head = "".join(f"<th>{esc(h)}</th>" for h in ["condition", "documented", "allowance", "bound",
                                                   f"measured {a.label}", f"measured {b.label}"]
                   + (["other"] if other else []))
    body = "".join("<tr>" + "".join(f"<td>{esc(w[k])}</td>" for k in ("condition", "documented", "allowance",
                                                                        "bound", "measured_a", "measured_b"))
                   + (f"<td>{esc(w['other'] or MISSING)}</td>" if other else "") + "</tr>" for w in entry["waits"])
    return f"<table class='data waits'><tr>{head}</tr>{body}</table>"


def render_targets_html(result: dict) -> str:
    a, b = result["a"], result["b"]
    runs = "".join(f"<dt>{esc(s.label)}</dt><dd>{esc(side_summary(s))}<br><span class='muted'>software: "
                   f"{esc(versions_text(s.run.get('versions') or {}))} · from {esc(s.path)}</span></dd>"
                   for s in (a, b))
    differ_rows = "".join(
        f"<tr><td class='id'>{esc(e['id'])}</td><td>{esc(e['stage'])}</td>"
        f"<td>{_badge(e, 'a')}<div class='reason'>{esc((e['a'] or {}).get('reason') or '')}</div></td>"
        f"<td>{_badge(e, 'b')}<div class='reason'>{esc((e['b'] or {}).get('reason') or '')}</div></td></tr>"
        for e in result["differ"])
    differ = (f"<table class='data'><tr><th>MUST</th><th>stage</th><th>{esc(a.label)}</th><th>{esc(b.label)}</th>"
              f"</tr>{differ_rows}</table>" if differ_rows else "<p>every MUST has the same verdict on both</p>")
    rows = []
    for title, group in (("run", result["run"]), ("calibration", result["calibration"])):
        if group:
            rows.append(f"<tr class='group'><th colspan='4'>{esc(title)}</th></tr>{_quantity_rows_html(group)}")
    for e in result["musts"]:
        tag = "<span class='differs-tag'>verdict differs</span>" if e["differs"] else ""
        rows.append(f"<tr class='group{' differs' if e['differs'] else ''}'><th colspan='4'>"
                    f"<span class='mono'>{esc(e['id'])}</span> <span class='muted'>({esc(e['stage'])})</span> "
                    f"{_badge(e, 'a')} {_badge(e, 'b')}{tag}<div class='reason'>{esc(e['must'])}</div></th></tr>"
                    + _quantity_rows_html(e["figures"])
                    + (f"<tr><td colspan='4'>waits{_waits_html(e, a, b)}</td></tr>" if e["waits"] else ""))
    quiet = (f"<p class='note'>{result['quiet']} other MUST(s): the same verdict on both, no figure, no wait "
             "recorded</p>" if result["quiet"] else "")
    body = (f"<header><h1>{esc(a.label)} and {esc(b.label)}, side by side</h1><dl class='run'>{runs}</dl></header>"
            f"<section id='differ'><h2>MUSTs whose verdict differs ({len(result['differ'])})</h2>{differ}</section>"
            "<section id='figures'><h2>Figures</h2>"
            f"<table class='data targets'><tr><th>figure</th><th>{esc(a.label)}</th><th>{esc(b.label)}</th>"
            f"<th>{esc(b.label)} ÷ {esc(a.label)}</th></tr>{''.join(rows)}</table>{quiet}"
            "<p class='note'>In the waits, “x / y” is the two targets' values where they differ.</p></section>"
            f"<details><summary>as text</summary><pre class='targets'>{esc(targets_text(result))}</pre></details>")
    return page(f"haconform: {a.label} and {b.label}", body, extra_css=TARGETS_CSS_EXTRA)


# ----- the command -------------------------------------------------------------------------------

def _resolve(name: str, results: Path) -> Path:
    path = Path(name)
    return path if path.is_dir() or not (results / name).is_dir() else results / name


def report_targets(a_name: str, b_name: str, *, results: str = "results", out: str = "reports/targets.html",
                   golden: str = "suites/conformance.yaml", config_dir: str = "fixtures/documented",
                   fail_on_failed_session: bool = False, say=print) -> int:
    """Prints the side-by-side table and writes the page.  0, or with fail_on_failed_session 1 when either
    run's pytest session did not end with exit status 0; a bad directory raises HaconformError."""
    golden_rows = read_golden(Path(golden))
    config_path = Path(config_dir) if Path(config_dir).is_dir() else None
    # Read here first: a malformed stage.yaml is one error naming it, not blamed on a run's history.jsonl.
    stage_notes(config_path)
    a, b = (load_side(_resolve(name, Path(results)), golden=golden_rows, config_dir=config_path)
            for name in (a_name, b_name))
    register_configuration_secrets([a.verdict, b.verdict], config_path)
    name_sides(a, b)
    result = compare_targets(a, b)
    say(redact(targets_text(result)), end="")
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(redact(render_targets_html(result)), encoding="utf-8")
    say(redact(f"targets: {a.label} and {b.label} -> {out_path}"))
    failed = [f"{s.label} (pytest exit status {s.run.get('exit_status', 'not recorded')})"
              for s in (a, b) if s.run.get("exit_status") != 0]
    if fail_on_failed_session and failed:
        say(redact(f"a session failed: {', '.join(failed)}"))
        return 1
    return 0
