"""A run's verdict: for each MUST of the runbook, held / broken / waived / not tested, why, and its figures.

Input is one record per test case (a parametrized test has several):

    {"nodeid", "outcome": passed|failed|error|skipped|xfailed|xpassed, "reason", "left_out",
     "duration", "requirement": {"id", "must", "section", "stage", "destructive"},
     "evidence": [{"kind", "title", "at", "content"}], "properties": {"restore_seconds": 1.2}}

`records_from_history` reads them from a run's results/<ts>/history.jsonl
(older runs); the pytest plugin (plugin.py) builds them from the session's
reports, which also know failure messages, skip and xfail reasons and the
user properties.  `build_verdict` aggregates them per MUST:

- held: every case passed (an xpass counts as passed);
- broken: a case failed or errored; an expected failure (xfail) is broken too,
  as a *known finding*, listed under findings;
- waived: no case failed, and a case failed only as a waiver of the MUST accepts
  (haconform/waivers.py; the case's outcome "waived", its failure kept as its reason);
  the other cases passed (or were skipped: the reason says so);
- not tested: every case skipped (the skip or left-out reason is the reason),
  only some cases ran, or the MUST (from the golden list) was not in the run.

The run's calibration (haconform/calibration.py: the probes, the factor per
category, the allowances it scaled) is kept as it was recorded, under
"calibration" (None where the run recorded none).

Figures come from evidence titles through FIGURES (one table) and the rule
that a number whose title ends in "(s)" is seconds; "requests to the wrong
server" is counted for MUSTs that say which server MUST serve a request.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from ..datafile import read_text_file
from ..errors import HaconformError
from ..redaction import HACLUSTER_PASSWORD_VARIABLE, discover_tree, redact, redact_obj, register
from ..stages.catalogue import load_catalogue, report_key

SCHEMA_VERSION = 1
HELD, BROKEN, WAIVED, NOT_TESTED = "held", "broken", "waived", "not tested"
VERDICTS = (HELD, BROKEN, WAIVED, NOT_TESTED)

# What a MUST's tests need of the deployment (its "reach"): only reading; a write (destructive, or a test
# marked writes_to_host), so against an existing deployment --allow-destructive; or a stage the deployment
# is not at (verify mode: every case left out "verify-only").
READ_ONLY, NEEDS_WRITE, NOT_AT_STAGE = "read-only", "needs --allow-destructive", "not at the deployment's stage"
REACHES = (READ_ONLY, NEEDS_WRITE, NOT_AT_STAGE)
VERIFY_ONLY = "verify-only"   # the reason's start StageManager and fixtures/stages.py give (fixtures/left_out.py)

# Evidence title (or a key of a "figures" dict, or a user property) -> (figure name, unit).
# Anything else numeric whose title ends in " (s)" becomes a figure in seconds named by its title.
FIGURES: dict[str, tuple[str, str]] = {
    "outage (s)": ("outage", "s"),
    "outage seen by the client (s)": ("outage", "s"),
    "crash -> fence completed (s)": ("fence time", "s"),
    "crash -> VIP served (s)": ("crash -> VIP served", "s"),
    "crash -> fenced node back online (s)": ("rejoin after fence", "s"),
    "rejoin after reset (s)": ("rejoin after reset", "s"),
    "NIC down -> VIP served (s)": ("NIC down -> VIP served", "s"),
    "restore_seconds": ("restore", "s"),          # user property (fixtures/restore.py)
}
WRONG_SERVER = ("requests to the wrong server", "requests")
# How the cases of one MUST combine into its figure: the worst case for times, the total for counts.
AGGREGATE = {"s": max, "requests": sum}
# "... MUST be served by app2 (server3)", "... MUST match ..., sending ... to app2 (server3)"
EXPECTED_SERVER = re.compile(r"\bMUST (?:be served by|.*?\bto) [\w-]+ \(([\w.-]+)\)")

OUTCOME_RANK = {"skipped": 0, "passed": 1, "xpassed": 1, "waived": 2, "xfailed": 2, "failed": 3, "error": 3}


# ----- records -----------------------------------------------------------------------------------

def _merge(into: dict, record: dict) -> None:
    into["evidence"] = into.get("evidence", []) + list(record.get("evidence") or [])
    if OUTCOME_RANK.get(record["outcome"], 0) >= OUTCOME_RANK.get(into["outcome"], 0):
        into["outcome"] = record["outcome"]
        if record.get("reason"):
            into["reason"], into["left_out"] = record["reason"], record.get("left_out", False)
    into["duration"] = (into.get("duration") or 0.0) + (record.get("duration") or 0.0)
    into["properties"] = {**into.get("properties", {}), **record.get("properties", {})}
    into["requirement"] = into.get("requirement") or record.get("requirement")
    into["waiver"] = into.get("waiver") or record.get("waiver")
    into["writes"] = into.get("writes") or record.get("writes")


def records_from_history(lines: Iterable[str]) -> list[dict]:
    """history.jsonl lines -> one record per node id, in first-seen order (a left-out setup skip
    and a call record of one test are merged)."""
    merged: dict[str, dict] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            raw = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"line {number} is not JSON ({exc})") from None
        if not isinstance(raw, dict) or "nodeid" not in raw:
            raise ValueError(f"line {number} is not a history row (no nodeid)")
        record = {"nodeid": raw["nodeid"], "outcome": raw.get("outcome", "passed"),
                  "reason": raw.get("reason") or raw.get("left_out"), "left_out": bool(raw.get("left_out")),
                  "duration": raw.get("duration") or 0.0, "requirement": raw.get("requirement"),
                  "evidence": raw.get("evidence") or [], "properties": raw.get("properties") or {},
                  "waiver": raw.get("waiver"), "writes": raw.get("writes")}
        if record["nodeid"] in merged:
            _merge(merged[record["nodeid"]], record)
        else:
            merged[record["nodeid"]] = record
    return list(merged.values())


def read_history(path: Path) -> list[dict]:
    """A run's history.jsonl; HaconformError naming the file and line when one is damaged (a run killed
    mid-write leaves a truncated last line)."""
    lines = read_text_file(Path(path), missing_fix="pass a run directory that has history.jsonl").splitlines()
    try:
        return records_from_history(lines)
    except ValueError as exc:
        raise HaconformError(str(exc), where=str(path),
                             fix="the run was cut short: remove its directory, or that line") from None


# ----- figures -----------------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def figure_for(title: str) -> tuple[str, str] | None:
    if title in FIGURES:
        return FIGURES[title]
    if title.endswith(" (s)"):
        return title[:-4], "s"
    return None


def expected_server(must: str) -> str | None:
    match = EXPECTED_SERVER.search(must or "")
    return match.group(1) if match else None


def served_by(evidence: list[dict]) -> list[str]:
    """Who answered each request a test recorded (evidence data carrying X-Real-Server)."""
    return [str(item["content"]["X-Real-Server"]) for item in evidence
            if item.get("kind") == "json" and isinstance(item.get("content"), dict)
            and item["content"].get("X-Real-Server")]


def case_figures(record: dict) -> dict[str, tuple[float, str]]:
    """{figure name: (value, unit)} of one test case."""
    found: dict[str, tuple[float, str]] = {}

    def add(title: str, value: Any) -> None:
        number = _number(value)
        figure = figure_for(title)
        if number is None or figure is None:
            return
        name, unit = figure
        if name in found:
            number = AGGREGATE.get(unit, max)([found[name][0], number])
        found[name] = (number, unit)

    for item in record.get("evidence") or []:
        if item.get("kind") != "json":
            continue
        content = item.get("content")
        if item.get("title") == "figures" and isinstance(content, dict):
            for key, value in content.items():
                add(key, value)
        else:
            add(item.get("title", ""), content)
    for key, value in (record.get("properties") or {}).items():
        if key in FIGURES:
            add(key, value)
    expected = expected_server((record.get("requirement") or {}).get("must", ""))
    answers = served_by(record.get("evidence") or [])
    if expected and answers:
        found[WRONG_SERVER[0]] = (float(sum(1 for a in answers if a != expected)), WRONG_SERVER[1])
    return found


def _figure_order(name: str) -> int:
    names = [n for n, _ in FIGURES.values()]
    return names.index(name) if name in names else len(names)


def must_figures(cases: list[dict]) -> list[dict]:
    combined: dict[str, tuple[float, str]] = {}
    for case in cases:
        for name, (value, unit) in case_figures(case).items():
            if name in combined:
                value = AGGREGATE.get(unit, max)([combined[name][0], value])
            combined[name] = (value, unit)
    return [{"name": name, "value": round(value, 3) if unit == "s" else int(value) if unit == "requests" else value,
             "unit": unit}
            for name, (value, unit) in sorted(combined.items(), key=lambda kv: (_figure_order(kv[0]), kv[0]))]


# ----- verdicts ----------------------------------------------------------------------------------

def case_label(nodeid: str) -> str:
    """The part that tells cases of one test apart: the parameters, else the test's name."""
    name = nodeid.split("::")[-1]
    return name[name.index("["):] if "[" in name else name


