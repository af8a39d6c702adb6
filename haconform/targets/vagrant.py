"""The runbook's own world as a target (--target vagrant): four libvirt guests.

Guests (directors, real servers) are Vagrant/libvirt VMs reached over their
management network with InventoryTarget's transport (ssh with the environment's
ssh_config, testinfra over it): LibvirtGuests.  The physical host foundation5
and the client are namespace-lab hosts on the machine, plugged into the
guests' cluster bridge, reached as the lab reaches them: a LabTarget.
VagrantTarget holds both and hands each per-host call to the one owning the
host (VagrantTarget._for).

Faults use what the runbook uses:
  crash  `echo c > /proc/sysrq-trigger` in the guest (fire and forget)
  power  virsh: on = start, off = destroy, reset = reset (hard)
  NIC    `ip link set eth0 down|up` in the guest, over the management network
The fence device is the real fence_virtd (multicast listener, libvirt backend)
reading the fence host's /etc/cluster/fence_xvm.key.
"""

from __future__ import annotations

import re

import testinfra

from ..errors import HaconformError
from ..guard import APPLY, HostGuard
from ..inventory import HostAccess, Inventory
from ..stages.catalogue import documented as documented_stages
from ..timeouts import BOUNDS
from ..topology import Topology
from ..vm import libvirt
from ..vm.env import DEFAULT_ENV, VmEnvironment
from ..wait import wait_until
from .base import Target
from .lab import LabTarget
from .access import HostUnreachable
from .inventory_target import InventoryTarget

CLUSTER_NIC = "eth0"   # as on the runbook's VMs; the management NIC is eth1 (see the Vagrantfile)


def vm_inventory(topology: Topology, env: VmEnvironment) -> Inventory:
    """InventoryTarget's view of the guests: ssh by topology name through the environment's ssh_config."""
    hosts = {}
    guests = env.guests()
    for spec in topology.hosts.values():
        if spec.name in guests:
            hosts[spec.name] = HostAccess(name=spec.name, kind="ssh", address=spec.name, user="root", sudo=False,
                                          ssh_config=str(env.ssh_config), cluster_nic=CLUSTER_NIC)
        else:
            hosts[spec.name] = HostAccess(name=spec.name, kind="none")
    return Inventory(path=env.dir / "ssh_config", stage=documented_stages().last, hosts=hosts)


class LibvirtGuests(InventoryTarget):
    """The guests alone: InventoryTarget's transport (ssh through the environment's ssh_config,
    testinfra over it, NIC control with the dead-man switch) with power from libvirt.

    Its inventory lists only the guests as reachable; VagrantTarget hands it guests only.
    """

    kind = "vagrant-guests"

    def __init__(self, topology: Topology, env: VmEnvironment, *, guard: HostGuard | None = None):
        self.env = env
        super().__init__(topology, vm_inventory(topology, env), allow_destructive=True,
                         guard=guard if guard is not None else HostGuard(APPLY))
        self._crash_domain_ids: dict[str, str | None] = {}

    def domain(self, name: str) -> str:
        return self.env.guests()[name]

    # ----- power (virsh) and crash (sysrq) --------------------------------------------
    def _power(self, name: str, action: str) -> None:
        domain = self.domain(name)
        if action == "crash":
            self._crash_domain_ids[name] = libvirt.domain_id(domain)
            super()._power(name, "crash")
            return
        if action not in ("on", "off", "reset"):
            raise HaconformError(f"unknown power action {action!r}", where="VagrantTarget.power",
                                 fix="use on, off, reset or crash")
        state = libvirt.domain_state(domain)
        before = self.answers(name, timeout=2) if state == "running" else None
        if action == "off" or (action == "on" and state == "running" and name in self._crash_domain_ids):
            libvirt.virsh("destroy", domain, check=state == "running" and action == "off")
            wait_until(f"{domain} shut off", lambda: libvirt.domain_state(domain) == "shut off",
                       timeout=BOUNDS.host_halt, observe=lambda: libvirt.domain_state(domain))
        if action == "off":
            self._crash_domain_ids.pop(name, None)
            return
        if action == "reset" and libvirt.domain_state(domain) == "running":
            libvirt.virsh("reset", domain)
        elif libvirt.domain_state(domain) != "running":
            libvirt.virsh("start", domain)
        self._crash_domain_ids.pop(name, None)
        wait_until(f"{name} ({domain}) booted again with a new boot id",
                   lambda: (lambda now: now and now != before and self.booted(name))(self.answers(name, timeout=5)),
                   timeout=BOUNDS.vm_boot, observe=lambda: libvirt.domain_state(domain))

    def power_state(self, name: str) -> str:
        domain = self.domain(name)
        state = libvirt.domain_state(domain)
        if state != "running":
            return "off"
        crashed_in = self._crash_domain_ids.get(name, "unknown")
        if crashed_in != "unknown" and crashed_in == libvirt.domain_id(domain) and not self.answers(name, timeout=3):
            # libvirt still calls a panicked guest running; fence_virtd's reboot gives it a new domain id.
            return "crashed"
        return "on"

    def known_down(self, name: str) -> bool:
        return self.power_state(name) in ("off", "crashed")   # libvirt's domain state and the crash record

    def booted(self, name: str) -> bool:
        if libvirt.domain_state(self.domain(name)) != "running":
            return False
        return super().booted(name)

    # ----- NIC (set_nic is InventoryTarget's) ------------------------------------------------------
    def nic_state(self, name: str) -> str:
        try:
            return super().nic_state(name)
        except HostUnreachable:
            return "absent"


