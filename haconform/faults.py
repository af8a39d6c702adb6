"""A fault experiment, in the order Pacemaker's CTS runs one:

    observe (arm log watches, start the prober and the VIP watch)
    -> inject the fault -> wait for the promised end state
    -> stop observing -> evidence (timeline, crm_mon before/after, outage)
    -> audit (quorum, nodes, failed actions, unexpected log errors)

Workload (the prober), fault injection (the suite, through Machine) and the
checks (suites' assertions on what this returns) stay separate, as in Jepsen.
Nothing here asserts.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field

from .cluster import Cluster, link_holding
from .errors import HaconformError
from .probe import Prober, longest_outage, outage_windows, summarize, timeline_svg
from .readers.logs import LogWatch
from .timeouts import BOUNDS, POLL_INTERVAL
from .wait import wait_until

log = logging.getLogger("haconform.faults")

PACEMAKER_LOG = "/var/log/pacemaker/pacemaker.log"
COROSYNC_LOG = "/var/log/corosync/corosync.log"
# Log lines that are errors by their level field (pacemaker's detail log:
# "(function) \tlevel: text"; corosync's logfile: "corosync level [SUBSYS]");
# CTS's BadNews in spirit.
ERROR_LINE = re.compile(r"\)\s+(error|crit|emerg|alert):|\bcorosync\s+(error|crit|emerg|alert)\s")
# Said on every healthy run of this software; not news.
ALWAYS_ALLOWED = (
    r"pidfile' already specified",                   # Debian's haproxy init script + runbook's pidfile
    r"error: Resource start-up disabled since no STONITH",   # stage 4 before stonith-enabled=false
    r"error: Either configure some or disable STONITH",
    r"error: NOTE: Clusters with shared data need STONITH",
)


# Logged by pacemaker-fenced when a node rejoins and a CIB diff races its
# status section; the cluster recovers by itself (a full CIB sync follows).
REJOIN_NOISE = (
    r"apply_v2_patchset\)\s+error: No (create|modify) match for /cib/status/node_state",
    r"error: apply_v2_patchset: Triggered fatal assertion at patchset\.c:\d+ : position == 0",
)


class VipWatch:
    """Samples, from the hosts' own address tables, which directors hold the VIP."""

    def __init__(self, deployment):
        self.cluster = Cluster(deployment)
        self.samples: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vip-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.cluster.vip_holders()))
            self._stop.wait(POLL_INTERVAL * 3)

    def start(self) -> "VipWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=BOUNDS.command)

    def max_holders(self) -> int:
        return max((len(h) for _, h in self.samples), default=0)

    def double_ownership(self) -> list[tuple[float, list[str]]]:
        return [(t, h) for t, h in self.samples if len(h) > 1]


@dataclass
class FaultRun:
    deployment: object
    evidence: object
    title: str
    probe_path: str = "/"
    marks: list[tuple[float, str]] = field(default_factory=list)
    samples: list = field(default_factory=list)

    def __post_init__(self):
        self.watches: dict[tuple[str, str], LogWatch] = {}
        self.prober: Prober | None = None
        self.vip_watch = VipWatch(self.deployment)
        self.before: dict = {}
        self.after: dict = {}

    # ----- observe -----------------------------------------------------------
    def __enter__(self) -> "FaultRun":
        for director in self.deployment.directors:
            for path in (PACEMAKER_LOG, COROSYNC_LOG):
                self.watches[(director.name, path)] = LogWatch(director.host, path).arm()
        self.before = Cluster(self.deployment).snapshot()
        self.evidence.data(f"{self.title}: cluster before", self.before)
        client = self.deployment.client
        self.prober = Prober(client.argv(), self.deployment.url(self.probe_path), interval_s=0.1,
                             server_header="X-Real-Server",
                             label=f"prober on {client.name}").start()
        self.prober.wait_for("the prober saw the service answer", lambda s: any(x.ok for x in s),
                             timeout=BOUNDS.agent_start)
        self.vip_watch.start()
        self.mark("observing")
        return self

    def mark(self, label: str) -> float:
        now = time.time()
        self.marks.append((now, label))
        return now

    def inject(self, fault: "Fault", victim=None, *, mark: str) -> str:
        """Mark the instant, inject the fault, keep what was done in the evidence."""
        self.mark(mark)
        action = fault.inject(victim)
        self.evidence.text(f"{self.title}: fault", action)
        return action

    def wait_served(self, *, timeout: float) -> None:
        """Requests through the frontend succeed again (the prober's latest answer is a success)."""
        self.prober.wait_for(f"requests through the {self.deployment.frontend_label} succeed again",
                             lambda samples: bool(samples) and samples[-1].ok, timeout=timeout)

    def time_of(self, label: str) -> float:
        return next(t for t, name in self.marks if name == label)

    def watch(self, machine, path: str = PACEMAKER_LOG) -> LogWatch:
        return self.watches[(machine.name, path)]

    def __exit__(self, exc_type, exc, tb) -> None:
        self.mark("observing ends")
        self.vip_watch.stop()
        try:
            self.samples = self.prober.stop() if self.prober else []
        except HaconformError as error:
            log.warning("prober: %s", error)
            self.samples = self.prober.samples if self.prober else []
        self.after = Cluster(self.deployment).snapshot()
        self.evidence.data(f"{self.title}: cluster after", self.after)
        if self.samples:
            self.evidence.svg(f"{self.title}: requests through {self.deployment.frontend_label} "
                              f"(every 100 ms from {self.deployment.client.name})",
                              timeline_svg(self.samples, self.marks, title=self.title))
            self.evidence.data(f"{self.title}: prober summary", summarize(self.samples))
        self.evidence.data(f"{self.title}: timeline marks",
                           [{"t": round(t, 3), "mark": m} for t, m in self.marks])
        doubles = self.vip_watch.double_ownership()
        self.evidence.data(f"{self.title}: VIP holders sampled", {
            "samples": len(self.vip_watch.samples), "max_simultaneous_holders": self.vip_watch.max_holders(),
            "double_ownership_samples": [(round(t, 2), h) for t, h in doubles[:20]]})

    # ----- results -----------------------------------------------------------
    @property
    def outage_s(self) -> float:
        window = longest_outage(self.samples)
        return round(window.duration, 3) if window else 0.0

    def outages(self):
        return outage_windows(self.samples)

    def log_errors(self, allowed: tuple[str, ...] = ()) -> list[str]:
        """Error lines logged by pacemaker/corosync on any director since observing began."""
        patterns = [re.compile(p) for p in ALWAYS_ALLOWED + tuple(allowed)]
        found = []
        for (host, path), watch in self.watches.items():
            try:
                lines = watch.new_lines()
            except HaconformError:
                continue  # host down: its log is read after it is back, by the next audit
            for line in lines:
                if ERROR_LINE.search(line) and not any(p.search(line) for p in patterns):
                    found.append(f"{host}:{path}: {line.strip()[:300]}")
        return found


