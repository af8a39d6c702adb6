"""pytest plugin: options, markers, conformance bookkeeping, evidence in reports."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import pytest

from .conformance import requirement_of
from .errors import HaconformError
from .evidence import Evidence
from .guard import APPLY, GRANTED, READ_ONLY, HostGuard
from .restore import EXIT_NOT_RESTORED
from .side_by_side import auto_labs, is_worker, lab_scheduler, side_by_side, worker_id
from .stash import GUARD, SESSION_STOPPED, WORKER_OUTPUTS
from .report.messages import failure_message, skip_message
from .redaction import RedactingStream, install_log_filter, redact, redact_file, redact_obj
from .datafile import read_yaml_mapping
from .wait import record_waits

# Where a checkout keeps the documented configuration, relative to pytest's rootdir.
DOCUMENTED = Path("fixtures") / "documented"
ALGORITHMS = Path("fixtures") / "beyond" / "algorithms"
TOPOLOGY = Path("fixtures") / "topology.yaml"
# The skip this plugin gives a destructive test against an SSH target: the test is left out.
DESTRUCTIVE_LEFT_OUT = "destructive:"
# The evidence table of a test's bounded waits (haconform/wait.py records them).
WAITS_TITLE = "waits: documented figure, allowance, measured"
TRANSCRIPT = "transcript.jsonl"


def access_mode(config) -> str:
    """apply on targets haconform builds; on an existing deployment read-only, or writes within
    grants with --allow-destructive."""
    if config.getoption("--target") != "ssh":
        return APPLY
    return GRANTED if config.getoption("--allow-destructive") else READ_ONLY


def session_guard(config) -> HostGuard:
    """The session's HostGuard: made in pytest_configure, handed to the target, asked around each test."""
    return config.stash[GUARD]


def writes_of(item) -> str | None:
    """What a test changes on a host: "destructive" (faults, cluster state), what its writes_to_host marker
    names, or None for a test that only reads (the verdict counts MUSTs by it)."""
    if item.get_closest_marker("destructive") is not None:
        return "destructive"
    marker = item.get_closest_marker("writes_to_host")
    if marker is not None:
        return str(marker.args[0] if marker.args else marker.kwargs.get("what", ""))
    return None


def grant_for(item) -> str | None:
    """What a test marked destructive or writes_to_host is granted for its own duration (None: nothing)."""
    writes = writes_of(item)
    if writes is None:
        return None
    return f"destructive test {item.nodeid}" if writes == "destructive" else f"{item.nodeid} writes to a host: {writes}"


