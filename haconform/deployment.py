"""The deployment under test, as suites see it: roles and names, no addresses.

    deployment.directors, deployment.realservers, deployment.client
    deployment.machine("server2"), deployment.vip
    deployment.url("/images/a.png")      # through the current frontend
"""

from __future__ import annotations

from .errors import HaconformError
from .targets.base import Machine, Target


class Deployment:
    def __init__(self, target: Target):
        self.target = target
        self.topology = target.topology
        self.machines = {name: Machine(target, spec) for name, spec in self.topology.hosts.items()}
        # Before the cluster stage the first director is the frontend; the
        # cluster stage switches it to the VIP.
        self.frontend_address = self.directors[0].address
        self.frontend_label = self.directors[0].name
        # The documented cluster (stages.model.ClusterSpec, the deployment's own names) once a
        # cluster stage is applied or verified: faults, restore and perf ask it for the group.
        self.cluster_spec = None

    def machine(self, name: str) -> Machine:
        try:
            return self.machines[name]
        except KeyError:
            raise HaconformError(f"no host named {name!r}", where=str(self.topology.path)) from None

    def _role(self, role: str) -> list[Machine]:
        return [m for m in self.machines.values() if m.role == role]

    @property
    def directors(self) -> list[Machine]:
        return self._role("director")

    @property
    def realservers(self) -> list[Machine]:
        return self._role("realserver")

    @property
    def client(self) -> Machine:
        return self._role("client")[0]

    @property
    def fence_host(self) -> Machine | None:
        hosts = self._role("fence")
        return hosts[0] if hosts else None

    @property
    def vip(self) -> str:
        return self.topology.vip

    def realserver_by_server_name(self, server_name: str) -> Machine:
        spec = self.topology.by_server_name(server_name)
        if spec is None:
            raise HaconformError(f"no real server is called {server_name!r} in HAProxy terms",
                                 where=str(self.topology.path), fix="set server_name on the host")
        return self.machines[spec.name]

    def use_frontend(self, address: str, label: str) -> None:
        self.frontend_address = address
        self.frontend_label = label

    def url(self, path: str = "/", *, port: int = 80, address: str | None = None) -> str:
        return f"http://{address or self.frontend_address}:{port}{path}"
