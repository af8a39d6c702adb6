"""haconform/calibration.py: probes timed inside each host, the slowest host per category, factors within
[1, CEILING], HACONFORM_CALIBRATION=off, a probe that cannot run named with its host; and the calibration
in verdict.json and verdict.html."""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from haconform import calibration as cal
from haconform.calibration import (PROBES, REPEATS, Calibration, CalibrationError, Probe, ProbeResult, calibrate,
                                   load_reference, parse_timed, probed_machines, run_probe, timed_command)
from haconform.errors import HaconformError
from haconform.report.html import render_verdict_html
from haconform.report.verdict import build_verdict
from haconform.timeouts import BOUNDS, CATEGORIES, CEILING, SCALED, set_calibration

REFERENCE = {"measured_at": "2026-01-01T00:00:00+00:00", "measured_on": "a test", "note": "made up",
             "probes": {"fork_exec": 0.1, "python_imports": 0.05, "ocf_meta_data": 0.01, "php_cli": 0.02,
                        "transport": 0.01}}


@pytest.fixture(autouse=True)
def calibration_on(monkeypatch):
    monkeypatch.delenv(cal.ENV, raising=False)
    yield
    set_calibration(None)


class FakeMachine:
    """A host whose probes take the given seconds (each run), `true` taking transport_s through the transport."""

    def __init__(self, name, role, seconds=None, *, transport_s=0.0, fail=None):
        self.name, self.role = name, role
        self.seconds = seconds or {}
        self.transport_s = transport_s
        self.fail = fail or {}            # probe name -> result or exception
        self.commands: list[str] = []

    def execute(self, command):
        self.commands.append(command)
        if self.role not in ("director", "realserver"):
            raise AssertionError(f"{self.name} ({self.role}) must not be probed")
        if command == "true":
            if "transport" in self.fail:
                raise self.fail["transport"]
            time.sleep(self.transport_s)
            return SimpleNamespace(rc=0, stdout="", stderr="")
        timeout, bound, shell, flag, script = shlex.split(command)
        assert (timeout, bound, shell, flag) == ("timeout", "120", "/bin/sh", "-c"), command
        probe = next(p for p in PROBES if p.command and p.command in script)
        failure = self.fail.get(probe.name)
        if isinstance(failure, Exception):
            raise failure
        if failure is not None:
            return failure
        runs = self.seconds.get(probe.name, [0.001] * REPEATS)
        return SimpleNamespace(rc=0, stdout="".join(f"ns {int(s * 1e9)}\n" for s in runs), stderr="")


def lab_hosts(**overrides):
    hosts = {"server1": FakeMachine("server1", "director"), "server4": FakeMachine("server4", "director"),
             "server2": FakeMachine("server2", "realserver"), "server3": FakeMachine("server3", "realserver"),
             "client": FakeMachine("client", "client"), "foundation5": FakeMachine("foundation5", "fence")}
    hosts.update(overrides)
    return hosts


# ----- measuring ------------------------------------------------------------------------------------

def test_the_slowest_host_counts_per_category():
    hosts = lab_hosts(
        server1=FakeMachine("server1", "director", {"fork_exec": [0.1, 0.5, 0.12], "python_imports": [0.1] * 3}),
        server4=FakeMachine("server4", "director", {"fork_exec": [0.2, 0.25, 0.3], "ocf_meta_data": [0.03] * 3}),
        server3=FakeMachine("server3", "realserver", {"php_cli": [0.5, 0.04, 0.06]}))
    result = calibrate(hosts.values(), reference=REFERENCE)
    probes = {p.name: p for p in result.probes}
    assert probes["fork_exec"].per_host["server1"] == 0.12 and probes["fork_exec"].slowest_host == "server4"
    assert probes["fork_exec"].measured_s == 0.25 and probes["fork_exec"].ratio == pytest.approx(2.5)
    assert set(probes["fork_exec"].runs) == {"server1", "server4", "server2", "server3"}
    assert set(probes["python_imports"].runs) == {"server1", "server4"}
    assert set(probes["php_cli"].runs) == {"server2", "server3"}
    factors = result.factors
    assert factors["process"] == pytest.approx(2.5)
    assert factors["python"] == pytest.approx(2.0)
    assert factors["agent"] == pytest.approx(3.0)
    assert factors["php"] == pytest.approx(3.0)     # the median 0.06 over 0.02: one slow run does not count
    assert not any(result.capped.values()) and result.enabled
    assert not hosts["client"].commands and not hosts["foundation5"].commands


