"""verdict.json and verdict.html at the end of every session that ran conformance tests.

Registered by the haconform pytest plugin.  It follows each conformance test's
reports (setup, call, teardown: failure messages, skip and xfail reasons, the
user properties such as restore_seconds), takes the evidence from the run's
history.jsonl (the same, redacted, that trends read later), and at session end
writes verdict.json and verdict.html beside --junitxml's report (else into
reports/ under the rootdir), and a copy of verdict.json into results/<ts>/.

Software versions: one command on a director, once, while the first test that
uses the deployment is set up (haproxy -v, pacemakerd --version, corosync -v,
pcs --version); what the evidence itself records fills the gaps.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import pytest

from ..conformance import SECTION_TITLES, Requirement, read_section_titles, requirement_of
from ..errors import HaconformError
from ..side_by_side import is_worker, merge_host_access, worker_id
from ..stages.manager import declared_stage, stages_mode_of
from ..stash import GUARD, SESSION_STOPPED, WORKER_OUTPUTS
from ..redaction import redact
from ..timeouts import BOUNDS
from .html import render_verdict_html
from .messages import failure_message, skip_message
from .verdict import (BROKEN, HELD, NOT_TESTED, WAIVED, build_verdict, iso, parse_version_probe, reach_text,
                      read_golden, read_history, stage_notes, tree_digest, version_probe_command,
                      versions_from_evidence,
                      write_json)

log = logging.getLogger("haconform.report")
VERSION_ATTEMPTS = 3


def source_commit(root: Path) -> str | None:
    """The commit the suites ran from, so two runs (lab and VM) can be checked to be of one commit."""
    if os.environ.get("GITHUB_SHA"):
        return os.environ["GITHUB_SHA"]
    try:
        # safe.directory: root runs the suites in a checkout another user owns (a CI runner's)
        out = subprocess.run(["git", "-c", f"safe.directory={root}", "-C", str(root), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=BOUNDS.cli_query)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def stage_mode(config) -> dict:
    """How the run put the deployment in its stages: applied, or verified at the declared stage (as
    fixtures/stages.py decides it), so trends can tell runs of different modes apart."""
    mode = config.getoption("--stages") or ("verify" if config.getoption("--target") == "ssh" else "apply")
    inventory = getattr(config, "_haconform_inventory", None)
    declared = inventory.stage if inventory is not None else config.getoption("--deployment-stage")
    return {"mode": mode, "deployment_stage": declared if mode == "verify" else None}


def waiver_sources(config) -> dict:
    """Where the run's waivers came from and a digest of them: waivers change verdicts as a configuration does."""
    import hashlib
    import json

    waivers = getattr(config, "_haconform_waivers", None)
    if not waivers:
        return {"sources": [], "count": 0, "digest": None}
    text = json.dumps([{k: v for k, v in w.__dict__.items() if k != "source"} for w in waivers.waivers],
                      default=str, sort_keys=True)
    return {"sources": list(waivers.sources), "count": len(waivers.waivers),
            "digest": hashlib.sha256(text.encode()).hexdigest()}


def pytest_configure(config):
    config.pluginmanager.register(VerdictReport(config), "haconform-verdict-report")


def deployment_stage(config) -> str | None:
    """The stage the deployment is declared at in a verify run (None when the run applies the stages)."""
    return declared_stage(config) if stages_mode_of(config) == "verify" else None


# The reasons fixtures/left_out.py gives tests left out against a read-only target (kept equal by a test).
LEFT_OUT_PREFIXES = ("destructive:", "verify-only", "writes to a host:")


def skipped(case: dict, report, xfail: str | None) -> None:
    """A skip: an expected failure (xfail), or a test left out or skipped, with its reason."""
    if xfail is not None:
        case.update(outcome="xfailed", reason=redact(xfail) or None)
        return
    reason = skip_message(report)
    case.update(outcome="skipped", reason=reason, left_out=reason.startswith(LEFT_OUT_PREFIXES))


