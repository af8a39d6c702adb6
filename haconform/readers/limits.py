"""Resource limits: /etc/security/limits.conf entries and a process's /proc/PID/limits."""

from __future__ import annotations

import re
from dataclasses import dataclass


# What pam_limits takes for no limit at all; an effective value says "unlimited" for each.
_UNLIMITED = {"unlimited", "infinity", "-1"}


@dataclass(frozen=True)
class LimitsEntry:
    domain: str
    type: str        # soft, hard or -
    item: str
    value: str
    line: int


def limits_entries(text: str) -> list[LimitsEntry]:
    """The `<domain> <type> <item> <value>` lines of limits.conf(5), as written; comments dropped.

    The harness's only parser of limits.conf.  Words after the value are ignored, as the
    comparison of effective limits always has.
    """
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        words = raw.split("#", 1)[0].split()
        if len(words) >= 4:
            entries.append(LimitsEntry(*words[:4], line=number))
    return entries


def effective_limits(text: str) -> dict[tuple[str, str, str], tuple[str, int]]:
    """(domain, soft|hard, item) -> (value, line) that pam_limits applies: `-` sets both, the later line
    wins, and every spelling of no limit reads "unlimited"."""
    effective: dict[tuple[str, str, str], tuple[str, int]] = {}
    for entry in limits_entries(text):
        value = "unlimited" if entry.value.lower() in _UNLIMITED else entry.value
        for kind in ("soft", "hard") if entry.type == "-" else (entry.type,):
            effective[(entry.domain, kind, entry.item)] = (value, entry.line)
    return effective


def process_limits(machine, pid: int) -> dict[str, dict[str, str]]:
    """/proc/PID/limits as 'Max open files' -> {soft, hard, units}."""
    limits = {}
    for line in machine.read_file(f"/proc/{int(pid)}/limits").splitlines()[1:]:
        match = re.match(r"(.+?)\s{2,}(\S+)\s+(\S+)\s*(\S*)\s*$", line)
        if match:
            limits[match.group(1)] = {"soft": match.group(2), "hard": match.group(3),
                                      "units": match.group(4)}
    return limits
