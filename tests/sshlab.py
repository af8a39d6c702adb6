"""An existing deployment to point `--target ssh` at: a lab brought to stage 5, then reached only over ssh.

The lab is built the way any operator's deployment is (the harness applies
the documented stages once, `-k test_80_configuration --keep-lab`); then each
host gets its own sshd (state under /run, so nothing of it is in /etc), and an
inventory reaches the hosts as root through a ProxyCommand that enters the
lab's client namespace: ssh traffic, like HTTP, stays on the lab's bridge.
From there on, a `--target ssh` run knows the hosts only by that inventory.

Snapshots of /etc, /var/www, /var/log and /tmp on each host (path -> sha256 and
size) let a test say what a run changed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from haconform.lab.lab import NamespaceLab
from haconform.topology import load_topology

REPO = Path(__file__).resolve().parent.parent
SSH_HOSTS = ("server1", "server4", "server2", "server3")
SSHD_DIR = "/run/haconform-sshd"
SNAPSHOT_ROOTS = ("/etc", "/var/www", "/var/log", "/tmp")
BUILD_TIMEOUT_S = 900
RUN_TIMEOUT_S = 1800
COMMAND_TIMEOUT_S = 60

SSHD_CONFIG = f"""\
Port 22
HostKey {SSHD_DIR}/host_key
AuthorizedKeysFile {SSHD_DIR}/authorized_keys
PidFile {SSHD_DIR}/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
"""

# Lists every regular file under the roots with its hash and size; one line each, JSON.
SNAPSHOT_SCRIPT = r"""
import base64, hashlib, json, os, sys
for root in sys.argv[1:]:
    for directory, dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            try:
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            # Logs keep their text, so a change can be told apart: lines appended by a daemon, or a rewrite.
            text = base64.b64encode(data).decode() if path.startswith("/var/log/") and len(data) < 4 << 20 else None
            print(json.dumps([path, hashlib.sha256(data).hexdigest(), len(data), text]))
"""


def pytest_run(lab: str, args: list[str], *, log: Path, junit: Path, timeout: float = RUN_TIMEOUT_S,
               env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "-q", "--lab-name", lab,
               f"--junitxml={junit}", *args]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    log.write_text(result.stdout + result.stderr)
    return result


def junit_outcomes(junit: Path) -> dict[str, tuple[str, str]]:
    """conformance id (or test name) -> (outcome, message) from a JUnit file."""
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        ids = [p.get("value") for p in case.iter("property") if p.get("name") == "conformance_id"]
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = element.get("message") or ""
                break
        for key in ids or [case.get("name")]:
            outcomes[key] = (outcome, message)
    return outcomes


@dataclass
class SshDeployment:
    lab_name: str
    workdir: Path

    @property
    def lab(self) -> NamespaceLab:
        return NamespaceLab(self.lab_name, load_topology(REPO / "fixtures" / "topology.yaml"))

    @property
    def inventory(self) -> Path:
        return self.workdir / "inventory.yaml"

    def host_run(self, host: str, command: str, *, input: bytes | None = None) -> subprocess.CompletedProcess:
        """command in a lab host, from the machine's side (not over ssh); text output."""
        return self.lab.run(host, command, input=input, timeout=COMMAND_TIMEOUT_S)

    def build(self) -> None:
        result = pytest_run(self.lab_name, ["-k", "test_80_configuration", "--keep-lab"],
                            log=self.workdir / "build.log", junit=self.workdir / "build.xml",
                            timeout=BUILD_TIMEOUT_S)
        built = junit_outcomes(self.workdir / "build.xml").get("HAC-CFG-001")
        if not built or built[0] != "passed":
            raise RuntimeError(f"the stage-5 lab did not build: {built}\n{result.stdout[-3000:]}")
        self.start_sshd()

    def start_sshd(self) -> None:
        key = self.workdir / "id_ed25519"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "haconform-sshlab", "-f", str(key)],
                           check=True, timeout=COMMAND_TIMEOUT_S)
        public = (self.workdir / "id_ed25519.pub").read_bytes()
        for host in SSH_HOSTS:
            script = (f"umask 077 && mkdir -p {SSHD_DIR} /run/sshd && cat > {SSHD_DIR}/authorized_keys && "
                      f"printf %s {shlex.quote(SSHD_CONFIG)} > {SSHD_DIR}/sshd_config && "
                      f"{{ [ -f {SSHD_DIR}/host_key ] || ssh-keygen -q -t ed25519 -N '' -f {SSHD_DIR}/host_key; }} && "
                      f"{{ [ -f {SSHD_DIR}/sshd.pid ] && kill -0 $(cat {SSHD_DIR}/sshd.pid) 2>/dev/null || "
                      f"/usr/sbin/sshd -f {SSHD_DIR}/sshd_config; }}")
            result = self.host_run(host, script, input=public)
            if result.returncode != 0:
                raise RuntimeError(f"sshd on {host}: {result.stderr[-500:]}")
        self.write_inventory(key)

    def write_inventory(self, key: Path) -> None:
        topology = load_topology(REPO / "fixtures" / "topology.yaml")
        client_ns = self.lab.netns("client")
        lines = []
        for host in SSH_HOSTS:
            lines += [f"Host lab-{host}", f"  HostName {topology.host(host).address}", "  User root",
                      f"  IdentityFile {key}", "  IdentitiesOnly yes",
                      f"  ProxyCommand ip netns exec {client_ns} nc %h %p",
                      "  StrictHostKeyChecking no", "  UserKnownHostsFile /dev/null", ""]
        (self.workdir / "ssh_config").write_text("\n".join(lines))
        inventory = {
            "vip": topology.vip,
            "stage": "stage5",
            "defaults": {"user": "root", "sudo": False, "ssh_config": str(self.workdir / "ssh_config")},
            "hosts": {**{host: {"address": f"lab-{host}"} for host in SSH_HOSTS},
                      "client": {"netns": client_ns}, "foundation5": "none"},
        }
        self.inventory.write_text(json.dumps(inventory, indent=2))

    def ssh_run(self, args: list[str], name: str, **kwargs) -> subprocess.CompletedProcess:
        return pytest_run(self.lab_name, ["--target", "ssh", "--inventory", str(self.inventory),
                                          "--history-dir", str(self.workdir / "results"), *args],
                          log=self.workdir / f"{name}.log", junit=self.workdir / f"{name}.xml", **kwargs)

    def snapshot(self) -> dict[str, dict[str, tuple]]:
        """host -> path -> (sha256, size, base64 text of a log or None) of every regular file under
        SNAPSHOT_ROOTS."""
        taken = {}
        for host in SSH_HOSTS:
            result = self.host_run(host, f"python3 - {' '.join(SNAPSHOT_ROOTS)}", input=SNAPSHOT_SCRIPT.encode())
            if result.returncode != 0:
                raise RuntimeError(f"snapshot of {host}: {result.stderr[-500:]}")
            taken[host] = {path: (digest, size, text) for path, digest, size, text in
                           (json.loads(line) for line in result.stdout.splitlines())}
        return taken

    def cib_epochs(self) -> dict[str, str]:
        """The CIB's admin_epoch and epoch (every configuration change raises epoch), from the first director."""
        for director in ("server1", "server4"):
            result = self.host_run(director, "cibadmin --query --local")
            if result.returncode == 0:
                root = ET.fromstring(result.stdout)
                return {key: root.get(key) for key in ("admin_epoch", "epoch")}
        raise RuntimeError("no director answers cibadmin")

    def down(self) -> None:
        subprocess.run([sys.executable, "-m", "haconform.cli", "lab", "down", "--name", self.lab_name],
                       cwd=REPO, capture_output=True, timeout=300)


