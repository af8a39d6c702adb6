"""The faults (Jepsen's nemesis): each injected with the runbook's own means, and healed.

Every change a fault makes to the cluster's state is covered by a dead-man
switch (haconform/deadman.py) armed on the host BEFORE the change: if the
harness dies mid-test the switch puts it back; restore disarms it after.
"""

from __future__ import annotations

import time

from .. import deadman
from ..cluster import Cluster, cleanup_command, link_holding, property_command, unstandby_command
from ..errors import HaconformError
from ..timeouts import BOUNDS
from ..wait import wait_until
from .checker import REJOIN_NOISE, ExcusedLogLine


class Fault:
    """One fault: inject(victim) acts on a director (default: the one running the group), heal() undoes
    what the fault itself did (unstandby, NIC back in), recover() also waits for the cluster to be whole.
    Suites and perf inject the same objects; after a destructive test, restore() audits and heals the rest.

    A fault that changes the cluster's state says how to put it back (undo()): inject() arms a dead-man
    switch with it on the host BEFORE the change, so a harness killed at any point leaves nothing
    changed; restore disarms it.  A fault whose victim leaves the cluster and rejoins (rejoins = True)
    records the window of its rejoin: its excused_lines excuse rejoin noise only within it."""

    name = "abstract"
    describes = ""
    needs_power = False
    rejoins = False

    def __init__(self, deployment):
        self.deployment = deployment
        self.cluster = Cluster(deployment)
        self.victim = None
        self.switch: deadman.DeadManSwitch | None = None
        self.injected_at: float | None = None
        self.rejoined_at: float | None = None

    def inject(self, victim=None, *, lasts_s: float = 0.0) -> str:
        """Act on victim (default: the active director); returns what was done, for the report.
        lasts_s: how long the change is meant to stay beyond a test's own bounds (a perf soak), added
        to the dead-man switch's backstop so it never fires under a live harness."""
        self.victim = victim or self.cluster.active_director()
        self.deployment.target.guard.check_action(self.victim.name, f"inject the fault {self.name}")
        undo = self.undo()
        if undo is not None:
            host, command = undo
            self.switch = deadman.arm(self.deployment.target, host.name, command,
                                      what=f"{self.name} on {self.victim.name}",
                                      backstop_s=int(deadman.dead_man_s() + lasts_s))
        self.injected_at = time.time()
        return self._inject()

    def undo(self) -> tuple[object, str] | None:
        """(machine, shell command) putting back what _inject() changes, for the dead-man switch; None:
        the fault changes nothing the cluster or restore would not put back by itself."""
        return None

    def _inject(self) -> str:
        raise NotImplementedError

    def heal(self) -> None:
        """Undo what the fault did itself; what the cluster must do on its own is left to it."""

    def rejoined(self) -> None:
        """The victim is back in the cluster (every director sees it): the rejoin window ends now."""
        self.rejoined_at = time.time()

    @property
    def excused_lines(self) -> tuple[ExcusedLogLine, ...]:
        """What an audit of this fault lets pass besides ALWAYS_EXCUSED: rejoin noise, within the rejoin."""
        if not self.rejoins:
            return ()
        span = (self.injected_at, self.rejoined_at) if self.injected_at and self.rejoined_at else None
        return tuple(line.during(span) for line in REJOIN_NOISE)

    def recover(self) -> None:
        """heal(), then every director sees the whole cluster, failed actions cleaned, the group placed."""
        self.heal()
        wait_until("every director sees quorum, a DC and both nodes", self.cluster.whole,
                   timeout=BOUNDS.node_rejoin, observe=self.cluster.views)
        self.rejoined()
        self.cluster.cleanup()
        self.cluster.active_director()


class Standby(Fault):
    name = "standby"
    describes = "pcs node standby on the active director (a planned move)"

    def undo(self):
        return self.victim, unstandby_command(self.victim.name)

    def _inject(self) -> str:
        self.cluster.standby(self.victim.name)
        return f"pcs node standby {self.victim.name}"

    def heal(self) -> None:
        if self.victim is not None:
            self.cluster.unstandby(self.victim.name, via=self.victim)


class ServiceStop(Fault):
    name = "haproxy-stop"
    describes = "systemctl stop haproxy on the active director (pacemaker's monitor must notice)"

    def __init__(self, deployment, service: str = "haproxy"):
        super().__init__(deployment)
        self.service = service

    def owning_resource(self) -> str | None:
        """The id of the cluster resource running the service (None: the cluster does not run it)."""
        spec = getattr(self.deployment, "cluster_spec", None)
        for resource in (spec.resources.values() if spec else ()):
            if any(agent.split(":")[-1] == self.service for agent in resource.agents()):
                return resource.id
        return None

    def undo(self):
        # A service the cluster runs is given back to the cluster: a cleanup makes it probe and start the
        # resource where it belongs.  Started by hand it could run twice if the group had moved meanwhile.
        resource = self.owning_resource()
        if resource is not None:
            return self.victim, cleanup_command(resource)
        return self.victim, f"systemctl start {self.service}"

    def _inject(self) -> str:
        self.victim.succeed(f"systemctl stop {self.service}")   # the runbook's own command
        return f"systemctl stop {self.service} on {self.victim.name}"


