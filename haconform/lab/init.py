"""PID 1 of a lab host: makes the host's filesystem, starts its services, reaps.

Started by the lab in fresh mount, UTS, IPC and PID namespaces inside the
host's network namespace:

    python -m haconform.lab.init /var/lib/haconform/labs/LAB/hosts/HOST/init.json

It boots like a small machine:
  1. the root filesystem: an overlay of the machine's / with the host's own
     upper directory (its disk), fresh /proc, /sys, /dev, /run, /tmp, /dev/shm;
  2. the boot id of this boot over /proc/sys/kernel/random/boot_id, so software
     that asks the kernel for it (pacemaker does) sees a new one each boot;
  3. pivot_root into it, hostname;
  4. on the very first boot, installs the host: /etc/hostname, /etc/hosts,
     /etc/machine-id, and disables (update-rc.d) every service that the host's
     role does not run;
  5. starts the services enabled in its own /etc/rc2.d, in order;
  6. reaps orphans until told to shut down (SIGTERM), then stops the services it
     started in reverse order and ends every remaining process.

A power-off is not this program's business: the lab kills PID 1 with SIGKILL
and the kernel ends the whole PID namespace at once, as a power cut would.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from . import linux

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INSTALLED_MARK = "/var/lib/haconform-host/installed"
SERVICE_TIMEOUT = 60  # an init script that hangs longer is reported and skipped
STOP_GRACE = 5

DEVICES = {  # name: (major, minor)
    "null": (1, 3), "zero": (1, 5), "full": (1, 7),
    "random": (1, 8), "urandom": (1, 9), "tty": (5, 0),
}


class Shutdown(Exception):
    pass


def say(message: str) -> None:
    print(f"[init {time.strftime('%H:%M:%S')}] {message}", flush=True)


def build_root(cfg: dict) -> None:
    merged = cfg["merged"]
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    linux.mount("overlay", merged, "overlay", 0,
                f"lowerdir=/,upperdir={cfg['upper']},workdir={cfg['work']}")
    linux.mount("proc", f"{merged}/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    linux.mount("sysfs", f"{merged}/sys", "sysfs",
                linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)

    dev = f"{merged}/dev"
    linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID, "mode=755,size=1m")
    for name, (major, minor) in DEVICES.items():
        os.mknod(f"{dev}/{name}", stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(f"{dev}/{name}", 0o666)
    os.mkdir(f"{dev}/pts")
    linux.mount("devpts", f"{dev}/pts", "devpts", linux.MS_NOSUID | linux.MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=620")
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    os.mkdir(f"{dev}/shm")
    linux.mount("tmpfs", f"{dev}/shm", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=1777")
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{fd}", f"{dev}/{name}")
    os.symlink("/proc/self/fd", f"{dev}/fd")

    linux.mount("tmpfs", f"{merged}/run", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=755")
    os.makedirs(f"{merged}/run/lock", mode=0o1777)
    linux.mount("tmpfs", f"{merged}/tmp", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=1777")
    for path in cfg.get("harness_paths", []):   # still the machine's, until pivot_root
        os.makedirs(f"{merged}{path}", exist_ok=True)
        linux.mount(path, f"{merged}{path}", None, linux.MS_BIND | linux.MS_REC)
    # The machine's lab state (every host's disk) is not this host's business.
    if os.path.isdir(f"{merged}{cfg['state_root']}"):
        linux.mount("tmpfs", f"{merged}{cfg['state_root']}", "tmpfs", 0, "mode=700,size=64k")

    os.makedirs(f"{merged}/run/haconform", exist_ok=True)
    boot_id = f"{merged}/run/haconform/boot_id"
    Path(boot_id).write_text(cfg["boot_id"] + "\n")
    linux.mount(boot_id, f"{merged}/proc/sys/kernel/random/boot_id", None, linux.MS_BIND)

    os.chdir(merged)
    linux.pivot_root(".", ".")
    linux.umount(".", linux.MNT_DETACH)
    os.chdir("/")
    import socket
    socket.sethostname(cfg["host"])


def run(argv: list[str], timeout: float = SERVICE_TIMEOUT) -> int:
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, timeout=timeout,
                              env=service_env()).returncode
    except subprocess.TimeoutExpired:
        say(f"{' '.join(argv)}: still running after {timeout}s, going on")
        return -1


def service_env() -> dict:
    return {"PATH": PATH, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb",
            "RUNLEVEL": "2", "PREVLEVEL": "N"}


def install(cfg: dict) -> None:
    """First boot: what an installer would write, and the role's service set."""
    Path("/etc/hostname").write_text(cfg["host"] + "\n")
    Path("/etc/hosts").write_text(cfg["etc_hosts"])
    Path("/etc/machine-id").write_text(cfg["machine_id"] + "\n")
    keep = set(cfg["services"])
    for link in sorted(Path("/etc/rc2.d").glob("S*")):
        name = link.name[3:]
        if name not in keep:
            run(["update-rc.d", name, "disable"])
    for name in cfg["services"]:
        if not list(Path("/etc/rc2.d").glob(f"S??{name}")):
            run(["update-rc.d", name, "enable"])
    systemctl = Path("/usr/bin/systemctl")
    systemctl.write_text(cfg["systemctl_shim_text"])
    systemctl.chmod(0o755)
    os.makedirs(os.path.dirname(INSTALLED_MARK), exist_ok=True)
    Path(INSTALLED_MARK).write_text(cfg["boot_id"] + "\n")


