"""Logging (日志): HAProxy's request log goes to /var/log/haproxy.log only.

The runbook's chain: `log 127.0.0.1 local2` (global) -> rsyslog's imudp on
514 -> `local2.*  /var/log/haproxy.log`, with `local2.none` on the
/var/log/messages selector.  On Debian the general log is /var/log/syslog;
the documented port puts `local2.none` there too (fixtures/documented/README.md,
"rsyslog on Debian", decision), so both must stay free of HAProxy's lines.

A file that shows nothing proves nothing unless it is known to be written.
haproxy.log is shown to be written by HAProxy itself: each test's own
request carries a unique query string, and a second unique request (the
closing request) is awaited after it; HAProxy sends its lines in order on
one socket, so once the closing line is in haproxy.log, every line of the
earlier request (or of an empty connection before it) is there too.  That
needs no write, so HAC-LOG-001 and HAC-LOG-003 run read-only.  The general
logs receive nothing of HAProxy's when all is well; only a line sent to them
(a sentinel on `user`, sent the way HAProxy sends its own) shows they are
written, so HAC-LOG-002 stays marked writes_to_host: on an existing
deployment (--target ssh) it runs only with --allow-destructive.

Every request asks for a page the stage installs on the real servers (its
data, fixtures/documented): stage 1 serves index.html only, the probe files
come with stage 2.
"""

import contextlib
import re
import shlex
import uuid

import pytest

from haconform.conformance import conformance
from haconform.frontend import frontend_director
from haconform.readers.haproxy import httplog_entries, parse_httplog_line, runtime
from haconform.readers.haproxy_config import backend_servers, config_section, config_sections
from haconform.readers.logs import LogWatch
from haconform.readers.rsyslog import parse_rsyslog
from haconform.readers.wire import capture_tcp
from haconform.timeouts import BOUNDS
from haconform.wait import wait_until

SECTION = "日志"
GENERAL_LOGS = ["/var/log/messages", "/var/log/syslog"]
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
SYSLOG_PORT = 514   # syslog's port, HAProxy's default when `log` names none

WEB_ROOT = "/var/www/html"
# What settle() leaves in the director's logs; tests that settle are marked with it.
SENTINELS_WRITTEN = ("sentinel lines (`logger`) in the director's /var/log/haproxy.log, /var/log/messages and "
                     "/var/log/syslog")

# A path the url_static ACL matches and one it does not (which backend serves each depends on the stage:
# documented_route); a stage that does not install them on the real servers gets its own page instead.
REQUESTS = {"static": "/probe.gif", "dynamic": "/probe.txt"}


def marker() -> str:
    return f"haconform-{uuid.uuid4().hex[:12]}"


def global_log_line(config: str, where: str) -> dict:
    """The global `log ADDRESS[:PORT] FACILITY` of a haproxy.cfg."""
    lines = config_section(config, "global").arguments("log")
    assert lines, f"no global `log` line in {where}"
    address, _, port = lines[0][0].partition(":")
    return {"address": address, "port": int(port or SYSLOG_PORT), "facility": lines[0][1]}


@pytest.fixture
def documented_log(logging_settings, deployment, evidence) -> dict:
    """Where the runbook sends HAProxy's lines: the stage's `log` target, and the file rsyslog routes its facility to.

    The expectation is the stage's (--config); the deployment's own `log` line is shown beside it."""
    stage = logging_settings
    target = global_log_line(stage.text("role-director", HAPROXY_CFG), f"{stage.name}: {HAPROXY_CFG}")
    rsyslog = "\n".join(f.source.read_text() for f in stage.files
                        if f.selector == "role-director" and f.dest.startswith("/etc/rsyslog"))
    files = parse_rsyslog(rsyslog).routes.get(target["facility"], [])
    assert len(files) == 1, f"{stage.name} routes {target['facility']} to {files}, not to one file"
    director = frontend_director(deployment)
    evidence.data("HAProxy's log target", {
        "documented": {**target, "file": files[0]},
        f"the deployment's ({director.name})": global_log_line(director.read_file(HAPROXY_CFG), director.name)})
    return {**target, "file": files[0]}


