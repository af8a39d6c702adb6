"""A perf run: phases in order, each run's history kept under results/<timestamp>/.

    direct      the mixed workload straight to a real server
    vip         the same workload through the VIP
    reference   locust with the one-URL class through the VIP ...
    wrk         ... and wrk against that URL, same connections and duration
    reference_direct, wrk_direct   the same pair straight to the real server
    fault       (optional) the mixed workload through the VIP, a fault injected mid-run

Before the phases the generator and the system under test are placed on
separate CPUs (placement.py; undone afterwards).  After them each locust
phase gets its generator verdict (summary.generator_verdict): locust against
wrk on the same URL and target, and the generator's CPU in that phase.

The run writes locust's CSVs and final JSON per phase, wrk's JSON, options.json,
summary.json and report.html.  Nothing here asserts: the perf tests judge.

Against an existing deployment (target ssh) a run changes nothing on its
hosts unless --allow-destructive, the suites' opt-in: a --perf-fault, and a
--perf-placement that moves the deployment's processes to other CPUs, are
refused before anything starts (read_only_refusal), and the mixed workload
runs without its uploader, whose files a real server would store
(mixed_classes; summary.json says so).  The generator's work
directories are private (`mktemp -d`, load.py) and removed after the run;
summary.json keeps their paths.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .. import deadman
from ..errors import HaconformError
from ..redaction import redact, redact_obj
from ..faults import FaultRun, audit, make_fault
from .load import (MIXED_CLASSES, REFERENCE_CLASS, REFERENCE_PATH, ClientHost, LoadShape, run_locust,
                   run_wrk)
from .placement import pin_hosts, plan_placement, sut_machines, unpin_hosts
from .report import PHASE_TITLES, phase_plot_svg, render_html
from .summary import (generator_verdict, history_series, per_second_table, phase_summary, ratios,
                      second_series, wrk_summary)

log = logging.getLogger("haconform.perf")
# Where upload_file.php stores files (stage 3); the run removes what it uploaded.
UPLOAD_DIR = "/var/www/html/upload"
UPLOADED = "perf-*.gif"
UPLOADER = "Uploader"


@dataclass
class PerfOptions:
    shape: LoadShape = field(default_factory=LoadShape)
    reference_duration_s: int = 10
    fault: str | None = None
    fault_at_s: float = 10.0
    fault_duration_s: int = 60
    python: str | None = None                # --perf-python; None: per host (load.generator_python)
    placement: str = "auto"                  # --perf-placement: auto, none or GEN:SUT
    worker_hosts: tuple[str, ...] = ()       # topology hosts that run more locust workers
    remote_workers: int = 1                  # workers in each of them

    def as_dict(self) -> dict:
        data = asdict(self)
        data.update(data.pop("shape"))
        return data


@dataclass
class FaultSchedule:
    fault: object
    at_s: float
    lasts_s: float = 0.0          # the phase's length: the change stays until the phase has ended
    injected_at: float | None = None
    action: str = ""

    def __call__(self, elapsed: float) -> None:
        if self.injected_at is None and elapsed >= self.at_s:
            self.injected_at = time.time()
            self.action = self.fault.inject(lasts_s=self.lasts_s)


def mixed_classes(target) -> tuple[tuple[str, ...], dict[str, str]]:
    """The mixed workload's user classes for this target, and those left out with why: the uploader stores
    files on a real server, which an existing deployment (ssh) allows only with --allow-destructive."""
    if target.kind != "ssh" or target.destructive_allowed:
        return MIXED_CLASSES, {}
    return (tuple(c for c in MIXED_CLASSES if c != UPLOADER),
            {UPLOADER: f"writes to a host: GIFs stored in {UPLOAD_DIR} on a real server; left out against an SSH "
                       "target without --allow-destructive"})


def read_only_refusal(*, target_kind: str, destructive_allowed: bool, fault: str | None,
                      placement: str | None) -> str | None:
    """Why this perf run may not start against the target, or None.  The suites' rule: against an
    existing deployment (ssh) only --allow-destructive lets the harness change its hosts."""
    if target_kind != "ssh" or destructive_allowed:
        return None
    if fault:
        return (f"--perf-fault {fault} injects a fault into the deployment: against --target ssh it needs "
                f"--allow-destructive as well (fix: add --allow-destructive to inject it into this deployment, "
                f"or drop --perf-fault for a run that only sends load)")
    if plan_placement(placement, target_kind).sut_cpus:
        return (f"--perf-placement {placement} moves the deployment's processes to other CPUs: against --target "
                f"ssh it needs --allow-destructive as well (fix: add --allow-destructive, or pass "
                f"--perf-placement GEN: without a SUT list, or none)")
    return None


def worker_host(deployment, name: str, python: str | None, cpus: str | None) -> ClientHost:
    """A topology host that runs locust workers besides the client host; never the harness
    machine's own root namespace (the lab's traffic comes from lab hosts only)."""
    machine = deployment.machine(name)
    if machine.transport_kind == "local":
        raise HaconformError(f"{name} runs commands on this machine itself: a locust worker there would "
                             "send from the machine's own network namespace", where="--perf-worker-host",
                             fix="name a host reached by ssh or in a network namespace")
    return ClientHost(machine, python, cpus=cpus)


def run_perf(deployment, options: PerfOptions, out_dir: Path, *, evidence=None,
             progress: Callable[[str], None] = lambda line: None) -> dict:
    target = deployment.target
    refused = read_only_refusal(target_kind=target.kind, destructive_allowed=target.destructive_allowed,
                                fault=options.fault, placement=options.placement)
    if refused:
        raise HaconformError(refused, where="haconform perf")
    placement = plan_placement(options.placement, target.kind)
    client = ClientHost(deployment.client, options.python, cpus=placement.generator_cpus)
    workers = [worker_host(deployment, name, options.python, placement.generator_cpus)
               for name in options.worker_hosts]
    out_dir.mkdir(parents=True, exist_ok=True)
    workdirs: dict[str, str | None] = {}
    try:
        for host in [client, *workers]:
            host.prepare()
        summary, files = _run_phases(deployment, options, out_dir, client, workers, placement,
                                     evidence=evidence, progress=progress)
    finally:
        for host in [client, *workers]:
            workdirs[host.machine.name] = host.cleanup()
    summary["workdirs"] = workdirs
    for name, text in files.items():
        (out_dir / name).write_text(redact(text))
    (out_dir / "summary.json").write_text(redact(json.dumps(redact_obj(summary), indent=1, default=str)))
    (out_dir / "report.html").write_text(render_html(summary, plots_for(summary, files)))
    return summary


def _run_phases(deployment, options: PerfOptions, out_dir: Path, client: ClientHost, workers: list[ClientHost],
                placement, *, evidence, progress: Callable[[str], None]) -> tuple[dict, dict[str, str]]:
    """The phases on prepared generator hosts: (summary, the files each phase produced)."""
    shape = options.shape
    mixed, left_out = mixed_classes(deployment.target)
    if left_out:
        progress(f"{'workload':<12} without {', '.join(left_out)}: {'; '.join(left_out.values())}")
    if not shape.workers:
        # as many workers as the generator has CPUs: one locust process uses one CPU at most
        shape.workers = client.cpus_allowed or 2
    (out_dir / "options.json").write_text(
        redact(json.dumps(redact_obj({**options.as_dict(), "python": client.python}), indent=1)))
    sut = sut_machines(deployment)
    direct = deployment.realservers[0]
    urls = {"direct": deployment.url("", address=direct.address), "vip": deployment.url("", address=deployment.vip)}
    files: dict[str, str] = {}
    phases: dict[str, dict] = {}
    timing: dict[str, tuple[float, float]] = {}
    cpu: dict[str, dict] = {}

    def locust_phase(phase: str, url: str, classes, phase_shape: LoadShape, during=None) -> None:
        result = run_locust(client, phase, url, tuple(classes), phase_shape, progress=progress, during=during,
                            worker_hosts=workers, remote_workers=options.remote_workers, sut=sut)
        files.update(result.files)
        phases[phase] = phase_summary(phase, result.files)
        phases[phase].update({"url": url, "classes": list(classes), "duration_s": phase_shape.duration_s,
                              "sut_cpus_used": result.cpu.get("sut_cpus_used")})
        cpu[phase] = result.cpu.get("generator")
        timing[phase] = (result.started, result.ended)

    def wrk_phase(phase: str, url: str) -> None:
        wrk = run_wrk(client, url, shape, options.reference_duration_s, name=phase, progress=progress, sut=sut)
        files[f"{phase}.json"] = json.dumps(wrk, indent=1)
        phases[phase] = wrk_summary(wrk)
        timing[phase] = (wrk["started"], wrk["ended"])

    began = time.time()
    try:
        if placement.sut_cpus:
            progress(f"{'placement':<12} {placement.how}")
            placement.pinned = pin_hosts(sut, placement.sut_cpus, into=placement.pinned)
        # the one-URL comparisons are closed loop: they measure how fast each generator can send
        reference_shape = LoadShape(**{**asdict(shape), "duration_s": options.reference_duration_s, "rate": 0.0})
        locust_phase("direct", urls["direct"], mixed, shape)
        phases["direct"]["real_server"] = direct.name
        locust_phase("vip", urls["vip"], mixed, shape)
        locust_phase("reference", urls["vip"], (REFERENCE_CLASS,), reference_shape)
        wrk_phase("wrk", urls["vip"] + REFERENCE_PATH)
        locust_phase("reference_direct", urls["direct"], (REFERENCE_CLASS,), reference_shape)
        wrk_phase("wrk_direct", urls["direct"] + REFERENCE_PATH)

        fault_summary = None
        if options.fault:
            fault_summary = fault_phase(deployment, options, urls["vip"], mixed, locust_phase, phases, timing,
                                        files=files, evidence=evidence, progress=progress)
    finally:
        if placement.pinned:
            placement.restored = unpin_hosts(sut, placement.pinned)

    for phase in list(phases):
        if phase in cpu:
            phases[phase]["generator"] = generator_verdict(phase, phases, cpu[phase])
    if fault_summary is not None:
        fault_summary["generator"] = phases["fault"]["generator"]
    removed = remove_uploads(deployment) if UPLOADER in mixed else {}
    summary = {"run": out_dir.name, "started": began, "seconds": round(time.time() - began, 1),
               "seed": shape.seed, "options": {**options.as_dict(), "python": client.python},
               "target": deployment.target.describe(),
               "placement": placement.describe(),
               "loop": {"mode": "open" if shape.rate > 0 else "closed", "rate": shape.rate or None,
                        "timed_from": "due time" if shape.rate > 0 else "send time",
                        "applies_to": ["direct", "vip", "fault"], "reference_phases": "closed loop"},
               "generator_bound_phases": sorted(p for p, d in phases.items()
                                                if d.get("generator", {}).get("generator_bound")),
               "phases": phases, "ratios": ratios(phases), "fault": fault_summary,
               "uploads_removed": removed, "left_out_classes": left_out,
               "timing": {k: {"started": a, "ended": b} for k, (a, b) in timing.items()}}
    return summary, files


def remove_uploads(deployment) -> dict[str, int]:
    """Delete the files the uploaders stored, on every real server (a perf run leaves no data)."""
    removed = {}
    for server in deployment.realservers:
        result = server.execute(f"find {UPLOAD_DIR} -maxdepth 1 -name '{UPLOADED}' -print -delete | wc -l")
        removed[server.name] = int(result.stdout.strip() or 0) if result.rc == 0 else -1
    return removed


def fault_phase(deployment, options, url, classes, locust_phase, phases, timing, *, files, evidence,
                progress) -> dict:
    fault = make_fault(options.fault, deployment)
    schedule = FaultSchedule(fault, options.fault_at_s, lasts_s=options.fault_duration_s)
    fault_shape = LoadShape(**{**asdict(options.shape), "duration_s": options.fault_duration_s})
    with FaultRun(deployment, evidence, f"perf fault: {fault.name}") as run:
        run.mark("load starts")
        locust_phase("fault", url, classes, fault_shape, during=schedule)
        if schedule.injected_at is not None:
            run.marks.append((schedule.injected_at, f"injected: {schedule.action}"))
        progress(f"{'fault':<12} healing: {fault.describes}")
        fault.recover()
        run.mark("healed")
    # Healed: what the switches would undo is undone; they must not fire when perf exits.
    deadman.disarm_all(deployment.target)
    problems = audit(deployment, run=run, excused_lines=fault.excused_lines)
    injected = schedule.injected_at
    windows = phases["fault"]["failure_windows"]
    after = [w for w in windows if injected is not None and w["end"] > injected]
    outages = run.outages()
    return {
        "fault": fault.name, "what": fault.describes, "action": schedule.action,
        "victim": fault.victim.name if fault.victim else None,
        "injected_at": injected,
        "injected_s_into_phase": round(injected - timing["fault"][0], 2) if injected else None,
        "failures": phases["fault"]["failures"],
        "failures_after_injection": sum(w["failures"] for w in after),
        "failure_windows": windows,
        "silent_windows": phases["fault"]["silent_windows"],
        "longest_silence_s": max((w["seconds"] for w in phases["fault"]["silent_windows"]), default=0),
        "last_failure_s_after_injection": round(max(w["end"] for w in after) - injected, 1) if after else 0.0,
        "prober_longest_outage_s": run.outage_s,
        "prober_outages": [{"start": round(w.start, 3), "end": round(w.end, 3), "seconds": round(w.duration, 3)}
                           for w in outages] if outages else [],
        "worst_second_p99_ms": phases["fault"]["worst_second_p99_ms"],
        "loop": phases["fault"]["loop"],
        "per_second_key": phases["fault"]["per_second_key"],
        # per second of the phase: the requests that completed in it (closed loop) or were
        # due in it (open loop), their failures and latency percentiles
        "per_second": per_second_table(files.get("fault_seconds.json", "{}"), timing["fault"][0],
                                       key=phases["fault"]["per_second_key"]),
        "vip_max_simultaneous_holders": run.vip_watch.max_holders(),
        "audit_problems": problems,
    }


def plots_for(summary: dict, files: dict[str, str]) -> dict[str, str]:
    plots = {}
    fault = summary.get("fault") or {}
    for phase in ("direct", "vip", "reference", "reference_direct", "fault"):
        exact, history = files.get(f"{phase}_seconds.json"), files.get(f"{phase}_stats_history.csv")
        series = second_series(exact) if exact else history_series(history or "")
        if not series:
            continue
        started = summary["timing"][phase]["started"]
        by_due = summary.get("phases", {}).get(phase, {}).get("per_second_key") == "due"
        windows, marks = [], []
        if phase == "fault" and fault.get("injected_at"):
            marks.append((fault["injected_at"], f"{fault['fault']} injected"))
            windows += [(w["start"], w["end"], "no request succeeded") for w in fault.get("silent_windows", [])]
            windows += [(w["start"], w["end"], "failures") for w in fault.get("failure_windows", [])]
            windows += [(w["start"], w["end"], "prober outage") for w in fault.get("prober_outages", [])]
        title = PHASE_TITLES[phase] + (" (open loop: per second the requests were due in, "
                                       "latency from due time)" if by_due else "")
        plots[phase] = phase_plot_svg(series, title=title, started=started, windows=windows, marks=marks)
    return plots
