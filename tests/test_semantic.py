"""Configuration files compared by meaning: the runbook's files against hand-made equivalents."""

from __future__ import annotations

from pathlib import Path

import pytest

from haconform.readers.haproxy_config import config_section
from haconform.stages.semantic import Difference, compare_haproxy, compare_limits, compare_rsyslog
from tests.test_readers_rsyslog import RAINER, RSYSLOG

ROOT = Path(__file__).resolve().parent.parent
DIRECTOR = "fixtures/documented/{stage}/role-director/etc"


def read(stage: str, rel: str) -> str:
    return (ROOT / DIRECTOR.format(stage=stage) / rel).read_text()


STAGE3 = read("stage3", "haproxy/haproxy.cfg")
STAGE2 = read("stage2", "haproxy/haproxy.cfg")
STAGE1 = read("stage1", "haproxy/haproxy.cfg")
LIMITS = read("stage2", "security/limits.conf")


def haproxy(expected: str, found: str, names=None) -> list[Difference]:
    return compare_haproxy(expected, found, expected_source="runbook.cfg",
                           found_source="deployed.cfg", names=names)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line and not line.lstrip().startswith("#"))


# The stage-3 config as someone might type it from the runbook: no comments, own
# spacing, sections and directives in another order, equivalent units.
HAND_STAGE3 = """\
# typed from the runbook
backend app
\tserver app1 172.25.5.2:80 check
\tbalance roundrobin

frontend main
  bind *:80
  default_backend app
  acl write method POST
  acl read method HEAD
  acl url_static path_end -i .jpg .gif .png .css .js
  acl write method PUT
  acl url_static path_beg -i /static /images /javascript /stylesheets
  acl read method get
  use_backend static if write

defaults
  maxconn 65535
  timeout check 10000
  timeout server 60s
  timeout client 60s
  timeout http-keep-alive 10s
  timeout connect 10s
  timeout queue 60000ms
  timeout http-request 10s
  retries 3
  option redispatch
  option forwardfor except 127.0.0.0/8
  option http-server-close
  option dontlognull
  option httplog
  log global
  mode http

global
  stats socket /var/lib/haproxy/stats   # admin socket
  daemon
  group haproxy
  user haproxy
  maxconn 4000
  pidfile /var/run/haproxy.pid
  chroot /var/lib/haproxy
  log 127.0.0.1 local2

listen stats *:8080
  stats auth admin:password
  stats uri /status

backend static
  server app2 172.25.5.3:80 check
  balance roundrobin
"""


@pytest.mark.parametrize("text", [STAGE1, STAGE2, STAGE3], ids=["stage1", "stage2", "stage3"])
def test_identical_config_has_no_difference(text):
    assert haproxy(text, text) == []


def test_hand_written_equivalent_has_no_difference():
    assert haproxy(STAGE3, HAND_STAGE3) == []


def test_listen_address_on_section_line_equals_bind():
    one = "listen stats *:8080\n    stats uri /status\n"
    two = "listen stats\n    bind *:8080\n    stats uri /status\n"
    assert haproxy(one, two) == [] and haproxy(two, one) == []
    assert config_section(one, "listen", "stats").header_address == "*:8080"


def test_server_options_compare_order_insensitively_with_values_kept():
    exp = "backend app\n  server app1 10.0.0.1:80 check weight 3 inter 2s rise 2 fall 3\n"
    same = "backend app\n  server app1 10.0.0.1:80 fall 3 rise 2 inter 2000 check weight 3\n"
    swapped = "backend app\n  server app1 10.0.0.1:80 check weight 2 inter 3s rise 2 fall 3\n"
    assert haproxy(exp, same) == []
    [diff] = haproxy(exp, swapped)
    assert diff.what == "backend app: server app1"
    assert diff.found == "10.0.0.1:80 check weight 2 inter 3s rise 2 fall 3"


def test_one_changed_value_is_one_difference_with_both_values():
    diffs = haproxy(STAGE2, STAGE2.replace("maxconn                 65535", "maxconn                 3000"))
    assert diffs == [Difference("defaults: maxconn", "65535", "3000",
                                f"deployed.cfg:{line_of(STAGE2, 'maxconn                 65535')}")]
    assert diffs[0].row() == {"what": "defaults: maxconn", "expected": "65535", "found": "3000",
                              "where": diffs[0].where, "key": "haproxy.cfg[defaults].maxconn"}


def test_changed_timeout_reports_original_units():
    [diff] = haproxy(STAGE3, STAGE3.replace("timeout client          1m", "timeout client 30s"))
    assert (diff.what, diff.expected, diff.found) == ("defaults: timeout client", "1m", "30s")


def test_use_backend_order_is_meaning():
    exp = STAGE3.replace("use_backend static \t\tif write",
                         "use_backend static if write\n    use_backend app if read")
    found = STAGE3.replace("use_backend static \t\tif write",
                           "use_backend app if read\n    use_backend static if write")
    assert haproxy(exp, exp) == []
    [diff] = haproxy(exp, found)
    assert diff.what == "frontend main: use_backend rule 1"
    assert (diff.expected, diff.found) == ("use_backend static if write", "use_backend app if read")
    assert diff.where == f"deployed.cfg:{line_of(found, 'use_backend app if read')}"


