"""No secret in any form, in any file a conformance run writes or on any command line while it runs.

The whole conformance job runs on a lab of its own at DEBUG (log file, live
log on the terminal, JUnit, HTML, verdict, history) with `-l` (failures show
their locals), with a known hacluster password; the fence key is the one the
run generated (read back from the director afterwards), the stats credentials
the documented ones.  Two deliberately failing tests join the run: one holds
the fence key and the password in its locals (-l shows them through saferepr,
which cuts a long value to its two ends), one runs a command whose output ends
with the key, cut to its tail by the transport.  The run is
traced with strace (execve only): the argv of every program the harness and
everything it starts execute, however short-lived; meanwhile /proc/*/cmdline
of every process on the machine (the lab's hosts included: their PID
namespaces are children of ours) is sampled, which also sees what was not
started by the harness.  Every form the
secrets take (haconform.redaction.secret_forms: raw, hex, base64, bytes repr,
JSON-escaped, URL-encoded...) is then looked for in every file the run wrote
and in every command line seen, whole and as any run of 8 characters
(haconform.redaction.SecretRuns: a cut, wrapped or half-shown secret): 0
occurrences.

The scan proves it can see: the key's own file on the director's disk must be
found, the trace must hold the runbook's short-lived `dd` that made the key,
and the sampler must have seen the lab's daemons.
"""

from __future__ import annotations

import json
import os
import re
import secrets as tokens
import shlex
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from haconform.lab.lab import NamespaceLab, STATE_ROOT
from haconform.redaction import MASK, SecretRuns, secret_forms
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

# The runbook's stats password is the English word "password": a run of 8 characters that is just that word
# is the word (in a daemon's log, a file on a host), not a leak; the USER:PASSWORD pair is still looked for whole.
STATS_PASSWORD_WORD = b"password"
# Joins the conformance run: each fails on purpose, showing the secrets the way a real failure would.
DELIBERATE_FAILURES = '''
import os

KEY_FILE = "/etc/cluster/fence_xvm.key"


def test_fails_holding_the_fence_key_and_the_stats_secret_in_locals(stage5, deployment):
    director = deployment.directors[0]
    key = director.read_secret(KEY_FILE)
    key_hex, password = key.hex(), os.environ["HACONFORM_HACLUSTER_PASSWORD"]
    both = {"fence key": key, "hacluster": password}
    assert key_hex == password, "deliberate: -l shows key, key_hex, password and both"


def test_fails_on_a_command_whose_output_ends_with_a_secret(stage5, deployment):
    director = deployment.directors[0]
    # The password on stdin (never on a command line); the output: the password, the key in base64, then
    # in hex, so the transport's cut to the last 400 characters falls inside the base64.
    director.succeed(f"cat; echo; base64 -w0 {KEY_FILE}; echo; od -An -tx1 {KEY_FILE} | tr -d ' \\n'; exit 3",
                     input=os.environ["HACONFORM_HACLUSTER_PASSWORD"])
'''
DELIBERATE_MODULE = "test_deliberate_secret_failures"
# Their names avoid the runbook's stats password, the English word "password", which is masked wherever it shows.
DELIBERATE_PREFIX = "test_fails_"

pytestmark = [pytest.mark.lab(expected_s=300), pytest.mark.skipif(os.geteuid() != 0, reason="the namespace lab needs root")]


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


def _without_the_word(name: str, data: bytes) -> bytes:
    if not name.startswith("stats"):
        return data
    return data.replace(STATS_PASSWORD_WORD, b"\0" * len(STATS_PASSWORD_WORD))


# Characters of the hex and base64 forms: a token of them holds a run by chance or by leak (see below).
TOKEN_BYTES = frozenset(b"0123456789abcdefABCDEFghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ+/=-_")


# Escaped bytes (`\xe5\xba`, escaped once or more): a run of 8 characters of an escaped form holds only
# two bytes of the key, which any escaped UTF-8 text (the runbook's Chinese in a repr) shares by chance.
ESCAPED_BYTES = re.compile(rb"(?:\\+x[0-9a-fA-F]{2})+")


