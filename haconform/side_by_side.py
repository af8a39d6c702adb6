"""The MUSTs side by side on labs of their own (pytest-xdist), merged into one run.

    tox -e conformance                      # -n auto --dist loadgroup: as many labs as the machine carries
    tox -e conformance -- -n 0              # one lab, one test after another (as before)
    HACONFORM_LABS=3 tox -e conformance     # three labs

Which tests share a lab is data, the suites' and the stages': a MUST may
declare a lab of its own (@conformance(lab=...): the slowest destructive ones,
so the run is not one after another behind them); the tests of each cluster
stage share its lab (a cluster's set-up is what costs, once per lab); the tests
of every stage without a cluster share one lab (they switch stages in seconds).
More labs than that cost more than they save on a small machine: every lab
brings up the runbook's six hosts and applies the stages it needs.  A scheduler of
xdist's kind (LabScheduling: its scope scheduling with the labs as scopes)
sends each group to one worker; each worker brings up a lab of its
own, named after the session's lab and its number (haconform0, haconform1...),
so every rule of a lab (its names, its teardown, nothing in the root namespace)
holds per lab.

One run comes out of it: the controller gives the workers the run's directory;
the workers attach each report's history rows to the report and the
controller, which alone writes files, writes them; what only a worker knows
(its lab, bring-up and calibration, the software versions, its guard's
transcript and summary, a restore that failed) comes back in its workeroutput
and is merged into the verdict.  A target that is one deployment (an existing
one over ssh, the VMs) always runs with one worker: -n auto gives 0 there.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import HaconformError
from .lab.lab import LAB_NAME

# What `-n auto` may give, per what the machine has: labs are mostly waiting (documented intervals),
# so several share a core; each runs the runbook's six hosts, the two directors with the whole cluster
# stack (corosync, pacemaker, pcsd) once a cluster stage is applied.
LABS_PER_CPU = 2
LAB_MEMORY_BYTES = 1 << 30
MOST_LABS = 8          # a ceiling; the groups the suites declare decide how many labs actually come up
ENV = "HACONFORM_LABS"


# The lab the tests of every stage without a cluster share: they switch between files stages in seconds.
FILES_LAB = "files"


def lab_group(requirement, stages: dict) -> str:
    """Which tests share a lab side by side: a MUST that declares a lab of its own (@conformance(lab=...):
    the slowest destructive ones) gets it; each cluster stage has one (setting a cluster up is what takes
    the time, once per lab); the tests of every other stage share one."""
    if requirement.lab:
        return requirement.lab
    stage = stages.get(requirement.stage)
    return requirement.stage if stage is not None and stage.is_cluster_stage else FILES_LAB


def is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def worker_id(config) -> str | None:
    return config.workerinput.get("workerid") if is_worker(config) else None


def side_by_side(config) -> bool:
    """The controller of a run spread over workers (it runs no test itself)."""
    return not is_worker(config) and bool(getattr(config.option, "numprocesses", 0))


def available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return LAB_MEMORY_BYTES * MOST_LABS


def auto_labs(config) -> int:
    """How many labs `-n auto` runs: HACONFORM_LABS when set; else what CPUs and memory carry, at most
    MOST_LABS; 0 (one test after another) for a target that is one deployment."""
    if config.getoption("--target") != "lab":
        return 0
    given = os.environ.get(ENV)
    if given:
        if not given.isdigit():
            raise HaconformError(f"{ENV}={given!r} is not a number of labs", where=ENV,
                                 fix="a whole number: 0 for one lab, one test after another")
        return int(given)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MOST_LABS, cpus * LABS_PER_CPU, available_memory() // LAB_MEMORY_BYTES))


def worker_lab_name(base: str, worker: str | None) -> str:
    """The lab of one worker: the session's lab name and the worker's number (gw3 -> haconform3)."""
    if worker is None:
        return base
    name = f"{base}{worker.removeprefix('gw')}"
    if not LAB_NAME.match(name):
        raise HaconformError(f"lab name {base!r} leaves no room for the workers' numbers ({name!r})",
                             where="--lab-name / HACONFORM_LAB",
                             fix=f"a shorter lab name (at most {11 - len(worker.removeprefix('gw'))} characters)")
    return name


def lab_groups(config) -> dict[str, str]:
    """"test_file.py::test_name" -> its lab group, for every conformance test of the suites."""
    from .conformance import declared_requirements
    stages = getattr(config, "_haconform_stages", None) or {}
    return {test: lab_group(requirement, stages)
            for test, requirement in declared_requirements(config.rootpath / "suites").items()}


def lab_scheduler(config, log):
    """xdist's scope scheduling with the labs as scopes: each group's tests go to one worker, in their
    order (xdist's own loadgroup marks ids with @group, which pytest 9 no longer lets it do).  Only in
    place of plain load scheduling: a --dist asked for by name is xdist's (or tests/conftest.py's: the safety job's)."""
    if not side_by_side(config) or config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    groups = lab_groups(config)

    class LabScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            test = nodeid.split("[", 1)[0].rsplit("/", 1)[-1]
            return groups.get(test, nodeid)

    return LabScheduling(config, log)


def merge_host_access(summaries: list[dict]) -> dict | None:
    """One statement of what the run did to the hosts, from each lab's guard."""
    summaries = [s for s in summaries if s]
    if not summaries:
        return None
    if len(summaries) == 1:
        return summaries[0]
    granted: dict[str, int] = {}
    for summary in summaries:
        for what, n in summary.get("granted", {}).items():
            granted[what] = granted.get(what, 0) + n
    merged = {"mode": summaries[0]["mode"], "commands": sum(s["commands"] for s in summaries),
              "allow_listed": sum(s["allow_listed"] for s in summaries), "granted": granted,
              "apply": sum(s.get("apply", 0) for s in summaries),
              "refused": [r for s in summaries for r in s.get("refused", [])],
              "transcript": [s.get("transcript") for s in summaries if s.get("transcript")]}
    labs = f" on {len(summaries)} labs"
    if merged["mode"] == "apply":
        merged["statement"] = (f"apply: the harness built these deployments; {merged['commands']} host commands "
                               f"and actions{labs}, all allowed")
    else:
        parts = [f"{merged['mode']}: {merged['commands']} host commands and actions{labs}"]
        parts.append("all on the read-only allow-list" if not granted and not merged["refused"]
                     else f"{merged['allow_listed']} on the read-only allow-list")
        if granted:
            parts.append("granted: " + "; ".join(f"{w} ({n})" for w, n in granted.items()))
        if merged["refused"]:
            parts.append(f"{len(merged['refused'])} refused")
        merged["statement"] = ", ".join(parts)
    return merged
