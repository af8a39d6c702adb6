"""A fence daemon that answers Debian's real fence_xvm (fence_virtd's multicast listener).

The lab's fence host has no libvirt: this daemon speaks fence_virtd's side of
the protocol (see protocol.py) and acts on the lab's hosts through a
PowerControl.  Its behaviour follows fence_virtd's multicast listener
(server/mcast.c) and libvirt backend (server/libvirt.c, virt.c):

- datagrams with a wrong key, a weaker hash than configured, or a bad shape
  get no answer at all;
- a request with the same operation, seqno and domain answered in the last
  HISTORY_WINDOW seconds is dropped (fence_xvm repeats its datagram; this is
  also all the replay protection fence_virtd has);
- requests are served one at a time, in arrival order, like fence_virtd's
  single dispatch loop: of two directors fencing each other in a split brain,
  the first request served wins and the loser's own request then finds no one
  to call back;
- the receiving thread never waits on a power action: it verifies and queues,
  and one worker thread calls back, authenticates and acts;
- result codes are the libvirt backend's: null -> fail, monitor -> success,
  status of an unknown domain -> off, off/on of a domain already in that state
  -> success without acting, reboot of a powered-off domain -> success without
  acting ("reboot-action does not power on nodes that are powered off").

Sockets are made by an injected factory, so the lab can create them inside
the fence host's network namespace while this process stays in the root one.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import fcntl
import importlib
import json
import logging
import os
import queue
import select
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol, runtime_checkable

from ..errors import HaconformError
from ..timeouts import BOUNDS
from . import protocol
from .protocol import DOMAIN_RUNNING, DOMAIN_SHUTOFF, Hash, HostEntry, Op, Refused, Request, Result

log = logging.getLogger("haconform.fence")

PowerState = Literal["on", "off"]


@dataclass(frozen=True)
class Domain:
    """A host as the fence device knows it: libvirt name (Node1), UUID, power state."""

    name: str
    uuid: str
    state: PowerState


@runtime_checkable
class PowerControl(Protocol):
    """What the daemon acts through; the lab implements it.

    on() returns once the host's start has been issued (as virDomainCreate
    returns once the guest runs, not once it has booted).  reboot() is off
    then on and returns when both are issued; fence_virtd's libvirt backend
    answers a reboot after destroying and re-creating the domain.  Report a
    crashed but powered host as 'on': the daemon (like fence_virtd) does
    nothing for a reboot of a host that is 'off'.  Raising from any method
    makes that request answer RESP_FAIL.
    """

    def domains(self) -> list[Domain]: ...
    def status(self, name: str) -> PowerState: ...
    def on(self, name: str) -> None: ...
    def off(self, name: str) -> None: ...
    def reboot(self, name: str) -> None: ...


SocketFactory = Callable[..., socket.socket]

_SIOCGIFINDEX = 0x8933
_IFREQ = struct.Struct("16si20x")


def _interface_index(sock: socket.socket, name: str) -> int:
    """Interface index as seen from the socket's own network namespace.

    socket.if_nametoindex() would look in this process's namespace, which is
    not where the lab's sockets live.
    """
    request = _IFREQ.pack(name.encode(), 0)
    try:
        answer = fcntl.ioctl(sock.fileno(), _SIOCGIFINDEX, request)
    except OSError as exc:
        raise HaconformError(f"no interface {name!r} where the fence socket lives ({exc.strerror})",
                             fix="name an interface of the fence host's namespace") from None
    return _IFREQ.unpack(answer)[1]


_CLONE_NEWNET = 0x40000000


def netns_socket_factory(netns_path: str) -> SocketFactory:
    """A socket factory whose sockets live in the network namespace at netns_path.

    netns_path is /run/netns/NAME or /proc/PID/ns/net.  Each socket is made by
    a short-lived thread that enters the namespace (setns only moves the
    calling thread), so this process and its other threads stay where they are.
    """
    libc = ctypes.CDLL(None, use_errno=True)

    def make_socket(family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
                    proto: int = 0) -> socket.socket:
        outcome: dict[str, Any] = {}

        def create_inside() -> None:
            try:
                with open(netns_path, "rb") as namespace:
                    if libc.setns(namespace.fileno(), _CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns({netns_path}): {os.strerror(err)}")
                outcome["socket"] = socket.socket(family, type, proto)
            except BaseException as exc:  # handed to the caller's thread
                outcome["error"] = exc

        maker = threading.Thread(target=create_inside, name="netns-socket", daemon=True)
        maker.start()
        maker.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["socket"]

    return make_socket


class _History:
    """fence_virtd's history: (operation, seqno, domain) answered recently."""

    def __init__(self, window: float, clock: Callable[[], float]):
        self.window = window
        self.clock = clock
        self._answered: list[tuple[float, int, int, str]] = []

    def answered_ago(self, request: Request) -> float | None:
        now = self.clock()
        self._answered = [entry for entry in self._answered if now - entry[0] <= self.window]
        for when, op, seqno, domain in self._answered:
            if op == request.op and seqno == request.seqno and domain.lower() == request.domain.lower():
                return now - when
        return None

    def record(self, request: Request) -> None:
        self._answered.append((self.clock(), request.op, request.seqno, request.domain))


