"""Target and Machine: the small API suites stand on.

Machine reads like the runbook (after the NixOS test driver): succeed, fail,
wait_until_succeeds, crash, block/unblock.  It takes its transport from the
target, so a suite runs unchanged on the namespace lab, VMs or SSH hosts.
"""

from __future__ import annotations

import abc
import posixpath
import shlex

import testinfra

from ..errors import CommandFailed, HaconformError
from ..guard import APPLY, HostGuard
from ..redaction import redact, redacted_tail, secret_output
from ..timeouts import BOUNDS
from ..topology import HostSpec, Topology
from ..wait import wait_until


def tail(output: str, limit: int) -> str:
    """The last `limit` characters of a command's output, redacted whole before it is cut (a cut first
    could leave a secret's suffix no registered form matches)."""
    return redacted_tail(output.strip(), limit)


class Target(abc.ABC):
    """Where the topology runs: a transport into each host, power and NIC control, the fence device.

    Three targets implement it: LabTarget (the embedded namespace lab, lab.py),
    InventoryTarget (an existing deployment, inventory_target.py) and VagrantTarget (libvirt guests
    plus lab hosts, vagrant.py).  Every abstract method below is part of the
    contract that Machine, haconform/stages, faults, restore and the suites
    rely on, and so are these attributes:

    kind                 "lab", "ssh" or "vagrant": names the target in messages, reports and the
                         choices fixtures make (e.g. verify-only stages on "ssh").
    can_power            power on/off/reset/crash and NIC control work on the target's hosts;
                         fault tests are skipped where it is False.
    destructive_allowed  fault tests and applying stages may change the hosts (an SSH target
                         needs --allow-destructive; targets haconform builds itself allow it).
    topology             the Topology the target runs.

    (InventoryTarget and VagrantTarget also carry `inventory`, which fixtures read where present.)

    guard                the HostGuard every command, program, power and NIC action on a host passes
                         (haconform/guard.py): program_argv, power and set_nic ask it here, the testinfra
                         backends (backend.py) for every command.

    A target without power or NIC control keeps can_power False and may answer
    _power/_set_nic/power_state/nic_state/booted with the base implementation
    (``return super()._power(name, action)``), which refuses with one clear error.
    """

    kind: str = "abstract"
    can_power: bool = False
    destructive_allowed: bool = True

    def __init__(self, topology: Topology, *, guard: HostGuard | None = None):
        """guard: what may be done to the hosts (haconform/guard.py); by default the target's own
        default_guard() (apply for targets haconform builds, read-only for an existing deployment)."""
        self.topology = topology
        self.guard = guard if guard is not None else self.default_guard()
        self._hosts: dict[str, testinfra.host.Host] = {}

    def default_guard(self) -> HostGuard:
        return HostGuard(APPLY)

    # ----- lifecycle -----------------------------------------------------------
    @abc.abstractmethod
    def up(self) -> dict:
        """Bring every host up (or check that it answers); returns figures for the report."""

    @abc.abstractmethod
    def down(self) -> dict:
        """Tear down what up() made (or close connections); returns what was removed."""

    # ----- transport -----------------------------------------------------------
    @abc.abstractmethod
    def testinfra_host(self, name: str) -> testinfra.host.Host:
        """testinfra Host running commands as root inside host `name`."""

    def program_argv(self, name: str, argv: list[str], *, keepalive: bool = True) -> list[str]:
        """The argv that starts program `argv` (a long-running one: the client agent, a capture, a
        dead-man switch) as root in host `name`, once the guard has let it through.
        keepalive=False: a long-lived session that must not end on a network stall (a dead-man switch);
        meaningful where the transport is a network session (ssh), ignored elsewhere."""
        self.guard.check_program(name, argv).finished(None)
        return [*self._exec_prefix(name, keepalive=keepalive), *argv]

    @abc.abstractmethod
    def _exec_prefix(self, name: str, *, keepalive: bool = True) -> list[str]:
        """argv prefix with nsenter's meaning: what follows is one argv, run as root in host `name`.
        The transport alone, unguarded: only program_argv (which asks the guard first) uses it."""

    @abc.abstractmethod
    def transport_kind(self, name: str) -> str:
        """How host `name` is reached: "nsenter" (a lab host), "netns" (a network namespace of this
        machine), "local" (this machine itself) or "ssh"."""

    # ----- power and NIC ---------------------------------------------------------
    def power(self, name: str, action: str) -> None:
        """action: on, off, reset (hard, waits for the boot) or crash (kernel panic, stays down).
        Asked of the guard first: a read-only run refuses it before anything happens."""
        self.guard.check_action(name, f"power {action}")
        self._power(name, action)

    def set_nic(self, name: str, state: str) -> None:
        """state: up or down, the host's cluster-network link (processes keep running).
        Asked of the guard first, as power()."""
        self.guard.check_action(name, f"NIC {state}")
        self._set_nic(name, state)

    @abc.abstractmethod
    def _power(self, name: str, action: str) -> None:
        raise HaconformError(f"target {self.kind} has no power control", where="--target")

    @abc.abstractmethod
    def _set_nic(self, name: str, state: str) -> None:
        raise HaconformError(f"target {self.kind} has no NIC control", where="--target")

    @abc.abstractmethod
    def power_state(self, name: str) -> str:
        """'on', 'off' or 'crashed', as the target's power control sees the host."""
        raise HaconformError(f"target {self.kind} has no power control", where="--target")

    def known_down(self, name: str) -> bool:
        """The target's own power control has the host off or crashed, so it holds nothing; a host that
        merely does not answer is not known down.  A target without such a power control: never."""
        return False

    @abc.abstractmethod
    def nic_state(self, name: str) -> str:
        """'up', 'down' or 'absent': the host's cluster-network link."""
        raise HaconformError(f"target {self.kind} has no NIC control", where="--target")

    @abc.abstractmethod
    def booted(self, name: str) -> bool:
        """The host is on and has finished starting its services."""
        raise HaconformError(f"target {self.kind} has no power control", where="--target")

    # ----- the fence device --------------------------------------------------------
    @abc.abstractmethod
    def start_fence_device(self, key: bytes, *, key_file: str, multicast_address: str, port: int) -> dict:
        """Make the fence_xvm device answer with this key (key_file: where the fence host keeps it)
        on multicast_address:port; returns what answers, for the report.  A target that cannot
        start one checks the existing one and raises naming what is missing."""

    @abc.abstractmethod
    def fence_device_running(self) -> bool:
        """The fence device answers (for every cluster node, where the target can only ask)."""

    @abc.abstractmethod
    def fence_requests(self) -> list[dict]:
        """What the fence device logged, newest last (empty where the device keeps no log)."""

    # ----- the report ----------------------------------------------------------------
    @abc.abstractmethod
    def describe(self) -> dict:
        """What the target is, for the report and logs: at least {"target": kind}."""


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

    def program(self, argv: list[str], *, keepalive: bool = True) -> list[str]:
        """The argv that starts program `argv` (long-running) inside this machine, once the target's
        guard let it through (Target.program_argv)."""
        return self.target.program_argv(self.name, argv, keepalive=keepalive)

    def started_process(self, pid: int) -> None:
        """A process the harness itself started in this machine (a capture): the guard lets the harness
        signal it later, and nothing else (see signal_own_process)."""
        self.target.guard.own_process(self.name, pid)

    def signal_own_process(self, pid: int, signal: str = "TERM") -> None:
        """Stop a process the harness started here (started_process); any other PID is refused."""
        self.execute(f"kill -{signal} {int(pid)}")

    @property
    def transport_kind(self) -> str:
        """"nsenter", "netns", "local" or "ssh": how the harness reaches this machine."""
        return self.target.transport_kind(self.name)

    # ----- commands ----------------------------------------------------------
    def execute(self, command: str, *, input: bytes | str | None = None):
        """Run command as root; input: its standard input, the way to hand it a secret
        (a password, a key): every transport keeps it out of every argv."""
        if input is None:
            return self.host.run(command)
        return self.host.run(command, input=input.encode() if isinstance(input, str) else input)

    def succeed(self, command: str, *, input: bytes | str | None = None) -> str:
        result = self.execute(command, input=input)
        if result.rc != 0:
            raise CommandFailed(redact(f"on {self.name}: `{command}` exited {result.rc}; ") +
                                f"stderr: {tail(result.stderr, 800)!r}; stdout: {tail(result.stdout, 400)!r}")
        return result.stdout

    def fail(self, command: str) -> str:
        result = self.host.run(command)
        if result.rc == 0:
            raise CommandFailed(redact(f"on {self.name}: `{command}` succeeded but was expected to fail; ") +
                                f"stdout: {tail(result.stdout, 400)!r}")
        return result.stderr

    def wait_until_succeeds(self, command: str, *, timeout: float, condition: str | None = None) -> str:
        last = {}

        def attempt() -> bool:
            last["result"] = self.host.run(command)
            return last["result"].rc == 0

        def seen() -> str:
            result = last.get("result")
            return f"exit {result.rc}: {tail(result.stderr or result.stdout, 300)}" if result else "-"

        wait_until(condition or f"`{command}` succeeds on {self.name}", attempt,
                   timeout=timeout, observe=seen)
        return last["result"].stdout

    def wait_until_fails(self, command: str, *, timeout: float, condition: str | None = None) -> None:
        wait_until(condition or f"`{command}` fails on {self.name}",
                   lambda: self.host.run(command).rc != 0, timeout=timeout)

    # ----- files -------------------------------------------------------------
    def read_file(self, path: str) -> str:
        return self.succeed(f"cat {shlex.quote(path)}")

    def read_secret(self, path: str) -> bytes:
        """A file holding a secret (the fence key), registered before anything can log it."""
        with secret_output():
            result = self.host.run(f"cat -- {shlex.quote(path)}")
        if result.rc != 0:
            raise CommandFailed(f"on {self.name}: cannot read {path} (exit {result.rc}): "
                                f"{tail(result.stderr, 300)}")
        return result.stdout_bytes

    def write_file(self, path: str, content: bytes | str, *, mode: str = "0644",
                   owner: str = "root", group: str = "root") -> None:
        """Put content at path, replacing it at once (rename), with mode, owner and group.

        The content goes on stdin, never on a command line (a fence key, a config with
        the stats password).  The new file is made by mktemp beside path (0600, a name
        no other user can guess), so it is never more permissive than asked, not even
        for a moment.  chown before chmod: chown clears the setuid/setgid bits chmod sets.
        """
        self.target.guard.check_action(self.name, f"write {path}")
        directory = shlex.quote(posixpath.dirname(path) or "/")
        # mkdir before umask 077: a directory made here is made as it would be by hand.
        self.succeed(
            f"mkdir -p {directory} && umask 077 && __new=$(mktemp {shlex.quote(path)}.XXXXXX) && "
            f"{{ cat > \"$__new\" && chown {shlex.quote(f'{owner}:{group}')} \"$__new\" && "
            f"chmod {shlex.quote(mode)} \"$__new\" && mv -f \"$__new\" {shlex.quote(path)} || "
            f"{{ rm -f \"$__new\"; false; }}; }}",
            input=content)

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
