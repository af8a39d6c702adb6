"""haproxy.cfg reader (haconform/readers/haproxy_config.py): sections, maxconn, servers, stats, checks,
and the alerts of `haproxy -c`."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes import read_sample
from haconform.readers.haproxy_config import (
    DEFAULT_FALL,
    DEFAULT_INTER_S,
    DEFAULT_RISE,
    Directive,
    backend_servers,
    check_alerts,
    check_timing,
    config_maxconn,
    config_section,
    config_sections,
    stats_credentials,
    time_ms,
)
from haconform import redaction
from haconform.redaction import MASK, redact

DOCUMENTED = Path(__file__).resolve().parent.parent / "fixtures" / "documented"
STAGE1, STAGE2, STAGE3 = ((DOCUMENTED / stage / "role-director/etc/haproxy/haproxy.cfg").read_text()
                          for stage in ("stage1", "stage2", "stage3"))

HANDMADE = read_sample("handmade/stage2/role-director/etc/haproxy/haproxy.cfg")
# The hand-made file's password is the runbook's `password`: a word too common to
# register as a secret for the rest of the session, so the stats test uses its own.
assert "stats auth admin:password" in HANDMADE
HANDMADE_OWN_PASSWORD = HANDMADE.replace("admin:password", "admin:hc-unit-7f3a")

ODD = """\
# a comment before any section
global
    maxconn 100   # trailing comment
    maxconn 200
listen stats *:8080
    stats auth admin:s3cret-odd
    stats uri /status
backend app
    server app1 10.0.0.2:80 check inter 1s fall 2 rise 5 weight 3
    server app2 10.0.0.3:80 inter 500
    server app3 10.0.0.4:80 check
backend app
    server app4 10.0.0.5:80 check inter 3s
