"""How a host of an inventory is reached, one small module per access kind (as testinfra has a backend per
transport): ssh.py (over ssh, one multiplexed connection and long-lived shells per host), netns.py (a network
namespace of the harness machine), local.py (the harness machine itself).  A host that is `none` in the
inventory cannot be reached at all.

Each access kind gives the same three things: the argv that runs a shell command on the host, an argv prefix
with nsenter's meaning (what follows is one argv, run as root in the host), and how a failure of the transport
itself shows.  AccessBackend is the one testinfra backend over all of them, behind the target's HostGuard.
"""

from __future__ import annotations

import subprocess
from typing import Any

import testinfra.backend
from testinfra.backend import base

from ...errors import HaconformError
from ...inventory import HostAccess
from ...timeouts import BOUNDS
from ..backend import GuardedBackend
from ..base import tail
from ..remote_shell import ShellGone, ShellPool


class HostUnreachable(HaconformError):
    """The transport itself failed (ssh's exit 255): the host is down, cut off or refuses the login."""


class HostTransport:
    """One access kind.  Subclasses say how a command reaches the host."""

    kind = "none"

    def __init__(self, hostname: str, access: HostAccess, control_dir: str):
        self.hostname, self.access, self.control_dir = hostname, access, control_dir

    def shell_argv(self, command: str, *, multiplexed: bool = True) -> list[str]:
        """argv that runs `command` by /bin/sh on the host.  multiplexed=False: a connection of its own (a
        long-lived or fire-and-forget process must not be the one others share)."""
        raise HaconformError(f"{self.hostname} is `none` in the inventory: haconform cannot reach it",
                             where="--inventory", fix="give it an address or `local: true`")

    def exec_prefix(self, *, keepalive: bool = True) -> list[str]:
        """argv prefix with nsenter's meaning: what follows is one argv, run as root in the host.
        keepalive=False: a session that must not end on a network stall (a dead-man switch)."""
        raise HaconformError(f"{self.hostname} is `none` in the inventory: nothing can run there",
                             where="--inventory", fix=f"give hosts.{self.hostname} an address")

    def shell_pool(self, *, streaming: bool) -> ShellPool | None:
        """Long-lived shells commands go to, instead of a process each (None: a process each)."""
        return None

    def failed(self, returncode: int, stderr: bytes) -> HostUnreachable | None:
        """The error when a command's exit status says the transport failed, not the command."""
        return None

    def prepare(self) -> None:
        """Before a command is sent (ssh: the private directory of its connection sockets)."""

    def close(self) -> None:
        """After the last command (ssh: the multiplexed connection ends)."""


def transport_for(hostname: str, access: HostAccess, control_dir: str) -> HostTransport:
    from .local import LocalTransport
    from .netns import NetnsTransport
    from .ssh import SshTransport
    kinds = {t.kind: t for t in (SshTransport, NetnsTransport, LocalTransport)}
    return kinds.get(access.kind, HostTransport)(hostname, access, control_dir)


class AccessBackend(GuardedBackend):
    """testinfra backend for an inventory host, whatever its access kind.
    guard (required): the target's HostGuard, which every command passes first."""

    NAME = "haconform-access"

    def __init__(self, hostname: str, *args: Any, access: HostAccess, control_dir: str,
                 persistent: bool = True, **kwargs: Any):
        self.access = access
        self.control_dir = control_dir
        self.transport = transport_for(hostname, access, control_dir)
        super().__init__(hostname, *args, **kwargs)
        # A read-only run streams every output back: nothing, not even a spool file, lands on the host.
        self._shells = self.transport.shell_pool(streaming=self.guard.read_only) if persistent else None

    def close(self) -> None:
        if self._shells:
            self._shells.close()

    def get_pytest_id(self) -> str:
        return f"{self.access.kind}:{self.hostname}"

    def argv(self, command: str, *, multiplexed: bool = True) -> list[str]:
        return self.transport.shell_argv(command, multiplexed=multiplexed)

    def run_checked(self, cmd: str, *, timeout: float | None, input: bytes | None) -> base.CommandResult:
        timeout = BOUNDS.command if timeout is None else timeout   # read when called: a calibration scales it
        if self._shells is not None:
            self.transport.prepare()
            try:
                rc, stdout, stderr = self._shells.run(cmd, timeout, connect_timeout=BOUNDS.vm_ssh, input=input)
            except ShellGone as gone:
                raise HostUnreachable(
                    f"ssh to {self.hostname} ({self.access.address}) failed (exit {gone.returncode}): "
                    f"{tail(gone.stderr, 300)}",
                    where=f"hosts.{self.hostname}",
                    fix="is the host up and the inventory's address/user/key/sudo right?") from None
            return self.result(rc, self.encode(cmd), stdout, stderr)
        try:
            stdin = {"stdin": subprocess.DEVNULL} if input is None else {"input": input}
            proc = subprocess.run(self.argv(cmd), capture_output=True, timeout=timeout, **stdin)
        except subprocess.TimeoutExpired as exc:
            return self.result(124, self.encode(cmd), exc.stdout or b"",
                               (exc.stderr or b"") + f"\n(timed out after {timeout:g}s)".encode())
        failure = self.transport.failed(proc.returncode, proc.stderr)
        if failure is not None:
            raise failure
        return self.result(proc.returncode, self.encode(cmd), proc.stdout, proc.stderr)


testinfra.backend.BACKENDS.setdefault(AccessBackend.NAME, f"{__name__}.AccessBackend")
