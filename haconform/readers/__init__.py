"""Read-only adapters that observe a host and return values; they never assert.

Every reader takes a ``host`` with the pytest-testinfra Host API
(``host.run(cmd, *args)``, ``host.check_output``, ``host.file(path)``) and runs
its commands through it, so the same reader works on a lab host, a VM over SSH
or the local machine.  Parsers are pure functions of text and are exported too,
so recorded output can be parsed without a host.

Suites assert on what the readers return; readers raise only when they cannot
tell what the state is (command failed, output malformed), with an error that
says which command or input, what was wrong and what was seen.
"""

from __future__ import annotations

import shlex
from typing import Any

from ..errors import CommandFailed, HaconformError

# How much of an offending input an error message quotes.
EXCERPT_CHARS = 300


class ParseError(HaconformError):
    """Output of a tool did not have the documented format."""


def excerpt(text: str | bytes | None, limit: int = EXCERPT_CHARS) -> str:
    """A short, single-quoted sample of text for an error message."""
    if text is None:
        return "<none>"
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.strip()
    if not text:
        return "<empty>"
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text)} chars)"
    return repr(text)


def host_label(host: Any) -> str:
    """A name for the host in error messages (testinfra hosts know their backend's)."""
    backend = getattr(host, "backend", None)
    for candidate in (getattr(host, "name", None), getattr(backend, "hostname", None)):
        if isinstance(candidate, str) and candidate:
            return candidate
    return "host"


def stdout_bytes(result: Any) -> bytes:
    """The exact bytes a command printed (testinfra results carry them)."""
    raw = getattr(result, "stdout_bytes", None)
    if isinstance(raw, bytes):
        return raw
    return (result.stdout or "").encode("utf-8", "surrogateescape")


def run_command(host: Any, command: str, *args: str, ok_codes: tuple[int, ...] = (0,)):
    """Run command (testinfra quoting: each %s gets one shell-quoted arg).

    Returns the result when its exit code is in ok_codes, raises CommandFailed
    with the command, exit code and stderr otherwise.
    """
    result = host.run(command, *[str(arg) for arg in args])
    if result.rc not in ok_codes:
        shown = command % tuple(shlex.quote(str(arg)) for arg in args) if args else command
        hint = None
        if result.rc == 127:
            hint = "the command is not installed on that host"
        elif result.rc == 124:
            hint = "the command hit its time limit; is the daemon it talks to hung?"
        raise CommandFailed(
            f"`{shown}` exited {result.rc}; stderr: {excerpt(result.stderr)}; "
            f"stdout: {excerpt(result.stdout)}",
            where=host_label(host),
            fix=hint,
        )
    return result


# Public names of the submodules, importable from haconform.readers directly.
from .cluster import (  # noqa: E402  (the errors above must exist first)
    ClusterOptions,
    ClusterState,
    ClusterUnavailable,
    Failure,
    FenceEvent,
    Group,
    Clone,
    Node,
    OperationRecord,
    PcsDialect,
    Resource,
    ResourceHistory,
    CrmVerifyResult,
    parse_crm_mon,
    parse_crm_verify,
    parse_fence_history,
    parse_pacemaker_time,
    parse_pcs_version,
    pcs_dialect,
    read_cluster_state,
    read_crm_verify,
    read_fence_history,
    read_pcs_dialect,
    read_pcs_version,
)
from .haproxy import (  # noqa: E402
    DEFAULT_STATS_SOCKET,
    HaproxyRuntime,
    HttpLogEntry,
    ServerState,
    StatRow,
    StatTable,
    httplog_entries,
    is_httplog_line,
    parse_httplog_line,
    parse_servers_state,
    parse_show_info,
    parse_stat_csv,
)
from .logs import LogPosition, LogWatch  # noqa: E402

__all__ = [
    "ParseError", "CommandFailed", "ClusterUnavailable",
    "ClusterOptions", "ClusterState", "Failure", "FenceEvent", "Group", "Clone", "Node",
    "OperationRecord", "PcsDialect", "Resource", "ResourceHistory", "CrmVerifyResult",
    "parse_crm_mon", "parse_crm_verify", "parse_fence_history", "parse_pacemaker_time",
    "parse_pcs_version",
    "pcs_dialect", "read_cluster_state", "read_crm_verify", "read_fence_history",
    "read_pcs_dialect", "read_pcs_version",
    "DEFAULT_STATS_SOCKET", "HaproxyRuntime", "HttpLogEntry", "ServerState", "StatRow",
    "StatTable", "httplog_entries", "is_httplog_line", "parse_httplog_line", "parse_servers_state",
    "parse_show_info", "parse_stat_csv",
    "LogPosition", "LogWatch",
]