def _reasons(cases: list[dict], default: str) -> str:
    groups: dict[str, list[str]] = {}
    for case in cases:
        groups.setdefault(case.get("reason") or default, []).append(case_label(case["nodeid"]))
    if len(cases) == 1:
        return next(iter(groups))
    return "; ".join(f"{reason} ({', '.join(labels)})" if len(groups) > 1 else reason
                     for reason, labels in groups.items())


def _strip_finding(reason: str | None) -> str | None:
    return reason[len("finding: "):] if reason and reason.startswith("finding: ") else reason


def must_verdict(cases: list[dict]) -> tuple[str, str, bool]:
    """(verdict, reason, known finding) of one MUST from its cases."""
    if not cases:
        return NOT_TESTED, "not in this run", False
    n = len(cases)
    failed = [c for c in cases if c["outcome"] in ("failed", "error")]
    xfailed = [c for c in cases if c["outcome"] == "xfailed"]
    passed = [c for c in cases if c["outcome"] in ("passed", "xpassed")]
    skipped = [c for c in cases if c["outcome"] == "skipped"]
    if failed:
        if n == 1:
            return BROKEN, f"{failed[0]['outcome']}: {failed[0].get('reason') or 'no message recorded'}", False
        details = "; ".join(f"{case_label(c['nodeid'])} {c['outcome']}: {c.get('reason') or 'no message recorded'}"
                            for c in failed[:3])
        more = f"; {len(failed) - 3} more" if len(failed) > 3 else ""
        return BROKEN, f"{len(failed)} of {n} cases failed — {details}{more}", False
    waived = [c for c in cases if c["outcome"] == "waived"]
    if waived:
        return WAIVED, _waived_reason(waived, passed, skipped), False
    if xfailed:
        stripped = [{**c, "reason": _strip_finding(c.get("reason"))} for c in xfailed]
        recorded = any(c.get("reason") for c in xfailed)
        why = _reasons(stripped, "expected failure") if recorded else _finding_text(xfailed)
        return BROKEN, "known finding (expected failure): " + why, True
    if len(passed) == n:
        xpassed = [c for c in passed if c["outcome"] == "xpassed"]
        reason = "passed" if n == 1 else f"all {n} cases passed"
        if xpassed:
            reason += f" ({len(xpassed)} unexpectedly: {_reasons(xpassed, 'was expected to fail')})"
        return HELD, reason, False
    left_out = any(c.get("left_out") for c in skipped)
    why = _reasons(skipped, "skipped")
    label = "left out" if left_out else "skipped"
    if not passed:
        return NOT_TESTED, f"{label}: {why}", False
    return NOT_TESTED, f"only {len(passed)} of {n} cases ran (passed); {len(skipped)} {label}: {why}", False


