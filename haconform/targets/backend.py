"""The one testinfra backend base of haconform's transports: guarded, and outputs pass through the secrets first.

Every command any code runs on a host goes through GuardedBackend.run, be it
a suite's machine.succeed, a reader, a testinfra module (host.file,
host.service) or testinfra's host.run called directly.  There the target's
HostGuard (haconform/guard.py) lets it through or refuses it before anything
reaches the host, and writes it to the run's transcript with its exit status.
Subclasses implement run_checked, the transport itself.

testinfra logs every command with its output (`RUN CommandResult(...)` at
DEBUG) the moment the command returns, before the caller has seen the output.
A secret read from a host (the fence key by `cat`, a configuration carrying
`stats auth`) would reach that log unregistered.  So the backend registers
first: credentials any output carries, and the whole output inside
secrets.secret_output() (Machine.read_secret).
"""

from __future__ import annotations

import abc
from typing import Any, Union

from testinfra.backend import base

from ..guard import HostGuard
from ..redaction import discover, output_is_secret, register


class GuardedBackend(base.BaseBackend, abc.ABC):
    def __init__(self, hostname: str, *args: Any, guard: HostGuard, **kwargs: Any):
        if not isinstance(guard, HostGuard):
            raise TypeError(f"{type(self).__name__} needs the target's HostGuard, not {guard!r}")
        self.guard = guard
        super().__init__(hostname, *args, **kwargs)

    def run(self, command: str, *args: str, timeout: float | None = None, input: bytes | None = None,
            **kwargs: Any) -> base.CommandResult:
        """input: the command's standard input (else none); it never appears in an argv.
        timeout: the command's bound (default BOUNDS.command, read when called)."""
        cmd = self.get_command(command, *args)
        ticket = self.guard.check_command(self.hostname, cmd, input=input)
        try:
            result = self.run_checked(cmd, timeout=timeout, input=input)
        except BaseException as exc:   # the host could not be reached: the transcript says so, too
            ticket.finished(None, error=f"{type(exc).__name__}: {exc}")
            raise
        ticket.finished(result.rc)
        return result

    def get_encoding(self) -> str:
        # testinfra would ask the host's python for its locale (a program of its own on the host, in every
        # run); the runbook's hosts, their configurations and logs are UTF-8, as every Debian host here is.
        return "utf-8"

    @abc.abstractmethod
    def run_checked(self, command: str, *, timeout: float | None, input: bytes | None) -> base.CommandResult:
        """Run a command the guard let through, on the host."""

    def result(self, rc: int, cmd: bytes, stdout: Union[str, bytes], stderr: Union[str, bytes]) -> base.CommandResult:
        source = f"{self.hostname}: `{self.decode(cmd) if isinstance(cmd, bytes) else cmd}`"
        if output_is_secret():
            register(stdout, what="a secret read", where=source)
        discover(stdout, source=source)
        return super().result(rc, cmd, stdout, stderr)
