"""haproxy.cfg and what `haproxy -c` says of one: the harness's only parser of either.

`config_sections` turns a haproxy.cfg into its sections and directives, the
model the stages compare by meaning (haconform/stages/semantic.py) and the
suites read maxconn, backend servers, the stats page's credentials and
health-check timing from.  `check_alerts` reads the alerts of `haproxy -c`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..redaction import register


# HAProxy's defaults when a server line says nothing (configuration.txt 5.2).
DEFAULT_INTER_S = 2.0
DEFAULT_FALL = 3
DEFAULT_RISE = 2

SECTION_KEYWORDS = frozenset({
    "global", "defaults", "frontend", "backend", "listen", "userlist", "peers", "resolvers",
    "mailers", "program", "http-errors", "ring", "cache", "fcgi-app"})


@dataclass(frozen=True)
class Directive:
    words: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class Section:
    kind: str                     # global, defaults, frontend, backend, listen, ...
    name: str | None
    line: int                     # of the section's header
    # What HAProxy acts on, comments dropped.  Words after the name on the header line are a directive
    # on the header's line: a 1.x address (`listen stats *:8080`) is read as the `bind` it means now.
    directives: tuple[Directive, ...]

    @property
    def lines(self) -> tuple[tuple[str, ...], ...]:
        """Words of each line after the header: a 1.x header address is not one of them, so the readers
        below find only real `bind` lines, as HAProxy 2.x does."""
        return tuple(d.words for d in self.directives if d.line != self.line)

    def arguments(self, *keyword: str) -> list[tuple[str, ...]]:
        """Arguments of each line starting with these words, e.g. arguments("stats", "auth")."""
        n = len(keyword)
        return [words[n:] for words in self.lines if words[:n] == keyword]

    @property
    def header_address(self) -> str | None:
        """The listening address a HAProxy 1.x header line carries (`frontend main *:80`), None without one."""
        for d in self.directives:
            if d.line == self.line and d.words[0] == "bind":
                return " ".join(d.words[1:])
        return None


def config_sections(config_text: str) -> list[Section]:
    """haproxy.cfg as its sections, in order; `#` starts a comment."""
    sections: list[Section] = []
    head: tuple[str, str | None, int] | None = None
    body: list[Directive] = []
    for number, raw in enumerate(config_text.splitlines(), 1):
        words = tuple(raw.split("#", 1)[0].split())
        if not words:
            continue
        if words[0] in SECTION_KEYWORDS:
            if head:
                sections.append(Section(*head, tuple(body)))
            head, body = (words[0], words[1] if len(words) > 1 else None, number), []
            if extra := words[2:]:
                # 1.x "listen stats *:8080": the address is what a bind line says now.
                address = words[0] in ("frontend", "listen") and extra[0] != "from"
                body.append(Directive(("bind",) * address + extra, number))
        elif head:
            # HAProxy refuses directives before any section, so they carry no meaning.
            body.append(Directive(words, number))
    if head:
        sections.append(Section(*head, tuple(body)))
    return sections


def config_section(config_text: str, kind: str, name: str | None = None) -> Section:
    """The first section of this kind (and name); LookupError when there is none."""
    for section in config_sections(config_text):
        if section.kind == kind and (name is None or section.name == name):
            return section
    raise LookupError(f"no `{kind}{' ' + name if name else ''}` section in haproxy.cfg")


def config_maxconn(config_text: str, kind: str) -> int | None:
    """`maxconn` of the global or defaults section (the last one given wins), None when absent."""
    values = config_section(config_text, kind).arguments("maxconn")
    return int(values[-1][0]) if values else None


def backend_servers(config_text: str, backend: str) -> dict[str, dict]:
    """Server name -> {address, weight, check} of a backend (weight defaults to 1)."""
    servers = {}
    for words in config_section(config_text, "backend", backend).arguments("server"):
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
        auth = section.arguments("stats", "auth")
        if section.kind in ("listen", "frontend") and auth:
            user, _, password = auth[-1][0].partition(":")
            register(password, what="the password of `stats auth`", where=f"haproxy.cfg, {section.kind} {section.name}",
                     fix="use a stats password of at least 4 characters")
            register(f"{user}:{password}")
            uri = section.arguments("stats", "uri")
            binds = section.arguments("bind")
            port = int(binds[0][0].rsplit(":", 1)[1]) if binds else None
            return {"section": section.name, "uri": uri[-1][0] if uri else "/haproxy?stats",
                    "port": port, "user": user, "password": password}
    raise LookupError("no `stats auth` line in a listen or frontend section")


_TIME = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)?")
_TIME_UNITS_MS = {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def time_ms(value: str) -> float:
    """An HAProxy time (configuration.txt 2.5) in milliseconds: a bare number is milliseconds."""
    match = _TIME.fullmatch(value)
    if not match:
        raise ValueError(f"not an HAProxy time: {value!r}")
    return float(match[1]) * _TIME_UNITS_MS[match[2] or "ms"]


def check_timing(config_text: str, backend: str, server: str) -> dict:
    """inter/fall/rise of one server's health check, as the applied config sets them."""
    for section in config_sections(config_text):
        if (section.kind, section.name) != ("backend", backend):
            continue
        for words in section.arguments("server"):          # name, address, options...
            if words[:1] == (server,):
                opts = dict(zip(words[2:], words[3:]))      # each word -> the word after it
                inter = time_ms(opts["inter"]) / 1000 if "inter" in opts else DEFAULT_INTER_S
                fall = int(opts.get("fall", DEFAULT_FALL))
                rise = int(opts.get("rise", DEFAULT_RISE))
                return {"inter_s": inter, "fall": fall, "rise": rise, "checked": "check" in words,
                        "down_after_s": inter * fall, "up_after_s": inter * rise}
    raise LookupError(f"no `server {server}` in backend {backend}")


# ---------------------------------------------------------------- haproxy -c

# An alert of the configuration parser (HAProxy 2.x): "[ALERT]    (1234) : config : parsing [FILE:LINE] : MESSAGE",
# without the location for what concerns the file as a whole.
_CHECK_ALERT = re.compile(r"\[ALERT\]\s+\(\d+\) : config : (?:parsing \[(?P<file>[^:\]]+):(?P<line>\d+)\] : )?"
                          r"(?P<message>.*)$")
# The alert that closes a refused check counts the errors; it is none of its own.
_CHECK_SUMMARY = re.compile(r"(Error\(s\) found in configuration file|Fatal errors found in configuration)")


@dataclass(frozen=True)
class CheckAlert:
    text: str                    # as printed, from "[ALERT]" on
    message: str
    file: str | None             # None: the alert names no line
    line: int | None

    @property
    def is_summary(self) -> bool:
        return bool(_CHECK_SUMMARY.search(self.message))


def check_alerts(output: Iterable[str]) -> list[CheckAlert]:
    """The configuration alerts among the lines `haproxy -c` printed (notices and warnings left out)."""
    alerts = []
    for printed in output:
        if match := _CHECK_ALERT.search(printed):
            alerts.append(CheckAlert(match[0], match["message"], match["file"],
                                     int(match["line"]) if match["line"] else None))
    return alerts