"""


def test_header_address_is_a_bind_directive_but_not_a_line():
    sections = config_sections(ODD)
    assert [(s.kind, s.name, s.line) for s in sections] == [
        ("global", None, 2), ("listen", "stats", 5), ("backend", "app", 8), ("backend", "app", 12)]
    stats = sections[1]
    # What HAProxy acts on: the 1.x address on the header line is the `bind` it means now (the comparison
    # by meaning reads it so); the section's own lines are those after the header, where no bind is.
    assert stats.directives[0] == Directive(("bind", "*:8080"), 5)
    assert stats.header_address == "*:8080"
    assert stats.arguments("bind") == []
    assert stats.lines == (("stats", "auth", "admin:s3cret-odd"), ("stats", "uri", "/status"))
    assert sections[0].header_address is None
    assert sections[0].lines == (("maxconn", "100"), ("maxconn", "200"))   # comments dropped


def test_header_words_that_are_no_address():
    [defaults, backend] = config_sections("defaults web from base\n    mode http\nbackend app extra\n")
    assert defaults.name == "web" and defaults.directives[0] == Directive(("from", "base"), 1)
    assert defaults.header_address is None and defaults.lines == (("mode", "http"),)
    assert backend.directives == (Directive(("extra",), 3),) and backend.header_address is None


def test_lines_before_any_section_carry_no_meaning():
    assert config_sections("maxconn 10\n# only a comment\n") == []
    [only] = config_sections("    daemon\nglobal\n    daemon\n")
    assert only.directives == (Directive(("daemon",), 3),)


def test_stage_configs_sections_and_arguments():
    assert [(s.kind, s.name) for s in config_sections(STAGE3)] == [
        ("global", None), ("defaults", None), ("listen", "stats"), ("frontend", "main"),
        ("backend", "static"), ("backend", "app")]
    defaults = config_section(STAGE2, "defaults")
    assert defaults.arguments("maxconn")[-1] == ("65535",)
    assert defaults.arguments("timeout", "client")[-1] == ("1m",)
    assert config_section(STAGE2, "backend", "app").arguments("balance") == [("roundrobin",)]
    assert not [s for s in config_sections(STAGE1) if s.kind == "listen"]


def test_handmade_config_sections_and_directives():
    sections = config_sections(HANDMADE)
    assert [(s.kind, s.name) for s in sections] == [
        ("global", None), ("defaults", None), ("backend", "static"), ("backend", "dynamic"),
        ("frontend", "main"), ("listen", "stats")]
    main = config_section(HANDMADE, "frontend", "main")
    assert main.arguments("bind") == [("*:80",)]
    assert main.arguments("default_backend") == [("dynamic",)]
    assert config_section(HANDMADE, "backend").name == "static"       # the first of its kind


def test_missing_section_is_a_lookup_error():
    with pytest.raises(LookupError, match=r"no `backend nosuch` section in haproxy.cfg"):
        config_section(HANDMADE, "backend", "nosuch")
    with pytest.raises(LookupError, match=r"no `peers` section"):
        config_section(HANDMADE, "peers")


def test_maxconn_last_value_wins_and_none_when_absent():
    assert config_maxconn(HANDMADE, "global") == 4000
    assert config_maxconn(HANDMADE, "defaults") == 65535
    assert config_maxconn(ODD, "global") == 200
    assert config_maxconn("defaults\n    mode http\n", "defaults") is None


def test_backend_servers_with_weight_and_check():
    assert backend_servers(HANDMADE, "dynamic") == {
        "app1": {"address": "172.25.5.2:80", "weight": 1, "check": True}}
    assert backend_servers(ODD, "app") == {
        "app1": {"address": "10.0.0.2:80", "weight": 3, "check": True},
        "app2": {"address": "10.0.0.3:80", "weight": 1, "check": False},
        "app3": {"address": "10.0.0.4:80", "weight": 1, "check": True}}


@pytest.fixture
def own_secrets(monkeypatch):
    """Secrets registered by the test are forgotten after it."""
    monkeypatch.setattr(redaction, "_secrets", set(redaction._secrets))


def test_stats_credentials_register_the_password(own_secrets):
    assert redact("login admin:hc-unit-7f3a") == "login admin:hc-unit-7f3a"
    found = stats_credentials(HANDMADE_OWN_PASSWORD)
    assert found == {"section": "stats", "uri": "/status", "port": 8080, "user": "admin",
                     "password": "hc-unit-7f3a"}
    # the password, and the user:password pair Basic auth encodes, are both masked
    assert redact("login admin:hc-unit-7f3a") == f"login {MASK}"
    assert redact("pw hc-unit-7f3a") == f"pw {MASK}"
    # the 1.x header address is not a bind line here: no port
    odd = stats_credentials(ODD)
    assert (odd["port"], odd["user"], odd["uri"]) == (None, "admin", "/status")
    assert MASK in redact("s3cret-odd")
    with pytest.raises(LookupError, match="no `stats auth` line"):
        stats_credentials("listen stats\n    bind *:8080\n")


def test_check_timing_reads_the_server_line():
    assert check_timing(ODD, "app", "app1") == {
        "inter_s": 1.0, "fall": 2, "rise": 5, "checked": True, "down_after_s": 2.0, "up_after_s": 5.0}
    # a bare number is milliseconds; no check word, HAProxy's default fall and rise
    app2 = check_timing(ODD, "app", "app2")
    assert (app2["inter_s"], app2["fall"], app2["rise"], app2["checked"]) == (0.5, DEFAULT_FALL, DEFAULT_RISE,
                                                                              False)
    default = check_timing(HANDMADE, "dynamic", "app1")
    assert default["inter_s"] == DEFAULT_INTER_S and default["down_after_s"] == DEFAULT_INTER_S * DEFAULT_FALL
    # a second section of the same name is searched too
    assert check_timing(ODD, "app", "app4")["inter_s"] == 3.0


def test_check_timing_lookup_errors():
    with pytest.raises(LookupError, match=r"no `server app9` in backend app"):
        check_timing(ODD, "app", "app9")
    with pytest.raises(LookupError, match=r"no `server app1` in backend nosuch"):
        check_timing(ODD, "nosuch", "app1")
    with pytest.raises(ValueError, match="not an HAProxy time"):
        check_timing("backend b\n    server s 1.2.3.4:80 inter soon\n", "b", "s")


def test_haproxy_times_in_milliseconds():
    assert [time_ms(v) for v in ("500", "500ms", "2s", "1.5s", "1m", "1h", "1d", "250us")] == [
        500, 500, 2000, 1500, 60_000, 3_600_000, 86_400_000, 0.25]
    for wrong in ("soon", "1 s", "1sec", "-1s", ""):
        with pytest.raises(ValueError, match="not an HAProxy time"):
            time_ms(wrong)


# What HAProxy 2.6 printed for the runbook's verbatim stage-1 text (HAC-LINT-002), and a notice and warning.
CHECK_OUTPUT = """\
[NOTICE]   (4711) : haproxy version is 2.6.12-1+deb12u1
[ALERT]    (4711) : config : parsing [verbatim/stage1.haproxy.cfg:63] : please use the 'bind' keyword for \
listening addresses.
[ALERT]    (4711) : config : parsing [verbatim/stage1.haproxy.cfg:66] : 'listen' or 'defaults' expected.
[WARNING]  (4711) : config : parsing [verbatim/stage1.haproxy.cfg:70] : a warning, not an alert
[ALERT]    (4711) : config : Error(s) found in configuration file : verbatim/stage1.haproxy.cfg
[ALERT]    (4711) : config : Fatal errors found in configuration.
""".splitlines()


def test_check_alerts_with_and_without_a_location():
    alerts = check_alerts(CHECK_OUTPUT)
    assert [(a.file, a.line, a.is_summary) for a in alerts] == [
        ("verbatim/stage1.haproxy.cfg", 63, False), ("verbatim/stage1.haproxy.cfg", 66, False),
        (None, None, True), (None, None, True)]
    assert alerts[0].message == "please use the 'bind' keyword for listening addresses."
    assert alerts[1].text == ("[ALERT]    (4711) : config : parsing [verbatim/stage1.haproxy.cfg:66] : "
                              "'listen' or 'defaults' expected.")
    assert alerts[2].message == "Error(s) found in configuration file : verbatim/stage1.haproxy.cfg"
    assert check_alerts(["Configuration file is valid"]) == []