# The program that wrote a log line: rsyslog's "TIME HOST PROGRAM[PID]:", pacemaker.log's
# "Mon DD TIME HOST DAEMON [PID] (function)", Apache's access log (no tag: the file says it).
SYSLOG_PROGRAM = re.compile(r"^\S+ \S+ ([^\s\[:]+)(?:\[\d+\])?:")
PACEMAKER_PROGRAM = re.compile(r"^\w{3} +\d+ [\d:.]+ \S+ (\S+) +\[\d+\]")


def line_program(path: str, line: str) -> str:
    if "/apache2/" in path:
        return "apache2"
    match = PACEMAKER_PROGRAM.match(line) or SYSLOG_PROGRAM.match(line)
    return match.group(1) if match else "?"


def built_deployment(prefix: str, tmp_path_factory):
    """A module fixture's body: an SshDeployment built on a lab of its own, taken down after."""
    deployment = SshDeployment(f"{prefix}{os.getpid() % 10000}", tmp_path_factory.mktemp(f"ssh-{prefix}"))
    try:
        deployment.build()
        yield deployment
    finally:
        deployment.down()


def compare_snapshots(before: dict, after: dict) -> dict:
    """What changed between two snapshots: files created, removed or rewritten (every path outside
    /var/log that differs, and a log whose old text is no longer its beginning), and for logs that only
    grew, the appended lines counted by the program that wrote them."""
    changes: dict = {"created": [], "removed": [], "rewritten": [], "appended": {}}
    for host in after:
        old, new = before.get(host, {}), after[host]
        changes["removed"] += [f"{host}:{p}" for p in sorted(set(old) - set(new))]
        for path in sorted(new):
            if path not in old:
                if new[path][2] is None:
                    changes["created"].append(f"{host}:{path}")
                    continue
                # A log its daemon made on its first line (rsyslog opens a file when a message for it
                # comes): judged by its lines, as if it had been empty.
                was, now = "", new[path][2]
            elif old[path][:2] == new[path][:2]:
                continue
            else:
                was, now = old[path][2], new[path][2]
            if was is None or now is None:
                changes["rewritten"].append(f"{host}:{path}")
                continue
            was, now = base64.b64decode(was), base64.b64decode(now)
            if not now.startswith(was):
                changes["rewritten"].append(f"{host}:{path}")
                continue
            programs: dict[str, int] = {}
            for line in now[len(was):].decode("utf-8", "replace").splitlines():
                program = line_program(path, line)
                programs[program] = programs.get(program, 0) + 1
            changes["appended"][f"{host}:{path}"] = programs
    return changes
