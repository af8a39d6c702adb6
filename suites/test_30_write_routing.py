"""Stage 3 — read/write split (读写分离).

The runbook's frontend:

    acl write method PUT
    acl write method POST
    use_backend static if write          # backend static: app2 (server3)
    default_backend app                  # backend app:    app1 (server2)

Which real server handled a request is read from each real server's own
Apache access log (a unique query string per request, so no other traffic can
be mistaken for it); HEAD has no body, so the log is the witness there.  The
X-Real-Server header the stage adds must agree.  Uploads are checked where
they land: the upload/ directory of each real server.  A stored upload is a
write to the deployment, so HAC-RW-003 is marked writes_to_host (left out on
--target ssh without --allow-destructive); the refused uploads store nothing.
"""

import base64
import hashlib
import shlex
import uuid

import pytest

from haconform.conformance import conformance
from haconform.readers.access_log import access_log_requests, access_log_watches
from haconform.readers.responses import served_by
from haconform.timeouts import BOUNDS
from haconform.wait import wait_until

SECTION = "读写分离"
UPLOAD_PAGE = "/upload_file.php"
UPLOAD_DIR = "/var/www/html/upload"
# upload_file.php's refusal, verbatim from the runbook (seed lines 602-635).
REFUSAL = "Invalid file"
# upload_file.php accepts `size < 20000` only.
SIZE_LIMIT = 20000
# The smallest valid GIF: a 1x1 transparent pixel (GIF89a, 42 bytes).
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def marker() -> str:
    return uuid.uuid4().hex[:12]


def where_logged(deployment, method: str, target: str, watches) -> dict[str, list[dict]]:
    """Real server name -> its access-log entries for this exact request, once one server has it."""
    found = {}

    def logged_somewhere():
        for name, watch in watches.items():
            found[name] = [e for e in access_log_requests(watch, target) if e["method"] == method]
        return any(found.values())

    wait_until(f"{method} {target} in a real server's access log", logged_somewhere,
               timeout=BOUNDS.log_line, observe=lambda: found)
    return found


def check_routed(deployment, http, evidence, method: str, expected_server: str) -> None:
    expected = deployment.realserver_by_server_name(expected_server)
    target = f"/index.php?rw={marker()}"
    watches = access_log_watches(deployment.realservers)
    response = http.request(method, deployment.url(target), body=b"rw=1" if method in ("POST", "PUT") else None)
    logged = where_logged(deployment, method, target, watches)
    evidence.data(f"{method} {target}", {"status": response.status, "X-Real-Server": served_by(response),
                                         "access log entries by real server": logged})
    assert response.status == 200, f"{method} {target} failed: {response}"
    assert [name for name, entries in logged.items() if entries] == [expected.name], \
        f"{method} must reach {expected.name} only; access logs show {logged}"
    assert len(logged[expected.name]) == 1, f"{method} {target} logged more than once: {logged}"
    assert served_by(response) == expected.name, \
        f"the X-Real-Server header disagrees with the access logs: {served_by(response)}"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@conformance("HAC-RW-001", stage="stage3", section=SECTION,
             settings=("haproxy.cfg[frontend main].acl write", "haproxy.cfg[frontend main].default_backend",
                       "haproxy.cfg[backend app].server *"),
             must="GET and HEAD requests MUST be served by app1 (server2) and MUST NOT reach app2 (server3)")
def test_reads_go_to_app1(method, deployment, http, write_routing_settings, client_evidence, evidence):
    check_routed(deployment, http, evidence, method, "app1")


@pytest.mark.parametrize("method", ["POST", "PUT"])
@conformance("HAC-RW-002", stage="stage3", section=SECTION,
             settings=("haproxy.cfg[frontend main].acl write", "haproxy.cfg[frontend main].use_backend[*]",
                       "haproxy.cfg[backend static].server *"),
             must="POST and PUT requests MUST be served by app2 (server3) and MUST NOT reach app1 (server2)")
def test_writes_go_to_app2(method, deployment, http, write_routing_settings, client_evidence, evidence):
    check_routed(deployment, http, evidence, method, "app2")


def upload_listing(machine) -> set[str]:
    return set(machine.succeed(f"ls -A {shlex.quote(UPLOAD_DIR)}").split())


@pytest.fixture
def upload_name(deployment, request):
    """A file name no earlier run used; removed from every real server afterwards."""
    name = f"haconform-{marker()}.gif"

    def remove():
        # Asked first: where the deployment stored nothing (a refused upload, the MUST kept) nothing is
        # written, so a read-only run does not try to; where it did store it, the rm is a write.
        path = f"{UPLOAD_DIR}/{name}"
        for machine in deployment.realservers:
            if machine.host.file(path).exists:
                machine.execute(f"rm -f {shlex.quote(path)}")
    request.addfinalizer(remove)
    return name


def gif_of_size(size: int) -> bytes:
    """A valid GIF padded with trailing bytes (decoders stop at the trailer) to exactly size bytes."""
    return PIXEL_GIF + b"\0" * (size - len(PIXEL_GIF))