def token_around(data: bytes, start: int, end: int) -> tuple[int, int]:
    """The whole hex, base64 or escaped-bytes token a run lies in (the run itself when it is not one)."""
    for escaped in ESCAPED_BYTES.finditer(data, max(0, start - 400), min(len(data), end + 400)):
        if escaped.start() <= start and end <= escaped.end():
            return escaped.span()
    if not all(b in TOKEN_BYTES for b in data[start:end]):
        return start, end
    while start > 0 and data[start - 1] in TOKEN_BYTES:
        start -= 1
    while end < len(data) and data[end] in TOKEN_BYTES:
        end += 1
    return start, end


def leaked_spans(name: str, data: bytes, secret_runs: SecretRuns) -> list[tuple[int, int]]:
    """The runs that are a leak, not chance.  A random fence key's hex and base64 forms share some 2000 runs
    of 8 characters with every random token of their alphabet; a DEBUG run prints thousands of hex digests
    and ids, many before the key exists (so nothing could mask them).  A run inside a longer token of that
    alphabet (or inside a sequence of escaped bytes) is a leak when the token is the secret's own: a cut key (`...a3b1c2d4'`) ends where the key's
    form ends or at a non-token character, and so is wholly a run of its forms; an unrelated digest is not."""
    clean = _without_the_word(name, data)
    leaked = []
    for start, end in secret_runs.spans(clean):
        token_start, token_end = token_around(clean, start, end)
        if (token_start, token_end) == (start, end) or secret_runs.spans(clean[token_start:token_end]) == [
                (0, token_end - token_start)]:
            leaked.append((start, end))
    return leaked


def runs_found(data: bytes, runs: dict[str, SecretRuns]) -> list[str]:
    """The secrets of which a run of 8 characters of a form (or a whole shorter form) shows in data."""
    return [name for name, secret_runs in runs.items() if leaked_spans(name, data, secret_runs)]


def where_runs(data: bytes, runs: dict[str, SecretRuns]) -> list[str]:
    """For the report: each leaked run's line, the run itself blanked out (#), so a failure says where."""
    shown = []
    for name, secret_runs in runs.items():
        for start, end in leaked_spans(name, data, secret_runs):
            line_start = data.rfind(b"\n", 0, start) + 1
            line_end = data.find(b"\n", end)
            line_end = len(data) if line_end == -1 else line_end
            text = (data[max(line_start, start - 60):start] + b"#" * (end - start) + data[end:min(line_end, end + 60)])
            line = data.count(b"\n", 0, start) + 1
            shown.append(f"{name}, line {line}: {text.decode('utf-8', 'replace')}")
    return shown


def lines_with_runs(data: bytes, runs: dict[str, SecretRuns]) -> list[bytes]:
    """The lines of data (a trace) holding a run of a secret, each once."""
    starts = {data.rfind(b"\n", 0, start) + 1 for name, secret_runs in runs.items()
              for start, _ in leaked_spans(name, data, secret_runs)}
    ends = {start: data.find(b"\n", start) for start in starts}
    return [data[start:end if end != -1 else len(data)] for start, end in sorted(ends.items())]


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


def harness_of(pidfile: Path) -> int | None:
    """The pid of the pytest session strace started, once its shell has written it.  Not strace's first
    child: with --seccomp-bpf strace first forks a short-lived child of its own to check the filter, and
    taking that one for the session ended the trace at once (every exec after it failed with ENOSYS)."""
    try:
        return int(pidfile.read_text())
    except (OSError, ValueError):
        return None


