"""Every documented setting by one name: its key path.

A key path names a setting by meaning, the same way wherever it appears:

    haproxy.cfg[defaults].timeout server          a directive (its key words: `timeout server`, `server app1`)
    haproxy.cfg[frontend main].acl url_static     an ACL (all its lines: one OR-set)
    haproxy.cfg[frontend main].use_backend[1]     an ordered rule, by its position
    haproxy.cfg[backend static]                   a whole section (present or missing)
    rsyslog[imudp port]                           a listener's port
    rsyslog[local2 -> /var/log/haproxy.log]       a route of a facility to an action
    rsyslog[local2.none on /var/log/messages]     a facility kept out of an action
    limits.conf[haproxy hard nofile]              an effective limit
    cluster.properties.stonith-enabled            a key of the stage's `cluster:` block, as stage.yaml
    cluster.resources.vip.operations[monitor].interval   spells it, with a resource's role and an
    cluster.stonith.fence.params.pcmk_host_map           operation's name instead of list positions
    fencing.key_file                              the fence key the directors share

The verifier gives each difference the key path of the setting it is about
(Difference.key, ClusterDifference.key), a waiver names the difference it
accepts by it (haconform/waivers.py), and runbook coverage lists the settings
by it (haconform/coverage.py): one name, so the three agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..readers.haproxy_config import config_sections
from ..readers.limits import effective_limits
from ..readers.rsyslog import parse_rsyslog

HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
RSYSLOG_FILES = ("/etc/rsyslog.conf", "/etc/rsyslog.d/")
LIMITS_FILES = ("/etc/security/limits.conf", "/etc/security/limits.d/")


def haproxy_key(section: str, *words: str) -> str:
    """section: its label as the verifier writes it (`defaults`, `frontend main`); words: the directive's key."""
    return f"haproxy.cfg[{section}]" + (f".{' '.join(words)}" if words else "")


def haproxy_rule_key(section: str, keyword: str, position: int) -> str:
    return f"haproxy.cfg[{section}].{keyword}[{position}]"


def rsyslog_port_key(protocol: str) -> str:
    return f"rsyslog[im{protocol} port]"


def rsyslog_route_key(facility: str, action: str) -> str:
    return f"rsyslog[{facility} -> {action}]"


def rsyslog_exclusion_key(facility: str, action: str) -> str:
    return f"rsyslog[{facility}.none on {action}]"


def limits_key(domain: str, kind: str, item: str) -> str:
    return f"limits.conf[{domain} {kind} {item}]"


def cluster_key(*parts: str) -> str:
    return ".".join(("cluster", *parts))


def operation_key(kind: str, role: str, operation: str) -> str:
    """kind: resources or stonith."""
    return f"cluster.{kind}.{role}.operations[{operation}].interval"


def file_key(path: str) -> str:
    return f"file[{path}]"


@dataclass(frozen=True)
class Setting:
    key: str
    value: str        # the documented value as text ("" where the key alone says it: a flag, a route)
    stage: str
    source: str       # the stage file that documents it


def _is_under(dest: str, family: tuple[str, ...]) -> bool:
    return dest == family[0] or (dest.startswith(family[1]) and dest.endswith(".conf"))


def haproxy_settings(text: str) -> list[tuple[str, str]]:
    """(key path, value) of every directive of a haproxy.cfg, in file order."""
    from .semantic import ORDERED_KEYWORDS, _key

    found: list[tuple[str, str]] = []
    for section in config_sections(text):
        # A section itself is no setting (a missing one is a difference keyed by it all the same).
        label = f"{section.kind} {section.name}" if section.name else section.kind
        positions: dict[tuple[str, ...], int] = {}
        for directive in section.directives:
            words = directive.words
            if words[0] == "acl" and len(words) > 1:
                found.append((haproxy_key(label, "acl", words[1]), " ".join(words[2:])))
            elif words[0] in ORDERED_KEYWORDS:
                key = _key(words)
                positions[key] = positions.get(key, 0) + 1
                found.append((haproxy_rule_key(label, " ".join(key), positions[key]), " ".join(words)))
            else:
                key = _key(words)
                found.append((haproxy_key(label, *key), " ".join(words[len(key):])))
    return found


def rsyslog_settings(text: str) -> list[tuple[str, str]]:
    config = parse_rsyslog(text)
    found = [(rsyslog_port_key(protocol), str(port)) for protocol in ("udp", "tcp")
             for port in sorted(config.ports(protocol))]
    found += [(rsyslog_route_key(facility, action), "") for facility, actions in config.routes.items()
              for action in actions]
    found += [(rsyslog_exclusion_key(facility, action), "") for action, facilities in config.excluded.items()
              for facility in sorted(facilities)]
    return found


def limits_settings(text: str) -> list[tuple[str, str]]:
    return [(limits_key(*key), value) for key, (value, _) in effective_limits(text).items()]


def _resource_settings(kind: str, role: str, resource) -> list[tuple[str, str]]:
    found = [(cluster_key(kind, role), resource.id), (cluster_key(kind, role, "agent"), resource.agent)]
    found += [(cluster_key(kind, role, "params", name), value) for name, value in resource.params.items()]
    found += [(operation_key(kind, role, op.name), op.interval) for op in resource.operations]
    return found


def cluster_settings(spec) -> list[tuple[str, str]]:
    """(key path, value) of a ClusterSpec (haconform/stages/model.py), in stage.yaml's order."""
    found = [(cluster_key("name"), spec.name)]
    found += [(cluster_key("properties", name), value) for name, value in spec.properties.items()]
    for role, resource in spec.resources.items():
        found += _resource_settings("resources", role, resource)
    if spec.group_id:
        found += [(cluster_key("group", "id"), spec.group_id),
                  (cluster_key("group", "members"), " ".join(spec.group_members))]
    for constraint in spec.constraints:
        found.append((cluster_key("constraints", constraint.type), " ".join(constraint.roles)))
    for role, device in spec.stonith.items():
        found += _resource_settings("stonith", role, device)
    if spec.fencing is not None:
        fencing = spec.fencing
        found += [("fencing.key_file", fencing.key_file), ("fencing.key_bytes", str(fencing.key_bytes)),
                  ("fencing.multicast_address", fencing.multicast_address), ("fencing.port", str(fencing.port)),
                  ("fencing.interface", fencing.interface)]
    return found


def documented_settings(stage) -> list[Setting]:
    """Every directive and cluster key a stage's data carries (haproxy.cfg, rsyslog, limits, `cluster:`),
    each once, in the order the stage documents them."""
    found: dict[str, Setting] = {}

    def add(pairs, source: str) -> None:
        for key, value in pairs:
            found.setdefault(key, Setting(key, value, stage.name, source))

    rsyslog = [f for f in stage.files if _is_under(f.dest, RSYSLOG_FILES)]
    limits = [f for f in stage.files if _is_under(f.dest, LIMITS_FILES)]
    for f in stage.files:
        if f.dest == HAPROXY_CFG:
            add(haproxy_settings(f.source.read_text(encoding="utf-8")), str(f.source))
    if rsyslog:
        add(rsyslog_settings("\n".join(f.source.read_text(encoding="utf-8") for f in rsyslog)),
            ", ".join(sorted({str(f.source) for f in rsyslog})))
    if limits:
        add(limits_settings("\n".join(f.source.read_text(encoding="utf-8") for f in limits)),
            ", ".join(sorted({str(f.source) for f in limits})))
    if stage.cluster is not None:
        add(cluster_settings(stage.cluster), str(stage.directory / "stage.yaml"))
    return list(found.values())
