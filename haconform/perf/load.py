"""Load generators, run inside the client host through its command transport.

Locust runs distributed: one master and N workers, each its own process.
They run in the client host and meet on its loopback; with workers on other
hosts (--perf-worker-host) the master listens on the client host's address
and those workers join across the network.  wrk, Debian's reference
generator, hits one URL with the same number of connections, so locust's
rate can be stated as a fraction of what this machine can generate at all.

Every generator process starts under `taskset` when the placement pins the
generator (placement.py), and its CPU use over the load window is read from
/proc inside its host, as is the whole CPU use of the system-under-test hosts.

Everything a phase writes stays in a work directory on the client host and
is fetched through the host's transport afterwards, so no target needs a
shared file system.  That directory is made per run by `mktemp -d` on each
generator host (private, 0700: no predictable path that another user of the
host could plant code in before root runs it) and removed after the run.

The python that runs locust in a host is --perf-python, else the harness's
own where the host shares this machine's files (a lab or netns host, a
`local` inventory host), else `python3` as the host finds it on its PATH;
prepare() checks that it is there and has locust.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import HaconformError
from ..redaction import redacted_tail
from ..timeouts import BOUNDS
from ..wait import wait_until
from .placement import (HOST_SAMPLE_COMMAND, cpu_count, generator_cpu, host_usage, locust_generator_cpu,
                        parse_host_sample,
                        parse_process_sample, process_sample_command, process_usage, taskset_prefix)

log = logging.getLogger("haconform.perf")

WORKLOAD = Path(__file__).with_name("workload.py")
WRK_REPORT = Path(__file__).with_name("wrk_report.lua")
MIXED_CLASSES = ("DynamicPageVisitor", "StaticFileVisitor", "Uploader")
REFERENCE_CLASS = "DynamicPageVisitor"
REFERENCE_PATH = "/index.php"
WRK_MARK = "HACONFORM-WRK "
LOCUST_PORT = 5557
# mktemp's template: the name says whose directory it is, the X's make it unpredictable.
WORKDIR_TEMPLATE = "haconform-perf.XXXXXXXXXX"
# A python that has locust exits 0, one without exits 1, a missing one 127.
HAS_LOCUST = "import importlib.util, sys; sys.exit(importlib.util.find_spec('locust') is None)"


@dataclass
class LoadShape:
    users: int = 20
    spawn_rate: float = 20.0
    duration_s: int = 15
    workers: int = 2
    seed: int = 1
    think_s: float = 0.0
    rate: float = 0.0          # open loop: requests/s due over the run (0: closed loop)
    timeout_s: float = 30.0    # a request's connect and read timeout


@dataclass
class LocustResult:
    phase: str
    url: str
    classes: tuple[str, ...]
    files: dict[str, str] = field(default_factory=dict)    # file name -> text (CSVs, served_by.json)
    started: float = 0.0
    ended: float = 0.0
    master_exit: int | None = None
    stderr_tail: str = ""
    cpu: dict = field(default_factory=dict)                 # "generator": {...}, "sut": {host: CPUs used}


def progress_line(phase: str, elapsed: float, duration: float, row: dict | None) -> str:
    if not row or (row.get("User Count") in ("0", 0) and row.get("Total Request Count") in ("0", 0)):
        return f"{phase:<12} {elapsed:5.0f}/{duration:.0f}s  starting locust (master and workers)"
    return (f"{phase:<12} {elapsed:5.0f}/{duration:.0f}s  users {row.get('User Count', '?'):>4}  "
            f"req/s {float(row.get('Requests/s') or 0):8.1f}  p95 {row.get('95%', 'N/A'):>6} ms  "
            f"failures {row.get('Total Failure Count', '0')}")


def last_aggregated_row(history_text: str, header: str) -> dict | None:
    """The newest 'Aggregated' row of a locust stats_history CSV tail."""
    rows = list(csv.DictReader(io.StringIO(header.strip() + "\n" + history_text)))
    rows = [r for r in rows if r.get("Name") == "Aggregated"]
    return rows[-1] if rows else None


def shares_this_machine(machine) -> bool:
    """The host runs on this machine's kernel and file system (the lab's nsenter, `ip netns exec`, a `local`
    inventory host), so the harness's own files, its python among them, are there too."""
    return machine.transport_kind != "ssh"