def waiver_terms(waiver: dict) -> str:
    """"ticket OPS-1; expires 2027-03-01 (84 days left)": a waiver's ticket and expiry in words."""
    days = waiver.get("days_left")
    left = "expires today" if days == 0 else f"{days} day{'s' if days != 1 else ''} left"
    ticket = f"ticket {waiver['ticket']}; " if waiver.get("ticket") else ""
    return f"{ticket}expires {waiver['expires']} ({left})"


def _waived_reason(waived: list[dict], passed: list[dict], skipped: list[dict]) -> str:
    waivers: dict[str, dict] = {}
    for case in waived:
        for waiver in (case.get("waiver") or {}).get("waivers") or []:
            waivers.setdefault(waiver["source"], waiver)
    accepted = "; ".join(
        f"{w['reason']} ({waiver_terms(w)}; accepts "
        f"{w['difference']['key'] + ' = ' + w['difference']['found'] if w.get('difference') else 'any failure'})"
        for w in waivers.values()) or "by a waiver"
    total = len(waived) + len(passed) + len(skipped)
    counts = "" if total == 1 else f" ({len(waived)} of {total} cases waived, {len(passed)} passed" + (
        f", {len(skipped)} skipped: {_reasons(skipped, 'skipped')}" if skipped else "") + ")"
    failure = waived[0].get("reason") or "no message recorded"
    return f"waived: {accepted}{counts} — failed: {failure}"