def audit(deployment, *, allowed_failures: tuple[str, ...] = (), run: FaultRun | None = None,
          allowed_log: tuple[str, ...] = ()) -> list[str]:
    """What is wrong with the cluster now, as CTS's audits would say it (empty: healthy)."""
    problems = []
    snapshot = Cluster(deployment).snapshot()
    if snapshot.get("from") is None:
        return ["no director answers crm_mon"]
    if not snapshot["quorum"]:
        problems.append(f"no quorum (seen from {snapshot['from']})")
    expected = set(deployment.topology.cluster_nodes)
    offline = expected - set(snapshot["online"])
    if offline:
        problems.append(f"nodes not online: {sorted(offline)}")
    unexpected = [f for f in snapshot["failures"] if f["resource"].split(":")[0] not in allowed_failures]
    if unexpected:
        problems.append(f"unexpected failed actions: {unexpected}")
    if run is not None:
        problems += [f"log error: {line}" for line in run.log_errors(allowed_log)]
    return problems


# ----- the faults (Jepsen's nemesis): each injected with the runbook's own means -----------------

class Fault:
    """One fault: inject(victim) acts on a director (default: the one running the group), heal() undoes
    what the fault itself did (unstandby, NIC back in), recover() also waits for the cluster to be whole.
    Suites and perf inject the same objects; after a destructive test, restore() audits and heals the rest."""

    name = "abstract"
    describes = ""
    allowed_log: tuple[str, ...] = ()
    needs_power = False

    def __init__(self, deployment):
        self.deployment = deployment
        self.cluster = Cluster(deployment)
        self.victim = None

    def inject(self, victim=None) -> str:
        """Act on victim (default: the active director); returns what was done, for the report."""
        self.victim = victim or self.cluster.active_director()
        return self._inject()

    def _inject(self) -> str:
        raise NotImplementedError

    def heal(self) -> None:
        """Undo what the fault did itself; what the cluster must do on its own is left to it."""

    def recover(self) -> None:
        """heal(), then every director sees the whole cluster, failed actions cleaned, the group placed."""
        self.heal()
        wait_until("every director sees quorum, a DC and both nodes", self.cluster.whole,
                   timeout=BOUNDS.node_rejoin, observe=self.cluster.views)
        self.cluster.cleanup()
        self.cluster.active_director()


class Standby(Fault):
    name = "standby"
    describes = "pcs node standby on the active director (a planned move)"

    def _inject(self) -> str:
        self.cluster.standby(self.victim.name)
        return f"pcs node standby {self.victim.name}"

    def heal(self) -> None:
        if self.victim is not None:
            self.cluster.unstandby(self.victim.name, via=self.victim)


class ServiceStop(Fault):
    name = "haproxy-stop"
    describes = "systemctl stop haproxy on the active director (pacemaker's monitor must notice)"
    service = "haproxy"

    def _inject(self) -> str:
        self.victim.succeed(f"systemctl stop {self.service}")   # the runbook's own command
        return f"systemctl stop {self.service} on {self.victim.name}"


class VipDeleted(Fault):
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
    name = "nic-down"
    describes = "the active director's cluster NIC taken down (split brain)"
    allowed_log = REJOIN_NOISE   # the cut node comes back (fenced and rebooted, or plugged in)

    def _inject(self) -> str:
        self.victim.block()
        return f"cluster NIC of {self.victim.name} down"

    def heal(self) -> None:
        if self.victim is not None:
            self.victim.unblock()


class Reset(Fault):
    name = "reset"
    describes = "a director power-cycled (it must rejoin by itself)"
    allowed_log = REJOIN_NOISE
    needs_power = True

    def _inject(self) -> str:
        self.victim.reset()
        return f"power reset of {self.victim.name}"


class Crash(Fault):
    name = "crash"
    describes = "the active director crashes; the survivor must fence it (stage 5)"
    allowed_log = REJOIN_NOISE
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
