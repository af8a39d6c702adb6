"""A host that is a network namespace of the harness machine (`netns: NAME` in the inventory)."""

from __future__ import annotations

from . import HostTransport


class NetnsTransport(HostTransport):
    kind = "netns"

    def shell_argv(self, command: str, *, multiplexed: bool = True) -> list[str]:
        return ["ip", "netns", "exec", self.access.netns, "/bin/sh", "-c", command]

    def exec_prefix(self, *, keepalive: bool = True) -> list[str]:
        return ["ip", "netns", "exec", self.access.netns]
