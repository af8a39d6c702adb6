"""Network links as `ip -j addr` reports them."""

from __future__ import annotations


def nic_holding(links: list[dict], address: str) -> str | None:
    """Name of the link whose IPv4 addresses include address (`ip -j addr` output)."""
    for link in links:
        if any(a.get("local") == address for a in link.get("addr_info", [])):
            return link.get("ifname")
    return None
