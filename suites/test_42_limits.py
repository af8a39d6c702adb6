"""Stage 2 — limits (最大句柄修改逻辑).

The runbook raises limits "kernel -> system -> application": defaults
`maxconn 65535` in haproxy.cfg and `haproxy - nofile 65535` in
/etc/security/limits.conf.  What it leaves in place is global `maxconn 4000`,
which is the process's ceiling; and pam_limits applies limits.conf to login
sessions, never to a daemon started by an init script
(fixtures/documented/README.md, "Changes" 3 and 4).  So the suite asserts
the figures the applied configuration truly yields and reports the others.
"""

from haconform.conformance import conformance
from haconform.observe import config_maxconn, limits_entries, process_limits, runtime

SECTION = "最大句柄修改逻辑"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
LIMITS_CONF = "/etc/security/limits.conf"
# The runbook's line (seed line 442): haproxy  -  nofile  65535
RUNBOOK_LIMIT = {"domain": "haproxy", "type": "-", "item": "nofile", "value": "65535"}


@conformance("HAC-LIM-001", stage="stage2", section=SECTION,
             must="/etc/security/limits.conf on each director MUST hold the entry `haproxy - nofile 65535`")
def test_nofile_entry_in_limits_conf(deployment, stage2, evidence):
    problems = {}
    for director in deployment.directors:
        entries = limits_entries(director.read_file(LIMITS_CONF))
        evidence.table(f"{LIMITS_CONF} entries on {director.name}", [e.__dict__ for e in entries])
        for_haproxy = [(e.domain, e.type, e.item, e.value) for e in entries
                       if e.domain == "haproxy" and e.item == "nofile"]
        # A later line for the same domain and item overrides an earlier one: exactly one, as documented.
        if for_haproxy != [tuple(RUNBOOK_LIMIT.values())]:
            problems[director.name] = for_haproxy
    assert not problems, f"expected exactly the entry {tuple(RUNBOOK_LIMIT.values())}; haproxy nofile " \
                         f"entries found: {problems}"


@conformance("HAC-LIM-002", stage="stage2", section=SECTION,
             must="HAProxy's process-wide Maxconn (show info) MUST equal the global maxconn of the applied "
                  "config (4000), whatever the defaults section says (65535)")
def test_global_maxconn_caps_the_process(deployment, stage2, evidence):
    for director in deployment.directors:
        check_process_maxconn(director, evidence)


def check_process_maxconn(director, evidence):
    config = director.read_file(HAPROXY_CFG)
    global_maxconn = config_maxconn(config, "global")
    defaults_maxconn = config_maxconn(config, "defaults")
    socket = runtime(director)
    info = socket.info()
    figures = {
        "config: global maxconn": global_maxconn,
        "config: defaults maxconn": defaults_maxconn,
        "show info: Maxconn": info.get("Maxconn"),
        "show info: Hard_maxconn": info.get("Hard_maxconn"),
        "show info: Ulimit-n": info.get("Ulimit-n"),
        "show info: Maxsock": info.get("Maxsock"),
        "show stat: frontend main slim": socket.stat().frontend("main").number("slim"),
        "/proc/PID/limits: Max open files": process_limits(director, int(info["Pid"])).get("Max open files"),
        f"{LIMITS_CONF}: haproxy nofile": [e.value for e in limits_entries(director.read_file(LIMITS_CONF))
                                           if e.domain == "haproxy" and e.item == "nofile"],
    }
    evidence.data(f"effective limits on {director.name}", figures)
    assert global_maxconn is not None, "the applied config has no global maxconn (the runbook sets 4000)"
    assert info["Maxconn"] == global_maxconn and info["Hard_maxconn"] == global_maxconn, \
        f"process maxconn is {info['Maxconn']} (hard {info['Hard_maxconn']}), the global section says " \
        f"{global_maxconn}: {figures}"


@conformance("HAC-LIM-003", stage="stage2", section=SECTION,
             must="The frontend's own session limit (show stat slim) MUST equal the defaults maxconn of the "
                  "applied config (65535): the defaults value limits each proxy, not the process")
def test_defaults_maxconn_limits_each_frontend(deployment, stage2, evidence):
    for director in deployment.directors:
        check_frontend_limit(director, evidence)


def check_frontend_limit(director, evidence):
    config = director.read_file(HAPROXY_CFG)
    defaults_maxconn = config_maxconn(config, "defaults")
    table = runtime(director).stat()
    limits = {row.proxy: row.number("slim") for row in table.rows if row.kind == "frontend"}
    evidence.data(f"frontend session limits on {director.name}", {"defaults maxconn": defaults_maxconn,
                                                                  "slim per frontend": limits})
    assert defaults_maxconn is not None, "the applied config has no defaults maxconn (the runbook sets 65535)"
    assert limits.get("main") == defaults_maxconn, \
        f"frontend main's slim is {limits.get('main')}, defaults maxconn is {defaults_maxconn}"