@pytest.mark.parametrize("size", [len(PIXEL_GIF), SIZE_LIMIT - 1])
@pytest.mark.writes_to_host(f"a GIF posted to upload_file.php, stored in {UPLOAD_DIR}/ on app2 (removed after)")
@conformance("HAC-RW-003", stage="stage3", section=SECTION,
             settings=("haproxy.cfg[frontend main].acl write", "haproxy.cfg[frontend main].use_backend[*]",
                       "haproxy.cfg[backend static].server *"),
             must="A GIF under 20000 bytes posted to upload_file.php MUST be stored in upload/ on app2 "
                  "(server3) with the bytes sent, and MUST NOT appear on app1 (server2)")
def test_upload_lands_on_app2_only(size, deployment, http, write_routing_settings, client_evidence, evidence, upload_name):
    gif = gif_of_size(size)
    app1 = deployment.realserver_by_server_name("app1")
    app2 = deployment.realserver_by_server_name("app2")
    before = {m.name: upload_listing(m) for m in deployment.realservers}
    response = http.post_multipart(deployment.url(UPLOAD_PAGE),
                                   files={"file": (upload_name, gif, "image/gif")})
    evidence.data("upload answer", {"status": response.status, "X-Real-Server": served_by(response),
                                    "text": response.text})
    assert response.status == 200 and response.text.endswith(f"Stored in: upload/{upload_name}"), \
        f"upload_file.php did not store the file: {response.status} {response.text!r}"

    stored = app2.host.file(f"{UPLOAD_DIR}/{upload_name}")
    after = {m.name: upload_listing(m) for m in deployment.realservers}
    evidence.data("new files in upload/ per real server", {n: sorted(after[n] - before[n]) for n in after})
    assert stored.exists, f"{upload_name} is not in {UPLOAD_DIR} on {app2.name}"
    assert stored.sha256sum == hashlib.sha256(gif).hexdigest(), \
        f"{app2.name} stored other bytes than were sent ({stored.size} bytes)"
    assert not app1.host.file(f"{UPLOAD_DIR}/{upload_name}").exists, \
        f"{upload_name} also appeared on {app1.name}"
    assert after[app1.name] == before[app1.name], \
        f"{app1.name}'s upload/ changed: {sorted(after[app1.name] ^ before[app1.name])}"

    # Reads go to app1, which never got the file: the split hides uploads from GET.
    read_back = http.get(deployment.url(f"/upload/{upload_name}"))
    evidence.data("GET of the uploaded file (reads go to app1)",
                  {"status": read_back.status, "X-Real-Server": served_by(read_back)})


def check_refused(deployment, http, evidence, name: str, data: bytes, content_type: str) -> None:
    before = {m.name: upload_listing(m) for m in deployment.realservers}
    response = http.post_multipart(deployment.url(UPLOAD_PAGE), files={"file": (name, data, content_type)})
    after = {m.name: upload_listing(m) for m in deployment.realservers}
    evidence.data("upload answer", {"sent": f"{name}, {len(data)} bytes, {content_type}",
                                    "status": response.status, "X-Real-Server": served_by(response),
                                    "text": response.text})
    evidence.data("new files in upload/ per real server", {n: sorted(after[n] - before[n]) for n in after})
    assert response.status == 200 and response.text == REFUSAL, \
        f"upload_file.php must answer exactly {REFUSAL!r}: {response.status} {response.text!r}"
    assert after == before, f"a refused upload changed upload/: " \
        f"{ {n: sorted(after[n] ^ before[n]) for n in after} }"
    assert served_by(response) == deployment.realserver_by_server_name("app2").name, \
        f"the POST was not handled by app2: {served_by(response)}"


@pytest.mark.parametrize("content_type", ["text/plain", "image/png", "application/x-php"])
@conformance("HAC-RW-004", stage="stage3", section=SECTION,
             settings=("haproxy.cfg[frontend main].acl write", "haproxy.cfg[frontend main].use_backend[*]",
                       "haproxy.cfg[backend static].server *"),
             must="An upload whose declared type is not image/gif, image/jpeg or image/pjpeg MUST be answered "
                  "'Invalid file' and MUST NOT be stored on any real server")
def test_upload_of_wrong_type_refused(content_type, deployment, http, write_routing_settings, client_evidence, evidence,
                                      upload_name):
    check_refused(deployment, http, evidence, upload_name, PIXEL_GIF, content_type)


@pytest.mark.parametrize("size", [SIZE_LIMIT, SIZE_LIMIT + 1, 3 * SIZE_LIMIT])
@conformance("HAC-RW-005", stage="stage3", section=SECTION,
             settings=("haproxy.cfg[frontend main].acl write", "haproxy.cfg[frontend main].use_backend[*]",
                       "haproxy.cfg[backend static].server *"),
             must="An upload of 20000 bytes or more MUST be answered 'Invalid file' and MUST NOT be stored "
                  "on any real server")
def test_upload_too_large_refused(size, deployment, http, write_routing_settings, client_evidence, evidence, upload_name):
    check_refused(deployment, http, evidence, upload_name, gif_of_size(size), "image/gif")
