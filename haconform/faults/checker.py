"""The checks of a fault experiment (Jepsen's checker; Pacemaker CTS's audits).

An audit fails when it could not look: a log it could not read (except on a
host that was down during the fault and was read once back), a VIP watch
that died, did not sample the whole fault window, or was blind inside it
(no complete sample: a director that could not be asked) for longer than
BOUNDS.vip_watch_gap.  A log line is excused
only by an ExcusedLogLine: the daemon that logs it, its text, the stages it is
expected in and, for noise of a node rejoining, the window the fault records.

It reads what the experiment (experiment.py) recorded; it never injects, and
nothing here asserts: suites assert on the problems it returns.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

from ..cluster import Cluster, VipSurvey
from ..errors import HaconformError, WaitTimeout
from ..patterns import ANY, daemon_of, pattern as log_pattern
from ..readers.logs import SeenLine
from ..redaction import redacted_head
from ..timeouts import BOUNDS, POLL_INTERVAL, Bound
from ..wait import wait_until

if TYPE_CHECKING:
    from .experiment import FaultRun

log = logging.getLogger("haconform.faults")

PACEMAKER_LOG = "/var/log/pacemaker/pacemaker.log"
COROSYNC_LOG = "/var/log/corosync/corosync.log"
# Log lines that are errors by their level field (pacemaker's detail log:
# "(function) \tlevel: text"; corosync's logfile: "corosync level [SUBSYS]");
# CTS's BadNews in spirit.
ERROR_LINE = re.compile(r"\)\s+(error|crit|emerg|alert):|\bcorosync\s+(error|crit|emerg|alert)\s")


# ----- what an audit lets pass: excused log lines, as data --------------------------------------

def any_stage(spec) -> bool:
    return True


def stonith_not_documented(spec) -> bool:
    """The stage in force does not document STONITH as enabled (the runbook's stage 4 and before)."""
    if spec is None:
        return True
    enabled = str(spec.properties.get("stonith-enabled", "true")).lower() in ("true", "1", "yes", "on", "y")
    return not (spec.stonith and enabled)


@dataclass(frozen=True)
class ExcusedLogLine:
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

    def during(self, span: tuple[float, float] | None) -> "ExcusedLogLine":
        return replace(self, span=span)

    def excuses(self, line: SeenLine, spec) -> bool:
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
ALWAYS_EXCUSED = (
    ExcusedLogLine("pacemaker-execd", r"'pidfile' already specified",
                   "Debian's haproxy init script passes -p, the runbook's config has pidfile too "
                   "(fixtures/documented/README.md)"),
    ExcusedLogLine("pacemaker-schedulerd", r"error: Resource start-up disabled since no STONITH",
                   "stonith-enabled is not yet false in stage 4", stage=stonith_not_documented),
    ExcusedLogLine("pacemaker-schedulerd", r"error: Either configure some or disable STONITH",
                   "stonith-enabled is not yet false in stage 4", stage=stonith_not_documented),
    ExcusedLogLine("pacemaker-schedulerd", r"error: NOTE: Clusters with shared data need STONITH",
                   "stonith-enabled is not yet false in stage 4", stage=stonith_not_documented),
)

# Logged by pacemaker-fenced when a node rejoins and a CIB diff races its
# status section; the cluster recovers by itself (a full CIB sync follows).
# Faults whose victim leaves and rejoins bind these to their rejoin window.
CIB_DIFF_RACE = (
    ExcusedLogLine("pacemaker-fenced",
                   r"apply_v2_patchset\)\s+error: No (create|modify) match for /cib/status/node_state",
                   "a CIB diff racing a rejoining node's status section", window="rejoin"),
    ExcusedLogLine("pacemaker-fenced",
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
# ECONNREFUSED.  attrd records #feature-set itself about 2 s later; the excused line checks that it did.
_ATTRD_NOT_YET_UP_WHY = "a rejoining node's controller asking its attribute manager before it accepts connections"
ATTRD_NOT_YET_UP = tuple(
    ExcusedLogLine("pacemaker-controld", pattern, _ATTRD_NOT_YET_UP_WHY, window="rejoin", healed=feature_set_recorded)
    for pattern in (r"\(connect_and_send_attrd_request\)\s+error: Could not connect to attrd: Connection refused$",
                    r"\(update_attrd\)\s+error: Could not update attribute #feature-set=\S+ for cluster node \S+: "
                    r"Connection refused"))
# What a fault whose victim leaves and rejoins lets pass, within its rejoin window.
REJOIN_NOISE = CIB_DIFF_RACE + ATTRD_NOT_YET_UP


# A sample in which the power control had a director off or crashed: no kernel of it was running.
KERNEL_DOWN = "(down)"


class VipWatch:
    """Samples, from the hosts' own address tables, which directors hold the VIP.

    It says when it could not look: the thread's error if it died, when its
    samples began and ended, and the longest time inside the fault window
    with no complete sample (one in which every director answered or was
    known down) beyond its bound, so a watch that never covered the fault
    window, or was blind in the middle of it, cannot pass an audit by having
    seen no second holder.  A director that could not be asked makes its
    sample incomplete: it is never counted as not holding the VIP.

    With one exception, decided afterwards from the samples themselves: a
    director that stopped answering and answered again with another boot id
    was rebooting in between (a reset, a crash, a fence), and if the new kernel
    did not hold the VIP when it first answered, it held nothing in between
    either: the old kernel's addresses died with it, and the new one gets the
    VIP only from pacemaker, which the first answer would show.  That rests on
    every target reaching a host by a path the faults do not cut (the lab by
    its namespaces, VMs by their management network, the ssh target refuses
    to pull the NIC its own session comes in on): silence is a kernel that is
    not running, not a kernel cut off.  A sample blind only for such
    directors counts as complete; how many did is in describe()."""

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
        complete = [t for index, (t, _) in enumerate(self.samples) if self._seen_whole(index)]
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

    def _seen_whole(self, index: int) -> bool:
        """Sample `index` speaks for every director: each answered, was known down, or was rebooting (see the
        class docstring)."""
        survey = self.samples[index][1]
        return all(self._rebooting(index, director) for director in survey.unasked)

    def _rebooting(self, index: int, director: str) -> bool:
        """Between the director's last answer before sample `index` (or a sample in which the power control
        had it down: no kernel ran) and its first answer after it, its boot id changed, and that first answer
        holds no VIP."""
        before = next((s.boot_ids.get(director, KERNEL_DOWN) for _, s in reversed(self.samples[:index])
                       if director not in s.unasked), None)
        after = next((s for _, s in self.samples[index + 1:] if director not in s.unasked), None)
        if before is None or after is None or director not in after.boot_ids:
            return False
        return after.boot_ids[director] != before and director not in after.holders

    def rebooting_samples(self) -> int:
        """How many incomplete samples count as complete because their silent directors were rebooting."""
        return sum(1 for index, (_, survey) in enumerate(self.samples)
                   if not survey.complete and self._seen_whole(index))

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
                "incomplete_samples": len(self.unasked()), "rebooting_samples": self.rebooting_samples(),
                "error": self.error}

    def max_holders(self) -> int:
        return max((len(survey.holders) for _, survey in self.samples), default=0)

    def double_ownership(self) -> list[tuple[float, list[str]]]:
        return [(t, list(survey.holders)) for t, survey in self.samples if len(survey.holders) > 1]


def _bound_text(bound: float) -> str:
    return bound.describe() if isinstance(bound, Bound) else f"bound {bound:.1f} s"



def log_problems(run: "FaultRun", excused: tuple[ExcusedLogLine, ...] = (), spec=None) -> list[str]:
    """Logs that could not be read, and error lines logged by pacemaker/corosync on any director since
    observing began that no excused line matches.  Reads each log once more first."""
    excusing_lines = ALWAYS_EXCUSED + tuple(excused)
    begun = run.marks[0][0] if run.marks else time.time()
    problems = [f"could not read {host}:{path}: {why} (when observing began)"
                for (host, path), why in run.unarmed.items()]
    rebooted = {host for host in {h for h, _ in run.read_failures} if _rebooted(run, host)}
    to_heal: dict[tuple[str, Callable], list[str]] = {}
    for (host, path), watch in run.watches.items():
        try:
            watch.new_lines()
        except Exception as exc:   # noqa: BLE001
            failures = run.read_failures.get((host, path), [])
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
            excusing = next((e for e in excusing_lines if e.excuses(line, spec)), None)
            if excusing is None:
                problems.append(f"log error: {host}:{path}: {redacted_head(line.text.strip(), 300)}")
            elif excusing.healed is not None:
                to_heal.setdefault((host, excusing.healed), []).append(line.text.strip())
    for (host, healed), lines in to_heal.items():
        wrong = healed(run.deployment, host)
        if wrong is not None:
            problems.append(f"log error on {host} excused only if it came right by itself, and it did not: "
                            f"{wrong}; the lines: {[redacted_head(text, 300) for text in lines]}")
    return problems


def _rebooted(run: "FaultRun", host: str) -> bool:
    """The host booted again since observing began (it was down, for a while, during the fault)."""
    before = run.boot_ids.get(host)
    now = boot_id(run.deployment.machine(host))
    return before is not None and now is not None and now != before


def boot_id(machine) -> str | None:
    try:
        return machine.boot_id
    except HaconformError:
        return None   # down, or unreachable


def audit(deployment, *, allowed_failures: tuple[str, ...] = (), run: "FaultRun | None" = None,
          excused_lines: tuple[ExcusedLogLine, ...] = ()) -> list[str]:
    """What is wrong with the cluster now, as CTS's audits would say it (empty: healthy).  With a run,
    also what its VIP watch and log watches could not see, and log errors no excused line matches."""
    strays = [a for a in excused_lines if not isinstance(a, ExcusedLogLine)]
    if strays:
        raise HaconformError(f"excused_lines takes ExcusedLogLine objects, got {strays!r}",
                             where="haconform.faults.audit",
                             fix="bind each excused line to its daemon (and window): see ALWAYS_EXCUSED")
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
        problems += run.log_problems(tuple(excused_lines), getattr(deployment, "cluster_spec", None))
        if problems:
            problems += stalls(run)
    return problems


def stalls(run: "FaultRun") -> list[str]:
    """Context for an audit that found problems: each director whose corosync logged, since observing
    began, that it had not run for longer than its threshold, with the longest such stall.  Not a problem
    by itself (a loaded machine stalls for a few seconds and the cluster rides it out); beside problems it
    says a node, or the machine under it, froze, which is where to look first."""
    longest: dict[str, float] = {}
    stalled = log_pattern("corosync.not_scheduled", ms=ANY, threshold=ANY)
    for (host, _path), watch in run.watches.items():
        for line in watch.seen_lines():
            found = stalled.search(line.text)
            if found:
                longest[host] = max(longest.get(host, 0.0), float(found.group("ms")))
    return [f"context: corosync on {host} was not scheduled for {ms / 1000:.1f} s (the node itself stalled, or "
            f"the machine it runs on: on a VM target, look at the host's load and I/O first)"
            for host, ms in sorted(longest.items())]
