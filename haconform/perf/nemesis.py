"""Faults a perf run schedules mid-load (Jepsen's nemesis): inject, then heal.

Each acts on the director running the group when it is injected, with the
runbook's own means: `pcs node standby`, `systemctl stop haproxy`, a crash
that fencing must clean up.  heal() brings the cluster back to whole, so the
next run starts from the documented state; the end state is read, not assumed.
"""

from __future__ import annotations

import logging

from ..errors import HaconformError
from ..faults import REJOIN_NOISE, cluster_views, cluster_whole, group_location
from ..timeouts import BOUNDS
from ..wait import wait_until

log = logging.getLogger("haconform.perf")


def active_director(deployment):
    group = deployment.cluster_spec.group_id

    def seen():
        for director in deployment.directors:
            node = group_location(director, group)
            if node:
                return deployment.machine(node)
        return None
    return wait_until(f"{group} runs on exactly one director", seen, timeout=BOUNDS.cluster_settle,
                      observe=lambda: cluster_views(deployment))


class Fault:
    name = "abstract"
    describes = ""
    allowed_log: tuple[str, ...] = ()
    needs_power = False

    def __init__(self, deployment):
        self.deployment = deployment
        self.victim = None

    def inject(self) -> str:
        """Act on the active director; returns what was done, for the report."""
        self.victim = active_director(self.deployment)
        return self._inject()

    def _inject(self) -> str:
        raise NotImplementedError

    def heal(self) -> None:
        raise NotImplementedError

    def wait_whole(self) -> None:
        wait_until("every director sees quorum, a DC and both nodes", lambda: cluster_whole(self.deployment),
                   timeout=BOUNDS.node_rejoin, observe=lambda: cluster_views(self.deployment))
        self.deployment.directors[0].execute("pcs resource cleanup")
        active_director(self.deployment)


class Standby(Fault):
    name = "standby"
    describes = "pcs node standby on the active director (a planned move)"

    def _inject(self) -> str:
        self.victim.succeed(f"pcs node standby {self.victim.name}")
        return f"pcs node standby {self.victim.name}"

    def heal(self) -> None:
        if self.victim is not None:
            self.victim.succeed(f"pcs node unstandby {self.victim.name}")
        self.wait_whole()


class HaproxyStop(Fault):
    name = "haproxy-stop"
    describes = "systemctl stop haproxy on the active director (pacemaker's monitor must notice)"

    def _inject(self) -> str:
        self.victim.succeed("systemctl stop haproxy")
        return f"systemctl stop haproxy on {self.victim.name}"

    def heal(self) -> None:
        self.wait_whole()


class DirectorCrash(Fault):
    name = "crash"
    describes = "the active director crashes; the survivor must fence it (stage 5)"
    allowed_log = REJOIN_NOISE
    needs_power = True

    def _inject(self) -> str:
        self.victim.crash()
        return f"crash of {self.victim.name}"

    def heal(self) -> None:
        target = self.deployment.target
        wait_until(f"{self.victim.name} fenced and booted again", lambda: target.booted(self.victim.name),
                   timeout=BOUNDS.fence_complete + BOUNDS.node_rejoin,
                   observe=lambda: target.power_state(self.victim.name))
        self.wait_whole()


FAULTS = {cls.name: cls for cls in (Standby, HaproxyStop, DirectorCrash)}


def make_fault(name: str, deployment) -> Fault:
    try:
        fault = FAULTS[name](deployment)
    except KeyError:
        raise HaconformError(f"no fault called {name!r}", where="--perf-fault",
                             fix=f"choose one of: {', '.join(FAULTS)}") from None
    if fault.needs_power and not deployment.target.can_power:
        raise HaconformError(f"fault {name} needs power control, which target {deployment.target.kind} lacks",
                             where="--perf-fault", fix="choose standby or haproxy-stop")
    return fault
