"""Runbook coverage: which MUSTs judge which runbook section and which documented setting.

Built from data only:
  - the runbook's sections: each stage's `runbook_sections:` (stage.yaml) and each MUST's `section`
    (suites/conformance.yaml), so a section no MUST names shows with none;
  - the documented settings: every directive and cluster key of stages 1-5
    (haconform/stages/settings.py: documented_settings), by key path;
  - what each MUST depends on: the `settings` its @conformance declares (key paths, `*` for any
    text), copied into the golden list.  A MUST declaring `*` reads every setting: it is the
    configuration diff (HAC-CFG-001), so a setting no other MUST depends on is "checked only by the
    configuration diff".

`haconform conformance coverage` prints it as text; verdict.json carries it under "coverage" and
verdict.html shows it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from .report.html import anchor, esc

EVERYTHING = "*"


@lru_cache(maxsize=None)
def _pattern(pattern: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def depends(pattern: str, key: str) -> bool:
    """A key path matched by a declared pattern; `*` stands for any text ([ and ] are literal)."""
    return bool(_pattern(pattern).fullmatch(key))


def compute_coverage(golden: list[dict], stages: dict) -> dict:
    """golden: suites/conformance.yaml rows (with `settings`); stages: name -> Stage (haconform/stages/model.py)."""
    from .stages.catalogue import documented
    from .stages.settings import documented_settings

    runbook = [stages[name] for name in documented().names if name in stages]
    sections: dict[str, dict] = {}
    for stage in runbook:
        for section in stage.sections:
            sections.setdefault(section, {"section": section, "stages": [], "musts": []})["stages"].append(stage.name)
    for row in golden:
        entry = sections.setdefault(row["section"], {"section": row["section"], "stages": [], "musts": []})
        entry["musts"].append(row["id"])
    settings: dict[str, dict] = {}
    for stage in runbook:
        for setting in documented_settings(stage):
            entry = settings.setdefault(setting.key, {"key": setting.key, "stages": [], "musts": [],
                                                      "configuration_diff": []})
            entry["stages"].append(stage.name)
    diff_musts = sorted(row["id"] for row in golden if EVERYTHING in (row.get("settings") or []))
    unmatched: dict[str, list[str]] = {}
    for row in golden:
        patterns = [p for p in row.get("settings") or [] if p != EVERYTHING]
        for pattern in patterns:
            hits = [entry for key, entry in settings.items() if depends(pattern, key)]
            for entry in hits:
                if row["id"] not in entry["musts"]:
                    entry["musts"].append(row["id"])
            if not hits:
                unmatched.setdefault(row["id"], []).append(pattern)
    for entry in settings.values():
        entry["musts"].sort()
        entry["configuration_diff"] = diff_musts
    only_diff = [key for key, entry in settings.items() if not entry["musts"]]
    without_settings = sorted(row["id"] for row in golden if not row.get("settings"))
    return {"sections": list(sections.values()), "settings": list(settings.values()),
            "checked_only_by_configuration_diff": only_diff, "configuration_diff": diff_musts,
            "musts_without_settings": without_settings, "patterns_matching_nothing": unmatched,
            "totals": {"sections": len(sections), "sections_without_must": sum(1 for s in sections.values()
                                                                               if not s["musts"]),
                       "settings": len(settings), "checked_only_by_configuration_diff": len(only_diff)}}


def coverage_for(config_dir: Path, golden_path: Path, topology=None) -> dict:
    """Coverage of a configuration directory (laid out like fixtures/documented/) and a golden list."""
    from .report.verdict import read_golden
    from .stages.catalogue import documented
    from .stages.model import load_stage

    stages = {}
    for name in documented().names:
        if (Path(config_dir) / name / "stage.yaml").is_file():
            stages[name] = load_stage(Path(config_dir) / name, topology, search=(Path(config_dir),))
    return compute_coverage(read_golden(golden_path), stages)


def coverage_text(coverage: dict) -> str:
    totals = coverage["totals"]
    lines = [f"runbook sections: {totals['sections']} ({totals['sections_without_must']} without a MUST)"]
    for section in coverage["sections"]:
        stages = f" [{', '.join(section['stages'])}]" if section["stages"] else ""
        lines.append(f"  {section['section']}{stages}: {', '.join(section['musts']) or '(no MUST)'}")
    lines.append(f"documented settings: {totals['settings']}; the MUSTs whose tests depend on each "
                 f"(every one is also in the configuration diff: {', '.join(coverage['configuration_diff']) or '—'})")
    width = max((len(s["key"]) for s in coverage["settings"]), default=0)
    for setting in coverage["settings"]:
        lines.append(f"  {setting['key']:<{width}}  {', '.join(setting['musts']) or '(configuration diff only)'}")
    only = coverage["checked_only_by_configuration_diff"]
    lines.append(f"checked only by the configuration diff: {len(only)}")
    lines += [f"  {key}" for key in only]
    if coverage["musts_without_settings"]:
        lines.append("MUSTs that depend on no documented setting: " + ", ".join(coverage["musts_without_settings"]))
    for must, patterns in coverage["patterns_matching_nothing"].items():
        lines.append(f"warning: {must} declares settings no stage documents: {', '.join(patterns)}")
    return "\n".join(lines) + "\n"


def coverage_html(coverage: dict | None, linked: set[str] | None = None) -> str:
    """linked: the MUSTs the page has rows for (their IDs link there); None: every one."""
    out = ["<section id='coverage'><h2>Runbook coverage</h2>"]
    if not coverage:
        out.append("<p class='muted'>not recorded in this run</p></section>")
        return "\n".join(out)
    totals = coverage["totals"]
    out.append(f"<p class='note'>Which MUSTs judge each runbook section and each documented setting (the "
               f"settings each test declares it depends on). Every setting is also compared by the configuration "
               f"diff ({esc(', '.join(coverage['configuration_diff']) or '—')}).</p>")
    def must_link(must: str) -> str:
        return f"<a href='#{anchor('must', must)}'>{esc(must)}</a>" if linked is None or must in linked else esc(must)

    rows = "".join(f"<tr><td>{esc(s['section'])}</td><td>{esc(', '.join(s['stages']) or '—')}</td><td>"
                   + (", ".join(must_link(m) for m in s["musts"])
                      or "<span class='muted'>no MUST</span>") + "</td></tr>" for s in coverage["sections"])
    out.append(f"<h3>Sections ({totals['sections']}, {totals['sections_without_must']} without a MUST)</h3>"
               f"<table class='data coverage-sections'><thead><tr><th>section</th><th>stages</th><th>MUSTs</th>"
               f"</tr></thead><tbody>{rows}</tbody></table>")
    only = coverage["checked_only_by_configuration_diff"]
    out.append(f"<h3>Settings checked only by the configuration diff ({len(only)})</h3>"
               "<div class='chips coverage-only'>" + "".join(f"<span>{esc(k)}</span>" for k in only) + "</div>")
    rows = "".join(f"<tr><td><code>{esc(s['key'])}</code></td><td>{esc(', '.join(s['stages']))}</td><td>"
                   + (esc(", ".join(s["musts"])) or "<span class='muted'>configuration diff only</span>")
                   + "</td></tr>" for s in coverage["settings"])
    out.append(f"<details><summary>every documented setting ({totals['settings']}) and the MUSTs that depend on it"
               f"</summary><table class='data coverage-settings'><thead><tr><th>setting</th><th>stages</th>"
               f"<th>MUSTs</th></tr></thead><tbody>{rows}</tbody></table></details></section>")
    return "\n".join(out)
