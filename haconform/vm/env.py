"""One set of guests: `haconform vm up|down|status|inventory`.

Everything an environment makes carries its name (default `hacvm`), so `down`
finds all of it from names alone, even after the harness was SIGKILLed:

    state directory   /var/lib/haconform/vm/NAME/ (env.json, ssh_config, logs,
                      Vagrant's dotfile directory, daemons we started, fence_virtd,
                      the KVM probe's boot and result)
    libvirt           networks NAME-cluster (bridge hcbr-NAME, no <ip>) and
                      NAME-mgmt (vagrant-libvirt's management network), pool
                      NAME-pool, domains = the guests' fence names (Node1, ...)
    namespace lab     NAME (the topology's fence and client hosts, plugged into
                      virbr-NAMEc; see haconform.lab.lab.NamespaceLab)

The machine's root namespace gets no address or route in the topology's
subnet: the cluster network has no host side, and the lab adds its
`unreachable` guard route.  The harness reaches guests over the management
network only (ssh with the ssh_config written here).
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import logging
import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import HaconformError, WaitTimeout
from ..redaction import redacted_tail
from ..stages.catalogue import documented as documented_stages
from ..timeouts import BOUNDS
from ..topology import Topology, load_topology
from ..wait import wait_until
from . import STATE_ROOT, libvirt
from .box import BOX_DIR, BOX_NAME, BoxFiles, box_is_current, current_inputs, vagrant_env
from .fence import FenceVirtd

REPO = Path(__file__).resolve().parents[2]
ENV_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")
DEFAULT_ENV = "hacvm"
GUEST_ROLES = ("director", "realserver")
LAB_RANGE = ipaddress.IPv4Network("172.25.0.0/16")
DEFAULT_MGMT = "10.231.5.0/24"
DEFAULT_MEMORY_MIB = 640

log = logging.getLogger("haconform.vm.env")


def mgmt_subnet() -> ipaddress.IPv4Network:
    """The management /24 (HACONFORM_VM_MGMT_ADDRESS): never inside the runbook's 172.25.0.0/16."""
    text = os.environ.get("HACONFORM_VM_MGMT_ADDRESS", DEFAULT_MGMT)
    try:
        subnet = ipaddress.IPv4Network(text)
    except ValueError as exc:
        raise HaconformError(f"HACONFORM_VM_MGMT_ADDRESS={text!r}: {exc}", where="environment",
                             fix=f"write a /24 such as {DEFAULT_MGMT}") from None
    if subnet.overlaps(LAB_RANGE) or subnet.prefixlen != 24:
        raise HaconformError(f"management network {subnet} must be a /24 outside {LAB_RANGE}",
                             where="HACONFORM_VM_MGMT_ADDRESS",
                             fix=f"the machine gets an address on it; use e.g. {DEFAULT_MGMT}")
    return subnet


# ----- KVM or TCG: the guests' libvirt domain type ---------------------------------------------
DRIVERS = ("auto", "qemu", "kvm")
QEMU = "qemu-system-x86_64"
KVM_DEVICE = Path("/dev/kvm")
KVM_PROBE_MARKER = "haconform-kvm-probe: userspace ran"
KVM_PROBE_FILE = "kvm-probe.json"
KVM_PROBE_MEMORY_MIB = 256
# The probe boot's bound (proposed BOUNDS.vm_kvm_probe).  TCG brings Debian's kernel to its
# first userspace program in ~5 s on a 2-core machine, KVM in under 1 s: a KVM boot that is not
# there after 20 s is hung or emulated (docs/kvm-findings.md), and no faster than TCG anyway.
KVM_PROBE_BOUND_S = BOUNDS.vm_kvm_probe
# qemu gone after SIGKILL (proposed BOUNDS.vm_qemu_exit): a process we started and killed.
QEMU_EXIT_BOUND_S = BOUNDS.vm_qemu_exit
# What the probe guest runs as PID 1: print the marker and exit; the kernel then panics
# ("Attempted to kill init!"), panic=-1 reboots at once and -no-reboot makes qemu exit.
PROBE_INIT = f"#!/bin/sh\necho '{KVM_PROBE_MARKER}'\n"


