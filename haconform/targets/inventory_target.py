"""An existing deployment as a target (--target ssh --inventory FILE): InventoryTarget.

Hosts are reached as the inventory says (haconform/inventory.py), each by its
access kind (targets/access/: over ssh, one multiplexed connection per host;
on the harness machine; or in one of its network namespaces).  Nothing is created or torn down: up() checks that
every host answers, down() closes the ssh connections.

Faults use what the runbook uses, on the host itself:
  crash   `echo c > /proc/sysrq-trigger` (fire and forget: the host panics), or the
          inventory's power.crash command (e.g. `virsh inject-nmi` with panic on NMI)
  reset   the inventory's power.reset command, else `echo b > /proc/sysrq-trigger`
  off/on  only the inventory's power.off/power.on commands (run on power.via);
          without them a host cannot be switched on again, so they are refused
  NIC     `ip link set DEV down|up` on the cluster NIC (inventory cluster_nic,
          else the NIC holding the host's topology address).  Refused when the
          ssh connection itself comes in over that NIC.  Pulling it also arms
          a dead-man switch ON THE HOST: a detached `sleep N; ip link set DEV
          up` (N = nic_dead_man_s()) that unblock() disarms, so a harness that
          dies mid-test cannot leave a director cut off for good.
The fence device already exists on a deployment: start_fence_device() starts
nothing, it checks that `fence_xvm -o list` from a cluster node lists every
cluster node's fence name and says so, or raises naming what is missing.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import testinfra
import testinfra.host

from ..errors import HaconformError
from ..guard import GRANTED, READ_ONLY, HostGuard
from ..inventory import Inventory
from ..readers.cluster import fence_list_command, parse_fence_list
from ..readers.links import nic_holding
from ..timeouts import BOUNDS
from ..topology import Topology
from ..wait import wait_until
from .access import AccessBackend, HostUnreachable
from .access.ssh import ensure_private_directory
from .base import Target, tail

log = logging.getLogger("haconform.targets.inventory_target")


def nic_dead_man_s() -> int:
    """Long enough for the longest NIC-down test (fence, move, rejoin; see the module docstring).
    Read when a NIC goes down: the waits it is sized from scale with a calibration."""
    return int(BOUNDS.fence_complete + BOUNDS.resource_move + BOUNDS.node_rejoin)


class InventoryTarget(Target):
    """The hosts of an inventory, each reached by its access kind (`--target ssh`)."""


    kind = "ssh"
    can_power = True

    def __init__(self, topology: Topology, inventory: Inventory, *, allow_destructive: bool = False,
                 guard: HostGuard | None = None):
        """guard: by default read-only, or writes within grants with allow_destructive (haconform/guard.py)."""
        self.destructive_allowed = allow_destructive
        super().__init__(topology, guard=guard)
        self.inventory = inventory
        # Made on first use (a target that never connects leaves nothing behind), by mkdtemp:
        # private and not guessable, so no one can put it there first.
        self._control_path: str | None = None
        self._backends: dict[str, AccessBackend] = {}
        self._made = threading.Lock()
        self._crashed: set[str] = set()
        self._fire_and_forget: list[subprocess.Popen] = []
        self._nics: dict[str, str] = {}

    @property
    def _control_dir(self) -> str:
        """Where the multiplexed connections' sockets live (private to this target)."""
        if self._control_path is None:
            self._control_path = tempfile.mkdtemp(prefix="haconform-ssh-")
            return self._control_path
        # Made again after down(); refused if someone else's stands there meanwhile.
        return ensure_private_directory(self._control_path)

    # ----- transport -----------------------------------------------------------
    def backend(self, name: str) -> AccessBackend:
        with self._made:   # the cluster stage prepares nodes from threads: one backend and one ControlPath each
            if name not in self._backends:
                self.topology.host(name)
                self._backends[name] = AccessBackend(name, access=self.inventory.access(name),
                                                     control_dir=self._control_dir, guard=self.guard)
            return self._backends[name]

    def testinfra_host(self, name: str) -> testinfra.host.Host:
        backend = self.backend(name)
        with self._made:
            if name not in self._hosts:
                self._hosts[name] = testinfra.host.Host(backend)
            return self._hosts[name]

    def default_guard(self) -> HostGuard:
        return HostGuard(GRANTED if self.destructive_allowed else READ_ONLY)

    def transport_kind(self, name: str) -> str:
        return self.inventory.access(name).kind

    def _exec_prefix(self, name: str, *, keepalive: bool = True) -> list[str]:
        """argv prefix with nsenter's meaning: what follows is one argv, run as root in the host.
        keepalive=False: a session that must not end on a network stall (a dead-man switch)."""
        return self.backend(name).transport.exec_prefix(keepalive=keepalive)

    def _run(self, name: str, command: str, *, timeout: float | None = None):
        return self.backend(name).run(command, timeout=BOUNDS.command if timeout is None else timeout)

    def answers(self, name: str, *, timeout: float | None = None) -> str | None:
        """The host's boot id when it answers within timeout (default BOUNDS.vm_ssh), else None."""
        timeout = BOUNDS.vm_ssh if timeout is None else timeout
        try:
            result = self._run(name, "cat /proc/sys/kernel/random/boot_id", timeout=timeout)
        except HostUnreachable:
            return None
        return result.stdout.strip() if result.rc == 0 and result.stdout.strip() else None

    def reachable_hosts(self) -> list[str]:
        return [n for n, a in self.inventory.hosts.items() if a.kind != "none"]

    def up(self) -> dict:
        """Nothing to start: every host must answer, else one error naming the ones that do not."""
        silent = {}
        for name in self.reachable_hosts():
            try:
                result = self._run(name, "cat /proc/sys/kernel/random/boot_id", timeout=BOUNDS.vm_ssh)
                if result.rc != 0:
                    silent[name] = f"exit {result.rc}: {tail(result.stderr, 200)}"
            except HostUnreachable as exc:
                silent[name] = exc.what
        if silent:
            raise HaconformError("hosts do not answer: " + "; ".join(f"{n}: {why}" for n, why in silent.items()),
                                 where=str(self.inventory.path),
                                 fix="check that they are up and that the inventory's address, user, key and "
                                     "sudo are right (try the same with plain ssh)")
        return {"hosts": {n: self.inventory.hosts[n].kind for n in self.reachable_hosts()}}

    def down(self) -> dict:
        """Nothing to tear down: close the multiplexed ssh connections and reap fire-and-forget commands."""
        for backend in self._backends.values():
            backend.close()
            backend.transport.close()
        for proc in self._fire_and_forget:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=BOUNDS.vm_ssh)
        self._fire_and_forget.clear()
        if self._control_path is not None:
            shutil.rmtree(self._control_path, ignore_errors=True)   # made again if the target is used after down()
        return {}

    # ----- power -----------------------------------------------------------------
    def _sysrq(self, name: str, key: str) -> None:
        """Fire and forget: the host dies under the ssh session, so nothing waits for an answer."""
        access = self.inventory.access(name)
        if access.kind != "ssh":
            raise HaconformError(f"{name} is not an ssh host of the inventory", where=str(self.inventory.path))
        if self.answers(name) == own_boot_id():
            # A container or namespace "host" shares the harness machine's kernel: sysrq would stop it all.
            raise HaconformError(f"{name} runs on the harness machine's own kernel (same boot id): "
                                 f"`echo {key} > /proc/sysrq-trigger` would take the harness machine down",
                                 where=f"{self.inventory.path}: hosts.{name}",
                                 fix="crash/reset only hosts with their own kernel (VMs, machines)")
        argv = self.backend(name).argv(f"echo {key} > /proc/sysrq-trigger", multiplexed=False)
        self._fire_and_forget.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                      stderr=subprocess.DEVNULL, start_new_session=True))

    def _power_command(self, name: str, action: str) -> str | None:
        """Run the inventory's power command for action on power.via; None when there is none."""
        power = self.inventory.access(name).power
        command = power.command(action) if power else None
        if command is None:
            return None
        if power.via == "local":
            proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=BOUNDS.command)
            rc, stderr = proc.returncode, proc.stderr
        else:
            result = self._run(power.via, command)
            rc, stderr = result.rc, result.stderr
        if rc != 0:
            raise HaconformError(f"power {action} of {name}: `{command}` on {power.via} exited {rc}: "
                                 f"{tail(stderr, 300)}",
                                 where=f"{self.inventory.path}: hosts.{name}.power.{action}",
                                 fix="correct the command (it runs on power.via)")
        return command

    def _power(self, name: str, action: str) -> None:
        if action == "crash":
            if self._power_command(name, "crash") is None:
                self._sysrq(name, "c")
            self._crashed.add(name)
            wait_until(f"{name} stops answering after the crash", lambda: self.answers(name, timeout=2) is None,
                       timeout=BOUNDS.host_halt)
        elif action == "reset":
            before = self.answers(name)
            if self._power_command(name, "reset") is None:
                self._sysrq(name, "b")
            wait_until(f"{name} answers with a new boot id after the reset",
                       lambda: (lambda now: now and now != before)(self.answers(name, timeout=BOUNDS.vm_ssh)),
                       timeout=BOUNDS.vm_boot)
            self._crashed.discard(name)
        elif action in ("off", "on"):
            if self._power_command(name, action) is None:
                raise HaconformError(
                    f"power {action} of {name}: an existing deployment has no power switch",
                    where=f"{self.inventory.path}: hosts.{name}",
                    fix=f"add `power: {{via: <host running the hypervisor or IPMI tool>, {action}: \"...\"}}`")
            if action == "off":
                wait_until(f"{name} stops answering after power off", lambda: self.answers(name, timeout=2) is None,
                           timeout=BOUNDS.host_halt)
            else:
                wait_until(f"{name} answers after power on", lambda: self.answers(name), timeout=BOUNDS.vm_boot)
                self._crashed.discard(name)
        else:
            raise HaconformError(f"unknown power action {action!r}", where="InventoryTarget.power",
                                 fix="use on, off, reset or crash")

    def power_state(self, name: str) -> str:
        if self.answers(name):
            self._crashed.discard(name)
            return "on"
        return "crashed" if name in self._crashed else "off"

    def known_down(self, name: str) -> bool:
        # Only a crash the harness itself caused, and the host silent since: an existing deployment's host
        # that does not answer may still hold addresses (its "off" above is inferred from the silence).
        return name in self._crashed and self.answers(name, timeout=2) is None

    def booted(self, name: str) -> bool:
        try:
            result = self._run(name, "if test -d /run/systemd/system; then systemctl is-system-running; "
                                     "else echo running; fi", timeout=BOUNDS.vm_ssh)
        except HostUnreachable:
            return False
        # `degraded`: booted, with some unit failed (that is the audit's business, not the boot's).
        return result.stdout.strip() in ("running", "degraded")

    # ----- NIC -------------------------------------------------------------------
    def cluster_nic(self, name: str) -> str:
        """The NIC carrying the host's cluster address (inventory cluster_nic, else found by address)."""
        if name in self._nics:
            return self._nics[name]
        access = self.inventory.access(name)
        if access.cluster_nic:
            self._nics[name] = access.cluster_nic
            return access.cluster_nic
        address = self.topology.host(name).address
        links = json.loads(self._run(name, "ip -j -4 addr show").stdout or "[]")
        found = nic_holding(links, address)
        if not found:
            raise HaconformError(f"no NIC on {name} holds its cluster address {address}",
                                 where=f"{self.inventory.path}: hosts.{name}",
                                 fix="set cluster_nic, or give the host its topology address")
        self._nics[name] = found
        return found

    def management_nic(self, name: str) -> str | None:
        """The NIC the ssh session comes in on (None when not known)."""
        access = self.inventory.access(name)
        if access.kind != "ssh":
            return None
        # Asked without sudo: sudo drops SSH_CONNECTION from the environment.
        plain = AccessBackend(name, access=replace(access, sudo=False), control_dir=self._control_dir,
                              persistent=False, guard=self.guard)
        words = plain.run("echo $SSH_CONNECTION").stdout.split()
        if len(words) != 4:
            return None
        links = json.loads(self._run(name, "ip -j -4 addr show").stdout or "[]")
        return nic_holding(links, words[2])

    def _set_nic(self, name: str, state: str) -> None:
        if state not in ("up", "down"):
            raise HaconformError(f"unknown NIC state {state!r}", where="InventoryTarget.set_nic", fix="use up or down")
        nic = self.cluster_nic(name)
        q = shlex.quote(nic)
        mark = f"/run/haconform-nic-{nic}.dead-man"
        if state == "down":
            management = self.management_nic(name)
            if management == nic:
                raise HaconformError(
                    f"pulling {nic} on {name} would cut the ssh connection haconform uses to reach it",
                    where=f"{self.inventory.path}: hosts.{name}",
                    fix="reach the host over a management address on another NIC (set address), or set "
                        "cluster_nic if the cluster runs on another NIC")
            self._run(name, f"nohup sh -c 'sleep {nic_dead_man_s()}; ip link set dev {q} up' >/dev/null 2>&1 & "
                            f"echo $! > {mark}; ip link set dev {q} down")
        else:
            self._run(name, f"ip link set dev {q} up && {{ kill $(cat {mark} 2>/dev/null) 2>/dev/null; "
                            f"rm -f {mark}; true; }}")
        got = self.nic_state(name)
        if got != state:
            raise HaconformError(f"{nic} on {name} is {got} after `ip link set {nic} {state}`",
                                 where=f"hosts.{name}", fix="does the login have the right to change links?")

    def nic_state(self, name: str) -> str:
        nic = self.cluster_nic(name)
        result = self._run(name, f"ip -j link show dev {shlex.quote(nic)}")
        if result.rc != 0:
            return "absent"
        link = json.loads(result.stdout)[0]
        return "up" if "UP" in link.get("flags", []) else "down"

    # ----- fence device ---------------------------------------------------------------
    def fence_listing(self) -> dict[str, str]:
        """`fence_xvm -o list` from the first cluster node that answers: domain -> state."""
        for node in self.topology.cluster_nodes:
            try:
                result = self._run(node, fence_list_command(), timeout=BOUNDS.fence_request)
            except HostUnreachable:
                continue
            if result.rc == 0:
                return parse_fence_list(result.stdout)
        return {}

    def fence_device_running(self) -> bool:
        wanted = {self.topology.host(n).fence_name for n in self.topology.cluster_nodes}
        return wanted <= set(self.fence_listing())

    def start_fence_device(self, key: bytes, *, key_file: str, multicast_address: str, port: int) -> dict:
        listed = self.fence_listing()
        wanted = sorted(self.topology.host(n).fence_name for n in self.topology.cluster_nodes)
        if not set(wanted) <= set(listed):
            fence = self.topology.fence_host
            raise HaconformError(
                f"the deployment's fence device does not answer for {wanted}: `{fence_list_command()}` on a director "
                f"lists {listed or 'nothing'}",
                where=str(self.inventory.path),
                fix=f"start fence_virtd on {fence.name if fence else 'the physical host'} "
                    f"({multicast_address}:{port}, the same key as the directors); haconform starts no "
                    "daemon on an existing deployment")
        return {"fence device": "the deployment's own (already running; haconform started nothing)",
                "fence_xvm -o list": listed}

    def fence_requests(self) -> list[dict]:
        """The deployment's own fence device keeps no log haconform can read: nothing."""
        return []

    def describe(self) -> dict:
        return {"target": "ssh", "inventory": str(self.inventory.path), "stage": self.inventory.stage,
                "destructive_allowed": self.destructive_allowed,
                "hosts": {n: a.kind if a.kind != "ssh" else f"ssh {a.address}" for n, a in self.inventory.hosts.items()}}


def own_boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


