"""A fault experiment, in the order Pacemaker's CTS runs one:

    observe (arm log watches, start the prober and the VIP watch)
    -> inject the fault -> wait for the promised end state
    -> stop observing -> evidence (timeline, crm_mon before/after, outage)
    -> audit (quorum, nodes, failed actions, unexpected log errors)

Workload (the prober), fault injection (nemesis.py) and the checks
(checker.py, and suites' assertions on what it returns) stay separate, as in
Jepsen.  Nothing here asserts.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from ..cluster import Cluster
from ..errors import HaconformError
from ..probe import Prober, longest_outage, outage_windows, summarize, timeline_svg
from ..readers.logs import LogWatch
from ..timeouts import BOUNDS
from . import checker
from .checker import COROSYNC_LOG, PACEMAKER_LOG, ExcusedLogLine, VipWatch, boot_id
from .nemesis import Fault

log = logging.getLogger("haconform.faults")

# How often the fault run reads its log watches while observing: each line is
# then placed in time to within this (for lines excused within a window), and a host's
# log is read again as soon as it is back after a reboot.
LOG_POLL_S = 2.0


def operations_since(before: dict, after: dict) -> list[dict]:
    """The operations crm_mon records after a fault that it did not record before it (by node, resource,
    call id): how long each agent ran on this target, beside the waits that depended on it."""
    def key(op: dict) -> tuple:
        # call ids restart when a fenced node's executor starts again: the time tells them apart
        return op["node"], op["resource"], op["call"], op["task"], op.get("last_rc_change")
    seen = {key(op) for op in before.get("operations", [])}
    return [op for op in after.get("operations", []) if key(op) not in seen]


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
        self.unarmed: dict[tuple[str, str], str] = {}                        # watch -> why it could not start
        self.read_failures: dict[tuple[str, str], list[tuple[float, str]]] = {}
        self.boot_ids: dict[str, str | None] = {}
        self.faults: list[Fault] = []
        self.prober: Prober | None = None
        self.vip_watch = VipWatch(self.deployment)
        self.before: dict = {}
        self.after: dict = {}
        self._stop_polling = threading.Event()
        self._poller = threading.Thread(target=self._poll_logs, name="log-poll", daemon=True)

    # ----- observe -----------------------------------------------------------
    def __enter__(self) -> "FaultRun":
        self.arm_watches()
        self._poller.start()
        try:
            self.before = Cluster(self.deployment).snapshot()
            self.evidence.data(f"{self.title}: cluster before", self.before)
            client = self.deployment.client
            self.prober = Prober(client.program, self.deployment.url(self.probe_path), interval_s=0.1,
                                 server_header="X-Real-Server",
                                 label=f"prober on {client.name}").start()
            self.prober.wait_for("the prober saw the service answer", lambda s: any(x.ok for x in s),
                                 timeout=BOUNDS.agent_start)
            self.vip_watch.start()
        except BaseException:
            # __exit__ will not run: nothing observing may outlive the failed start.
            self._stop_watching()
            if self.prober is not None:
                try:
                    self.prober.stop()
                except HaconformError as error:
                    log.warning("prober: %s", error)
            raise
        self.mark("observing")
        return self

    def _stop_watching(self) -> None:
        self.vip_watch.stop()
        self._stop_polling.set()
        self._poller.join(timeout=BOUNDS.command)

    def arm_watches(self) -> None:
        """A watch on each director's pacemaker and corosync log; one that cannot start is kept as a
        problem for the audit (the experiment still runs)."""
        for director in self.deployment.directors:
            self.boot_ids[director.name] = boot_id(director)
            for path in (PACEMAKER_LOG, COROSYNC_LOG):
                try:
                    self.watches[(director.name, path)] = LogWatch(director.host, path, required=True).arm()
                except HaconformError as exc:
                    self.unarmed[(director.name, path)] = str(exc)

    def poll_logs(self) -> None:
        """Read every watch once; a read that fails is kept, for the audit to judge (host down or not)."""
        for key, watch in list(self.watches.items()):
            try:
                watch.new_lines()
            except Exception as exc:   # noqa: BLE001
                self.read_failures.setdefault(key, []).append((time.time(), str(exc)))

    def _poll_logs(self) -> None:
        """While observing: lines get their time, a rebooted host's log is read as soon as it is back."""
        while not self._stop_polling.is_set():
            self.poll_logs()
            self._stop_polling.wait(LOG_POLL_S)

    def mark(self, label: str) -> float:
        now = time.time()
        self.marks.append((now, label))
        return now

    def inject(self, fault: "Fault", victim=None, *, mark: str) -> str:
        """Mark the instant, inject the fault, keep what was done in the evidence."""
        self.mark(mark)
        self.faults.append(fault)
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
        if (machine.name, path) in self.unarmed:
            raise HaconformError(f"could not read {machine.name}:{path} when observing began: "
                                 f"{self.unarmed[(machine.name, path)]}", where="haconform.faults")
        return self.watches[(machine.name, path)]

    @property
    def window(self) -> tuple[float, float]:
        """The fault window: from the first injection (else from observing) to the end of observing."""
        begins = [f.injected_at for f in self.faults if f.injected_at is not None]
        start = min(begins) if begins else self.time_of("observing")
        ends = [t for t, name in self.marks if name == "observing ends"]
        return start, (ends[-1] if ends else time.time())

    def __exit__(self, exc_type, exc, tb) -> None:
        self.mark("observing ends")
        self._stop_watching()
        try:
            self.samples = self.prober.stop() if self.prober else []
        except HaconformError as error:
            log.warning("prober: %s", error)
            self.samples = self.prober.samples if self.prober else []
        self.after = Cluster(self.deployment).snapshot()
        self.evidence.data(f"{self.title}: cluster after", self.after)
        self.evidence.table(f"{self.title}: resource operations during the fault (crm_mon XML: agent run "
                            "and queue times)", operations_since(self.before, self.after))
        if self.samples:
            self.evidence.svg(f"{self.title}: requests through {self.deployment.frontend_label} "
                              f"(every 100 ms from {self.deployment.client.name})",
                              timeline_svg(self.samples, self.marks, title=self.title))
            self.evidence.data(f"{self.title}: prober summary", summarize(self.samples))
        self.evidence.data(f"{self.title}: timeline marks",
                           [{"t": round(t, 3), "mark": m} for t, m in self.marks])
        doubles = self.vip_watch.double_ownership()
        self.evidence.data(f"{self.title}: VIP holders sampled", {
            **self.vip_watch.describe(), "max_simultaneous_holders": self.vip_watch.max_holders(),
            "double_ownership_samples": [(round(t, 2), h) for t, h in doubles[:20]]})
        self.evidence.data(f"{self.title}: logs watched", {
            f"{host}:{path}": {"lines": len(watch.seen_lines()), "failed reads": len(self.read_failures.get(
                (host, path), []))} for (host, path), watch in self.watches.items()}
            | {f"{host}:{path}": {"not read": why} for (host, path), why in self.unarmed.items()})

    # ----- results -----------------------------------------------------------
    @property
    def outage_s(self) -> float:
        window = longest_outage(self.samples)
        return round(window.duration, 3) if window else 0.0

    def outages(self):
        return outage_windows(self.samples)

    def vip_watch_problems(self) -> list[str]:
        start, end = self.window
        return self.vip_watch.problems(start, end)

    def log_problems(self, excused: tuple[ExcusedLogLine, ...] = (), spec=None) -> list[str]:
        """Logs that could not be read, and error lines not excused (checker.log_problems)."""
        return checker.log_problems(self, excused, spec)
