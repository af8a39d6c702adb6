"""The Vagrant box: Debian bookworm with every package the runbook's hosts run.

Built offline from the machine's own apt mirror (its sources and its package
cache), without loop devices or a bootloader:

    debootstrap --variant=minbase   -> rootfs (with Debian's kernel and initrd)
    mkfs.ext4 -d rootfs             -> raw disk image on a sparse file
    qemu-img convert -O qcow2       -> box.img
    tar metadata.json box.img Vagrantfile -> haconform-bookworm.box; `vagrant box add`

The guests boot the kernel and initrd taken out of the rootfs directly (libvirt
direct kernel boot: root=/dev/vda), so the image needs no partition table or
grub.  The box is rebuilt only when its inputs change: the package list, this
file, the kernel package's version and the ssh public key.  Their hash is stored
next to the box (inputs.sha256).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import HaconformError
from ..packages import DEBIAN_PACKAGES
from ..timeouts import BOUNDS
from . import STATE_ROOT

log = logging.getLogger("haconform.vm.box")

BOX_NAME = "haconform/bookworm"
SUITE = "bookworm"
BOX_DIR = Path(STATE_ROOT) / "box"
DISK_SIZE_MIB = 4096
# What a Vagrant guest needs besides the runbook's packages (debootstrap installs
# these; apt inside the new root installs the rest: debootstrap's own resolver
# does not follow virtual packages such as python3-cffi-backend-api-min).
BASE_PACKAGES = (
    "systemd-sysv", "openssh-server", "udev", "kmod", "iproute2", "ifupdown", "isc-dhcp-client",
    "sudo", "python3", "procps", "less", "ca-certificates",
)
KERNEL_PACKAGES = ("linux-image-amd64", "initramfs-tools")
# Tools the suites run inside hosts that the lab's hosts get from the machine
# (they are not the runbook's, so haconform.packages does not list them).
SUITE_TOOLS = ("tcpdump",)
# Lab-only helpers a guest does not need (the guest has systemd and its own init scripts).
NOT_IN_GUESTS = {"util-linux"}   # essential already; listed for the lab's nsenter
# The runbook's services are off in the box: each guest enables its role's (topology roles:).
SERVICES_OFF = ("haproxy", "apache2", "apache-htcacheclean", "pacemaker", "corosync", "pcsd",
                "pcsd-ruby", "pacemaker_remote", "corosync-qdevice")
# Units a Debian install enables that the runbook's hosts do not need and that cost a one-vCPU TCG
# guest dearly: at boot (e2scrub_reap, cluster-glue's ha_logd, which pacemaker 2 does not use) or
# when a timer fires in the middle of a run (apt, man-db, e2scrub, fstrim, the dpkg backup, PHP's
# session clean-up every half hour, and logrotate, which would also move the logs a test watches).
UNITS_OFF = ("e2scrub_reap.service", "e2scrub_all.timer", "logd.service", "apt-daily.timer",
             "apt-daily-upgrade.timer", "man-db.timer", "fstrim.timer", "dpkg-db-backup.timer",
             "phpsessionclean.timer", "logrotate.timer")
KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0 biosdevname=0"


def guest_packages() -> list[str]:
    """Everything apt installs in the guest after debootstrap (the kernel and the runbook's packages)."""
    runbook = [p for p in DEBIAN_PACKAGES if p not in NOT_IN_GUESTS]
    return sorted((set(KERNEL_PACKAGES) | set(SUITE_TOOLS) | set(runbook)) - set(BASE_PACKAGES))


def all_packages() -> list[str]:
    return sorted(set(BASE_PACKAGES) | set(guest_packages()))


def apt_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The machine's Debian mirror for the main suite, read from its apt sources."""
    candidates: list[tuple[str, list[str]]] = []
    one_line = sources_dir / "sources.list"
    if one_line.exists():
        for line in one_line.read_text().splitlines():
            fields = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(fields) >= 3 and fields[0] == "deb":
                candidates.append((fields[1], [fields[2]]))
    for path in sorted((sources_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[0].isspace():
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("uris"):
                candidates.append((fields["uris"].split()[0], fields.get("suites", "").split()))
    for uri, suites in candidates:
        if SUITE in suites:
            return uri.rstrip("/")
    raise HaconformError(f"no apt source for Debian {SUITE} on this machine", where=str(sources_dir),
                         fix=f"add a `{SUITE} main` source (the box is built from the machine's own mirror)")


def candidate_version(package: str) -> str:
    """The version apt would install, from its machine-readable policy output."""
    out = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True,
                         timeout=BOUNDS.cli_query).stdout
    match = re.search(r"Candidate:\s*(\S+)", out)
    return match.group(1) if match and match.group(1) != "(none)" else "unknown"


@dataclass(frozen=True)
class BoxInputs:
    packages: tuple[str, ...]
    builder_source: str     # sha256 of this file
    kernel_version: str     # linux-image-amd64's candidate version
    ssh_public_key: str

    def digest(self) -> str:
        text = json.dumps({"packages": list(self.packages), "builder": self.builder_source,
                           "kernel": self.kernel_version, "ssh_key": self.ssh_public_key.strip()},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def builder_digest() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def ensure_ssh_key(box_dir: Path = BOX_DIR) -> Path:
    """The project's key pair for the guests' root (private part stays in the state dir)."""
    key = box_dir / "id_rsa"
    if not key.exists():
        box_dir.mkdir(parents=True, exist_ok=True)
        # RSA in PEM: what Vagrant's net-ssh reads without extra gems.
        subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "3072", "-m", "PEM", "-N", "",
                        "-C", "haconform-vm", "-f", str(key)], check=True, timeout=BOUNDS.cli_query)
    return key


def current_inputs(box_dir: Path = BOX_DIR) -> BoxInputs:
    key = ensure_ssh_key(box_dir)
    return BoxInputs(packages=tuple(all_packages()), builder_source=builder_digest(),
                     kernel_version=candidate_version("linux-image-amd64"),
                     ssh_public_key=key.with_suffix(".pub").read_text())


@dataclass
class BoxFiles:
    directory: Path

    box = property(lambda self: self.directory / "haconform-bookworm.box")
    kernel = property(lambda self: self.directory / "vmlinuz")
    initrd = property(lambda self: self.directory / "initrd.img")
    inputs = property(lambda self: self.directory / "inputs.sha256")
    ssh_key = property(lambda self: self.directory / "id_rsa")
    record = property(lambda self: self.directory / "build.json")


def box_is_current(files: BoxFiles, inputs: BoxInputs) -> bool:
    try:
        stored = files.inputs.read_text().strip()
    except OSError:
        return False
    return (stored == inputs.digest() and files.kernel.exists() and files.initrd.exists()
            and BOX_NAME in vagrant_boxes())


def vagrant_boxes() -> list[str]:
    if shutil.which("vagrant") is None:
        return []
    out = subprocess.run(["vagrant", "box", "list", "--machine-readable"], capture_output=True, text=True,
                         env=vagrant_env(), timeout=BOUNDS.command).stdout
    # machine-readable rows: timestamp,target,type,data
    return [row.split(",")[3] for row in out.splitlines() if row.count(",") >= 3 and row.split(",")[2] == "box-name"]


def vagrant_env() -> dict:
    return dict(os.environ, VAGRANT_DEFAULT_PROVIDER="libvirt", VAGRANT_CHECKPOINT_DISABLE="1")


def box_metadata(virtual_size_gib: int) -> dict:
    return {"provider": "libvirt", "format": "qcow2", "virtual_size": virtual_size_gib}


BOX_VAGRANTFILE = """# haconform's box: the project Vagrantfile sets the guest's settings.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "qemu"
  end
end
"""

# eth0 is the cluster NIC, as on the runbook's single-NIC VMs (suites name it:
# `ip addr del VIP dev eth0`); the Vagrantfile puts it in a lower PCI slot than
# the management NIC, which so becomes eth1.  Provisioning configures eth0.
GUEST_NETWORK = """# haconform box: eth1 is Vagrant's management network (DHCP); the cluster NIC
# eth0 is configured by the guest's provisioning from the topology.
auto lo
iface lo inet loopback

auto eth1
iface eth1 inet dhcp

source /etc/network/interfaces.d/*
"""

HOSTKEYS_UNIT = """[Unit]
Description=ssh host keys of this guest (the box ships none, so guests do not share them)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
# ed25519 and ECDSA only: an RSA host key takes a TCG guest half a minute of its one vCPU at first boot.
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key
ExecStart=/usr/bin/ssh-keygen -q -t ecdsa -N "" -f /etc/ssh/ssh_host_ecdsa_key

[Install]
WantedBy=multi-user.target
"""


def _run(argv: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    # Each step of the build within the bound of the whole build: a hung mirror or a
    # stuck loop device ends the build with one error instead of never.
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=BOUNDS.vm_box_build, **kwargs)
    except subprocess.TimeoutExpired:
        raise HaconformError(f"{what} did not finish within {BOUNDS.vm_box_build:g}s", where="haconform vm box build",
                             fix="check the apt mirror and free disk space, then rerun") from None
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise HaconformError(f"{what} failed (exit {result.returncode}): {' | '.join(tail)}",
                             where="haconform vm box build", fix="see the lines above; rerun after fixing")
    return result


# Runs in a private mount namespace (unshare -m): /proc and the machine's apt
# cache are mounted into the new root for the install and vanish with it.
# policy-rc.d: nothing the packages install is started (there is no guest yet).
CHROOT_INSTALL = r"""set -e
R="$1"; MIRROR="$2"; shift 2
mount -t proc proc "$R/proc"
mount --bind /var/cache/apt/archives "$R/var/cache/apt/archives"
printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"
chmod 755 "$R/usr/sbin/policy-rc.d"
echo "deb $MIRROR bookworm main" > "$R/etc/apt/sources.list"
chroot "$R" apt-get update -q
chroot "$R" apt-get install -y -q "$@"
rm -f "$R/usr/sbin/policy-rc.d"
"""


def _chroot(rootfs: Path, command: str, what: str) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    _run(["chroot", str(rootfs), "/bin/sh", "-c", command], what, env=env)


def configure_rootfs(rootfs: Path, public_key: str) -> None:
    """Make the debootstrapped tree a bootable, ssh-reachable Vagrant guest."""
    (rootfs / "etc/fstab").write_text("/dev/vda / ext4 defaults,errors=remount-ro 0 1\n")
    (rootfs / "etc/hostname").write_text("haconform-box\n")
    (rootfs / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    (rootfs / "etc/network/interfaces").write_text(GUEST_NETWORK)
    ssh_dir = rootfs / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(public_key.strip() + "\n")
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    sshd_conf = rootfs / "etc/ssh/sshd_config.d/haconform.conf"
    sshd_conf.write_text("PermitRootLogin prohibit-password\nUseDNS no\nPasswordAuthentication no\n"
                         "HostKey /etc/ssh/ssh_host_ed25519_key\nHostKey /etc/ssh/ssh_host_ecdsa_key\n")
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/systemd/system/haconform-hostkeys.service").write_text(HOSTKEYS_UNIT)
    # Every guest gets its own machine id at first boot (corosync and DHCP tell guests apart by it).
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    services_off = " ".join(SERVICES_OFF)
    # javascript-common's Alias /javascript (enabled when it is installed after apache2)
    # would answer the runbook's /javascript static prefix; the lab's hosts, like the
    # machine, do not have it enabled.
    (rootfs / "etc/apache2/conf-enabled/javascript-common.conf").unlink(missing_ok=True)
    _chroot(rootfs, "systemctl enable haconform-hostkeys.service ssh.service && "
                    f"for s in {services_off}; do systemctl disable $s 2>/dev/null || true; done && "
                    f"for u in {' '.join(UNITS_OFF)}; do systemctl disable $u 2>/dev/null || true; done && "
                    "passwd -l root >/dev/null && apt-get clean", "configuring the guest")


def kernel_files(rootfs: Path) -> tuple[Path, Path]:
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise HaconformError("no kernel in the box's root filesystem", where=str(rootfs / "boot"),
                             fix="linux-image-amd64 must be among the packages")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    initrd = rootfs / "boot" / f"initrd.img-{version}"
    if not initrd.exists():
        raise HaconformError(f"no initrd for kernel {version}", where=str(rootfs / "boot"),
                             fix="initramfs-tools must be among the packages")
    return kernels[-1], initrd


def build_box(*, force: bool = False, box_dir: Path = BOX_DIR, say=print) -> dict:
    """Build and add the box unless the one added has the same inputs."""
    if os.geteuid() != 0:
        raise HaconformError("building the box needs root (debootstrap, chroot)", where="haconform vm box build",
                             fix="run as root")
    files = BoxFiles(box_dir)
    inputs = current_inputs(box_dir)
    if not force and box_is_current(files, inputs):
        say(f"box {BOX_NAME}: up to date (inputs {inputs.digest()[:12]})")
        return {"built": False, "inputs": inputs.digest(), "seconds": 0.0}
    began = time.monotonic()
    figures: dict[str, float] = {}
    work = box_dir / "work"
    rootfs, raw = work / "rootfs", work / "disk.raw"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    mirror = apt_mirror()
    packages = guest_packages()
    cache = Path("/var/cache/apt/archives")
    say(f"box: debootstrap {SUITE} minbase from {mirror} with {len(BASE_PACKAGES)} base packages")
    step = time.monotonic()
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
          *([f"--cache-dir={cache}"] if cache.is_dir() else []),
          SUITE, str(rootfs), mirror], "debootstrap")
    figures["debootstrap_s"] = round(time.monotonic() - step, 1)
    say(f"box: debootstrap done in {figures['debootstrap_s']}s; apt-get install {len(packages)} packages")
    step = time.monotonic()
    _run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", CHROOT_INSTALL, "chroot-install",
          str(rootfs), mirror, *packages], "apt-get install in the new root",
         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"})
    figures["apt_install_s"] = round(time.monotonic() - step, 1)
    say(f"box: packages installed in {figures['apt_install_s']}s; configuring the guest")
    configure_rootfs(rootfs, inputs.ssh_public_key)
    kernel, initrd = kernel_files(rootfs)
    shutil.copyfile(kernel, files.kernel)
    shutil.copyfile(initrd, files.initrd)
    for path in (files.kernel, files.initrd):
        os.chmod(path, 0o644)
    say(f"box: kernel {kernel.name}; making the ext4 disk ({DISK_SIZE_MIB} MiB, sparse)")
    step = time.monotonic()
    with open(raw, "wb") as fh:
        fh.truncate(DISK_SIZE_MIB * 1024 * 1024)
    _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(rootfs), str(raw)], "mkfs.ext4 -d")
    image = work / "box.img"
    _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(image)], "qemu-img convert")
    raw.unlink()
    figures["image_s"] = round(time.monotonic() - step, 1)
    (work / "metadata.json").write_text(json.dumps(box_metadata(DISK_SIZE_MIB // 1024)))
    (work / "Vagrantfile").write_text(BOX_VAGRANTFILE)
    say(f"box: image {image.stat().st_size // 2**20} MiB in {figures['image_s']}s; packing and adding to Vagrant")
    step = time.monotonic()
    with tarfile.open(files.box, "w") as tar:
        for name in ("metadata.json", "Vagrantfile", "box.img"):
            tar.add(work / name, arcname=name)
    shutil.rmtree(work, ignore_errors=True)
    _run(["vagrant", "box", "add", "--force", "--name", BOX_NAME, str(files.box)], "vagrant box add",
         env=vagrant_env())
    figures["box_add_s"] = round(time.monotonic() - step, 1)
    files.inputs.write_text(inputs.digest() + "\n")
    figures["total_s"] = round(time.monotonic() - began, 1)
    record = {"built": True, "inputs": inputs.digest(), "seconds": figures["total_s"], "figures": figures,
              "kernel": kernel.name, "packages": all_packages(), "built_at": time.time()}
    files.record.write_text(json.dumps(record, indent=1))
    say(f"box {BOX_NAME}: built in {figures['total_s']}s ({figures})")
    return record
