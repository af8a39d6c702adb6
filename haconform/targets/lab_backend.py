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

from ..lab.lab import NamespaceLab, run_in_host
from ..timeouts import BOUNDS
from .backend import RedactingBackend


class LabBackend(RedactingBackend):
    NAME = "haconform-lab"

    def __init__(self, hostname: str, *args: Any, lab: str = "haconform",
                 lab_object: NamespaceLab | None = None, **kwargs: Any):
        self.lab = lab_object or NamespaceLab(lab)
        super().__init__(hostname, *args, **kwargs)

    def get_pytest_id(self) -> str:
        return f"{self.lab.name}:{self.hostname}"

    @classmethod
    def get_hosts(cls, host: str, **kwargs: Any) -> list[str]:
        return [host]

    def run(self, command: str, *args: str, timeout: float | None = None, input: bytes | None = None,
            **kwargs: Any) -> base.CommandResult:
        """input: the command's standard input (else none); it never appears in an argv.
        A command outliving timeout is killed with every process it started in the host (exit 124)."""
        timeout = BOUNDS.command if timeout is None else timeout   # read when called: a calibration scales it
        cmd = self.get_command(command, *args)
        argv = self.lab.exec_argv(self.hostname) + ["/bin/sh", "-c", cmd]
        try:
            proc = run_in_host(argv, timeout=timeout, input=input)
            return self.result(proc.returncode, self.encode(cmd), proc.stdout, proc.stderr)
        except subprocess.TimeoutExpired as exc:
            return self.result(124, self.encode(cmd), exc.stdout or b"",
                               (exc.stderr or b"") + f"\n(timed out after {timeout:g}s)".encode())


testinfra.backend.BACKENDS.setdefault(LabBackend.NAME, f"{__name__}.LabBackend")