def ended(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def traced_run(strace: list[str], session: list[str], tmp: Path, password: str) -> tuple[float, int, list[str]]:
    """Run the session (an argv) under strace (the argv before it); (seconds, failures + errors from its
    JUnit report but the deliberate ones, the deliberate tests that failed).

    The lab is kept after the session (the key and the hosts' disks are read afterwards), so its daemons,
    traced too, outlive the session: strace -f would wait for them.  Once the session has ended, strace is
    killed; its tracees are detached by the kernel, not killed (no --kill-on-exit)."""
    began = time.monotonic()
    pidfile = tmp / "session.pid"
    # The session's shell writes its pid, then becomes the session (exec): the pid the trace follows.
    with open(tmp / "terminal.txt", "wb") as terminal:
        tracer = subprocess.Popen([*strace, "sh", "-c", f'echo $$ > {shlex.quote(str(pidfile))}; exec "$@"', "sh", *session],
                                  cwd=REPO, stdout=terminal, stderr=subprocess.STDOUT,
                                  env={**os.environ, "HACONFORM_HACLUSTER_PASSWORD": password})
    strace_ended_first = None
    try:
        harness = wait_until("strace started the conformance session", lambda: harness_of(pidfile),
                             timeout=BOUNDS.agent_start, observe=lambda: f"strace exit {tracer.poll()}")
        wait_until("the conformance session ended", lambda: ended(harness) or tracer.poll() is not None,
                   timeout=RUN_TIMEOUT_S, interval=1.0, observe=lambda: f"pid {harness} still running")
        if not ended(harness):
            strace_ended_first = tracer.poll()
            os.kill(harness, signal.SIGKILL)   # the session this test started, untraced now: by its pid
            wait_until("the untraced session ended", lambda: ended(harness), timeout=BOUNDS.host_halt)
    finally:
        if tracer.poll() is None:
            tracer.kill()
        tracer.wait(timeout=BOUNDS.host_halt)
    assert strace_ended_first is None, \
        f"strace ended (exit {strace_ended_first}) before the session it traced: the trace is not whole"
    seconds = time.monotonic() - began
    cases = list(ET.parse(tmp / "conformance.xml").getroot().iter("testcase"))
    failing = [case for case in cases if case.find("failure") is not None or case.find("error") is not None]
    # By name: the module lies outside the rootdir, so JUnit gives it no classname to go by.
    deliberate = [case.get("name") for case in failing if (case.get("name") or "").startswith(DELIBERATE_PREFIX)]
    failed = len(failing) - len(deliberate)
    return seconds, failed if cases else -1, deliberate


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("leaks")
    # Random all through: a password starting "hacluster-" would have every "hacluster" masked as a run of it.
    password = tokens.token_urlsafe(18)
    deliberate = tmp / f"{DELIBERATE_MODULE}.py"
    deliberate.write_text(DELIBERATE_FAILURES)
    sampler = CmdlineSampler()
    sampler.start()
    # Every exec of the harness and of everything it starts (the lab's hosts, their daemons, every command
    # run in them) with its whole argv: a command that lives for a millisecond is seen too.  Only execve
    # stops the tracee (seccomp-bpf), so the run keeps its pace.
    trace = ["strace", "-f", "--seccomp-bpf", "-qq", "-e", "trace=execve,execveat", "-e", "signal=none",
             "-s", "1048576", "-o", str(tmp / "execve.trace")]
    # The deliberate failures run last, outside the checkout: --rootdir keeps the checkout's conftest and ini.
    session = [sys.executable, "-m", "pytest", "suites", str(deliberate), "--rootdir", str(REPO),
               "-c", str(REPO / "pytest.ini"), "-l", "-p", "no:cacheprovider", "--lab-name", LAB, "--keep-lab",
               "--log-level=DEBUG", f"--log-file={tmp / 'debug.log'}", "--log-file-level=DEBUG",
               "-o", "log_cli=true", "--log-cli-level=DEBUG",
               f"--junitxml={tmp / 'conformance.xml'}", f"--html={tmp / 'conformance.html'}", "--self-contained-html",
               "--history-dir", str(tmp / "results")]
    try:
        run_seconds, failed, deliberate_failed = traced_run(trace, session, tmp, password)
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
    yield {"tmp": tmp, "failed": failed, "deliberate_failed": deliberate_failed, "run_seconds": run_seconds, "key": key,
           "password": password, "sampler": sampler, "lab_files": lab_files, "director": director}


def test_a_debug_conformance_run_leaks_no_secret(debug_run):
    tmp, key = debug_run["tmp"], debug_run["key"]
    terminal = (tmp / "terminal.txt").read_text(errors="replace")
    assert len(key) >= 16, f"no fence key on the director after the run: {key!r}\n{terminal[-2000:]}"
    secrets = {"hacluster password": debug_run["password"], "fence key": key,
               **{f"stats credentials {i}": p for i, p in enumerate(sorted(documented_stats_credentials()))}}
    patterns = patterns_of(secrets)
    runs = {name: SecretRuns(secret) for name, secret in secrets.items()}

    # The scanner sees what it looks for: the key's file on the director's disk holds the key, whole and in runs.
    disk = f"hosts/{debug_run['director']}/"
    key_files = [p for p in debug_run["lab_files"] if disk in str(p) and str(p).endswith(KEY_FILE)]
    assert key_files and "fence key" in occurrences(debug_run["lab_files"][key_files[0]], patterns), \
        f"the scan did not find the key in its own file ({key_files}): it would miss a leak"
    assert "fence key" in runs_found(debug_run["lab_files"][key_files[0]][40:-40], runs), \
        "the scan of runs did not find a cut of the key: it would miss a fragment"
    sampler = debug_run["sampler"]
    assert sampler.samples > 100 and any(b"pacemaker" in argv for argv in sampler.seen), \
        f"the cmdline sampler saw too little ({sampler.samples} samples)"
    # The deliberate failures ran, failed, and -l showed their locals (masked).
    assert sorted(debug_run["deliberate_failed"]) == ["test_fails_holding_the_fence_key_and_the_stats_secret_in_locals",
                                                      "test_fails_on_a_command_whose_output_ends_with_a_secret"], \
        f"the deliberate failures did not both fail: {debug_run['deliberate_failed']}\n{terminal[-3000:]}"
    # (not `password`: the local's very name is the runbook's stats password, masked too)
    shown_locals = [line for line in terminal.splitlines() if line.startswith(("key ", "key_hex ", "both "))]
    assert len(shown_locals) >= 3 and all(MASK in line for line in shown_locals), \
        f"-l did not show the deliberate test's locals, masked: {shown_locals}"

    # The exec trace is the test's own record of argvs: scanned as argvs below, not as a file the run wrote.
    written = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file() and p.name != "execve.trace"}
    # The lab's own files (consoles, fence daemon log, the hosts' disks) besides the runbook's secret homes.
    written.update({p: data for p, data in debug_run["lab_files"].items() if not str(p).endswith(SECRET_HOMES)})
    leaks = {str(p): occurrences(data, patterns) for p, data in written.items()}
    leaks = {p: found for p, found in leaks.items() if found}
    run_leaks = {str(p): where_runs(data, runs) for p, data in written.items()}
    run_leaks = {p: found for p, found in run_leaks.items() if found}
    argv_leaks = sorted({argv.replace(b"\0", b" ").decode("utf-8", "replace")[:200]
                         for argv in sampler.seen if occurrences(argv, patterns) or runs_found(argv, runs)})
    traced = (tmp / "execve.trace").read_bytes()
    execs = traced.count(b"execve(")
    # The trace sees what it looks for: the runbook's own key command ran, short-lived, in the fence host.
    assert execs > 1000 and b'"dd", "if=/dev/urandom"' in traced, \
        f"the exec trace saw too little ({execs} execs): it would miss a leak"
    argv_leaks += sorted({line[:200].decode("utf-8", "replace") for line in traced.splitlines()
                          if occurrences(line, patterns)})
    argv_leaks += sorted({line[:200].decode("utf-8", "replace") for line in lines_with_runs(traced, runs)})
    summary = {"run_seconds": round(debug_run["run_seconds"], 1), "failed": debug_run["failed"],
               "deliberate_failed": debug_run["deliberate_failed"],
               "files_scanned": len(written), "bytes_scanned": sum(map(len, written.values())),
               "forms_searched": len(patterns), "execs_traced": execs, "cmdline_samples": sampler.samples,
               "distinct_cmdlines": len(sampler.seen), "file_leaks": leaks, "file_run_leaks": run_leaks,
               "cmdline_leaks": argv_leaks}
    (tmp / "leaks.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if "leaks" not in k}))

    assert not leaks, f"secrets found in files the run wrote: {leaks}"
    assert not run_leaks, f"runs of 8 characters of secrets found in files the run wrote: {run_leaks}"
    assert not argv_leaks, f"secrets found on command lines during the run: {argv_leaks}"
    assert debug_run["failed"] == 0, f"the DEBUG conformance run itself failed:\n{terminal[-3000:]}"
