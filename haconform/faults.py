"""A fault experiment, in the order Pacemaker's CTS runs one:

    observe (arm log watches, start the prober and the VIP watch)
    -> inject the fault -> wait for the promised end state
    -> stop observing -> evidence (timeline, crm_mon before/after, outage)
    -> audit (quorum, nodes, failed actions, unexpected log errors)

Workload (the prober), fault injection (the suite, through Machine) and the
checks (suites' assertions on what this returns) stay separate, as in Jepsen.
Nothing here asserts.

An audit fails when it could not look: a log it could not read (except on a
host that was down during the fault and was read once back), a VIP watch
that died, did not sample the whole fault window, or was blind inside it
(no complete sample: a director that could not be asked) for longer than
BOUNDS.vip_watch_gap.  A log line is excused
only by an Allowance: the daemon that logs it, its text, the stages it is
expected in and, for noise of a node rejoining, the window the fault records.

Every change a fault makes to the cluster's state is covered by a dead-man
switch (haconform/deadman.py) armed on the host BEFORE the change: if the
harness dies mid-test the switch puts it back; restore disarms it after.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from . import deadman
from .cluster import Cluster, VipSurvey, cleanup_command, link_holding, property_command, unstandby_command
from .errors import HaconformError, WaitTimeout
from .patterns import daemon_of
from .probe import Prober, longest_outage, outage_windows, summarize, timeline_svg
from .readers.logs import LogWatch, SeenLine
from .secrets import redacted_head
from .timeouts import BOUNDS, POLL_INTERVAL, Bound
from .wait import wait_until

log = logging.getLogger("haconform.faults")

PACEMAKER_LOG = "/var/log/pacemaker/pacemaker.log"
COROSYNC_LOG = "/var/log/corosync/corosync.log"
# Log lines that are errors by their level field (pacemaker's detail log:
# "(function) \tlevel: text"; corosync's logfile: "corosync level [SUBSYS]");
# CTS's BadNews in spirit.
ERROR_LINE = re.compile(r"\)\s+(error|crit|emerg|alert):|\bcorosync\s+(error|crit|emerg|alert)\s")

# How often the fault run reads its log watches while observing: each line is
# then placed in time to within this (for windowed allowances), and a host's
# log is read again as soon as it is back after a reboot.
LOG_POLL_S = 2.0


# ----- what an audit lets pass: allowances, as data --------------------------------------

def any_stage(spec) -> bool:
    return True


def stonith_not_documented(spec) -> bool:
    """The stage in force does not document STONITH as enabled (the runbook's stage 4 and before)."""
    if spec is None:
        return True
    enabled = str(spec.properties.get("stonith-enabled", "true")).lower() in ("true", "1", "yes", "on", "y")
    return not (spec.stonith and enabled)


@dataclass(frozen=True)
class Allowance:
    """One log line an audit lets pass: who logs it, its text, at which stages, in which window."""

    daemon: str                                    # the program (pacemaker.log's name column, syslog tag)
    pattern: str                                   # searched in the whole line
    why: str
    stage: Callable[[object], bool] = any_stage    # given the documented cluster in force (None: none yet)
    window: str | None = None                      # "rejoin": only within the window the fault records
    span: tuple[float, float] | None = None        # that window (harness clock), once recorded
    # CTS checks the end state as well as the log: given (deployment, host that logged the line), what
    # is still wrong after the line (None: what the error was about came right by itself).  An excused
    # line whose consequence did not heal is a problem of the audit again.
    healed: Callable[[object, str], str | None] | None = None

    def during(self, span: tuple[float, float] | None) -> "Allowance":
        return replace(self, span=span)

    def allows(self, line: SeenLine, spec) -> bool:
        if daemon_of(line.text) != self.daemon or not re.search(self.pattern, line.text):
            return False
        if not self.stage(spec):
            return False
        if self.window is None:
            return True
        if self.span is None:
            return False   # the fault never recorded its window: nothing is excused by it
        start, end = self.span
        return line.after <= end and line.by >= start   # written, as far as the reads tell, within it


# Said on every healthy run of this software; not news.
LOG_ALLOWANCES = (
    Allowance("pacemaker-execd", r"'pidfile' already specified",
              "Debian's haproxy init script passes -p, the runbook's config has pidfile too "
              "(fixtures/documented/README.md)"),
    Allowance("pacemaker-schedulerd", r"error: Resource start-up disabled since no STONITH",
              "stonith-enabled is not yet false in stage 4", stage=stonith_not_documented),
    Allowance("pacemaker-schedulerd", r"error: Either configure some or disable STONITH",
              "stonith-enabled is not yet false in stage 4", stage=stonith_not_documented),
    Allowance("pacemaker-schedulerd", r"error: NOTE: Clusters with shared data need STONITH",
              "stonith-enabled is not yet false in stage 4", stage=stonith_not_documented),
)

# Logged by pacemaker-fenced when a node rejoins and a CIB diff races its
# status section; the cluster recovers by itself (a full CIB sync follows).
# Faults whose victim leaves and rejoins bind these to their rejoin window.
CIB_DIFF_RACE = (
    Allowance("pacemaker-fenced",
              r"apply_v2_patchset\)\s+error: No (create|modify) match for /cib/status/node_state",
              "a CIB diff racing a rejoining node's status section", window="rejoin"),
    Allowance("pacemaker-fenced",
              r"error: apply_v2_patchset: Triggered fatal assertion at patchset\.c:\d+ : position == 0",
              "a CIB diff racing a rejoining node's status section", window="rejoin"),
)


def feature_set_recorded(deployment, node: str) -> str | None:
    """The node's #feature-set is in the CIB's status section after all (pacemaker-attrd records it once it
    accepts connections); what is missing if it did not appear within BOUNDS.cluster_settle."""
    cluster = Cluster(deployment)
    seen: dict = {}

    def recorded() -> bool:
        seen.clear()
        try:
            seen[node] = cluster.transient_attributes().get(node)
        except HaconformError as exc:
            seen["error"] = str(exc)
            return False
        return "#feature-set" in (seen[node] or {})

    try:
        wait_until(f"#feature-set of {node} recorded in the CIB's status section", recorded,
                   timeout=BOUNDS.cluster_settle, observe=lambda: dict(seen))
    except WaitTimeout as exc:
        return str(exc)
    return None


# A rejoining node's controller joins, and sets its #feature-set through pacemaker-attrd, before attrd
# accepts connections when the node is slow to start (seen on a TCG guest fenced and booted again:
# attrd waited 6 s for the CIB manager); pacemaker 2.1.5 retries that connection only on EAGAIN, not on
# ECONNREFUSED.  attrd records #feature-set itself about 2 s later; the allowance checks that it did.
_ATTRD_NOT_YET_UP_WHY = "a rejoining node's controller asking its attribute manager before it accepts connections"
ATTRD_NOT_YET_UP = tuple(
    Allowance("pacemaker-controld", pattern, _ATTRD_NOT_YET_UP_WHY, window="rejoin", healed=feature_set_recorded)
    for pattern in (r"\(connect_and_send_attrd_request\)\s+error: Could not connect to attrd: Connection refused$",
                    r"\(update_attrd\)\s+error: Could not update attribute #feature-set=\S+ for cluster node \S+: "
                    r"Connection refused"))
# What a fault whose victim leaves and rejoins lets pass, within its rejoin window.
REJOIN_NOISE = CIB_DIFF_RACE + ATTRD_NOT_YET_UP


class VipWatch:
    """Samples, from the hosts' own address tables, which directors hold the VIP.

    It says when it could not look: the thread's error if it died, when its
    samples began and ended, and the longest time inside the fault window
    with no complete sample (one in which every director answered or was
    known down) beyond its bound, so a watch that never covered the fault
    window, or was blind in the middle of it, cannot pass an audit by having
    seen no second holder.  A director that could not be asked makes its
    sample incomplete: it is never counted as not holding the VIP."""

    def __init__(self, deployment, *, max_gap: float | None = None):
        """max_gap: the longest blind time the watch still speaks for (default BOUNDS.vip_watch_gap)."""
        self.cluster = Cluster(deployment)
        self.samples: list[tuple[float, VipSurvey]] = []
        self.error: str | None = None
        self.max_gap = max_gap
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vip-watch", daemon=True)

    def _sample(self) -> None:
        began = time.time()
        self.samples.append((began, self.cluster.vip_survey()))

    def _run(self) -> None:
        try:
            while True:
                self._sample()
                if self._stop.wait(POLL_INTERVAL * 3):
                    self._sample()   # begun after stop(): the samples reach the end of the window
                    return
        except Exception as exc:   # noqa: BLE001 - a dead watch is reported by problems(), not lost
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("VIP watch died: %s", self.error)

    def start(self) -> "VipWatch":
        self._thread.start()
        wait_until("the VIP watch took its first sample", lambda: self.samples or self.error,
                   timeout=BOUNDS.cli_query,
                   observe=lambda: {"samples": len(self.samples), "error": self.error,
                                    "thread alive": self._thread.is_alive()})
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:   # started
            self._thread.join(timeout=BOUNDS.command)

    @property
    def first_sample_at(self) -> float | None:
        return self.samples[0][0] if self.samples else None

    @property
    def last_sample_at(self) -> float | None:
        return self.samples[-1][0] if self.samples else None

    def longest_gap(self, start: float | None = None, end: float | None = None) -> tuple[float, float]:
        """(from, to) of the longest time overlapping start..end (default: the whole watch) between two
        complete samples; from the window's edge when no complete sample lies beyond it."""
        complete = [t for t, survey in self.samples if survey.complete]
        start = self.first_sample_at if start is None else start
        end = self.last_sample_at if end is None else end
        if start is None or end is None:
            return (0.0, 0.0)
        before = [t for t in complete if t <= start]
        after = [t for t in complete if t >= end]
        points = ([before[-1]] if before else [start]) + [t for t in complete if start < t < end] + \
                 ([after[0]] if after else [end])
        return max(zip(points, points[1:]), key=lambda pair: pair[1] - pair[0], default=(start, start))

    def longest_gap_s(self, start: float | None = None, end: float | None = None) -> float:
        began, ended = self.longest_gap(start, end)
        return round(ended - began, 3)

    def unasked(self) -> list[tuple[float, dict]]:
        """The samples in which a director could not be asked: (when, director -> why)."""
        return [(t, dict(survey.unasked)) for t, survey in self.samples if not survey.complete]

    def problems(self, start: float, end: float) -> list[str]:
        """Why the samples cannot speak for the window start..end (empty: they cover it)."""
        found = []
        if self.error:
            found.append(f"the VIP watch died after {len(self.samples)} samples: {self.error}")
        if self._thread.is_alive() and self._stop.is_set():
            found.append("the VIP watch did not stop (a sample never returned)")
        if not self.samples:
            return found + ["the VIP watch took no sample"]
        if self.first_sample_at > start:
            found.append(f"the VIP watch's first sample came {self.first_sample_at - start:.2f}s after the "
                         "fault window began")
        if self.last_sample_at < end:
            found.append(f"the VIP watch's last sample came {end - self.last_sample_at:.2f}s before the "
                         "fault window ended")
        bound = BOUNDS.vip_watch_gap if self.max_gap is None else self.max_gap
        began, ended = self.longest_gap(start, end)
        if ended - began > bound:
            blind = [(t, who) for t, who in self.unasked() if began <= t <= ended]
            why = f"; a director could not be asked: {blind[0][1]}" if blind else ""
            found.append(f"the VIP watch could not look for {ended - began:.2f}s inside the fault window "
                         f"({began - start:+.2f}s to {ended - start:+.2f}s from its start), longer than "
                         f"{_bound_text(bound)}{why}")
        return found

    def describe(self) -> dict:
        return {"samples": len(self.samples), "first_sample_at": self.first_sample_at,
                "last_sample_at": self.last_sample_at, "longest_gap_s": self.longest_gap_s(),
                "incomplete_samples": len(self.unasked()), "error": self.error}

    def max_holders(self) -> int:
        return max((len(survey.holders) for _, survey in self.samples), default=0)

    def double_ownership(self) -> list[tuple[float, list[str]]]:
        return [(t, list(survey.holders)) for t, survey in self.samples if len(survey.holders) > 1]


def _bound_text(bound: float) -> str:
    return bound.describe() if isinstance(bound, Bound) else f"bound {bound:.1f} s"


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
            self.boot_ids[director.name] = _boot_id(director)
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

    def log_problems(self, allowed: tuple[Allowance, ...] = (), spec=None) -> list[str]:
        """Logs that could not be read, and error lines logged by pacemaker/corosync on any director since
        observing began that no allowance excuses.  Reads each log once more first."""
        allowances = LOG_ALLOWANCES + tuple(allowed)
        begun = self.marks[0][0] if self.marks else time.time()
        problems = [f"could not read {host}:{path}: {why} (when observing began)"
                    for (host, path), why in self.unarmed.items()]
        rebooted = {host for host in {h for h, _ in self.read_failures} if self._rebooted(host)}
        to_heal: dict[tuple[str, Callable], list[str]] = {}
        for (host, path), watch in self.watches.items():
            try:
                watch.new_lines()
            except Exception as exc:   # noqa: BLE001
                failures = self.read_failures.get((host, path), [])
                after_down = (f" ({host} was down during the fault; its log was not read after it came back)"
                              if host in rebooted or failures else "")
                earlier = (f"; {len(failures)} earlier reads failed, the first at "
                           f"+{failures[0][0] - begun:.1f}s" if failures else "")
                problems.append(f"could not read {host}:{path}: {exc}{after_down}{earlier}")
            # A read that failed while the host was up, then a read that succeeded: the watch reads from
            # its offset, so nothing was missed (a load spike on the host, not a blind audit).
            for line in watch.seen_lines():
                if not ERROR_LINE.search(line.text):
                    continue
                excusing = next((a for a in allowances if a.allows(line, spec)), None)
                if excusing is None:
                    problems.append(f"log error: {host}:{path}: {redacted_head(line.text.strip(), 300)}")
                elif excusing.healed is not None:
                    to_heal.setdefault((host, excusing.healed), []).append(line.text.strip())
        for (host, healed), lines in to_heal.items():
            wrong = healed(self.deployment, host)
            if wrong is not None:
                problems.append(f"log error on {host} excused only if it came right by itself, and it did not: "
                                f"{wrong}; the lines: {[redacted_head(text, 300) for text in lines]}")
        return problems

    def _rebooted(self, host: str) -> bool:
        """The host booted again since observing began (it was down, for a while, during the fault)."""
        before = self.boot_ids.get(host)
        now = _boot_id(self.deployment.machine(host))
        return before is not None and now is not None and now != before


def _boot_id(machine) -> str | None:
    try:
        return machine.boot_id
    except HaconformError:
        return None   # down, or unreachable


def audit(deployment, *, allowed_failures: tuple[str, ...] = (), run: FaultRun | None = None,
          allowed_log: tuple[Allowance, ...] = ()) -> list[str]:
    """What is wrong with the cluster now, as CTS's audits would say it (empty: healthy).  With a run,
    also what its VIP watch and log watches could not see, and log errors no allowance excuses."""
    strays = [a for a in allowed_log if not isinstance(a, Allowance)]
    if strays:
        raise HaconformError(f"allowed_log takes Allowance objects, got {strays!r}", where="haconform.faults.audit",
                             fix="bind each allowance to its daemon (and window): see LOG_ALLOWANCES")
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
        problems += run.vip_watch_problems()
        problems += run.log_problems(tuple(allowed_log), getattr(deployment, "cluster_spec", None))
    return problems


# ----- the faults (Jepsen's nemesis): each injected with the runbook's own means -----------------

class Fault:
    """One fault: inject(victim) acts on a director (default: the one running the group), heal() undoes
    what the fault itself did (unstandby, NIC back in), recover() also waits for the cluster to be whole.
    Suites and perf inject the same objects; after a destructive test, restore() audits and heals the rest.

    A fault that changes the cluster's state says how to put it back (undo()): inject() arms a dead-man
    switch with it on the host BEFORE the change, so a harness killed at any point leaves nothing
    changed; restore disarms it.  A fault whose victim leaves the cluster and rejoins (rejoins = True)
    records the window of its rejoin: its allowed_log excuses rejoin noise only within it."""

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
    def allowed_log(self) -> tuple[Allowance, ...]:
        """What an audit of this fault lets pass besides LOG_ALLOWANCES: rejoin noise, within the rejoin."""
        if not self.rejoins:
            return ()
        span = (self.injected_at, self.rejoined_at) if self.injected_at and self.rejoined_at else None
        return tuple(allowance.during(span) for allowance in REJOIN_NOISE)

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
