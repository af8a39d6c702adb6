"""fence_xvm's wire protocol, as fence-virt 4.x speaks it (no I/O policy here).

Read from ClusterLabs/fence-agents, agents/virt: include/xvm.h (structures,
codes, defaults), common/simple_auth.c (signing and challenge-response),
client/mcast.c (what fence_xvm sends and how it reads the answer) and
server/mcast.c (what fence_virtd answers, in which order).

One fence request:

1. fence_xvm listens on TCP PORT, then multicasts a 176-byte fence_req_t to
   MCAST_ADDRESS:PORT once per local address, signed with the shared key:
   digest = H(key || request-with-digest-zeroed), zero-padded to 64 bytes.
2. The fence daemon checks the signature (and that the hash is at least as
   strong as its own setting), then connects back to the address and port
   written in the request.
3. On that connection the client challenges first and the daemon answers,
   then the daemon challenges and the client answers: 64 random bytes in,
   H(key || challenge) zero-padded to 64 bytes back.
4. The daemon acts and writes one result byte; for a host list it writes
   RESP_HOSTLIST, one 130-byte host_state_t per domain, an all-zero
   terminator record, then the result byte (which fence_xvm never reads).

The fields are host-endian in C; every fence_xvm we meet runs on little-endian
x86, so the layout here is little-endian.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import secrets
import socket
import struct
import uuid as uuid_module
from dataclasses import dataclass, field, replace
from typing import Iterable

MCAST_ADDRESS = "225.0.0.12"        # IPV4_MCAST_DEFAULT
PORT = 1229                         # DEFAULT_MCAST_PORT: multicast and the TCP callback
DEFAULT_KEY_FILE = "/etc/cluster/fence_xvm.key"
MAX_KEY_LEN = 4096                  # read_key_file reads at most this many bytes

DOMAIN_LEN = 64                     # MAX_DOMAINNAME_LENGTH (name or UUID, NUL-terminated)
ADDRESS_LEN = 28                    # sizeof(struct sockaddr_in6)
DIGEST_LEN = 64                     # MAX_HASH_LENGTH (SHA512_LENGTH); shorter digests are zero-padded
CHALLENGE_LEN = 64

# fence_virtd's own socket figures (server/mcast.c connect_tcp): 5 s to connect
# back, 10 s for each step of the challenge-response.  They belong to the
# protocol, not to haconform's bounds table.
CONNECT_TIMEOUT = 5.0
EXCHANGE_TIMEOUT = 10.0

# fence_virtd's history (server/mcast.c: history_init(check_history, 10, ...)):
# a request with the same operation, seqno and domain answered within this many
# seconds is dropped, because fence_xvm repeats its datagram until called back.
HISTORY_WINDOW = 10.0

RF_UUID = 0x1                       # request flag: the domain field is a UUID (-u)


class Hash(enum.IntEnum):
    """fence_hash_t and fence_auth_type_t: the same numbers and digests."""

    NONE = 0
    SHA1 = 1
    SHA256 = 2
    SHA512 = 3

    @classmethod
    def parse(cls, text: str) -> "Hash":
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown hash {text!r} (none, sha1, sha256, sha512)") from None

    @property
    def label(self) -> str:
        return self.name.lower()


DEFAULT_HASH = Hash.SHA256          # fence_xvm -c and fence_virtd hash=
DEFAULT_AUTH = Hash.SHA256          # fence_xvm -C and fence_virtd auth=

_HASHLIB_NAME = {Hash.SHA1: "sha1", Hash.SHA256: "sha256", Hash.SHA512: "sha512"}


class Op(enum.IntEnum):
    """fence_cmd_t values that travel on the wire."""

    NULL = 0
    OFF = 1
    REBOOT = 2
    ON = 3
    STATUS = 4
    DEVSTATUS = 5
    HOSTLIST = 6

    @property
    def action(self) -> str:
        """The fence_xvm -o word that sends this operation."""
        return _ACTION_WORD[self]


_ACTION_WORD = {
    Op.NULL: "null", Op.OFF: "off", Op.REBOOT: "reboot", Op.ON: "on",
    Op.STATUS: "status", Op.DEVSTATUS: "monitor", Op.HOSTLIST: "list",
}


def op_label(code: int) -> str:
    """fence_xvm's word for an operation code, or unknown(N) for anything else."""
    try:
        return Op(code).action
    except ValueError:
        return f"unknown({code})"


class Result(enum.IntEnum):
    """The one result byte (RESP_*), which fence_xvm turns into its exit status."""

    SUCCESS = 0
    FAIL = 1
    OFF = 2
    PERM = 3
    HOSTLIST = 253


