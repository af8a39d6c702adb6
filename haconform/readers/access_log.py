"""Apache's access log on the real servers."""

from __future__ import annotations

import re

from .logs import LogWatch


APACHE_ACCESS_LOG = "/var/log/apache2/access.log"

# Debian's `combined` LogFormat: %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"
_ACCESS_LINE = re.compile(
    r'^(?P<remote>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] '
    r'"(?P<method>\S+) (?P<target>\S+) (?P<protocol>[^"]+)" (?P<status>\d{3}) (?P<bytes>\S+)')


def parse_access_line(line: str) -> dict | None:
    """One line of Apache's access log (common/combined format); None if it is not one."""
    match = _ACCESS_LINE.match(line)
    if not match:
        return None
    entry = match.groupdict()
    entry["status"] = int(entry["status"])
    return entry


def access_log_watches(machines) -> dict[str, LogWatch]:
    """An armed watch on the access log of each machine, by host name."""
    return {machine.name: LogWatch(machine.host, APACHE_ACCESS_LOG).arm() for machine in machines}


def access_log_requests(watch: LogWatch, target: str) -> list[dict]:
    """New access-log entries (since the watch was armed) for exactly this request target."""
    entries = (parse_access_line(line) for line in watch.new_lines())
    return [entry for entry in entries if entry and entry["target"] == target]