def pytest_addoption(parser):
    group = parser.getgroup("haconform")
    group.addoption("--target", choices=["lab", "vagrant", "ssh"], default=os.environ.get("HACONFORM_TARGET", "lab"),
                    help="where the topology runs (default: lab, the embedded namespace lab)")
    group.addoption("--lab-name", default=os.environ.get("HACONFORM_LAB", "haconform"),
                    help="name of the namespace lab (default: haconform)")
    group.addoption("--topology", default=os.environ.get("HACONFORM_TOPOLOGY"),
                    help="topology file (default: fixtures/topology.yaml under pytest's rootdir)")
    group.addoption("--config", default=os.environ.get("HACONFORM_CONFIG"),
                    help="directory of the five stages' configurations, laid out like fixtures/documented/ "
                         "(default: fixtures/documented under pytest's rootdir)")
    group.addoption("--algorithms", default=os.environ.get("HACONFORM_ALGORITHMS"),
                    help="directory of the balance-algorithm stages (default: fixtures/beyond/algorithms "
                         "under pytest's rootdir)")
    group.addoption("--stages", choices=["apply", "verify"], default=None,
                    help="apply: put the deployment in each stage a test needs (default on lab/vagrant); "
                         "verify: write nothing, compare the deployment with its declared stage by meaning and "
                         "test its behaviour (default on --target ssh; apply there needs --allow-destructive)")
    group.addoption("--deployment-stage", default=os.environ.get("HACONFORM_DEPLOYMENT_STAGE"),
                    help="with --stages verify on the lab or VMs: the stage the deployment is in (default: the last "
                         "documented stage; "
                         "--target ssh takes the inventory's `stage:`)")
    group.addoption("--names", default=os.environ.get("HACONFORM_NAMES"),
                    help="YAML mapping of the runbook's names to the deployment's own (VIP: WebIP, app: dynamic); "
                         "--target ssh also reads the inventory's `names:`")
    group.addoption("--inventory", default=os.environ.get("HACONFORM_INVENTORY"),
                    help="inventory file for --target ssh")
    group.addoption("--allow-destructive", action="store_true",
                    default=os.environ.get("HACONFORM_ALLOW_DESTRUCTIVE") == "1",
                    help="let destructive suites run against an SSH target")
    group.addoption("--keep-lab", action="store_true", default=os.environ.get("HACONFORM_KEEP_LAB") == "1",
                    help="leave the lab running after the session (default: lab down at the end)")
    group.addoption("--reuse-lab", action="store_true", default=os.environ.get("HACONFORM_REUSE_LAB") == "1",
                    help="use the lab as it is instead of starting from a fresh one (development)")
    group.addoption("--history-dir", default=os.environ.get("HACONFORM_HISTORY"),
                    help="where each run keeps its history (default: results/ under pytest's rootdir)")
    group.addoption("--waivers", default=os.environ.get("HACONFORM_WAIVERS"), metavar="FILE",
                    help="accepted deviations: per MUST, optionally the difference accepted, a reason, an expiry "
                         "(docs/verify-and-waivers.md: Waivers); --target ssh also reads the inventory's "
                         "`waivers:`")


    perf = parser.getgroup("haconform perf", "locust performance runs (pytest perf; tox -e perf)")
    perf.addoption("--perf-users", type=int, default=None, help="locust users (default 20; smoke 10), spread over the classes by weight 6:3:1")
    perf.addoption("--perf-spawn-rate", type=float, default=None, help="users started per second (default 20)")
    perf.addoption("--perf-duration", type=int, default=None,
                   help="seconds of load in each of the direct and VIP phases (default 15; smoke 3)")
    perf.addoption("--perf-reference-duration", type=int, default=None,
                   help="seconds of the one-URL locust phase and of wrk (default 10; smoke 2)")
    perf.addoption("--perf-workers", type=int, default=None,
                   help="locust worker processes in the client host (default: one per CPU the generator may use)")
    perf.addoption("--perf-seed", type=int, default=int(time.time()) % 100000,
                   help="seed of the users' random choices (default: a new one, recorded)")
    perf.addoption("--perf-think", type=float, default=0.0,
                   help="think time per user, seconds (default 0: each user sends as fast as answered)")
    perf.addoption("--perf-fault", choices=["standby", "haproxy-stop", "crash"], default=None,
                   help="a fault injected mid-run in an extra phase through the VIP")
    perf.addoption("--perf-fault-at", type=float, default=10.0, help="seconds into the fault phase (default 10)")
    perf.addoption("--perf-fault-duration", type=int, default=60,
                   help="length of the fault phase, seconds (default 60; haproxy-stop needs ~90)")
    perf.addoption("--perf-python", default=None,
                   help="python with locust in the client host (default: the harness's own where the client host shares "
                         "this machine's files: lab, netns/local hosts; else python3 on the host)")
    perf.addoption("--perf-rate", type=float, default=0.0,
                   help="open loop: requests/s due at fixed intervals in the direct, VIP and fault phases, each "
                        "timed from when it was due (default 0: closed loop)")
    perf.addoption("--perf-timeout", type=float, default=30.0,
                   help="seconds before a request's connect or read fails (default 30)")
    perf.addoption("--perf-placement", default="auto",
                   help="CPUs of the generator and of the directors and real servers: auto (on the lab: the first "
                        "half of the CPUs for locust/wrk, the rest for the SUT), none, or GEN:SUT taskset lists "
                        "such as 0:1")
    perf.addoption("--perf-worker-host", action="append", default=[], metavar="HOST",
                   help="a topology host that runs locust workers too, joining the master on the client host's "
                        "address (repeatable)")
    perf.addoption("--perf-remote-workers", type=int, default=1,
                   help="locust workers in each --perf-worker-host (default 1)")
    perf.addoption("--perf-smoke", action="store_true", help="a ~10 s run that checks the pipeline (CI)")


