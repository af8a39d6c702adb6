"""Stage 2 — the stats page (简单的访问控制).

The runbook's

    listen stats *:8080          # ported: listen stats + bind *:8080
        stats uri /status
        stats auth admin:password

Port, URI and credentials are the documented ones, read from the stage's
haproxy.cfg under --config (the password is registered as a secret the moment
it is read), not copied from the runbook into the suite; the deployment's own
`stats` lines are shown beside them.
"""

import pytest

from haconform.client import basic_auth
from haconform.conformance import conformance
from haconform.frontend import frontend_director
from haconform.readers.haproxy import parse_stat_csv, runtime
from haconform.readers.haproxy_config import backend_servers, check_timing, config_sections, stats_credentials
from haconform.timeouts import documented
from haconform.wait import wait_until

SECTION = "简单的访问控制"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
# HAProxy's own title of the stats page (src/stats.c, HTML output).
STATS_PAGE_TITLE = "Statistics Report for HAProxy"


@pytest.fixture
def director(deployment):
    return frontend_director(deployment)


@pytest.fixture
def applied_config(director) -> str:
    return director.read_file(HAPROXY_CFG)


@pytest.fixture
def stats(stats_settings, applied_config, evidence) -> dict:
    documented = stats_credentials(stats_settings.text("role-director", HAPROXY_CFG))
    try:
        found = stats_credentials(applied_config)
    except LookupError as exc:
        found = {"error": str(exc)}
    evidence.data("stats page (password left out)", {
        "documented": {key: value for key, value in documented.items() if key != "password"},
        "the deployment's": {key: value for key, value in found.items() if key != "password"}})
    return documented


def stats_url(deployment, stats, suffix: str = "") -> str:
    return deployment.url(stats["uri"] + suffix, port=stats["port"])


WRONG_CREDENTIALS = {
    "no credentials": lambda user, password: None,
    "wrong password": lambda user, password: basic_auth(user, password + "-wrong"),
    "wrong user": lambda user, password: basic_auth(user + "-wrong", password),
    "empty password": lambda user, password: basic_auth(user, ""),
}


@pytest.mark.parametrize("case", list(WRONG_CREDENTIALS))
@conformance("HAC-STATS-001", stage="stage2", section=SECTION,
             settings=("haproxy.cfg[listen stats].*",),
             must="The stats URI MUST answer 401 with a Basic WWW-Authenticate challenge to a request "
                  "without credentials or with wrong ones")
def test_stats_page_challenges_without_valid_credentials(case, deployment, http, stats,
                                                         client_evidence, evidence):
    headers = WRONG_CREDENTIALS[case](stats["user"], stats["password"])
    response = http.get(stats_url(deployment, stats), headers=headers)
    challenge = response.headers.get("WWW-Authenticate")
    evidence.data(case, {"status": response.status, "WWW-Authenticate": challenge,
                         "first_line": response.first_line})
    assert response.status == 401, f"{case}: expected 401, got {response}"
    assert challenge and challenge.split()[0].lower() == "basic", \
        f"{case}: the 401 must carry a Basic challenge, WWW-Authenticate is {challenge!r}"
    assert STATS_PAGE_TITLE not in response.text, f"{case}: the stats page leaked into the 401 answer"


@conformance("HAC-STATS-002", stage="stage2", section=SECTION,
             settings=("haproxy.cfg[listen stats].*",),
             must="The stats URI MUST serve HAProxy's statistics page to the credentials of the "
                  "configured `stats auth` line")
def test_stats_page_with_configured_credentials(deployment, http, stats, client_evidence, evidence):
    response = http.get(stats_url(deployment, stats), auth=(stats["user"], stats["password"]))
    evidence.data("answer", {"status": response.status, "content-type": response.headers.get("content-type"),
                             "first_line": response.first_line})
    assert response.status == 200, f"the configured credentials were refused: {response}"
    assert response.first_line == STATS_PAGE_TITLE, f"not HAProxy's stats page: {response.first_line!r}"


@conformance("HAC-STATS-003", stage="stage2", section=SECTION,
             settings=("haproxy.cfg[listen stats].*", "haproxy.cfg[global].stats socket",
                       "haproxy.cfg[backend *].server *"),
             must="The stats page's CSV export MUST list every proxy and server of the applied config "
                  "with its state, and MUST agree with `show stat` on the runtime socket")
def test_stats_csv_lists_everything_and_agrees_with_runtime(deployment, http, director, applied_config,
                                                            stats, client_evidence, evidence):
    sections = config_sections(applied_config)
    proxies = [s.name for s in sections if s.kind in ("frontend", "backend", "listen")]
    servers = {(s.name, name) for s in sections if s.kind == "backend"
               for name in backend_servers(applied_config, s.name)}
    socket = runtime(director)
    checked = {(b, s): check_timing(applied_config, b, s) for b, s in servers}
    slowest = max([t["up_after_s"] for t in checked.values() if t["checked"]], default=0.0)

    def checks_done():
        rows = [r for r in socket.stat().rows if r.kind == "server" and r.check_status != ""]
        return all(r.check_status != "INI" for r in rows)

    # Compare a settled picture: every checked server has had its first health check.
    wait_until("every checked server's first health check done", checks_done,
               timeout=documented(slowest), observe=lambda: {f"{r.proxy}/{r.name}": r.check_status
                                                             for r in socket.stat().rows if r.kind == "server"})

    response = http.get(stats_url(deployment, stats, ";csv"), auth=(stats["user"], stats["password"]))
    assert response.status == 200, f"CSV export refused: {response}"
    page = parse_stat_csv(response.text, source=f"{stats['uri']};csv")
    shown = socket.stat()

    # addr is left out: HAProxy fills it on the socket but not on the page
    # (the page shows addresses only with `stats show-legends`).
    def summary(table):
        return {f"{r.proxy}/{r.name}": {"kind": r.kind, "status": r.status, "weight": r.fields.get("weight"),
                                        "check_status": r.check_status}
                for r in table.rows if r.kind in ("backend", "server")}

    from_page, from_socket = summary(page), summary(shown)
    evidence.table("backends and servers: stats page CSV", [{"row": k, **v} for k, v in from_page.items()])
    evidence.table("backends and servers: show stat", [{"row": k, **v} for k, v in from_socket.items()])

    missing_proxies = [p for p in proxies if p not in page.proxies()]
    assert not missing_proxies, f"proxies of the config missing from the CSV: {missing_proxies}; " \
                                f"CSV has {page.proxies()}"
    listed_servers = {(r.proxy, r.name) for r in page.rows if r.kind == "server"}
    assert listed_servers == servers, f"servers in the CSV {sorted(listed_servers)} != config {sorted(servers)}"
    for proxy in proxies:
        if any(s.kind in ("backend", "listen") and s.name == proxy for s in sections):
            assert page.backend(proxy).status, f"backend {proxy} has no state in the CSV"
    stateless = [f"{b}/{s}" for b, s in servers if not page.server(b, s).status]
    assert not stateless, f"servers without a state in the CSV: {stateless}"
    assert from_page == from_socket, "the stats page and the runtime socket disagree: " + str(
        {k: (from_page.get(k), from_socket.get(k)) for k in from_page.keys() | from_socket.keys()
         if from_page.get(k) != from_socket.get(k)})
