"""The embedded namespace lab as a target."""

from __future__ import annotations

import testinfra

from ..guard import HostGuard
from ..lab.lab import NamespaceLab
from ..topology import Topology
from .base import Target
from .lab_backend import LabBackend


class LabTarget(Target):
    kind = "lab"
    can_power = True

    def __init__(self, topology: Topology, name: str = "haconform", *, lab: NamespaceLab | None = None,
                 guard: HostGuard | None = None):
        """lab: a NamespaceLab made elsewhere (VagrantTarget's fence and client hosts, on the
        guests' bridge); by default the lab NAME running the whole topology."""
        super().__init__(topology, guard=guard)
        self.lab = lab if lab is not None else NamespaceLab(name, topology)

    def up(self) -> dict:
        return self.lab.up()

    def down(self) -> dict:
        return self.lab.down()

    def testinfra_host(self, name: str) -> testinfra.host.Host:
        if name not in self._hosts:
            self.topology.host(name)
            self._hosts[name] = testinfra.host.Host(LabBackend(name, lab_object=self.lab, guard=self.guard))
        return self._hosts[name]

    def _exec_prefix(self, name: str, *, keepalive: bool = True) -> list[str]:
        return self.lab.exec_argv(name)

    def transport_kind(self, name: str) -> str:
        return "nsenter"

    def _power(self, name: str, action: str) -> None:
        # A crash leaves the host down, like a real panic: nothing waits for a boot.
        self.lab.power(name, action, wait=action in ("on", "reset"))

    def _set_nic(self, name: str, state: str) -> None:
        self.lab.set_nic(name, state)

    def power_state(self, name: str) -> str:
        return self.lab.power_state(name)

    def known_down(self, name: str) -> bool:
        return self.lab.power_state(name) in ("off", "crashed")   # the lab's own record, not a guess

    def nic_state(self, name: str) -> str:
        return self.lab.nic_state(name)

    def booted(self, name: str) -> bool:
        return self.lab.booted(name)

    def start_fence_device(self, key: bytes, *, key_file: str, multicast_address: str, port: int) -> dict:
        pid = self.lab.start_fence_daemon(key, multicast_address=multicast_address, port=port)
        return {"fence device": "haconform fence daemon (fence_xvm protocol)", "pid": pid,
                "listens in": self.lab.netns(self.topology.fence_host.name)}

    def fence_device_running(self) -> bool:
        return self.lab.fence_daemon_pid() is not None

    def fence_requests(self) -> list[dict]:
        return self.lab.fence_requests()

    def describe(self) -> dict:
        return {"target": "lab", "lab": self.lab.name, "state_dir": str(self.lab.dir)}
