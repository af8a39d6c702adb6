"""The one table of time bounds, and what each is made of.

Every wait in haconform takes its bound from here.  A bound is either the
interval the deployment itself documents (a monitor interval, a check timing)
plus MARGIN, or a pure harness allowance for something the runbook does not
configure (a daemon starting, an HTTP request, a resource moving).  Change a
figure here, never at the call site.

The figures of Bounds were tuned on the embedded namespace lab.  A slower target
(qemu-TCG guests) gets the harness's allowances scaled by a calibration measured
on it at bring-up (haconform/calibration.py): SCALED says which fields scale and
by which category of work.  The documented interval is the MUST and never
scales; MARGIN is the harness's and does.  Reading BOUNDS.x gives a Bound, a
float that remembers documented part, allowance, base figure and factor, so a
report shows them side by side with what was measured.

CEILING = 4: no factor ever exceeds it.  Four times the lab's allowance still
keeps any single wait (the longest, node_rejoin: 180 s -> 720 s) within reach of
a nightly's time; the dead-man backstop scales with the waits it is sized from;
and a target more than four times slower than the lab at starting
processes is one where the runbook's own timings (a 30 s monitor, corosync's
token) cannot be expected to hold: the report then says the factor was capped,
and what still times out is a finding about the target, not a bound to stretch.
Without a calibration every factor is 1.0: the figures below, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

# Added to every documented interval: covers scheduling, process start-up and
# the poll period itself on a loaded 2-core machine.
MARGIN = 15.0

# How often a bounded poll looks again: every POLL_INTERVAL at first; a wait that lasts looks again after
# at most POLL_SHARE of the time it has waited so far, and at least every MAX_POLL_INTERVAL.  A condition
# is seen within 10 % of the time it took (within 1 s), and a 20 s wait (pacemaker's dc-deadtime, say) asks
# some 30 times instead of 200: several labs side by side share two cores with their pollers.
POLL_INTERVAL = 0.1
POLL_SHARE = 0.1
MAX_POLL_INTERVAL = 1.0

# The largest factor a calibration may apply to an allowance (see the module docstring).
CEILING = 4.0


class Bound(float):
    """A time bound in seconds that knows its parts: documented (the runbook's, 0.0 for a pure
    allowance) + allowance (the harness's, already scaled: base x factor).

    Bound + Bound, Bound + number and Bound * number keep the parts (a plain number added
    counts as allowance, unscaled); anything else gives a plain float.
    """

    def __new__(cls, documented: float = 0.0, allowance: float = 0.0, *, base: float | None = None,
                name: str = ""):
        self = super().__new__(cls, float(documented) + float(allowance))
        self.documented = float(documented)
        self.allowance = float(allowance)
        self.base = float(allowance if base is None else base)   # the allowance before scaling
        self.name = name
        return self

    @property
    def factor(self) -> float:
        return self.allowance / self.base if self.base else 1.0

    def __add__(self, other: Any):
        if isinstance(other, Bound):
            return Bound(self.documented + other.documented, self.allowance + other.allowance,
                         base=self.base + other.base, name=f"{self.name}+{other.name}")
        if isinstance(other, (int, float)):
            if other == 0:   # sum() starts from 0
                return self
            return Bound(self.documented, self.allowance + other, base=self.base + other,
                         name=f"{self.name}+{other:g}")
        return NotImplemented

    def __radd__(self, other: Any):
        if isinstance(other, (int, float)):
            if other == 0:
                return self
            return Bound(self.documented, other + self.allowance, base=other + self.base,
                         name=f"{other:g}+{self.name}")
        return NotImplemented

    def __mul__(self, other: Any):
        if isinstance(other, Bound) or not isinstance(other, (int, float)):
            return float.__mul__(self, other)
        name = f"({self.name})" if "+" in self.name else self.name
        return Bound(self.documented * other, self.allowance * other, base=self.base * other,
                     name=f"{other:g}×{name}")

    __rmul__ = __mul__

    def describe(self) -> str:
        """'bound 45.0 s = documented 30 s + allowance 15 s (15 s × 1.00)'"""
        allowance = f"allowance {self.allowance:g} s ({self.base:g} s × {self.factor:.2f})"
        if self.documented:
            return f"bound {float(self):.1f} s = documented {self.documented:g} s + {allowance}"
        return f"bound {float(self):.1f} s = {allowance}"

    def parts(self) -> dict:
        return {"bound_s": float(self), "name": self.name, "documented_s": self.documented,
                "allowance_s": self.allowance, "base_s": self.base, "factor": round(self.factor, 3)}


@dataclass(frozen=True)
class Bounds:
    host_boot: float = 30.0            # PID 1 up and rc2.d services started
    host_halt: float = 10.0            # processes of a host gone after power off
    service_start: float = 20.0        # an init script's daemon answers
    service_stop: float = 20.0
    command: float = 120.0             # one command inside a host
    http_request: float = 5.0          # one request from the client host
    haproxy_reload: float = 10.0       # new haproxy process serving the new config
    log_line: float = 10.0             # a syslog line written after the event
    pcsd_ready: float = 60.0
    cluster_form: float = 120.0        # corosync+pacemaker: both nodes online, DC elected
    cluster_settle: float = 90.0       # no pending actions after a change
    resource_move: float = 60.0        # standby: group started on the other node
    fence_complete: float = 120.0      # crash/split brain -> fence history success
    node_rejoin: float = 180.0         # fenced/rebooted node online again
    agent_start: float = 20.0          # client agent process answers
    probe_request: float = 1.0         # one prober request: short, so an outage is seen to ~1 s
    fence_request: float = 15.0        # fence daemon: datagram in -> called back, answered, logged
                                       # (fence_virtd's own 5 s connect + 10 s exchange steps fit)
    cli_query: float = 30.0            # one read-only query to a local daemon: haproxy's stats
                                       # socket, crm_mon, crm_verify, stonith_admin --history
    locust_exit: float = 30.0          # a locust master/worker ends after its run time (stop-timeout 2 s,
                                       # final CSV write, worker shutdown)
    dead_man: float = 800.0            # backstop of a dead-man switch whose harness link is cut without EOF:
                                       # the longest destructive test (FENCE-002) and its restore,
                                       # fence_complete + 2 resource_move + 3 node_rejoin + agent_start
    apt_lock: float = 300.0            # apt-get waiting for another dpkg to release its lock
    apt_run: float = 1800.0            # one apt-get update/install of the lab's packages
    shell_exit: float = 2.0            # a remote shell told EOF cleans its directory and exits
    vm_boot: float = 240.0             # a TCG guest: power on/reset -> ssh answers, systemd finished
    vm_up: float = 1200.0              # `vagrant up` of every guest (box upload included)
    vm_box_build: float = 1800.0       # debootstrap + image + `vagrant box add`
    vm_kvm_probe: float = 20.0         # the KVM probe: the box's kernel reaching userspace (TCG: ~5 s;
                                       # a KVM slower than this is not worth choosing)
    vm_qemu_exit: float = 10.0         # a qemu process gone after SIGKILL
    vm_daemon: float = 30.0            # libvirtd/virtlogd/virtlockd answer on their sockets
    vm_ssh: float = 20.0               # one short ssh probe to a guest over the management network
    pcs_request: float = 60.0          # pcs's --request-timeout: one request pcs sends a node's pcsd (host auth,
                                       # cluster setup, start/enable --all); pcs's own default, which the VM
                                       # nightly's `pcs cluster setup` (46-54 s) came within seconds of
    fence_list: float = 5.0            # fence_xvm -t: how long `fence_xvm -o list` waits for the device's answer
    vip_watch_gap: float = 5.0         # the longest time the VIP watch may go without a complete sample
                                       # (each: `ip -j addr` on every director at once) and still speak
                                       # for the fault window; a double holding shorter than it could pass


# Which allowances a calibration scales, by the category of work behind them
# (haconform/calibration.py measures each category on the target).
SCALED: dict[str, str] = {
    # Init scripts and daemons: fork/exec-heavy shell.
    "service_start": "process",
    "service_stop": "process",
    "haproxy_reload": "process",
    # One command or read-only query inside a host: the host's own work (a crm_mon, a socat) dominates;
    # the transport's fixed round trip is small next to these figures and its ratio would overstate it.
    "command": "process",
    "cli_query": "process",
    # A syslog line is seen one log-poll round trip (through the transport) after it is written.
    "log_line": "transport",
    # A VIP sample is one command per director through the transport.
    "vip_watch_gap": "transport",
    # The work behind a request: PHP on the real servers.
    "http_request": "php",
    # pcs and pcsd are Python: auth, cluster setup, corosync and pacemaker brought up by pcs.
    "pcsd_ready": "python",
    "pcs_request": "python",
    "cluster_form": "python",
    # Pacemaker's actions start resource and fence agents (shell and Python start-up per operation).
    "cluster_settle": "agent",
    "resource_move": "agent",
    "fence_complete": "agent",
    "node_rejoin": "agent",
    # fence_xvm's client, the fence daemon's callback and power action: processes started per request.
    "fence_request": "process",
    "fence_list": "process",
    # Processes in the client host, which is not probed: the slowest probed host's process factor stands in.
    "agent_start": "process",
    "locust_exit": "process",
    # The dead-man backstop is sized from the longest destructive test's waits (fence_complete,
    # resource_move, node_rejoin: "agent"), so it grows with them and still never fires under a live harness.
    "dead_man": "agent",
}
# MARGIN covers scheduling and process start-up (see above).
MARGIN_CATEGORY = "process"
# Allowances that only guard the harness's own steps against a hang (a command that never returns, a
# pcs request, the cluster never forming): no MUST is judged by them, so on a target slower than CEILING
# they scale by the measured ratio itself, up to HANG_CEILING.  Running out of one of these on a slow
# target is the harness's impatience, not a finding; the verdict's calibration says when they went
# beyond CEILING.
HANG_GUARDS = ("command", "cli_query", "pcs_request", "pcsd_ready", "cluster_form", "fence_list")
# Beyond this ratio a target is refused at bring-up (haconform/calibration.py): a host a hundred times
# slower than the lab at starting processes cannot keep the runbook's own 30 s and 60 s monitors, and
# its verdict would be about the machine, not the deployment.
HANG_CEILING = 100.0
# Not scaled, and why: probe_request is the outage measurement's resolution (scaling it would
# blur what is measured); apt_* are
# package runs on the machine itself; shell_exit is a clean-up; vm_* are already VM figures;
# host_boot and host_halt are the namespace lab's own power figures (a VM's are vm_boot).
NOT_SCALED = tuple(f.name for f in fields(Bounds) if f.name not in SCALED)
CATEGORIES = ("process", "python", "agent", "php", "transport")

# The figures as written above, never scaled.
BASE = Bounds()

_calibration: Any = None
_factors: dict[str, float] = {}
_hang_factors: dict[str, float] = {}


def set_calibration(calibration: Any) -> None:
    """Scale the allowances by calibration.factors ({category: factor}) and the hang guards by
    calibration.hang_factors (where present); None: every factor 1.0."""
    global _calibration, _factors, _hang_factors
    factors = dict(calibration.factors) if calibration is not None else {}
    hang = dict(getattr(calibration, "hang_factors", None) or factors)
    for category, value in factors.items():
        if category not in CATEGORIES or not 1.0 <= value <= CEILING:
            raise ValueError(f"calibration factor {category}={value!r}: must be a known category "
                             f"({', '.join(CATEGORIES)}) within [1.0, {CEILING:g}]")
    for category, value in hang.items():
        if category not in CATEGORIES or not factors.get(category, 1.0) <= value <= HANG_CEILING:
            raise ValueError(f"hang-guard factor {category}={value!r}: must be a known category within "
                             f"[its factor, {HANG_CEILING:g}]")
    _calibration, _factors, _hang_factors = calibration, factors, hang


def current_calibration() -> Any:
    return _calibration


def factor(category: str | None, *, hang_guard: bool = False) -> float:
    if not category:
        return 1.0
    return float((_hang_factors if hang_guard else _factors).get(category, 1.0))


class CalibratedBounds:
    """BOUNDS: each figure of Bounds as a Bound, scaled when SCALED names it, read at call time."""

    def __init__(self, base: Bounds):
        object.__setattr__(self, "_base", base)

    def __getattr__(self, name: str) -> Bound:
        if name.startswith("_"):
            raise AttributeError(name)
        base = getattr(self._base, name)
        return Bound(0.0, base * factor(SCALED.get(name), hang_guard=name in HANG_GUARDS), base=base, name=name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"BOUNDS.{name}: change the figure in haconform/timeouts.py Bounds")

    def __dir__(self) -> list[str]:
        return [f.name for f in fields(Bounds)]

    def __repr__(self) -> str:
        return f"CalibratedBounds({self._base!r}, factors={_factors or 'none (1.0)'})"


BOUNDS = CalibratedBounds(BASE)


def margin() -> Bound:
    return Bound(0.0, MARGIN * factor(MARGIN_CATEGORY), base=MARGIN, name="MARGIN")


def documented(interval_s: float) -> Bound:
    """Bound for waiting on something the deployment schedules every interval_s: the interval
    (the MUST, never scaled) plus MARGIN (the harness's, scaled)."""
    if isinstance(interval_s, Bound):   # a harness figure passed as an interval stays an allowance
        return interval_s + margin()
    return Bound(float(interval_s), MARGIN * factor(MARGIN_CATEGORY), base=MARGIN,
                 name=f"documented({float(interval_s):g})")
