"""HttpAgent against a local HTTP server on 127.0.0.1.

The agent runs as a separate process with an empty transport prefix (locally),
exactly as it would run inside the client host behind nsenter or ssh.
"""

from __future__ import annotations

import ast
import base64
import email.parser
import email.policy
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from haconform.client import (AgentOpError, Exchange, HttpAgent, agent_argv, agent_source, basic_auth,
                              redact_url)
from haconform.errors import HaconformError
from haconform.timeouts import BOUNDS
from haconform.wait import wait_until


class NamedServer(ThreadingHTTPServer):
    """A real server stand-in: its page names it; it records what it was sent."""

    daemon_threads = True

    def __init__(self, name: str):
        super().__init__(("127.0.0.1", 0), NamedHandler)
        self.name = name
        self.peers: list[tuple[str, int]] = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class NamedHandler(BaseHTTPRequestHandler):
    server: NamedServer

    def log_message(self, *args):  # keep pytest output quiet
        pass

    def _record(self, body: bytes) -> None:
        with self.server.lock:
            self.server.peers.append(self.client_address)
            self.server.requests.append({"method": self.command, "path": self.path,
                                         "headers": list(self.headers.items()), "body": body})

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Real-Server", self.server.name)
        self.send_header("Set-Cookie", "a=1")
        self.send_header("Set-Cookie", "b=2")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self._record(body)
        path = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(path.query)
        if path.path == "/sleep":
            time.sleep(float(query["s"][0]))  # the slow server under test, not a wait
            self._reply(200, f"{self.server.name}\nslept\n".encode())
        elif path.path == "/echo":
            echo = {"method": self.command, "path": self.path,
                    "headers": [[k, v] for k, v in self.headers.items()],
                    "body_b64": base64.b64encode(body).decode()}
            self._reply(200, json.dumps(echo).encode(), "application/json")
        elif path.path == "/big":
            self._reply(200, b"x" * int(query["n"][0]))
        elif path.path == "/upload":
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
            parts = [{"name": part.get_param("name", header="content-disposition"),
                      "filename": part.get_filename(),
                      "content_type": part.get_content_type(),
                      "sha256": hashlib.sha256(part.get_payload(decode=True)).hexdigest(),
                      "size": len(part.get_payload(decode=True))}
                     for part in message.iter_parts()]
            self._reply(200, json.dumps(parts).encode(), "application/json")
        else:
            self._reply(200, f"<html><body><h1>{self.server.name}</h1>\n</body></html>\n".encode(),
                        "text/html; charset=utf-8")

    do_GET = do_HEAD = do_POST = do_PUT = _handle


@pytest.fixture
def server():
    httpd = NamedServer("alpha")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def agent():
    with HttpAgent([], python=sys.executable, label="test agent") as running:
        yield running


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_agent_is_its_own_process(agent):
    info = agent.ping()
    assert info["pid"] != os.getpid()
    assert info["hostname"] == socket.gethostname()


def test_get_names_the_server_and_is_recorded_as_evidence(agent, server):
    response = agent.get(server.url + "/")
    assert response.ok, response
    assert response.status == 200 and response.reason == "OK"
    assert response.first_line == "alpha"
    assert response.headers["x-real-server"] == "alpha"       # case-insensitive lookup
    assert response.headers.getlist("SET-COOKIE") == ["a=1", "b=2"]
    assert response.local_addr.startswith("127.0.0.1:")
    assert response.remote_addr == f"127.0.0.1:{server.server_address[1]}"
    last = agent.evidence[-1]
    assert isinstance(last, Exchange)
    assert (last.method, last.url, last.status, last.first_line) == \
        ("GET", server.url + "/", 200, "alpha")
    assert "alpha" in str(last)


def test_headers_and_body_arrive_and_connection_close_is_sent(agent, server):
    payload = bytes(range(256)) * 3
    response = agent.put(server.url + "/echo?x=1", payload,
                         headers={"X-Test": "yes", "Host": "app.example"})
    assert response.status == 200, response
    echo = json.loads(response.text)
    sent = {k.lower(): v for k, v in echo["headers"]}
    assert echo["method"] == "PUT" and echo["path"] == "/echo?x=1"
    assert sent["x-test"] == "yes"
    assert sent["host"] == "app.example"
    assert sent["connection"] == "close"
    assert base64.b64decode(echo["body_b64"]) == payload


def test_every_request_uses_a_new_connection(agent, server):
    for _ in range(3):
        assert agent.get(server.url + "/").ok
    ports = [port for _, port in server.peers]
    assert len(set(ports)) == 3, ports


def test_head_has_headers_but_no_body(agent, server):
    response = agent.head(server.url + "/")
    assert response.status == 200
    assert response.body == b""
    assert response.headers["X-Real-Server"] == "alpha"


def test_multipart_upload_arrives_intact(agent, server):
    image = os.urandom(15000) + b"\r\n--not-a-boundary\r\n"
    response = agent.post_multipart(server.url + "/upload", fields={"submit": "Submit"},
                                    files={"file": ("probe.gif", image, "image/gif")})
    assert response.status == 200, response
    parts = {part["name"]: part for part in json.loads(response.body)}
    assert parts["file"]["filename"] == "probe.gif"
    assert parts["file"]["content_type"] == "image/gif"
    assert parts["file"]["sha256"] == hashlib.sha256(image).hexdigest()
    assert parts["submit"]["size"] == len("Submit")


def test_basic_auth_is_sent_but_never_shown(agent, server):
    secret = "s3cr3t-Pa55"
    assert agent.get(server.url + "/", auth=("admin", secret)).ok
    sent = {k.lower(): v for k, v in server.requests[-1]["headers"]}
    assert sent["authorization"] == basic_auth("admin", secret)["Authorization"]
    token = sent["authorization"].split()[1]
    agent.get(server.url.replace("http://", f"http://admin:{secret}@") + "/")
    shown = repr(agent.evidence) + " ".join(str(entry) for entry in agent.evidence)
    assert secret not in shown and token not in shown
    assert ("Authorization", "<redacted>") in agent.evidence[-2].request_headers