# logreport gets no config: the session's, from pytest_configure.
_SESSION_CONFIG: dict = {}


def pytest_configure(config):
    _SESSION_CONFIG["config"] = config
    config.addinivalue_line("markers", "conformance(requirement): a conformance test with a stable ID and MUST")
    config.addinivalue_line("markers", "destructive: injects faults or changes cluster state")
    install_log_filter()
    if config.getoption("capture", None) == "no":
        # -s: what tests print goes straight to the terminal, past every report
        sys.stdout = _redacting_stream(config, sys.stdout)
        sys.stderr = _redacting_stream(config, sys.stderr)
    _redact_terminal(config)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    config._haconform_run_dir = Path(config.getoption("--history-dir") or config.rootpath / "results") / stamp
    if is_worker(config):   # side by side: one run, the controller's directory (haconform/side_by_side.py)
        config._haconform_run_dir = Path(config.workerinput["haconform_run_dir"])
    config._haconform_config_dir = _directory(config, "--config", DOCUMENTED)
    config._haconform_algorithms_dir = _directory(config, "--algorithms", ALGORITHMS, required=False)
    # One date for the whole run: a waiver expiring at midnight does not change its mind mid-session.
    config._haconform_today = dt.date.today()
    try:
        _load_inputs(config)
    except HaconformError as exc:
        raise pytest.UsageError(f"haconform: {exc}") from None
    guard = HostGuard(access_mode(config))
    worker = worker_id(config)
    guard.transcript_to(config._haconform_run_dir / (f"transcript.{worker}.jsonl" if worker else TRANSCRIPT))
    config.stash[GUARD] = guard
    config.pluginmanager.import_plugin("haconform.report.plugin")   # verdict.json/html at session end


def _load_inputs(config) -> None:
    """Every input of the run read and validated now, before any test (and so any target) starts: the
    topology, each stage of --config and --algorithms, --names, the inventory.  A bad one ends the run
    here with one line, whichever tests -k selected."""
    from .inventory import load_inventory
    from .stages.catalogue import documented as documented_stages
    from .stages.manager import check_names, load_all_stages, names_defined
    from .topology import load_topology

    if config.getoption("--deployment-stage") is None:
        # Resolved here rather than as the option's default: the stage data is read where a damaged stage.yaml
        # ends the run with one line, not while pytest is still adding options.
        config.option.deployment_stage = documented_stages().last

    given = config.getoption("--topology")
    default = config.rootpath / TOPOLOGY
    # A session of the harness's own tests runs from a directory without a topology: nothing to check then.
    topology = load_topology(given or default) if given or default.exists() else None
    config._haconform_topology = topology
    config._haconform_stages = load_all_stages(config._haconform_config_dir, config._haconform_algorithms_dir,
                                               topology)
    declared = config.getoption("--deployment-stage")
    if config._haconform_stages and declared not in config._haconform_stages:
        raise HaconformError(f"no stage {declared!r} in {config._haconform_config_dir}", where="--deployment-stage",
                             fix=f"use one of {', '.join(config._haconform_stages)}")
    defined = names_defined(config._haconform_stages.values())
    config._haconform_names = _names(config.getoption("--names"))
    if config._haconform_names:
        check_names(config._haconform_names, defined, where=config.getoption("--names"))
    config._haconform_inventory = None
    # Without --inventory, --target ssh fails in make_target (fixtures/deployment.py), still before anything starts.
    if config.getoption("--target") == "ssh" and config.getoption("--inventory"):
        topology = topology or load_topology(default)   # says the file is missing, and the fix
        inventory = load_inventory(config.getoption("--inventory"), topology)
        check_names(inventory.names, defined, where=str(inventory.path), key_prefix="names.")
        config._haconform_inventory = inventory
    config._haconform_waivers = _waivers(config)