def lsb_header(script: Path) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    try:
        text = script.read_text(errors="replace")
    except OSError:
        return fields
    inside = False
    for line in text.splitlines():
        if line.startswith("### BEGIN INIT INFO"):
            inside = True
        elif line.startswith("### END INIT INFO"):
            break
        elif inside and ":" in line:
            key, value = line.lstrip("# ").split(":", 1)
            fields[key.strip()] = value.split()
    return fields


def boot_order(links: list[Path]) -> list[Path]:
    """Order enabled scripts by their LSB Required-/Should-Start, as insserv would.

    (Without insserv every link is S01 and name order would start pcsd
    before the pcsd-ruby it requires.)"""
    by_name = {link.name[3:]: link for link in links}
    provides = {}
    for name, link in by_name.items():
        for facility in lsb_header(link).get("Provides", [name]):
            provides[facility] = name
    provides.setdefault("$syslog", "rsyslog")
    ordered: list[Path] = []
    state: dict[str, str] = {}

    def visit(name: str) -> None:
        if state.get(name) == "done" or state.get(name) == "visiting":
            return
        state[name] = "visiting"
        header = lsb_header(by_name[name])
        for dep in header.get("Required-Start", []) + header.get("Should-Start", []):
            target = provides.get(dep)
            if target in by_name and target != name:
                visit(target)
        state[name] = "done"
        ordered.append(by_name[name])

    for name in sorted(by_name, key=lambda n: by_name[n].name):
        visit(name)
    return ordered


def start_services() -> list[str]:
    started = []
    for link in boot_order(sorted(Path("/etc/rc2.d").glob("S*"))):
        name = link.name[3:]
        began = time.monotonic()
        rc = run([str(link), "start"])
        say(f"start {name}: exit {rc} in {time.monotonic() - began:.2f}s")
        started.append(name)
    Path("/run/haconform/started").write_text("\n".join(started) + "\n")
    return started


def stop_everything(started: list[str]) -> None:
    for name in reversed(started):
        rc = run([f"/etc/init.d/{name}", "stop"], timeout=STOP_GRACE * 4)
        say(f"stop {name}: exit {rc}")
    os.kill(-1, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)  # reaping cadence while processes exit, bounded by the deadline
    os.kill(-1, signal.SIGKILL)


def main(config_path: str) -> int:
    cfg = json.loads(Path(config_path).read_text())
    # Read now: after pivot_root the harness's checkout may be out of sight (e.g. under /tmp).
    cfg["systemctl_shim_text"] = Path(cfg["systemctl_shim"]).read_text()
    # Before /proc is replaced, /proc/self still names us in the machine's PID
    # namespace: the lab needs that number to power us off.
    Path(cfg["pid_file"]).write_text(os.readlink("/proc/self") + "\n")
    say(f"booting {cfg['host']} boot_id={cfg['boot_id']}")
    build_root(cfg)
    # A machine's default soft limit, not whatever the shell that ran `lab up`
    # had (the hard limit cannot be raised without CAP_SYS_RESOURCE, so it stays).
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    os.environ.clear()
    os.environ.update(service_env())

    def request_shutdown(signum, frame):
        raise Shutdown()

    signal.signal(signal.SIGTERM, request_shutdown)
    signal.signal(signal.SIGINT, request_shutdown)
    # pause() below returns only for a handled signal: an orphan's death must wake us.
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    started: list[str] = []
    try:
        if not os.path.exists(INSTALLED_MARK):
            install(cfg)
            say("first boot: installed")
        started = start_services()
        Path("/run/haconform/booted").write_text(cfg["boot_id"] + "\n")
        say("boot complete")
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                signal.pause()
    except Shutdown:
        say("shutdown requested")
        stop_everything(started)
        say("halted")
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
