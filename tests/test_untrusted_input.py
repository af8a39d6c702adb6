"""Untrusted input: every kind of bad input gets one line naming the file and the fix, before anything starts.

A value that reaches a shell on a host is refused at load unless it matches its pattern (and is quoted
where it is used); a pytest run with a bad input ends in pytest_configure, with no traceback and no lab;
`haconform report` and `haconform lab down` go on past what a killed session left half-written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from haconform.cli import main as cli_main
from haconform.datafile import read_yaml_mapping
from haconform.errors import HaconformError
from haconform.stages.manager import load_all_stages, names_defined
from haconform.stages.model import load_stage
from haconform.topology import load_topology

REPO = Path(__file__).resolve().parent.parent
DOCUMENTED = REPO / "fixtures" / "documented"
TOPOLOGY_FILE = REPO / "fixtures" / "topology.yaml"
TOPOLOGY = load_topology(TOPOLOGY_FILE)
# The lab a bad run would have started, had its input not stopped it first.
NEVER_STARTED = "hinbad"
# The lab whose leftovers test_lab_down_removes_everything... builds by hand: a name of its own, since the
# tests that look for NEVER_STARTED's directory run at the same time on other workers.
TRUNCATED = "hintrunc"
ROLES_AND_HOSTS = ("use role-<role> (roles there: client, director, fence, realserver) or host-<host> "
                   "(hosts: server1, server4, server2, server3, foundation5, client)")


def config_with(tmp_path: Path, stage: str, old: str, new: str) -> Path:
    """A copy of fixtures/documented with one edit in one stage.yaml."""
    config = tmp_path / "config"
    shutil.copytree(DOCUMENTED, config)
    manifest = config / stage / "stage.yaml"
    text = manifest.read_text()
    assert old in text, f"{old!r} not in {manifest}"
    manifest.write_text(text.replace(old, new, 1))
    return config


def load_error(config: Path) -> str:
    with pytest.raises(HaconformError) as caught:
        load_all_stages(config, None, TOPOLOGY)
    return str(caught.value)


# ----- stage.yaml: what reaches a shell is checked at load ---------------------------------------

def test_a_service_name_with_a_semicolon_is_refused(tmp_path):
    config = config_with(tmp_path, "stage1", "{name: haproxy, on_change", "{name: 'haproxy; touch /tmp/x', on_change")
    assert load_error(config) == (
        f"{config}/stage1/stage.yaml: services.role-director[1].name: 'haproxy; touch /tmp/x' is not a service "
        "name (fix: use the init script's name: letters, digits and . _ + - @ only, e.g. haproxy)")


@pytest.mark.parametrize("key", ["owner", "group"])
def test_an_owner_or_group_with_a_space_is_refused(tmp_path, key):
    config = config_with(tmp_path, "stage3", f"{key}: www-data,", f"{key}: 'www data',")
    assert load_error(config) == (
        f"{config}/stage3/stage.yaml: modes./var/www/html/upload.{key}: 'www data' is not a user or group name "
        "(fix: use a name as `getent passwd` or `getent group` shows it, without spaces or quotes, e.g. www-data)")


@pytest.mark.parametrize("written, read_as, quoted", [("0640", 416, "0640"), ("755", 755, "755")])
def test_an_unquoted_mode_is_refused_with_quote_it(tmp_path, written, read_as, quoted):
    config = config_with(tmp_path, "stage3", 'mode: "0755"', f"mode: {written}")
    assert load_error(config) == (
        f"{config}/stage3/stage.yaml: modes./var/www/html/upload.mode: {read_as} is a YAML number, not a mode "
        f"(YAML reads an unquoted 0640 as 416) (fix: quote it, e.g. \"{quoted}\")")


@pytest.mark.parametrize("mode", ["999", "64", "07777", "0640; id", "u+rwx"])
def test_a_mode_that_is_not_three_or_four_octal_digits_is_refused(tmp_path, mode):
    config = config_with(tmp_path, "stage3", 'mode: "0755"', f"mode: {json.dumps(mode)}")
    assert load_error(config) == (
        f"{config}/stage3/stage.yaml: modes./var/www/html/upload.mode: {mode!r} is not a mode "
        "(fix: write 3 or 4 octal digits, quoted, e.g. \"0640\")")


def test_a_selector_matching_no_host_is_an_error(tmp_path):
    config = config_with(tmp_path, "stage3", "selector: role-realserver", "selector: role-webserver")
    assert load_error(config) == (
        f"{config}/stage3/stage.yaml: modes./var/www/html/upload.selector: selector 'role-webserver' matches no "
        f"host of {TOPOLOGY_FILE} (fix: {ROLES_AND_HOSTS})")


def test_a_services_selector_matching_no_host_is_an_error(tmp_path):
    config = config_with(tmp_path, "stage1", "  role-realserver:\n", "  host-server9:\n")
    assert load_error(config) == (
        f"{config}/stage1/stage.yaml: services.host-server9: selector 'host-server9' matches no host of "
        f"{TOPOLOGY_FILE} (fix: {ROLES_AND_HOSTS})")


def test_a_files_directory_matching_no_host_is_an_error(tmp_path):
    config = tmp_path / "config"
    shutil.copytree(DOCUMENTED, config)
    (config / "stage2" / "host-server2").rename(config / "stage2" / "host-server7")
    assert load_error(config) == (
        f"{config}/stage2/host-server7: selector 'host-server7' matches no host of {TOPOLOGY_FILE} "
        f"(fix: {ROLES_AND_HOSTS})")


def test_a_malformed_later_stage_fails_loading_all_stages(tmp_path):
    config = tmp_path / "config"
    shutil.copytree(DOCUMENTED, config)
    (config / "stage5" / "stage.yaml").write_text("stage: stage5\nbase: stage4\ncluster: [oops\n")
    assert load_error(config) == (
        f"{config}/stage5/stage.yaml:4: not valid YAML (expected ',' or ']', but got '<stream end>') "
        "(fix: correct the YAML syntax at that line)")


def test_a_config_missing_a_runbook_stage_is_an_error(tmp_path):
    config = tmp_path / "config"
    shutil.copytree(DOCUMENTED, config)
    shutil.rmtree(config / "stage4")
    assert load_error(config) == (
        f"{config}: no stage4 (has stage1, stage2, stage3, stage5) "
        f"(fix: add {config}/stage4/stage.yaml (see fixtures/documented/README.md))")


def test_a_stage_yaml_that_is_not_utf8_names_the_file(tmp_path):
    config = tmp_path / "config"
    shutil.copytree(DOCUMENTED, config)
    (config / "stage2" / "stage.yaml").write_bytes(b"stage: stage2\ntitle: \"caf\xe9\"\n")
    assert load_error(config) == (
        f"{config}/stage2/stage.yaml: is not UTF-8 text (byte 0xe9 at offset 25) (fix: save it as UTF-8)")


def test_valid_stages_still_load_and_define_the_names_a_deployment_may_rename():
    stages = load_all_stages(DOCUMENTED, REPO / "fixtures" / "beyond" / "algorithms", TOPOLOGY)
    assert {"stage1", "stage5", "algorithm-roundrobin"} <= set(stages)
    assert names_defined(stages.values()) == {"VIP", "haproxy", "hagroup", "vmfence", "app", "static", "main",
                                              "stats", "app1", "app2"}
    assert load_stage(DOCUMENTED / "stage3", TOPOLOGY).modes["/var/www/html/upload"]["mode"] == "0755"


# ----- data files given on the command line ------------------------------------------------------

@pytest.mark.parametrize("kind", ["directory", "not UTF-8", "unreadable"])
def test_a_bad_data_file_gets_one_line_naming_it_and_the_fix(tmp_path, monkeypatch, kind):
    path = tmp_path / "names.yaml"
    if kind == "directory":
        path.mkdir()
        expected = f"{path}: is a directory, not a file (fix: pass --names a YAML file)"
    elif kind == "not UTF-8":
        path.write_bytes(b"VIP: \xffWebIP\n")
        expected = f"{path}: is not UTF-8 text (byte 0xff at offset 5) (fix: save it as UTF-8, or pass --names another file)"
    else:
        path.write_text("VIP: WebIP\n")
        real_read_bytes = Path.read_bytes

        def refused(self):   # root reads a file whatever its mode: the refusal as a non-root user meets it
            if self == path:
                raise PermissionError(13, "Permission denied", str(self))
            return real_read_bytes(self)
        monkeypatch.setattr(Path, "read_bytes", refused)
        expected = (f"{path}: cannot be read (permission denied) (fix: make it readable by the user running "
                    "haconform, or pass --names another file)")
    with pytest.raises(HaconformError) as caught:
        read_yaml_mapping(path, missing_fix="unused", layout="unused", option="--names")
    assert str(caught.value) == expected


def test_a_topology_that_is_a_directory_names_it(tmp_path):
    with pytest.raises(HaconformError) as caught:
        load_topology(tmp_path)
    assert str(caught.value) == f"{tmp_path}: is a directory, not a file (fix: pass --topology a YAML file)"


@pytest.mark.parametrize("field, value, expected", [
    ("services", "[rsyslog, 'haproxy && reboot']",
     "roles.director.services[1]: 'haproxy && reboot' is not a service name (fix: use the init script's name: "
     "letters, digits and . _ + - @ only, e.g. haproxy)"),
    ("fence_name", "'Node1; reboot'",
     "hosts.server1.fence_name: 'Node1; reboot' is not a fence domain name (fix: use the domain's name as "
     "`virsh list` shows it, e.g. Node1)"),
])
def test_topology_names_that_reach_a_shell_are_checked(tmp_path, field, value, expected):
    text = TOPOLOGY_FILE.read_text()
    if field == "services":
        old = "services: [rsyslog, haproxy]"
        new = f"services: {value}"
    else:
        old = "fence_name: Node1}"
        new = f"fence_name: {value}}}"
    assert old in text
    path = tmp_path / "topology.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(HaconformError) as caught:
        load_topology(path)
    assert str(caught.value) == f"{path}: {expected}"


# ----- a pytest run with a bad input ends at its start -------------------------------------------

def run_pytest(*args: str) -> subprocess.CompletedProcess:
    """The checkout's suites with one bad input; --setup-plan runs configure and collection, no fixture."""
    env = {**os.environ, "HACONFORM_LAB": NEVER_STARTED}
    for name in ("HACONFORM_TOPOLOGY", "HACONFORM_CONFIG", "HACONFORM_NAMES", "HACONFORM_INVENTORY",
                 "HACONFORM_TARGET", "HACONFORM_ALGORITHMS"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--setup-plan", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def assert_refused_at_start(result: subprocess.CompletedProcess, message: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"ERROR: haconform: {message}" in output, output
    assert "Traceback" not in output, output
    assert not (Path("/var/lib/haconform/labs") / NEVER_STARTED).exists(), "a lab was started"


def test_a_malformed_stage5_fails_a_stage1_only_run_at_its_start(tmp_path):
    config = tmp_path / "config"
    shutil.copytree(DOCUMENTED, config)
    (config / "stage5" / "stage.yaml").write_text("stage: stage5\nbase: stage4\ncluster: [oops\n")
    result = run_pytest("suites/test_10_roundrobin.py", "-k", "roundrobin", "--config", str(config))
    assert_refused_at_start(result, f"{config}/stage5/stage.yaml:4: not valid YAML")


def test_a_topology_directory_fails_the_run_at_its_start(tmp_path):
    result = run_pytest("suites", "--topology", str(tmp_path))
    assert_refused_at_start(result, f"{tmp_path}: is a directory, not a file (fix: pass --topology a YAML file)")


def test_a_names_file_that_is_not_utf8_fails_the_run_at_its_start(tmp_path):
    names = tmp_path / "names.yaml"
    names.write_bytes(b"VIP: WebIP\napp: \xff\n")
    result = run_pytest("suites", "--names", str(names))
    assert_refused_at_start(result, f"{names}: is not UTF-8 text (byte 0xff at offset 16) "
                                    "(fix: save it as UTF-8, or pass --names another file)")


def test_a_names_key_the_runbook_does_not_define_fails_the_run_at_its_start(tmp_path):
    names = tmp_path / "names.yaml"
    names.write_text("VIP: WebIP\nhagrop: web\n")
    result = run_pytest("suites", "--names", str(names))
    assert_refused_at_start(result, f"{names}: hagrop: not a name the runbook defines (fix: map one of VIP, app, "
                                    "app1, app2, hagroup, haproxy, main, static, stats, vmfence)")


def test_a_deployment_stage_that_is_no_stage_fails_the_run_at_its_start():
    result = run_pytest("suites", "--deployment-stage", "stage6")
    assert_refused_at_start(result, f"--deployment-stage: no stage 'stage6' in {DOCUMENTED} (fix: use one of stage1, "
                                    "stage2, stage3, stage4, stage5, algorithm-hdr")


def test_valid_inputs_pass_the_start(tmp_path):
    result = run_pytest("suites/test_10_roundrobin.py", "--names", str(REPO / "tests" / "data" / "handmade" /
                                                                     "names.yaml"))
    assert result.returncode == 0 and "ERROR" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_a_missing_inventory_fails_the_run_at_its_start(tmp_path):
    result = run_pytest("suites", "--target", "ssh", "--inventory", str(tmp_path / "inventory.yaml"))
    assert_refused_at_start(result, f"{tmp_path}/inventory.yaml: file not found (fix: pass --inventory with an "
                                    "existing file (see fixtures/inventory.example.yaml))")


def test_an_inventory_names_key_the_runbook_does_not_define_fails_the_run_at_its_start(tmp_path):
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "vip: 172.25.5.100\nnames: {VIP: WebIP, backend_app: dynamic}\n"
        "hosts:\n  server1: {address: 10.0.0.11}\n  server4: {address: 10.0.0.14}\n"
        "  server2: {address: 10.0.0.12}\n  server3: {address: 10.0.0.13}\n"
        "  client: {netns: hcclient}\n  foundation5: none\n")
    result = run_pytest("suites", "--target", "ssh", "--inventory", str(inventory))
    assert_refused_at_start(result, f"{inventory}: names.backend_app: not a name the runbook defines")