def must_reach(meta: dict, cases: list[dict]) -> str | None:
    """The MUST's reach (REACHES) from its cases; None when none of them was in the run (nothing known of
    whether its tests write: the golden list says destructive, not writes_to_host)."""
    if not cases:
        return None
    if all(c["outcome"] == "skipped" and str(c.get("reason") or "").startswith(VERIFY_ONLY) for c in cases):
        return NOT_AT_STAGE
    if meta.get("destructive") or any(c.get("writes") for c in cases):
        return NEEDS_WRITE
    return READ_ONLY


def reach_summary(musts: list[dict], deployment_stage: str | None) -> dict:
    """How many MUSTs ran only reading, how many need a write (ran here, or left out for it), how many do
    not apply at the deployment's stage; with their IDs."""
    def ids(reach: str | None, ran: bool | None = None) -> list[str]:
        return [m["id"] for m in musts if m.get("reach") == reach
                and (ran is None or (m["verdict"] in (HELD, BROKEN)) == ran)]

    return {"deployment_stage": deployment_stage,
            "ran_read_only": ids(READ_ONLY, ran=True), "read_only_not_run": ids(READ_ONLY, ran=False),
            "need_allow_destructive": ids(NEEDS_WRITE), "needing_a_write_that_ran": ids(NEEDS_WRITE, ran=True),
            "not_at_stage": ids(NOT_AT_STAGE), "not_in_run": ids(None)}


def reach_text(reach: dict | None) -> str | None:
    """One line for the terminal and the page: 'N MUSTs ran read-only · M need --allow-destructive · ...'."""
    if not reach:
        return None
    plural = lambda n: "MUST" if n == 1 else "MUSTs"  # noqa: E731
    read_only, writes = len(reach["ran_read_only"]), len(reach["need_allow_destructive"])
    parts = [f"{read_only} {plural(read_only)} ran read-only"]
    if reach["read_only_not_run"]:
        parts[0] += f" ({len(reach['read_only_not_run'])} more read-only did not run)"
    ran_writing = len(reach["needing_a_write_that_ran"])
    parts.append(f"{writes} need{'s' if writes == 1 else ''} --allow-destructive"
                 + (f" ({ran_writing} ran, writing)" if ran_writing else ""))
    stage = reach.get("deployment_stage")
    if stage or reach["not_at_stage"]:   # a run that applies the stages puts the deployment in each test's
        parts.append(f"{len(reach['not_at_stage'])} do{'es' if len(reach['not_at_stage']) == 1 else ''} not apply "
                     + (f"at the deployment's stage ({stage})" if stage else "at the deployment's stage"))
    if reach["not_in_run"]:
        parts.append(f"{len(reach['not_in_run'])} not in this run")
    return " · ".join(parts)