@dataclass(frozen=True)
class KvmProbe:
    usable: bool
    seconds: float      # to the guest's userspace marker, or how long was waited for it
    why: str


@dataclass(frozen=True)
class ProbeRun:
    """What one probe boot did: seen by the runner, judged by judge_probe."""
    marker_seen: bool
    seconds: float
    returncode: int | None   # None: qemu still ran at the bound and was killed
    console: str
    stderr: str = ""


@dataclass(frozen=True)
class DriverChoice:
    driver: str              # the libvirt domain type: qemu (TCG) or kvm
    requested: str           # HACONFORM_VM_DRIVER: auto, qemu or kvm
    probe: KvmProbe | None   # None when the driver was forced
    line: str                # the one line the run logs and saves (env.json driver_choice)


def kvm_modules() -> list[str]:
    """The KVM vendor modules loaded: kvm_intel/kvm_amd (hardware virtualisation) or kvm_pvm, which
    runs only guest kernels built for PVM at speed and emulates every other kernel's code."""
    return sorted(name for name in ("kvm_intel", "kvm_amd", "kvm_pvm") if Path("/sys/module", name).exists())


def requested_driver() -> str:
    driver = os.environ.get("HACONFORM_VM_DRIVER", "auto")
    if driver not in DRIVERS:
        raise HaconformError(f"HACONFORM_VM_DRIVER={driver!r}", where="environment",
                             fix="use auto (probe KVM, else TCG), qemu (TCG) or kvm")
    return driver


def shared_libraries(binary: str) -> list[str]:
    """The files the dynamic loader maps for `binary`, as ldd names them (loader included)."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=BOUNDS.cli_query)
    if out.returncode != 0:
        raise HaconformError(f"ldd {binary}: {out.stderr.strip() or out.stdout.strip()}", where="KVM probe",
                             fix="the probe guest runs the machine's own /bin/sh; is it a dynamic ELF binary?")
    paths = []
    for line in out.stdout.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            paths.append(match.group(1))
    return paths


def _cpio_entry(ino: int, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> bytes:
    """One member of the kernel's initramfs format (cpio `newc`, no checksum), padded to 4 bytes."""
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    entry = b"070701" + b"".join(b"%08X" % field for field in fields) + name.encode() + b"\0"
    entry += b"\0" * (-len(entry) % 4) + data
    return entry + b"\0" * (-len(entry) % 4)


def probe_initramfs(path: Path, shell: str = "/bin/sh") -> Path:
    """An initramfs whose /init is PROBE_INIT, run by the machine's own shell and its libraries.

    Not the box's initrd: initramfs-tools' /init waits for the root disk, and the probe needs a
    guest that reaches userspace and then ends by itself."""
    files = {"/bin/sh": Path(shell).resolve()}
    files.update({lib: Path(lib).resolve() for lib in shared_libraries(shell)})
    directories = sorted({"/dev"} | {str(p) for f in files for p in Path(f).parents if str(p) != "/"})
    members = [(d.lstrip("/"), 0o040755, b"", (0, 0)) for d in directories]
    members.append(("dev/console", 0o020600, b"", (5, 1)))   # init's stdout; no devtmpfs this early
    members.append(("init", 0o100755, PROBE_INIT.encode(), (0, 0)))
    members += [(name.lstrip("/"), 0o100755, source.read_bytes(), (0, 0)) for name, source in files.items()]
    archive = b"".join(_cpio_entry(ino, *member) for ino, member in enumerate(members, start=1))
    path.write_bytes(archive + _cpio_entry(0, "TRAILER!!!", 0))
    return path