def test_a_factor_is_never_below_one_nor_above_the_ceiling():
    hosts = lab_hosts(server2=FakeMachine("server2", "realserver", {"php_cli": [1.0] * 3}, transport_s=0.05))
    result = calibrate(hosts.values(), reference=REFERENCE)
    assert result.ratios["php"] == pytest.approx(50.0) and result.factors["php"] == CEILING
    assert result.capped["php"] and "php ×4.00 (capped; ratio 50.00)" in result.summary()
    assert result.ratios["transport"] >= 5 and result.factors["transport"] == CEILING and result.capped["transport"]
    assert result.ratios["process"] < 1 and result.factors["process"] == 1.0 and not result.capped["process"]
    set_calibration(result)
    assert BOUNDS.http_request == 5.0 * CEILING and BOUNDS.log_line == 10.0 * CEILING
    assert BOUNDS.service_start == 20.0 and BOUNDS.probe_request == 1.0


def test_a_probe_that_fails_names_its_host_and_probe():
    failed = SimpleNamespace(rc=127, stdout="", stderr="sh: 1: php: not found")
    hosts = lab_hosts(server3=FakeMachine("server3", "realserver", fail={"php_cli": failed}))
    with pytest.raises(CalibrationError, match=r"probe php_cli on server3: exit 127; stderr: .*php: not found"):
        calibrate(hosts.values(), reference=REFERENCE)


def test_a_host_that_cannot_run_true_is_an_error_not_factor_one():
    hosts = lab_hosts(server4=FakeMachine("server4", "director", fail={"transport": OSError("connection refused")}))
    with pytest.raises(CalibrationError, match="probe transport on server4: OSError: connection refused"):
        calibrate(hosts.values(), reference=REFERENCE)
    unparsable = SimpleNamespace(rc=0, stdout="ns 1700000000%N\n", stderr="")
    hosts = lab_hosts(server1=FakeMachine("server1", "director", fail={"fork_exec": unparsable}))
    with pytest.raises(CalibrationError, match="probe fork_exec on server1: exit 0"):
        calibrate(hosts.values(), reference=REFERENCE)


def test_calibration_off_keeps_every_factor_at_one(monkeypatch):
    monkeypatch.setenv(cal.ENV, "off")
    hosts = lab_hosts(server1=FakeMachine("server1", "director", fail={"fork_exec": OSError("must not run")}))
    result = calibrate(hosts.values(), reference=REFERENCE)
    assert not result.enabled and result.off_reason == "HACONFORM_CALIBRATION=off"
    assert result.factors == {c: 1.0 for c in CATEGORIES} and not hosts["server1"].commands
    assert result.summary().startswith("calibration off (HACONFORM_CALIBRATION=off)")
    assert result.to_json()["enabled"] is False
    monkeypatch.setenv(cal.ENV, "of")
    with pytest.raises(HaconformError, match="HACONFORM_CALIBRATION"):
        calibrate(hosts.values(), reference=REFERENCE)


def test_the_timed_command_runs_in_a_shell_and_a_failing_probe_is_seen():
    class ThisShell:
        name, role = "local", "director"

        def execute(self, command):
            done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=30)
            return SimpleNamespace(rc=done.returncode, stdout=done.stdout, stderr=done.stderr)

    runs = run_probe(ThisShell(), Probe("quick", "process", ("director",), "true", "test"))
    assert len(runs) == REPEATS and all(0 <= r < 5 for r in runs)
    with pytest.raises(CalibrationError, match="probe failing on local: exit 3"):
        run_probe(ThisShell(), Probe("failing", "process", ("director",), "exit 3", "test"))
    assert timed_command(PROBES[0]).startswith("timeout 120 /bin/sh -c ")


