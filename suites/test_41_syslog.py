"""Logging (日志): HAProxy's request log goes to /var/log/haproxy.log only.

The runbook's chain: `log 127.0.0.1 local2` (global) -> rsyslog's imudp on
514 -> `local2.*  /var/log/haproxy.log`, with `local2.none` on the
/var/log/messages selector.  On Debian the general log is /var/log/syslog;
the documented port puts `local2.none` there too (fixtures/documented/README.md,
"rsyslog on Debian", decision), so both must stay free of HAProxy's lines.

A file that shows nothing proves nothing unless it is known to be written:
after each request a sentinel message is sent the way HAProxy sends its own
(UDP to the global `log` target of the applied config) - on HAProxy's
facility for haproxy.log, on `user` for messages and syslog - and the checks
run only once the sentinels have arrived.
"""

import re
import shlex
import uuid

import pytest

from haconform.conformance import conformance
from haconform.observe import HAPROXY_LOG, capture_tcp, config_section, frontend_director, runtime
from haconform.readers.haproxy import httplog_entries, parse_httplog_line
from haconform.readers.logs import LogWatch
from haconform.timeouts import BOUNDS
from haconform.wait import wait_until

SECTION = "日志"
GENERAL_LOGS = ["/var/log/messages", "/var/log/syslog"]
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
SYSLOG_PORT = 514   # syslog's port, HAProxy's default when `log` names none

# (path, backend, server) per the stage 2 routing: static content -> static/app2.
REQUESTS = {
    "static": ("/probe.gif", "static", "app2"),
    "dynamic": ("/probe.txt", "app", "app1"),
}


def marker() -> str:
    return f"haconform-{uuid.uuid4().hex[:12]}"


def haproxy_log_target(director) -> dict:
    """Where HAProxy sends its log lines: the global `log ADDRESS[:PORT] FACILITY` of the applied config."""
    config = director.read_file(HAPROXY_CFG)
    lines = config_section(config, "global").directives("log")
    assert lines, f"no global `log` line in {HAPROXY_CFG} on {director.name}"
    address, _, port = lines[0][0].partition(":")
    return {"address": address, "port": int(port or SYSLOG_PORT), "facility": lines[0][1]}


def send_sentinel(director, target: dict, facility: str, text: str) -> None:
    """A syslog line sent the way HAProxy sends its own: UDP to its log target."""
    director.succeed(f"logger --udp --server {shlex.quote(target['address'])} --port {target['port']} "
                     f"-p {facility}.info -t haconform-sentinel {shlex.quote(text)}")


def arm(deployment) -> dict[tuple[str, str], LogWatch]:
    return {(d.name, path): LogWatch(d.host, path).arm()
            for d in deployment.directors for path in [HAPROXY_LOG, *GENERAL_LOGS]}


def settle(director, watches) -> None:
    """Wait until sentinels sent now have reached haproxy.log, messages and syslog on the director."""
    target = haproxy_log_target(director)
    tag = marker()
    send_sentinel(director, target, target["facility"], f"{tag} haproxy facility")
    send_sentinel(director, target, "user", f"{tag} user")
    expected = [(HAPROXY_LOG, f"{tag} haproxy facility"), *[(p, f"{tag} user") for p in GENERAL_LOGS]]
    for path, text in expected:
        watches[(director.name, path)].wait_for({"sentinel": re.escape(text)}, timeout=BOUNDS.log_line)


def lines_with(watches, text: str) -> dict[str, list[str]]:
    return {f"{host}:{path}": [line for line in watch.new_lines() if text in line]
            for (host, path), watch in watches.items()}


def request_and_collect(deployment, http, kind: str):
    """Send one marked request, let every log catch up; return (response, target, director, watches)."""
    path, _, _ = REQUESTS[kind]
    director = frontend_director(deployment)
    target = f"{path}?log={marker()}"
    watches = arm(deployment)
    response = http.get(deployment.url(target))
    watches[(director.name, HAPROXY_LOG)].wait_for({"request": re.escape(target)}, timeout=BOUNDS.log_line)
    settle(director, watches)
    return response, target, director, watches


@pytest.mark.parametrize("kind", list(REQUESTS))
@conformance("HAC-LOG-001", stage="stage2", section=SECTION,
             must="Each proxied request MUST yield exactly one httplog line in /var/log/haproxy.log on the "
                  "director that served it, naming its frontend, backend, server, status and path")
def test_one_httplog_line_per_request(kind, deployment, http, stage2, client_evidence, evidence):
    _, backend, server = REQUESTS[kind]
    response, target, director, watches = request_and_collect(deployment, http, kind)
    found = lines_with(watches, target)
    evidence.log(f"{director.name}:{HAPROXY_LOG} lines for {target}", found[f"{director.name}:{HAPROXY_LOG}"])
    evidence.data("lines for the request, per director and file", found)
    mine = found[f"{director.name}:{HAPROXY_LOG}"]
    assert len(mine) == 1, f"expected exactly one line for {target} in {HAPROXY_LOG}, got {mine}"
    entry = parse_httplog_line(mine[0])
    seen = {"frontend": entry.frontend, "backend": entry.backend, "server": entry.server,
            "status": entry.status, "path": entry.path, "client_ip": entry.client_ip}
    evidence.data("the line, parsed", seen)
    assert seen == {"frontend": "main", "backend": backend, "server": server, "status": response.status,
                    "path": target, "client_ip": deployment.client.address}, \
        f"the line does not describe the request ({response.status} from {backend}/{server}): {seen}"
    elsewhere = {where: lines for where, lines in found.items()
                 if lines and where != f"{director.name}:{HAPROXY_LOG}"}
    assert not elsewhere, f"the request was also logged elsewhere: {elsewhere}"


