"""Named log patterns, in one table (after Pacemaker CTS's patterns.py).

Tests ask for a pattern by name with its parameters filled in:

    pattern("pcmk.fence_result", action="reboot", target="server4", result="OK")

Parameter values are inserted with re.escape, so a node name is matched
literally; pass ANY where any value will do.  Each entry says where its text
comes from, so a version change that rewords a message is one place to fix.
Messages are matched anywhere in a line: the same text appears under
different prefixes in syslog ("pacemaker-fenced[812]:  notice: ...") and in
pacemaker.log ("pacemaker-fenced    [812] (finalize_op)  notice: ...").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .errors import HaconformError


class _Any:
    def __repr__(self) -> str:
        return "ANY"


# Fills a parameter with "any value" instead of a literal.
ANY = _Any()

# A parameter in a template is written @{name}; nothing in a regex uses "@{".
_PLACEHOLDER = re.compile(r"@\{(\w+)\}")


@dataclass(frozen=True)
class PatternSpec:
    template: str                 # regex with @{param} placeholders
    any_value: str                # what ANY stands for in this pattern
    source: str                   # where the message text comes from
    description: str
    wildcards: tuple[tuple[str, str], ...] = ()   # per-parameter ANY, where any_value won't do


_HAPROXY_TAG = r"haproxy\[\d+\]: "

PATTERNS: dict[str, PatternSpec] = {
    # --- HAProxy 2.6 ------------------------------------------------------------
    "haproxy.httplog": PatternSpec(
        _HAPROXY_TAG + r"\S+:\d+ \[[^\]]+\] \S+ @{backend}/@{server} "
        r"-?\d+/-?\d+/-?\d+/-?\d+/\+?-?\d+ @{status} ",
        r"\S+",
        "haproxy 2.6 configuration.txt 8.2.3 (option httplog); "
        "recorded in tests/data/haproxy/haproxy_*.log",
        "one request logged by option httplog, answered by backend/server with status",
    ),
    "haproxy.httplog_request": PatternSpec(
        _HAPROXY_TAG + r'\S+:\d+ \[[^\]]+\] .* "@{method} @{path} HTTP/[\d.]+"$',
        r"\S+",
        "haproxy 2.6 configuration.txt 8.2.3, field 16 (http_request)",
        "one request with this method and path (path as logged, still URL-encoded)",
    ),
    "haproxy.server_down": PatternSpec(
        _HAPROXY_TAG + r"Server @{backend}/@{server} is DOWN",
        r"[^/\s]+",
        "haproxy 2.6 src/server.c srv_append_status; recorded: 'Server app/app3 is DOWN, "
        "reason: Layer4 connection problem, ...'",
        "a health check took a server out",
    ),
    "haproxy.server_up": PatternSpec(
        _HAPROXY_TAG + r"Server @{backend}/@{server} is UP",
        r"[^/\s]+",
        "haproxy 2.6 src/server.c; recorded: 'Server static/app2 is UP, reason: Layer4 "
        "check passed, ...'",
        "a health check brought a server back",
    ),
    "haproxy.server_maintenance": PatternSpec(
        _HAPROXY_TAG + r"Server @{backend}/@{server} (?:is going DOWN for maintenance"
        r"|was DOWN and now enters maintenance)",
        r"[^/\s]+",
        "haproxy 2.6 src/server.c srv_set_admin_state; both forms recorded",
        "a server was put in maintenance (disable server / set server state maint)",
    ),
    "haproxy.backend_no_server": PatternSpec(
        _HAPROXY_TAG + r"backend @{backend} has no server available!",
        r"\S+",
        "haproxy 2.6 src/backend.c set_backend_down; recorded",
        "the last server of a backend went down",
    ),

    # --- Pacemaker 2.1.5 ----------------------------------------------------------
    "pcmk.rsc_op_result": PatternSpec(
        r"Result of @{operation} operation for @{resource} on @{node}: @{result}(?: |$)",
        r"\S+",
        "pacemaker 2.1.5 daemons/controld/controld_execd.c log_executor_event; result is "
        "services_ocf_exitcode_str in lower case ('ok', 'not running', 'error'), operation "
        "is crm_action_str ('probe' for a 0-interval monitor)",
        "the controller recorded the result of a resource action",
        wildcards=(("result", r".+?"),),   # results may be several words: "not running"
    ),
    "pcmk.fence_requested": PatternSpec(
        r"Requesting peer fencing \(@{action}\) targeting @{target}(?: |$)",
        r"\S+",
        "pacemaker 2.1.5 daemons/fenced/fenced_remote.c (string checked in the installed "
        "pacemaker-fenced); CTS Pat:Fencing_start",
        "the fencer asked its peers to fence a node",
    ),
    "pcmk.fence_scheduled": PatternSpec(
        r"Requesting fencing \(@{action}\) of node @{target}(?: |$)",
        r"\S+",
        "pacemaker 2.1.5 daemons/controld/controld_fencing.c (string in pacemaker-controld)",
        "the DC's controller asked for a node to be fenced",
    ),
    "pcmk.fence_result": PatternSpec(
        r"Operation '@{action}' targeting @{target} by \S+ for \S+@\S+: @{result} \(",
        r"\S+",
        "pacemaker 2.1.5 daemons/fenced/fenced_remote.c remote_op_done: \"Operation '%s'%s%s "
        "by %s for %s@%s%s: %s (%s%s%s)\"; result is crm_exit_str ('OK', 'Error occurred')",
        "the fencer finished a fence action",
        wildcards=(("result", r"[^(]+?"),),
    ),
    "pcmk.peer_terminated": PatternSpec(
        r"Peer @{target} was terminated \(@{action}\) by \S+ on behalf of \S+: OK",
        r"\S+",
        "pacemaker 2.1.5 daemons/controld/controld_fencing.c (\"Peer %s was%s terminated "
        "(%s) by %s on behalf of %s@%s: %s...\"); CTS Pat:NodeFenced",
        "the controller learnt a node was fenced successfully",
    ),
    "pcmk.node_state": PatternSpec(
        r"Node @{node} state is now @{state}(?: |$)",
        r"\S+",
        "pacemaker 2.1.5 lib/cluster/membership.c crm_update_peer_state_iter; state is "
        "'member' or 'lost'",
        "the cluster layer saw a node join or leave",
    ),
    "pcmk.quorum_acquired": PatternSpec(
        r"pacemaker-controld.*Quorum acquired",
        r"\S+",
        "pacemaker 2.1.5 daemons/controld (string in pacemaker-controld)",
        "this node's partition gained quorum",
    ),
    "pcmk.quorum_lost": PatternSpec(
        r"pacemaker-controld.*Quorum lost",
        r"\S+",
        "pacemaker 2.1.5 daemons/controld (string in pacemaker-controld)",
        "this node's partition lost quorum",
    ),
    "pcmk.state_transition": PatternSpec(
        r"State transition \S+ -> @{state}(?: |$)",
        r"S_[A-Z_]+",
        "pacemaker 2.1.5 daemons/controld/controld_fsa.c; CTS Pat:DC_IDLE uses '-> S_IDLE'",
        "the controller's state machine changed state (S_IDLE: DC settled)",
    ),

    # --- corosync 3.1.7 / knet ------------------------------------------------------
    "corosync.membership_formed": PatternSpec(
        r"\[TOTEM \] A new membership \([0-9a-f]+\.[0-9a-f]+\) was formed\. Members",
        r"\d+",
        "corosync 3.1 exec/totemsrp.c memb_state_operational_enter",
        "a new totem membership formed",
    ),
    "corosync.member_joined": PatternSpec(
        r"\[TOTEM \] A new membership \([0-9a-f]+\.[0-9a-f]+\) was formed\. Members "
        r"joined:(?: \d+)* @{node_id}(?: |$)",
        r"\d+",
        "corosync 3.1 exec/totemsrp.c: 'Members joined: 1 2 left: 3' (node ids)",
        "a node id joined the membership",
    ),
    "corosync.member_left": PatternSpec(
        r"\[TOTEM \] A new membership \([0-9a-f]+\.[0-9a-f]+\) was formed\. Members"
        r"(?: joined:(?: \d+)+)? left:(?: \d+)* @{node_id}(?: |$)",
        r"\d+",
        "corosync 3.1 exec/totemsrp.c",
        "a node id left the membership",
    ),
    "corosync.member_failed": PatternSpec(
        r"\[TOTEM \] Failed to receive the leave message\. failed:(?: \d+)* @{node_id}(?: |$)",
        r"\d+",
        "corosync 3.1 exec/totemsrp.c (left without a leave message: crash or cut link)",
        "a node id vanished without saying goodbye",
    ),
    "corosync.quorum_members": PatternSpec(
        r"\[QUORUM\] Members\[@{count}\]:",
        r"\d+",
        "corosync 3.1 exec/vsf_quorum.c log_view_list '%s[%d]:%s%s'",
        "the quorum service's view of the members changed",
    ),
    "corosync.primary_component": PatternSpec(
        r"\[QUORUM\] This node is within the primary component and will provide service\.",
        r"\S+",
        "corosync 3.1 exec/vsf_quorum.c (string in /usr/sbin/corosync)",
        "this node is in the quorate partition",
    ),
    "corosync.non_primary_component": PatternSpec(
        r"\[QUORUM\] This node is within the non-primary component and will NOT provide "
        r"any services\.",
        r"\S+",
        "corosync 3.1 exec/vsf_quorum.c (string in /usr/sbin/corosync)",
        "this node lost quorum",
    ),
    "corosync.sync_completed": PatternSpec(
        r"\[MAIN  \] Completed service synchronization, ready to provide service\.",
        r"\S+",
        "corosync 3.1 exec/main.c (string in /usr/sbin/corosync)",
        "corosync finished synchronising after a membership change",
    ),
    "corosync.not_scheduled": PatternSpec(
        r"\[MAIN  \] Corosync main process was not scheduled \(@\d+\) for @{ms} ms "
        r"\(threshold is @{threshold} ms\)",
        r"[\d.]+",
        "corosync 3.1 exec/main.c timer_function_scheduler_timeout (\"Corosync main process was not "
        "scheduled (@%\" PRIu64 \") for %0.4f ms (threshold is %0.4f ms). Consider token timeout "
        "increase.\"); recorded on a stalled VM guest: \"... for 544270.0625 ms (threshold is 2400.0000 ms)\"",
        "corosync itself did not run for that long: the node stalled (or its machine did)",
        wildcards=(("ms", r"(?P<ms>[\d.]+)"), ("threshold", r"[\d.]+")),
    ),
    "corosync.link_down": PatternSpec(
        r"\[KNET  \] link: host: @{node_id} link: @{link} is down",
        r"\d+",
        "libknet 1.25 (string 'host: %u link: %u is down' in libknet.so.1; corosync adds "
        "the [KNET  ] subsystem tag and knet the 'link:' subsystem)",
        "the knet link to a node id went down",
    ),
    "corosync.no_active_links": PatternSpec(
        r"\[KNET  \] host: host: @{node_id} has no active links",
        r"\d+",
        "libknet 1.25 ('host: %u has no active links')",
        "no link to a node id is left",
    ),
}


# --- who wrote a line ----------------------------------------------------------------------
# The program that logged a line, in the three layouts the harness reads.  An
# excused line in an audit names the daemon it is for: the same text from another
# program is news.
_LOG_STAMP = r"(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?|\d{4}-\d\d-\d\dT\S+)"
LINE_DAEMON = (
    # pacemaker.log (lib/common/logging.c: "%t %H %-20s[%P] (%n) %p: %b"); recorded:
    # "Nov 29 22:28:11.621 server1 pacemaker-controld  [2661] (log_executor_event) \tnotice: ..."
    re.compile(rf"^{_LOG_STAMP} \S+ (?P<daemon>[\w.-]+?)\s*\[\d+\] \("),
    # corosync.log (logsys timestamp, pid, host, program, level, subsystem); recorded:
    # "Nov 30 00:34:30 [509] server1 corosync notice  [MAIN  ] ..."
    re.compile(rf"^{_LOG_STAMP} \[\d+\] \S+ (?P<daemon>[\w.-]+) "),
    # syslog (rsyslog's file formats): "2025-11-26T11:40:10.100425+08:00 server4 pacemaker-controld[815]: ...";
    # resource agents in pacemaker.log, with no host: "Nov 30 00:34:56  IPaddr2(VIP)[1093]:    INFO: ..."
    re.compile(rf"^{_LOG_STAMP} (?:\S+)? (?P<daemon>[\w./()-]+?)(?:\[\d+\])?: "),
)


def daemon_of(line: str) -> str | None:
    """The program that wrote a log line (pacemaker-fenced, corosync, haproxy...); None: not a known layout."""
    for layout in LINE_DAEMON:
        found = layout.match(line)
        if found:
            return found.group("daemon")
    return None


def placeholders(name: str) -> tuple[str, ...]:
    """The parameters a named pattern needs."""
    return tuple(dict.fromkeys(_PLACEHOLDER.findall(_spec(name).template)))


def pattern(name: str, **params: object) -> re.Pattern[str]:
    """The compiled pattern `name`, each @{param} replaced by re.escape(str(value)),
    or by the pattern's wildcard where the value is ANY.  Missing or unknown
    parameters are an error rather than a silent wildcard."""
    needed = placeholders(name)   # also rejects an unknown name
    missing = [p for p in needed if p not in params]
    unknown = [p for p in params if p not in needed]
    if missing or unknown:
        raise HaconformError(
            f"pattern {name!r} takes {list(needed)}; missing {missing}, unknown {unknown}",
            fix="pass ANY for a parameter that may be anything")
    frozen = tuple(sorted((key, None if value is ANY else str(value))
                          for key, value in params.items()))
    return _compile(name, frozen)


@lru_cache(maxsize=256)
def _compile(name: str, params: tuple[tuple[str, str | None], ...]) -> re.Pattern[str]:
    spec = PATTERNS[name]
    values = dict(params)
    wildcards = dict(spec.wildcards)

    def fill(found: re.Match[str]) -> str:
        value = values[found.group(1)]
        if value is None:
            return wildcards.get(found.group(1), spec.any_value)
        return re.escape(value)

    return re.compile(_PLACEHOLDER.sub(fill, spec.template))


def _spec(name: str) -> PatternSpec:
    try:
        return PATTERNS[name]
    except KeyError:
        raise HaconformError(f"no log pattern named {name!r}; known: {sorted(PATTERNS)}") \
            from None
