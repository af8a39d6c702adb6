"""Audits that fail when they could not look: unreadable logs, a VIP watch that died or missed the window,
and excused log lines tied to a daemon, a stage and a time window.  Fake directors, recorded log lines."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from haconform.cluster import VipSurvey
from haconform.errors import HaconformError
from haconform.faults import ExcusedLogLine, FaultRun, Reset, audit
from haconform.faults.checker import (ALWAYS_EXCUSED, COROSYNC_LOG, PACEMAKER_LOG, REJOIN_NOISE, VipWatch,
                                      stalls, stonith_not_documented)
from haconform.readers.logs import SeenLine
from haconform.stages.model import load_stage
from haconform.topology import load_topology
from tests.fakes import FakeHost, GrowingFile, read_sample

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY = load_topology(REPO / "fixtures" / "topology.yaml")
STAGE4 = load_stage(REPO / "fixtures" / "documented" / "stage4", TOPOLOGY).cluster
STAGE5 = load_stage(REPO / "fixtures" / "documented" / "stage5", TOPOLOGY).cluster

# Lines as the deployments write them (pacemaker.log layout, recorded in a lab run).
STONITH_MISSING = ("Nov 30 00:34:50.101 server1 pacemaker-schedulerd[534] (unpack_resources) \terror: "
                   "Resource start-up disabled since no STONITH resources have been defined")
REJOIN = ("Nov 30 00:40:01.200 server1 pacemaker-fenced    [530] (apply_v2_patchset) \terror: "
          "No create match for /cib/status/node_state[@id='2']")
REJOIN_BY_ANOTHER = REJOIN.replace("pacemaker-fenced    [530]", "pacemaker-based     [528]")
PIDFILE = ("Nov 30 00:34:56.609 server1 pacemaker-execd     [532] (log_op_output) \terror: haproxy_start_0[1161] "
           "error output [ [ALERT] (1212) : config : 'pidfile' already specified. Continuing. ]")
REAL_ERROR = ("Nov 30 00:41:00.000 server1 pacemaker-controld  [531] (unpack_graph) \terror: "
              "Transition aborted by a cat on the keyboard")
HEALTHY = "Nov 30 00:41:00.100 server1 pacemaker-controld  [531] (do_state_transition) \tnotice: all fine"


class Director:
    """A director whose logs are GrowingFiles, which can go down (commands fail) and reboot (new boot id)."""

    def __init__(self, name: str, *, missing=()):
        self.name = name
        self.host = FakeHost(name=name)
        self.down = False
        self.boot = 1
        self.logs = {path: GrowingFile(self.host, path, None if path in missing else (REAL_ERROR + "\n").encode())
                     for path in (PACEMAKER_LOG, COROSYNC_LOG)}
        self.host.on(re.compile(r"crm_mon "), stdout=read_sample("pacemaker/crm_mon_running.xml"))
        original = self.host.run

        def run(command, *args):
            if self.down:
                raise HaconformError(f"host {name} is crashed")
            return original(command, *args)
        self.host.run = run

    @property
    def boot_id(self) -> str:
        if self.down:
            raise HaconformError(f"host {self.name} is crashed")
        return f"boot-{self.boot}"

    def write(self, line: str, path: str = PACEMAKER_LOG) -> None:
        self.logs[path].append(line + "\n")


class Deployment:
    def __init__(self, spec=STAGE4, **directors):
        self.topology = TOPOLOGY
        self.vip = TOPOLOGY.vip
        self.cluster_spec = spec
        self.machines = directors or {"server1": Director("server1"), "server4": Director("server4")}

    @property
    def directors(self):
        return list(self.machines.values())

    def machine(self, name):
        return self.machines[name]


def observed(deployment) -> FaultRun:
    """A fault run with its log watches armed (no prober, no threads: the test polls)."""
    run = FaultRun(deployment, evidence=None, title="test")
    run.arm_watches()
    run.mark("observing")
    return run


def flagged(problems: list[str], text: str) -> bool:
    return any(text in p for p in problems)


# ----- logs that could not be read ------------------------------------------------------------

def test_a_log_missing_when_observing_begins_is_a_problem():
    deployment = Deployment(server1=Director("server1", missing=(COROSYNC_LOG,)), server4=Director("server4"))
    run = observed(deployment)
    problems = run.log_problems(spec=STAGE4)
    assert flagged(problems, f"could not read server1:{COROSYNC_LOG}: "), problems
    assert "No such file" in next(p for p in problems if COROSYNC_LOG in p)
    with pytest.raises(HaconformError, match=f"could not read server1:{COROSYNC_LOG}"):
        run.watch(deployment.machine("server1"), COROSYNC_LOG)


def test_a_healthy_run_has_no_problem():
    deployment = Deployment()
    run = observed(deployment)
    deployment.machine("server1").write(HEALTHY)
    run.poll_logs()
    assert run.log_problems(spec=STAGE4) == []


def test_a_log_removed_on_a_host_that_stayed_up_is_a_problem():
    deployment = Deployment()
    run = observed(deployment)
    deployment.machine("server4").logs[PACEMAKER_LOG].remove()
    run.poll_logs()
    problems = run.log_problems(spec=STAGE4)
    assert flagged(problems, f"could not read server4:{PACEMAKER_LOG}: "), problems   # the audit's own read
    assert flagged(problems, "1 earlier reads failed, the first at +"), problems


def test_a_host_down_in_the_window_and_read_once_back_is_no_problem_and_its_lines_count():
    deployment = Deployment()
    run = observed(deployment)
    victim = deployment.machine("server1")
    victim.down = True
    run.poll_logs()                              # fails: the host is crashed
    assert run.read_failures
    victim.down, victim.boot = False, 2          # fenced, booted again
    victim.write(REAL_ERROR)
    problems = run.log_problems(spec=STAGE4)
    assert problems == [f"log error: server1:{PACEMAKER_LOG}: {REAL_ERROR}"]


def test_a_host_still_down_when_the_audit_reads_is_a_problem():
    deployment = Deployment()
    run = observed(deployment)
    victim = deployment.machine("server1")
    victim.down = True
    run.poll_logs()
    problems = run.log_problems(spec=STAGE4)
    assert flagged(problems, f"could not read server1:{PACEMAKER_LOG}: host server1 is crashed (server1 was down "
                             "during the fault; its log was not read after it came back)"), problems


def test_a_failed_poll_followed_by_a_good_read_is_not_a_problem():
    """The watch reads from its offset: a poll that failed under load, then a read that succeeded, missed
    nothing (the audit looked)."""
    deployment = Deployment()
    run = observed(deployment)
    victim = deployment.machine("server1")
    victim.down = True
    run.poll_logs()
    victim.down = False                          # answered again, same boot: the audit's read succeeds
    assert run.log_problems(spec=STAGE4) == []


# ----- excused log lines: daemon, stage, window --------------------------------------------------------

def test_lines_written_before_observing_never_count_and_errors_do():
    deployment = Deployment()
    run = observed(deployment)
    deployment.machine("server4").write(REAL_ERROR.replace("server1", "server4"), COROSYNC_LOG)
    problems = run.log_problems(spec=STAGE4)
    assert len(problems) == 1 and problems[0].startswith(f"log error: server4:{COROSYNC_LOG}: "), problems


def test_the_pidfile_alert_is_allowed_from_pacemaker_execd_only():
    deployment = Deployment()
    run = observed(deployment)
    director = deployment.machine("server1")
    director.write(PIDFILE)
    director.write(PIDFILE.replace("pacemaker-execd     [532]", "pacemaker-controld  [531]"))
    problems = run.log_problems(spec=STAGE4)
    assert len(problems) == 1 and "pacemaker-controld" in problems[0], problems


@pytest.mark.parametrize("spec, allowed", [(None, True), (STAGE4, True), (STAGE5, False)])
def test_stonith_missing_is_allowed_before_stage5_only(spec, allowed):
    deployment = Deployment(spec=spec)
    run = observed(deployment)
    deployment.machine("server1").write(STONITH_MISSING)
    problems = run.log_problems(spec=spec)
    assert (problems == []) == allowed, problems
    assert stonith_not_documented(spec) == allowed


def test_rejoin_noise_inside_the_window_is_allowed_outside_it_is_flagged():
    deployment = Deployment()
    run = observed(deployment)
    director = deployment.machine("server1")
    reset = Reset(deployment)
    reset.injected_at = time.time()
    director.write(REJOIN)                        # during the rejoin
    run.poll_logs()
    # the rejoin ended before the next read began (the fault records it just after seeing the cluster whole)
    reset.rejoined_at = run.watches[("server1", PACEMAKER_LOG)].last_read - 1e-6
    run.poll_logs()                               # nothing new: this read began after the window
    director.write(REJOIN.replace("00:40:01", "00:45:00"))   # after the rejoin: news
    problems = run.log_problems(reset.excused_lines, spec=STAGE4)
    assert problems == [f"log error: server1:{PACEMAKER_LOG}: {REJOIN.replace('00:40:01', '00:45:00')}"]


def test_rejoin_noise_from_another_daemon_is_flagged_even_inside_the_window():
    deployment = Deployment()
    run = observed(deployment)
    reset = Reset(deployment)
    reset.injected_at = time.time() - 1
    deployment.machine("server1").write(REJOIN_BY_ANOTHER)
    run.poll_logs()
    reset.rejoined()
    problems = run.log_problems(reset.excused_lines, spec=STAGE4)
    assert problems == [f"log error: server1:{PACEMAKER_LOG}: {REJOIN_BY_ANOTHER}"]


def test_rejoin_noise_is_flagged_when_the_fault_never_recorded_its_window():
    deployment = Deployment()
    run = observed(deployment)
    deployment.machine("server1").write(REJOIN)
    assert run.log_problems(Reset(deployment).excused_lines, spec=STAGE4) != []


@pytest.mark.parametrize("after, by, inside", [
    (10.0, 12.0, True),    # read within the window
    (5.0, 11.0, True),     # the read before began earlier: it may have been written inside
    (19.0, 25.0, True),    # the read before began inside: it may have been written inside
    (21.0, 25.0, False),   # the read before began after the window: written after it
    (1.0, 9.0, False),     # read before the window began
])
def test_a_windowed_excused_line_takes_a_line_by_when_it_was_read(after, by, inside):
    excused = REJOIN_NOISE[0].during((10.0, 20.0))
    assert excused.excuses(SeenLine(REJOIN, after, by), STAGE5) is inside


def test_allow_lists_are_data_tied_to_daemons():
    for excused in ALWAYS_EXCUSED + REJOIN_NOISE:
        assert isinstance(excused, ExcusedLogLine) and excused.daemon and excused.why
    assert {a.window for a in REJOIN_NOISE} == {"rejoin"}


# ----- the VIP watch -----------------------------------------------------------------------------

def vip_watch(holders, **unasked) -> VipWatch:
    """A watch whose every sample finds holders() holding the VIP, and the directors in unasked not asked."""
    watch = VipWatch(Deployment())
    watch.cluster.vip_survey = lambda: VipSurvey(tuple(holders()), unasked)
    return watch


def recorded_watch(samples, *, max_gap: float = 1.0) -> VipWatch:
    """A watch that took samples (when, holders, unasked) and stopped (no thread)."""
    watch = VipWatch(Deployment(), max_gap=max_gap)
    watch.samples = [(t, VipSurvey(tuple(holders), unasked)) for t, holders, unasked in samples]
    watch._stop.set()
    return watch


def test_a_vip_watch_covering_the_window_has_no_problem():
    watch = vip_watch(lambda: ["server1"]).start()   # start() returns once it has sampled
    start = end = time.time()
    watch.stop()
    assert watch.problems(start, end) == []
    assert watch.last_sample_at >= end and watch.describe()["samples"] >= 2


def test_a_vip_watch_whose_thread_died_is_a_problem():
    def broken():
        raise ValueError("ip printed garbage")
    watch = vip_watch(broken).start()
    watch.stop()
    problems = watch.problems(time.time() - 1, time.time())
    assert flagged(problems, "the VIP watch died after 0 samples: ValueError: ip printed garbage"), problems
    assert flagged(problems, "took no sample"), problems
    assert watch.max_holders() == 0   # what it would have passed with


def test_a_vip_watch_that_started_late_or_stopped_early_is_a_problem():
    window_start = time.time()
    watch = vip_watch(lambda: ["server1"]).start()
    watch.stop()
    window_end = time.time() + 5
    problems = watch.problems(window_start, window_end)
    assert flagged(problems, "first sample came"), problems
    assert flagged(problems, "last sample came"), problems


def test_a_vip_watch_stuck_in_a_sample_is_a_problem(monkeypatch):
    release = threading.Event()
    watch = vip_watch(lambda: release.wait(10) and ["server1"])
    monkeypatch.setattr("haconform.faults.checker.BOUNDS", type("B", (), {"command": 0.2, "cli_query": 0.2})())
    watch._thread.start()
    watch.stop()
    try:
        assert flagged(watch.problems(time.time() - 1, time.time()), "did not stop"), watch.problems(0, 0)
    finally:
        release.set()


def test_a_sampling_gap_inside_the_fault_window_longer_than_the_bound_is_could_not_look():
    # samples every 0.5 s, then nothing from 12.0 to 15.0: a second holder at 13 would have passed unseen
    times = [10.0, 10.5, 11.0, 11.5, 12.0, 15.0, 15.5, 16.0]
    watch = recorded_watch([(t, ["server1"], {}) for t in times], max_gap=2.0)
    assert watch.problems(10.0, 16.0) == [
        "the VIP watch could not look for 3.00s inside the fault window (+2.00s to +5.00s from its start), "
        "longer than bound 2.0 s"]
    assert watch.problems(12.5, 14.5) != []          # inside the gap: the samples around it bound it
    assert watch.problems(15.0, 16.0) == []          # the same gap, outside this window
    assert watch.longest_gap_s() == 3.0


def test_a_sample_with_a_director_not_asked_is_a_gap_not_a_non_holder():
    asked_none = {"server4": "server4 could not be asked whether it holds 172.25.5.100: ssh timed out"}
    samples = [(10.0, ["server1"], {}), (10.5, ["server1"], {})] + \
              [(11.0 + i * 0.5, ["server1"], asked_none) for i in range(6)] + [(14.0, ["server1"], {})]
    watch = recorded_watch(samples, max_gap=2.0)
    problems = watch.problems(10.0, 14.0)
    assert problems == [
        "the VIP watch could not look for 3.50s inside the fault window (+0.50s to +4.00s from its start), "
        f"longer than bound 2.0 s; a director could not be asked: {asked_none}"]
    assert watch.max_holders() == 1 and watch.describe()["incomplete_samples"] == 6


def booted_watch(server4_boots: list[str | None], server4_holds_after: bool = False) -> VipWatch:
    """server1 holds the VIP throughout; server4 answers with the boot ids given (None: not asked), one sample
    every 0.5 s from 10.0; its first answer after the silence holds the VIP when server4_holds_after."""
    samples, silent_seen = [], False
    for i, boot in enumerate(server4_boots):
        silent_seen = silent_seen or boot is None
        holders = ("server1",) + (("server4",) if boot and silent_seen and server4_holds_after else ())
        samples.append((10.0 + i * 0.5, VipSurvey(holders, {} if boot else {"server4": "ssh timed out"},
                                                   {"server1": "b1", **({"server4": boot} if boot else {})})))
    watch = VipWatch(Deployment(), max_gap=1.0)
    watch.samples = samples
    watch._stop.set()
    return watch


def test_a_director_silent_while_it_reboots_held_nothing_when_its_new_kernel_holds_nothing():
    watch = booted_watch(["old", "old", None, None, None, None, None, "new", "new"])
    assert watch.problems(10.0, 14.0) == []
    assert watch.describe()["rebooting_samples"] == 5 and watch.describe()["incomplete_samples"] == 5


def test_a_director_silent_and_back_with_the_same_kernel_is_a_gap():
    watch = booted_watch(["old", "old", None, None, None, None, None, "old", "old"])
    assert [p.split(" inside")[0] for p in watch.problems(10.0, 14.0)] == ["the VIP watch could not look for 3.00s"]


def test_a_rebooted_director_holding_the_vip_at_its_first_answer_is_a_gap():
    watch = booted_watch(["old", "old", None, None, None, None, None, "new", "new"], server4_holds_after=True)
    assert [p.split(" inside")[0] for p in watch.problems(10.0, 14.0)] == ["the VIP watch could not look for 3.00s"]
    assert watch.max_holders() == 2


def test_a_director_still_silent_when_the_watch_ends_is_a_gap():
    watch = booted_watch(["old", "old", None, None, None, None, None])
    assert watch.problems(10.0, 13.0) != []


def test_a_director_known_down_then_silent_then_back_was_rebooting():
    # crashed (the power control says so: no boot id, not unasked), fenced and booting (silent), back
    watch = booted_watch(["old", None, None, None, None, "new"])
    known_down = watch.samples[1][1]
    watch.samples[1] = (watch.samples[1][0], VipSurvey(known_down.holders, {}, {"server1": "b1"}))
    assert watch.problems(10.0, 12.5) == []


def test_a_gap_within_the_bound_is_no_problem():
    watch = recorded_watch([(t, ["server4"], {}) for t in (10.0, 10.9, 11.8, 12.7)], max_gap=1.0)
    assert watch.problems(10.0, 12.7) == []


def test_the_gap_bound_defaults_to_the_timeouts_table(monkeypatch):
    monkeypatch.setattr("haconform.faults.checker.BOUNDS", type("B", (), {"vip_watch_gap": 0.4})())
    watch = VipWatch(Deployment())
    watch.samples = [(t, VipSurvey(("server1",))) for t in (0.0, 0.3, 0.9)]
    watch._stop.set()
    assert [p.split(" inside")[0] for p in watch.problems(0.0, 0.9)] == ["the VIP watch could not look for 0.60s"]


# ----- audit() with a run ----------------------------------------------------------------------

def test_audit_says_what_the_run_could_not_see():
    deployment = Deployment()
    run = observed(deployment)
    deployment.machine("server1").write(REAL_ERROR)
    run.mark("observing ends")
    problems = audit(deployment, run=run)
    assert flagged(problems, "the VIP watch took no sample"), problems
    assert flagged(problems, "log error: server1:"), problems


def test_audit_refuses_excused_lines_given_as_bare_patterns():
    with pytest.raises(HaconformError, match="ExcusedLogLine objects"):
        audit(Deployment(), excused_lines=(r"apply_v2_patchset",))


@pytest.mark.parametrize("line, daemon", [
    (REJOIN, "pacemaker-fenced"),
    (STONITH_MISSING, "pacemaker-schedulerd"),
    ("Nov 30 00:34:30 [509] server1 corosync error   [KNET  ] link: host: 2 link: 0 is down", "corosync"),
    ("2025-11-26T11:41:01.210000+08:00 server1 pacemaker-fenced[808]:  notice: Requesting peer fencing", "pacemaker-fenced"),
    ("Nov 30 00:34:56  IPaddr2(VIP)[1093]:    INFO: Bringing device eth0 up", "IPaddr2(VIP)"),
    ("no layout at all", None),
])
def test_the_daemon_of_a_line_in_each_layout(line, daemon):
    from haconform.patterns import daemon_of
    assert daemon_of(line) == daemon


# ----- an excused line whose consequence must heal (CTS: the evidence and the end state) -------------

# What a fenced TCG guest logged while it booted again (nightly F, 2026-11-30, server4's pacemaker.log):
# the controller joined before pacemaker-attrd accepted connections; attrd wrote #feature-set 1.8 s later.
ATTRD_REFUSED = ("Nov 30 07:40:25.452 server4 pacemaker-controld  [322] (connect_and_send_attrd_request) \terror: "
                 "Could not connect to attrd: Connection refused")
FEATURE_SET_REFUSED = ("Nov 30 07:40:25.476 server4 pacemaker-controld  [322] (update_attrd) \terror: Could not "
                       "update attribute #feature-set=3.16.1 for cluster node server4: Connection refused | rc=111")


def test_transient_attributes_are_read_per_node_internal_ones_included():
    from haconform.readers.cluster import parse_transient_attributes
    rejoining = parse_transient_attributes(read_sample("pacemaker/cib_status_rejoining.xml"))
    assert rejoining == {"server1": {"#feature-set": "3.16.1"}, "server4": {}}
    assert parse_transient_attributes(read_sample("pacemaker/cib_status_rejoined.xml"))["server4"] == {
        "#feature-set": "3.16.1"}


def rejoin_with_attrd_refused(deployment, cib_status: str):
    """server4 logs the two attrd lines inside a reset's rejoin window; the CIB answers cib_status."""
    for director in deployment.directors:
        director.host.on(re.compile(r"cibadmin --query --scope status"), stdout=read_sample(cib_status))
    run = observed(deployment)
    reset = Reset(deployment)
    reset.injected_at = time.time() - 1
    deployment.machine("server4").write(ATTRD_REFUSED)
    deployment.machine("server4").write(FEATURE_SET_REFUSED)
    run.poll_logs()
    reset.rejoined()
    return run, reset


