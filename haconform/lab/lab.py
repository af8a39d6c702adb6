"""The embedded namespace lab: hosts made of Linux namespaces on this machine.

Everything the lab makes carries its name, so that two labs coexist and
`down` can find all of it from names alone, even after the process that ran
`up` was killed with SIGKILL:

    network namespaces   NAME-HOST            (/run/netns/NAME-HOST)
    links (root side)    NAME-br (bridge), NAME-<index> (each host's NIC)
    state directory      /var/lib/haconform/labs/NAME/
    processes            every process whose command line names that directory

The machine's own network namespace never gets an address or route in the
lab subnet, except one `unreachable` route as a guard (a mistaken send from
the machine then fails on the spot instead of leaving it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from ..errors import HaconformError
from ..redaction import redacted_tail
from ..timeouts import BOUNDS
from ..topology import Topology, load_topology
from ..wait import wait_until

log = logging.getLogger("haconform.lab")
STATE_ROOT = Path("/var/lib/haconform/labs")
# At most 11 characters: NAME-br and a host's veth NAME-NNp stay within the kernel's 15 for a link name
# (a side-by-side run's labs are the session's lab name and a worker's number: haconform12).
LAB_NAME = re.compile(r"^[a-z][a-z0-9]{0,10}$")
DEFAULT_LAB = "haconform"
GUARD_METRIC = "4242"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
POWER_STATES = ("on", "off", "crashed")


def require_root() -> None:
    if os.geteuid() != 0:
        raise HaconformError(
            "the namespace lab needs root (it creates network, mount and PID namespaces)",
            where="haconform lab", fix="run as root, e.g. `sudo haconform lab up`")


def run_tool(argv: list[str], *, input: str | None = None) -> subprocess.CompletedProcess:
    """One of the machine's tools the lab drives (ip, umount), bounded: one that hangs
    (a stuck mount, a held netlink lock) ends the lab command with one clear error."""
    try:
        return subprocess.run(argv, input=input, capture_output=True, text=True, timeout=BOUNDS.cli_query)
    except subprocess.TimeoutExpired:
        raise HaconformError(f"`{' '.join(argv)}` did not finish within {BOUNDS.cli_query:g}s",
                             where="haconform lab", fix="see what holds it (`ps -ef`, `dmesg`), then retry") from None


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    result = run_tool(argv)
    if check and result.returncode != 0:
        raise HaconformError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}",
                             where="haconform lab")
    return result


def ip_batch(commands: list[str], netns: str | None = None) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), "-batch", "-"]
    result = run_tool(argv, input="\n".join(commands) + "\n")
    if result.returncode != 0:
        raise HaconformError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}",
                             where="haconform lab")


def run_in_host(argv: list[str], *, timeout: float, input: bytes | None = None) -> subprocess.CompletedProcess:
    """subprocess.run(argv, input=input, capture_output=True, timeout=timeout) for an
    exec_argv() command, except that a command outliving timeout takes its whole
    process tree with it, inside the host too (stdout, stderr: bytes).

    nsenter forks to enter the host's PID namespace, so killing nsenter (what
    subprocess.run does) orphans the command in the host.  Both start in a process
    group of their own, which the command and whatever it runs in the background
    inherit: a process group is not confined to a PID namespace, so killing the group
    from here reaches every member in the host.  A member that left the group on
    purpose (a daemon that called setsid) is a service, and is left running.
    """
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_process_group(proc.pid)
        try:
            stdout, stderr = proc.communicate(timeout=BOUNDS.host_halt)
        except subprocess.TimeoutExpired as still:
            # A daemon the command started (out of the group) holds the pipes: give up on them.
            stdout, stderr = still.stdout or b"", b""
            for pipe in (proc.stdout, proc.stderr):
                pipe.close()
            proc.wait(timeout=BOUNDS.host_halt)
        raise subprocess.TimeoutExpired(argv, timeout, stdout, stderr) from None
    except BaseException:
        kill_process_group(proc.pid)
        try:
            proc.wait(timeout=BOUNDS.host_halt)
        except subprocess.TimeoutExpired:
            log.warning("nsenter %s still there %ss after its group was killed", proc.pid, BOUNDS.host_halt)
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def kill_process_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def harness_paths_hidden_by_fresh_tmp() -> list[str]:
    """The harness's python environment, when a host's fresh /tmp would hide it (a checkout
    and its tox envs under /tmp): hosts get it at the same path, so a tool the harness
    installed (locust in the client host) runs there wherever the checkout lies."""
    prefix = os.path.realpath(sys.prefix)
    return [prefix] if prefix == "/tmp" or prefix.startswith("/tmp/") else []


class NamespaceLab:
    """One lab: create, power, inspect and destroy its hosts."""

    def __init__(self, name: str = DEFAULT_LAB, topology: Topology | None = None, *,
                 bridge: str | None = None, hosts: list[str] | None = None, for_removal: bool = False):
        """bridge: plug the hosts into this existing bridge (made by someone else, e.g.
        libvirt's cluster network) instead of creating NAME-br; hosts: run only these
        hosts of the topology (the others live elsewhere, e.g. in VMs).  Both are kept
        in lab.json, so `down` after a SIGKILL needs only the name.  for_removal: the lab is only
        to be taken down, which works from its name alone when lab.json is damaged (a SIGKILL
        mid-write) and no topology is given."""
        if not LAB_NAME.match(name):
            raise HaconformError(
                f"bad lab name {name!r}", where="--name",
                fix="use 1-11 lower-case letters or digits, starting with a letter")
        self.name = name
        self.dir = STATE_ROOT / name
        saved_path = self.dir / "lab.json"
        saved = self._saved_state(saved_path)
        if topology is None:
            if self.damaged is not None and not for_removal:
                raise HaconformError(f"lab.json is damaged ({self.damaged})", where=str(saved_path),
                                     fix=f"haconform lab down --name {name} (it finds the lab by its name)")
            # Removal needs no topology: everything the lab made is found by its name.
            topology = load_topology(saved.get("topology")) if self.damaged is None else None
        self.topology = topology
        self.external_bridge = bridge if bridge is not None else saved.get("external_bridge")
        self.only_hosts = list(hosts) if hosts is not None else saved.get("hosts")
        for host in self.only_hosts or []:
            self.topology.host(host)

    def _saved_state(self, path: Path) -> dict:
        """lab.json as `up` wrote it ({} when absent); self.damaged says why it could not be read."""
        self.damaged: str | None = None
        if not path.exists():
            return {}
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            self.damaged = f"{type(exc).__name__}: {exc}"
            return {}
        if not isinstance(saved, dict):
            self.damaged = f"a JSON {type(saved).__name__}, not an object"
            return {}
        return saved

    @property
    def host_names(self) -> list[str]:
        """The hosts this lab runs: every host of the topology unless told otherwise."""
        return [h for h in self.topology.hosts if self.only_hosts is None or h in self.only_hosts]

    # ----- names -------------------------------------------------------------
    @property
    def bridge(self) -> str:
        return self.external_bridge or f"{self.name}-br"

    def netns(self, host: str) -> str:
        return f"{self.name}-{host}"

    def netns_path(self, host: str) -> str:
        return f"/run/netns/{self.netns(host)}"

    def nic(self, host: str) -> str:
        return f"{self.name}-{self.topology.host(host).index}"

    def host_dir(self, host: str) -> Path:
        return self.dir / "hosts" / host

    def mac(self, host: str) -> str:
        # Fixed per lab and host, as a real NIC's: ARP caches stay right across reboots.
        digest = hashlib.sha256(f"{self.name}/{host}".encode()).digest()
        return "02:" + ":".join(f"{b:02x}" for b in digest[:5])

    # ----- locking -----------------------------------------------------------
    @contextmanager
    def locked(self):
        STATE_ROOT.mkdir(parents=True, exist_ok=True)
        with open(STATE_ROOT / f"{self.name}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ----- state -------------------------------------------------------------
    def exists(self) -> bool:
        return (self.dir / "lab.json").exists()

    def init_pid(self, host: str) -> int | None:
        pid_file = self.host_dir(host) / "pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            return None
        marker = str(self.host_dir(host) / "init.json")
        if process_alive(pid) and marker in cmdline(pid):
            return pid
        return None

    def power_state(self, host: str) -> str:
        if self.init_pid(host):
            return "on"
        try:
            state = (self.host_dir(host) / "power").read_text().strip()
        except OSError:
            return "off"
        return state if state in ("off", "crashed") else "off"

    def boot_id(self, host: str) -> str | None:
        if not self.init_pid(host):
            return None
        return json.loads((self.host_dir(host) / "init.json").read_text())["boot_id"]

    def booted(self, host: str) -> bool:
        pid = self.init_pid(host)
        if not pid:
            return False
        try:
            mark = Path(f"/proc/{pid}/root/run/haconform/booted").read_text().strip()
        except OSError:
            return False
        return mark == self.boot_id(host)

    def nic_state(self, host: str) -> str:
        result = ip("-j", "link", "show", "dev", self.nic(host), check=False)
        if result.returncode != 0:
            return "absent"
        link = json.loads(result.stdout)[0]
        return "up" if "UP" in link.get("flags", []) else "down"

    def status(self) -> dict:
        hosts = {}
        for spec in (self.topology.host(h) for h in self.host_names):
            hosts[spec.name] = {
                "role": spec.role, "address": spec.address,
                "power": self.power_state(spec.name) if self.exists() else "absent",
                "booted": self.booted(spec.name),
                "boot_id": self.boot_id(spec.name),
                "nic": self.nic_state(spec.name),
                "netns": self.netns(spec.name),
            }
        return {"lab": self.name, "exists": self.exists(), "topology": str(self.topology.path),
                "state_dir": str(self.dir), "bridge": self.bridge, "vip": self.topology.vip,
                "hosts": hosts}

    # ----- commands in a host ------------------------------------------------
    def exec_argv(self, host: str) -> list[str]:
        """argv prefix that runs a program inside the host, as root, clean environment."""
        pid = self.init_pid(host)
        if not pid:
            raise HaconformError(f"host {host} is {self.power_state(host)}", where=f"lab {self.name}",
                                 fix=f"haconform lab power {host} on --name {self.name}")
        return ["nsenter", "-t", str(pid), "-a", "--", "/usr/bin/env", "-i", f"PATH={HOST_PATH}",
                "HOME=/root", "LANG=C.UTF-8", "TERM=dumb"]

    def run(self, host: str, command: str, *, timeout: float | None = None, check: bool = False,
            input: bytes | str | None = None) -> subprocess.CompletedProcess:
        """command in host (stdout, stderr as text); input: its stdin, never in an argv.
        Past timeout, every process of the command in the host is killed and
        subprocess.TimeoutExpired raised."""
        timeout = BOUNDS.command if timeout is None else timeout   # read when called: a calibration scales it
        data = input.encode() if isinstance(input, str) else input
        raw = run_in_host([*self.exec_argv(host), "/bin/sh", "-c", command], timeout=timeout, input=data)
        result = subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode("utf-8", "replace"),
                                             raw.stderr.decode("utf-8", "replace"))
        if check and result.returncode != 0:
            raise HaconformError(f"`{command}` on {host} exited {result.returncode}: "
                                 f"{redacted_tail(result.stderr.strip(), 500)}", where=f"lab {self.name}")
        return result

    # ----- lifecycle ---------------------------------------------------------
    def up(self, *, install_packages: bool = True) -> dict:
        """Create what is missing and boot every host that is not running."""
        require_root()
        from ..packages import ensure_installed
        ensure_installed(install=install_packages)
        started = time.monotonic()
        with self.locked():
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "lab.json").write_text(json.dumps({
                "name": self.name, "topology": str(self.topology.path),
                "subnet": str(self.topology.subnet), "created": time.time(),
                "external_bridge": self.external_bridge, "hosts": self.only_hosts}, indent=1))
            self._ensure_bridge()
            self._ensure_guard_route()
            booting = [h for h in self.host_names if not self.init_pid(h)]
            for host in booting:
                self._power_on(host)
        for host in booting:
            wait_until(f"{host} booted (rc2.d services started)", lambda h=host: self.booted(h),
                       timeout=BOUNDS.host_boot, observe=lambda h=host: self._console_tail(h))
        return {"booted": booting, "seconds": round(time.monotonic() - started, 2)}

    def power(self, host: str, action: str, *, wait: bool = True) -> None:
        require_root()
        self.topology.host(host)
        if action not in ("on", "off", "reset", "crash"):
            raise HaconformError(f"unknown power action {action!r}", where="haconform lab power",
                                 fix="use on, off, reset or crash")
        with self.locked():
            if action in ("off", "reset", "crash"):
                self._power_off(host, "crashed" if action == "crash" else "off")
            if action in ("on", "reset") and not self.init_pid(host):
                self._power_on(host)
        if wait and action in ("on", "reset"):
            wait_until(f"{host} booted (rc2.d services started)", lambda: self.booted(host),
                       timeout=BOUNDS.host_boot, observe=lambda: self._console_tail(host))

    def set_nic(self, host: str, state: str) -> None:
        """Pull (down) or plug (up) the host's cable; everything inside keeps running."""
        require_root()
        if state not in ("up", "down"):
            raise HaconformError(f"unknown NIC state {state!r}", where="haconform lab nic",
                                 fix="use up or down")
        if self.power_state(host) != "on":
            raise HaconformError(f"host {host} is {self.power_state(host)}", where=f"lab {self.name}",
                                 fix="power it on first")
        ip("link", "set", "dev", self.nic(host), state)

    def down(self) -> dict:
        """Remove every namespace, process, link, mount and directory of this lab."""
        require_root()
        removed: dict[str, list] = {"processes": [], "netns": [], "links": [], "mounts": []}
        with self.locked():
            marker = str(self.dir) + "/"
            for _ in range(50):
                pids = [pid for pid in self._lab_processes(marker)]
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        removed["processes"].append(pid)
                    except ProcessLookupError:
                        pass
                wait_until(f"processes of lab {self.name} gone",
                           lambda: not any(process_alive(p) for p in pids),
                           timeout=BOUNDS.host_halt, observe=lambda: [p for p in pids if process_alive(p)])
            prefix = f"{self.name}-"
            for ns in self._netns_names():
                if ns.startswith(prefix):
                    ip("netns", "delete", ns, check=False)
                    removed["netns"].append(ns)
            for link in self._link_names():
                if link.startswith(prefix):
                    ip("link", "delete", "dev", link, check=False)
                    removed["links"].append(link)
            for mount_point in self._mounts_under(self.dir):
                run_tool(["umount", "-l", mount_point])
                removed["mounts"].append(mount_point)
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.topology is not None:
                self._drop_guard_route()
            else:
                # The subnet was in the damaged lab.json.  A guard left behind only makes a send from the
                # machine to that subnet fail at once, which is what it is for; removing the wrong one is not.
                log.info("lab %s: lab.json was damaged (%s): its guard route, if any, is left in place",
                         self.name, self.damaged)
        (STATE_ROOT / f"{self.name}.lock").unlink(missing_ok=True)
        return removed

    # ----- the fence device (fence_virtd's role, on the fence host) ----------
    def fence_daemon_pid(self) -> int | None:
        try:
            pid = int((self.dir / "fence.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) and str(self.dir) in cmdline(pid) else None

    def start_fence_daemon(self, key: bytes, *, multicast_address: str, port: int) -> int:
        """Start (or restart with a new key) the fence daemon for this lab's fence host."""
        require_root()
        fence = self.topology.fence_host
        if fence is None:
            raise HaconformError("the topology has no host with role fence", where=str(self.topology.path),
                                 fix="add a host with `role: fence`")
        self.stop_fence_daemon()
        key_path = self.dir / "fence_xvm.key"
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        mapping = ",".join(f"{h.fence_name}={h.name}" for h in self.topology.hosts.values() if h.fence_name)
        log = open(self.dir / "fence-daemon.log", "a")
        proc = subprocess.Popen(
            [sys.executable, "-m", "haconform.fence.daemon", "--key", str(key_path),
             "--power-module", "haconform.lab.power:factory", "--map", mapping,
             "--netns", self.netns_path(fence.name), "--interface", "eth0",
             "--multicast-address", multicast_address, "--port", str(port),
             "--log", str(self.dir / "fence-requests.jsonl"), "-v"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={"PATH": HOST_PATH, "LANG": "C.UTF-8", "HACONFORM_FENCE_LAB": self.name,
                 "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        log.close()
        (self.dir / "fence.pid").write_text(f"{proc.pid}\n")
        return proc.pid

    def stop_fence_daemon(self) -> None:
        pid = self.fence_daemon_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            wait_until(f"fence daemon {pid} stopped", lambda: not process_alive(pid), timeout=BOUNDS.host_halt)

    def fence_requests(self) -> list[dict]:
        try:
            lines = (self.dir / "fence-requests.jsonl").read_text().splitlines()
        except OSError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    # ----- internals ---------------------------------------------------------
    def _console_tail(self, host: str) -> str:
        try:
            lines = (self.host_dir(host) / "console.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no console log)"
        return f"power={self.power_state(host)}; console: " + " | ".join(lines[-4:])

    def _ensure_bridge(self) -> None:
        if ip("link", "show", "dev", self.bridge, check=False).returncode == 0:
            return
        if self.external_bridge:
            raise HaconformError(f"bridge {self.external_bridge} does not exist", where=f"lab {self.name}",
                                 fix="start the network that owns it first")
        # No address on the machine's side: addrgenmode none keeps even IPv6
        # link-local off; multicast snooping off so fence_xvm's multicast floods.
        ip_batch([
            f"link add {self.bridge} type bridge stp_state 0 forward_delay 0 mcast_snooping 0",
            f"link set dev {self.bridge} addrgenmode none",
            f"link set dev {self.bridge} up",
        ])

    def _guard_route(self) -> list[str]:
        return ["unreachable", str(self.topology.subnet), "metric", GUARD_METRIC]

    @contextmanager
    def _guard_route_lock(self):
        """One lab at a time looks at and changes the guard route: labs side by side come up and go down
        together, and two adding it at once, or one dropping it while another is adding, must not race."""
        STATE_ROOT.mkdir(parents=True, exist_ok=True)
        with open(STATE_ROOT / ".guard-route.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _ensure_guard_route(self) -> None:
        with self._guard_route_lock():
            existing = ip("route", "show", "table", "main", "exact", str(self.topology.subnet)).stdout
            if "unreachable" not in existing:
                ip("route", "add", *self._guard_route())

    def _drop_guard_route(self) -> None:
        with self._guard_route_lock():
            for other in STATE_ROOT.glob("*/lab.json"):
                try:
                    if json.loads(other.read_text()).get("subnet") == str(self.topology.subnet):
                        return  # another lab on this subnet still relies on the guard
                except (OSError, ValueError):
                    continue
            ip("route", "del", *self._guard_route(), check=False)

    def _power_on(self, host: str) -> None:
        spec = self.topology.host(host)
        hdir = self.host_dir(host)
        for sub in ("upper", "work", "merged"):
            (hdir / sub).mkdir(parents=True, exist_ok=True)
        ns, nic = self.netns(host), self.nic(host)
        if os.path.exists(self.netns_path(host)):
            ip("netns", "delete", ns, check=False)
        ip("link", "delete", "dev", nic, check=False)
        ip("netns", "add", ns)
        ip_batch([
            f"link add {nic} type veth peer name {nic}p netns {ns}",
            f"link set dev {nic} addrgenmode none",
            f"link set dev {nic} master {self.bridge}",
            f"link set dev {nic} up",
        ])
        ip_batch([
            "link set dev lo up",
            f"link set dev {nic}p name eth0 address {self.mac(host)}",
            f"addr add {spec.address}/{self.topology.prefixlen} dev eth0",
            "link set dev eth0 up",
            # fence_xvm's request is multicast; an isolated lab has no default route
            "route add 224.0.0.0/4 dev eth0",
        ], netns=ns)
        boot_id = str(uuid.uuid4())
        config = {
            "lab": self.name, "host": host, "boot_id": boot_id,
            "upper": str(hdir / "upper"), "work": str(hdir / "work"), "merged": str(hdir / "merged"),
            "state_root": str(STATE_ROOT.parent), "pid_file": str(hdir / "pid"),
            "services": self.topology.role_services[spec.role],
            "machine_id": hashlib.md5(f"{self.name}/{host}".encode()).hexdigest(),
            "etc_hosts": self._etc_hosts(),
            "systemctl_shim": str(Path(__file__).with_name("systemctl.sh")),
            "harness_paths": harness_paths_hidden_by_fresh_tmp(),
        }
        (hdir / "pid").unlink(missing_ok=True)
        (hdir / "init.json").write_text(json.dumps(config, indent=1))
        console = open(hdir / "console.log", "a")
        subprocess.Popen(
            ["nsenter", f"--net={self.netns_path(host)}", "--",
             "unshare", "--mount", "--uts", "--ipc", "--pid", "--fork", "--kill-child",
             sys.executable, "-m", "haconform.lab.init", str(hdir / "init.json")],
            stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            start_new_session=True, cwd="/",
            env={"PATH": HOST_PATH, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
                 "LANG": "C.UTF-8"})
        console.close()
        (hdir / "power").write_text("on\n")
        wait_until(f"{host} init started", lambda: self.init_pid(host),
                   timeout=BOUNDS.host_boot, observe=lambda: self._console_tail(host))

    def _power_off(self, host: str, state: str) -> None:
        # The NIC first, as a power cut: the host's addresses leave the network at once.
        ip("link", "delete", "dev", self.nic(host), check=False)
        pid = self.init_pid(host)
        if pid:
            os.kill(pid, signal.SIGKILL)
            wait_until(f"{host} PID 1 ({pid}) gone", lambda: not process_alive(pid),
                       timeout=BOUNDS.host_halt)
        ip("netns", "delete", self.netns(host), check=False)
        (self.host_dir(host) / "power").write_text(state + "\n")

    def _etc_hosts(self) -> str:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", ""]
        lines += [f"{h.address}\t{h.name}" for h in self.topology.hosts.values()]
        return "\n".join(lines) + "\n"

    def _lab_processes(self, marker: str) -> list[int]:
        me = os.getpid()
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != me:
                if marker in cmdline(int(entry.name)) and process_alive(int(entry.name)):
                    pids.append(int(entry.name))
        return pids

    @staticmethod
    def _netns_names() -> list[str]:
        out = run_tool(["ip", "netns", "list"]).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    @staticmethod
    def _link_names() -> list[str]:
        links = json.loads(run_tool(["ip", "-j", "link", "show"]).stdout or "[]")
        # bridge last: its ports go first
        names = [link["ifname"] for link in links]
        return sorted(names, key=lambda n: n.endswith("-br"))

    @staticmethod
    def _mounts_under(directory: Path) -> list[str]:
        prefix = str(directory) + "/"
        points = []
        with open("/proc/self/mounts") as fh:
            for line in fh:
                point = line.split()[1]
                if point.startswith(prefix):
                    points.append(point)
        return sorted(points, reverse=True)


def list_labs() -> list[str]:
    return sorted(p.parent.name for p in STATE_ROOT.glob("*/lab.json"))
