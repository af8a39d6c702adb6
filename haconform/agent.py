"""haconform client agent: runs INSIDE the lab's client host, never in the harness.

Lab traffic must come from the client host (a network namespace, a VM, a remote
machine), so the harness ships this file as source and runs it there:

    <transport prefix> python3 -c <this source> serve
    <transport prefix> python3 -c <this source> probe URL --interval-ms 100 --duration S

Standard library only and no haconform imports: the client host may have
nothing but a Python 3 interpreter.  Kept compatible with Python 3.7.

serve: JSON lines on stdin, one JSON reply line per request on stdout, in the
order the replies are ready (match them by "id").  Every op runs in its own
thread so a slow request does not hold up a held-open connection's traffic.
Network failures (refused, timeout, reset) are replies, never a crash.

probe: one request per grid slot, one JSON line per slot on stdout.  Both modes
end when stdin closes, so the harness closing its pipe is enough to clean up.
"""

import argparse
import base64
import html
import http.client
import json
import os
import re
import socket
import ssl
import sys
import threading
import time
import urllib.parse

# Bigger bodies are cut: the harness needs page names and status pages, not
# downloads, and one reply line must stay small.
BODY_CAP = 1 << 20
# The probe only needs the first line of the page (it names the real server).
PROBE_BODY_CAP = 4096
FIRST_LINE_CAP = 200
DEFAULT_TIMEOUT = 5.0


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def _unb64(text):
    return base64.b64decode(text.encode("ascii")) if text else b""


def _addr(sockaddr):
    host, port = sockaddr[0], sockaddr[1]
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def classify_error(exc):
    """Return (kind, message) for a network failure; kind is a stable word."""
    # RemoteDisconnected subclasses ConnectionResetError: test it first.
    if isinstance(exc, http.client.RemoteDisconnected):
        kind = "closed"
    elif isinstance(exc, (socket.timeout, TimeoutError)):
        kind = "timeout"
    elif isinstance(exc, ConnectionRefusedError):
        kind = "refused"
    elif isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        kind = "reset"
    elif isinstance(exc, socket.gaierror):
        kind = "dns"
    elif isinstance(exc, http.client.HTTPException):
        kind = "protocol"
    elif isinstance(exc, OSError) and exc.errno in (101, 113):  # ENETUNREACH, EHOSTUNREACH
        kind = "unreachable"
    elif isinstance(exc, ValueError):
        kind = "invalid"
    else:
        kind = "error"
    return kind, "%s: %s: %s" % (kind, type(exc).__name__, exc)


_MARKUP = re.compile(r"<[^>]*>")


def first_line(body):
    """First non-blank line of a page's text, stripped and capped.

    Markup is dropped first, so "<html><body><h1>server2</h1>" reads "server2"
    and HAProxy's error page reads "503 Service Unavailable".
    """
    text = html.unescape(_MARKUP.sub(" ", body.decode("utf-8", "replace")))
    for line in text.splitlines():
        line = " ".join(line.split())
        if line:
            return line[:FIRST_LINE_CAP]
    return ""


def _connection_for(url, timeout):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL: %r" % url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if parts.scheme == "https":
        # The lab's certificates (if any) are throwaway; the harness checks
        # behaviour, not a PKI.
        context = ssl._create_unverified_context()
        conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443,
                                           timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    return conn, path


