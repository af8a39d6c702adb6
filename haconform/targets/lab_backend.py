"""testinfra transport for hosts of the embedded namespace lab.

    testinfra.get_host("haconform-lab://server1", lab="haconform")

Commands run through nsenter in all of the host's namespaces, so
host.file, host.service, host.process, host.socket read inside that host.
"""

from __future__ import annotations

import subprocess
from typing import Any

import testinfra.backend
from testinfra.backend import base

from ..guard import HostGuard
from ..lab.lab import NamespaceLab, run_in_host
from ..timeouts import BOUNDS
from .backend import GuardedBackend


class LabBackend(GuardedBackend):
    NAME = "haconform-lab"

    def __init__(self, hostname: str, *args: Any, lab: str = "haconform",
                 lab_object: NamespaceLab | None = None, guard: HostGuard | None = None, **kwargs: Any):
        """guard: the target's (LabTarget passes it); a lab reached on its own is the harness's own
        deployment, open to it (apply)."""
        self.lab = lab_object or NamespaceLab(lab)
        super().__init__(hostname, *args, guard=guard or HostGuard(), **kwargs)

    def get_pytest_id(self) -> str:
        return f"{self.lab.name}:{self.hostname}"

    @classmethod
    def get_hosts(cls, host: str, **kwargs: Any) -> list[str]:
        return [host]

    def run_checked(self, cmd: str, *, timeout: float | None, input: bytes | None) -> base.CommandResult:
        """A command outliving timeout is killed with every process it started in the host (exit 124)."""
        timeout = BOUNDS.command if timeout is None else timeout   # read when called: a calibration scales it
        argv = self.lab.exec_argv(self.hostname) + ["/bin/sh", "-c", cmd]
        try:
            proc = run_in_host(argv, timeout=timeout, input=input)
            return self.result(proc.returncode, self.encode(cmd), proc.stdout, proc.stderr)
        except subprocess.TimeoutExpired as exc:
            return self.result(124, self.encode(cmd), exc.stdout or b"",
                               (exc.stderr or b"") + f"\n(timed out after {timeout:g}s)".encode())


testinfra.backend.BACKENDS.setdefault(LabBackend.NAME, f"{__name__}.LabBackend")