def test_parse_timed_wants_every_run():
    assert parse_timed("ns 1000000\nns 2000000\nns 3000000\n") == [0.001, 0.002, 0.003]
    assert parse_timed("ns 1000000\nns 2000000\n") is None
    assert parse_timed("ns -5\nns 1\nns 1\n") is None


def test_a_target_s_directors_and_real_servers_are_probed():
    from haconform.targets.lab import LabTarget
    from haconform.topology import load_topology

    topology = load_topology(Path(__file__).parent.parent / "fixtures" / "topology.yaml")
    machines = probed_machines(LabTarget(topology, "caltest"))
    assert sorted(m.name for m in machines) == ["server1", "server2", "server3", "server4"]


def test_the_checked_in_reference_has_every_probe(tmp_path):
    reference = load_reference()
    assert set(reference["probes"]) == {p.name for p in PROBES}
    assert reference["measured_at"] and reference["measured_on"]
    text = cal.REFERENCE_FILE.read_text().replace("  php_cli:", "  php_old:")
    (tmp_path / "reference.yaml").write_text(text)
    with pytest.raises(CalibrationError, match="no reference figure for php_cli"):
        load_reference(tmp_path / "reference.yaml")


# ----- the report -----------------------------------------------------------------------------------

def capped_calibration() -> Calibration:
    probes = [ProbeResult("fork_exec", "process", 0.1, {"server1": [0.2] * 3, "server4": [0.15] * 3}),
              ProbeResult("php_cli", "php", 0.02, {"server2": [0.5] * 3})]
    return Calibration(enabled=True, probes=probes, reference=REFERENCE, took_s=4.2)


def test_the_json_has_probes_categories_and_allowances():
    data = capped_calibration().to_json()
    assert data["ceiling"] == CEILING and data["reference"]["measured_on"] == "a test"
    (fork, php) = data["probes"]
    assert fork["measured_s"] == 0.2 and fork["slowest_host"] == "server1" and fork["ratio"] == 2.0
    categories = {c["category"]: c for c in data["categories"]}
    assert categories["php"]["factor"] == CEILING and categories["php"]["capped"] is True
    assert categories["php"]["ratio"] == 25.0 and categories["php"]["fields"] == ["http_request"]
    assert categories["python"]["ratio"] is None and categories["python"]["factor"] == 1.0
    allowances = {a["field"]: a for a in data["allowances"]}
    assert set(allowances) == set(SCALED) | {"MARGIN"}
    assert allowances["http_request"] == {"field": "http_request", "category": "php", "base_s": 5.0,
                                          "hang_guard": False, "factor": CEILING, "applied_s": 20.0}
    assert allowances["MARGIN"]["applied_s"] == 30.0 and "probe_request" in data["not_scaled"]


def test_the_verdict_carries_and_shows_the_calibration():
    record = {"nodeid": "suites/test_x.py::test_x", "outcome": "passed", "reason": None, "left_out": False,
              "duration": 1.0, "evidence": [], "properties": {},
              "requirement": {"id": "HAC-X-001", "must": "It MUST hold", "section": "HA", "stage": "stage4"}}
    calibration = capped_calibration().to_json()
    verdict = build_verdict([record], calibration=calibration)
    assert verdict["calibration"] == calibration
    page = render_verdict_html(verdict, [record])
    assert "<section id='calibration'>" in page and "(<a href='#calibration'>details</a>)" in page
    section = page[page.index("<section id='calibration'>"):page.index("<section id='evidence'>")]
    assert "<td>php_cli</td>" in section and "<b>0.5 s</b>" in section and "<td>25.00</td>" in section
    assert "capped at ×4" in section and "<code>resource_move</code>" in section and "<b>20 s</b>" in section
    assert "made up" in section and "<code>probe_request</code>" in section
    assert build_verdict([record])["calibration"] is None
    assert "not recorded in this run" in render_verdict_html(build_verdict([record]), [record])