# ----- haconform report: a damaged run is skipped, a missing directory is an error ---------------

def kept_runs(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    for name in ("20261201-010000", "20261201-020000", "20261201-030000"):
        (results / name).mkdir(parents=True)
        row = {"nodeid": f"suites/t.py::test_{name[-6:]}", "phase": "call", "outcome": "passed", "duration": 1.0,
               "requirement": {"id": "HAC-X-001", "must": "x MUST hold", "section": "s", "stage": "stage1"},
               "evidence": []}
        (results / name / "history.jsonl").write_text(json.dumps(row) + "\n")
    return results


def test_report_skips_a_truncated_history_and_goes_on(tmp_path, capsys):
    results = kept_runs(tmp_path)
    history = results / "20261201-020000" / "history.jsonl"
    history.write_text(history.read_text() + '{"nodeid": "suites/t.py::test_cut", "pha')
    assert cli_main(["report", str(results), "--out", str(tmp_path / "trends.html")]) == 0
    out, err = capsys.readouterr()
    assert err == (f"haconform report: warning: skipped run 20261201-020000: {history}: line 2 is not JSON "
                   "(Unterminated string starting at: line 1 column 37 (char 36)) (fix: the run was cut short: "
                   "remove its directory, or that line)\n")
    assert f"trends: 2 run(s) from {results}" in out


def test_report_skips_a_truncated_verdict_and_goes_on(tmp_path, capsys):
    results = kept_runs(tmp_path)
    verdict = results / "20261201-030000" / "verdict.json"
    verdict.write_text('{"schema": 1, "musts": [')
    assert cli_main(["report", str(results), "--out", str(tmp_path / "trends.html")]) == 0
    out, err = capsys.readouterr()
    assert err == (f"haconform report: warning: skipped run 20261201-030000: {verdict}: not valid JSON (Expecting "
                   "value: line 1 column 25 (char 24)) (fix: the run was cut short: remove its directory, or run "
                   "the session again)\n")
    assert f"trends: 2 run(s) from {results}" in out


def test_report_skips_a_summary_that_is_not_an_object(tmp_path, capsys):
    results = kept_runs(tmp_path)
    summary = results / "20261201-010000" / "summary.json"
    summary.write_text("[1, 2]")
    assert cli_main(["report", str(results), "--out", str(tmp_path / "trends.html")]) == 0
    assert f"skipped run 20261201-010000: {summary}: not a perf summary (a JSON list" in capsys.readouterr().err


def test_report_on_a_directory_that_does_not_exist_is_an_error(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "nonexistent"), "--out", str(tmp_path / "trends.html")]) == 2
    out, err = capsys.readouterr()
    assert err == (f"haconform: error: {tmp_path}/nonexistent: no such directory (fix: pass the directory the runs "
                   "were kept in (default: results/ of the checkout))\n")
    assert "run(s)" not in out and not (tmp_path / "trends.html").exists()


