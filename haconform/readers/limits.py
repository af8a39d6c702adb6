"""Resource limits: /etc/security/limits.conf entries and a process's /proc/PID/limits."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class LimitsEntry:
    domain: str
    type: str        # soft, hard or -
    item: str
    value: str
    line: int


def limits_entries(text: str) -> list[LimitsEntry]:
    """The `<domain> <type> <item> <value>` lines of limits.conf(5); comments dropped."""
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        words = raw.split("#", 1)[0].split()
        if len(words) == 4:
            entries.append(LimitsEntry(*words, line=number))
    return entries


def process_limits(machine, pid: int) -> dict[str, dict[str, str]]:
    """/proc/PID/limits as 'Max open files' -> {soft, hard, units}."""
    limits = {}
    for line in machine.read_file(f"/proc/{int(pid)}/limits").splitlines()[1:]:
        match = re.match(r"(.+?)\s{2,}(\S+)\s+(\S+)\s*(\S*)\s*$", line)
        if match:
            limits[match.group(1)] = {"soft": match.group(2), "hard": match.group(3),
                                      "units": match.group(4)}
    return limits