def stage_key(stage: str) -> tuple[int, str]:
    """MUSTs by their `stage` label in the runbook's order of stages (haconform/stages/catalogue.py)."""
    return report_key(stage)


def _with_waiver_notes(cases: list[dict]) -> list[dict]:
    """A failed case a waiver did not accept says why (an expired waiver: "waiver expired on ...")."""
    out = []
    for case in cases:
        note = (case.get("waiver") or {}).get("note")
        if case["outcome"] in ("failed", "error") and note:
            case = {**case, "reason": f"{case.get('reason') or 'no message recorded'} ({note})"}
        out.append(case)
    return out


def waiver_account(waivers: list[dict], musts: list[dict]) -> list[dict]:
    """Each waiver of the run (WaiverSet.to_json) with what it did: the cases it waived, the cases that
    showed its difference, and its status: applied, expired, seen (its difference was there beside a failure no
    waiver accepts), or stale (it matched nothing in this run)."""
    by_id = {m["id"]: m for m in musts}
    account = []
    for waiver in waivers:
        source = waiver["source"]
        waived, seen = [], []
        for case in (by_id.get(waiver["id"]) or {}).get("cases") or []:
            judged = case.get("waiver") or {}
            if source in judged.get("applied", []) and case["outcome"] == "waived":
                waived.append(case["nodeid"])
            if source in judged.get("applied", []) + judged.get("seen", []) + judged.get("expired", []):
                seen.append(case["nodeid"])
        must = by_id.get(waiver["id"])
        stale = not waived and not seen
        if waiver.get("expired"):
            status = "expired"
        elif waived:
            status = "applied"
        elif seen:
            status = "seen"    # its difference was there, beside another failure: the case stayed broken
        else:
            status = "stale"
        why = None
        if stale:
            if must is None or not must.get("cases"):
                why = f"{waiver['id']} did not run"
            elif must["verdict"] == HELD:
                why = f"{waiver['id']} held: the deviation it accepts is gone (remove the waiver)"
            elif must["verdict"] == NOT_TESTED:
                why = f"{waiver['id']} was not tested: {must['reason']}"
            else:
                why = f"{waiver['id']} is {must['verdict']} without the difference it accepts"
        account.append({**waiver, "status": status, "stale": stale, "stale_because": why,
                        "waived_cases": waived, "seen_in": seen})
    return account


def with_section_titles(verdict: dict, titles: dict[str, str] | None) -> dict:
    """The verdict with each MUST's and finding's runbook section given its English title (section_en), and
    the headings it uses with their titles under "sections" (a verdict.json written before titles existed
    gets them too).  titles: suites/sections.yaml (haconform.conformance.read_section_titles)."""
    from ..conformance import english_title

    titles = dict(titles or {})
    used: dict[str, str] = dict(verdict.get("sections") or {})
    for item in [*verdict.get("musts", []), *verdict.get("findings", [])]:
        section = item.get("section") or ""
        english = item.get("section_en") or english_title(section, {**titles, **used})
        item["section_en"] = english
        for part in filter(None, (p.strip() for p in section.split(","))):
            if part in titles:
                used.setdefault(part, titles[part])
    verdict["sections"] = used
    return verdict