@dataclass
class _Outcome:
    reply: bytes
    result: str
    code: int
    reason: str | None = None
    target: str | None = None
    hosts: list[str] | None = None


class FenceDaemon:
    """fence_virtd's multicast listener and libvirt backend, over a PowerControl.

        daemon = FenceDaemon("/etc/cluster/fence_xvm.key", power,
                             socket_factory=netns_socket_factory("/run/netns/fence"),
                             interface_address="172.25.5.250",
                             request_log="/var/log/haconform/fence-requests.jsonl")
        daemon.start()      # or serve_forever() in the foreground
        ...
        daemon.stop()

    requests holds one dict per datagram received (the same records as the
    JSON lines appended to request_log).  The key is read once, here, and
    never logged.
    """

    def __init__(
        self,
        key_path: str,
        power: PowerControl,
        *,
        socket_factory: SocketFactory = socket.socket,
        mcast_address: str = protocol.MCAST_ADDRESS,
        port: int = protocol.PORT,
        interface_address: str | None = None,
        interface: str | None = None,
        request_log: str | None = None,
        hash_minimum: Hash = protocol.DEFAULT_HASH,
        auth: Hash = protocol.DEFAULT_AUTH,
        history_window: float = protocol.HISTORY_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.key_path = key_path
        self.power = power
        self.socket_factory = socket_factory
        self.mcast_address = mcast_address
        self.port = port
        self.interface_address = interface_address
        self.interface = interface
        self.request_log_path = request_log
        self.hash_minimum = Hash(hash_minimum)
        self.auth = Hash(auth)
        self.requests: list[dict[str, Any]] = []
        self._key = self._load_key(key_path) if (self.auth or self.hash_minimum) else b""
        self._history = _History(history_window, clock)
        self._log_lock = threading.Lock()
        self._queue: queue.Queue[tuple[Request, str, float] | None] = queue.Queue()
        self._mcast_socket: socket.socket | None = None
        self._wake_read, self._wake_write = -1, -1
        self._stopping = threading.Event()
        self._close_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._worker: threading.Thread | None = None

    def __repr__(self) -> str:  # no key material, ever
        return (f"FenceDaemon(group={self.mcast_address}:{self.port}, "
                f"interface={self.interface or self.interface_address or 'any'}, key_path={self.key_path!r})")

    @staticmethod
    def _load_key(path: str) -> bytes:
        fix = f"create it as the runbook does: dd if=/dev/urandom of={path} bs=128 count=1"
        try:
            key = protocol.read_key(path)
        except OSError as exc:
            raise HaconformError(f"cannot read the fence key ({exc.strerror})", where=path, fix=fix) from None
        if not key:
            raise HaconformError("the fence key file is empty", where=path, fix=fix)
        return key

    # --- lifecycle ---

    def _open(self) -> None:
        if self._mcast_socket is not None:
            raise HaconformError("fence daemon already started", where=repr(self))
        try:
            sock = self.socket_factory(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        except OSError as exc:
            raise HaconformError(f"cannot create the fence daemon's socket ({exc})", where=repr(self),
                                 fix="check that the fence host's network namespace exists") from None
        try:
            ifindex = _interface_index(sock, self.interface) if self.interface else 0
            sock.bind((self.mcast_address, self.port))
            membership = struct.pack(
                "4s4si",
                socket.inet_aton(self.mcast_address),
                socket.inet_aton(self.interface_address or "0.0.0.0"),
                ifindex,
            )
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        except OSError as exc:
            sock.close()
            raise HaconformError(
                f"cannot listen for fence requests on {self.mcast_address}:{self.port} ({exc.strerror})",
                where=repr(self),
                fix="check that the interface exists, is up, has MULTICAST and a route to 224.0.0.0/4, "
                    "and that nothing else holds the port",
            ) from None
        except BaseException:
            sock.close()
            raise
        self._mcast_socket = sock
        self._wake_read, self._wake_write = os.pipe()
        self._queue = queue.Queue()
        self._stopping.clear()
        self._worker = threading.Thread(target=self._work, name="fence-worker", daemon=True)
        self._worker.start()
        log.info("fence daemon listening: %r", self)

    def start(self) -> None:
        """Listen and serve in background threads; returns once the socket is joined to the group."""
        self._open()
        self._listener = threading.Thread(target=self._listen, name="fence-listener", daemon=True)
        self._listener.start()

    def serve_forever(self) -> None:
        """Listen in the calling thread until stop() (from a signal handler or another thread)."""
        self._open()
        self._listener = threading.current_thread()
        try:
            self._listen()
        finally:
            self._stopping.set()
            self._finish(BOUNDS.fence_request)

    def stop(self, timeout: float | None = None) -> None:
        """Stop listening, let a request being served finish (up to timeout, default
        BOUNDS.fence_request), close the socket."""
        timeout = BOUNDS.fence_request if timeout is None else timeout
        if self._mcast_socket is None:
            return
        self._stopping.set()
        try:
            os.write(self._wake_write, b"x")
        except OSError:
            pass
        listener = self._listener
        if listener is threading.current_thread():
            return  # a signal handler inside serve_forever(): its finally clause shuts down
        if listener is not None:
            listener.join(timeout)
        self._finish(timeout)

    def _finish(self, timeout: float) -> None:
        with self._close_lock:
            if self._mcast_socket is None:
                return
            worker = self._worker
            self._queue.put(None)
            if worker is not None and worker is not threading.current_thread():
                worker.join(timeout)
                if worker.is_alive():
                    log.warning("fence worker still busy after %.1fs; left to finish on its own", timeout)
            self._mcast_socket.close()
            self._mcast_socket = None
            for fd in (self._wake_read, self._wake_write):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._wake_read = self._wake_write = -1
            self._listener = None
            self._worker = None

    def __enter__(self) -> "FenceDaemon":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- receiving ---

    def _listen(self) -> None:
        sock, wake = self._mcast_socket, self._wake_read
        while sock is not None and not self._stopping.is_set():
            try:
                ready, _, _ = select.select([sock, wake], [], [])
            except (OSError, ValueError):  # closed under us by a stop() from elsewhere
                break
            if wake in ready or self._stopping.is_set():
                break
            try:
                datagram, (source, _source_port) = sock.recvfrom(2048)
            except OSError as exc:
                log.warning("fence listener: recvfrom failed: %s", exc)
                continue
            self._receive(datagram, source, time.monotonic())

    def _receive(self, datagram: bytes, source: str, received: float) -> None:
        try:
            request = protocol.verify(datagram, self._key, self.hash_minimum)
        except Refused as refusal:
            self._record(source, refusal.request, received, result="refused", reason=refusal.reason)
            return
        self._queue.put((request, source, received))

    # --- serving (one at a time, as fence_virtd) ---

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            request, source, received = item
            try:
                self._serve(request, source, received)
            except Exception as exc:  # one bad request must not end the daemon
                log.exception("fence request from %s failed", source)
                self._record(source, request, received, result="error", reason=f"{type(exc).__name__}: {exc}")

    def _serve(self, request: Request, source: str, received: float) -> None:
        ago = self._history.answered_ago(request)
        if ago is not None:
            self._record(source, request, received, result="refused",
                         reason=f"replay: the same request was answered {ago:.1f}s ago "
                                f"(dropped for {self._history.window:g}s, as fence_virtd)")
            return
        try:
            conn = self._call_back(request)
        except OSError as exc:
            self._record(source, request, received, result="unanswered",
                         reason=f"cannot call back {request.address}:{request.port}: {exc.strerror or exc}")
            return
        try:
            try:
                conn.settimeout(protocol.EXCHANGE_TIMEOUT)
                protocol.answer_challenge(conn, self.auth, self._key)
                proven = protocol.issue_challenge(conn, self.auth, self._key)
            except (OSError, protocol.ProtocolError) as exc:
                self._record(source, request, received, result="unanswered",
                             reason=f"challenge-response with {request.address}:{request.port} broke off: {exc}")
                return
            if not proven:
                self._record(source, request, received, result="refused",
                             reason="the caller failed our challenge (it does not hold our key)")
                return
            outcome = self._act(request)
            try:
                conn.sendall(outcome.reply)
            except OSError as exc:
                outcome.reason = (outcome.reason + "; " if outcome.reason else "") + f"reply not delivered: {exc}"
        finally:
            conn.close()
        self._history.record(request)
        self._record(source, request, received, result=outcome.result, code=outcome.code,
                     reason=outcome.reason, target=outcome.target, hosts=outcome.hosts)

    def _call_back(self, request: Request) -> socket.socket:
        conn = self.socket_factory(request.family, socket.SOCK_STREAM, 0)
        try:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            conn.settimeout(protocol.CONNECT_TIMEOUT)
            conn.connect((request.address, request.port))
        except OSError:
            conn.close()
            raise
        return conn

    # --- the libvirt backend's answers, over PowerControl ---

    def _find(self, wanted: str) -> Domain | None:
        """By UUID if it reads as one (virt.c uses is_uuid(), not the -u flag), else by exact name."""
        domains = self.power.domains()
        if protocol.is_uuid(wanted):
            return next((d for d in domains if d.uuid.lower() == wanted.lower()), None)
        return next((d for d in domains if d.name == wanted), None)

    def _act(self, request: Request) -> _Outcome:
        def answer(code: Result, reason: str | None = None, target: str | None = None) -> _Outcome:
            return _Outcome(bytes([code]), code.name.lower(), int(code), reason, target)

        try:
            op = Op(request.op)
        except ValueError:
            return answer(Result.FAIL, f"unknown operation {request.op}")
        if op == Op.NULL:
            return answer(Result.FAIL, "null: fence_virtd's libvirt backend answers failure")
        if op == Op.DEVSTATUS:
            return answer(Result.SUCCESS)
        if op == Op.HOSTLIST:
            try:
                domains = self.power.domains()
            except Exception as exc:
                return answer(Result.FAIL, f"domains() raised {type(exc).__name__}: {exc}")
            entries = [HostEntry(d.name, d.uuid, DOMAIN_RUNNING if d.state == "on" else DOMAIN_SHUTOFF)
                       for d in domains]
            outcome = answer(Result.SUCCESS)
            outcome.reply = protocol.host_list_reply(entries)
            outcome.hosts = sorted((d.name for d in domains), key=str.lower)
            return outcome

        try:
            domain = self._find(request.domain)
        except Exception as exc:
            return answer(Result.FAIL, f"domains() raised {type(exc).__name__}: {exc}")
        if domain is None:
            if op == Op.STATUS:
                return answer(Result.OFF, "unknown domain: fence_virtd reports it off")
            return answer(Result.FAIL, "unknown domain")
        name = domain.name
        try:
            state = self.power.status(name)
            if op == Op.STATUS:
                return answer(Result.OFF if state == "off" else Result.SUCCESS, target=name)
            if op == Op.OFF:
                if state == "off":
                    return answer(Result.SUCCESS, "already off: nothing to do", name)
                self.power.off(name)
            elif op == Op.ON:
                if state == "on":
                    return answer(Result.SUCCESS, "already on: nothing to do", name)
                self.power.on(name)
            elif op == Op.REBOOT:
                if state == "off":
                    return answer(Result.SUCCESS, "off: reboot does not power on a host that is off", name)
                self.power.reboot(name)
        except Exception as exc:
            return answer(Result.FAIL, f"{op.action} of {name} raised {type(exc).__name__}: {exc}", name)
        return answer(Result.SUCCESS, target=name)

    # --- the request log ---

    def _record(self, source: str, request: Request | None, received: float, *, result: str,
                code: int | None = None, reason: str | None = None, target: str | None = None,
                hosts: list[str] | None = None) -> None:
        entry: dict[str, Any] = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "source": source,
            "operation": request.action if request else None,
            "domain": request.domain if request else None,
            "seqno": request.seqno if request else None,
            "hash": _hash_label(request.hash_type) if request else None,
            "reply_to": f"{request.address}:{request.port}" if request else None,
            "result": result,
            "code": code,
            "seconds": round(time.monotonic() - received, 3),
        }
        if target is not None and request is not None and target != request.domain:
            entry["target"] = target
        if hosts is not None:
            entry["hosts"] = hosts
        if reason:
            entry["reason"] = reason
        line = json.dumps(entry, sort_keys=False)
        with self._log_lock:
            self.requests.append(entry)
            if self.request_log_path:
                with open(self.request_log_path, "a", encoding="utf-8") as log_file:
                    log_file.write(line + "\n")
        log.info("fence request: %s", line)


def _hash_label(code: int) -> str:
    try:
        return Hash(code).label
    except ValueError:
        return f"unknown({code})"


# --- command line ---

def _parse_map(text: str | None) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in filter(None, (text or "").split(",")):
        domain, sep, host = pair.partition("=")
        if not sep or not domain.strip() or not host.strip():
            raise HaconformError(f"bad --map entry {pair!r}", fix="write DOMAIN=HOST[,DOMAIN=HOST...], e.g. Node1=server1")
        mapping[domain.strip()] = host.strip()
    return mapping


def _load_power(spec: str, mapping: dict[str, str]) -> PowerControl:
    module_name, sep, factory_name = spec.partition(":")
    if not sep:
        raise HaconformError(f"bad --power-module {spec!r}", fix="write MODULE:FACTORY")
    factory = getattr(importlib.import_module(module_name), factory_name)
    return factory(mapping) if mapping else factory()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m haconform.fence.daemon",
        description="Answer fence_xvm requests (fence_virtd's multicast protocol) through a PowerControl.")
    parser.add_argument("--key", default=protocol.DEFAULT_KEY_FILE, help="shared key file (default %(default)s)")
    parser.add_argument("--power-module", required=True, metavar="MODULE:FACTORY",
                        help="FACTORY(mapping) or FACTORY() returns the PowerControl")
    parser.add_argument("--map", metavar="DOMAIN=HOST,...", help="passed to the factory, e.g. Node1=server1,Node4=server4")
    parser.add_argument("--multicast-address", default=protocol.MCAST_ADDRESS)
    parser.add_argument("--port", type=int, default=protocol.PORT)
    parser.add_argument("--listen-address", "--interface-address", dest="interface_address",
                        help="address of the interface to join the group on")
    parser.add_argument("--interface", help="interface name to join the group on")
    parser.add_argument("--netns", metavar="PATH", help="create the sockets in this network namespace "
                                                        "(/run/netns/NAME or /proc/PID/ns/net)")
    parser.add_argument("--hash", default=protocol.DEFAULT_HASH.label, help="weakest request hash accepted")
    parser.add_argument("--auth", default=protocol.DEFAULT_AUTH.label, help="challenge-response hash")
    parser.add_argument("--log", metavar="FILE", help="append one JSON line per request")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    try:
        daemon = FenceDaemon(
            args.key, _load_power(args.power_module, _parse_map(args.map)),
            socket_factory=netns_socket_factory(args.netns) if args.netns else socket.socket,
            mcast_address=args.multicast_address, port=args.port,
            interface_address=args.interface_address, interface=args.interface,
            request_log=args.log, hash_minimum=Hash.parse(args.hash), auth=Hash.parse(args.auth),
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: daemon.stop())
        daemon.serve_forever()
    except HaconformError as exc:
        parser.exit(2, f"fence daemon: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
