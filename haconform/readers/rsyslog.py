"""rsyslog's configuration as what the daemon acts on: the ports it listens on, where each facility goes,
and which facilities a selector keeps out.  The harness's only parser of rsyslog.conf and rsyslog.d/*.conf.

Legacy selectors (`local2.*  /var/log/haproxy.log`, `$ModLoad imudp`) and their RainerScript forms
(`module(load="imudp")`, `action(type="omfile" file=...)`) read the same.  What it does not understand
(`if ... then`, property filters, templates) routes nothing here rather than failing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SELECTOR = re.compile(r"^([\w*]+(?:,[\w*]+)*)\.([!=]*)([\w*]+)$")
_NOT_SELECTOR = ("$", "module(", "input(", "global(", "template(", "include(", "ruleset(", "if ", ":")
_QUOTED_OR_COMMENT = re.compile(r'("[^"]*")|#.*')


@dataclass
class RsyslogConfig:
    udp_ports: set[int] = field(default_factory=set)
    tcp_ports: set[int] = field(default_factory=set)
    routes: dict[str, list[str]] = field(default_factory=dict)      # facility -> actions (files), in order
    excluded: dict[str, set[str]] = field(default_factory=dict)     # action -> facilities a `.none` keeps out
    # Where each fact is said, for a difference to point at: ("udp", 514), ("action", file),
    # ("excl", file, facility), ("route", facility, file), ("fac", facility) -> line number.
    lines: dict[tuple, int] = field(default_factory=dict)

    def ports(self, protocol: str) -> set[int]:
        """The ports an imudp ("udp") or imtcp ("tcp") input listens on."""
        return self.udp_ports if protocol == "udp" else self.tcp_ports

    def reaches(self, facility: str, action: str) -> bool:
        """Whether a message of this facility reaches this action (a file): its own rule, or `*.` not undone
        by a `.none`."""
        if action in self.routes.get(facility, []):
            return True
        return facility != "*" and action in self.routes.get("*", []) \
            and facility not in self.excluded.get(action, set())


def _statements(text: str):
    # Joins RainerScript objects that span lines: module(...), input(...), action(...).
    buf, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = _QUOTED_OR_COMMENT.sub(lambda m: m[1] or "", raw).strip()
        if not line:
            continue
        start, buf = (start, f"{buf} {line}") if buf else (number, line)
        bare = re.sub(r'"[^"]*"', "", buf)  # a ")" inside a template string closes nothing
        if bare.count("(") <= bare.count(")"):
            yield start, buf
            buf = ""
    if buf:
        yield start, buf


def _param(stmt: str, name: str) -> str | None:
    match = re.search(rf'\b{name}\s*=\s*("[^"]*"|\[[^\]]*\]|[^\s)]+)', stmt, re.I)
    return match[1].strip('"') if match else None


def _action(action: str) -> str:
    action = action.strip()
    if action.startswith("action("):
        if (_param(action, "type") or "").lower() == "omfile" and _param(action, "file"):
            return _param(action, "file")
        return action
    if action == "~":
        return "stop"
    if action.startswith(("/", "-/")):
        return action.lstrip("-").split(";", 1)[0]  # "-" only skips sync; ";x" is a template
    return action


def parse_rsyslog(text: str) -> RsyslogConfig:
    """rsyslog configuration text (rsyslog.conf and its rsyslog.d/*.conf joined) as what it sets up."""
    modules: set[str] = set()
    ports: list[tuple[str, int, int]] = []
    config = RsyslogConfig()
    selectors: list[str] = []
    for number, stmt in _statements(text):
        low = stmt.lower()
        if stmt.startswith("&"):  # same filter as the statement before, if that was a selector
            if selectors:
                _route(config, selectors, _action(stmt[1:]), number)
            continue
        selectors = []
        if low.startswith("$modload"):
            modules.update(m.removesuffix(".so") for m in low.split()[1:2])
        elif low.startswith(("$udpserverrun", "$inputudpserverrun", "$inputtcpserverrun")):
            proto = "tcp" if "tcp" in low.split()[0] else "udp"
            ports += [(proto, int(p), number) for p in low.split()[1:2] if p.isdigit()]
        elif low.startswith("module("):
            modules.add((_param(stmt, "load") or "").lower())
        elif low.startswith("input("):
            kind = (_param(stmt, "type") or "").lower()
            if kind in ("imudp", "imtcp"):
                given = _param(stmt, "port") or ("514" if kind == "imudp" else "")
                ports += [(kind[2:], int(p), number) for p in re.findall(r"\d+", given)]
        elif not stmt.startswith(_NOT_SELECTOR):
            parts = stmt.split(None, 1)
            sels = parts[0].split(";") if len(parts) == 2 else []
            if sels and all(_SELECTOR.match(s) for s in sels):
                selectors = sels
                _route(config, sels, _action(parts[1]), number)
    for proto, port, number in ports:
        if f"im{proto}" in modules:  # a port directive without its module opens nothing
            config.ports(proto).add(port)
            config.lines.setdefault((proto, port), number)
    for action, facs in config.excluded.items():
        # A .none undone by an explicit rule elsewhere does not keep that facility out.
        facs.difference_update({f for f in facs if action in config.routes.get(f, [])})
    return config


def _route(config: RsyslogConfig, selectors: list[str], action: str, number: int) -> None:
    lines = config.lines
    lines.setdefault(("action", action), number)
    for sel in selectors:
        facs, _, prio = _SELECTOR.match(sel).groups()
        for fac in facs.lower().split(","):
            if prio.lower() == "none":
                config.excluded.setdefault(action, set()).add(fac)
                lines.setdefault(("excl", action, fac), number)
            else:
                if action not in config.routes.setdefault(fac, []):
                    config.routes[fac].append(action)
                lines.setdefault(("route", fac, action), number)
                lines.setdefault(("fac", fac), number)