def http_request(method, url, headers=(), body=None, timeout=DEFAULT_TIMEOUT, body_cap=BODY_CAP):
    """One HTTP exchange on a fresh TCP connection; returns a reply dict.

    The connection is closed afterwards and "Connection: close" is sent unless
    the caller set Connection: per-connection balancing stays observable.
    """
    started = time.monotonic()
    deadline = started + timeout
    reply = {
        "status": None, "reason": "", "headers": [], "body_b64": "", "truncated": False,
        "elapsed_s": 0.0, "local_addr": None, "remote_addr": None,
        "error": None, "error_kind": None,
    }
    conn = None
    try:
        conn, path = _connection_for(url, timeout)
        conn.connect()
        # With "Connection: close" http.client drops conn.sock once the
        # response arrives; the response still reads from this socket.
        sock = conn.sock
        reply["local_addr"] = _addr(sock.getsockname())
        reply["remote_addr"] = _addr(sock.getpeername())
        headers = [(str(k), str(v)) for k, v in headers]
        names = set(k.lower() for k, _ in headers)
        if "connection" not in names:
            headers.append(("Connection", "close"))
        if "content-length" not in names and "transfer-encoding" not in names:
            if body is not None or method.upper() in ("POST", "PUT", "PATCH"):
                headers.append(("Content-Length", str(len(body or b""))))
        conn.putrequest(method, path, skip_host="host" in names,
                        skip_accept_encoding="accept-encoding" in names)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        reply["status"] = response.status
        reply["reason"] = response.reason
        reply["headers"] = [[k, v] for k, v in response.getheaders()]
        chunks = []
        size = 0
        # The response closes the socket itself once the body is complete.
        while not response.isclosed():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("body not complete within %.1fs" % timeout)
            sock.settimeout(remaining)
            chunk = response.read(min(65536, body_cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > body_cap:
                reply["truncated"] = True
                break
        reply["body_b64"] = _b64(b"".join(chunks)[:body_cap])
    except Exception as exc:  # every failure is an observation for the harness
        reply["error_kind"], reply["error"] = classify_error(exc)
    finally:
        reply["elapsed_s"] = round(time.monotonic() - started, 6)
        if conn is not None:
            conn.close()
    return reply


class RawConnections:
    """TCP connections held open between ops (leastconn, dontlognull, idle timeouts)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._next_id = 1
        self._sockets = {}

    def _get(self, conn_id):
        with self._lock:
            sock = self._sockets.get(conn_id)
        if sock is None:
            raise ValueError("unknown connection %r" % conn_id)
        return sock

    def open(self, host, port, timeout=DEFAULT_TIMEOUT):
        sock = socket.create_connection((host, int(port)), timeout=timeout)
        with self._lock:
            conn_id = self._next_id
            self._next_id += 1
            self._sockets[conn_id] = sock
        return {"conn": conn_id, "local_addr": _addr(sock.getsockname()),
                "remote_addr": _addr(sock.getpeername())}

    def send(self, conn_id, data, timeout=DEFAULT_TIMEOUT):
        sock = self._get(conn_id)
        sock.settimeout(timeout)
        sock.sendall(data)
        return {"sent": len(data)}

    def recv(self, conn_id, max_bytes=65536, timeout=DEFAULT_TIMEOUT):
        sock = self._get(conn_id)
        sock.settimeout(timeout)
        try:
            data = sock.recv(int(max_bytes))
        except (socket.timeout, TimeoutError):
            # Nothing arrived in time: the usual answer for an idle connection.
            return {"data_b64": "", "eof": False, "timed_out": True}
        return {"data_b64": _b64(data), "eof": data == b"", "timed_out": False}

    def close(self, conn_id):
        with self._lock:
            sock = self._sockets.pop(conn_id, None)
        if sock is not None:
            sock.close()
        return {"closed": sock is not None}

    def close_all(self):
        with self._lock:
            sockets = list(self._sockets.values())
            self._sockets.clear()
        for sock in sockets:
            sock.close()


class LineWriter:
    """Whole JSON lines to a stream, one writer at a time, flushed at once."""

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, obj):
        line = json.dumps(obj, separators=(",", ":"), sort_keys=True) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


def _handle(msg, raw, out):
    op = msg.get("op")
    reply = {"id": msg.get("id"), "op": op, "error": None, "error_kind": None}
    try:
        if op == "ping":
            reply.update(pong=True, pid=os.getpid(), hostname=socket.gethostname(),
                         python=sys.version.split()[0])
        elif op == "request":
            reply.update(http_request(
                msg.get("method", "GET"), msg["url"],
                headers=msg.get("headers") or [],
                body=_unb64(msg["body_b64"]) if msg.get("body_b64") is not None else None,
                timeout=float(msg.get("timeout", DEFAULT_TIMEOUT)),
                body_cap=int(msg.get("body_cap", BODY_CAP))))
        elif op == "open":
            reply.update(raw.open(msg["host"], msg["port"],
                                  float(msg.get("timeout", DEFAULT_TIMEOUT))))
        elif op == "send":
            reply.update(raw.send(msg["conn"], _unb64(msg.get("data_b64", "")),
                                  float(msg.get("timeout", DEFAULT_TIMEOUT))))
        elif op == "recv":
            reply.update(raw.recv(msg["conn"], msg.get("max", 65536),
                                  float(msg.get("timeout", DEFAULT_TIMEOUT))))
        elif op == "close":
            reply.update(raw.close(msg["conn"]))
        else:
            raise ValueError("unknown op %r" % op)
    except Exception as exc:
        reply["error_kind"], reply["error"] = classify_error(exc)
    out.write(reply)


def serve(stdin, out):
    raw = RawConnections()
    in_flight = []
    try:
        while True:
            line = stdin.readline()
            if not line:
                break  # the harness closed the pipe: time to go
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line.decode("utf-8"))
                if not isinstance(msg, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                out.write({"id": None, "op": None, "error": "invalid: bad request line: %s" % exc,
                           "error_kind": "invalid"})
                continue
            if msg.get("op") == "quit":
                out.write({"id": msg.get("id"), "op": "quit", "error": None, "error_kind": None})
                break
            handler = threading.Thread(target=_handle, args=(msg, raw, out), daemon=True)
            handler.start()
            in_flight = [t for t in in_flight if t.is_alive()] + [handler]
        # Replies already asked for are still owed; each op ends by its own timeout.
        for handler in in_flight:
            handler.join()
    finally:
        raw.close_all()
    return 0


def probe_url(url, seq):
    base = url.split("#", 1)[0]
    return base + ("&" if "?" in base else "?") + "probe=%d" % seq


def _header_value(pairs, name):
    if name:
        for key, value in pairs:
            if key.lower() == name.lower():
                return value
    return None


def probe_once(url, seq, t_slot, timeout, server_header=None):
    t_sent = time.time()
    reply = http_request("GET", probe_url(url, seq), timeout=timeout, body_cap=PROBE_BODY_CAP)
    status = reply["status"]
    local = reply["local_addr"]
    return {
        "seq": seq, "t_slot": t_slot, "t_sent": t_sent, "t_done": time.time(),
        "skipped": False,
        "ok": reply["error"] is None and status is not None and 200 <= status < 400,
        "status": status,
        "first_line": first_line(_unb64(reply["body_b64"])),
        "error": reply["error"], "error_kind": reply["error_kind"],
        "local_port": int(local.rsplit(":", 1)[1]) if local else None,
        "server_header": _header_value(reply["headers"], server_header),
    }


def probe(url, interval_s, duration_s, timeout, stdin, out, server_header=None):
    """Fire one GET per grid slot until duration_s passes or stdin closes.

    Slots sit on a fixed grid (t0 + seq * interval): a slow request does not
    shift later slots.  At most one request is in flight; a slot that comes
    while one is still running is written as skipped, so the record shows both
    the outage and how much the prober could not see.
    """
    stop = threading.Event()

    def watch_stdin():
        # os.read, not the buffered stdin: a daemon thread blocked inside
        # BufferedReader aborts interpreter shutdown.
        while os.read(stdin.fileno(), 4096):
            pass
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    busy = threading.Event()
    worker = None

    def run(seq, t_slot):
        try:
            out.write(probe_once(url, seq, t_slot, timeout, server_header))
        finally:
            busy.clear()

    t0_mono = time.monotonic()
    t0_wall = time.time()
    end_mono = t0_mono + duration_s
    seq = 0
    while not stop.is_set():
        slot_mono = t0_mono + seq * interval_s
        if slot_mono >= end_mono:
            break
        delay = slot_mono - time.monotonic()
        if delay > 0 and stop.wait(delay):
            break
        t_slot = t0_wall + seq * interval_s
        if busy.is_set():
            out.write({"seq": seq, "t_slot": t_slot, "t_sent": time.time(), "t_done": None,
                       "skipped": True, "ok": False, "status": None, "first_line": "",
                       "error": None, "error_kind": None, "local_port": None,
                       "server_header": None})
        else:
            busy.set()
            worker = threading.Thread(target=run, args=(seq, t_slot), daemon=True)
            worker.start()
        seq += 1
    if worker is not None:
        # Let the last request report; it ends by its own timeout.
        worker.join(timeout + 1.0)
    out.write({"done": True, "slots": seq})
    return 0


def main(argv):
    parser = argparse.ArgumentParser(prog="haconform-agent")
    modes = parser.add_subparsers(dest="mode")
    modes.required = True
    modes.add_parser("serve")
    probe_args = modes.add_parser("probe")
    probe_args.add_argument("url")
    probe_args.add_argument("--interval-ms", type=float, default=100.0)
    probe_args.add_argument("--duration", type=float, required=True)
    probe_args.add_argument("--timeout", type=float, default=1.0)
    # A response header naming the real server (more robust than the page text).
    probe_args.add_argument("--server-header", default=None)
    args = parser.parse_args(argv)
    # Our stdout carries only protocol lines; anything printed by accident goes to stderr.
    out = LineWriter(sys.stdout)
    sys.stdout = sys.stderr
    stdin = sys.stdin.buffer
    if args.mode == "serve":
        return serve(stdin, out)
    return probe(args.url, args.interval_ms / 1000.0, args.duration, args.timeout, stdin, out,
                 args.server_header)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