@pytest.mark.parametrize("kind", list(REQUESTS))
@conformance("HAC-LOG-002", stage="stage2", section=SECTION,
             must="HAProxy's request lines MUST NOT appear in /var/log/messages (local2.none), nor in "
                  "Debian's /var/log/syslog, while both files keep receiving other messages")
def test_request_lines_stay_out_of_general_logs(kind, deployment, http, stage2, client_evidence, evidence):
    _, target, director, watches = request_and_collect(deployment, http, kind)
    found = lines_with(watches, target)
    general = {path: found[f"{director.name}:{path}"] for path in GENERAL_LOGS}
    evidence.data(f"lines for {target} in the general logs of {director.name}", general)
    evidence.data("new lines in the general logs (sentinels only, if all is well)",
                  {path: watches[(director.name, path)].new_lines() for path in GENERAL_LOGS})
    assert found[f"{director.name}:{HAPROXY_LOG}"], f"the request never reached {HAPROXY_LOG}"
    leaked = {path: lines for path, lines in general.items() if lines}
    assert not leaked, f"HAProxy's request line leaked into the general logs: {leaked}"


@conformance("HAC-LOG-003", stage="stage2", section=SECTION,
             must="A connection that sends nothing MUST NOT be logged (option dontlognull), while the "
                  "next request on the same frontend is")
def test_empty_connection_not_logged(deployment, http, stage2, client_evidence, evidence):
    director = frontend_director(deployment)
    frontend = lambda: runtime(director).stat().frontend("main")  # noqa: E731
    watches = arm(deployment)
    accepted_before = frontend().number("conn_tot")

    empty = http.open_connection(deployment.frontend_address, 80)
    # HAProxy has accepted it, and then finished with it: any log line is due by then.
    wait_until("HAProxy accepted the empty connection",
               lambda: frontend().number("conn_tot") > accepted_before,
               timeout=BOUNDS.http_request, observe=lambda: frontend().number("conn_tot"))
    empty.close()
    wait_until("HAProxy closed the empty connection", lambda: frontend().scur == 0,
               timeout=BOUNDS.http_request, observe=lambda: frontend().scur)

    target = f"/probe.txt?log={marker()}"
    response = http.get(deployment.url(target))
    watches[(director.name, HAPROXY_LOG)].wait_for({"request": re.escape(target)}, timeout=BOUNDS.log_line)
    settle(director, watches)

    lines = watches[(director.name, HAPROXY_LOG)].new_lines()
    evidence.data("the empty connection", {"client side": empty.local_addr, "peer": empty.remote_addr})
    evidence.log(f"{director.name}:{HAPROXY_LOG} since the empty connection opened", lines)
    requests = httplog_entries(lines)
    assert response.status == 200 and any(e.path == target for e in requests), \
        f"the marker request {target} was not logged: {lines}"
    client_port = empty.local_addr.rsplit(":", 1)[1] if empty.local_addr else None
    for_empty = [line for line in lines
                 if (client_port and f"{deployment.client.address}:{client_port} " in line)
                 or "<BADREQ>" in line or " CR-- " in line]
    assert not for_empty, f"the connection that sent nothing was logged: {for_empty}"


@conformance("HAC-LOG-004", stage="stage2", section="配置文件实例",
             must="A request MUST reach the real server with one X-Forwarded-For header carrying the client "
                  "host's address (option forwardfor)")
def test_real_server_sees_client_address(deployment, http, stage2, client_evidence, evidence):
    # Nothing documented records the header on the real server (Apache's
    # `combined` LogFormat has no %{X-Forwarded-For}i, index.html is static),
    # so the request is read where it arrives: the real server's NIC.
    app1 = deployment.realserver_by_server_name("app1")
    target = f"/probe.txt?xff={marker()}"
    mine = lambda wire: [r for r in wire.http_requests() if r["target"] == target]  # noqa: E731
    with capture_tcp(app1, 80, until=mine) as wire:
        response = http.get(deployment.url(target))
    arrived = mine(wire)
    evidence.data(f"request heads arriving on {app1.name}:80", arrived)
    assert response.status == 200, f"{target} failed: {response}"
    assert len(arrived) == 1, f"expected the request once on {app1.name}, saw {arrived}; tcpdump: {wire.stderr}"
    forwarded = arrived[0]["headers"].get("x-forwarded-for", [])
    assert forwarded == [deployment.client.address], \
        f"X-Forwarded-For on {app1.name} is {forwarded}, expected [{deployment.client.address!r}]"
