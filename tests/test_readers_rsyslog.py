"""rsyslog reader (haconform/readers/rsyslog.py): ports, routes and exclusions, in both syntaxes."""

from __future__ import annotations

from pathlib import Path

from haconform.readers.rsyslog import RsyslogConfig, parse_rsyslog

ETC = Path(__file__).resolve().parent.parent / "fixtures" / "documented" / "stage1" / "role-director" / "etc"
# Stage 1's; stage 2 inherits them.
RSYSLOG = (ETC / "rsyslog.conf").read_text() + (ETC / "rsyslog.d" / "49-haproxy.conf").read_text()

# The runbook's rsyslog in RainerScript: the same ports and routes.
RAINER = (RSYSLOG
          .replace("$ModLoad imudp\n$UDPServerRun 514\n",
                   'module(load="imudp")\ninput(type="imudp"\n      port=514)\n')
          .replace("local2.*                       \t\t\t\t/var/log/haproxy.log",
                   'local2.*  action(type="omfile" file="/var/log/haproxy.log")')
          .replace("*.info;mail.none;authpriv.none;cron.none;local2.none    /var/log/messages",
                   "*.info;local2.none;cron.none;authpriv.none;mail.none\t-/var/log/messages"))


def test_the_runbooks_ports_routes_and_exclusions():
    config = parse_rsyslog(RSYSLOG)
    assert config.udp_ports == {514} and config.tcp_ports == set()
    assert config.ports("udp") is config.udp_ports
    assert config.routes["local2"] == ["/var/log/haproxy.log"]
    assert config.excluded["/var/log/messages"] == {"local2", "mail", "authpriv", "cron"}
    assert config.excluded["/var/log/syslog"] == {"auth", "authpriv", "local2"}


def test_rainerscript_form_reads_as_the_legacy_form():
    assert RAINER != RSYSLOG
    legacy, rainer = parse_rsyslog(RSYSLOG), parse_rsyslog(RAINER)
    assert rainer.udp_ports == {514}
    assert (rainer.routes, rainer.excluded) == (legacy.routes, legacy.excluded)


def test_lines_say_where_each_fact_is():
    text = "$ModLoad imudp\n# a comment\n$UDPServerRun 514\nlocal2.* /var/log/haproxy.log\n" \
           "*.info;local2.none -/var/log/messages\n"
    lines = parse_rsyslog(text).lines
    assert lines[("udp", 514)] == 3
    assert lines[("route", "local2", "/var/log/haproxy.log")] == lines[("fac", "local2")] == 4
    assert lines[("excl", "/var/log/messages", "local2")] == lines[("action", "/var/log/messages")] == 5


def test_a_port_without_its_module_opens_nothing():
    assert parse_rsyslog("$UDPServerRun 514\n").udp_ports == set()
    assert parse_rsyslog('module(load="imtcp")\ninput(type="imtcp" port="10514")\n').tcp_ports == {10514}


def test_reaches_through_a_star_unless_kept_out():
    config = parse_rsyslog("*.info;local2.none /var/log/messages\nlocal3.* /var/log/messages\n"
                           "local3.none;*.* /var/log/all\n")
    assert not config.reaches("local2", "/var/log/messages")
    assert config.reaches("mail", "/var/log/messages")
    # an explicit rule undoes a .none elsewhere for that action
    assert config.reaches("local3", "/var/log/messages") and "local3" not in config.excluded["/var/log/messages"]
    assert not config.reaches("local3", "/var/log/all")
    assert not RsyslogConfig().reaches("local2", "/var/log/haproxy.log")


def test_unknown_syntax_does_not_crash():
    odd = 'if $programname startswith "haproxy" then {\n  /var/log/x.log\n  stop\n}\n' \
          'template(name="t" type="string" string="%msg%)\\n")\nlocal2.* /var/log/haproxy.log\n' \
          ':programname, startswith, "haproxy" /var/log/h.log\n& stop\n'
    assert parse_rsyslog(odd).routes == {"local2": ["/var/log/haproxy.log"]}