# virDomainState numbers as fence_virtd's libvirt backend puts them in the host
# list; fence_xvm prints "on" for 1 and "off" for anything else.
DOMAIN_RUNNING = 1
DOMAIN_SHUTOFF = 5

#   request, hashtype, addrlen, flags, domain[64], address[28], port,
#   random[6], seqno, family, hash[64]
REQUEST = struct.Struct("<BBBB64s28sH6sII64s")
REQUEST_SIZE = REQUEST.size                       # 176
_DIGEST_OFFSET = REQUEST_SIZE - DIGEST_LEN        # 112
HOST_RECORD = struct.Struct("<64s64sBB")          # host_state_t: 130 bytes


class ProtocolError(Exception):
    """A datagram or stream that does not follow the protocol."""


class Refused(Exception):
    """A request the daemon must drop without answering; .reason says why."""

    def __init__(self, reason: str, request: "Request | None" = None):
        super().__init__(reason)
        self.reason = reason
        self.request = request


def _c_string(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _c_field(text: str, size: int) -> bytes:
    """Like strncpy(dst, text, size - 1) into a zeroed field."""
    return text.encode("utf-8")[: size - 1].ljust(size, b"\0")


@dataclass(frozen=True)
class Request:
    """One fence_req_t."""

    op: int
    hash_type: int
    domain: str
    address: str                    # where the daemon calls back
    port: int
    seqno: int
    flags: int = 0
    random: bytes = field(default=b"\0" * 6, repr=False)
    digest: bytes = field(default=b"\0" * DIGEST_LEN, repr=False)

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ipaddress.ip_address(self.address).version == 6 else socket.AF_INET

    @property
    def by_uuid(self) -> bool:
        return bool(self.flags & RF_UUID)

    @property
    def action(self) -> str:
        return op_label(self.op)

    def pack(self) -> bytes:
        packed_address = ipaddress.ip_address(self.address).packed
        return REQUEST.pack(
            self.op, self.hash_type, len(packed_address), self.flags,
            _c_field(self.domain, DOMAIN_LEN), packed_address.ljust(ADDRESS_LEN, b"\0"),
            self.port, self.random, self.seqno, self.family, self.digest,
        )

    @classmethod
    def unpack(cls, datagram: bytes) -> "Request":
        if len(datagram) != REQUEST_SIZE:
            raise ProtocolError(f"datagram of {len(datagram)} bytes, a fence request has {REQUEST_SIZE}")
        (op, hash_type, addrlen, flags, domain, address, port,
         random, seqno, family, digest) = REQUEST.unpack(datagram)
        if family == socket.AF_INET:
            text = str(ipaddress.IPv4Address(address[:4]))
        elif family == socket.AF_INET6:
            text = str(ipaddress.IPv6Address(address[:16]))
        else:
            raise ProtocolError(f"address family {family} is neither AF_INET nor AF_INET6")
        return cls(op=op, hash_type=hash_type, domain=_c_string(domain), address=text,
                   port=port, seqno=seqno, flags=flags, random=random, digest=digest)


def read_key(path: str) -> bytes:
    """The shared key as fence_xvm reads it: the file's first MAX_KEY_LEN bytes, raw."""
    with open(path, "rb") as key_file:
        return key_file.read(MAX_KEY_LEN)


def _digest(kind: Hash, key: bytes, data: bytes) -> bytes:
    hasher = hashlib.new(_HASHLIB_NAME[kind])
    hasher.update(key)
    hasher.update(data)
    return hasher.digest().ljust(DIGEST_LEN, b"\0")


def request_digest(kind: Hash, key: bytes, packed: bytes) -> bytes:
    """H(key || request with its digest field zeroed), zero-padded to 64 bytes."""
    return _digest(kind, key, packed[:_DIGEST_OFFSET] + b"\0" * DIGEST_LEN)


def sign(request: Request, key: bytes) -> bytes:
    """The datagram fence_xvm would send: fresh random bytes, then the signature."""
    unsigned = replace(request, random=secrets.token_bytes(6), digest=b"\0" * DIGEST_LEN)
    packed = unsigned.pack()
    if request.hash_type == Hash.NONE:
        return packed
    try:
        kind = Hash(request.hash_type)
    except ValueError:
        raise ProtocolError(f"cannot sign with hash type {request.hash_type}") from None
    return packed[:_DIGEST_OFFSET] + request_digest(kind, key, packed)


def verify(datagram: bytes, key: bytes, minimum: Hash = DEFAULT_HASH) -> Request:
    """Return the request if fence_virtd would act on it; raise Refused if not.

    Same rules as verify_request(): the hash type must be at least `minimum`,
    an unsigned request passes only when `minimum` is none, and a signed one
    needs a key and a matching digest over the whole structure.
    """
    try:
        request = Request.unpack(datagram)
    except ProtocolError as exc:
        raise Refused(f"malformed: {exc}") from None
    try:
        kind = Hash(request.hash_type)
    except ValueError:
        raise Refused(f"unknown hash type {request.hash_type}", request) from None
    if kind < minimum:
        raise Refused(f"hash {kind.label} weaker than the required {minimum.label}", request)
    if kind == Hash.NONE:
        return request
    if not key:
        raise Refused("signed request but no key to check it with", request)
    expected = request_digest(kind, key, datagram)
    if not hmac.compare_digest(expected, datagram[_DIGEST_OFFSET:]):
        raise Refused("signature does not match our key", request)
    return request


def is_uuid(text: str) -> bool:
    """uuid-test.c is_uuid(): a 36-character UUID in canonical form, any case."""
    if len(text) < 36:
        return False
    try:
        return str(uuid_module.UUID(text)) == text.lower()
    except ValueError:
        return False


# --- TCP challenge-response (simple_auth.c sock_challenge / sock_response) ---

def challenge_response(kind: Hash, key: bytes, challenge: bytes) -> bytes:
    """The answer to a 64-byte challenge: H(key || challenge), zero-padded to 64."""
    return _digest(kind, key, challenge)


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < count:
        chunk = sock.recv(count - len(chunks))
        if not chunk:
            raise ProtocolError(f"peer closed after {len(chunks)} of {count} bytes")
        chunks += chunk
    return bytes(chunks)


def issue_challenge(sock: socket.socket, kind: Hash, key: bytes) -> bool:
    """Challenge the peer; True if it proved it holds the key (no-op for none)."""
    if kind == Hash.NONE:
        return True
    challenge = secrets.token_bytes(CHALLENGE_LEN)
    sock.sendall(challenge)
    answer = recv_exactly(sock, DIGEST_LEN)
    return hmac.compare_digest(answer, challenge_response(kind, key, challenge))


def answer_challenge(sock: socket.socket, kind: Hash, key: bytes) -> None:
    """Read the peer's challenge and answer it (no-op for none)."""
    if kind == Hash.NONE:
        return
    challenge = recv_exactly(sock, CHALLENGE_LEN)
    sock.sendall(challenge_response(kind, key, challenge))


# --- host list (FENCE_HOSTLIST) ---

@dataclass(frozen=True)
class HostEntry:
    name: str
    uuid: str
    state: int                      # virDomainState number

    @property
    def on(self) -> bool:
        return self.state == DOMAIN_RUNNING

    def client_line(self) -> str:
        """The line fence_xvm -o list prints for this entry (do_read_hostlist)."""
        return f"{self.name:<32} {self.uuid} {'on' if self.on else 'off'}"


def encode_host_record(entry: HostEntry) -> bytes:
    return HOST_RECORD.pack(_c_field(entry.name, DOMAIN_LEN), _c_field(entry.uuid, DOMAIN_LEN),
                            entry.state & 0xFF, 0)


HOST_LIST_TERMINATOR = b"\0" * HOST_RECORD.size


def host_list_reply(entries: Iterable[HostEntry], result: Result = Result.SUCCESS) -> bytes:
    """Everything fence_virtd writes for FENCE_HOSTLIST after the handshake.

    Sorted by name ignoring case, as libvirt's vl_get() sorts them.
    """
    ordered = sorted(entries, key=lambda entry: entry.name.lower())
    return (bytes([Result.HOSTLIST])
            + b"".join(encode_host_record(entry) for entry in ordered)
            + HOST_LIST_TERMINATOR
            + bytes([result]))


def decode_host_list(data: bytes) -> list[HostEntry]:
    """Read a host list reply as fence_xvm does: records up to the all-empty one."""
    if not data or data[0] != Result.HOSTLIST:
        raise ProtocolError("host list reply does not start with RESP_HOSTLIST")
    entries = []
    offset = 1
    while True:
        record = data[offset: offset + HOST_RECORD.size]
        if len(record) < HOST_RECORD.size:
            raise ProtocolError("host list ends without its terminator record")
        name, uuid_text, state, _pad = HOST_RECORD.unpack(record)
        offset += HOST_RECORD.size
        if not _c_string(name) and not _c_string(uuid_text):
            return entries
        entries.append(HostEntry(_c_string(name), _c_string(uuid_text), state))