def _waivers(config):
    """The inventory's waivers and --waivers', checked against the golden list and the stage data."""
    from .stages.settings import documented_settings
    from .waivers import WaiverSet, check_waivers, load_waiver_file

    inventory = config._haconform_inventory
    waivers = list(inventory.waivers) if inventory is not None else []
    sources = [f"{inventory.path} (waivers:)"] if waivers else []
    given = config.getoption("--waivers")
    if given:
        waivers += load_waiver_file(given)
        sources.append(str(given))
    if not waivers:
        return WaiverSet()
    golden = config.rootpath / "suites" / "conformance.yaml"
    musts = None
    if golden.is_file():
        from .report.verdict import read_golden
        musts = [row["id"] for row in read_golden(golden)]
    settings = {s.key for stage in (config._haconform_stages or {}).values() for s in documented_settings(stage)}
    check_waivers(waivers, musts=musts, settings=settings or None)
    return WaiverSet(waivers, sources)


# ----- sinks pytest writes itself: the terminal, warnings, the files of the session --------------------

def _redacting_stream(config, stream) -> RedactingStream:
    """One RedactingStream per stream: the terminal writer and sys.stdout under -s share the real
    stdout, and one buffer keeps what they write in order."""
    streams: dict[int, RedactingStream] = config.__dict__.setdefault("_haconform_streams", {})
    if isinstance(stream, RedactingStream):
        return stream
    if id(stream) not in streams:
        streams[id(stream)] = RedactingStream(stream)
    return streams[id(stream)]


def _redact_terminal(config) -> None:
    """Everything pytest prints (failures with -l locals, xfail reasons, the warnings summary, live logs)
    passes redact() on its way to the terminal."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    writer = getattr(reporter, "_tw", None)
    if writer is not None and not isinstance(getattr(writer, "_file", None), RedactingStream):
        writer._file = _redacting_stream(config, writer._file)


def pytest_plugin_registered(plugin, manager):
    # The terminal reporter is made in the terminal plugin's pytest_configure, which may run after ours.
    config = getattr(plugin, "config", None)
    if config is not None and manager.get_name(plugin) == "terminalreporter":
        _redact_terminal(config)


@pytest.hookimpl(tryfirst=True)
def pytest_warning_recorded(warning_message, when, nodeid, location):
    """A warning's message redacted before the terminal's warnings summary (or any plugin) reads it."""
    text = str(warning_message.message)
    redacted = redact(text)
    if redacted == text:
        return
    try:
        replacement = warning_message.category(redacted)
    except Exception:   # a warning class with a signature of its own: its text is what is shown
        replacement = redacted
    warning_message.message = replacement if str(replacement) == redacted else redacted


def session_files(config) -> list[Path]:
    """The files this session wrote that may hold text of the tests: JUnit XML, pytest-html, the log
    file, a report log, verdict.json/html and the run's directory (history.jsonl, verdict.json)."""
    invoked = Path(config.invocation_params.dir)
    named = [getattr(config.option, option, None) for option in ("xmlpath", "htmlpath", "report_log")]
    files = [invoked / os.path.expandvars(os.path.expanduser(name)) for name in named if name]
    log_handler = getattr(config.pluginmanager.get_plugin("logging-plugin"), "log_file_handler", None)
    if getattr(log_handler, "baseFilename", None) and log_handler.baseFilename != os.devnull:
        files.append(Path(log_handler.baseFilename))
    verdict = config.pluginmanager.get_plugin("haconform-verdict-report")
    files += list((getattr(verdict, "written", None) or {}).values())
    run_dir = getattr(config, "_haconform_run_dir", None)
    if is_worker(config):
        # Side by side a worker's files are its transcript; the run's directory is the controller's to
        # rewrite (it is appending to history.jsonl while a worker ends).
        guard = config.stash.get(GUARD, None)
        files = [guard.transcript_path] if guard is not None and guard.transcript_path else []
    elif run_dir is not None and run_dir.is_dir():
        files += [path for path in run_dir.rglob("*") if path.is_file()]
    return [path for path in dict.fromkeys(files) if path.is_file()]


# ----- side by side (pytest-xdist; haconform/side_by_side.py) ------------------------------------------