class PropertyChange(Fault):
    """A cluster property set for a test (HAC-FENCE-004: stonith-enabled=false); the value the CIB had is
    recorded first and is what heal() and the dead-man switch set back.  inject(via) acts through that
    director (default: the active one); the switch runs there."""

    name = "property"

    def __init__(self, deployment, property_name: str, value: str):
        super().__init__(deployment)
        self.property_name = property_name
        self.value = value
        self.recorded: str | None = None
        self.name = f"property {property_name}={value}"

    @property
    def describes(self) -> str:
        return f"pcs property set {self.property_name}={self.value}"

    def undo(self):
        self.recorded = self.cluster.property_value(self.property_name, self.victim)
        return self.victim, property_command(self.property_name, self.recorded)

    def _inject(self) -> str:
        self.cluster.set_property(self.property_name, self.value, via=self.victim)
        return (f"{property_command(self.property_name, self.value)} on {self.victim.name} "
                f"(was {self.recorded if self.recorded is not None else 'unset'})")

    def heal(self) -> None:
        if self.victim is not None:
            self.cluster.set_property(self.property_name, self.recorded, via=self.victim)


class VipDeleted(Fault):
    """No dead-man switch: the VIP's own monitor puts it back within its interval, and an `ip addr add`
    by a switch could give a second director the VIP if the cluster had moved the group meanwhile."""

    name = "vip-delete"
    describes = "the VIP deleted by hand on the active director (the VIP's monitor must notice)"

    def _inject(self) -> str:
        address, prefix = self.deployment.vip, self.deployment.topology.prefixlen
        link = link_holding(self.victim, address)
        if link is None:
            raise HaconformError(f"{self.victim.name} holds no VIP {address}", where="haconform.faults",
                                 fix="inject it on the director running the group")
        self.victim.succeed(f"ip addr del {address}/{prefix} dev {link}")
        return f"ip addr del {address}/{prefix} dev {link} on {self.victim.name}"


class NicDown(Fault):
    """No switch here: the SSH (and VM guest) target arms its own NIC dead-man switch on the host when it
    pulls the cable (haconform/targets/ssh.py); on the lab the cable's far end is a link in the harness
    machine's own namespace, which the next session's `lab up` (or `lab down`) takes over anyway."""

    name = "nic-down"
    describes = "the active director's cluster NIC taken down (split brain)"
    rejoins = True   # the cut node comes back (fenced and rebooted, or plugged in)

    def _inject(self) -> str:
        self.victim.block()
        return f"cluster NIC of {self.victim.name} down"

    def heal(self) -> None:
        if self.victim is not None:
            self.victim.unblock()


class Reset(Fault):
    """No switch: power changes nothing the cluster keeps; the node rejoins by itself, or restore powers it on."""

    name = "reset"
    describes = "a director power-cycled (it must rejoin by itself)"
    rejoins = True
    needs_power = True

    def _inject(self) -> str:
        self.victim.reset()
        return f"power reset of {self.victim.name}"


class Crash(Fault):
    """No switch: the survivor fences the crashed node (a reboot), or restore powers it on."""

    name = "crash"
    describes = "the active director crashes; the survivor must fence it (stage 5)"
    rejoins = True
    needs_power = True

    def _inject(self) -> str:
        self.victim.crash()                     # on a VM: echo c > /proc/sysrq-trigger
        return f"crash of {self.victim.name}"

    def heal(self) -> None:
        if self.victim is None:
            return
        target = self.deployment.target
        wait_until(f"{self.victim.name} fenced and booted again", lambda: target.booted(self.victim.name),
                   timeout=BOUNDS.fence_complete + BOUNDS.node_rejoin,
                   observe=lambda: target.power_state(self.victim.name))


# What a perf run may schedule mid-load (--perf-fault).
PERF_FAULTS = {cls.name: cls for cls in (Standby, ServiceStop, Crash)}


def make_fault(name: str, deployment) -> Fault:
    try:
        fault = PERF_FAULTS[name](deployment)
    except KeyError:
        raise HaconformError(f"no fault called {name!r}", where="--perf-fault",
                             fix=f"choose one of: {', '.join(PERF_FAULTS)}") from None
    if fault.needs_power and not deployment.target.can_power:
        raise HaconformError(f"fault {name} needs power control, which target {deployment.target.kind} lacks",
                             where="--perf-fault", fix="choose standby or haproxy-stop")
    return fault