def probe_argv(kernel: Path, initrd: Path, console: Path, accel: str = "kvm") -> list[str]:
    """The guests' own settings (Vagrantfile: cpu_mode custom qemu64, libvirt's default machine pc,
    direct kernel boot); no disk, no network, the serial console to a file."""
    return [QEMU, "-accel", accel, "-cpu", "qemu64", "-machine", "pc", "-m", str(KVM_PROBE_MEMORY_MIB),
            "-smp", "1", "-nodefaults", "-display", "none", "-no-reboot", "-nic", "none", "-monitor", "none",
            "-serial", f"file:{console}", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", "console=ttyS0 panic=-1 rdinit=/init"]


def run_probe_guest(argv: list[str], console: Path, bound: float) -> ProbeRun:
    """Start qemu, watch its serial console for the marker, and end it: never left running."""
    console.write_bytes(b"")
    stderr_path = console.with_suffix(".stderr")
    began = time.monotonic()
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)

    def console_text() -> str:
        return console.read_text(errors="replace")

    marker_seen = False
    try:
        wait_until(f"the probe guest prints {KVM_PROBE_MARKER!r} or qemu ends",
                   lambda: KVM_PROBE_MARKER in console_text() or process.poll() is not None,
                   timeout=bound, observe=lambda: redacted_tail(console_text(), 200))
        marker_seen = KVM_PROBE_MARKER in console_text()
    except WaitTimeout:
        pass
    except BaseException:   # Ctrl-C, anything else: qemu still never outlives the probe
        if process.poll() is None:
            process.kill()
            process.wait(timeout=QEMU_EXIT_BOUND_S)
        raise
    seconds = time.monotonic() - began
    returncode = process.poll()
    if returncode is None:
        process.kill()
        try:
            process.wait(timeout=QEMU_EXIT_BOUND_S)
        except subprocess.TimeoutExpired:
            raise HaconformError(f"qemu (pid {process.pid}) still there {QEMU_EXIT_BOUND_S}s after SIGKILL",
                                 where="KVM probe", fix=f"look at process {process.pid}") from None
    return ProbeRun(marker_seen=marker_seen, seconds=round(seconds, 2), returncode=returncode,
                    console=console_text(), stderr=stderr_path.read_text(errors="replace"))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1][-160:] if lines else ""


def _pvm_note() -> str:
    if "kvm_pvm" in kvm_modules():
        return "; KVM here is kvm_pvm: only kernels built as PVM guests run at speed"
    return ""


def judge_probe(run: ProbeRun, bound: float) -> KvmProbe:
    if run.marker_seen:
        return KvmProbe(True, run.seconds, f"KVM booted the box's kernel to userspace in {run.seconds:.1f}s")
    console = _last_line(run.console)
    seen = f"last console line {console!r}" if console else "nothing on the serial console"
    if run.returncode is None:
        return KvmProbe(False, run.seconds, f"the box's kernel did not reach userspace under KVM within {bound:.0f}s "
                                            f"({seen}){_pvm_note()}")
    said = _last_line(run.stderr)
    qemu_said = f"qemu said {said!r}; " if said else ""
    return KvmProbe(False, run.seconds,
                    f"qemu -accel kvm exited {run.returncode} before the guest's userspace ({qemu_said}{seen})")


def probe_kvm(kernel: Path, workdir: Path, *, runner=run_probe_guest, bound: float = KVM_PROBE_BOUND_S) -> KvmProbe:
    """Can KVM run the guests here?  Boot `kernel` under qemu -accel kvm to a userspace marker."""
    if not KVM_DEVICE.exists():
        return KvmProbe(False, 0.0, f"{KVM_DEVICE} does not exist (no KVM module, or not passed into this machine)")
    if not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
        return KvmProbe(False, 0.0, f"{KVM_DEVICE} is not readable and writable by uid {os.geteuid()}")
    if shutil.which(QEMU) is None:
        return KvmProbe(False, 0.0, f"{QEMU} is not installed (haconform vm install)")
    if not kernel.exists():
        return KvmProbe(False, 0.0, f"no kernel to boot at {kernel} (haconform vm box build)")
    workdir.mkdir(parents=True, exist_ok=True)
    initrd = probe_initramfs(workdir / "kvm-probe.cpio")
    console = workdir / "kvm-probe-console.log"
    run = runner(probe_argv(kernel, initrd, console), console, bound)
    return judge_probe(run, bound)


def probe_key(kernel: Path) -> dict:
    """What a cached probe result holds for: this boot of the machine, this kernel, this qemu, this /dev/kvm."""
    def identity(path) -> str | None:
        try:
            st = os.stat(path)
        except (OSError, TypeError):
            return None
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_rdev}"
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = None
    return {"boot_id": boot_id, "kernel": str(kernel), "kernel_file": identity(kernel),
            "qemu": identity(shutil.which(QEMU)), "kvm_device": identity(KVM_DEVICE)}


