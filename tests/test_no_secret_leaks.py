"""No secret in any form, in any file a conformance run writes or on any command line while it runs.

The whole conformance job runs on a lab of its own at DEBUG (log file, live
log on the terminal, JUnit, HTML, verdict, history), with a known hacluster
password; the fence key is the one the run generated (read back from the
director afterwards), the stats credentials the documented ones.  The run is
traced with strace (execve only): the argv of every program the harness and
everything it starts execute, however short-lived; meanwhile /proc/*/cmdline
of every process on the machine (the lab's hosts included: their PID
namespaces are children of ours) is sampled, which also sees what was not
started by the harness.  Every form the
secrets take (haconform.secrets.secret_forms: raw, hex, base64, bytes repr,
JSON-escaped, URL-encoded...) is then looked for in every file the run wrote
and in every command line seen: 0 occurrences.

The scan proves it can see: the key's own file on the director's disk must be
found, the trace must hold the runbook's short-lived `dd` that made the key,
and the sampler must have seen the lab's daemons.
"""

from __future__ import annotations

import json
import os
import re
import secrets as tokens
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from haconform.lab.lab import NamespaceLab, STATE_ROOT
from haconform.secrets import secret_forms
from haconform.timeouts import BOUNDS
from haconform.topology import load_topology
from haconform.wait import wait_until

REPO = Path(__file__).resolve().parent.parent
LAB = f"lk{os.getpid() % 10000}"
RUN_TIMEOUT_S = 1800
SAMPLE_PERIOD_S = 0.1
# Where the runbook keeps the fence key: the one place it must be (the scanner's positive control).
KEY_FILE = "/etc/cluster/fence_xvm.key"
# Where the runbook keeps its secrets on purpose: the key files, the directors' haproxy.cfg (`stats auth`),
# the password database.
SECRET_HOMES = ("/fence_xvm.key", "/etc/haproxy/haproxy.cfg", "/etc/shadow", "/etc/shadow-")

pytestmark = [pytest.mark.lab, pytest.mark.skipif(os.geteuid() != 0, reason="the namespace lab needs root")]