def send_sentinel(director, target: dict, facility: str, text: str) -> None:
    """A syslog line sent the way HAProxy sends its own: UDP to its log target."""
    director.succeed(f"logger --udp --server {shlex.quote(target['address'])} --port {target['port']} "
                     f"-p {facility}.info -t haconform-sentinel {shlex.quote(text)}")


def served_pages(deployment, stage) -> list[str]:
    """Web paths of the files the stage installs on every real server, shortest first."""
    plan = stage.plan(deployment.topology)
    per_server = [{f.dest.removeprefix(WEB_ROOT) for f in plan.get(server.name, [])
                   if f.dest.startswith(WEB_ROOT + "/")} for server in deployment.realservers]
    common = set.intersection(*per_server) if per_server else set()
    assert common, f"{stage.name} installs no page on every real server ({stage.directory}): nothing to request"
    return sorted(common, key=lambda path: (len(path), path))


def request_path(deployment, stage, kind: str) -> str:
    wanted = REQUESTS[kind]
    return wanted if wanted in served_pages(deployment, stage) else served_pages(deployment, stage)[0]


def arm(deployment, log) -> dict[tuple[str, str], LogWatch]:
    return {(d.name, path): LogWatch(d.host, path).arm()
            for d in deployment.directors for path in [log["file"], *GENERAL_LOGS]}


def settle(director, watches, log) -> None:
    """Wait until sentinels sent now have reached haproxy.log, messages and syslog on the director."""
    tag = marker()
    send_sentinel(director, log, log["facility"], f"{tag} haproxy facility")
    send_sentinel(director, log, "user", f"{tag} user")
    expected = [(log["file"], f"{tag} haproxy facility"), *[(p, f"{tag} user") for p in GENERAL_LOGS]]
    for path, text in expected:
        watches[(director.name, path)].wait_for({"sentinel": re.escape(text)}, timeout=BOUNDS.log_line)


def close_haproxy_log(deployment, http, stage, director, watches, log) -> str:
    """A second unique request, awaited in haproxy.log: the lines HAProxy sent before it are all there now."""
    closing = f"{served_pages(deployment, stage)[0]}?log-closing={marker()}"
    http.get(deployment.url(closing))
    watches[(director.name, log["file"])].wait_for({"closing request": re.escape(closing)}, timeout=BOUNDS.log_line)
    return closing


def lines_with(watches, text: str) -> dict[str, list[str]]:
    return {f"{host}:{path}": [line for line in watch.new_lines() if text in line]
            for (host, path), watch in watches.items()}


def documented_route(deployment, stage, response) -> tuple[str, str]:
    """(backend, server) the log line must name: the real server that answered, in the documented backend
    holding it (stage 2: /probe.gif -> static/app2; stage 3 keeps GETs on app/app1)."""
    answered = response.headers.get("X-Real-Server")
    server = deployment.topology.host(answered).server_name if answered else None
    config = stage.text("role-director", HAPROXY_CFG)
    backends = [s.name for s in config_sections(config) if s.kind == "backend"
                and server in backend_servers(config, s.name)]
    assert server and len(backends) == 1, \
        f"{response} came from {answered!r} (server {server!r}), in documented backends {backends}"
    return backends[0], server


def request_and_collect(deployment, http, stage, kind: str, log):
    """Send one marked request and let haproxy.log catch up (the closing request); return (response, target,
    director, watches)."""
    director = frontend_director(deployment)
    target = f"{request_path(deployment, stage, kind)}?log={marker()}"
    watches = arm(deployment, log)
    response = http.get(deployment.url(target))
    watches[(director.name, log["file"])].wait_for({"request": re.escape(target)}, timeout=BOUNDS.log_line)
    close_haproxy_log(deployment, http, stage, director, watches, log)
    return response, target, director, watches


