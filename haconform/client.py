"""The harness side of the lab's HTTP client.

Lab traffic must come from INSIDE the lab's client host, never from the
harness process.  So the harness starts haconform/agent.py on the client host
through that host's command transport (an argv prefix such as
["nsenter", "-t", PID, "-a", "--"] or ["ssh", ..., "--"]) and speaks JSON lines
with it over its stdin/stdout.  This module never opens a socket itself.

    with HttpAgent(lab.client.transport) as http:
        page = http.get("http://172.25.5.100/")
        assert page.status == 200, page
        stats = http.get(f"http://{vip}:8080/status", auth=("admin", password))
        with http.open_connection(vip, 80) as idle:   # a connection that sends nothing
            ...

Every exchange is appended to HttpAgent.evidence as an Exchange (credentials
redacted) so the report can show what was sent and what came back.
"""

from __future__ import annotations

import base64
import concurrent.futures
import functools
import itertools
import json
import logging
import os
import shlex
import subprocess
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from urllib3 import HTTPHeaderDict, encode_multipart_formdata

from .agent import first_line as page_first_line
from .errors import HaconformError, WaitTimeout
from .readonly_commands import harness_program
from .redaction import redacted_head, register as register_secret
from .timeouts import BOUNDS, documented

log = logging.getLogger("haconform.client")

HeadersArg = Mapping[str, str] | Iterable[tuple[str, str]] | None

# Header values that carry credentials; they never reach evidence or logs.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization"})
REDACTED = "<redacted>"


@functools.cache
def agent_source() -> str:
    """Source of the agent, shipped to the client host on the command line."""
    return Path(__file__).with_name("agent.py").read_text(encoding="utf-8")


# How the agent reaches its host: a launcher taking the agent's argv and returning the whole argv
# (Machine.program, which the target's guard checks), or an argv prefix of the harness's own.
Transport = Callable[[list[str]], list[str]] | list[str]


def goes_through_shell(argv_prefix: list[str]) -> bool:
    """True if the transport joins its arguments into one remote shell command (ssh does)."""
    return any(os.path.basename(arg) == "ssh" for arg in argv_prefix)


def agent_argv(
    argv_prefix: list[str], mode_args: list[str], *, python: str = "python3",
    through_shell: bool | None = None,
) -> list[str]:
    """Command that runs the agent on the client host.

    ssh hands its arguments to the remote shell as one string, so for such
    transports each argument is shell-quoted to arrive intact.
    """
    tail = [python, "-c", agent_source(), *mode_args]
    if goes_through_shell(argv_prefix) if through_shell is None else through_shell:
        tail = [shlex.quote(arg) for arg in tail]
    return [*argv_prefix, *tail]


def basic_auth(user: str, password: str) -> dict[str, str]:
    """An Authorization header for HTTP basic auth (redacted in evidence)."""
    token = base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
    # The token is a form of the password its own registered forms only partly cover: the base64
    # groups at its edges mix in the user and ':'.  An empty password makes no secret.
    if password:
        register_secret(password)
        register_secret(token)
    return {"Authorization": f"Basic {token}"}


