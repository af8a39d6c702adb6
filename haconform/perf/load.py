"""Load generators, run inside the client host through its command transport.

Locust runs distributed: one master and N workers, each its own process.
Here they all run in the client host and meet on its loopback; the same
argv with --master-host pointed at the client host's address works for
workers on other machines.  wrk, Debian's reference generator, hits one URL
with the same number of connections, so locust's rate can be stated as a
fraction of what this machine can generate at all.

Everything a phase writes stays in a work directory on the client host and
is fetched through the host's transport afterwards, so no target needs a
shared file system.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import HaconformError
from ..timeouts import BOUNDS
from ..wait import wait_until

log = logging.getLogger("haconform.perf")

WORKLOAD = Path(__file__).with_name("workload.py")
WRK_REPORT = Path(__file__).with_name("wrk_report.lua")
MIXED_CLASSES = ("DynamicPageVisitor", "StaticFileVisitor", "Uploader")
REFERENCE_CLASS = "DynamicPageVisitor"
REFERENCE_PATH = "/index.php"
WRK_MARK = "HACONFORM-WRK "
LOCUST_PORT = 5557


@dataclass
class LoadShape:
    users: int = 20
    spawn_rate: float = 20.0
    duration_s: int = 15
    workers: int = 2
    seed: int = 1
    think_s: float = 0.0


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


class ClientHost:
    """What a load phase needs of the client machine."""

    def __init__(self, machine, python: str, workdir: str):
        self.machine = machine
        self.python = python
        self.workdir = workdir

    def prepare(self) -> None:
        self.machine.succeed(f"rm -rf {shlex.quote(self.workdir)} && mkdir -p {shlex.quote(self.workdir)}")
        self.machine.write_file(f"{self.workdir}/locustfile.py", WORKLOAD.read_text())
        self.machine.write_file(f"{self.workdir}/wrk_report.lua", WRK_REPORT.read_text())

    def path(self, name: str) -> str:
        return f"{self.workdir}/{name}"

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        """Start argv in the host; its PID inside the host goes to NAME.pid there."""
        script = f"echo $$ > {shlex.quote(self.path(name + '.pid'))}; exec {shlex.join(argv)}"
        return subprocess.Popen([*self.machine.argv(), "/bin/sh", "-c", script],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    def stop(self, name: str) -> None:
        """End a process this phase started, by the PID it recorded."""
        pidfile = shlex.quote(self.path(name + ".pid"))
        self.machine.execute(f"test -s {pidfile} && kill $(cat {pidfile}) 2>/dev/null; true")

    def fetch(self, name: str) -> str | None:
        result = self.machine.execute(f"cat {shlex.quote(self.path(name))}")
        return result.stdout if result.rc == 0 else None


def locust_env(shape: LoadShape, out_prefix: str) -> list[str]:
    return ["env", f"HACONFORM_PERF_SEED={shape.seed}", f"HACONFORM_PERF_WAIT={shape.think_s}",
            f"HACONFORM_PERF_OUT={out_prefix}"]


def master_argv(client: ClientHost, phase: str, url: str, classes: tuple[str, ...], shape: LoadShape) -> list[str]:
    return [*locust_env(shape, client.path(phase)),
            client.python, "-m", "locust", "-f", client.path("locustfile.py"),
            "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(LOCUST_PORT),
            "--expect-workers", str(shape.workers), "--expect-workers-max-wait", str(int(BOUNDS.agent_start)),
            "--headless", "--only-summary", "--loglevel", "WARNING",
            "-u", str(shape.users), "-r", str(shape.spawn_rate), "-t", f"{shape.duration_s}s",
            "--stop-timeout", "2", "--exit-code-on-error", "0",
            "--host", url, "--csv", client.path(phase), "--csv-full-history",
            "--json-file", client.path(f"{phase}_final"), *classes]


def worker_argv(client: ClientHost, phase: str, shape: LoadShape, master_host: str = "127.0.0.1") -> list[str]:
    return [*locust_env(shape, client.path(phase)),
            client.python, "-m", "locust", "-f", client.path("locustfile.py"),
            "--worker", "--master-host", master_host, "--master-port", str(LOCUST_PORT),
            "--loglevel", "WARNING"]


LOCUST_FILES = ("final.json", "stats.csv", "stats_history.csv", "failures.csv", "exceptions.csv", "served_by.json", "seconds.json")


def run_locust(client: ClientHost, phase: str, url: str, classes: tuple[str, ...], shape: LoadShape,
               *, progress: Callable[[str], None] = lambda line: None,
               during: Callable[[float], None] | None = None) -> LocustResult:
    """One headless locust run; `during(elapsed)` is called about every second (fault scheduling)."""
    result = LocustResult(phase, url, classes)
    processes = {"master": client.spawn(f"{phase}-master", master_argv(client, phase, url, classes, shape))}
    for k in range(shape.workers):
        processes[f"worker{k}"] = client.spawn(f"{phase}-worker{k}", worker_argv(client, phase, shape))
    result.started = time.time()
    history = client.path(f"{phase}_stats_history.csv")
    state = {"header": None, "shown": 0.0}

    def master_done() -> bool:
        elapsed = time.time() - result.started
        if elapsed - state["shown"] >= 1.0:
            state["shown"] = elapsed
            if state["header"] is None:
                head = client.machine.execute(f"head -n 1 {shlex.quote(history)} 2>/dev/null")
                state["header"] = head.stdout if head.rc == 0 and head.stdout.strip() else None
            row = None
            if state["header"]:
                tail = client.machine.execute(f"tail -n 40 {shlex.quote(history)}")
                row = last_aggregated_row(tail.stdout, state["header"])
            progress(progress_line(phase, elapsed, shape.duration_s, row))
            if during is not None:
                during(elapsed)
        return processes["master"].poll() is not None

    bound = shape.duration_s + shape.users / max(shape.spawn_rate, 0.1) + BOUNDS.agent_start + BOUNDS.locust_exit
    try:
        wait_until(f"locust master of phase {phase} finishes its {shape.duration_s}s run", master_done,
                   timeout=bound, observe=lambda: {n: p.poll() for n, p in processes.items()}, interval=0.2)
        wait_until(f"locust workers of phase {phase} exit after the master",
                   lambda: all(p.poll() is not None for p in processes.values()),
                   timeout=BOUNDS.locust_exit, observe=lambda: {n: p.poll() for n, p in processes.items()})
    finally:
        for name, process in processes.items():
            if process.poll() is None:
                client.stop(f"{phase}-{name}")
        for process in processes.values():
            try:
                process.wait(timeout=BOUNDS.locust_exit)
            except subprocess.TimeoutExpired:
                process.kill()
    result.ended = time.time()
    master = processes["master"]
    result.master_exit = master.returncode
    result.stderr_tail = (master.stderr.read() if master.stderr else "")[-2000:]
    for suffix in LOCUST_FILES:
        text = client.fetch(f"{phase}_{suffix}")
        if text is not None:
            result.files[f"{phase}_{suffix}"] = text
    if f"{phase}_final.json" not in result.files:
        raise HaconformError(f"locust phase {phase} wrote no stats (master exit {result.master_exit}): "
                             f"{result.stderr_tail[-600:]}", where=f"client host {client.machine.name}",
                             fix="run the master's command in the client host by hand to see why")
    return result


def wrk_argv(client: ClientHost, url: str, shape: LoadShape, duration_s: int) -> list[str]:
    return ["wrk", "-t", str(max(1, shape.workers)), "-c", str(max(shape.users, shape.workers)),
            "-d", f"{duration_s}s", "--timeout", "5s", "-s", client.path("wrk_report.lua"), url]


def parse_wrk_report(stdout: str) -> dict:
    """The JSON line wrk_report.lua's done() prints."""
    for line in stdout.splitlines():
        if line.startswith(WRK_MARK):
            return json.loads(line[len(WRK_MARK):])
    raise ValueError(f"wrk printed no {WRK_MARK.strip()} line: {stdout[-300:]!r}")


def run_wrk(client: ClientHost, url: str, shape: LoadShape, duration_s: int,
            *, progress: Callable[[str], None] = lambda line: None) -> dict:
    progress(f"{'wrk':<12} {duration_s}s against {url} with {max(shape.users, shape.workers)} connections")
    argv = [*client.machine.argv(), *wrk_argv(client, url, shape, duration_s)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True,
                              timeout=duration_s + BOUNDS.locust_exit)
    except subprocess.TimeoutExpired:
        raise HaconformError(f"wrk did not finish within {duration_s + BOUNDS.locust_exit:.0f}s",
                             where=f"client host {client.machine.name}") from None
    if done.returncode != 0:
        raise HaconformError(f"wrk exited {done.returncode}: {done.stderr.strip()[-400:]}",
                             where=f"client host {client.machine.name}",
                             fix="check that wrk is installed in the client host")
    report = parse_wrk_report(done.stdout)
    report["url"] = url
    report["connections"] = max(shape.users, shape.workers)
    report["threads"] = max(1, shape.workers)
    return report
