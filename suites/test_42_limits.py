"""Stage 2 — limits (最大句柄修改逻辑).

The runbook raises limits "kernel -> system -> application": defaults
`maxconn 65535` in haproxy.cfg and `haproxy - nofile 65535` in
/etc/security/limits.conf.  What it leaves in place is global `maxconn 4000`,
which is the process's ceiling; and pam_limits applies limits.conf to login
sessions, never to a daemon started by an init script
(fixtures/documented/README.md, "Changes" 3 and 4).  So the suite asserts
the figures the documented configuration truly yields and reports the others.

The expected figures are the stage's documented ones (its haproxy.cfg and
limits.conf under --config); the deployment's own files are evidence.
"""

from haconform.conformance import conformance
from haconform.differences import fail_on_differences
from haconform.readers.haproxy import runtime
from haconform.readers.haproxy_config import config_maxconn
from haconform.readers.limits import limits_entries, process_limits
from haconform.stages.semantic import compare_limits

SECTION = "最大句柄修改逻辑"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
LIMITS_CONF = "/etc/security/limits.conf"
DIRECTORS = "role-director"


def documented_maxconn(stage, kind: str) -> int:
    value = config_maxconn(stage.text(DIRECTORS, HAPROXY_CFG), kind)
    assert value is not None, f"stage {stage.name} documents no {kind} maxconn ({stage.directory})"
    return value


@conformance("HAC-LIM-001", stage="stage2", section=SECTION,
             settings=("limits.conf[*]",),
             must="/etc/security/limits.conf on each director MUST hold the entry `haproxy - nofile 65535`")
def test_nofile_entry_in_limits_conf(deployment, limits_settings, evidence):
    documented = limits_settings.text(DIRECTORS, LIMITS_CONF)
    evidence.table("documented entries", [e.__dict__ for e in limits_entries(documented)])
    rows = []
    for director in deployment.directors:
        found = director.read_file(LIMITS_CONF)
        evidence.table(f"{LIMITS_CONF} entries on {director.name}", [e.__dict__ for e in limits_entries(found)])
        rows += [d.row() for d in compare_limits(documented, found,
                                                 expected_source=f"{limits_settings.name}:{LIMITS_CONF}",
                                                 found_source=f"{director.name}:{LIMITS_CONF}")]
    fail_on_differences(rows, f"effective limits differ from the documented {LIMITS_CONF}", evidence=evidence,
                        title=f"differences from the documented {LIMITS_CONF}")


@conformance("HAC-LIM-002", stage="stage2", section=SECTION,
             settings=("haproxy.cfg[global].maxconn",),
             must="HAProxy's process-wide Maxconn (show info) MUST equal the documented global maxconn "
                  "(4000), whatever the defaults section says (65535)")
def test_global_maxconn_caps_the_process(deployment, limits_settings, evidence):
    for director in haproxy_directors(deployment):
        check_process_maxconn(director, documented_maxconn(limits_settings, "global"), evidence)


def haproxy_directors(deployment):
    """Directors running HAProxy: both before the cluster, the group's node once the cluster owns it."""
    running = [d for d in deployment.directors if d.host.process.filter(comm="haproxy")]
    assert running, "HAProxy runs on no director"
    return running


def check_process_maxconn(director, documented: int, evidence):
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
    figures["documented: global maxconn"] = documented
    evidence.data(f"effective limits on {director.name}", figures)
    assert info["Maxconn"] == documented and info["Hard_maxconn"] == documented, \
        f"process maxconn is {info['Maxconn']} (hard {info['Hard_maxconn']}), documented {documented} " \
        f"(the deployment's global section says {global_maxconn}): {figures}"


@conformance("HAC-LIM-003", stage="stage2", section=SECTION,
             settings=("haproxy.cfg[defaults].maxconn",),
             must="The frontend's own session limit (show stat slim) MUST equal the documented defaults "
                  "maxconn (65535): the defaults value limits each proxy, not the process")
def test_defaults_maxconn_limits_each_frontend(deployment, limits_settings, evidence):
    for director in haproxy_directors(deployment):
        check_frontend_limit(director, documented_maxconn(limits_settings, "defaults"), evidence)


def check_frontend_limit(director, documented: int, evidence):
    config = director.read_file(HAPROXY_CFG)
    defaults_maxconn = config_maxconn(config, "defaults")
    table = runtime(director).stat()
    limits = {row.proxy: row.number("slim") for row in table.rows if row.kind == "frontend"}
    evidence.data(f"frontend session limits on {director.name}", {
        "documented defaults maxconn": documented, "the deployment's defaults maxconn": defaults_maxconn,
        "slim per frontend": limits})
    assert limits.get("main") == documented, \
        f"frontend main's slim is {limits.get('main')}, documented defaults maxconn {documented} " \
        f"(the deployment's defaults section says {defaults_maxconn})"
