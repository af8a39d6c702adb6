"""The Debian packages a lab host needs, in one place, and installing them.

Installing must start nothing in the machine's own namespaces: Debian's
maintainer scripts ask /usr/sbin/policy-rc.d, and exit code 101 means
"do not start".  We put that file in place for the duration of the install
and restore whatever was there before.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess

from .errors import HaconformError
from .timeouts import BOUNDS

# package -> why the harness needs it
DEBIAN_PACKAGES = {
    "haproxy": "the load balancer under test (directors)",
    "rsyslog": "HAProxy's log sink (directors), system log on every host",
    "orphan-sysvinit-scripts": "/etc/init.d/rsyslog: lab hosts boot without systemd",
    "apache2": "real servers",
    "libapache2-mod-php": "real servers' index.php and upload_file.php",
    "pacemaker": "cluster resource manager (directors)",
    "corosync": "cluster membership (directors)",
    "pcs": "the runbook's cluster shell, and pcsd",
    "resource-agents": "ocf:heartbeat:IPaddr2",
    "fence-agents": "fence agents known to pacemaker",
    "fence-virt": "fence_xvm, the runbook's fence agent",
    "iproute2": "lab networking",
    "util-linux": "nsenter, unshare",
    "iputils-ping": "reachability checks from the client host",
    "arping": "ARP checks of the VIP from the client host",
    "procps": "ps/pkill inside hosts",
    "psmisc": "killall used by init scripts",
    "socat": "HAProxy runtime API over its UNIX socket",
    "curl": "ad-hoc checks inside hosts",
    "wrk": "reference load generator for performance runs",
    "tcpdump": "X-Forwarded-For read on the real server's NIC (HAC-LOG-004)",
    "openssh-server": "the SSH target's own tests: a lab reached only over ssh (tests/sshlab.py; never started on the machine)",
    "netcat-openbsd": "those tests' ProxyCommand: ssh into the lab through its client namespace",
    "strace": "tests/test_no_secret_leaks.py: every exec's argv during a conformance run",
}

# The VM target's packages (`haconform vm install`), kept apart: `haconform lab
# install` never installs them.  package -> why
VM_PACKAGES = {
    "vagrant": "drives the guests (`vagrant up`, ssh-config, destroy)",
    "vagrant-libvirt": "Vagrant's libvirt provider",
    "libvirt-daemon-system": "libvirtd, virtlogd, virtlockd and the qemu driver",
    "libvirt-clients": "virsh: power control and network/pool definitions",
    "qemu-system-x86": "the guests (TCG where KVM is unusable)",
    "qemu-utils": "qemu-img: the box's qcow2 image",
    "dnsmasq-base": "DHCP on the management network (vagrant-libvirt reads guest addresses from leases)",
    "iptables": "libvirt refuses to start a network with an <ip> section without it",
    "debootstrap": "builds the box's Debian root filesystem offline from the apt mirror",
    "e2fsprogs": "mkfs.ext4 -d: the box's disk without loop devices",
    "fence-virtd": "fence_virtd with its multicast listener and libvirt backend (the runbook's physical host)",
    "fence-virt": "fence_xvm, to check the fence device from the machine's side",
}

POLICY_RC_D = "/usr/sbin/policy-rc.d"
INSTALL_LOCK = "/run/lock/haconform-install.lock"

# How long apt-get waits for another apt/dpkg (unattended-upgrades, a second `lab install`)
# to release dpkg's lock, and how long one apt-get run may take in all: the lab's packages
# and their dependencies from a slow mirror, unpacked on a loaded 2-core machine.
# (Candidates for haconform/timeouts.py BOUNDS: apt_lock, apt_run.)
APT_LOCK_WAIT_S = int(BOUNDS.apt_lock)
APT_RUN_S = BOUNDS.apt_run


def missing_packages(packages=None) -> list[str]:
    packages = list(packages or DEBIAN_PACKAGES)
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages],
        capture_output=True, text=True, timeout=BOUNDS.cli_query,
    ).stdout
    installed = {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}
    return [p for p in packages if p not in installed]


def ensure_installed(packages=None, *, install: bool = True) -> list[str]:
    """Install what is missing without starting daemons; return what was installed."""
    if shutil.which("dpkg-query") is None or shutil.which("apt-get") is None:
        raise HaconformError(
            "this machine has no dpkg/apt-get", where="haconform.packages",
            fix="run the embedded lab on Debian 12 (or use --target vagrant/ssh)")
    missing = missing_packages(packages)
    if not missing:
        return []
    if not install:
        raise HaconformError(
            f"missing Debian packages: {' '.join(missing)}", where="haconform.packages",
            fix=f"apt-get install -y {' '.join(missing)} (or run `haconform lab install`)")
    with install_lock():
        # Another install (CI runs two jobs at once) may have installed them while this one waited.
        missing = missing_packages(packages)
        return _install(missing) if missing else []


@contextlib.contextmanager
def install_lock():
    """One install at a time on the machine: each one puts its policy-rc.d in place and restores what was
    there, and two at once would restore each other's."""
    os.makedirs(os.path.dirname(INSTALL_LOCK), exist_ok=True)
    with open(INSTALL_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _install(missing: list[str]) -> list[str]:
    saved = None
    if os.path.exists(POLICY_RC_D):
        with open(POLICY_RC_D, "rb") as fh:
            saved = fh.read()
    with open(POLICY_RC_D, "w") as fh:
        fh.write("#!/bin/sh\n# haconform: install packages without starting daemons\nexit 101\n")
    os.chmod(POLICY_RC_D, 0o755)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        update = apt_get(["update", "-q"], env)
        result = apt_get(["install", "-y", "-q", "-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT_S}", *missing], env)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout or update.stderr).strip().splitlines()[-3:]
            raise HaconformError(
                f"apt-get could not install {' '.join(missing)}: {' | '.join(tail)}",
                where="haconform.packages", fix="check the machine's apt sources and retry")
    finally:
        if saved is None:
            os.unlink(POLICY_RC_D)
        else:
            with open(POLICY_RC_D, "wb") as fh:
                fh.write(saved)
    return missing


def apt_get(args: list[str], env: dict) -> subprocess.CompletedProcess:
    argv = ["apt-get", *args]
    try:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=APT_RUN_S)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or exc.stdout or "")
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        raise HaconformError(
            f"`{' '.join(argv)}` did not finish within {APT_RUN_S:g}s: "
            f"{' | '.join(tail.strip().splitlines()[-3:]) or 'no output'}",
            where="haconform.packages",
            fix="see whether another apt or dpkg holds the lock (`ps -ef | grep -e apt -e dpkg`); after an "
                "interrupted install run `dpkg --configure -a`, then retry") from None