def test_attrd_not_yet_up_at_rejoin_is_excused_once_the_feature_set_is_recorded():
    deployment = Deployment()
    run, reset = rejoin_with_attrd_refused(deployment, "pacemaker/cib_status_rejoined.xml")
    assert run.log_problems(reset.excused_lines, spec=STAGE5) == []


def test_attrd_not_yet_up_at_rejoin_is_a_problem_when_the_feature_set_never_comes(monkeypatch):
    monkeypatch.setattr("haconform.faults.checker.BOUNDS", type("B", (), {"cluster_settle": 0.3})())
    deployment = Deployment()
    run, reset = rejoin_with_attrd_refused(deployment, "pacemaker/cib_status_rejoining.xml")
    problems = run.log_problems(reset.excused_lines, spec=STAGE5)
    assert len(problems) == 1, problems
    assert "server4 excused only if it came right by itself, and it did not" in problems[0]
    assert "#feature-set of server4 recorded in the CIB's status section" in problems[0]
    assert "Could not connect to attrd" in problems[0] and "#feature-set=3.16.1" in problems[0]


def test_attrd_not_yet_up_outside_a_rejoin_is_news():
    deployment = Deployment()
    run = observed(deployment)
    deployment.machine("server4").write(FEATURE_SET_REFUSED)
    problems = run.log_problems(Reset(deployment).excused_lines, spec=STAGE5)
    assert problems == [f"log error: server4:{PACEMAKER_LOG}: {FEATURE_SET_REFUSED}"]


