"""haproxy.cfg as the applied file says it: sections, maxconn, backend servers,
the stats page's credentials, health-check timing.

One tokenizer: the sections come from `stages.semantic.parse_haproxy_cfg`
(the parser configurations are compared with).  These readers keep their own
meaning of a section, though: the words after a section's name on its header
line (HAProxy 1.x `listen stats *:8080`, `defaults x from y`) are not one of
its lines here, where semantic.py turns them into a `bind` directive.  So
`directives("bind")` lists only real `bind` lines, as it always did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..secrets import register
from ..stages.semantic import parse_haproxy_cfg


# HAProxy's defaults when a server line says nothing (configuration.txt 5.2).
DEFAULT_INTER_S = 2.0
DEFAULT_FALL = 3
DEFAULT_RISE = 2


@dataclass(frozen=True)
class ConfigSection:
    kind: str                     # global, defaults, frontend, backend, listen, ...
    name: str | None
    lines: tuple[tuple[str, ...], ...]   # words of each line, comments dropped

    def directives(self, *keyword: str) -> list[tuple[str, ...]]:
        """Arguments of each line starting with these words, e.g. directives("stats", "auth")."""
        n = len(keyword)
        return [words[n:] for words in self.lines if words[:n] == keyword]


def config_sections(config_text: str) -> list[ConfigSection]:
    """haproxy.cfg as its sections, in order; `#` starts a comment.

    A section's lines are those after its header line: what semantic.py makes
    of extra words on the header (a directive on the header's own line) is
    left out.
    """
    return [ConfigSection(section.kind, section.name,
                          tuple(d.words for d in section.directives if d.line != section.line))
            for section in parse_haproxy_cfg(config_text)]


def config_section(config_text: str, kind: str, name: str | None = None) -> ConfigSection:
    """The first section of this kind (and name); LookupError when there is none."""
    for section in config_sections(config_text):
        if section.kind == kind and (name is None or section.name == name):
            return section
    raise LookupError(f"no `{kind}{' ' + name if name else ''}` section in haproxy.cfg")


def config_maxconn(config_text: str, kind: str) -> int | None:
    """`maxconn` of the global or defaults section (the last one given wins), None when absent."""
    values = config_section(config_text, kind).directives("maxconn")
    return int(values[-1][0]) if values else None


def backend_servers(config_text: str, backend: str) -> dict[str, dict]:
    """Server name -> {address, weight, check} of a backend (weight defaults to 1)."""
    servers = {}
    for words in config_section(config_text, "backend", backend).directives("server"):
        name, address, options = words[0], words[1], list(words[2:])
        weight = int(options[options.index("weight") + 1]) if "weight" in options else 1
        servers[name] = {"address": address, "weight": weight, "check": "check" in options}
    return servers


def stats_credentials(config_text: str) -> dict:
    """uri, port and the (user, password) of `stats auth` in the listen section that has one.

    The password is registered as a secret the moment it is read, so it never
    reaches a report.
    """
    for section in config_sections(config_text):
        auth = section.directives("stats", "auth")
        if section.kind in ("listen", "frontend") and auth:
            user, _, password = auth[-1][0].partition(":")
            register(password, what="the password of `stats auth`", where=f"haproxy.cfg, {section.kind} {section.name}",
                     fix="use a stats password of at least 4 characters")
            register(f"{user}:{password}")
            uri = section.directives("stats", "uri")
            binds = section.directives("bind")
            port = int(binds[0][0].rsplit(":", 1)[1]) if binds else None
            return {"section": section.name, "uri": uri[-1][0] if uri else "/haproxy?stats",
                    "port": port, "user": user, "password": password}
    raise LookupError("no `stats auth` line in a listen or frontend section")


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)?", value)
    if not match:
        raise ValueError(f"not an HAProxy time: {value!r}")
    number, unit = float(match.group(1)), match.group(2) or "ms"
    return number * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def check_timing(config_text: str, backend: str, server: str) -> dict:
    """inter/fall/rise of one server's health check, as the applied config sets them."""
    for section in config_sections(config_text):
        if (section.kind, section.name) != ("backend", backend):
            continue
        for words in section.directives("server"):          # name, address, options...
            if words[:1] == (server,):
                opts = dict(zip(words[2:], words[3:]))      # each word -> the word after it
                inter = _seconds(opts["inter"]) if "inter" in opts else DEFAULT_INTER_S
                fall = int(opts.get("fall", DEFAULT_FALL))
                rise = int(opts.get("rise", DEFAULT_RISE))
                return {"inter_s": inter, "fall": fall, "rise": rise, "checked": "check" in words,
                        "down_after_s": inter * fall, "up_after_s": inter * rise}
    raise LookupError(f"no `server {server}` in backend {backend}")