class CmdlineSampler(threading.Thread):
    """Every process's argv on the machine, sampled until stopped; each distinct argv kept once."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen: set[bytes] = set()
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                            self.seen.add(fh.read())
                    except OSError:
                        pass   # the process ended between listing and reading
            self.samples += 1
            self._halt.wait(SAMPLE_PERIOD_S)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def documented_stats_credentials() -> set[str]:
    """`USER:PASSWORD` of every documented `stats auth`.  The pair, not the bare password, is what is
    looked for: the runbook's stats password is the English word "password", which test names and
    messages use as a word."""
    found = set()
    for cfg in (REPO / "fixtures" / "documented").rglob("haproxy.cfg"):
        found.update(m.group(1) for m in re.finditer(r"stats\s+auth\s+(\S+?:\S+)", cfg.read_text()))
    return found


def overlay_internal(relative: Path) -> bool:
    parts = relative.parts
    return len(parts) >= 3 and parts[0] == "hosts" and parts[2] in ("merged", "work")


def occurrences(data: bytes, patterns: dict[bytes, str]) -> list[str]:
    return sorted({label for pattern, label in patterns.items() if pattern in data})


def patterns_of(secrets: dict[str, str | bytes]) -> dict[bytes, str]:
    patterns = {}
    for name, secret in secrets.items():
        for form in secret_forms(secret):
            for encoding in ("utf-8", "latin-1"):
                try:
                    patterns[form.encode(encoding)] = name
                except UnicodeEncodeError:
                    pass
    return patterns


def harness_of(tracer: subprocess.Popen) -> int | None:
    """The pid strace started (the pytest session), once it has."""
    for task in os.listdir(f"/proc/{tracer.pid}/task"):
        children = Path(f"/proc/{tracer.pid}/task/{task}/children").read_text().split()
        if children:
            return int(children[0])
    return None


def ended(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def traced_run(command: list[str], tmp: Path, password: str) -> tuple[float, int]:
    """Run the session under strace; (seconds, failures + errors from its JUnit report).

    The lab is kept after the session (the key and the hosts' disks are read afterwards), so its daemons,
    traced too, outlive the session: strace -f would wait for them.  Once the session has ended, strace is
    killed; its tracees are detached by the kernel, not killed (no --kill-on-exit)."""
    began = time.monotonic()
    with open(tmp / "terminal.txt", "wb") as terminal:
        tracer = subprocess.Popen(command, cwd=REPO, stdout=terminal, stderr=subprocess.STDOUT,
                                  env={**os.environ, "HACONFORM_HACLUSTER_PASSWORD": password})
    try:
        harness = wait_until("strace started the conformance session", lambda: harness_of(tracer),
                             timeout=BOUNDS.agent_start)
        wait_until("the conformance session ended", lambda: ended(harness) or tracer.poll() is not None,
                   timeout=RUN_TIMEOUT_S, interval=1.0, observe=lambda: f"pid {harness} still running")
    finally:
        if tracer.poll() is None:
            tracer.kill()
        tracer.wait(timeout=BOUNDS.host_halt)
    seconds = time.monotonic() - began
    suites = ET.parse(tmp / "conformance.xml").getroot()
    suites = [suites] if suites.tag == "testsuite" else list(suites)
    tests = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    return seconds, failed if tests else -1


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("leaks")
    password = "hacluster-" + tokens.token_urlsafe(12)
    sampler = CmdlineSampler()
    sampler.start()
    # Every exec of the harness and of everything it starts (the lab's hosts, their daemons, every command
    # run in them) with its whole argv: a command that lives for a millisecond is seen too.  Only execve
    # stops the tracee (seccomp-bpf), so the run keeps its pace.
    trace = ["strace", "-f", "--seccomp-bpf", "-qq", "-e", "trace=execve,execveat", "-e", "signal=none",
             "-s", "1048576", "-o", str(tmp / "execve.trace")]
    command = [*trace, sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "--lab-name", LAB, "--keep-lab",
               "--log-level=DEBUG", f"--log-file={tmp / 'debug.log'}", "--log-file-level=DEBUG",
               "-o", "log_cli=true", "--log-cli-level=DEBUG",
               f"--junitxml={tmp / 'conformance.xml'}", f"--html={tmp / 'conformance.html'}", "--self-contained-html",
               "--history-dir", str(tmp / "results")]
    try:
        run_seconds, failed = traced_run(command, tmp, password)
        lab = NamespaceLab(LAB, load_topology(REPO / "fixtures" / "topology.yaml"))
        director = lab.topology.cluster_nodes[0]
        key = subprocess.run([*lab.exec_argv(director), "cat", KEY_FILE], capture_output=True, timeout=60).stdout
        # The hosts' disks are their upper directories; `merged` and `work` are overlayfs internals.
        lab_files = {p: p.read_bytes() for p in (STATE_ROOT / LAB).rglob("*")
                     if p.is_file() and not p.is_symlink() and not overlay_internal(p.relative_to(STATE_ROOT / LAB))}
    finally:
        sampler.stop()
        subprocess.run([sys.executable, "-m", "haconform.cli", "lab", "down", "--name", LAB], cwd=REPO,
                       capture_output=True, timeout=300)
    yield {"tmp": tmp, "failed": failed, "run_seconds": run_seconds, "key": key,
           "password": password, "sampler": sampler, "lab_files": lab_files, "director": director}


def test_a_debug_conformance_run_leaks_no_secret(debug_run):
    tmp, key = debug_run["tmp"], debug_run["key"]
    terminal = (tmp / "terminal.txt").read_text(errors="replace")
    assert len(key) >= 16, f"no fence key on the director after the run: {key!r}\n{terminal[-2000:]}"
    secrets = {"hacluster password": debug_run["password"], "fence key": key,
               **{f"stats credentials {i}": p for i, p in enumerate(sorted(documented_stats_credentials()))}}
    patterns = patterns_of(secrets)

    # The scanner sees what it looks for: the key's file on the director's disk holds the key.
    disk = f"hosts/{debug_run['director']}/"
    key_files = [p for p in debug_run["lab_files"] if disk in str(p) and str(p).endswith(KEY_FILE)]
    assert key_files and "fence key" in occurrences(debug_run["lab_files"][key_files[0]], patterns), \
        f"the scan did not find the key in its own file ({key_files}): it would miss a leak"
    sampler = debug_run["sampler"]
    assert sampler.samples > 100 and any(b"pacemaker" in argv for argv in sampler.seen), \
        f"the cmdline sampler saw too little ({sampler.samples} samples)"

    # The exec trace is the test's own record of argvs: scanned as argvs below, not as a file the run wrote.
    written = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file() and p.name != "execve.trace"}
    # The lab's own files (consoles, fence daemon log, the hosts' disks) besides the runbook's secret homes.
    written.update({p: data for p, data in debug_run["lab_files"].items() if not str(p).endswith(SECRET_HOMES)})
    leaks = {str(p): occurrences(data, patterns) for p, data in written.items()}
    leaks = {p: found for p, found in leaks.items() if found}
    argv_leaks = sorted({argv.replace(b"\0", b" ").decode("utf-8", "replace")[:200]
                         for argv in sampler.seen if occurrences(argv, patterns)})
    traced = (tmp / "execve.trace").read_bytes()
    execs = traced.count(b"execve(")
    # The trace sees what it looks for: the runbook's own key command ran, short-lived, in the fence host.
    assert execs > 1000 and b'"dd", "if=/dev/urandom"' in traced, \
        f"the exec trace saw too little ({execs} execs): it would miss a leak"
    argv_leaks += sorted({line[:200].decode("utf-8", "replace") for line in traced.splitlines()
                          if occurrences(line, patterns)})
    summary = {"run_seconds": round(debug_run["run_seconds"], 1), "failed": debug_run["failed"],
               "files_scanned": len(written), "bytes_scanned": sum(map(len, written.values())),
               "forms_searched": len(patterns), "execs_traced": execs, "cmdline_samples": sampler.samples,
               "distinct_cmdlines": len(sampler.seen), "file_leaks": leaks, "cmdline_leaks": argv_leaks}
    (tmp / "leaks.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if "leaks" not in k}))

    assert not leaks, f"secrets found in files the run wrote: {leaks}"
    assert not argv_leaks, f"secrets found on command lines during the run: {argv_leaks}"
    assert debug_run["failed"] == 0, f"the DEBUG conformance run itself failed:\n{terminal[-3000:]}"
