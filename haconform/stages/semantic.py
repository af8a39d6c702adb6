"""Configuration files compared by meaning, not bytes.

A deployment built by hand from the runbook has its own comments, spacing
and ordering; a sha256 comparison would fail it for nothing.  These pure
functions compare what the daemon would act on, as the readers parse it
(haconform/readers: haproxy_config, rsyslog, limits), and report what
differs as rows a person can read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import zip_longest

from ..readers.haproxy_config import Directive, Section, config_sections, time_ms
from ..readers.limits import effective_limits
from ..readers.rsyslog import parse_rsyslog
from .settings import (haproxy_key, haproxy_rule_key, limits_key, rsyslog_exclusion_key, rsyslog_port_key,
                       rsyslog_route_key)


@dataclass(frozen=True)
class Difference:
    what: str
    expected: str  # "" when nothing is expected (an extra directive)
    found: str     # "missing" when absent
    where: str     # path:line, found side when it exists
    # The setting's key path (haconform/stages/settings.py): what a waiver names.  Not part of equality:
    # it is derived from `what`, by the same comparison.
    key: str = field(default="", compare=False)

    def row(self) -> dict:
        return {"what": self.what, "expected": self.expected, "found": self.found, "where": self.where,
                "key": self.key}


# ---------------------------------------------------------------- haproxy.cfg

# First match wins for these, so their order is meaning.  tcp-check/http-check
# rules run in sequence too, which the 2.6 manual makes explicit.
ORDERED_KEYWORDS = frozenset({
    "use_backend", "http-request", "http-response", "http-after-response", "tcp-request",
    "tcp-response", "redirect", "block", "use-server", "tcp-check", "http-check"})
# Keywords whose key is their first two words: "option httplog" and
# "option dontlognull" are different settings, not two values of one.
_TWO_WORD_KEYS = frozenset({"option", "timeout", "stats", "tcp-request", "tcp-response"})
SERVER_VALUE_KEYWORDS = frozenset({
    "weight", "inter", "fastinter", "downinter", "rise", "fall", "port", "addr", "maxconn",
    "minconn", "maxqueue", "slowstart", "cookie", "id", "observe", "on-error", "error-limit",
    "agent-port", "agent-inter", "agent-addr", "resolvers", "resolve-prefer", "init-addr",
    "source", "track", "verify", "sni", "ca-file", "crt", "proto", "alpn", "check-sni"})
_SERVER_TIME_KEYWORDS = frozenset({"inter", "fastinter", "downinter", "slowstart", "agent-inter"})


def _ms(value: str) -> str:
    try:
        ms = time_ms(value)
    except ValueError:
        return value
    return str(int(ms)) if ms.is_integer() else str(ms)


def _rename(words: tuple[str, ...], names: Mapping[str, str]) -> tuple[str, ...]:
    if names and len(words) > 1 and words[0] in ("use_backend", "default_backend", "server", "use-server"):
        return (words[0], names.get(words[1], words[1])) + words[2:]
    return words


def _key(words: tuple[str, ...]) -> tuple[str, ...]:
    core = words[1:] if words[0] in ("no", "default") and len(words) > 1 else words
    return core[:2] if core[0] in _TWO_WORD_KEYS or core[0] in ("server", "use-server") else core[:1]


def _server_options(opts: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    groups, rest = [], list(opts)
    while rest:
        word = rest.pop(0)
        if word in SERVER_VALUE_KEYWORDS and rest:
            groups.append((word, _ms(rest.pop(0)) if word in _SERVER_TIME_KEYWORDS else rest.pop(0)))
        else:
            groups.append((word,))
    return tuple(sorted(groups))


def _normal(words: tuple[str, ...]) -> tuple:
    if words[0] == "timeout" and len(words) == 3:
        return ("timeout", words[1], _ms(words[2]))
    if words[0] == "server" and len(words) > 2:
        return ("server", words[1], words[2], _server_options(words[3:]))
    if words[0] == "default-server":
        return ("default-server", _server_options(words[1:]))
    return words


_ACL_FLAGS_WITH_VALUE = frozenset({"-m", "-f", "-M"})


def _acl_entries(words: tuple[str, ...]) -> set[tuple]:
    # One line with several patterns is the same OR-set as one line per pattern.
    if len(words) < 3:
        return {words}
    rest, flags = list(words[3:]), []
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0)
        if flag == "--":
            break
        flags.append((flag, rest.pop(0)) if flag in _ACL_FLAGS_WITH_VALUE and rest else (flag,))
    head = (words[1], words[2], tuple(sorted(flags)))
    return {head + (p,) for p in rest} or {head + ("",)}


def _split(section: Section, names: Mapping[str, str]):
    acls: dict[str, list[Directive]] = {}
    ordered: dict[tuple[str, ...], list[Directive]] = {}
    plain: list[Directive] = []
    for d in section.directives:
        d = Directive(_rename(d.words, names), d.line)
        if d.words[0] == "acl" and len(d.words) > 1:
            acls.setdefault(d.words[1], []).append(d)
        elif d.words[0] in ORDERED_KEYWORDS:
            ordered.setdefault(_key(d.words), []).append(d)
        else:
            plain.append(d)
    return acls, ordered, plain


def _unmatched(ours: list[Directive], theirs: list[Directive]) -> list[Directive]:
    left = Counter(_normal(d.words) for d in theirs)
    out = []
    for d in ours:
        if left[_normal(d.words)] > 0:
            left[_normal(d.words)] -= 1
        else:
            out.append(d)
    return out


def _compare_section(label: str, exp: Section, got: Section, names: Mapping[str, str],
                     at_e, at_f) -> list[Difference]:
    diffs: list[Difference] = []
    e_acls, e_ord, e_plain = _split(exp, {})
    f_acls, f_ord, f_plain = _split(got, names)

    missing, extra = _unmatched(e_plain, f_plain), _unmatched(f_plain, e_plain)
    paired: set[Directive] = set()
    for d in missing:
        same_e = [m for m in missing if _key(m.words) == _key(d.words)]
        same_f = [x for x in extra if _key(x.words) == _key(d.words)]
        what = f"{label}: {' '.join(_key(d.words))}"
        key = haproxy_key(label, *_key(d.words))
        if len(same_e) == 1 and len(same_f) == 1:
            f = same_f[0]
            paired.add(f)
            n = len(_key(d.words))
            e_val, f_val = " ".join(d.words[n:]), " ".join(f.words[n:])
            if not e_val or not f_val or d.words[:n] != _key(d.words) or f.words[:n] != _key(f.words):
                e_val, f_val = " ".join(d.words), " ".join(f.words)  # a bare flag or "no option"
            diffs.append(Difference(what, e_val, f_val, at_f(f.line), key))
        else:
            diffs.append(Difference(what, " ".join(d.words), "missing", at_e(d.line), key))
    diffs += [Difference(f"{label}: extra directive", "", " ".join(x.words), at_f(x.line),
                         haproxy_key(label, *_key(x.words)))
              for x in extra if x not in paired]

    for acl in sorted(set(e_acls) | set(f_acls)):
        e_lines, f_lines = e_acls.get(acl, []), f_acls.get(acl, [])
        e_set = set().union(*(_acl_entries(d.words) for d in e_lines))
        f_set = set().union(*(_acl_entries(d.words) for d in f_lines))
        if e_set != f_set:
            show = lambda lines: " | ".join(" ".join(d.words[2:]) for d in lines)
            diffs.append(Difference(f"{label}: acl {acl}", show(e_lines), show(f_lines) or "missing",
                                    at_f(f_lines[0].line) if f_lines else at_e(e_lines[0].line),
                                    haproxy_key(label, "acl", acl)))

    for key in sorted(set(e_ord) | set(f_ord)):
        e_seq, f_seq = e_ord.get(key, []), f_ord.get(key, [])
        for i, (e_d, f_d) in enumerate(zip_longest(e_seq, f_seq)):
            if e_d and f_d and e_d.words == f_d.words:
                continue
            diffs.append(Difference(
                f"{label}: {' '.join(key)} rule {i + 1}",
                " ".join(e_d.words) if e_d else "",
                " ".join(f_d.words) if f_d else "missing",
                at_f(f_d.line) if f_d else at_e(e_d.line), haproxy_rule_key(label, " ".join(key), i + 1)))
            break  # after the first difference every later position shifts too
    return diffs


def compare_haproxy(expected: str, found: str, *, expected_source: str, found_source: str,
                    names: Mapping[str, str] | None = None) -> list[Difference]:
    names = names or {}
    at_e = lambda line: f"{expected_source}:{line}"
    at_f = lambda line: f"{found_source}:{line}"

    def keyed(sections: list[Section], mapping: Mapping[str, str]) -> dict:
        # Several unnamed "defaults" are legal; the n-th meets the n-th.
        out, seen = {}, Counter()
        for s in sections:
            name = mapping.get(s.name, s.name) if s.name else None
            seen[(s.kind, name)] += 1
            out[(s.kind, name, seen[(s.kind, name)])] = s
        return out

    exp, got = keyed(config_sections(expected), {}), keyed(config_sections(found), names)
    diffs: list[Difference] = []
    for key, e_sec in exp.items():
        label = f"{key[0]} {key[1]}" if key[1] else key[0]
        if key in got:
            diffs += _compare_section(label, e_sec, got[key], names, at_e, at_f)
        else:
            diffs.append(Difference(label, label, "missing", at_e(e_sec.line), haproxy_key(label)))
    for key, f_sec in got.items():
        if key not in exp:
            head = f"{f_sec.kind} {f_sec.name}" if f_sec.name else f_sec.kind
            diffs.append(Difference(f"{head}: extra section", "", head, at_f(f_sec.line), haproxy_key(head)))
    return diffs


# -------------------------------------------------------------------- rsyslog

def compare_rsyslog(expected: str, found: str, *, expected_source: str,
                    found_source: str) -> list[Difference]:
    exp, got = parse_rsyslog(expected), parse_rsyslog(found)
    where = lambda fkey, ekey: (f"{found_source}:{got.lines[fkey]}" if fkey in got.lines
                                else f"{expected_source}:{exp.lines.get(ekey, 0)}")
    diffs: list[Difference] = []
    for proto in ("udp", "tcp"):
        lost = sorted(exp.ports(proto) - got.ports(proto))
        new = sorted(got.ports(proto) - exp.ports(proto))
        if len(lost) == len(new) == 1:  # a moved port reads better as one row
            diffs.append(Difference(f"rsyslog: im{proto} port", str(lost[0]), str(new[0]),
                                    where((proto, new[0]), ()), rsyslog_port_key(proto)))
            continue
        diffs += [Difference(f"rsyslog: im{proto} port {p}", str(p), "missing", where((), (proto, p)),
                             rsyslog_port_key(proto)) for p in lost]
        diffs += [Difference(f"rsyslog: im{proto} port {p}", "", str(p), where((proto, p), ()),
                             rsyslog_port_key(proto)) for p in new]
    for fac, actions in exp.routes.items():
        for action in actions:
            if not got.reaches(fac, action):
                diffs.append(Difference(f"rsyslog: {fac} → {action}", action,
                                        ", ".join(got.routes.get(fac, [])) or "missing",
                                        where(("fac", fac), ("route", fac, action)),
                                        rsyslog_route_key(fac, action)))
    for action, facs in exp.excluded.items():
        for fac in sorted(facs):
            if got.reaches(fac, action):
                diffs.append(Difference(f"rsyslog: {fac}.none on {action}", "excluded",
                                        "reaches it", where(("action", action), ("excl", action, fac)),
                                        rsyslog_exclusion_key(fac, action)))
    return diffs


# ---------------------------------------------------------------- limits.conf

def compare_limits(expected: str, found: str, *, expected_source: str,
                   found_source: str) -> list[Difference]:
    exp, got = effective_limits(expected), effective_limits(found)
    diffs: list[Difference] = []
    for key, (value, line) in exp.items():
        what = f"limits: {' '.join(key)}"
        if key not in got:
            diffs.append(Difference(what, value, "missing", f"{expected_source}:{line}", limits_key(*key)))
        elif got[key][0] != value:
            diffs.append(Difference(what, value, got[key][0], f"{found_source}:{got[key][1]}", limits_key(*key)))
    return diffs
