"""A host reached over ssh: one multiplexed connection (ControlMaster) for short calls, long-lived shells
(remote_shell.py) for commands, sudo -n when the login is not root."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

from ...errors import HaconformError
from ...inventory import HostAccess
from ...timeouts import BOUNDS
from ..base import tail
from ..remote_shell import ShellPool
from . import HostTransport, HostUnreachable

SSH_EXEC = str(Path(__file__).with_name("ssh_exec.py"))


def ssh_options(access: HostAccess, control_dir: str | None = None, *, keepalive: bool = True) -> list[str]:
    """ssh's options for this host, ending with `-- DESTINATION`.

    control_dir: share one connection between short-lived calls (ControlMaster).
    Long-lived processes (shells, agents, fire-and-forget) get their own
    connection instead: killing one that happens to be the master would cut
    every session multiplexed over it.
    """
    options = ["-T", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
               "-o", f"ConnectTimeout={int(BOUNDS.vm_ssh / 2)}",
               # A host that crashed is noticed in ~6 s instead of TCP's minutes; not for a dead-man
               # switch, whose ssh ending on a stall would fire its undo under a live harness.
               "-o", f"ServerAliveInterval={2 if keepalive else 0}", "-o", "ServerAliveCountMax=3"]
    if control_dir:
        options += ["-o", "ControlMaster=auto", "-o", f"ControlPath={control_dir}/%C", "-o", "ControlPersist=60"]
    else:
        options += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
    if access.ssh_config:
        options += ["-F", access.ssh_config]
    if access.key:
        options += ["-i", access.key, "-o", "IdentitiesOnly=yes"]
    if access.port:
        options += ["-p", str(access.port)]
    if access.user:
        options += ["-l", access.user]
    return [*options, "--", access.address]


def ensure_private_directory(path: str) -> str:
    """path as a directory only this user can enter: made 0700 if missing, else checked.

    ssh's ControlPath sockets live there; whoever can write to the directory can put a
    socket of their own where ssh will connect, and run commands as this user on every host.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    owner, mode = info.st_uid, stat.S_IMODE(info.st_mode)
    if not stat.S_ISDIR(info.st_mode) or owner != os.geteuid() or mode != 0o700:
        kind = "directory" if stat.S_ISDIR(info.st_mode) else "symlink" if stat.S_ISLNK(info.st_mode) else "file"
        raise HaconformError(
            f"the ssh control directory {path} is not private: a {kind} owned by uid {owner}, mode {mode:04o} "
            f"(needed: a directory owned by uid {os.geteuid()}, mode 0700)",
            where=path, fix=f"remove {path} (haconform makes it again, private) or `chmod 700` it if it is yours")
    return path


def remote_command(access: HostAccess, command: str) -> str:
    """The one line the remote login shell gets: /bin/sh (via sudo -n when the login is not root)."""
    argv = ["/bin/sh", "-c", command]
    if access.needs_sudo:
        argv = ["sudo", "-n", "--", *argv]
    return shlex.join(argv)


class SshTransport(HostTransport):
    kind = "ssh"

    def shell_argv(self, command: str, *, multiplexed: bool = True) -> list[str]:
        ensure_private_directory(self.control_dir)
        return ["ssh", *ssh_options(self.access, self.control_dir if multiplexed else None),
                remote_command(self.access, command)]

    def exec_prefix(self, *, keepalive: bool = True) -> list[str]:
        sudo = ["sudo", "-n", "--"] if self.access.needs_sudo else []
        return [sys.executable, SSH_EXEC, *ssh_options(self.access, keepalive=keepalive), *sudo]

    def shell_pool(self, *, streaming: bool) -> ShellPool:
        # Commands go to long-lived shells, not one session each; a command's input goes to the shell
        # inside its script, never into an argv.
        return ShellPool(["ssh", *ssh_options(self.access), remote_command(self.access, "exec /bin/sh")],
                         streaming=streaming)

    def failed(self, returncode: int, stderr: bytes) -> HostUnreachable | None:
        if returncode != 255:
            return None
        return HostUnreachable(
            f"ssh to {self.hostname} ({self.access.address}) failed: {tail(stderr.decode('utf-8', 'replace'), 300)}",
            where=f"hosts.{self.hostname}", fix="is the host up and the inventory's address/user/key right?")

    def prepare(self) -> None:
        ensure_private_directory(self.control_dir)

    def close(self) -> None:
        subprocess.run(["ssh", "-O", "exit", *ssh_options(self.access, self.control_dir)],
                       capture_output=True, timeout=BOUNDS.vm_ssh)