def build_verdict(records: list[dict], *, run: dict | None = None, golden: list[dict] | None = None,
                  notes: list[dict] | None = None, stages: dict[str, str] | None = None,
                  calibration: dict | None = None, waivers: list[dict] | None = None,
                  coverage: dict | None = None, section_titles: dict[str, str] | None = None) -> dict:
    """The machine-readable verdict (verdict.json, schema_version 1).

    golden: suites/conformance.yaml rows, so MUSTs absent from the run show as not tested;
    notes: [{"stage", "text"}] from the stage data's `notes:`; stages: {stage: title};
    section_titles: {runbook heading: English title} (suites/sections.yaml);
    calibration: Calibration.to_json() of the run (haconform/calibration.py), None where the
    run recorded none (an older run, a run that never brought the target up);
    waivers: the run's waivers (haconform/waivers.py WaiverSet.to_json), accounted for under "waivers";
    coverage: the runbook's coverage (haconform/coverage.py), kept as given."""
    by_id: dict[str, list[dict]] = {}
    meta: dict[str, dict] = {}
    for row in golden or []:
        meta[row["id"]] = {"id": row["id"], "must": row["must"], "section": row["section"], "stage": row["stage"],
                           "destructive": bool(row.get("destructive"))}
        by_id.setdefault(row["id"], [])
    for record in records:
        requirement = record.get("requirement")
        if not requirement:
            continue
        meta.setdefault(requirement["id"], {"id": requirement["id"], "must": requirement.get("must", ""),
                                            "section": requirement.get("section", ""),
                                            "stage": requirement.get("stage", ""),
                                            "destructive": bool(requirement.get("destructive"))})
        by_id.setdefault(requirement["id"], []).append(record)
    musts = []
    findings = []
    for must_id in sorted(by_id, key=lambda i: (stage_key(meta[i]["stage"]), i)):
        cases = _with_waiver_notes(by_id[must_id])
        verdict, reason, known = must_verdict(cases)
        applied: dict[str, dict] = {}
        for case in cases:
            if case["outcome"] == "waived":
                for waiver in (case.get("waiver") or {}).get("waivers") or []:
                    applied.setdefault(waiver["source"], waiver)
        entry = {**meta[must_id], "verdict": verdict, "reason": reason, "known_finding": known,
                 "waivers": list(applied.values()) if verdict == WAIVED else [],
                 "reach": must_reach(meta[must_id], cases),
                 "figures": must_figures(cases), "nodeids": [c["nodeid"] for c in cases],
                 "cases": [{"nodeid": c["nodeid"], "outcome": c["outcome"], "reason": c.get("reason"),
                            "duration_s": round(c.get("duration") or 0.0, 3), "writes": c.get("writes"),
                            **({"waiver": c["waiver"]} if c.get("waiver") else {})} for c in cases]}
        musts.append(entry)
        xfailed = [c for c in cases if c["outcome"] == "xfailed"]
        if xfailed:
            findings.append({"kind": "xfail", "id": must_id, "stage": entry["stage"], "section": entry["section"],
                             "text": _finding_text(xfailed), "nodeids": [c["nodeid"] for c in xfailed]})
    for note in notes or []:
        findings.append({"kind": "note", "id": None, "stage": note["stage"], "section": note.get("section", ""),
                         "text": note["text"], "nodeids": []})
    run = dict(run or {})
    run.setdefault("versions", versions_from_evidence(records))
    run["verdicts"] = {v: sum(1 for m in musts if m["verdict"] == v) for v in VERDICTS}
    run["known_findings"] = sum(1 for m in musts if m["known_finding"])
    run["reach"] = reach_summary(musts, run.get("deployment_stage"))
    outcomes: dict[str, int] = {}
    for record in records:
        if record.get("requirement"):
            outcomes[record["outcome"]] = outcomes.get(record["outcome"], 0) + 1
    run["tests"] = outcomes
    account = waiver_account(waivers or [], musts)
    verdict = {"schema_version": SCHEMA_VERSION, "run": run, "stages": dict(stages or {}),
               "musts": musts, "findings": findings, "calibration": calibration, "waivers": account,
               "stale_waivers": [w["source"] for w in account if w["stale"]], "coverage": coverage}
    return redact_tree(with_section_titles(verdict, section_titles))