def redact_url(url: str) -> str:
    """The URL without user:password@ credentials."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{REDACTED}@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def redact_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((name, REDACTED if name.lower() in SECRET_HEADERS else value)
                 for name, value in headers)


def _header_pairs(headers: HeadersArg) -> list[tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(name), str(value)) for name, value in items]


@dataclass(frozen=True)
class Exchange:
    """One exchange with a server as the report shows it: what was asked, what came back.

    (Not haconform.evidence.Evidence, a test's evidence: HttpAgent.evidence is a list of these.)"""

    at: float                     # time.time() when the reply arrived
    method: str                   # GET, POST, ..., or OPEN/SEND/RECV/CLOSE for raw TCP
    url: str                      # credentials redacted
    status: int | None
    first_line: str
    elapsed: float
    error: str | None = None
    request_headers: tuple[tuple[str, str], ...] = ()  # credentials redacted

    def __str__(self) -> str:
        outcome = self.error or f"{self.status} {self.first_line!r}"
        return f"{self.method} {self.url} -> {outcome} ({self.elapsed:.3f} s)"


@dataclass(frozen=True)
class Response:
    method: str
    url: str                      # credentials redacted
    status: int | None            # None when no response came (see error)
    reason: str
    headers: HTTPHeaderDict       # case-insensitive: headers["content-type"], .getlist()
    body: bytes
    elapsed: float
    error: str | None = None      # "refused: ...", "timeout: ...", ...
    error_kind: str | None = None  # refused, timeout, reset, closed, dns, unreachable, protocol, ...
    truncated: bool = False       # body cut at the agent's cap (1 MiB)
    local_addr: str | None = None
    remote_addr: str | None = None

    @property
    def ok(self) -> bool:
        """A response came and its status is 2xx or 3xx."""
        return self.error is None and self.status is not None and 200 <= self.status < 400

    @property
    def text(self) -> str:
        charset = "utf-8"
        for param in (self.headers.get("content-type") or "").split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.body.decode(charset, "replace")
        except LookupError:
            return self.body.decode("utf-8", "replace")

    @property
    def first_line(self) -> str:
        """First line of the page's text (markup dropped): the real servers' pages name the server."""
        return page_first_line(self.body)

    def __str__(self) -> str:
        outcome = self.error or f"{self.status} {self.reason} {self.first_line!r}"
        return f"{self.method} {self.url} -> {outcome}"


class AgentOpError(HaconformError):
    """An agent operation failed on the network (open refused, send reset, ...)."""

    def __init__(self, what: str, *, kind: str | None, where: str | None = None,
                 fix: str | None = None):
        self.kind = kind
        super().__init__(what, where=where, fix=fix)


class AgentProcess:
    """The agent process on the client host and its three pipes.

    stdout lines are handed to on_line (parsed JSON); on_exit runs once stdout
    ends.  stderr is kept as a short tail for error messages.
    """

    STDERR_TAIL_LINES = 40

    def __init__(self, argv_prefix: Transport, mode_args: list[str], *, python: str,
                 through_shell: bool | None, label: str):
        self.label = label
        if callable(argv_prefix):
            # A machine's launcher (Machine.program): its target's guard sees the agent's own argv first.
            self._argv = argv_prefix([python, "-c", harness_program(
                "python3", agent_source(), "the harness's client agent (HTTP requests and the prober)"),
                *mode_args])
        else:
            self._argv = agent_argv(list(argv_prefix), mode_args, python=python, through_shell=through_shell)
        self._process: subprocess.Popen | None = None
        self._stderr_tail: deque[str] = deque(maxlen=self.STDERR_TAIL_LINES)
        self._write_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def describe(self) -> str:
        """The command line without the agent's source (too long to show)."""
        shown = [arg if arg != agent_source() and len(arg) < 200 else "<agent.py>"
                 for arg in self._argv]
        return shlex.join(shown)

    def start(self, on_line: Callable[[dict], None], on_exit: Callable[[], None]) -> None:
        try:
            self._process = subprocess.Popen(
                self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, bufsize=0)
        except OSError as exc:
            raise HaconformError(
                f"cannot start the client agent: {exc}", where=self.label,
                fix=f"check the client host's command transport: {self.describe()}") from None
        self._threads = [
            threading.Thread(target=self._read_stdout, args=(on_line, on_exit),
                             name=f"agent-stdout-{self.label}", daemon=True),
            threading.Thread(target=self._read_stderr, name=f"agent-stderr-{self.label}",
                             daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self, on_line: Callable[[dict], None], on_exit: Callable[[], None]) -> None:
        assert self._process is not None and self._process.stdout is not None
        try:
            for raw in self._process.stdout:
                try:
                    message = json.loads(raw)
                except ValueError:
                    self._stderr_tail.append(f"(not JSON on stdout) {redacted_head(raw, 200)!r}")
                    continue
                on_line(message)
        finally:
            on_exit()

    def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for raw in self._process.stderr:
            self._stderr_tail.append(raw.decode("utf-8", "replace").rstrip())

    def stderr_tail(self) -> str:
        return " | ".join(self._stderr_tail) or "(agent wrote nothing on stderr)"

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def write_line(self, message: dict) -> None:
        assert self._process is not None and self._process.stdin is not None
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode("utf-8")
        with self._write_lock:
            self._process.stdin.write(data)
            self._process.stdin.flush()

    def close_input(self) -> None:
        if self._process is not None and self._process.stdin is not None:
            with self._write_lock:
                try:
                    self._process.stdin.close()
                except OSError:
                    pass  # the agent is gone already; nothing left to tell it

    def finish(self, timeout: float) -> int | None:
        """Close stdin, wait up to timeout for the agent to exit, kill it otherwise."""
        if self._process is None:
            return None
        self.close_input()
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("client agent on %s did not exit within %.1fs; killing it",
                        self.label, timeout)
            self._process.kill()
            self._process.wait(timeout=timeout)
        # Pipes are at EOF once the process is gone; the readers end promptly.
        for thread in self._threads:
            thread.join(timeout=timeout)
        return self._process.returncode

    def gone_error(self, doing: str) -> HaconformError:
        if self._process is not None and self._process.stderr is not None:
            # Its stderr is at EOF once it died; read it all for the message.
            self._threads[-1].join(timeout=BOUNDS.agent_start)
        return HaconformError(
            f"the client agent exited (code {self.returncode}) while {doing}; "
            f"its stderr: {self.stderr_tail()}",
            where=self.label,
            fix=f"run the agent by hand to see why: {self.describe()}")


class RawConnection:
    """A TCP connection held open by the agent on the client host."""

    def __init__(self, agent: HttpAgent, conn_id: int, host: str, port: int,
                 local_addr: str | None, remote_addr: str | None):
        self._agent = agent
        self.conn_id = conn_id
        self.host = host
        self.port = port
        self.local_addr = local_addr
        self.remote_addr = remote_addr
        self.peer_closed = False    # the other side closed (EOF) or reset the connection
        self.closed = False
        self.url = f"tcp://{host}:{port}"

    def send(self, data: bytes, *, timeout: float | None = None) -> None:
        timeout = BOUNDS.http_request if timeout is None else timeout
        reply = self._agent._raw_op("send", self.url, timeout, conn=self.conn_id,
                                    data_b64=base64.b64encode(data).decode("ascii"))
        self._agent._note("SEND", self.url, f"{len(data)} bytes", reply)
        if reply["error"]:
            if reply["error_kind"] == "reset":
                self.peer_closed = True
            raise AgentOpError(f"send on {self.url} failed: {reply['error']}",
                               kind=reply["error_kind"], where=self._agent.label)

    def recv(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes:
        """Up to max_bytes; b"" if nothing came within timeout (default BOUNDS.http_request) or the
        peer closed (see peer_closed)."""
        timeout = BOUNDS.http_request if timeout is None else timeout
        reply = self._agent._raw_op("recv", self.url, timeout, conn=self.conn_id,
                                    max=max_bytes)
        if reply["error"]:
            self._agent._note("RECV", self.url, "", reply)
            if reply["error_kind"] in ("reset", "closed"):
                self.peer_closed = True
                return b""
            raise AgentOpError(f"recv on {self.url} failed: {reply['error']}",
                               kind=reply["error_kind"], where=self._agent.label)
        data = base64.b64decode(reply.get("data_b64") or "")
        if reply.get("eof"):
            self.peer_closed = True
            summary = "peer closed"
        elif reply.get("timed_out"):
            summary = f"nothing within {timeout:g} s"
        else:
            summary = f"{len(data)} bytes: {page_first_line(data)!r}"
        self._agent._note("RECV", self.url, summary, reply)
        return data

    def recv_until_closed(self, *, timeout: float | None = None) -> bytes:
        """Everything the peer sends until it closes; stops early if it stays silent for timeout
        (default BOUNDS.http_request)."""
        timeout = BOUNDS.http_request if timeout is None else timeout
        chunks = []
        while not self.peer_closed:
            chunk = self.recv(timeout=timeout)
            if not chunk and not self.peer_closed:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        reply = self._agent._raw_op("close", self.url, BOUNDS.http_request, conn=self.conn_id)
        self._agent._note("CLOSE", self.url, "", reply)

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RawConnection({self.url}, local={self.local_addr}, peer_closed={self.peer_closed})"


class HttpAgent:
    """HTTP and raw TCP from the lab's client host, driven from the harness.

    Thread-safe: several harness threads may issue requests at once; the agent
    runs each in its own thread and replies are matched by id.
    """

    def __init__(self, argv_prefix: Transport, python: str = "python3", *,
                 through_shell: bool | None = None, label: str | None = None):
        """argv_prefix: a machine's launcher (Machine.program, guarded: what suites use), or an argv
        prefix of the harness's own (tests: [] runs the agent here)."""
        self.label = label or (("local client agent" if not argv_prefix else shlex.join(argv_prefix))
                               if not callable(argv_prefix) else "client agent")
        self._process = AgentProcess(argv_prefix, ["serve"], python=python,
                                     through_shell=through_shell, label=self.label)
        self.evidence: list[Exchange] = []
        self.host_info: dict[str, Any] = {}   # hostname, pid, python of the agent (from ping)
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._pending_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._started = False
        self._exited = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------

    def start(self) -> HttpAgent:
        if self._started:
            return self
        self._started = True
        self._process.start(self._on_reply, self._on_exit)
        self.ping()
        log.info("client agent up on %s: %s", self.label, self.host_info)
        return self

    def __enter__(self) -> HttpAgent:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Ask the agent to quit (it closes its held connections) and wait for it to go."""
        if self._closed or not self._started:
            self._closed = True
            return
        self._closed = True
        if not self._exited:
            try:
                self._call("quit", bound=BOUNDS.agent_start)
            except (HaconformError, WaitTimeout) as exc:
                log.warning("client agent on %s did not quit cleanly: %s", self.label, exc)
        self._process.finish(BOUNDS.agent_start)

    def ping(self) -> dict[str, Any]:
        """Round trip to the agent; returns its hostname, pid and Python version."""
        reply = self._call("ping", bound=BOUNDS.agent_start)
        self.host_info = {key: reply.get(key) for key in ("hostname", "pid", "python")}
        return self.host_info

    # -- RPC plumbing ----------------------------------------------------

    def _on_reply(self, reply: dict) -> None:
        with self._pending_lock:
            future = self._pending.pop(reply.get("id"), None)
        if future is None:
            log.warning("client agent on %s sent an unexpected line: %.200r", self.label, reply)
            return
        future.set_result(reply)

    def _on_exit(self) -> None:
        self._exited = True
        with self._pending_lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for future in pending:
            future.set_exception(self._process.gone_error("a reply was pending"))

    def _call(self, op: str, *, bound: float, **fields: Any) -> dict:
        """Send one op and wait (at most bound seconds) for its reply."""
        if self._closed and op != "quit":
            raise HaconformError(f"client agent used after close ({op})", where=self.label)
        if not self._started:
            raise HaconformError(f"client agent not started ({op})", where=self.label,
                                 fix="use HttpAgent as a context manager or call start()")
        if self._exited:
            raise self._process.gone_error(f"asked to {op}")
        call_id = next(self._ids)
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._pending_lock:
            self._pending[call_id] = future
        try:
            self._process.write_line({"id": call_id, "op": op, **fields})
        except OSError:
            with self._pending_lock:
                self._pending.pop(call_id, None)
            raise self._process.gone_error(f"sending {op}") from None
        try:
            return future.result(timeout=bound)
        except concurrent.futures.TimeoutError:
            with self._pending_lock:
                self._pending.pop(call_id, None)
            raise WaitTimeout(
                f"timed out after {bound:.1f}s waiting for: the client agent on {self.label} "
                f"to answer {op}; last observed: {self._process.stderr_tail()!r}") from None

    def _note(self, method: str, url: str, first_line: str, reply: dict,
              request_headers: Iterable[tuple[str, str]] = ()) -> Exchange:
        entry = Exchange(at=time.time(), method=method, url=url, status=reply.get("status"),
                         first_line=first_line, elapsed=float(reply.get("elapsed_s") or 0.0),
                         error=reply.get("error"),
                         request_headers=redact_headers(request_headers))
        self.evidence.append(entry)
        log.info("%s", entry)
        return entry

    def _raw_op(self, op: str, url: str, timeout: float, **fields: Any) -> dict:
        return self._call(op, bound=documented(timeout), timeout=timeout, **fields)

    # -- HTTP ------------------------------------------------------------

    def request(self, method: str, url: str, *, headers: HeadersArg = None,
                body: bytes | None = None, auth: tuple[str, str] | None = None,
                timeout: float | None = None) -> Response:
        """One request on a fresh connection from the client host.

        Network failures come back as Response.error / error_kind, never raised:
        a refused or timed-out request is an observation.  Only a broken agent raises.
        """
        timeout = BOUNDS.http_request if timeout is None else timeout   # read when called: a calibration scales it
        pairs = _header_pairs(headers)
        if auth is not None:
            pairs.extend(basic_auth(*auth).items())
        reply = self._call(
            "request", bound=documented(timeout), method=method, url=url,
            headers=pairs, timeout=timeout,
            body_b64=None if body is None else base64.b64encode(body).decode("ascii"))
        shown_url = redact_url(url)
        response = Response(
            method=method, url=shown_url, status=reply.get("status"),
            reason=reply.get("reason") or "",
            headers=HTTPHeaderDict(reply.get("headers") or []),
            body=base64.b64decode(reply.get("body_b64") or ""),
            elapsed=float(reply.get("elapsed_s") or 0.0),
            error=reply.get("error"), error_kind=reply.get("error_kind"),
            truncated=bool(reply.get("truncated")),
            local_addr=reply.get("local_addr"), remote_addr=reply.get("remote_addr"))
        self._note(method, shown_url, response.first_line, reply, pairs)
        return response

    def get(self, url: str, **kwargs: Any) -> Response:
        return self.request("GET", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> Response:
        return self.request("HEAD", url, **kwargs)

    def post(self, url: str, body: bytes | None = None, **kwargs: Any) -> Response:
        return self.request("POST", url, body=body, **kwargs)

    def put(self, url: str, body: bytes | None = None, **kwargs: Any) -> Response:
        return self.request("PUT", url, body=body, **kwargs)

    def post_multipart(self, url: str, fields: Mapping[str, str] | None = None,
                       files: Mapping[str, tuple[str, bytes, str]] | None = None, *,
                       headers: HeadersArg = None, **kwargs: Any) -> Response:
        """POST a multipart/form-data form; files maps field name -> (filename, data, content type)."""
        fields = dict(fields or {})
        files = dict(files or {})
        clash = fields.keys() & files.keys()
        if clash:
            raise ValueError(f"form field names used twice: {sorted(clash)}")
        body, content_type = encode_multipart_formdata({**fields, **files})
        pairs = [(name, value) for name, value in _header_pairs(headers)
                 if name.lower() != "content-type"]
        pairs.append(("Content-Type", content_type))
        return self.request("POST", url, headers=pairs, body=body, **kwargs)

    # -- raw TCP ---------------------------------------------------------

    def open_connection(self, host: str, port: int, *,
                        timeout: float | None = None) -> RawConnection:
        """Open a TCP connection from the client host and hold it; raises AgentOpError if refused."""
        timeout = BOUNDS.http_request if timeout is None else timeout   # read when called: a calibration scales it
        url = f"tcp://{host}:{port}"
        reply = self._raw_op("open", url, timeout, host=host, port=int(port))
        self._note("OPEN", url, f"local {reply.get('local_addr')}", reply)
        if reply["error"]:
            raise AgentOpError(f"cannot open {url} from the client host: {reply['error']}",
                               kind=reply["error_kind"], where=self.label)
        return RawConnection(self, reply["conn"], host, int(port),
                             reply.get("local_addr"), reply.get("remote_addr"))

    def __repr__(self) -> str:
        return f"HttpAgent({self.label!r}, host={self.host_info.get('hostname')!r})"
