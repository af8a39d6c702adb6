"""What the harness may do to a deployment's hosts, decided where it touches them.

Every command, program, power or NIC action and file write on a host passes
through the HostGuard its target holds (targets/base.py, targets/backend.py),
whatever called it: a suite, a fixture, a library method, testinfra's host
directly.  A marker on a test is never the guard; it is what the pytest plugin
turns into a grant for exactly that test's duration.

Modes:
  apply      the harness built the deployment (the lab, VMs): everything is allowed.
  read-only  --target ssh without --allow-destructive: only the commands of the
             read-only allow-list (haconform/readonly_commands.py); every other command
             and every mutating verb raises ReadOnlyRefused; no grant can be had.
  granted    --target ssh --allow-destructive: the allow-list always; anything else
             only inside a grant (a test marked destructive or writes_to_host, for its own
             duration; a stage being applied).

Every command of a run is written to its transcript (transcript.jsonl in the
run's results directory): when, which test, which host, the command with
secrets masked, the size of its input, how it was let through (allow-listed,
granted, apply) or that it was refused, and its exit status.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from pathlib import Path

from . import readonly_commands
from .redaction import redact

APPLY, READ_ONLY, GRANTED = "apply", "read-only", "granted"
MODES = (APPLY, READ_ONLY, GRANTED)

# How a command was let through (or not), as the transcript and the verdict say it.
ALLOW_LISTED, BY_GRANT, BY_APPLY, REFUSED = "allow-listed", "granted", "apply", "refused"

READ_ONLY_FIX = ("mark the test @pytest.mark.writes_to_host(\"what it writes\") or destructive, and run with "
                 "--allow-destructive; a read that is refused belongs on the allow-list "
                 "(haconform/readonly_commands.py)")


class ReadOnlyRefused(Exception):
    """The guard refused to let a command or action reach a host.

    Deliberately not a HaconformError: code that tolerates a failed command (a host that is down)
    catches HaconformError, and a refusal must never pass for that.  The guard also keeps every
    refusal, so a test that catches this still fails (the pytest plugin checks after each test).
    """

    def __init__(self, *, test: str | None, host: str, action: str, why: str):
        self.test = test
        self.host = host
        self.action = action
        self.why = why
        super().__init__(f"read-only: refused {action} on {host} in {test or 'the session (no test running)'}: "
                         f"{why} (fix: {READ_ONLY_FIX})")


class Ticket:
    """One command let through: finished() records its exit status in the transcript."""

    def __init__(self, guard: "HostGuard", entry: dict):
        self._guard = guard
        self._entry = entry

    def finished(self, rc: int | None, *, error: str | None = None) -> None:
        self._entry["rc"] = rc
        if error is not None:
            self._entry["error"] = error
        self._guard._write(self._entry)


class HostGuard:
    def __init__(self, mode: str = APPLY):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self._lock = threading.Lock()
        self._test: str | None = None
        self._grant: str | None = None
        self._transcript = None                      # opened with the first entry
        self._transcript_path: Path | None = None
        self.counts: Counter = Counter()             # decision -> commands
        self.grants_used: Counter = Counter()        # grant -> commands and actions let through by it
        self.refusals: list[dict] = []
        self._own_processes: dict[str, set[int]] = {}   # host -> PIDs of processes the harness started there

    def __repr__(self) -> str:
        return f"<HostGuard {self.mode}>"

    @property
    def read_only(self) -> bool:
        return self.mode == READ_ONLY

    # ----- who is running, and what they may do -----------------------------------------------
    @property
    def test(self) -> str | None:
        return self._test

    @property
    def grant_held(self) -> str | None:
        return self._grant

    @contextlib.contextmanager
    def running(self, test: str | None):
        """The test whose commands follow (the pytest plugin sets it around each test)."""
        previous, self._test = self._test, test
        try:
            yield
        finally:
            self._test = previous

    @contextlib.contextmanager
    def grant(self, what: str):
        """Writes allowed for the block: `what` says which test or stage they belong to.

        In read-only mode nothing can be granted: the block is refused before it starts."""
        if self.mode == READ_ONLY:
            self._refuse("host", f"a grant for {what}", "the run is read-only (no --allow-destructive)")
        previous, self._grant = self._grant, what
        try:
            yield
        finally:
            self._grant = previous

    def refusals_since(self, mark: int) -> list[dict]:
        return self.refusals[mark:]

    def own_process(self, host: str, pid: int) -> None:
        """The harness started process `pid` in `host` (a capture): it may signal that one, and only it."""
        with self._lock:
            self._own_processes.setdefault(host, set()).add(int(pid))

    # ----- the checks --------------------------------------------------------------------------
    def check_command(self, host: str, command: str, *, input: bytes | str | None = None) -> Ticket:
        """A shell command for `host` (what /bin/sh -c gets); raises ReadOnlyRefused, else a Ticket."""
        decision, rule = self._decide_command(host, command, input)
        entry = self._entry(host, command, decision, rule, input)
        if decision == REFUSED:
            self._write({**entry, "rc": None})
            self._refuse(host, f"`{command}`", rule, logged=True)
        return Ticket(self, entry)

    def check_program(self, host: str, argv: list[str]) -> Ticket:
        """A long-running program started in `host` (an agent, a capture, a switch): the same rules."""
        return self.check_command(host, readonly_commands.join(argv))

    def check_action(self, host: str, action: str) -> None:
        """A verb that changes a host whatever it runs (power, NIC, a file written, a fault, a cluster
        change): allowed in apply mode and inside a grant, refused otherwise."""
        if self.mode == APPLY:
            decision, rule = BY_APPLY, "the harness built this deployment"
        elif self._grant is not None:
            decision, rule = BY_GRANT, self._grant
        else:
            decision, rule = REFUSED, (f"{action} changes the host"
                                       + (" and the run is read-only" if self.read_only else
                                          ", and no grant is held (the test is not marked)"))
        entry = self._entry(host, f"({action})", decision, rule, None)
        self._write({**entry, "rc": None})
        if decision == REFUSED:
            self._refuse(host, action, rule, logged=True)

    def _decide_command(self, host: str, command: str, input: bytes | str | None) -> tuple[str, str]:
        if self.mode == APPLY:
            return BY_APPLY, "the harness built this deployment"
        verdict = readonly_commands.judge(command, input=input, own_pids=self._own_processes.get(host, frozenset()))
        if verdict.read_only:
            return ALLOW_LISTED, verdict.rule
        if self._grant is not None:
            return BY_GRANT, self._grant
        return REFUSED, verdict.why

    # ----- bookkeeping -------------------------------------------------------------------------
    def _entry(self, host: str, command: str, decision: str, rule: str, input) -> dict:
        with self._lock:
            self.counts[decision] += 1
            if decision == BY_GRANT:
                self.grants_used[rule] += 1
        return {"t": round(time.time(), 3), "test": self._test, "host": host, "command": command,
                "input_bytes": len(input) if input is not None else 0, "decision": decision, "rule": rule}

    def _refuse(self, host: str, action: str, why: str, *, logged: bool = False) -> None:
        refusal = {"test": self._test, "host": host, "action": redact(action), "why": redact(why)}
        with self._lock:
            self.refusals.append(refusal)
            if not logged:
                self.counts[REFUSED] += 1
        raise ReadOnlyRefused(test=self._test, host=host, action=refusal["action"], why=refusal["why"])

    def transcript_to(self, path: Path) -> None:
        """Write every command from now on to path (JSON lines, secrets masked); the file is made with
        the first command, so a session that touches no host leaves none."""
        with self._lock:
            self._transcript_path = path

    def close_transcript(self) -> None:
        with self._lock:
            if self._transcript is not None:
                self._transcript.close()
                self._transcript = None

    @property
    def transcript_path(self) -> Path | None:
        return self._transcript_path

    def _write(self, entry: dict) -> None:
        if self._transcript_path is None:
            return
        line = redact(json.dumps(entry, ensure_ascii=False)) + "\n"
        with self._lock:
            if self._transcript is None:
                self._transcript_path.parent.mkdir(parents=True, exist_ok=True)
                self._transcript = open(self._transcript_path, "a", encoding="utf-8")
            self._transcript.write(line)

    def summary(self) -> dict:
        """What the verdict says of the run's access to the hosts."""
        commands = sum(n for decision, n in self.counts.items())
        return {"mode": self.mode, "commands": commands, "allow_listed": self.counts[ALLOW_LISTED],
                "granted": dict(self.grants_used), "apply": self.counts[BY_APPLY],
                "refused": list(self.refusals),
                "transcript": str(self._transcript_path) if self._transcript_path else None,
                "statement": self.statement()}

    def statement(self) -> str:
        """One sentence for the verdict."""
        total = sum(self.counts.values())
        if self.mode == APPLY:
            return f"apply: the harness built this deployment; {total} host commands and actions, all allowed"
        parts = [f"{self.mode}: {total} host commands and actions"]
        if not self.grants_used and not self.refusals:
            parts.append("all on the read-only allow-list")
        else:
            parts.append(f"{self.counts[ALLOW_LISTED]} on the read-only allow-list")
        if self.grants_used:
            parts.append("granted: " + "; ".join(f"{what} ({n})" for what, n in self.grants_used.items()))
        if self.refusals:
            parts.append(f"{len(self.refusals)} refused")
        return ", ".join(parts)
