"""HAProxy reader: runtime API parsers, stats CSV, httplog lines, socket transport."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime

import pytest

from fakes import FakeHost, FakeResult, read_sample
from haconform.readers import CommandFailed, ParseError
from haconform.readers.haproxy import (
    DEFAULT_STATS_SOCKET,
    HaproxyRuntime,
    httplog_entries,
    is_httplog_line,
    parse_httplog_line,
    parse_servers_state,
    parse_show_info,
    parse_stat_csv,
)

INFO = read_sample("haproxy/show_info.txt")
STAT = read_sample("haproxy/show_stat.csv")
PAGE = read_sample("haproxy/status_page.csv")
SERVERS = read_sample("haproxy/show_servers_state.txt")
LOG_RFC3339 = read_sample("haproxy/haproxy_rfc3339.log").splitlines()
LOG_TRADITIONAL = read_sample("haproxy/haproxy_traditional.log").splitlines()


# --- show info --------------------------------------------------------------

def test_show_info_types_numbers_and_keeps_text():
    info = parse_show_info(INFO)
    assert info["Maxconn"] == 4000
    assert info["Hard_maxconn"] == 4000
    assert isinstance(info["Ulimit-n"], int) and info["Ulimit-n"] > 0
    assert isinstance(info["Maxsock"], int)
    assert isinstance(info["Pid"], int)
    assert isinstance(info["Uptime_sec"], int)
    assert info["CurrConns"] == 0
    assert info["Version"].startswith("2.6.")
    assert re.fullmatch(r"\d+d \d+h\d\dm\d\ds", info["Uptime"])
    assert info["Release_date"] == "2026/10/17"      # digits and slashes stay text
    assert "Unstoppable Jobs" in info                 # keys may hold spaces


def test_show_info_rejects_a_line_without_separator():
    with pytest.raises(ParseError, match=r"line 2 is not 'Key: value'"):
        parse_show_info("Name: HAProxy\nthis is not a field\nPid: 1\nMaxconn: 2\n")


def test_show_info_rejects_other_output():
    with pytest.raises(ParseError, match="not `show info` output"):
        parse_show_info("Name: HAProxy\n")


# --- show stat / stats page ------------------------------------------------------

def test_show_stat_server_states_by_backend():
    table = parse_stat_csv(STAT)
    assert table.proxies() == ["main", "static", "app", "stats"]
    assert table.states("app") == {"app1": "UP", "app3": "DOWN", "app4": "no check"}
    assert table.states("static") == {"app2": "MAINT"}
    assert [row.name for row in table.servers("app")] == ["app1", "app3", "app4"]


def test_show_stat_server_details():
    table = parse_stat_csv(STAT)
    app1, app3, app4 = table.servers("app")
    assert (app1.check_status, app3.check_status, app4.check_status) == ("L4OK", "L4CON", "")
    assert app3.get("last_chk") == "Connection refused"
    assert app4.weight == 3 and app1.weight == 1
    assert app1.addr == "127.0.0.2:80"
    assert app1.kind == "server"
    # app1 and app4 took the requests routed to backend app; app3 none.
    assert app3.stot == 0 and app3.lbtot == 0
    assert app1.stot + app4.stot == table.backend("app").stot
    assert app1.scur == 0


def test_show_stat_frontend_and_backend_rows():
    table = parse_stat_csv(STAT)
    assert table.frontend("main").status == "OPEN"
    assert table.frontend("main").kind == "frontend"
    assert table.backend("static").state == "DOWN"        # its only server is in MAINT
    assert table.backend("app").weight == 4                # 1 (app1) + 3 (app4); app3 down
    assert table.backend("app").number("qcur") == 0
    assert table.frontend("main").number("qcur") is None   # empty for frontends


def test_stats_page_csv_has_the_same_columns_and_states_as_show_stat():
    page = parse_stat_csv(PAGE, source="/status;csv")
    stat = parse_stat_csv(STAT)
    assert page.columns == stat.columns
    for backend in ("app", "static"):
        assert page.states(backend) == stat.states(backend)


def test_stat_unknown_names_are_key_errors_that_list_what_exists():
    table = parse_stat_csv(STAT)
    with pytest.raises(KeyError, match="proxies"):
        table.servers("nosuch")
    with pytest.raises(KeyError, match="app/app1"):
        table.server("app", "app9")
    with pytest.raises(KeyError, match="no column"):
        table.server("app", "app1").get("nosuch")


def test_stat_transitional_status_and_running_check():
    header, *_ = STAT.splitlines()
    columns = header[2:].rstrip(",").split(",")
    values = dict.fromkeys(columns, "")
    values.update(pxname="app", svname="app1", type="2", status="UP 1/3",
                  check_status="* L7OK", weight="1")
    row = ",".join(values[c] for c in columns) + ","
    app1 = parse_stat_csv(f"{header}\n{row}\n").server("app", "app1")
    assert app1.status == "UP 1/3" and app1.state == "UP"
    assert app1.check_status == "L7OK" and app1.check_running


def test_stat_maint_via_tracked_server_is_maint():
    header, *_ = STAT.splitlines()
    columns = header[2:].rstrip(",").split(",")
    values = dict.fromkeys(columns, "")
    values.update(pxname="app", svname="app1", type="2", status="MAINT (via static/app2)")
    row = ",".join(values[c] for c in columns) + ","
    assert parse_stat_csv(f"{header}\n{row}\n").server("app", "app1").state == "MAINT"


def test_stat_csv_quoted_field_with_comma():
    header, *_ = STAT.splitlines()
    columns = header[2:].rstrip(",").split(",")
    values = dict.fromkeys(columns, "")
    values.update(pxname="app", svname="app1", type="2", status="DOWN",
                  last_chk='"refused, again"')
    row = ",".join(values[c] for c in columns) + ","
    assert parse_stat_csv(f"{header}\n{row}\n").server("app", "app1").get("last_chk") \
        == "refused, again"


def test_stat_csv_without_header_is_rejected():
    with pytest.raises(ParseError, match="pxname,svname"):
        parse_stat_csv("main,FRONTEND,,,0\n")
    with pytest.raises(ParseError, match="pxname,svname"):
        parse_stat_csv("")


def test_stat_csv_short_row_is_rejected_with_its_line_number():
    header, first, *_ = STAT.splitlines()
    with pytest.raises(ParseError, match=r"line 3 has 5 fields"):
        parse_stat_csv(f"{header}\n{first}\napp,app1,0,0,0\n")


def test_stat_csv_unknown_row_type_is_rejected():
    header, first, *_ = STAT.splitlines()
    fields = first.split(",")
    type_index = header[2:].split(",").index("type")
    fields[type_index] = "7"
    with pytest.raises(ParseError, match="unknown type '7'"):
        parse_stat_csv(f"{header}\n{','.join(fields)}\n")


def test_stat_non_numeric_value_is_a_parse_error():
    header, first, *_ = STAT.splitlines()
    fields = first.split(",")
    fields[header[2:].split(",").index("scur")] = "many"
    row = parse_stat_csv(f"{header}\n{','.join(fields)}\n").frontend("main")
    with pytest.raises(ParseError, match="'scur'.*not a number"):
        row.scur


# --- show servers state ------------------------------------------------------------

def test_servers_state_by_column_name():
    states = {(s.backend, s.server): s for s in parse_servers_state(SERVERS)}
    assert set(states) == {("static", "app2"), ("app", "app1"), ("app", "app3"),
                           ("app", "app4")}
    app2, app1, app3, app4 = (states[k] for k in [("static", "app2"), ("app", "app1"),
                                                  ("app", "app3"), ("app", "app4")])
    assert app2.in_maintenance and app2.admin_state == 1 and not app2.draining
    assert app1.operational == "RUNNING" and app1.check == "PASSED" and not app1.in_maintenance
    assert app3.operational == "STOPPED" and app3.check == "FAILED"
    assert app4.user_weight == 3 and app4.initial_weight == 3
    assert app1.addr == "127.0.0.2"
    assert app1.fields["srv_port"] == "80"


def test_servers_state_drain_bit():
    text = SERVERS.replace("4 app 1 app1 127.0.0.2 2 0 ", "4 app 1 app1 127.0.0.2 2 8 ")
    app1 = [s for s in parse_servers_state(text) if s.server == "app1"][0]
    assert app1.draining and not app1.in_maintenance


def test_servers_state_unknown_version_is_rejected():
    with pytest.raises(ParseError, match="format version '2'"):
        parse_servers_state("2\n" + SERVERS.split("\n", 1)[1])


def test_servers_state_missing_header_or_short_line_is_rejected():
    version, header, first, *_ = SERVERS.splitlines()
    with pytest.raises(ParseError, match="no '# be_id"):
        parse_servers_state(f"{version}\n{first}\n")
    with pytest.raises(ParseError, match="line 3 has 3 fields"):
        parse_servers_state(f"{version}\n{header}\n4 app 1\n")
    with pytest.raises(ParseError, match="empty reply"):
        parse_servers_state("\n")


def test_servers_state_non_numeric_state_is_rejected():
    version, header, first, *_ = SERVERS.splitlines()
    broken = first.split()
    broken[5] = "UP"
    with pytest.raises(ParseError, match="non-numeric"):
        parse_servers_state(f"{version}\n{header}\n{' '.join(broken)}\n")


# --- httplog --------------------------------------------------------------------------

def test_httplog_entries_skip_server_messages_and_keep_requests():
    entries = httplog_entries(LOG_TRADITIONAL)
    requests = [line for line in LOG_TRADITIONAL if '"' in line and "[26/" in line]
    assert len(entries) == len(requests) == 10
    assert [(e.method, e.path) for e in entries[:4]] == [
        ("GET", "/"), ("GET", "/images/a.gif"), ("POST", "/upload_file.php"), ("HEAD", "/")]


def test_httplog_fields_of_a_routed_request():
    entry = httplog_entries(LOG_TRADITIONAL)[1]
    assert (entry.frontend, entry.backend, entry.server) == ("main", "static", "app2")
    assert entry.status == 200 and entry.client_ip == "127.0.0.1"
    assert entry.method == "GET" and entry.path == "/images/a.gif"
    assert entry.http_version == "HTTP/1.1"
    assert entry.termination_state == "----"
    assert entry.syslog_host == "localhost" and entry.pid == 14152
    assert entry.syslog_time == "Nov 26 11:35:57"
    assert entry.accept_date == datetime(2026, 11, 26, 11, 35, 57, 903000)
    assert entry.timers == {"TR": 0, "Tw": 0, "Tc": 0, "Tr": 3, "Ta": 3}


def test_httplog_request_that_reached_no_server():
    nosrv = [e for e in httplog_entries(LOG_TRADITIONAL) if e.server == "<NOSRV>"]
    assert len(nosrv) == 1
    entry = nosrv[0]
    assert entry.backend == "static" and entry.status == 503
    assert entry.termination_state == "SC--"
    assert entry.timers["Tw"] == -1 and entry.timers["Tc"] == -1


def test_httplog_rfc3339_and_traditional_prefix_give_the_same_requests():
    rfc, traditional = httplog_entries(LOG_RFC3339), httplog_entries(LOG_TRADITIONAL)
    assert rfc[0].syslog_time.startswith("2026-11-26T11:35:")

    def key(e):
        return (e.frontend, e.backend, e.status, e.method, e.path)

    # The two recordings are separate runs: the routes and answers match,
    # except roundrobin's choice of app1/app4, which is compared as a set.
    assert [key(e) for e in rfc] == [key(e) for e in traditional]
    assert {e.server for e in rfc} == {e.server for e in traditional}


def test_httplog_keeps_the_path_encoded_as_logged():
    entry = [e for e in httplog_entries(LOG_TRADITIONAL) if e.path.startswith("/q")][0]
    assert entry.path == "/q?a=%22x%20y%22"


def test_httplog_without_syslog_prefix_captures_and_tls():
    line = ('10.0.1.2:33317 [06/Feb/2009:12:14:14.655] http-in~ static/srv1 '
            '10/0/30/69/109 200 2750 - - ---- 1/1/1/1/0 0/0 {haproxy.1wt.eu} {} '
            '"GET /index.html HTTP/1.1"')
    entry = parse_httplog_line(line)
    assert entry.frontend == "http-in" and entry.tls
    assert entry.syslog_time is None and entry.pid is None
    assert entry.timers["Ta"] == 109 and entry.bytes_read == 2750


def test_httplog_ipv6_client_logasap_and_redispatch():
    line = ('Nov 26 11:35:57 lb haproxy[7]: ::1:43210 [26/Nov/2026:11:35:57.903] main '
            'app/app1 0/0/1/2/+3 200 +184 - - ---- 1/1/0/0/+3 0/0 "GET / HTTP/1.1"')
    entry = parse_httplog_line(line)
    assert entry.client_ip == "::1" and entry.client_port == 43210
    assert entry.timers["Ta"] == 3 and entry.bytes_read == 184 and entry.retries == 3


def test_httplog_bad_request_has_no_method():
    line = ('Nov 26 11:35:57 lb haproxy[7]: 127.0.0.1:1 [26/Nov/2026:11:35:57.903] main '
            'main/<NOSRV> -1/-1/-1/-1/0 400 0 - - CR-- 1/1/0/0/0 0/0 "<BADREQ>"')
    entry = parse_httplog_line(line)
    assert entry.request == "<BADREQ>" and entry.method is None and entry.path is None


def test_httplog_truncated_request_line_is_a_parse_error_not_skipped():
    good = LOG_TRADITIONAL[4]
    assert is_httplog_line(good)
    truncated = good[: good.index(" 200 ") + 5]
    with pytest.raises(ParseError, match="not an HAProxy httplog line"):
        httplog_entries([good, truncated])


def test_httplog_parse_rejects_other_haproxy_messages():
    server_down = [line for line in LOG_TRADITIONAL if "is DOWN" in line][0]
    assert not is_httplog_line(server_down)
    with pytest.raises(ParseError, match="8.2.3"):
        parse_httplog_line(server_down)


def test_httplog_bad_accept_date_is_rejected():
    line = LOG_TRADITIONAL[4].replace("26/Nov/2026:11:35:57.891", "26/Nov/2026:99:35:57.891")
    with pytest.raises(ParseError, match="accept date"):
        parse_httplog_line(line)


# --- the runtime API through a host -------------------------------------------------

def _socat_host(reply: str = INFO) -> FakeHost:
    host = FakeHost()
    host.on("command -v socat", stdout="/usr/bin/socat\n")
    host.on(re.compile(r"socat stdio UNIX-CONNECT:/var/lib/haproxy/stats$"), stdout=reply)
    return host


def test_runtime_sends_show_info_through_socat():
    host = _socat_host()
    assert HaproxyRuntime(host).info()["Maxconn"] == 4000
    assert host.commands[-1] == ("echo 'show info' | timeout 30 socat stdio "
                                 "UNIX-CONNECT:/var/lib/haproxy/stats")
    assert DEFAULT_STATS_SOCKET == "/var/lib/haproxy/stats"


def test_runtime_stat_and_servers_state():
    host = FakeHost()
    host.on("command -v socat", stdout="/usr/bin/socat\n")
    host.on(re.compile(r"^echo 'show stat' \|"), stdout=STAT)
    host.on(re.compile(r"^echo 'show servers state app' \|"), stdout=SERVERS)
    runtime = HaproxyRuntime(host)
    assert runtime.stat().states("app")["app1"] == "UP"
    assert len(runtime.servers_state("app")) == 4


def test_runtime_falls_back_to_python_without_socat():
    host = FakeHost()
    host.on("command -v socat", rc=1)
    host.on(re.compile(r"^timeout 30 python3 -c .* /run/hap.sock 'show info'$"), stdout=INFO)
    runtime = HaproxyRuntime(host, "/run/hap.sock")
    assert runtime.info()["Pid"] == parse_show_info(INFO)["Pid"]
    assert runtime.transport == "python3"


def test_runtime_missing_socket_names_the_socket_and_stderr():
    host = FakeHost()
    host.on("command -v socat", stdout="/usr/bin/socat\n")
    host.on(re.compile("socat stdio"), rc=1, stderr="socat[9] E connect(5, AF=1 \"/var/lib/haproxy/"
                                              "stats\", 23): No such file or directory\n")
    with pytest.raises(CommandFailed, match=r"/var/lib/haproxy/stats.*exited 1.*No such file"):
        HaproxyRuntime(host).info()


def test_runtime_refused_command_is_an_error():
    host = _socat_host(reply="Permission denied\n")
    with pytest.raises(CommandFailed, match="refused `show servers state`"):
        HaproxyRuntime(host).servers_state()


def test_runtime_only_sends_show_commands():
    runtime = HaproxyRuntime(_socat_host())
    for command in ("disable server app/app1", "show info; shutdown sessions",
                    "set server app/app1 state maint", "show info\nshutdown"):
        with pytest.raises(ValueError, match="only simple 'show"):
            runtime.query(command)


def test_runtime_garbage_reply_is_a_parse_error_naming_the_socket():
    host = _socat_host(reply="HTTP/1.0 400 Bad request\n")
    with pytest.raises(ParseError, match=r"stats `show info`"):
        HaproxyRuntime(host).info()


# --- against a real haproxy 2.6, in a private network namespace ---------------------

def _can_run_haproxy() -> str | None:
    if os.geteuid() != 0:
        return "needs root for unshare -n"
    for tool in ("haproxy", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


@pytest.fixture
def real_haproxy(tmp_path):
    """An haproxy with only a stats socket, in its own empty network namespace."""
    reason = _can_run_haproxy()
    if reason:
        pytest.skip(reason)
    testinfra = pytest.importorskip("testinfra")
    from haconform.timeouts import BOUNDS
    from haconform.wait import wait_until

    socket_path = tmp_path / "stats"
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"""global
    stats socket {socket_path} level user
defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
backend app
    server app1 127.0.0.1:9 check inter 200
""")
    process = subprocess.Popen(["unshare", "-n", "haproxy", "-db", "-f", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until("haproxy's stats socket exists", socket_path.exists,
                   timeout=BOUNDS.service_start)
        yield testinfra.get_host("local://"), str(socket_path)
    finally:
        process.terminate()
        process.wait(timeout=BOUNDS.service_stop)


@pytest.mark.parametrize("transport", ["socat", "python3"])
def test_runtime_against_real_haproxy(real_haproxy, transport):
    host, socket_path = real_haproxy
    if transport == "socat" and shutil.which("socat") is None:
        pytest.skip("socat not installed")
    from haconform.timeouts import BOUNDS
    from haconform.wait import wait_until

    runtime = HaproxyRuntime(host, socket_path, transport=transport)
    info = runtime.info()
    assert info["Name"] == "HAProxy" and isinstance(info["Maxconn"], int)
    # Nothing listens in the empty namespace: the check takes app1 down.
    wait_until("app1 DOWN in show stat",
               lambda: runtime.stat().server("app", "app1").state == "DOWN",
               timeout=BOUNDS.service_start,
               observe=lambda: runtime.stat().server("app", "app1").status)
    [app1] = runtime.servers_state("app")
    assert app1.operational == "STOPPED"


def test_runtime_against_real_haproxy_user_level_refuses_nothing_it_needs(real_haproxy):
    # 'level user' is the lowest CLI level; every command the reader sends works there.
    host, socket_path = real_haproxy
    runtime = HaproxyRuntime(host, socket_path, transport="python3")
    assert runtime.stat().proxies() == ["app"]
    assert isinstance(runtime.servers_state(), list)


def test_fake_result_is_what_readers_expect():
    # Guard for the fake itself: run() formats args like testinfra.
    host = FakeHost()
    host.on("echo 'a b' | wc", FakeResult(stdout="1\n"))
    assert host.check_output("echo %s | wc", "a b") == "1"