def _finding_text(xfailed: list[dict]) -> str:
    reasons = [c.get("reason") for c in xfailed if c.get("reason")]
    if reasons:
        return _strip_finding(reasons[0])
    for case in xfailed:   # older histories keep no xfail reason: the test's own "why" evidence
        for item in case.get("evidence") or []:
            if item.get("title") == "why":
                return "why: " + json.dumps(item.get("content"), ensure_ascii=False)
    return "the reason is not recorded in history.jsonl (see the run's conformance.html)"


def redact_tree(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redact_tree(v) for v in value]
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    return value


# ----- the run: versions, notes, times -----------------------------------------------------------

VERSION_TOKEN = re.compile(r"(\d+\.\d+[\w.+~:-]*)")
# One command on a director, run once by the plugin while the target is up: name -> command.
VERSION_COMMANDS = {"haproxy": "haproxy -v", "pacemaker": "pacemakerd --version", "corosync": "corosync -v",
                    "pcs": "pcs --version"}


def version_probe_command() -> str:
    return "; ".join(f"echo '@@{name}'; {command} 2>/dev/null | head -n 1"
                     for name, command in VERSION_COMMANDS.items())


def parse_version_probe(output: str) -> dict[str, str]:
    versions: dict[str, str] = {}
    name = None
    for line in output.splitlines():
        if line.startswith("@@"):
            name = line[2:].strip()
            continue
        if name and line.strip() and name not in versions:
            match = VERSION_TOKEN.search(line.split(",")[-1] if name == "corosync" else line)
            if match:
                versions[name] = match.group(1).strip("'")
    return versions


def versions_from_evidence(records: list[dict]) -> dict[str, str]:
    """Versions the tests happened to record: haproxy -c's "HAProxy version ...", the cluster stage's pcs."""
    versions: dict[str, str] = {}

    def walk(value: Any, parent: str = "") -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key == "version" and isinstance(inner, str):
                    if inner.startswith("HAProxy version"):
                        match = VERSION_TOKEN.search(inner)
                        if match:
                            versions.setdefault("haproxy", match.group(1))
                    elif parent in VERSION_COMMANDS:
                        versions.setdefault(parent, inner)
                else:
                    walk(inner, key)
        elif isinstance(value, list):
            for inner in value:
                walk(inner, parent)

    for record in records:
        for item in record.get("evidence") or []:
            if item.get("kind") == "json":
                walk(item.get("content"))
        if len(versions) == len(VERSION_COMMANDS):
            break
    return versions


def stage_notes(config_dir: Path | None) -> tuple[list[dict], dict[str, str]]:
    """([{"stage", "section", "text"}], {stage: title}) from each stage.yaml's `notes:` and `title:`, as the
    stages package reads them: a malformed stage.yaml is one HaconformError naming the file and the fix."""
    notes: list[dict] = []
    titles: dict[str, str] = {}
    if not config_dir or not Path(config_dir).is_dir():
        return notes, titles
    for stage in load_catalogue(config_dir).stages:
        if stage.title:
            titles[stage.name] = stage.title
        notes += [{"stage": stage.name, "section": ", ".join(stage.sections), "text": text} for text in stage.notes]
    return notes, titles


def register_configuration_secrets(verdicts: Iterable[dict | None], default_config: Path | None) -> list[Path]:
    """Register the secrets of the configurations these runs used, before anything about them is written
    (`haconform report`: a run written before a secret was known, a stats password in its evidence).

    Each run's recorded configuration directory (verdict.json's run.config) where it still exists, else
    default_config (fixtures/documented); and a deployment's hacluster password from the environment.
    Returns the directories read."""
    directories = []
    for verdict in verdicts:
        recorded = ((verdict or {}).get("run") or {}).get("config")
        directory = Path(recorded) if recorded and Path(recorded).is_dir() else default_config
        if directory is not None and Path(directory).is_dir() and Path(directory) not in directories:
            directories.append(Path(directory))
    for directory in directories:
        discover_tree(directory)
    register(os.environ.get(HACLUSTER_PASSWORD_VARIABLE), what="the hacluster password",
             where=f"{HACLUSTER_PASSWORD_VARIABLE} (environment)",
             fix=f"export {HACLUSTER_PASSWORD_VARIABLE} with a password of at least 4 characters, or unset it")
    return directories