def test_the_report_command_shows_no_traceback_for_a_missing_directory():
    result = subprocess.run([sys.executable, "-m", "haconform.cli", "report", "/nonexistent"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("haconform: error: /nonexistent: no such directory") and "Traceback" not in (
        result.stdout + result.stderr)


@pytest.mark.parametrize("argv, message", [
    (["lab", "status", "--name", "hinbad", "--topology", "{tmp}"],
     "haconform: error: {tmp}: is a directory, not a file (fix: pass --topology a YAML file)\n"),
    (["report", "{tmp}/results", "--compare", "a", "b"],
     "haconform: error: {tmp}/results: no such directory (fix: pass the directory the runs were kept in "
     "(default: results/ of the checkout))\n"),
])
def test_the_cli_says_bad_input_in_one_line_without_a_traceback(tmp_path, argv, message):
    result = subprocess.run([sys.executable, "-m", "haconform.cli", *(a.format(tmp=tmp_path) for a in argv)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", message.format(tmp=tmp_path))


# ----- haconform lab down with a damaged lab.json ------------------------------------------------

def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _leftovers(name: str) -> dict:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    links = [link["ifname"] for link in json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True,
                                                                  text=True).stdout)]
    with open("/proc/self/mounts") as fh:
        mounts = [line.split()[1] for line in fh]
    marker = f"/var/lib/haconform/labs/{name}/"
    processes = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    processes.append(int(entry.name))
            except OSError:
                continue
    return {"netns": [n for n in netns if n.startswith(f"{name}-")],
            "links": [n for n in links if n.startswith(f"{name}-")],
            "mounts": [m for m in mounts if m.startswith(marker)], "processes": processes}


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="makes namespaces, links and mounts: root")
def test_lab_down_removes_everything_of_a_lab_whose_lab_json_is_truncated(tmp_path):
    """What a SIGKILLed `lab up` leaves, built by hand (no lab is booted): a namespace, a bridge, a veth pair,
    a tmpfs over a host's root, a process whose command line names the lab's directory; lab.json cut short."""
    name = TRUNCATED
    state = Path("/var/lib/haconform/labs") / name
    assert not state.exists() and not any(_leftovers(name).values()), "leftovers of an earlier run"
    merged = state / "hosts" / "server1" / "merged"
    merged.mkdir(parents=True)
    (state / "lab.json").write_text('{\n "name": "hintrunc",\n "topology": "/work/ma')
    sleeper = None
    try:
        _ip("netns", "add", f"{name}-server1")
        _ip("link", "add", f"{name}-br", "type", "bridge")
        _ip("link", "add", f"{name}-0", "type", "veth", "peer", "name", "eth0", "netns", f"{name}-server1")
        _ip("link", "set", f"{name}-0", "master", f"{name}-br")
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(merged)], check=True, timeout=30)
        sleeper = subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(600)",
                                    str(state / "hosts" / "server1" / "init.json")])
        before = _leftovers(name)
        assert all(before.values()), before

        result = subprocess.run([sys.executable, "-m", "haconform.cli", "lab", "down", "--name", name],
                                capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        assert f"{state}/lab.json is damaged" in result.stderr
        # the veth goes with its peer's namespace; what is left by name is the bridge
        # The veth goes with its namespace, at once or a moment later: one link (the bridge) or both.
        assert re.fullmatch(rf"lab {name} removed: 1 processes, 1 namespaces, [12] links, 1 mounts\n", result.stdout), \
            result.stdout
        assert result.stderr.count("\n") == 1, result.stderr
        assert sleeper.wait(timeout=10) != 0
        assert not any(_leftovers(name).values()), _leftovers(name)
        assert not state.exists()
    finally:
        if sleeper is not None and sleeper.poll() is None:
            sleeper.kill()
        subprocess.run(["umount", "-l", str(merged)], capture_output=True)
        for args in (["netns", "delete", f"{name}-server1"], ["link", "delete", f"{name}-br"],
                     ["link", "delete", f"{name}-0"]):
            subprocess.run(["ip", *args], capture_output=True)
        shutil.rmtree(state, ignore_errors=True)


def test_other_lab_commands_refuse_a_damaged_lab_json_naming_the_fix(tmp_path, monkeypatch):
    from haconform.lab import lab as lab_module
    monkeypatch.setattr(lab_module, "STATE_ROOT", tmp_path)
    (tmp_path / "hinbad").mkdir()
    (tmp_path / "hinbad" / "lab.json").write_text('{"name": "hinb')
    with pytest.raises(HaconformError) as caught:
        lab_module.NamespaceLab("hinbad")
    assert str(caught.value).startswith(f"{tmp_path}/hinbad/lab.json: lab.json is damaged (JSONDecodeError: ")
    assert str(caught.value).endswith("(fix: haconform lab down --name hinbad (it finds the lab by its name))")