@pytest.mark.parametrize("kind", list(REQUESTS))
@conformance("HAC-LOG-001", stage="stage2", section=SECTION,
             settings=("haproxy.cfg[global].log", "haproxy.cfg[defaults].log",
                       "haproxy.cfg[defaults].option httplog", "rsyslog[imudp port]", "rsyslog[local2 -> *]"),
             must="Each proxied request MUST yield exactly one httplog line in /var/log/haproxy.log on the "
                  "director that served it, naming its frontend, backend, server, status and path")
def test_one_httplog_line_per_request(kind, deployment, http, stages, logging_settings, documented_log, client_evidence,
                                     evidence):
    response, target, director, watches = request_and_collect(deployment, http, logging_settings, kind,
                                                              documented_log)
    backend, server = documented_route(deployment, logging_settings, response)
    backend = stages.names.get(backend, backend)   # the deployment's own name for the documented backend
    found = lines_with(watches, target)
    evidence.log(f"{director.name}:{documented_log['file']} lines for {target}", found[f"{director.name}:{documented_log['file']}"])
    evidence.data("lines for the request, per director and file", found)
    mine = found[f"{director.name}:{documented_log['file']}"]
    assert len(mine) == 1, f"expected exactly one line for {target} in {documented_log['file']}, got {mine}"
    entry = parse_httplog_line(mine[0])
    seen = {"frontend": entry.frontend, "backend": entry.backend, "server": entry.server,
            "status": entry.status, "path": entry.path, "client_ip": entry.client_ip}
    evidence.data("the line, parsed", seen)
    assert seen == {"frontend": "main", "backend": backend, "server": server, "status": response.status,
                    "path": target, "client_ip": deployment.client.address}, \
        f"the line does not describe the request ({response.status} from {backend}/{server}): {seen}"
    # Nothing here shows the general logs or the other director's haproxy.log to be written (HAC-LOG-002
    # does, with sentinels); a line that did reach one is a second line all the same.
    elsewhere = {where: lines for where, lines in found.items()
                 if lines and where != f"{director.name}:{documented_log['file']}"}
    assert not elsewhere, f"the request was also logged elsewhere: {elsewhere}"


@pytest.mark.parametrize("kind", list(REQUESTS))
@pytest.mark.writes_to_host(SENTINELS_WRITTEN)
@conformance("HAC-LOG-002", stage="stage2", section=SECTION,
             settings=("haproxy.cfg[global].log", "rsyslog[local2 -> *]", "rsyslog[local2.none on *]"),
             must="HAProxy's request lines MUST NOT appear in /var/log/messages (local2.none), nor in "
                  "Debian's /var/log/syslog, while both files keep receiving other messages")
def test_request_lines_stay_out_of_general_logs(kind, deployment, http, logging_settings, documented_log, client_evidence,
                                                evidence):
    _, target, director, watches = request_and_collect(deployment, http, logging_settings, kind, documented_log)
    settle(director, watches, documented_log)   # the general logs are shown to be written only by a line sent to them
    found = lines_with(watches, target)
    general = {path: found[f"{director.name}:{path}"] for path in GENERAL_LOGS}
    evidence.data(f"lines for {target} in the general logs of {director.name}", general)
    evidence.data("new lines in the general logs (sentinels only, if all is well)",
                  {path: watches[(director.name, path)].new_lines() for path in GENERAL_LOGS})
    assert found[f"{director.name}:{documented_log['file']}"], f"the request never reached {documented_log['file']}"
    leaked = {path: lines for path, lines in general.items() if lines}
    assert not leaked, f"HAProxy's request line leaked into the general logs: {leaked}"


@conformance("HAC-LOG-003", stage="stage2", section=SECTION,
             settings=("haproxy.cfg[global].log", "haproxy.cfg[defaults].option dontlognull", "rsyslog[local2 -> *]"),
             must="A connection that sends nothing MUST NOT be logged (option dontlognull), while the "
                  "next request on the same frontend is")