def generator_python(machine, given: str | None) -> str:
    """--perf-python when given; else the harness's own python where the host shares this machine's files,
    and `python3` as the host finds it on one reached over ssh (never a path of the harness machine)."""
    if given:
        return given
    return sys.executable if shares_this_machine(machine) else "python3"


class ClientHost:
    """What a load phase needs of a machine that runs generator processes (the client host,
    or a worker host).  python: None for generator_python's choice; workdir: made by prepare()."""

    def __init__(self, machine, python: str | None, workdir: str | None = None, cpus: str | None = None):
        self.machine = machine
        self.python = generator_python(machine, python)
        self.workdir = workdir
        self.cpus = cpus                 # taskset list the generator's processes run on, or None
        self.hz = 100
        self.cpus_allowed: int | None = cpu_count(cpus)

    def prepare(self) -> None:
        """Check the python, make the run's private work directory and put the workload in it."""
        checked = self.machine.execute(f"{shlex.quote(self.python)} -c {shlex.quote(HAS_LOCUST)}")
        if checked.rc != 0:
            why = ("has no locust" if checked.rc == 1
                   else f"does not run (exit {checked.rc}: {redacted_tail(checked.stderr.strip(), 200)})")
            raise HaconformError(f"{self.python} in {self.machine.name} {why}", where="--perf-python",
                                 fix=f"install locust for a python in {self.machine.name} (pip install locust) "
                                     "and pass it as --perf-python PATH")
        made = self.machine.succeed(f"mktemp -d -t {WORKDIR_TEMPLATE}").strip()
        if not made.startswith("/") or "haconform-perf." not in made:
            raise HaconformError(f"mktemp -d in {self.machine.name} printed {made!r}, not a directory",
                                 where=f"host {self.machine.name}", fix="check mktemp and TMPDIR there")
        self.workdir = made
        self.machine.write_file(f"{self.workdir}/locustfile.py", WORKLOAD.read_text())
        self.machine.write_file(f"{self.workdir}/wrk_report.lua", WRK_REPORT.read_text())
        found = self.machine.execute(f"getconf CLK_TCK; {shlex.join(taskset_prefix(self.cpus))} nproc")
        if found.rc == 0 and len(found.stdout.split()) == 2:
            hz, nproc = found.stdout.split()
            self.hz = int(hz)
            self.cpus_allowed = int(nproc)
        elif self.cpus:
            raise HaconformError(f"cannot run `taskset -c {self.cpus}` in {self.machine.name}: "
                                 f"{redacted_tail(found.stderr.strip(), 300)}", where=f"host {self.machine.name}",
                                 fix="install util-linux's taskset there, or pass --perf-placement none")

    def cleanup(self) -> str | None:
        """Remove the work directory prepare() made (only that one); the path it had, for the run's record."""
        made, self.workdir = self.workdir, None
        if made and "haconform-perf." in made:
            try:
                self.machine.execute(f"rm -rf -- {shlex.quote(made)}")
            except Exception as exc:    # a host a fault left unreachable: say so, the run's figures stand
                log.warning("work directory %s in %s not removed: %s", made, self.machine.name, exc)
        return made

    def path(self, name: str) -> str:
        if not self.workdir:
            raise HaconformError(f"no work directory in {self.machine.name} yet", where="ClientHost.path",
                                 fix="call prepare() first")
        return f"{self.workdir}/{name}"

    def spawn_argv(self, name: str, argv: list[str]) -> list[str]:
        """argv run in the host (under taskset when pinned); its PID inside the host goes to NAME.pid."""
        script = (f"echo $$ > {shlex.quote(self.path(name + '.pid'))}; "
                  f"exec {shlex.join([*taskset_prefix(self.cpus), *argv])}")
        return self.machine.program(["/bin/sh", "-c", script])

    def spawn(self, name: str, argv: list[str], *, capture: bool = False) -> subprocess.Popen:
        return subprocess.Popen(self.spawn_argv(name, argv),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    def stop(self, name: str) -> None:
        """End a process this phase started, by the PID it recorded."""
        pidfile = shlex.quote(self.path(name + ".pid"))
        self.machine.execute(f"test -s {pidfile} && kill $(cat {pidfile}) 2>/dev/null; true")

    def fetch(self, name: str) -> str | None:
        result = self.machine.execute(f"cat {shlex.quote(self.path(name))}")
        return result.stdout if result.rc == 0 else None

    def cpu_records(self, phase: str) -> list[dict]:
        """What each locust process of the phase wrote of its own CPU (workload.py, OUT_cpu_<pid>.json)."""
        found = self.machine.execute(f"for f in {shlex.quote(self.path(phase))}_cpu_*.json; do "
                                     'test -f "$f" && cat "$f" && echo; done')
        return [json.loads(line) for line in found.stdout.splitlines() if line.strip()] if found.rc == 0 else []

    def sample(self, names: list[str]) -> dict | None:
        """CPU counters of the named processes this host started."""
        result = self.machine.execute(process_sample_command(self.workdir, names))
        return parse_process_sample(result.stdout) if result.rc == 0 else None


def host_sample(machine) -> dict | None:
    """The whole CPU counters of one host (a lab host sees only its own processes)."""
    try:
        result = machine.execute(HOST_SAMPLE_COMMAND)
    except Exception:       # a host a fault powered off
        return None
    return parse_host_sample(result.stdout) if result.rc == 0 else None


class CpuWatch:
    """Samples the generator's processes (per generator host) and the SUT hosts at the start
    and the end of a phase's load window."""

    def __init__(self, generators: list[tuple[ClientHost, list[str]]], sut: list, *, shared_cpus: bool):
        self.generators = generators      # (host, process names it started)
        self.sut = sut                    # machines of the system under test
        self.shared_cpus = shared_cpus    # every generator host is this machine, pinned to one CPU set
        self.samples: dict[str, list] = {"start": [], "end": []}

    def take(self, when: str) -> None:
        self.samples[when] = [[host.sample(names) for host, names in self.generators],
                              {m.name: host_sample(m) for m in self.sut}]

    def result(self) -> dict:
        if not self.samples["start"] or not self.samples["end"]:
            return {}
        (gen_a, sut_a), (gen_b, sut_b) = self.samples["start"], self.samples["end"]
        per_host = []
        for (host, _), a, b in zip(self.generators, gen_a, gen_b):
            usage = process_usage(a, b, host.hz)
            per_host.append((host, usage))
        if self.shared_cpus:
            usages = [u for _, u in per_host if u]
            merged = {"processes": [f"{h.machine.name}:{p}" for h, u in per_host if u for p in u["processes"]],
                      "seconds": max((u["seconds"] for u in usages), default=0),
                      "cpus_used": round(sum(u["cpus_used"] for u in usages), 3),
                      "runqueue_wait_cpus": round(sum(u["runqueue_wait_cpus"] or 0 for u in usages), 3)}
            generator = generator_cpu(merged if usages else None,
                                      self.generators[0][0].cpus_allowed if self.generators else None)
            generator["hosts"] = [h.machine.name for h, _ in per_host]
        else:
            figures = [(h, generator_cpu(u, h.cpus_allowed)) for h, u in per_host]
            generator = max(figures, key=lambda f: f[1]["cpu_fraction"] or 0)[1] if figures else {}
            generator = {**generator, "per_host": {h.machine.name: f for h, f in figures}}
        hz = self.generators[0][0].hz if self.generators else 100
        return {"generator": generator,
                "sut_cpus_used": {name: host_usage(sut_a.get(name), sut_b.get(name), hz) for name in sut_a}}


def locust_env(shape: LoadShape, out_prefix: str, classes: tuple[str, ...] = ()) -> list[str]:
    return ["env", f"HACONFORM_PERF_SEED={shape.seed}", f"HACONFORM_PERF_WAIT={shape.think_s}",
            f"HACONFORM_PERF_RATE={shape.rate}", f"HACONFORM_PERF_WORKERS={shape.workers}",
            f"HACONFORM_PERF_CLASSES={','.join(classes)}", f"HACONFORM_PERF_TIMEOUT={shape.timeout_s}",
            f"HACONFORM_PERF_OUT={out_prefix}"]


def master_argv(client: ClientHost, phase: str, url: str, classes: tuple[str, ...], shape: LoadShape,
                *, bind_host: str = "127.0.0.1") -> list[str]:
    # open loop: every user from the start (the schedule starts with the first one)
    spawn_rate = max(shape.spawn_rate, shape.users) if shape.rate > 0 else shape.spawn_rate
    return [*locust_env(shape, client.path(phase), classes),
            client.python, "-m", "locust", "-f", client.path("locustfile.py"),
            "--master", "--master-bind-host", bind_host, "--master-bind-port", str(LOCUST_PORT),
            "--expect-workers", str(shape.workers), "--expect-workers-max-wait", str(int(BOUNDS.agent_start)),
            "--headless", "--only-summary", "--loglevel", "WARNING",
            "-u", str(shape.users), "-r", str(spawn_rate), "-t", f"{shape.duration_s}s",
            "--stop-timeout", "2", "--exit-code-on-error", "0",
            "--host", url, "--csv", client.path(phase), "--csv-full-history",
            "--json-file", client.path(f"{phase}_final"), *classes]


def worker_argv(client: ClientHost, phase: str, shape: LoadShape, master_host: str = "127.0.0.1",
                classes: tuple[str, ...] = ()) -> list[str]:
    return [*locust_env(shape, client.path(phase), classes),
            client.python, "-m", "locust", "-f", client.path("locustfile.py"),
            "--worker", "--master-host", master_host, "--master-port", str(LOCUST_PORT),
            "--loglevel", "WARNING"]


LOCUST_FILES = ("final.json", "stats.csv", "stats_history.csv", "failures.csv", "exceptions.csv", "served_by.json",
                "seconds.json", "completed.json", "workers.json")


def load_running(row: dict | None) -> bool:
    """The newest history row shows users running (after the run they are back to 0)."""
    return bool(row) and row.get("User Count") not in ("0", 0, None, "")


def run_locust(client: ClientHost, phase: str, url: str, classes: tuple[str, ...], shape: LoadShape,
               *, progress: Callable[[str], None] = lambda line: None,
               during: Callable[[float], None] | None = None,
               worker_hosts: list[ClientHost] = (), remote_workers: int = 0, sut: list = ()) -> LocustResult:
    """One headless locust run; `during(elapsed)` is called about every second (fault scheduling).

    shape.workers processes in the client host; `remote_workers` more in each of worker_hosts,
    which join the master on the client host's address."""
    result = LocustResult(phase, url, classes)
    processes, remote = _spawn_locust(client, phase, url, classes, shape, worker_hosts, remote_workers)
    # the generator's CPU comes from the locust processes themselves (workers.json); the
    # watch samples the system under test's hosts
    shared = bool(client.cpus) and all(h.cpus == client.cpus for h in worker_hosts)
    watch = CpuWatch([], list(sut), shared_cpus=shared)
    result.started = time.time()
    watching = _LocustWatch(client, phase, shape, watch, progress, during, started=result.started,
                            master=processes["master"])
    bound = shape.duration_s + shape.users / max(shape.spawn_rate, 0.1) + BOUNDS.agent_start + BOUNDS.locust_exit
    try:
        wait_until(f"locust master of phase {phase} finishes its {shape.duration_s}s run", watching.master_done,
                   timeout=bound, observe=lambda: {n: p.poll() for n, p in processes.items()}, interval=0.2)
        wait_until(f"locust workers of phase {phase} exit after the master",
                   lambda: all(p.poll() is not None for p in processes.values()),
                   timeout=BOUNDS.locust_exit, observe=lambda: {n: p.poll() for n, p in processes.items()})
    finally:
        _stop_locust(client, phase, processes, remote)
    result.ended = time.time()
    result.cpu = watch.result()
    master = processes["master"]
    result.master_exit = master.returncode
    result.stderr_tail = redacted_tail(master.stderr.read() if master.stderr else "", 2000)
    _collect_locust_files(result, client, worker_hosts, phase, shared)
    return result


def _spawn_locust(client: ClientHost, phase: str, url: str, classes: tuple[str, ...], shape: LoadShape,
                  worker_hosts: list[ClientHost], remote_workers: int) -> tuple[dict, dict[str, ClientHost]]:
    """The master and the client host's workers, then remote_workers in each worker host: the processes by
    name, and which host each remote one runs in."""
    total = shape.workers + remote_workers * len(worker_hosts)
    run_shape = LoadShape(**{**shape.__dict__, "workers": total})
    master_host = client.machine.address if worker_hosts else "127.0.0.1"
    processes = {"master": client.spawn(f"{phase}-master", master_argv(client, phase, url, classes, run_shape,
                                                                       bind_host=master_host))}
    for k in range(shape.workers):
        processes[f"worker{k}"] = client.spawn(f"{phase}-worker{k}",
                                               worker_argv(client, phase, run_shape, master_host, classes))
    remote: dict[str, ClientHost] = {}
    for host in worker_hosts:
        for k in range(remote_workers):
            name = f"{phase}-{host.machine.name}-worker{k}"
            processes[name] = host.spawn(name, worker_argv(host, phase, run_shape, master_host, classes))
            remote[name] = host
    return processes, remote


class _LocustWatch:
    """Once a second while the master runs: a progress line from locust's stats history, the SUT's CPU window
    (from the first row with users running to ~1.5 s before they stop), and the fault schedule's `during`."""

    def __init__(self, client: ClientHost, phase: str, shape: LoadShape, watch: CpuWatch,
                 progress: Callable[[str], None], during: Callable[[float], None] | None, *,
                 started: float, master) -> None:
        self.client, self.phase, self.shape, self.watch = client, phase, shape, watch
        self.progress, self.during, self.started, self.master = progress, during, started, master
        self.history = client.path(f"{phase}_stats_history.csv")
        self.header: str | None = None
        self.shown = 0.0
        self.load_from: float | None = None
        # the history shows users up to ~2 s after they started: end the SUT's window 3 s earlier
        self.window = max(1.0, shape.duration_s - 3.0)

    def master_done(self) -> bool:
        elapsed = time.time() - self.started
        if elapsed - self.shown >= 1.0:
            self.shown = elapsed
            row = self._last_row()
            self.progress(progress_line(self.phase, elapsed, self.shape.duration_s, row))
            if self.load_from is None and load_running(row):
                self.watch.take("start")
                self.load_from = time.time()
            elif self.load_from is not None and not self.watch.samples["end"] and load_running(row) \
                    and time.time() - self.load_from >= self.window:
                self.watch.take("end")
            if self.during is not None:
                self.during(elapsed)
        return self.master.poll() is not None

    def _last_row(self):
        machine = self.client.machine
        if self.header is None:
            head = machine.execute(f"head -n 1 {shlex.quote(self.history)} 2>/dev/null")
            self.header = head.stdout if head.rc == 0 and head.stdout.strip() else None
        if not self.header:
            return None
        tail = machine.execute(f"tail -n 40 {shlex.quote(self.history)}")
        return last_aggregated_row(tail.stdout, self.header)


def _stop_locust(client: ClientHost, phase: str, processes: dict, remote: dict[str, ClientHost]) -> None:
    for name, process in processes.items():
        if process.poll() is None:
            remote.get(name, client).stop(name if name in remote else f"{phase}-{name}")
    for process in processes.values():
        try:
            process.wait(timeout=BOUNDS.locust_exit)
        except subprocess.TimeoutExpired:
            process.kill()


def _collect_locust_files(result: LocustResult, client: ClientHost, worker_hosts: list[ClientHost], phase: str,
                          shared: bool) -> None:
    for suffix in LOCUST_FILES:
        text = client.fetch(f"{phase}_{suffix}")
        if text is not None:
            result.files[f"{phase}_{suffix}"] = text
    records = []
    for host in [client, *worker_hosts]:
        records += host.cpu_records(phase)
    result.files[f"{phase}_cpu.json"] = json.dumps(records, indent=1)
    result.cpu["generator"] = locust_generator_cpu(records, shared=shared)
    if f"{phase}_final.json" not in result.files:
        raise HaconformError(f"locust phase {phase} wrote no stats (master exit {result.master_exit}): "
                             f"{redacted_tail(result.stderr_tail, 600)}", where=f"client host {client.machine.name}",
                             fix="run the master's command in the client host by hand to see why")


# What locust's FastHttpUser asks for: wrk sends it too, so that both ask the same of the
# server (Apache compresses index.php for locust; without this header, not for wrk).
LOCUST_HEADERS = ("Accept-Encoding: gzip, deflate, br",)


def wrk_argv(client: ClientHost, url: str, shape: LoadShape, duration_s: int) -> list[str]:
    threads = max(1, min(shape.workers, client.cpus_allowed or shape.workers))
    headers = [arg for header in LOCUST_HEADERS for arg in ("-H", header)]
    return ["wrk", "-t", str(threads), "-c", str(max(shape.users, threads)), *headers,
            "-d", f"{duration_s}s", "--timeout", "5s", "-s", client.path("wrk_report.lua"), url]


def parse_wrk_report(stdout: str) -> dict:
    """The JSON line wrk_report.lua's done() prints."""
    for line in stdout.splitlines():
        if line.startswith(WRK_MARK):
            return json.loads(line[len(WRK_MARK):])
    raise ValueError(f"wrk printed no {WRK_MARK.strip()} line: {redacted_tail(stdout, 300)!r}")


def run_wrk(client: ClientHost, url: str, shape: LoadShape, duration_s: int, *, name: str = "wrk",
            progress: Callable[[str], None] = lambda line: None, sut: list = ()) -> dict:
    argv = wrk_argv(client, url, shape, duration_s)
    connections, threads = int(argv[argv.index("-c") + 1]), int(argv[argv.index("-t") + 1])
    progress(f"{name:<12} {duration_s}s against {url} with {connections} connections")
    watch = CpuWatch([(client, [name])], list(sut), shared_cpus=True)
    process = client.spawn(name, argv, capture=True)
    started = time.time()
    try:
        time.sleep(min(0.5, duration_s / 4))
        watch.take("start")
        time.sleep(max(0.0, started + duration_s - 0.5 - time.time()))
        watch.take("end")
        stdout, stderr = process.communicate(timeout=duration_s + BOUNDS.locust_exit)
    except subprocess.TimeoutExpired:
        client.stop(name)
        process.kill()
        raise HaconformError(f"wrk did not finish within {duration_s + BOUNDS.locust_exit:.0f}s",
                             where=f"client host {client.machine.name}") from None
    if process.returncode != 0:
        raise HaconformError(f"wrk exited {process.returncode}: {redacted_tail(stderr.strip(), 400)}",
                             where=f"client host {client.machine.name}",
                             fix="check that wrk is installed in the client host")
    report = parse_wrk_report(stdout)
    report["url"] = url
    report["connections"] = connections
    report["threads"] = threads
    report["started"], report["ended"] = started, time.time()
    report["cpu"] = watch.result()
    return report