def choose_driver(kernel: Path, state_dir: Path, *, probe=probe_kvm, cache_dir: Path | None = None) -> DriverChoice:
    """The domain type for this run: forced by HACONFORM_VM_DRIVER, or KVM when the probe boots, else TCG.

    The probe's result is kept in cache_dir (default state_dir; `vm up` keeps it beside the box, so
    `vm down` does not take it and the next run does not boot the probe again) and used while the
    machine's boot, the kernel, qemu and /dev/kvm are the ones it was taken with."""
    requested = requested_driver()
    if requested != "auto":
        name = "KVM" if requested == "kvm" else "qemu TCG"
        return DriverChoice(requested, requested, None, f"guests run under {name}: HACONFORM_VM_DRIVER={requested} "
                                                         "(KVM not probed)")
    cache = (cache_dir or state_dir) / KVM_PROBE_FILE
    key = probe_key(kernel)
    try:
        saved = json.loads(cache.read_text())
        result = KvmProbe(**saved["probe"]) if saved.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError):
        result = None
    cached = result is not None
    if result is None:
        result = probe(kernel, state_dir)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "probe": asdict(result), "probed_at": time.time()}, indent=1))
    origin = f" (probe result from {cache})" if cached else ""
    if result.usable:
        line = f"guests run under KVM: {result.why}{origin}"
    else:
        line = (f"guests run under qemu TCG, not KVM: {result.why}{origin} "
                "(HACONFORM_VM_DRIVER=qemu or kvm skips the probe)")
    return DriverChoice("kvm" if result.usable else "qemu", requested, result, line)


def domain_driver(state_dir: Path, kernel: Path | None = None) -> str:
    """The libvirt domain type, qemu (TCG) or kvm (see choose_driver)."""
    return choose_driver(kernel or BoxFiles(BOX_DIR).kernel, state_dir).driver