@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    try:
        return auto_labs(config)
    except HaconformError as exc:
        raise pytest.UsageError(f"haconform: {exc}") from None


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    given = getattr(config.option, "numprocesses", None)
    if given not in (None, 0, "auto", "logical") and config.getoption("--target") != "lab":
        raise pytest.UsageError(f"haconform: -n {given}: only the embedded lab can be split into labs side by "
                                f"side; --target {config.getoption('--target')} is one deployment "
                                "(fix: -n 0, or leave -n out)")


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Each lab's tests to one worker, in their order (side_by_side.py: LabScheduling)."""
    return lab_scheduler(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """Each worker writes into the controller's run: one results/<ts>/ for the whole run."""
    node.workerinput["haconform_run_dir"] = str(node.config._haconform_run_dir)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """A worker's part of the verdict (report/plugin.py report_back); a restore it could not complete stops
    the run: the test's history row written here, the session's exit status the one a stop has."""
    config = node.config
    output = (getattr(node, "workeroutput", None) or {}).get("haconform")
    if not output:
        return
    config.stash.setdefault(WORKER_OUTPUTS, []).append(output)
    stopped = output.get("stopped")
    if stopped:
        append_history(config, stopped.get("history") or [])
        config.stash[SESSION_STOPPED] = stopped


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Side by side, a worker whose restore failed stopped the run (xdist: interrupted); its status is the
    one a failed restore gives, as in one process (fixtures/restore.py)."""
    if side_by_side(session.config) and session.config.stash.get(SESSION_STOPPED, None) is not None:
        session.exitstatus = EXIT_NOT_RESTORED


# ----- sinks pytest writes itself: after every plugin has written its files ---------------------------

@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """The last pass, after every plugin has written its files: a secret registered after a report was
    written (late in the session) is masked in it too; then what the terminal holds back is let out."""
    guard = config.stash.get(GUARD, None)
    if guard is not None:
        guard.close_transcript()   # before the pass below, which reads the transcript too
    for path in session_files(config):
        try:
            redact_file(path)
        except OSError as exc:
            print(f"haconform: {path}: could not redact it at the end of the session ({exc})", file=sys.stderr)
    for stream in getattr(config, "_haconform_streams", {}).values():
        stream.drain()
    if isinstance(sys.stdout, RedactingStream):
        sys.stdout = sys.stdout.stream
    if isinstance(sys.stderr, RedactingStream):
        sys.stderr = sys.stderr.stream


def _directory(config, option: str, default: Path, *, required: bool = True) -> Path | None:
    """An explicit directory, else the checkout's (pytest's rootdir); the package itself holds no data."""
    given = config.getoption(option)
    path = Path(given) if given else config.rootpath / default
    if given and not path.is_dir():
        raise pytest.UsageError(f"{option} {given}: not a directory (fix: pass a directory laid out like "
                                f"{default} of a haconform checkout)")
    if not path.is_dir():
        if required:
            raise pytest.UsageError(f"{option}: no {default} under {config.rootpath} (fix: run from a haconform "
                                    f"checkout, or pass {option} DIR laid out like {default})")
        return None
    return path


def _names(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    data = read_yaml_mapping(Path(path), missing_fix="pass --names with an existing file",
                             layout="docs/verify-and-waivers.md (Verify by meaning)", option="--names")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise HaconformError("names must map the runbook's names to the deployment's", where=path,
                             fix="write e.g. `VIP: WebIP`")
    return data


def pytest_collection_modifyitems(session, config, items):
    seen: dict[str, str] = {}
    problems = []
    for item in items:
        requirement = requirement_of(item)
        in_suites = "suites" in Path(str(item.fspath)).parts
        if in_suites and requirement is None:
            problems.append(f"{item.nodeid}: suite test without @conformance(...)")
            continue
        if requirement is None:
            continue
        if requirement.id in seen and seen[requirement.id] != item.originalname:
            problems.append(f"{requirement.id} used by both {seen[requirement.id]} and {item.nodeid}")
        seen[requirement.id] = item.originalname
        item.user_properties.append(("conformance_id", requirement.id))
        item.user_properties.append(("must", requirement.must))
        item.user_properties.append(("runbook_section", requirement.section))
        item.user_properties.append(("stage", requirement.stage))
    if problems:
        raise pytest.UsageError("conformance metadata:\n  " + "\n  ".join(problems))

    target = config.getoption("--target")
    if target == "ssh" and not config.getoption("--allow-destructive"):
        skip = pytest.mark.skip(reason=f"{DESTRUCTIVE_LEFT_OUT} left out against an SSH target without --allow-destructive")
        for item in items:
            if item.get_closest_marker("destructive"):
                item.add_marker(skip)


@pytest.fixture
def evidence(request) -> Evidence:
    """What this test saw; rendered into the HTML report and the run history."""
    ev = Evidence(request.node.nodeid)
    request.node._haconform_evidence = ev
    return ev


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Every bounded wait of the test (setup, call, teardown) is recorded for its evidence; the guard
    knows which test runs, and a test marked destructive or writes_to_host holds its grant throughout
    (on a target haconform built every write is allowed anyway; read-only runs skip such tests)."""
    item._haconform_waits = []
    record_waits(item._haconform_waits)
    guard = session_guard(item.config)
    item._haconform_refusals_seen = len(guard.refusals)
    grant = grant_for(item) if guard.mode == GRANTED else None
    try:
        with guard.running(item.nodeid), (guard.grant(grant) if grant else contextlib.nullcontext()):
            yield
    finally:
        record_waits(None)