def test_empty_connection_not_logged(deployment, http, logging_settings, documented_log, client_evidence, evidence):
    director = frontend_director(deployment)
    frontend = lambda: runtime(director).stat().frontend("main")  # noqa: E731
    watches = arm(deployment, documented_log)
    accepted_before = frontend().number("conn_tot")

    empty = http.open_connection(deployment.frontend_address, 80)
    # HAProxy has accepted it, and then finished with it: any log line is due by then.
    wait_until("HAProxy accepted the empty connection",
               lambda: frontend().number("conn_tot") > accepted_before,
               timeout=BOUNDS.http_request, observe=lambda: frontend().number("conn_tot"))
    empty.close()
    wait_until("HAProxy closed the empty connection", lambda: frontend().scur == 0,
               timeout=BOUNDS.http_request, observe=lambda: frontend().scur)

    # The next request is the closing one: HAProxy would have sent the empty connection's line before its own.
    target = f"{served_pages(deployment, logging_settings)[0]}?log={marker()}"
    response = http.get(deployment.url(target))
    watches[(director.name, documented_log["file"])].wait_for({"request": re.escape(target)}, timeout=BOUNDS.log_line)

    lines = watches[(director.name, documented_log["file"])].new_lines()
    evidence.data("the empty connection", {"client side": empty.local_addr, "peer": empty.remote_addr})
    evidence.log(f"{director.name}:{documented_log['file']} since the empty connection opened", lines)
    requests = httplog_entries(lines)
    assert response.status == 200 and any(e.path == target for e in requests), \
        f"the marker request {target} was not logged: {lines}"
    client_port = empty.local_addr.rsplit(":", 1)[1] if empty.local_addr else None
    for_empty = [line for line in lines
                 if (client_port and f"{deployment.client.address}:{client_port} " in line)
                 or "<BADREQ>" in line or " CR-- " in line]
    assert not for_empty, f"the connection that sent nothing was logged: {for_empty}"


@conformance("HAC-LOG-004", stage="stage2", section="配置文件实例",
             settings=("haproxy.cfg[defaults].option forwardfor",),
             must="A request MUST reach the real server with one X-Forwarded-For header carrying the client "
                  "host's address (option forwardfor)")
def test_real_server_sees_client_address(deployment, http, logging_settings, client_evidence, evidence):
    # Nothing documented records the header on the real server (Apache's
    # `combined` LogFormat has no %{X-Forwarded-For}i, index.html is static),
    # so the request is read where it arrives: the real servers' NICs, all of
    # them (stage 1's round robin may send it to either).
    target = f"{served_pages(deployment, logging_settings)[0]}?xff={marker()}"
    mine = lambda wire: [r for r in wire.http_requests() if r["target"] == target]  # noqa: E731
    answered: dict[str, str | None] = {}
    # Only the capture of the server that answered waits for the request's bytes; the others stop at once.
    until = lambda name: lambda wire: answered.get("by") != name or bool(mine(wire))  # noqa: E731
    with contextlib.ExitStack() as captures:
        wires = {server.name: captures.enter_context(capture_tcp(server, 80, until=until(server.name)))
                 for server in deployment.realservers}
        response = http.get(deployment.url(target))
        answered["by"] = response.headers.get("X-Real-Server")
    arrived = {name: mine(wire) for name, wire in wires.items()}
    evidence.data("request heads arriving on the real servers' port 80", arrived)
    assert response.status == 200, f"{target} failed: {response}"
    heads = [head for heads in arrived.values() for head in heads]
    assert len(heads) == 1, (f"expected the request once on the real servers, saw {arrived}; tcpdump: "
                             f"{ {name: wire.stderr for name, wire in wires.items()} }")
    forwarded = heads[0]["headers"].get("x-forwarded-for", [])
    assert forwarded == [deployment.client.address], \
        f"X-Forwarded-For on {answered['by']} is {forwarded}, expected [{deployment.client.address!r}]"