def test_renamed_backend_matches_through_names():
    found = (STAGE3.replace("backend app", "backend dynamic")
             .replace("default_backend             app", "default_backend dynamic")
             .replace("server  app1", "server web1"))
    assert haproxy(STAGE3, found, names={"dynamic": "app", "web1": "app1"}) == []
    whats = {d.what for d in haproxy(STAGE3, found)}
    assert {"backend app", "backend dynamic: extra section", "frontend main: default_backend"} <= whats


def test_missing_stats_auth_is_reported_at_the_runbook_line():
    found = STAGE3.replace("    stats auth admin:password\n", "")
    [diff] = haproxy(STAGE3, found)
    assert (diff.what, diff.expected, diff.found) == (
        "listen stats: stats auth", "stats auth admin:password", "missing")
    assert diff.where == f"runbook.cfg:{line_of(STAGE3, 'stats auth')}"


def test_extra_directive_and_missing_section():
    found = STAGE2.replace("backend static\n", "backend other\n").replace(
        "    stats uri /status\n", "    stats uri /status\n    stats refresh 10s\n")
    diffs = haproxy(STAGE2, found)
    assert Difference("listen stats: extra directive", "", "stats refresh 10s",
                      f"deployed.cfg:{line_of(found, 'stats refresh')}") in diffs
    assert any(d.what == "backend static" and d.found == "missing" for d in diffs)


def test_acl_lines_are_one_or_set():
    exp = "frontend f\n  acl write method PUT\n  acl write method POST\n"
    assert haproxy(exp, "frontend f\n  acl write method POST PUT\n") == []
    [diff] = haproxy(exp, "frontend f\n  acl write method PUT\n")
    assert diff.what == "frontend f: acl write"


def test_stage_configs_differ_where_the_runbook_changes():
    whats = {d.what for d in haproxy(STAGE1, STAGE2)}
    assert {"defaults: maxconn", "listen stats: extra section", "backend static: extra section",
            "frontend main: acl url_static", "frontend main: use_backend rule 1"} <= whats


# --------------------------------------------------------------------- rsyslog

def rsyslog(found: str) -> list[Difference]:
    return compare_rsyslog(RSYSLOG, found, expected_source="runbook.conf", found_source="deployed.conf")


def test_rsyslog_rainerscript_form_equals_legacy_form():
    assert RAINER != RSYSLOG
    assert rsyslog(RSYSLOG) == [] and rsyslog(RAINER) == []


def test_rsyslog_missing_local2_none_is_reported():
    found = RSYSLOG.replace("cron.none;local2.none", "cron.none")
    [diff] = rsyslog(found)
    assert diff.what == "rsyslog: local2.none on /var/log/messages"
    assert diff.where == f"deployed.conf:{line_of(found, '/var/log/messages')}"


def test_rsyslog_local2_routed_elsewhere_is_reported():
    found = RSYSLOG.replace("\t\t\t\t/var/log/haproxy.log", " /var/log/lb.log")
    [diff] = rsyslog(found)
    assert (diff.what, diff.expected, diff.found) == (
        "rsyslog: local2 → /var/log/haproxy.log", "/var/log/haproxy.log", "/var/log/lb.log")


def test_rsyslog_closed_port_and_extra_routes():
    extra = RSYSLOG + "local3.* /var/log/other.log\n"
    assert rsyslog(extra) == []
    [diff] = rsyslog(RSYSLOG.replace("$ModLoad imudp\n", ""))
    assert (diff.what, diff.expected, diff.found) == ("rsyslog: imudp port 514", "514", "missing")


# ---------------------------------------------------------------------- limits

def limits(found: str) -> list[Difference]:
    return compare_limits(LIMITS, found, expected_source="runbook.limits", found_source="deployed.limits")


def test_limits_dash_equals_soft_and_hard():
    assert limits(LIMITS) == []
    assert limits("haproxy soft nofile 65535\nhaproxy\thard\tnofile\t65535\n* soft core 0\n") == []


def test_limits_changed_value_is_reported():
    found = "# tuned\nhaproxy - nofile 4096\n"
    diffs = limits(found)
    assert {(d.what, d.expected, d.found, d.where) for d in diffs} == {
        ("limits: haproxy soft nofile", "65535", "4096", "deployed.limits:2"),
        ("limits: haproxy hard nofile", "65535", "4096", "deployed.limits:2")}
    assert [d.found for d in limits("haproxy soft nofile 65535\n")] == ["missing"]


def test_limits_later_line_wins():
    assert limits("haproxy - nofile 4096\nhaproxy - nofile 65535\n") == []
    [diff] = limits("haproxy - nofile 65535\nhaproxy hard nofile 1024\n")
    assert (diff.what, diff.found, diff.where) == ("limits: haproxy hard nofile", "1024", "deployed.limits:2")