def tree_digest(directory: Path | None) -> str | None:
    """sha256 over every file under a directory (its path relative to it and its bytes): two runs with the
    same digest read the same configuration, wherever the directory was."""
    import hashlib

    if directory is None or not Path(directory).is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def read_golden(path: Path | None) -> list[dict]:
    import yaml

    if not path or not Path(path).is_file():
        return []
    rows = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or []
    return [r for r in rows if isinstance(r, dict) and "id" in r]


def stamp_time(name: str) -> float | None:
    """results/<ts>/ is named time.strftime('%Y%m%d-%H%M%S') (local time) when the run started."""
    try:
        return time.mktime(time.strptime(name[:15], "%Y%m%d-%H%M%S"))
    except ValueError:
        return None


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds") if ts else None


def run_from_history(run_dir: Path, records: list[dict]) -> dict:
    """The run header of an older run that kept only history.jsonl: the start from the directory's
    name, the end from the last evidence recorded (so an estimate)."""
    started = stamp_time(run_dir.name)
    last = max((item.get("at") or 0.0 for r in records for item in r.get("evidence") or []), default=0.0)
    duration = (last - started) if started and last > started else sum(r.get("duration") or 0.0 for r in records)
    return {"target": {"target": "unknown (not recorded in history.jsonl)"}, "run_dir": run_dir.name,
            "started": iso(started), "started_unix": started, "duration_s": round(duration, 1),
            "duration_estimated": True, "source": "history.jsonl"}


def verdict_from_history(run_dir: Path, *, golden: list[dict] | None = None, config_dir: Path | None = None,
                         section_titles: dict[str, str] | None = None) -> dict | None:
    """A verdict for a run dir without verdict.json; None when its history has no conformance test."""
    history = Path(run_dir) / "history.jsonl"
    if not history.is_file():
        return None
    records = read_history(history)
    if not any(r.get("requirement") for r in records):
        return None
    notes, titles = stage_notes(config_dir)
    return build_verdict(records, run=run_from_history(Path(run_dir), records), golden=golden, notes=notes,
                         stages=titles, section_titles=section_titles)


def load_verdict(run_dir: Path, *, golden: list[dict] | None = None, config_dir: Path | None = None) -> dict | None:
    path = Path(run_dir) / "verdict.json"
    if path.exists():
        return read_json_mapping(path, what="a verdict")
    return verdict_from_history(run_dir, golden=golden, config_dir=config_dir)


def read_json_mapping(path: Path, *, what: str) -> dict:
    """A run's JSON file (verdict.json, summary.json); HaconformError naming it when it is damaged."""
    text = read_text_file(Path(path), missing_fix="pass a run directory of results/")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise HaconformError(f"not valid JSON ({exc})", where=str(path),
                             fix="the run was cut short: remove its directory, or run the session again") from None
    if not isinstance(data, dict):
        raise HaconformError(f"not {what} (a JSON {type(data).__name__}, not an object)", where=str(path),
                             fix="remove the run's directory, or run the session again")
    return data


def write_json(verdict: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(redact_obj(verdict), indent=1, ensure_ascii=False, default=str)
    path.write_text(redact(text) + "\n", encoding="utf-8")


def format_value(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.2f}".rstrip("0").rstrip(".") + " s"
    if unit == "requests":
        return f"{value:g}"
    if unit:
        return f"{value:g} {unit}"
    return f"{value:g}"
