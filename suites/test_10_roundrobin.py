"""Stage 1 — round robin (配置文件实例)."""

from haconform.conformance import conformance
from haconform.faults.nemesis import start_service
from haconform.readers.haproxy import runtime
from haconform.readers.haproxy_config import check_timing
from haconform.readers.responses import answers
from haconform.timeouts import documented
from haconform.wait import wait_until

SECTION = "配置文件实例"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"


def names_of(deployment, backend_servers):
    return [deployment.realserver_by_server_name(s).name for s in backend_servers]


def alternates(seen: list) -> bool:
    """No two consecutive answers from the same server."""
    return all(a != b for a, b in zip(seen, seen[1:]))


@conformance("HAC-RR-001", stage="stage1", section=SECTION,
             settings=("haproxy.cfg[frontend main].bind", "haproxy.cfg[frontend main].default_backend",
                       "haproxy.cfg[backend app].balance", "haproxy.cfg[backend app].server *"),
             must="Consecutive requests through the frontend MUST alternate app1, app2, app1, ...")
def test_requests_alternate_between_real_servers(deployment, http, stage1, client_evidence, evidence):
    seen = answers(http, deployment.url("/"), 8)
    evidence.data("who answered, in order", seen)
    expected = names_of(deployment, ["app1", "app2"])
    assert set(seen) == set(expected), f"expected only {expected} to answer, saw {seen}"
    assert alternates(seen), f"not alternating: {seen}"


@conformance("HAC-RR-002", stage="stage1", section=SECTION, destructive=True,
             settings=("haproxy.cfg[frontend main].bind", "haproxy.cfg[frontend main].default_backend",
                       "haproxy.cfg[backend app].balance", "haproxy.cfg[backend app].server *"),
             must="A real server that fails its health check MUST stop receiving traffic within the "
                  "check timing, and MUST receive traffic again once it passes")
def test_failed_health_check_takes_server_out(deployment, http, stage1, client_evidence, evidence, request):
    director = deployment.directors[0]
    app2 = deployment.realserver_by_server_name("app2")
    survivor = deployment.realserver_by_server_name("app1")
    timing = check_timing(director.read_file(HAPROXY_CFG), "app", "app2")
    evidence.data("health check timing from the applied config", timing)
    assert timing["checked"], "the runbook's `server app2 ... check` has no `check`"
    states = lambda: runtime(director).stat().states("app")  # noqa: E731

    apache2_back = start_service(app2, "apache2")
    request.addfinalizer(lambda: apache2_back.run(deployment))
    # A finalizer does not run when the harness is killed; the dead-man switch does (restore disarms it).
    apache2_back.arm_dead_man(deployment.target, what=f"apache2 stopped on {app2.name}")
    app2.succeed("service apache2 stop")
    wait_until("app2 DOWN in show stat", lambda: states().get("app2", "").startswith("DOWN"),
               timeout=documented(timing["down_after_s"]), observe=states)
    seen = answers(http, deployment.url("/"), 6)
    evidence.data("answers while app2 is down", seen)
    assert seen == [survivor.name] * 6, f"with app2 down every request must reach {survivor.name}: {seen}"

    app2.succeed("service apache2 start")
    wait_until("app2 UP in show stat", lambda: states().get("app2") == "UP",
               timeout=documented(timing["up_after_s"]), observe=states)
    seen = answers(http, deployment.url("/"), 6)
    evidence.data("answers after app2 returned", seen)
    assert set(seen) == {survivor.name, app2.name} and alternates(seen), \
        f"alternation did not resume: {seen}"
