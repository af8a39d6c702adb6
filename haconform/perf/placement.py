"""Where the generator and the system under test run, and what CPU each used.

On a small machine the load generator, HAProxy and Apache share the CPUs, and
a generator that takes the CPU HAProxy needs measures itself.  So on the lab
the generator's processes (locust, wrk: started through the client host's
argv, or a worker host's) run under `taskset` on one set of CPUs, and the
processes of the director and real-server hosts, found by PID inside each
lab host (a host sees only its own processes), are moved to the other set;
afterwards those hosts' processes get back the affinity their PID 1 had.

CPU use is read from /proc/<pid>/stat (utime+stime, plus cutime+cstime for
a whole host, so reaped children count) and /proc/<pid>/schedstat (time spent
runnable but waiting for a CPU), inside the host, at the start and the end of
the load window of a phase.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field

SATURATED = 0.90        # a generator using this share of the CPUs it may use is the limit
SUT_ROLES = ("director", "realserver")


def cpu_count(cpus: str | None) -> int | None:
    """How many CPUs a taskset list names ("0", "1-3", "0,2-3"); None for no list."""
    if not cpus:
        return None
    total = 0
    for part in cpus.split(","):
        low, _, high = part.partition("-")
        total += int(high or low) - int(low) + 1
    return total


@dataclass
class Placement:
    """generator_cpus / sut_cpus: taskset lists, or None (not pinned)."""
    generator_cpus: str | None = None
    sut_cpus: str | None = None
    how: str = "none"
    pinned: dict = field(default_factory=dict)       # host -> {"pids": n, "previous": mask}
    restored: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {"how": self.how, "generator_cpus": self.generator_cpus, "sut_cpus": self.sut_cpus,
                "generator_cpu_count": cpu_count(self.generator_cpus), "sut_cpu_count": cpu_count(self.sut_cpus),
                "sut_hosts_pinned": self.pinned, "sut_hosts_restored": self.restored}


def plan_placement(spec: str | None, target_kind: str, machine_cpus: int | None = None) -> Placement:
    """--perf-placement: "auto" (default), "none", or "GEN:SUT" taskset lists ("0:1", "0-1:2-3", "0:").

    auto pins only on the namespace lab, whose hosts are processes of this machine: the
    first half of the CPUs to the generator, the rest to the directors and real servers."""
    spec = (spec or "auto").strip()
    if spec == "none":
        return Placement(how="none (--perf-placement none)")
    if spec == "auto":
        n = machine_cpus if machine_cpus is not None else (os.cpu_count() or 1)
        if target_kind != "lab":
            return Placement(how=f"none (auto: target {target_kind}'s hosts are not processes of this machine)")
        if n < 2:
            return Placement(how="none (auto: one CPU)")
        half = n // 2
        generator = "0" if half == 1 else f"0-{half - 1}"
        sut = str(half) if half == n - 1 else f"{half}-{n - 1}"
        return Placement(generator, sut, how=f"auto: {n} CPUs, generator on {generator}, SUT on {sut}")
    generator, sep, sut = spec.partition(":")
    if not sep:
        raise ValueError(f"--perf-placement {spec!r}: use auto, none or GEN:SUT (e.g. 0:1)")
    for cpus in (generator, sut):
        if cpus:
            cpu_count(cpus)
    return Placement(generator or None, sut or None, how=f"--perf-placement {spec}")


def taskset_prefix(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


# Inside one host: every process's PID (its own /proc), its affinity set to CPUS.
PIN_SCRIPT = ("n=0; for d in /proc/[0-9]*; do p=${d#/proc/}; "
              "taskset -a -p -c {cpus} $p >/dev/null 2>&1 && n=$((n+1)); done; echo $n")


def pin_hosts(machines, cpus: str, *, into: dict | None = None) -> dict:
    """Move every process of these lab hosts to CPUS, by PID; what PID 1 had is kept for undo
    (in `into` as it goes, so that a failure half-way can still be undone)."""
    pinned = into if into is not None else {}
    for machine in machines:
        before = machine.execute("taskset -c -p 1")
        previous = before.stdout.strip().rsplit(":", 1)[-1].strip() if before.rc == 0 else None
        result = machine.execute(PIN_SCRIPT.replace("{cpus}", shlex.quote(cpus)))
        pinned[machine.name] = {"pids": int(result.stdout.strip() or 0) if result.rc == 0 else None,
                                "previous": previous}
    return pinned


def unpin_hosts(machines, pinned: dict) -> dict:
    restored = {}
    for machine in machines:
        previous = (pinned.get(machine.name) or {}).get("previous")
        if not previous:
            continue
        try:
            result = machine.execute(PIN_SCRIPT.replace("{cpus}", shlex.quote(previous)))
        except Exception as exc:    # a host powered off by a fault: nothing to restore there
            restored[machine.name] = f"not restored: {exc}"
            continue
        restored[machine.name] = {"pids": int(result.stdout.strip() or 0) if result.rc == 0 else None,
                                  "cpus": previous}
    return restored


def sut_machines(deployment) -> list:
    return [m for m in deployment.machines.values() if m.role in SUT_ROLES]


# ----- CPU use ---------------------------------------------------------------------------

def stat_ticks(stat_line: str, *, children: bool = False) -> int:
    """utime+stime (and cutime+cstime) of one /proc/<pid>/stat line, in clock ticks."""
    fields = stat_line.rsplit(")", 1)[1].split()
    # after the comm: state(0) ppid ... utime(11) stime(12) cutime(13) cstime(14)
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def process_sample_command(workdir: str, names: list[str]) -> str:
    """Per named process (its PID in NAME.pid): its stat and schedstat lines; then the uptime."""
    quoted = " ".join(shlex.quote(n) for n in names)
    return (f"for n in {quoted}; do p=$(cat {shlex.quote(workdir)}/$n.pid 2>/dev/null) || continue; "
            "s=$(cat /proc/$p/stat 2>/dev/null) || continue; q=$(cat /proc/$p/schedstat 2>/dev/null); "
            'echo "P $n $q|$s"; done; echo "U $(cat /proc/uptime)"')


HOST_SAMPLE_COMMAND = "cat /proc/[0-9]*/stat 2>/dev/null; echo; echo \"U $(cat /proc/uptime)\""


def parse_process_sample(text: str) -> dict:
    """{"t": uptime s, "processes": {name: {"ticks", "run_ns", "wait_ns"}}}."""
    sample = {"t": None, "processes": {}}
    for line in text.splitlines():
        if line.startswith("U "):
            sample["t"] = float(line.split()[1])
        elif line.startswith("P "):
            head, _, stat = line[2:].partition("|")
            name, *sched = head.split()
            sample["processes"][name] = {"ticks": stat_ticks(stat),
                                         "run_ns": int(sched[0]) if sched else None,
                                         "wait_ns": int(sched[1]) if len(sched) > 1 else None}
    return sample


def parse_host_sample(text: str) -> dict:
    """{"t": uptime s, "ticks": every process's utime+stime+cutime+cstime, "processes": n}."""
    ticks, count, t = 0, 0, None
    for line in text.splitlines():
        if line.startswith("U "):
            t = float(line.split()[1])
        elif ")" in line:
            try:
                ticks += stat_ticks(line, children=True)
                count += 1
            except (IndexError, ValueError):
                continue
    return {"t": t, "ticks": ticks, "processes": count}


def process_usage(a: dict, b: dict, hz: int) -> dict | None:
    """CPU the named processes used between two samples, in CPUs (1.0: one CPU all the time),
    and the time they spent runnable but waiting for a CPU."""
    if not a or not b or a.get("t") is None or b.get("t") is None or b["t"] <= a["t"]:
        return None
    wall = b["t"] - a["t"]
    names = [n for n in a["processes"] if n in b["processes"]]
    if not names:
        return None
    ticks = sum(b["processes"][n]["ticks"] - a["processes"][n]["ticks"] for n in names)
    waits = [b["processes"][n]["wait_ns"] - a["processes"][n]["wait_ns"] for n in names
             if a["processes"][n]["wait_ns"] is not None and b["processes"][n]["wait_ns"] is not None]
    return {"processes": names, "seconds": round(wall, 2), "cpus_used": round(ticks / hz / wall, 3),
            "runqueue_wait_cpus": round(sum(waits) / 1e9 / wall, 3) if waits else None}


def host_usage(a: dict | None, b: dict | None, hz: int) -> float | None:
    """CPUs a whole host used between two samples; None when it was down, or rebooted between them."""
    if not a or not b or a.get("t") is None or b.get("t") is None or b["t"] <= a["t"] or b["ticks"] < a["ticks"]:
        return None
    return round((b["ticks"] - a["ticks"]) / hz / (b["t"] - a["t"]), 3)


def generator_cpu(usage: dict | None, cpus_allowed: int | None) -> dict:
    """The generator's CPU figures for a phase, and whether it was saturated: its processes
    used >= 90 % of the CPUs they may use, or used plus waited for that much (a busy machine)."""
    if usage is None or not cpus_allowed:
        return {"cpus_allowed": cpus_allowed, "cpus_used": None, "cpu_fraction": None, "cpu_saturated": None}
    fraction = usage["cpus_used"] / cpus_allowed
    wanted = (usage["cpus_used"] + (usage["runqueue_wait_cpus"] or 0)) / cpus_allowed
    return {"cpus_allowed": cpus_allowed, "cpus_used": usage["cpus_used"],
            "cpu_fraction": round(fraction, 3),
            "runqueue_wait_cpus": usage["runqueue_wait_cpus"],
            "cpu_wanted_fraction": round(wanted, 3),
            "cpu_saturated": fraction >= SATURATED or wanted >= SATURATED,
            "processes": usage["processes"], "window_s": usage["seconds"]}


def locust_generator_cpu(processes: list[dict], *, shared: bool) -> dict:
    """The generator's CPU in a locust phase, from what each locust process measured of itself
    over its load window (workload.py: os.times and schedstat from test start to stopping).

    shared: every process runs on this machine in one CPU set (the lab, pinned): one group;
    otherwise one group per host, and the busiest host decides."""
    groups: dict[str, list[dict]] = {}
    for process in processes:
        groups.setdefault("all" if shared else process["host"], []).append(process)
    figures = {}
    for name, group in groups.items():
        cpus = set()
        for process in group:
            cpus.update(process.get("cpus") or [])
        usage = {"processes": [f"{p['host']}:{p['role']}:{p['pid']}" for p in group],
                 "seconds": max(p["wall_s"] for p in group),
                 "cpus_used": round(sum(p["cpu_s"] / p["wall_s"] for p in group if p["wall_s"]), 3),
                 "runqueue_wait_cpus": round(sum((p["wait_s"] or 0) / p["wall_s"] for p in group if p["wall_s"]), 3)}
        figures[name] = generator_cpu(usage, len(cpus) or None)
    if not figures:
        return generator_cpu(None, None)
    busiest = max(figures.values(), key=lambda f: f["cpu_wanted_fraction"] or 0)
    return {**busiest, "per_host": figures} if not shared else busiest
