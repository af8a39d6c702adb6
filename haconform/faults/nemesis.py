"""The faults (Jepsen's nemesis): each injected with the runbook's own means, and healed.

This is the one place that knows how to undo a fault.  An undo that is a
command line is a HealStep: the harness runs it (a fault's heal(), restore)
and a dead-man switch armed with it runs the same line on the host when the
harness is gone.  The switch is a detached shell on the host
(haconform/deadman.py) and cannot call back into Python, so what is shared is
the command line, built once here.  Undos that are the target's own controls
(power on, the cluster NIC plugged back in) are the functions below too, so
restore asks the nemesis for every undo.

Every change a fault makes to the cluster's state is covered by a dead-man
switch armed on the host BEFORE the change: if the harness dies mid-test the
switch puts it back; restore disarms it after.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass

from .. import deadman
from ..cluster import Cluster, cleanup_command, link_holding, property_command, unstandby_command
from ..errors import HaconformError
from ..timeouts import BOUNDS
from ..wait import wait_until
from .checker import REJOIN_NOISE, ExcusedLogLine


# ----- heal steps: how each change is undone, for the harness and for a dead-man switch ----------

@dataclass(frozen=True)
class HealStep:
    """One undo as a command line on a host.  It must be idempotent (heal(), restore and a switch may
    all run it) and carry no secret (a switch's undo is a command line on the host; deadman refuses one)."""

    host: object                   # the Machine it runs on
    command: str
    changes_cluster: bool = True   # asked of the guard as a change to the cluster (Cluster.change)

    def run(self, deployment) -> None:
        """Run it now, from the harness."""
        if self.changes_cluster:
            Cluster(deployment).change(self.command, via=self.host)
        else:
            self.host.succeed(self.command)

    def arm_dead_man(self, target, *, what: str, backstop_s: int | None = None) -> deadman.DeadManSwitch:
        """Arm a switch that runs the same line if the harness dies before restore disarms it."""
        return deadman.arm(target, self.host.name, self.command, what=what, backstop_s=backstop_s)


def unstandby(node: str, *, via) -> HealStep:
    """A node out of standby again (pcs acts on the CIB: via is any director that answers)."""
    return HealStep(via, unstandby_command(node))


def set_property(name: str, value: str | None, *, via) -> HealStep:
    """A cluster property back to value (None: unset, pacemaker's default applies)."""
    return HealStep(via, property_command(name, value))


def cleanup(*, via, resource: str | None = None) -> HealStep:
    """Failed actions forgotten: the cluster probes and starts what belongs where it belongs."""
    return HealStep(via, cleanup_command(resource))


def start_service(machine, service: str) -> HealStep:
    """A host's own service (one the cluster does not run) started again."""
    return HealStep(machine, f"service {shlex.quote(service)} start", changes_cluster=False)


def power_back_on(machine) -> None:
    """The target's power control; nothing a switch on the host could do."""
    machine.power_on()


def plug_back_in(machine) -> None:
    """The cluster NIC up again, through the target (which covers a pulled NIC with a switch of its own:
    haconform/targets/inventory_target.py)."""
    machine.unblock()


# ----- the faults ---------------------------------------------------------------------------

class Fault:
    """One fault: inject(victim) acts on a director (default: the one running the group), heal() undoes
    what the fault itself did (unstandby, NIC back in), recover() also waits for the cluster to be whole.
    Suites and perf inject the same objects; after a destructive test, restore() audits and heals the rest.

    A fault that changes the cluster's state says how to put it back (heal_step()): inject() arms a
    dead-man switch with that step on the host BEFORE the change, so a harness killed at any point leaves nothing
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
        self._before_change()
        step = self.heal_step()
        if step is not None:
            self.switch = step.arm_dead_man(self.deployment.target, what=f"{self.name} on {self.victim.name}",
                                            backstop_s=int(deadman.dead_man_s() + lasts_s))
        self.injected_at = time.time()
        return self._inject()

    def _before_change(self) -> None:
        """Read what heal_step() needs to know of the state before the change (once the victim is known)."""

    def heal_step(self) -> HealStep | None:
        """The step putting back what _inject() changes, for the dead-man switch (and heal(), where the
        fault heals itself); None: the fault changes nothing the cluster or restore would not put back."""
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

    def heal_step(self):
        return unstandby(self.victim.name, via=self.victim)

    def _inject(self) -> str:
        self.cluster.standby(self.victim.name)
        return f"pcs node standby {self.victim.name}"

    def heal(self) -> None:
        if self.victim is not None:
            self.heal_step().run(self.deployment)


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

    def heal_step(self):
        # A service the cluster runs is given back to the cluster: a cleanup makes it probe and start the
        # resource where it belongs.  Started by hand it could run twice if the group had moved meanwhile.
        # heal() stays the default (nothing): noticing the stopped service is the cluster's part of the test.
        resource = self.owning_resource()
        if resource is not None:
            return cleanup(via=self.victim, resource=resource)
        # The counterpart of the runbook's own `systemctl stop` that _inject() runs.
        return HealStep(self.victim, f"systemctl start {self.service}", changes_cluster=False)

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

    def _before_change(self) -> None:
        self.recorded = self.cluster.property_value(self.property_name, self.victim)

    def heal_step(self):
        return set_property(self.property_name, self.recorded, via=self.victim)

    def _inject(self) -> str:
        self.cluster.set_property(self.property_name, self.value, via=self.victim)
        return (f"{property_command(self.property_name, self.value)} on {self.victim.name} "
                f"(was {self.recorded if self.recorded is not None else 'unset'})")

    def heal(self) -> None:
        if self.victim is not None:
            self.heal_step().run(self.deployment)


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
    pulls the cable (haconform/targets/inventory_target.py); on the lab the cable's far end is a link in the harness
    machine's own namespace, which the next session's `lab up` (or `lab down`) takes over anyway."""

    name = "nic-down"
    describes = "the active director's cluster NIC taken down (split brain)"
    rejoins = True   # the cut node comes back (fenced and rebooted, or plugged in)

    def _inject(self) -> str:
        self.victim.block()
        return f"cluster NIC of {self.victim.name} down"

    def heal(self) -> None:
        if self.victim is not None:
            plug_back_in(self.victim)


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
