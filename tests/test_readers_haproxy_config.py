"""haproxy.cfg reader (haconform/readers/haproxy_config.py): sections, maxconn, servers, stats, checks."""

from __future__ import annotations

import pytest

from fakes import read_sample
from haconform.readers.haproxy_config import (
    DEFAULT_FALL,
    DEFAULT_INTER_S,
    DEFAULT_RISE,
    backend_servers,
    check_timing,
    config_maxconn,
    config_section,
    config_sections,
    stats_credentials,
)
from haconform import secrets as redaction
from haconform.secrets import MASK, redact
from haconform.stages.semantic import parse_haproxy_cfg

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


def test_sections_are_semantics_sections_without_header_words():
    ours = config_sections(ODD)
    theirs = parse_haproxy_cfg(ODD)
    assert [(s.kind, s.name) for s in ours] == [(s.kind, s.name) for s in theirs] == [
        ("global", None), ("listen", "stats"), ("backend", "app"), ("backend", "app")]
    # semantic.py reads `listen stats *:8080` as a bind line; a section's lines here are
    # only those after its header, so the 1.x address is not a `bind` (as before the split).
    assert [d.words for d in theirs[1].directives][0] == ("bind", "*:8080")
    assert config_section(ODD, "listen", "stats").directives("bind") == []
    assert config_section(ODD, "listen", "stats").lines == (
        ("stats", "auth", "admin:s3cret-odd"), ("stats", "uri", "/status"))


def test_handmade_config_sections_and_directives():
    sections = config_sections(HANDMADE)
    assert [(s.kind, s.name) for s in sections] == [
        ("global", None), ("defaults", None), ("backend", "static"), ("backend", "dynamic"),
        ("frontend", "main"), ("listen", "stats")]
    main = config_section(HANDMADE, "frontend", "main")
    assert main.directives("bind") == [("*:80",)]
    assert main.directives("default_backend") == [("dynamic",)]
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
