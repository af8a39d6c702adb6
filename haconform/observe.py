"""Small readers the suites share: who answered, what HAProxy's config says.

They return values; suites assert.
"""

from __future__ import annotations

import re

from .readers.haproxy import HaproxyRuntime

# HAProxy's defaults when a server line says nothing (configuration.txt 5.2).
DEFAULT_INTER_S = 2.0
DEFAULT_FALL = 3
DEFAULT_RISE = 2


def answers(http, url: str, count: int, **kwargs) -> list[str]:
    """First line of each of `count` consecutive responses (the page names its server)."""
    out = []
    for _ in range(count):
        response = http.get(url, **kwargs)
        out.append(response.first_line if response.ok else f"<{response.status or response.error}>")
    return out


def runtime(machine) -> HaproxyRuntime:
    return HaproxyRuntime(machine.host)


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)?", value)
    if not match:
        raise ValueError(f"not an HAProxy time: {value!r}")
    number, unit = float(match.group(1)), match.group(2) or "ms"
    return number * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def check_timing(config_text: str, backend: str, server: str) -> dict:
    """inter/fall/rise of one server's health check, as the applied config sets them."""
    section = None
    for raw in config_text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if raw[:1] not in (" ", "\t"):
            section = (words[0], words[1] if len(words) > 1 else None)
            continue
        if section == ("backend", backend) and words[0] == "server" and words[1] == server:
            opts = dict(zip(words[3::1], words[4::1]))
            inter = _seconds(opts["inter"]) if "inter" in opts else DEFAULT_INTER_S
            fall = int(opts.get("fall", DEFAULT_FALL))
            rise = int(opts.get("rise", DEFAULT_RISE))
            return {"inter_s": inter, "fall": fall, "rise": rise, "checked": "check" in words,
                    "down_after_s": inter * fall, "up_after_s": inter * rise}
    raise LookupError(f"no `server {server}` in backend {backend}")