def refused_during(item, report) -> bool:
    """A phase that passed although the guard refused something in it (the test caught ReadOnlyRefused,
    or a helper swallowed it) fails: a refusal is never a pass.  True when the guard refused anything."""
    guard = session_guard(item.config)
    seen = getattr(item, "_haconform_refusals_seen", len(guard.refusals))
    new = guard.refusals[seen:]
    item._haconform_refusals_seen = len(guard.refusals)
    if not new or report.failed:
        return bool(new)
    if report.skipped and report.when == "setup":
        return True
    report.outcome = "failed"
    report.longrepr = ("ReadOnlyRefused: the guard refused " + "; ".join(
        f"{r['action']} on {r['host']} ({r['why']})" for r in new)
        + " — the test went on as if nothing was refused, so it cannot pass")
    return True


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:g} s"


def wait_row(record: dict) -> dict:
    """One wait as the evidence shows it: the documented figure, the allowance (base × factor), the bound
    they make, and the time the condition took (or that it did not hold)."""
    if record["base_s"] is None:
        allowance = "— (a bound not from haconform.timeouts)"
    else:
        allowance = f"{record['allowance_s']:g} s ({record['base_s']:g} s × {record['factor']:.2f})"
    return {"phase": record.get("phase", ""), "condition": record["condition"], "figure": record["name"] or "—",
            "documented": _seconds(record["documented_s"] or None), "allowance": allowance,
            "bound": f"{record['bound_s']:.1f} s", "measured": f"{record['elapsed_s']:.2f} s",
            "outcome": record["outcome"]}


def _add_waits(item, report, requirement, ev: Evidence | None) -> Evidence | None:
    """The waits since the last table, as one table: at the call, or at the phase that ended the test."""
    waits = getattr(item, "_haconform_waits", None) or []
    for record in waits:
        record.setdefault("phase", report.when)
    shown = getattr(item, "_haconform_waits_shown", 0)
    if len(waits) <= shown or (report.when == "setup" and report.passed):
        return ev   # a passed setup's waits go into the call's table
    if ev is None:
        if requirement is None:
            return None
        ev = item._haconform_evidence = Evidence(item.nodeid)
    item._haconform_waits_shown = len(waits)
    ev.table(WAITS_TITLE, [wait_row(record) for record in waits[shown:]])
    return ev


# Outermost wrapper (tryfirst): its code after the yield runs after every other plugin's, so what
# pytest-html, JUnit and the terminal read from the report is already redacted.
@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    refused = refused_during(item, report)
    requirement = requirement_of(item)
    ev = _add_waits(item, report, requirement, getattr(item, "_haconform_evidence", None))
    if report.when == "call":
        _add_html_extras(report, requirement, ev)
    redact_report(report)
    report.haconform_waiver = apply_waivers(item, call, report, requirement, refused=refused)
    # What the verdict and the history need of the test travels with its report: side by side, only the
    # controller sees every report, and it alone writes the run's files (haconform/side_by_side.py).
    report.haconform_requirement = requirement.__dict__ if requirement else None
    report.haconform_writes = writes_of(item)
    row = history_row(item, report, requirement, ev)
    report.haconform_history = [history_line(row)] if row is not None else []