class VerdictReport:
    def __init__(self, config):
        self.config = config
        self.started = time.time()
        self.requirements: dict[str, object] = {}     # nodeid -> Requirement, in collection order
        self.cases: dict[str, dict] = {}
        self.versions: dict[str, str] = {}
        self.target: dict | None = None
        self._attempts = 0
        self.written: dict[str, Path] = {}
        self.summary: dict | None = None
        self.collected: set[str] = set()      # side by side: the test ids the workers collected
        self.titles_problem: str | None = None   # suites/sections.yaml could not be read

    # ----- what ran -----
    def pytest_collection_finish(self, session):
        for item in session.items:
            requirement = requirement_of(item)
            if requirement is not None:
                self.requirements[item.nodeid] = requirement

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        """Side by side the controller collects nothing itself: what the workers collected, by id (the
        golden list maps a test to its MUST, for "not selected" against "did not run")."""
        self.collected.update(ids)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_setup(self, item):
        """After the test's fixtures are set up: the target is up and in the test's stage."""
        if self._attempts >= VERSION_ATTEMPTS or (self.versions and self.target):
            return
        funcargs = getattr(item, "funcargs", {})
        if self.target is None and "target" in funcargs:
            try:
                self.target = funcargs["target"].describe()
            except Exception as exc:   # a report must never fail a test
                log.debug("target.describe(): %s", exc)
        deployment = funcargs.get("deployment")
        if deployment is None or self.versions:
            return
        self._attempts += 1
        for director in deployment.directors:
            try:
                versions = parse_version_probe(director.execute(version_probe_command()).stdout)
            except Exception as exc:
                log.debug("versions on %s: %s", director.name, exc)
                continue
            if versions:
                self.versions = versions
                return

    def pytest_runtest_logreport(self, report):
        requirement = self.requirements.get(report.nodeid)
        if requirement is None and getattr(report, "haconform_requirement", None):
            # Side by side: the controller learns each test's MUST from its reports, in the order they come.
            requirement = self.requirements[report.nodeid] = Requirement(**report.haconform_requirement)
        if requirement is None:
            return
        case = self.cases.setdefault(report.nodeid, {
            "nodeid": report.nodeid, "outcome": None, "reason": None, "left_out": False, "duration": 0.0,
            "requirement": requirement.__dict__, "evidence": [], "properties": {}, "writes": None})
        case["writes"] = case["writes"] or getattr(report, "haconform_writes", None)
        case["duration"] += report.duration or 0.0
        for name, value in report.user_properties:
            if name not in ("conformance_id", "must", "runbook_section", "stage"):
                case["properties"][name] = value
        xfail = getattr(report, "wasxfail", None)
        if report.when == "setup":
            if report.failed:
                case.update(outcome="error", reason="setup: " + failure_message(report))
            elif report.skipped:
                skipped(case, report, xfail)
        elif report.when == "call":
            waiver = getattr(report, "haconform_waiver", None)
            if waiver is not None:
                case["waiver"] = waiver
            if waiver is not None and waiver["outcome"] == "waived":
                case.update(outcome="waived", reason=waiver["failure"])
            elif report.passed:
                case.update(outcome="xpassed" if xfail is not None else "passed",
                            reason=redact(xfail) if xfail else None)
            elif report.failed:
                case.update(outcome="failed", reason=failure_message(report))
            elif report.skipped:
                skipped(case, report, xfail)
        elif report.when == "teardown" and report.failed:
            if case["outcome"] in (None, "passed", "xpassed"):
                case.update(outcome="error", reason="teardown: " + failure_message(report))

    # ----- the verdict -----
    def output_dir(self) -> Path:
        xmlpath = getattr(self.config.option, "xmlpath", None)
        return Path(xmlpath).resolve().parent if xmlpath else self.config.rootpath / "reports"

    def records(self) -> list[dict]:
        run_dir: Path = self.config._haconform_run_dir
        history = run_dir / "history.jsonl"
        evidence = {r["nodeid"]: r.get("evidence") or [] for r in read_history(history)} if history.is_file() else {}
        records = []
        for nodeid in self.requirements:
            case = self.cases.get(nodeid)
            if case is None or case["outcome"] is None:
                continue   # never ran (deselected later, or the session stopped): the MUST shows not tested
            records.append({**case, "evidence": evidence.get(nodeid, [])})
        return records

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        if is_worker(self.config):
            self.report_back()
            return
        if not self.requirements or self.config.option.collectonly:
            return   # no conformance test in this session (unit tests, perf), or nothing ran
        try:
            self.write(exitstatus)
        except Exception as exc:   # the verdict is a report: it never changes the session's outcome
            log.warning("haconform: verdict not written: %s", exc)
            self.summary = {"error": str(exc)}

    def report_back(self) -> None:
        """A worker's part of the verdict, for the controller (haconform/side_by_side.py): its lab, bring-up,
        calibration, the versions it read, its guard's account, and a restore that failed."""
        config = self.config
        guard = config.stash.get(GUARD, None)
        config.workeroutput["haconform"] = {
            "worker": worker_id(config), "target": self.target, "versions": self.versions,
            "figures": dict(getattr(config, "_haconform_figures", None) or {}),
            "calibration": getattr(config, "_haconform_calibration", None),
            "host_access": guard.summary() if guard is not None else None,
            "stopped": config.stash.get(SESSION_STOPPED, None)}

    def worker_parts(self) -> list[dict]:
        return [output for output in self.config.stash.get(WORKER_OUTPUTS, []) if output]

    def merged_parts(self) -> dict:
        """The target, figures, calibration, versions and host access of the run: this process's own, or
        side by side what each worker reported back, as one (each lab kept under "labs")."""
        config = self.config
        guard = config.stash.get(GUARD, None)
        own = {"target": self.target, "versions": self.versions,
               "figures": dict(getattr(config, "_haconform_figures", None) or {}),
               "calibration": getattr(config, "_haconform_calibration", None),
               "host_access": guard.summary() if guard is not None else None}
        parts = self.worker_parts()
        if not parts:
            return own
        labs = [{"worker": p["worker"], "lab": (p.get("target") or {}).get("lab"), "figures": p.get("figures") or {},
                 "calibration": (p.get("calibration") or {}).get("summary")} for p in parts]
        targets = [p["target"] for p in parts if p.get("target")]
        target = dict(targets[0]) if targets else {"target": config.getoption("--target")}
        if len(targets) > 1:
            target["labs"] = [t.get("lab") for t in targets]
        ups = [p["figures"].get("target_up_s") for p in parts if (p.get("figures") or {}).get("target_up_s")]
        calibrations = [p["calibration"] for p in parts if p.get("calibration")]
        # The verdict shows one calibration: the slowest lab's (its allowances were the widest).
        slowest = max(calibrations, key=lambda c: max((x["factor"] for x in c.get("categories", [])), default=1.0),
                      default=None)
        return {"target": target,
                "versions": {k: v for p in parts for k, v in (p.get("versions") or {}).items()},
                "figures": {"labs": len(parts), **({"target_up_s": max(ups)} if ups else {})},
                "calibration": slowest, "labs": labs,
                "host_access": merge_host_access([p.get("host_access") for p in parts])}

    def write(self, exitstatus) -> None:
        config = self.config
        records = self.records()
        finished = time.time()
        merged = self.merged_parts()
        versions = {**versions_from_evidence(records), **merged["versions"]}
        run_dir: Path = config._haconform_run_dir
        run = {"target": merged["target"] or {"target": config.getoption("--target")},
               "run_dir": run_dir.name, "run_path": str(run_dir), "started": iso(self.started), "started_unix": round(self.started, 3),
               "finished": iso(finished), "duration_s": round(finished - self.started, 1),
               "versions": versions, "exit_status": int(exitstatus), "source": "session",
               "config": str(config._haconform_config_dir),
               "config_digest": tree_digest(config._haconform_config_dir),
               "stage_mode": stage_mode(config),
               "waivers": waiver_sources(config),
               "deployment_stage": deployment_stage(config),
               "figures": merged["figures"],
               "commit": source_commit(config.rootpath)}
        if merged.get("labs"):
            run["labs"] = merged["labs"]
        if merged["host_access"] is not None:
            run["host_access"] = merged["host_access"]
        stopped = config.stash.get(SESSION_STOPPED, None)
        if stopped is not None:
            run["stopped"] = stopped
            case = self.cases.get(stopped["test"])
            if case is not None and case["outcome"] in (None, "passed", "xpassed"):
                case.update(outcome="error", reason="teardown: " + stopped["message"])
                records = self.records()
        notes, titles = stage_notes(config._haconform_config_dir)
        golden = read_golden(config.rootpath / "suites" / "conformance.yaml")
        collected = {nodeid.split("[")[0].split("/")[-1] for nodeid in self.collected}
        selected = {r.id for r in self.requirements.values()} | {row["id"] for row in golden
                                                                  if row.get("test") in collected}
        waivers = getattr(config, "_haconform_waivers", None)
        verdict = build_verdict(records, run=run, golden=golden, notes=notes, stages=titles,
                                calibration=merged["calibration"],
                                waivers=waivers.to_json(config._haconform_today) if waivers else [],
                                coverage=self.coverage(golden), section_titles=self.section_titles())
        for must in verdict["musts"]:
            if must["verdict"] == NOT_TESTED and not must["cases"]:
                must["reason"] = ("not selected in this run" if must["id"] not in selected
                                  else "did not run (the session stopped before it)")
        out = self.output_dir()
        write_json(verdict, out / "verdict.json")
        (out / "verdict.html").write_text(redact(render_verdict_html(verdict, records)), encoding="utf-8")
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(verdict, run_dir / "verdict.json")
        self.written = {"json": out / "verdict.json", "html": out / "verdict.html", "run": run_dir / "verdict.json"}
        self.summary = verdict["run"]["verdicts"] | {"known": verdict["run"]["known_findings"],
                                                     "stale": verdict["stale_waivers"],
                                                     "host_access": (run.get("host_access") or {}).get("statement"),
                                                     "reach": reach_text(verdict["run"]["reach"])}

    def section_titles(self) -> dict[str, str]:
        """The English titles of the runbook's sections; without them (a damaged file) the page shows the
        headings alone, and the terminal says why."""
        path = self.config.rootpath / "suites" / SECTION_TITLES
        if not path.exists():
            return {}
        try:
            return read_section_titles(path)
        except HaconformError as exc:
            self.titles_problem = str(exc)
            return {}

    def coverage(self, golden: list[dict]) -> dict | None:
        """The runbook's coverage (haconform/coverage.py) by the stages this run read and the golden list (or,
        without one, the MUSTs collected)."""
        from ..coverage import compute_coverage
        rows = golden or [{"id": r.id, "section": r.section, "settings": list(getattr(r, "settings", ()))}
                          for r in {r.id: r for r in self.requirements.values()}.values()]
        try:
            return compute_coverage(rows, getattr(self.config, "_haconform_stages", None) or {})
        except Exception as exc:   # coverage is a report: a file it cannot read leaves it out, nothing more
            log.warning("haconform: runbook coverage not computed: %s", exc)
            return None

    def pytest_terminal_summary(self, terminalreporter):
        if self.titles_problem:
            terminalreporter.write_line(f"haconform verdict: section titles left out ({self.titles_problem})")
        if not self.summary:
            return
        if "error" in self.summary:
            terminalreporter.write_line(f"haconform verdict: not written ({self.summary['error']})")
            return
        s = self.summary
        known = f" ({s['known']} known finding{'s' if s['known'] != 1 else ''})" if s["known"] else ""
        waived = f", {s[WAIVED]} waived" if s[WAIVED] else ""
        terminalreporter.write_line(
            f"haconform verdict: {s[HELD]} held, {s[BROKEN]} broken{known}{waived}, {s[NOT_TESTED]} not tested -> "
            f"{self.written['html']} ({self.written['json'].name}; copy in {self.written['run'].parent})")
        if s.get("stale"):
            terminalreporter.write_line(f"haconform waivers: stale (matched nothing in this run): "
                                        f"{', '.join(s['stale'])}")
        if s.get("host_access"):
            terminalreporter.write_line(f"haconform host access: {s['host_access']}")
        if s.get("reach"):
            terminalreporter.write_line(f"haconform read-only reach: {s['reach']}")
