"""Dead-man switches: every change a fault makes to a deployment is undone even if the harness dies.

    switch = arm(target, "server1", "pcs node unstandby server1", what="standby of server1")
    ... the change, the test, restore ...
    disarm_all(target)          # restore does this, after it restored

A switch is a child process of the harness running, in the host,

    /bin/sh -c 'echo armed; line=$(timeout N head -n 1); [ "$line" = disarm ] || UNDO'

with its standard input a pipe from the harness.  While the harness lives the
pipe stays open and `head` waits.  disarm() writes "disarm" and the shell
exits without doing anything.  When the harness dies, even by SIGKILL, the
kernel closes the pipe: `head` sees end of file at once and the undo runs.
Over ssh the client forwards that end of file; if the ssh client dies too,
sshd closes the session and the remote stdin ends the same way.  N (the
backstop) covers what neither can see: the network to the host gone.

The switch runs in a session of its own, so a Ctrl-C to the harness's
process group does not end it before restore has disarmed it.  Once fired it
writes nowhere but syslog (`logger -t haconform-deadman`): the deployment's
files are not the harness's to write, and a stdout nobody reads any more
would kill the shell with SIGPIPE before the undo ran.

The undo must be idempotent (restore may already have done the same) and
carry no secret (it is a command line on the host); arm() refuses one that
does.  A switch cannot call back into Python, so it knows no fault: its undo
is a heal step's command line from the nemesis (haconform/faults/nemesis.py
HealStep.arm_dead_man), the same line the harness runs to heal and restore.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import threading
import time

from .errors import HaconformError, WaitTimeout
from .redaction import redact, redacted_tail
from .timeouts import BOUNDS
from .wait import wait_until

log = logging.getLogger("haconform.deadman")

LOG_TAG = "haconform-deadman"

# The backstop, when the harness's death cannot reach the host: longer than the
# longest destructive test plus its restore, so it never fires under a live
# harness.  HAC-FENCE-002 waits for the fence, the group to move, the service,
# the fenced node's boot and its rejoin; restore after a reboot waits for a
# rejoin again; FaultRun waits for the prober to start (BOUNDS.dead_man).
# Scaled with the waits it is sized from (haconform/timeouts.py SCALED), so read when a switch is armed.
def dead_man_s() -> int:
    sized_from = BOUNDS.fence_complete + 2 * BOUNDS.resource_move + 3 * BOUNDS.node_rejoin + BOUNDS.agent_start
    return int(max(BOUNDS.dead_man, sized_from))

# A cluster reforming (a node rejoining after the harness died mid-fault) can
# refuse a pcs command for a few seconds; the undo is tried again rather than
# given up after one refusal.
UNDO_ATTEMPTS = 10
UNDO_RETRY_S = 3

# Exit statuses of the switch's shell, so disarm() can say what happened.
EXIT_DISARMED = 0
EXIT_UNDONE = 3
EXIT_UNDO_FAILED = 4

# How long a switch has to say "armed" after it starts, or to end after "disarm":
# a process started in a host answering, as the client agent must.
def answer_s() -> float:
    return BOUNDS.agent_start


def switch_script(undo: str, what: str, backstop_s: int) -> str:
    """The shell program a switch runs in the host (see the module docstring)."""
    def say(text: str) -> str:
        return f"logger -t {LOG_TAG} -- {shlex.quote(f'{what}: {text}')} || true"
    return "\n".join([
        "trap '' HUP PIPE INT",
        "echo armed",
        f"line=$(timeout {int(backstop_s)} head -n 1)",
        f'if [ "$line" = disarm ]; then echo disarmed; exit {EXIT_DISARMED}; fi',
        # From here the harness is gone (or unreachable): nothing reads stdout any more.
        "exec </dev/null >/dev/null 2>&1",
        say(f"the harness is gone or {int(backstop_s)}s passed; undoing: {undo}"),
        "attempt=1",
        f"until /bin/sh -c {shlex.quote(undo)}; do",
        f'  if [ "$attempt" -ge {UNDO_ATTEMPTS} ]; then',
        f"    {say(f'undo failed {UNDO_ATTEMPTS} times')}",
        f"    exit {EXIT_UNDO_FAILED}",
        "  fi",
        f"  attempt=$((attempt + 1)); sleep {UNDO_RETRY_S}",
        "done",
        say("undone"),
        f"exit {EXIT_UNDONE}",
    ])


class DeadManSwitch:
    """One armed undo on one host of a target (see the module docstring)."""

    def __init__(self, target, host: str, undo: str, *, what: str, backstop_s: int | None = None):
        for text in (undo, what):
            if redact(text) != text:
                raise HaconformError(f"a dead-man switch on {host} would carry a secret on its command line",
                                     where="haconform.deadman",
                                     fix="build the undo from commands that read secrets from files, not argv")
        self.target = target
        self.host = host
        self.undo = undo
        self.what = what
        backstop_s = dead_man_s() if backstop_s is None else backstop_s
        if int(backstop_s) < 1:   # timeout(1) reads 0 as "no time limit"
            raise HaconformError(f"a dead-man switch needs a backstop of at least 1 s, not {backstop_s!r}",
                                 where="haconform.deadman")
        self.backstop_s = int(backstop_s)
        self.armed_at: float | None = None
        self._proc: subprocess.Popen | None = None
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._readers: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"<DeadManSwitch {self.host}: {self.what} -> {self.undo!r}>"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def argv(self) -> list[str]:
        return self.target.program_argv(self.host, ["/bin/sh", "-c", switch_script(self.undo, self.what,
                                                                                     self.backstop_s)],
                                        keepalive=False)

    def arm(self) -> "DeadManSwitch":
        """Start the switch and wait until it says it is armed; raises when it cannot be."""
        if self._proc is not None:
            raise HaconformError(f"{self!r} is already armed", where="haconform.deadman")
        self.target.guard.check_action(self.host, f"arm a dead-man switch ({self.what})")
        self._proc = subprocess.Popen(self.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, start_new_session=True)
        for stream, lines in ((self._proc.stdout, self._stdout), (self._proc.stderr, self._stderr)):
            reader = threading.Thread(target=_collect, args=(stream, lines), daemon=True,
                                      name=f"dead-man {self.host}")
            reader.start()
            self._readers.append(reader)
        try:
            wait_until(f"the dead-man switch on {self.host} says it is armed ({self.what})",
                       lambda: "armed" in self._stdout or self._proc.poll() is not None,
                       timeout=answer_s(), observe=self._seen)
        except WaitTimeout:
            self._kill()
            raise
        if "armed" not in self._stdout or self._proc.poll() is not None:
            # Said "armed" and ended anyway (no `timeout` on the host, the session dropped): it undid
            # before the change, and nothing would watch the change: the fault must not go ahead.
            self._kill()
            raise HaconformError(f"the dead-man switch on {self.host} ({self.what}) did not arm: {self._seen()}",
                                 where="haconform.deadman",
                                 fix=f"can the harness run /bin/sh, timeout and head as root on {self.host}?")
        self.armed_at = time.time()
        log.info("armed a dead-man switch on %s: %s (undo: %s; backstop %ss)", self.host, self.what, self.undo,
                 self.backstop_s)
        return self

    def disarm(self) -> str:
        """Tell the switch the change is undone; returns what happened, for restore's record."""
        if self._proc is None:
            return f"{self.host}: {self.what}: never armed"
        if self._proc.poll() is not None:
            return self._ended_early()
        try:
            self._proc.stdin.write(b"disarm\n")
            self._proc.stdin.close()
        except OSError:   # it ended between the poll and the write
            return self._ended_early()
        try:
            wait_until(f"the dead-man switch on {self.host} ends after disarm ({self.what})",
                       lambda: self._proc.poll() is not None, timeout=answer_s(), observe=self._seen)
        except WaitTimeout:
            self._kill()
            return (f"{self.host}: {self.what}: the switch did not confirm disarm within {answer_s():g}s "
                    f"and was killed; if the host did not get the word its undo runs (idempotent): {self._seen()}")
        self._join_readers()
        if self._proc.returncode == EXIT_DISARMED and "disarmed" in self._stdout:
            return f"{self.host}: {self.what}: disarmed"
        return self._ended_early()

    # ----- internals ---------------------------------------------------------------------
    def _ended_early(self) -> str:
        self._join_readers()
        rc = self._proc.returncode
        meaning = {EXIT_UNDONE: "its undo ran", EXIT_UNDO_FAILED: "its undo FAILED"}.get(
            rc, "it ended before disarm")
        return (f"{self.host}: {self.what}: the switch fired before disarm ({meaning}, exit {rc}; "
                f"syslog tag {LOG_TAG} on {self.host}): {self._seen()}")

    def _seen(self) -> str:
        state = "running" if self.running else f"exit {self._proc.returncode if self._proc else None}"
        stderr = redacted_tail(" ".join(self._stderr), 300)
        return redact(f"{state}; stdout {self._stdout[-3:]}; stderr {stderr!r}")

    def _kill(self) -> None:
        """The switch's whole process group: nsenter forks into the host, so the shell is not its own pid."""
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self._proc.wait(timeout=answer_s())
        except subprocess.TimeoutExpired:
            log.warning("dead-man switch %r: pid %s did not end after SIGKILL", self, self._proc.pid)
        self._join_readers()

    def _join_readers(self) -> None:
        for reader in self._readers:
            reader.join(timeout=answer_s())


def _collect(stream, lines: list[str]) -> None:
    for raw in iter(stream.readline, b""):
        lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
    stream.close()


# ----- the switches armed per target -----------------------------------------------------
# Keyed by the target object's id: a session has one target, and restore asks for its switches.
_armed: dict[int, list[DeadManSwitch]] = {}
_lock = threading.Lock()


def arm(target, host: str, undo: str, *, what: str, backstop_s: int | None = None) -> DeadManSwitch:
    """Arm a switch on host and keep it with the target's others until disarm_all()."""
    switch = DeadManSwitch(target, host, undo, what=what, backstop_s=backstop_s).arm()
    with _lock:
        _armed.setdefault(id(target), []).append(switch)
    return switch


def armed(target) -> list[DeadManSwitch]:
    with _lock:
        return list(_armed.get(id(target), []))


def disarm_all(target) -> list[str]:
    """Disarm every switch armed on the target, newest first; what happened to each."""
    with _lock:
        switches = _armed.pop(id(target), [])
    outcomes = [switch.disarm() for switch in reversed(switches)]
    for outcome in outcomes:
        (log.info if outcome.endswith(": disarmed") else log.warning)("dead-man switch %s", outcome)
    return outcomes
