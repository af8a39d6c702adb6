"""Target and Machine: the small API suites stand on.

Machine reads like the runbook (after the NixOS test driver): succeed, fail,
wait_until_succeeds, crash, block/unblock.  It takes its transport from the
target, so a suite runs unchanged on the namespace lab, VMs or SSH hosts.
"""

from __future__ import annotations

import base64
import shlex

import testinfra

from ..errors import HaconformError
from ..secrets import redact
from ..timeouts import BOUNDS
from ..topology import HostSpec, Topology
from ..wait import wait_until


class CommandFailed(AssertionError):
    pass


class Target:
    """Where the topology runs.  Subclasses provide transport and power."""

    kind = "abstract"
    can_power = False          # power on/off/crash and NIC control available
    destructive_allowed = True  # SSH targets need an explicit opt-in

    def __init__(self, topology: Topology):
        self.topology = topology
        self._hosts: dict[str, testinfra.host.Host] = {}

    def up(self) -> dict:
        return {}

    def down(self) -> dict:
        return {}

    def testinfra_host(self, name: str) -> testinfra.host.Host:
        raise NotImplementedError

    def exec_argv(self, name: str) -> list[str]:
        raise NotImplementedError

    def power(self, name: str, action: str) -> None:
        raise HaconformError(f"target {self.kind} has no power control", where="--target")

    def set_nic(self, name: str, state: str) -> None:
        raise HaconformError(f"target {self.kind} has no NIC control", where="--target")

    def power_state(self, name: str) -> str:
        """'on', 'off' or 'crashed', as the target's power control sees the host."""
        raise HaconformError(f"target {self.kind} has no power control", where="--target")

    def nic_state(self, name: str) -> str:
        """'up', 'down' or 'absent': the host's cluster-network link."""
        raise HaconformError(f"target {self.kind} has no NIC control", where="--target")

    def booted(self, name: str) -> bool:
        """The host is on and has finished starting its services."""
        raise HaconformError(f"target {self.kind} has no power control", where="--target")

    def fence_requests(self) -> list[dict]:
        """What the fence device logged, newest last (empty where the device keeps no log)."""
        return []

    def describe(self) -> dict:
        return {"target": self.kind}


class Machine:
    def __init__(self, target: Target, spec: HostSpec):
        self.target = target
        self.spec = spec

    def __repr__(self) -> str:
        return f"<Machine {self.name} ({self.role})>"

    name = property(lambda self: self.spec.name)
    role = property(lambda self: self.spec.role)
    address = property(lambda self: self.spec.address)
    fence_name = property(lambda self: self.spec.fence_name)
    server_name = property(lambda self: self.spec.server_name)

    @property
    def host(self) -> testinfra.host.Host:
        """testinfra Host: host.file, host.service, host.process, host.socket, host.run."""
        return self.target.testinfra_host(self.name)

    def argv(self) -> list[str]:
        """argv prefix starting a long-running program inside this machine."""
        return self.target.exec_argv(self.name)

    # ----- commands ----------------------------------------------------------
    def execute(self, command: str):
        return self.host.run(command)

    def succeed(self, command: str) -> str:
        result = self.host.run(command)
        if result.rc != 0:
            raise CommandFailed(redact(
                f"on {self.name}: `{command}` exited {result.rc}; "
                f"stderr: {result.stderr.strip()[-800:]!r}; stdout: {result.stdout.strip()[-400:]!r}"))
        return result.stdout

    def fail(self, command: str) -> str:
        result = self.host.run(command)
        if result.rc == 0:
            raise CommandFailed(redact(
                f"on {self.name}: `{command}` succeeded but was expected to fail; "
                f"stdout: {result.stdout.strip()[-400:]!r}"))
        return result.stderr

    def wait_until_succeeds(self, command: str, *, timeout: float, condition: str | None = None) -> str:
        last = {}

        def attempt() -> bool:
            last["result"] = self.host.run(command)
            return last["result"].rc == 0

        def seen() -> str:
            result = last.get("result")
            return f"exit {result.rc}: {(result.stderr or result.stdout).strip()[-300:]}" if result else "-"

        wait_until(condition or f"`{command}` succeeds on {self.name}", attempt,
                   timeout=timeout, observe=seen)
        return last["result"].stdout

    def wait_until_fails(self, command: str, *, timeout: float, condition: str | None = None) -> None:
        wait_until(condition or f"`{command}` fails on {self.name}",
                   lambda: self.host.run(command).rc != 0, timeout=timeout)

    # ----- files -------------------------------------------------------------
    def read_file(self, path: str) -> str:
        return self.succeed(f"cat {shlex.quote(path)}")

    def write_file(self, path: str, content: bytes | str, *, mode: str = "0644",
                   owner: str = "root", group: str = "root") -> None:
        data = content.encode() if isinstance(content, str) else content
        encoded = base64.b64encode(data).decode()
        tmp = f"{path}.haconform-new"
        self.succeed(
            f"mkdir -p {shlex.quote(path.rsplit('/', 1)[0] or '/')} && "
            f"echo {encoded} | base64 -d > {shlex.quote(tmp)} && "
            f"chown {owner}:{group} {shlex.quote(tmp)} && chmod {mode} {shlex.quote(tmp)} && "
            f"mv -f {shlex.quote(tmp)} {shlex.quote(path)}")

    # ----- identity ----------------------------------------------------------
    @property
    def boot_id(self) -> str:
        return self.succeed("cat /proc/sys/kernel/random/boot_id").strip()

    # ----- faults (NixOS-driver names) -----------------------------------------
    def crash(self) -> None:
        """Kernel panic: every process dies at once, the NIC goes dead, stays down."""
        self.target.power(self.name, "crash")

    def power_off(self) -> None:
        self.target.power(self.name, "off")

    def power_on(self) -> None:
        self.target.power(self.name, "on")

    def reset(self) -> None:
        self.target.power(self.name, "reset")

    def block(self) -> None:
        """Pull the network cable: processes keep running, traffic stops (split brain)."""
        self.target.set_nic(self.name, "down")

    def unblock(self) -> None:
        self.target.set_nic(self.name, "up")

    def wait_for_boot(self, previous_boot_id: str | None = None) -> str:
        def booted():
            result = self.host.run("cat /run/haconform/booted 2>/dev/null || cat /proc/sys/kernel/random/boot_id")
            value = result.stdout.strip() if result.rc == 0 else None
            return value if value and value != previous_boot_id else None
        return wait_until(f"{self.name} booted with a new boot id", booted, timeout=BOUNDS.host_boot)