def waived_text(judgement: dict) -> str:
    """The skip reason of a waived case (JUnit's <skipped message>, the terminal): the waiver, in a line."""
    parts = []
    for waiver in judgement["waivers"]:
        ticket = f"; ticket {waiver['ticket']}" if waiver.get("ticket") else ""
        accepted = (f"{waiver['difference']['key']} = {waiver['difference']['found']}" if waiver["difference"]
                    else "any failure of its checks")
        parts.append(f"{waiver['reason']} (accepts {accepted}{ticket}; expires {waiver['expires']}, "
                     f"{waiver['days_left']} day(s) left; {waiver['source']})")
    return f"waived: {judgement['must']} failed only as its waiver accepts: " + " · ".join(parts)


def apply_waivers(item, call, report, requirement, *, refused: bool) -> dict | None:
    """A failed call of a MUST that has waivers, judged (haconform/waivers.py): waived, it is reported as
    skipped with the waiver as its reason (JUnit, the terminal) and the failure kept in the history and
    the verdict; broken, its failure says why no waiver accepted it (an expired one: "waiver expired on")."""
    waivers = getattr(item.config, "_haconform_waivers", None)
    if not waivers or requirement is None or report.when != "call" or not report.failed:
        return None
    today = item.config._haconform_today
    # A refused write failed the test from outside it: never the test's own finding, never waived.
    failure = None if refused or call.excinfo is None else call.excinfo.value
    judgement = waivers.judge(requirement.id, failure, today)
    if judgement is None:
        return None
    found = {**judgement.to_json(today), "must": requirement.id, "failure": failure_message(report)}
    if judgement.outcome == "waived":
        report.outcome = "skipped"
        report.longrepr = (str(item.path), (item.location[1] or 0) + 1, redact(waived_text(found)))
    else:
        report.longrepr = f"{report.longrepr}\n\nhaconform: {redact(judgement.note)}"
    return redact_obj(found)


def history_line(row: dict) -> str:
    return redact(json.dumps(redact_obj(row), default=str, ensure_ascii=False))


def append_history(config, lines: list[str]) -> None:
    if not lines:
        return
    run_dir: Path = config._haconform_run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "history.jsonl", "a", encoding="utf-8") as fh:
        fh.writelines(line + "\n" for line in lines)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report):
    """Where reports arrive (the controller side by side, the one process otherwise): the test's history
    rows written."""
    config = _SESSION_CONFIG.get("config")
    if config is None or is_worker(config):
        return
    append_history(config, getattr(report, "haconform_history", None) or [])


def stop_session(item, message: str, evidence: dict) -> None:
    """Before pytest.exit ends the session from a test's teardown (which then gets no report): the test's
    history row says what happened, and the verdict says why the session stopped."""
    requirement = requirement_of(item)
    ev = getattr(item, "_haconform_evidence", None) or Evidence(item.nodeid)
    ev.data("the session stopped here: what the restore found, did and did not put back", evidence)
    written = getattr(item, "_haconform_evidence_written", 0)
    nodeid = item.nodeid
    row = {"nodeid": nodeid, "phase": "teardown", "outcome": "error", "reason": f"teardown: {message}",
           "duration": None, "requirement": requirement.__dict__ if requirement else None,
           "evidence": ev.to_json()[written:], "stopped_session": True}
    stopped = redact_obj({"test": nodeid, "message": message, "evidence": evidence, "history": [history_line(row)]})
    item.config.stash[SESSION_STOPPED] = stopped
    if is_worker(item.config):
        # The controller writes the row and stops the run when this worker reports back (its workeroutput);
        # shouldstop is what xdist reads there to stop handing out tests.
        item.session.shouldstop = f"haconform: {message}"
        return
    append_history(item.config, stopped["history"])