def test_redact_url_keeps_host_and_port():
    assert redact_url("http://admin:pw@10.0.0.1:8080/status") == \
        "http://<redacted>@10.0.0.1:8080/status"
    assert redact_url("http://10.0.0.1/") == "http://10.0.0.1/"


def test_big_body_is_cut_at_the_cap(agent, server):
    response = agent.get(server.url + "/big?n=1200000")
    assert response.status == 200
    assert response.truncated
    assert len(response.body) == 1 << 20


def test_refused_connection_is_an_answer_not_a_crash(agent):
    response = agent.get(f"http://127.0.0.1:{closed_port()}/")
    assert not response.ok
    assert response.status is None
    assert response.error_kind == "refused", response.error
    assert agent.evidence[-1].error.startswith("refused")
    assert agent.ping()["pid"]  # still alive


def test_timeout_is_an_answer_and_is_bounded(agent, server):
    response = agent.get(server.url + "/sleep?s=1.5", timeout=0.3)
    assert response.error_kind == "timeout", response
    assert 0.25 <= response.elapsed < 1.2
    assert agent.ping()["pid"]


def test_requests_from_several_threads_run_at_once(agent, server):
    start = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(lambda _: agent.get(server.url + "/sleep?s=0.6"), range(3)))
    took = time.monotonic() - start
    assert all(r.ok for r in responses), responses
    assert took < 1.5, f"3 x 0.6 s requests took {took:.2f} s: not concurrent"


def test_raw_connection_sends_and_receives(agent, server):
    before = len(agent.evidence)
    with agent.open_connection("127.0.0.1", server.server_address[1]) as conn:
        assert conn.local_addr.startswith("127.0.0.1:")
        conn.send(b"GET /plain HTTP/1.0\r\nHost: x\r\n\r\n")
        data = conn.recv_until_closed()
        assert conn.peer_closed
    assert data.startswith(b"HTTP/1.0 200"), data[:100]
    assert b"<h1>alpha</h1>" in data
    steps = [entry.method for entry in agent.evidence[before:]]
    assert steps[:2] == ["OPEN", "SEND"] and steps[-1] == "CLOSE" and "RECV" in steps, steps


def test_raw_connection_that_sends_nothing_reaches_no_handler(agent, server):
    conn = agent.open_connection("127.0.0.1", server.server_address[1])
    assert conn.recv(timeout=0.2) == b""
    assert not conn.peer_closed
    conn.close()
    # The server did accept it (held by the agent) but never saw a request.
    assert server.requests == []


def test_open_refused_raises_with_kind(agent):
    with pytest.raises(AgentOpError) as failure:
        agent.open_connection("127.0.0.1", closed_port())
    assert failure.value.kind == "refused"


def test_bad_url_is_an_answer(agent):
    response = agent.get("ftp://127.0.0.1/")
    assert response.error_kind == "invalid", response


def test_ssh_like_transport_gets_shell_quoted_arguments(server):
    # ssh joins its arguments into one string for the remote shell; this
    # stand-in does the same, so unquoted source would break here.
    fake_ssh = [sys.executable, "-c",
                "import subprocess, sys; "
                "sys.exit(subprocess.call(['sh', '-c', ' '.join(sys.argv[1:])]))"]
    with HttpAgent(fake_ssh, python=sys.executable, through_shell=True) as remote:
        assert remote.get(server.url + "/").first_line == "alpha"
    assert agent_argv(["ssh", "host", "--"], ["serve"])[-1] == "serve"
    assert agent_argv(["ssh", "host", "--"], ["serve"])[-2] != agent_source()


def test_agent_that_cannot_start_fails_with_its_stderr():
    with pytest.raises(HaconformError) as failure:
        with HttpAgent([sys.executable, "-c", "import sys; sys.exit('no python here')", "--"]):
            pass
    assert "no python here" in str(failure.value)


def test_missing_transport_command_is_a_clear_error():
    with pytest.raises(HaconformError, match="cannot start the client agent"):
        HttpAgent(["/nonexistent/nsenter", "--"]).start()


def test_agent_exits_when_closed():
    running = HttpAgent([], python=sys.executable).start()
    pid = running.ping()["pid"]
    running.close()
    wait_until("agent process gone", lambda: not os.path.exists(f"/proc/{pid}"),
               timeout=BOUNDS.agent_start)
    with pytest.raises(HaconformError):
        running.get("http://127.0.0.1/")


def test_agent_source_is_standard_library_only_and_small():
    source = agent_source()
    assert len(source.encode()) < 60_000
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in the agent"
            imported.add(node.module.split(".")[0])
    assert imported and imported <= sys.stdlib_module_names, imported - sys.stdlib_module_names


def in_fresh_network_namespace() -> list[str]:
    """A transport prefix into a private, throwaway network namespace (only lo)."""
    prefix = ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    try:
        subprocess.run([*prefix, "true"], check=True, capture_output=True, timeout=BOUNDS.command)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot create a network namespace here: {exc}")
    return prefix


def test_traffic_leaves_from_the_agents_network_namespace_not_the_harness(server):
    # The same URL answers from this namespace but not from the agent's own:
    # the request really is made by the agent where it runs.
    with HttpAgent(in_fresh_network_namespace(), python="/usr/bin/python3") as isolated:
        response = isolated.get(server.url + "/")
        assert isolated.ping()["python"].startswith("3.")
    assert response.error_kind == "refused", response
    assert server.requests == []