# ----- a stalled node, as context ----------------------------------------------------------------

# corosync.log as a VM guest wrote it after its machine froze it for nine minutes (nightly, 2026-12-07).
STALLED = ("Dec 07 19:27:25 [3314] server4 corosync warning [MAIN  ] Corosync main process was not scheduled "
           "(@1796671645888) for 544270.0625 ms (threshold is 2400.0000 ms). Consider token timeout increase.")
BRIEF_STALL = STALLED.replace("544270.0625", "2600.5000")


def test_a_stall_is_context_beside_problems_with_the_longest_per_node():
    deployment = Deployment()
    run = observed(deployment)
    deployment.machine("server4").write(BRIEF_STALL, COROSYNC_LOG)
    deployment.machine("server4").write(STALLED, COROSYNC_LOG)
    deployment.machine("server1").write(REAL_ERROR)
    run.mark("observing ends")
    problems = audit(deployment, run=run)
    context = [p for p in problems if p.startswith("context: ")]
    assert context == [p for p in problems[-1:]], "the context comes after the problems it explains"
    assert len(context) == 1 and "corosync on server4 was not scheduled for 544.3 s" in context[0], problems


def test_a_stall_alone_is_no_problem():
    deployment = Deployment()
    run = observed(deployment)
    deployment.machine("server4").write(BRIEF_STALL, COROSYNC_LOG)
    run.poll_logs()
    assert run.log_problems(spec=STAGE4) == []
    assert "corosync on server4 was not scheduled for 2.6 s" in " ".join(stalls(run))