def parse_ssh_config(text: str) -> dict[str, dict[str, str]]:
    """`vagrant ssh-config` output -> {Host alias: {Option: value}} (option names as written)."""
    hosts: dict[str, dict[str, str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key.lower() == "host":
            current = hosts.setdefault(value.strip(), {})
        elif current is not None:
            current[key] = value.strip()
    return hosts


def render_ssh_config(by_host: dict[str, dict[str, str]], control_dir: str | None = None) -> str:
    """An ssh_config naming guests by their topology names (server1), not Vagrant's (Node1)."""
    blocks = []
    for host, options in by_host.items():
        lines = [f"Host {host}"]
        for key, value in options.items():
            lines.append(f"  {key} {value}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def guest_ssh_config(vagrant_text: str, domain_to_host: dict[str, str]) -> str:
    parsed = parse_ssh_config(vagrant_text)
    missing = set(domain_to_host) - set(parsed)
    if missing:
        raise HaconformError(f"`vagrant ssh-config` has no entry for {sorted(missing)}", where="vagrant",
                             fix="are the guests up? see `haconform vm status`")
    renamed = {}
    for domain, host in domain_to_host.items():
        options = dict(parsed[domain])
        options.update({"StrictHostKeyChecking": "no", "UserKnownHostsFile": "/dev/null",
                        "IdentitiesOnly": "yes", "LogLevel": "ERROR"})
        renamed[host] = options
    return render_ssh_config(renamed)


def inventory_text(topology: Topology, ssh_config: Path, netns_of: dict[str, str], stage: str | None = None) -> str:
    """An inventory for --target ssh (haconform/inventory.py) reaching the running guests, at `stage` (by
    default the last documented one: what the nightly leaves them in)."""
    stage = stage or documented_stages().last
    lines = ["# haconform vm inventory: the running guests of this VM environment",
             f"vip: {topology.vip}", f"stage: {stage}",
             f"defaults: {{user: root, sudo: false, ssh_config: {ssh_config}}}", "hosts:"]
    for spec in topology.hosts.values():
        if spec.role in GUEST_ROLES:
            power = ""
            if spec.fence_name:
                virsh = "virsh -c qemu:///system"
                power = (f", power: {{via: local, on: \"{virsh} start {spec.fence_name}\", "
                         f"off: \"{virsh} destroy {spec.fence_name}\", reset: \"{virsh} reset {spec.fence_name}\"}}")
            lines.append(f"  {spec.name}: {{address: {spec.name}, cluster_nic: eth0{power}}}")
        elif spec.role == "client" and spec.name in netns_of:
            lines.append(f"  {spec.name}: {{netns: {netns_of[spec.name]}}}")
        else:
            lines.append(f"  {spec.name}: none")
    return "\n".join(lines) + "\n"


class VmEnvironment:
    def __init__(self, name: str = DEFAULT_ENV, topology: Topology | None = None):
        if not ENV_NAME.match(name) or name == "box":
            raise HaconformError(f"bad VM environment name {name!r}", where="--name",
                                 fix="use 1-8 lower-case letters or digits, starting with a letter (not `box`)")
        self.name = name
        self.dir = Path(STATE_ROOT) / name
        saved = self._saved()
        self.topology = topology or load_topology(saved.get("topology"))
        self.fence_virtd = FenceVirtd(self.dir)

    # ----- names -------------------------------------------------------------------
    cluster_network = property(lambda self: f"{self.name}-cluster")
    cluster_bridge = property(lambda self: f"hcbr-{self.name}")
    mgmt_network = property(lambda self: f"{self.name}-mgmt")
    pool = property(lambda self: f"{self.name}-pool")
    ssh_config = property(lambda self: self.dir / "ssh_config")
    dotfile_dir = property(lambda self: self.dir / "vagrant")

    def guests(self) -> dict[str, str]:
        """topology host -> libvirt domain (its fence name) for the hosts that are VMs."""
        return {h.name: h.fence_name or h.name for h in self.topology.hosts.values() if h.role in GUEST_ROLES}

    def lab_hosts(self) -> list[str]:
        return [h.name for h in self.topology.hosts.values() if h.role not in GUEST_ROLES]

    def lab(self):
        from ..lab.lab import NamespaceLab
        return NamespaceLab(self.name, self.topology, bridge=self.cluster_bridge, hosts=self.lab_hosts())

    def _saved(self) -> dict:
        try:
            return json.loads((self.dir / "env.json").read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, **fields) -> None:
        data = {**self._saved(), **fields}
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "env.json").write_text(json.dumps(data, indent=1))

    def exists(self) -> bool:
        return (self.dir / "env.json").exists()

    @contextmanager
    def locked(self):
        Path(STATE_ROOT).mkdir(parents=True, exist_ok=True)
        with open(Path(STATE_ROOT) / f"{self.name}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def vagrant_environment(self) -> dict:
        return {**vagrant_env(),
                "VAGRANT_CWD": str(REPO), "VAGRANT_DOTFILE_PATH": str(self.dotfile_dir),
                "HACONFORM_TOPOLOGY": str(self.topology.path), "HACONFORM_VM_NAME": self.name,
                "HACONFORM_VM_BOX_DIR": str(BOX_DIR), "HACONFORM_VM_DRIVER": self.driver(),
                "HACONFORM_VM_MEMORY": os.environ.get("HACONFORM_VM_MEMORY", str(DEFAULT_MEMORY_MIB)),
                "HACONFORM_VM_CLUSTER_BRIDGE": self.cluster_bridge,
                "HACONFORM_VM_MGMT_NETWORK": self.mgmt_network,
                "HACONFORM_VM_MGMT_ADDRESS": str(mgmt_subnet()),
                "HACONFORM_VM_POOL": self.pool, "HACONFORM_VM_STATE_DIR": str(self.dir)}

    def driver(self) -> str:
        """The domain type `up` chose (env.json); before that, a forced one or TCG: destroying or
        listing domains does not depend on it, and only `up` may spend a probe boot."""
        saved = self._saved().get("driver")
        if saved in ("qemu", "kvm"):
            return saved
        requested = requested_driver()
        return requested if requested != "auto" else "qemu"

    def vagrant(self, log_name: str):
        try:
            import vagrant as python_vagrant
        except ImportError:
            raise HaconformError("python-vagrant is not installed", where="haconform vm",
                                 fix="pip install 'haconform[vm]' (or `haconform vm install`)") from None
        log = self.dir / log_name
        return python_vagrant.Vagrant(root=str(REPO), env=self.vagrant_environment(),
                                      out_cm=python_vagrant.make_file_cm(str(log)),
                                      err_cm=python_vagrant.make_file_cm(str(log)))

    # ----- lifecycle -------------------------------------------------------------------
    def up(self, say=print) -> dict:
        """Start libvirt, the networks and the guests, then the fence and client hosts."""
        require_root()
        from ..packages import VM_PACKAGES, ensure_installed
        ensure_installed(VM_PACKAGES, install=False)
        mgmt_subnet()
        inputs = current_inputs()
        if not box_is_current(BoxFiles(BOX_DIR), inputs):
            raise HaconformError(f"the box {BOX_NAME} is missing or older than its inputs", where="haconform vm up",
                                 fix="haconform vm box build")
        figures: dict[str, float] = {}
        began = time.monotonic()
        with self.locked():
            self.dir.mkdir(parents=True, exist_ok=True)
            if "ip_forward_before" not in self._saved():
                self._save(ip_forward_before=libvirt.ip_forward())
            choice = choose_driver(BoxFiles(BOX_DIR).kernel, self.dir, cache_dir=Path(STATE_ROOT))
            log.info("vm %s: %s", self.name, choice.line)
            say(f"vm {self.name}: {choice.line}")
            self._save(name=self.name, topology=str(self.topology.path), domains=sorted(self.guests().values()),
                       driver=choice.driver, driver_choice=choice.line,
                       kvm_probe=asdict(choice.probe) if choice.probe else None, created=time.time())
            started = libvirt.ensure_daemons(self.dir)
            if started:
                say(f"vm {self.name}: started {', '.join(started)}")
            libvirt.ensure_pool(self.pool, self.dir / "pool")
            libvirt.ensure_isolated_network(self.cluster_network, self.cluster_bridge, self.dir)
            say(f"vm {self.name}: vagrant up {', '.join(f'{h}={d}' for h, d in self.guests().items())} "
                f"(driver {choice.driver}; log {self.dir / 'vagrant-up.log'})")
            step = time.monotonic()
            try:
                self.vagrant("vagrant-up.log").up(provider="libvirt")
            except subprocess.CalledProcessError:
                raise HaconformError("`vagrant up` failed: " + self._log_tail("vagrant-up.log"),
                                     where=str(self.dir / "vagrant-up.log"),
                                     fix="read the log; `haconform vm down` then up again") from None
            figures["vagrant_up_s"] = round(time.monotonic() - step, 1)
            self.write_ssh_config()
            say(f"vm {self.name}: guests up in {figures['vagrant_up_s']}s; starting the fence and client hosts")
            step = time.monotonic()
            self.lab().up(install_packages=False)
            figures["lab_hosts_s"] = round(time.monotonic() - step, 1)
        figures["total_s"] = round(time.monotonic() - began, 1)
        self._save(figures=figures)
        say(f"vm {self.name}: up in {figures['total_s']}s ({figures})")
        return figures

    def write_ssh_config(self) -> Path:
        text = self.vagrant("vagrant-ssh-config.log").ssh_config()
        self.ssh_config.write_text(guest_ssh_config(text, {d: h for h, d in self.guests().items()}))
        return self.ssh_config

    def down(self, say=print) -> dict:
        """Remove every guest, network, volume, chain, process and namespace of this environment."""
        require_root()
        removed: dict[str, list] = {}
        with self.locked():
            saved = self._saved()
            lab_json = Path("/var/lib/haconform/labs") / self.name / "lab.json"
            if not saved and not lab_json.exists() and not self._libvirt_leftovers_possible():
                return {"nothing": []}
            removed["fence_virtd"] = ["stopped"] if self.fence_virtd.stop() else []
            if self.dir.exists():
                libvirt.ensure_daemons(self.dir)   # to clean up after a SIGKILL; stopped below
            if self.dotfile_dir.exists() and shutil.which("vagrant"):
                try:
                    self.vagrant("vagrant-destroy.log").destroy()
                except (subprocess.CalledProcessError, HaconformError):
                    say(f"vm {self.name}: vagrant destroy failed ({self._log_tail('vagrant-destroy.log')}); "
                        "removing the domains with virsh")
            domains = saved.get("domains") or sorted(self.guests().values())
            removed["domains"] = [d for d in domains if self._domain_is_ours(d) and libvirt.remove_domain(d)]
            if self.dir.exists() or lab_json.exists():
                from ..lab.lab import NamespaceLab
                lab = NamespaceLab(self.name, self.topology)
                removed["lab"] = [f"{k}: {len(v)}" for k, v in lab.down().items()]
            if self._libvirt_running():
                removed["networks"] = [n for n in (self.cluster_network, self.mgmt_network)
                                       if libvirt.remove_network(n)]
                removed["volumes"] = libvirt.remove_pool(self.pool)
                if not libvirt.active_network_names():
                    removed["firewall"] = libvirt.remove_libvirt_chains()
            elif not libvirt.daemon_pid("libvirtd"):
                removed["firewall"] = libvirt.remove_libvirt_chains()
            removed["daemons"] = libvirt.stop_started_daemons(self.dir) if self.dir.exists() else []
            before = saved.get("ip_forward_before")
            if before is not None and libvirt.ip_forward() != before:
                libvirt.set_ip_forward(before)
                removed["ip_forward"] = [f"restored to {before}"]
            shutil.rmtree(self.dir, ignore_errors=True)
        (Path(STATE_ROOT) / f"{self.name}.lock").unlink(missing_ok=True)
        return removed

    def _domain_is_ours(self, domain: str) -> bool:
        """A domain of that name whose disk lives in this environment's pool (not someone else's Node1)."""
        if libvirt.domain_state(domain) is None:
            return False
        xml = libvirt.virsh("dumpxml", domain, check=False).stdout
        return f"{self.pool}" in xml or str(self.dir) in xml

    def _libvirt_running(self) -> bool:
        return libvirt.daemon_pid("libvirtd") is not None

    def _libvirt_leftovers_possible(self) -> bool:
        return self._libvirt_running() and (self.cluster_network in libvirt.network_names())

    def _log_tail(self, name: str) -> str:
        try:
            lines = [l for l in (self.dir / name).read_text(errors="replace").splitlines() if l.strip()]
        except OSError:
            return "(no log)"
        return " | ".join(lines[-6:])

    # ----- views -----------------------------------------------------------------------
    def status(self) -> dict:
        running = self._libvirt_running()
        guests = {}
        for host, domain in self.guests().items():
            guests[host] = {"domain": domain, "address": self.topology.host(host).address,
                            "state": (libvirt.domain_state(domain) or "undefined") if running else "libvirtd down",
                            "domain_id": libvirt.domain_id(domain) if running else None}
        lab = self.lab()
        return {"vm": self.name, "exists": self.exists(), "state_dir": str(self.dir),
                "libvirtd": "running" if running else "not running",
                "cluster_network": self.cluster_network, "bridge": self.cluster_bridge,
                "ssh_config": str(self.ssh_config) if self.ssh_config.exists() else None,
                "fence_virtd_pid": self.fence_virtd.pid(), "guests": guests,
                "lab_hosts": lab.status()["hosts"] if lab.exists() else {},
                "figures": self._saved().get("figures", {})}

    def inventory(self) -> str:
        if not self.ssh_config.exists():
            raise HaconformError(f"VM environment {self.name} is not up (no ssh_config)", where=str(self.dir),
                                 fix=f"haconform vm up --name {self.name}")
        lab = self.lab()
        return inventory_text(self.topology, self.ssh_config,
                              {h: lab.netns(h) for h in self.lab_hosts()})


def require_root() -> None:
    if os.geteuid() != 0:
        raise HaconformError("the VM target needs root (libvirt daemons, networks, namespaces)",
                             where="haconform vm", fix="run as root")


def wait_for_guests(target_booted, hosts: list[str]) -> None:
    wait_until(f"guests {hosts} booted (ssh answers, systemd finished)",
               lambda: all(target_booted(h) for h in hosts), timeout=BOUNDS.vm_boot)
