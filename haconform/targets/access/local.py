"""A host that is the harness machine itself (`local: true` in the inventory): a plain shell."""

from __future__ import annotations

from . import HostTransport


class LocalTransport(HostTransport):
    kind = "local"

    def shell_argv(self, command: str, *, multiplexed: bool = True) -> list[str]:
        return ["/bin/sh", "-c", command]

    def exec_prefix(self, *, keepalive: bool = True) -> list[str]:
        return []
