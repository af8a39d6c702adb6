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

import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .errors import HaconformError
from .probe import Prober, longest_outage, outage_windows, summarize, timeline_svg
from .readers.cluster import read_cluster_state
from .readers.links import nic_holding
from .readers.logs import LogWatch
from .timeouts import BOUNDS, POLL_INTERVAL

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


def crm_snapshot(deployment) -> dict:
    """crm_mon state from the first director that answers, as data for the report."""
    for director in deployment.directors:
        try:
            state = read_cluster_state(director.host)
        except Exception as exc:  # a crashed or cut-off node does not answer
            log.debug("no crm_mon from %s: %s", director.name, exc)
            continue
        return {"from": director.name, "dc": state.dc, "quorum": state.quorum,
                "online": state.online_nodes,
                "nodes": {n.name: {"online": n.online, "standby": n.standby, "unclean": n.unclean}
                          for n in state.nodes},
                "resources": {r.id: {"role": r.role, "nodes": list(r.nodes), "failed": r.failed}
                              for r in state.resources},
                "failures": [{"resource": f.resource, "node": f.node, "status": f.status} for f in state.failures]}
    return {"from": None, "error": "no director answered crm_mon"}


def link_holding(machine, address: str) -> str | None:
    """The machine's link holding `address` (read with `ip -j`); None: not held, or no answer."""
    try:
        result = machine.execute("ip -j -4 addr show")
    except HaconformError:
        return None  # powered off
    if result.rc != 0:
        return None
    return nic_holding(json.loads(result.stdout or "[]"), address)


def vip_holders(deployment) -> list[str]:
    """Directors holding the VIP right now.  Asked all at once: read one after another over a
    slow transport, a VIP that moved between two reads would show on both."""
    directors = deployment.directors
    with ThreadPoolExecutor(max_workers=len(directors)) as pool:
        held = list(pool.map(lambda d: link_holding(d, deployment.vip), directors))
    return [d.name for d, link in zip(directors, held) if link]


class VipWatch:
    """Samples, from the hosts' own address tables, which directors hold the VIP."""

    def __init__(self, deployment):
        self.deployment = deployment
        self.samples: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vip-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), vip_holders(self.deployment)))
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
        self.before = crm_snapshot(self.deployment)
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
        self.after = crm_snapshot(self.deployment)
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
    snapshot = crm_snapshot(deployment)
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


def group_location(machine, group: str) -> str | None:
    """Where `machine`'s own pacemaker says every member of `group` runs (None: nowhere, split,
    or the machine does not answer)."""
    try:
        state = read_cluster_state(machine.host)
        places = [state.where_is(member) for member in state.group_members(group)]
    except Exception:
        return None
    if places and all(len(p) == 1 for p in places) and len({p[0] for p in places}) == 1:
        return places[0][0]
    return None


def cluster_views(deployment) -> dict:
    """Each director's own view: quorum, DC, online nodes (None: it does not answer)."""
    views = {}
    for director in deployment.directors:
        try:
            state = read_cluster_state(director.host)
        except Exception:
            views[director.name] = None
            continue
        views[director.name] = {"quorum": state.quorum, "dc": state.dc, "online": state.online_nodes}
    return views


def cluster_whole(deployment) -> bool:
    """Every director sees quorum, a DC and all cluster nodes online."""
    wanted = set(deployment.topology.cluster_nodes)
    return all(view and view["quorum"] and view["dc"] and wanted <= set(view["online"])
               for view in cluster_views(deployment).values())
