"""The lab's power control as the fence daemon sees it (fence_virtd's backend role).

Runs in the machine's root namespace (host lifecycle needs it); only the fence
daemon's sockets live in the fence host's network namespace.
"""

from __future__ import annotations

import os
import uuid

from ..fence.daemon import Domain
from .lab import NamespaceLab

LAB_ENV = "HACONFORM_FENCE_LAB"


class LabPower:
    def __init__(self, lab: NamespaceLab, mapping: dict[str, str]):
        self.lab = lab
        self.mapping = dict(mapping)   # fence domain name (Node1) -> lab host (server1)

    def _host(self, name: str) -> str:
        return self.mapping[name]

    def domain_uuid(self, name: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"haconform://{self.lab.name}/{self._host(name)}"))

    def status(self, name: str) -> str:
        # A crashed host is powered: its fence device reports it on, as libvirt does
        # for a panicked guest, so that a reboot power-cycles it.
        return "off" if self.lab.power_state(self._host(name)) == "off" else "on"

    def domains(self) -> list[Domain]:
        return [Domain(name, self.domain_uuid(name), self.status(name)) for name in sorted(self.mapping)]

    def on(self, name: str) -> None:
        self.lab.power(self._host(name), "on", wait=False)

    def off(self, name: str) -> None:
        self.lab.power(self._host(name), "off", wait=False)

    def reboot(self, name: str) -> None:
        # Like fence_virtd's libvirt backend: destroy, then start; answer without waiting for the boot.
        self.lab.power(self._host(name), "reset", wait=False)


def factory(mapping: dict[str, str]) -> LabPower:
    return LabPower(NamespaceLab(os.environ[LAB_ENV]), mapping)