def redact_report(report) -> None:
    """Everything a report carries as text, redacted: failure or skip text (with -l's locals), the
    xfail reason, the captured stdout/stderr/log of each phase (report.capstdout/caplog/... derive from
    sections), user properties (JUnit writes them) and pytest-html extras."""
    if isinstance(getattr(report, "wasxfail", None), str):
        report.wasxfail = redact(report.wasxfail)
    if isinstance(report.longrepr, tuple):   # a skip: (path, line, reason), kept a tuple for JUnit
        report.longrepr = (*report.longrepr[:2], redact(str(report.longrepr[2])))
    elif report.longrepr is not None:
        report.longrepr = redact(str(report.longrepr))
    report.sections = [(title, redact(content)) for title, content in report.sections]
    report.user_properties = [(name, redact_obj(value)) for name, value in report.user_properties]
    for attribute in ("extras", "extra"):
        if getattr(report, attribute, None):
            setattr(report, attribute, redact_obj(list(getattr(report, attribute))))


def _add_html_extras(report, requirement, ev: Evidence | None) -> None:
    header = ""
    if requirement:
        header = (f"<p><b>{requirement.id}</b> — {requirement.must}<br>"
                  f"runbook: {requirement.section} ({requirement.stage})</p>")
    try:
        from pytest_html import extras
    except ImportError:
        return
    if ev or header:
        report.extras = getattr(report, "extras", []) + [extras.html(header + (ev.to_html() if ev else ""))]


def _left_out_reason(config, report) -> str | None:
    """The reason a skipped test was left out against this target, else None.

    fixtures/left_out.py (loaded by the checkout's conftest.py) decides which skips mean "left out"
    (destructive, verify-only, ...), and writes the history row of such a skip in setup itself."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return None
    plugin = config.pluginmanager.get_plugin("haconform-left-out")
    judge = getattr(sys.modules.get(type(plugin).__module__), "left_out_reason", None) if plugin else None
    if judge is not None:
        return judge(report)
    reason = skip_message(report)
    return reason if reason.startswith(DESTRUCTIVE_LEFT_OUT) else None


def history_row(item, report, requirement, ev: Evidence | None) -> dict | None:
    """The history.jsonl row of one phase of a conformance test (or one with evidence), else None.

    Every call has a row; setup and teardown have one unless they simply passed, so a test that never
    reached its call (a stage that would not apply, a missing `stats auth`) or whose restore failed in
    teardown is in the history too.  `reason` says why (failure message, skip or xfail reason)."""
    if ev is None and requirement is None:
        return None
    if report.when != "call" and report.passed:
        return None
    left_out = _left_out_reason(item.config, report)
    if left_out and report.when == "setup" and item.config.pluginmanager.has_plugin("haconform-left-out"):
        return None
    outcome, reason = report.outcome, None
    waiver = getattr(report, "haconform_waiver", None)
    if waiver is not None and waiver["outcome"] == "waived":
        outcome, reason = "waived", waiver["failure"]
    elif hasattr(report, "wasxfail"):   # an expected failure is a finding, not a skip
        outcome = "xfailed" if report.skipped else "xpassed"
        reason = redact(report.wasxfail) or None
    elif report.failed:
        outcome = "failed" if report.when == "call" else "error"
        reason = failure_message(report)
    elif report.skipped:
        reason = skip_message(report)
    if report.failed and report.when != "call":   # as the session's verdict says it (report/plugin.py)
        reason = f"{report.when}: {reason}"
    # Each evidence item goes into one row only: the rows of one test are merged when read.
    written = getattr(item, "_haconform_evidence_written", 0)
    evidence = ev.to_json()[written:] if ev else []
    if ev:
        item._haconform_evidence_written = len(ev.items)
    row = {"nodeid": item.nodeid, "phase": report.when, "outcome": outcome, "reason": reason,
           "duration": report.duration, "requirement": requirement.__dict__ if requirement else None,
           "evidence": evidence}
    if left_out:
        row["left_out"] = left_out   # the key fixtures/left_out.py writes and report/verdict.py reads
    if waiver is not None:
        row["waiver"] = waiver
    if writes_of(item):
        row["writes"] = writes_of(item)
    return row