def test_a_ratio_within_the_lab_s_own_spread_counts_as_one():
    # 1.2 x the reference: what the lab itself measures host to host; 1.3: a slower target
    hosts = lab_hosts(server1=FakeMachine("server1", "director", {
        "fork_exec": [REFERENCE["probes"]["fork_exec"] * 1.2] * 3,
        "python_imports": [REFERENCE["probes"]["python_imports"] * 1.3] * 3}))
    result = calibrate(hosts.values(), reference=REFERENCE)
    assert result.ratios["process"] == pytest.approx(1.2, rel=1e-3) and result.factors["process"] == 1.0
    assert result.ratios["python"] == pytest.approx(1.3, rel=1e-3) and result.factors["python"] == pytest.approx(1.3, rel=1e-3)
    assert cal.NOISE == 1.25


# ----- beyond the ceiling: hang guards stretch, MUST allowances stay capped; far beyond, a refusal -----

def slow_python_calibration(ratio: float) -> Calibration:
    """pcs's language ratio times slower than the lab (the fresh machine's TCG guests measured 31 to 91)."""
    probes = [ProbeResult("python_imports", "python", 0.1, {"server1": [0.1 * ratio] * 3}),
              ProbeResult("fork_exec", "process", 0.1, {"server1": [0.3] * 3})]
    return Calibration(enabled=True, probes=probes, reference=REFERENCE, took_s=1.0)


def test_hang_guards_scale_with_the_ratio_beyond_the_ceiling_and_the_verdict_says_so():
    calibration = slow_python_calibration(31.0)
    assert calibration.factors["python"] == CEILING and calibration.hang_factors["python"] == pytest.approx(31.0)
    set_calibration(calibration)
    try:
        assert float(BOUNDS.pcs_request) == pytest.approx(60.0 * 31.0)        # a hang guard: pcs's request limit
        assert float(BOUNDS.cluster_form) == pytest.approx(120.0 * 31.0)
        assert float(BOUNDS.resource_move) == pytest.approx(60.0 * 1.0)       # "agent": not probed here
        assert float(BOUNDS.pcsd_ready) == pytest.approx(60.0 * 31.0)
        assert float(BOUNDS.command) == pytest.approx(120.0 * 3.0)            # process ratio 3: within the ceiling
    finally:
        set_calibration(None)
    said = calibration.to_json()
    assert said["beyond_the_ceiling"] == [
        "python ratio 31.0 is beyond the ceiling ×4: the hang guards (pcs_request, pcsd_ready, cluster_form) "
        "scale ×31.0, every other allowance stays ×4"]
    assert "beyond the ceiling" in calibration.summary()
    rows = {a["field"]: a for a in said["allowances"]}
    assert rows["pcs_request"]["hang_guard"] and rows["pcs_request"]["applied_s"] == pytest.approx(1860.0)


def test_a_target_beyond_the_hang_ceiling_is_refused_at_bring_up(monkeypatch):
    monkeypatch.setattr(cal, "measure", lambda machines: {
        p.name: ({"server1": [p.command and 0.02 * 150] * 3} if p.category == "python" else {}) for p in PROBES})
    reference = {"probes": {p.name: 0.02 for p in PROBES}, "measured_on": "a test"}
    with pytest.raises(CalibrationError, match=r"too slow to judge: python_imports \(python\) took 3.000 s on "
                                               r"server1, 150 times the lab's 0.020 s.*fix: run it where the hosts"):
        calibrate([], reference=reference)


def test_pcs_gets_the_harness_request_limit_not_its_own_default():
    from haconform.readers.cluster import fence_list_command, pcs_dialect
    dialect = pcs_dialect((0, 11, 5))
    set_calibration(slow_python_calibration(10.0))
    try:
        assert dialect.setup_argv("TestCluster", ["server1", "server4"]) == [    # 0.11 refuses the option there
            "pcs", "cluster", "setup", "TestCluster", "server1", "server4"]
        assert dialect.auth_argv(["server1"])[:4] == ["pcs", "--request-timeout=600", "host", "auth"]
        assert dialect.argv("cluster", "start", "--all")[1] == "--request-timeout=600"
        assert fence_list_command() == "fence_xvm -o list -t 15"     # process ratio 3: 5 s × 3
    finally:
        set_calibration(None)
    assert pcs_dialect((0, 9, 169)).setup_argv("c", ["a"]) == ["pcs", "--request-timeout=60", "cluster", "setup",
                                                                "--name", "c", "a"]