class VagrantTarget(Target):
    """The guests (LibvirtGuests) and the lab hosts (a LabTarget on the guests' cluster bridge)
    behind one target: each per-host call goes to the one that owns the host (_for)."""

    kind = "vagrant"
    can_power = True
    destructive_allowed = True

    def __init__(self, topology: Topology, name: str = DEFAULT_ENV, *, guard: HostGuard | None = None):
        super().__init__(topology, guard=guard)
        self.env = VmEnvironment(name, topology)
        self.guests = LibvirtGuests(topology, self.env, guard=self.guard)
        self._lab_target: LabTarget | None = None

    # ----- who owns a host ---------------------------------------------------------------
    @property
    def lab_target(self) -> LabTarget:
        """The fence host and the client, as the lab reaches them (made on first use)."""
        if self._lab_target is None:
            self._lab_target = LabTarget(self.topology, self.env.name, lab=self.env.lab(), guard=self.guard)
        return self._lab_target

    @property
    def lab(self):
        return self.lab_target.lab

    @property
    def inventory(self) -> Inventory:
        """The guests' ssh inventory (the lab hosts are `none` in it)."""
        return self.guests.inventory

    def is_guest(self, name: str) -> bool:
        return name in self.env.guests()

    def _for(self, name: str) -> Target:
        """The target that owns host `name`: the guests over ssh, the rest in the namespace lab."""
        return self.guests if self.is_guest(name) else self.lab_target

    # ----- lifecycle ---------------------------------------------------------------
    def up(self) -> dict:
        figures = self.env.up()
        guests = list(self.env.guests())
        wait_until(f"guests {guests} booted (ssh answers, systemd finished)",
                   lambda: all(self.booted(h) for h in guests), timeout=BOUNDS.vm_boot,
                   observe=lambda: {h: self.power_state(h) for h in guests})
        return figures

    def down(self) -> dict:
        self.guests.down()
        return self.env.down()

    # ----- per host: transport, power, NIC ---------------------------------------------
    def testinfra_host(self, name: str) -> testinfra.host.Host:
        return self._for(name).testinfra_host(name)

    def _exec_prefix(self, name: str, *, keepalive: bool = True) -> list[str]:
        return self._for(name)._exec_prefix(name, keepalive=keepalive)

    def transport_kind(self, name: str) -> str:
        return self._for(name).transport_kind(name)

    def _power(self, name: str, action: str) -> None:
        self._for(name)._power(name, action)

    def power_state(self, name: str) -> str:
        return self._for(name).power_state(name)

    def booted(self, name: str) -> bool:
        return self._for(name).booted(name)

    def known_down(self, name: str) -> bool:
        return self._for(name).known_down(name)

    def _set_nic(self, name: str, state: str) -> None:
        self._for(name)._set_nic(name, state)

    def nic_state(self, name: str) -> str:
        return self._for(name).nic_state(name)

    # ----- the fence device: fence_virtd ------------------------------------------------
    def fence_key_path(self, key_file: str) -> str:
        """The fence host's key file as the machine sees it (the upper directory of its overlay)."""
        fence = self.topology.fence_host
        return str(self.lab.host_dir(fence.name) / "upper" / key_file.lstrip("/"))

    def start_fence_device(self, key: bytes, *, key_file: str, multicast_address: str, port: int) -> dict:
        fence = self.topology.fence_host
        if fence is None:
            raise HaconformError("the topology has no host with role fence", where=str(self.topology.path),
                                 fix="add a host with `role: fence`")
        pid = self.env.fence_virtd.start(netns=self.lab.netns(fence.name), key_file=self.fence_key_path(key_file),
                                         interface="eth0", multicast_address=multicast_address, port=port)
        return {"fence device": "fence_virtd (multicast listener, libvirt backend qemu:///system)",
                "pid": pid, "listens in": self.lab.netns(fence.name), "config": str(self.env.fence_virtd.conf)}

    def fence_device_running(self) -> bool:
        return self.env.fence_virtd.pid() is not None

    def fence_requests(self) -> list[dict]:
        """fence_virtd's own log lines about requests (it keeps no structured log)."""
        try:
            lines = self.env.fence_virtd.log.read_text(errors="replace").splitlines()
        except OSError:
            return []
        # Its debug output (-d 1): one "Request OP seqno N domain NAME" per request, then
        # the backend's actions; the configuration lines it prints at start are left out.
        pattern = re.compile(r"^(Request |Plain TCP request|.*(reboot|destroy|Domain|Sending))", re.I)
        return [{"fence_virtd": line} for line in lines if pattern.search(line)]

    def describe(self) -> dict:
        saved = self.env._saved()
        return {"target": "vagrant", "vm": self.env.name, "state_dir": str(self.env.dir),
                "driver": saved.get("driver"), "driver_choice": saved.get("driver_choice"),
                "guests": self.env.guests(),
                "figures": saved.get("figures", {})}
