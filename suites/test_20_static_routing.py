"""Stage 2 — static content to server3, the rest to server2 (简单的访问控制).

The runbook's frontend:

    acl url_static  path_beg  -i /static /images /javascript /stylesheets
    acl url_static  path_end  -i .jpg .gif .png .css .js
    use_backend static if url_static      # backend static: app2 (server3)
    default_backend app                   # backend app:    app1 (server2)

Both real servers carry the same probe files (fixtures/documented/README.md),
each naming its own host in its first line, so the page says who served it.
Paths without a probe file (other letter cases, near misses) are identified
by the X-Real-Server header the stage puts on every response, 404 included.
"""

import pytest

from haconform.conformance import conformance
from haconform.readers.responses import served_by

SECTION = "简单的访问控制"

# The runbook's url_static ACL, word for word: this is the requirement.
PREFIXES = ["/static", "/images", "/javascript", "/stylesheets"]
SUFFIXES = [".jpg", ".gif", ".png", ".css", ".js"]


def case_variants(word: str) -> list[str]:
    """Upper case and alternating case of a path piece: '/images' -> '/IMAGES', '/iMaGeS'."""
    alternating = "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(word))
    return [word.upper(), alternating]


CASED_PATHS = ([f"{p}/probe.txt" for prefix in PREFIXES for p in case_variants(prefix)]
               + [f"/probe{s}" for suffix in SUFFIXES for s in case_variants(suffix)])

# Paths that match neither list: the default backend must take them.
OTHER_PATHS = [
    "/",
    "/index.html",
    "/probe.txt",
    "/probe.txt?file=x.jpg",      # path_end looks at the path, not the query string
    "/probe.jpg.txt",             # the suffix is not at the end
    "/x/images/probe.txt",        # the prefix is not at the beginning
]


def answered(response) -> dict:
    return {"status": response.status, "first_line": response.first_line,
            "X-Real-Server": served_by(response), "error": response.error}


def fetch(deployment, http, evidence, path: str):
    """GET path through the frontend; the response, and what it says about who answered (as evidence)."""
    response = http.get(deployment.url(path))
    seen = answered(response)
    evidence.data(f"GET {path}", seen)
    return response, seen


def check_probe_from(server_name: str, path: str, deployment, http, evidence) -> None:
    """path is a probe file: it MUST be served (200), by the real server behind server_name."""
    host = deployment.realserver_by_server_name(server_name).name
    response, seen = fetch(deployment, http, evidence, path)
    assert response.status == 200, f"the probe file must be served: {seen}"
    assert response.first_line == host and served_by(response) == host, \
        f"{path} must come from {host}: {seen}"


def check_routed_to(server_name: str, path: str, deployment, http, evidence) -> None:
    """path MUST reach the real server behind server_name, file or not (its header says so)."""
    host = deployment.realserver_by_server_name(server_name).name
    response, seen = fetch(deployment, http, evidence, path)
    assert served_by(response) == host, f"{path} must be routed to {host}: {seen}"
    if response.status == 200:
        assert response.first_line == host, f"{path}: page and header disagree: {seen}"


@pytest.mark.parametrize("prefix", PREFIXES)
@conformance("HAC-ACL-001", stage="stage2", section=SECTION,
             settings=("haproxy.cfg[frontend main].acl url_static", "haproxy.cfg[frontend main].use_backend[*]",
                       "haproxy.cfg[backend static].server *"),
             must="A request whose path begins with a url_static prefix (/static /images /javascript "
                  "/stylesheets) MUST be served by app2 (server3), backend static")
def test_static_prefix_goes_to_app2(prefix, deployment, http, stage2, client_evidence, evidence):
    check_probe_from("app2", f"{prefix}/probe.txt", deployment, http, evidence)


@pytest.mark.parametrize("suffix", SUFFIXES)
@conformance("HAC-ACL-002", stage="stage2", section=SECTION,
             settings=("haproxy.cfg[frontend main].acl url_static", "haproxy.cfg[frontend main].use_backend[*]",
                       "haproxy.cfg[backend static].server *"),
             must="A request whose path ends with a url_static suffix (.jpg .gif .png .css .js) MUST be "
                  "served by app2 (server3), backend static")
def test_static_suffix_goes_to_app2(suffix, deployment, http, stage2, client_evidence, evidence):
    check_probe_from("app2", f"/probe{suffix}", deployment, http, evidence)


@pytest.mark.parametrize("path", CASED_PATHS)
@conformance("HAC-ACL-003", stage="stage2", section=SECTION,
             settings=("haproxy.cfg[frontend main].acl url_static", "haproxy.cfg[frontend main].use_backend[*]",
                       "haproxy.cfg[backend static].server *"),
             must="The url_static prefixes and suffixes MUST match in any letter case (-i), sending "
                  "/IMAGES/..., /iMaGeS/..., /x.JPG, /x.JpG ... to app2 (server3)")
def test_static_match_ignores_case(path, deployment, http, stage2, client_evidence, evidence):
    # Only /IMAGES/probe.txt and /probe.JPG exist as files; elsewhere server3's
    # 404 still names it in its header, which is what routing is about.
    check_routed_to("app2", path, deployment, http, evidence)


@pytest.mark.parametrize("path", OTHER_PATHS)
@conformance("HAC-ACL-004", stage="stage2", section=SECTION,
             settings=("haproxy.cfg[frontend main].acl url_static", "haproxy.cfg[frontend main].default_backend",
                       "haproxy.cfg[backend app].server *"),
             must="A request whose path matches no url_static prefix or suffix MUST be served by app1 "
                  "(server2), the default backend app")
def test_other_paths_go_to_app1(path, deployment, http, stage2, client_evidence, evidence):
    check_routed_to("app1", path, deployment, http, evidence)
