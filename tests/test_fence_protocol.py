"""fence_xvm wire protocol: layout, signatures, challenge-response, host list."""

import hashlib
import socket
import struct
import threading

import pytest

from haconform.fence import protocol
from haconform.fence.protocol import Hash, HostEntry, Op, Refused, Request, Result

KEY = bytes((i * 37 + 11) % 256 for i in range(128))   # 128 bytes, as the runbook's dd bs=128 count=1
OTHER_KEY = b"x" * 128


def make_request(**overrides) -> Request:
    fields = dict(op=Op.REBOOT, hash_type=Hash.SHA256, domain="Node4",
                  address="172.25.5.1", port=1229, seqno=123456)
    fields.update(overrides)
    return Request(**fields)


def test_request_is_176_bytes_with_the_fields_where_fence_xvm_puts_them():
    packed = make_request(flags=protocol.RF_UUID).pack()
    assert len(packed) == protocol.REQUEST_SIZE == 176
    assert packed[0] == Op.REBOOT
    assert packed[1] == Hash.SHA256
    assert packed[2] == 4                                   # addrlen = sizeof(struct in_addr)
    assert packed[3] == protocol.RF_UUID
    assert packed[4:4 + 64].rstrip(b"\0") == b"Node4"
    assert packed[68:72] == socket.inet_aton("172.25.5.1")   # inet_pton bytes, network order
    assert struct.unpack_from("<H", packed, 96)[0] == 1229   # port in host order, not htons
    assert struct.unpack_from("<I", packed, 104)[0] == 123456
    assert struct.unpack_from("<I", packed, 108)[0] == socket.AF_INET


def test_unpack_reverses_pack():
    original = make_request(op=Op.STATUS, domain="Node1", address="127.0.0.1", seqno=7)
    assert Request.unpack(original.pack()) == original


def test_unpack_reads_ipv6_callback_addresses():
    original = make_request(address="fd00::5")
    assert Request.unpack(original.pack()).address == "fd00::5"


@pytest.mark.parametrize("kind", [Hash.SHA1, Hash.SHA256, Hash.SHA512])
def test_signed_request_verifies_with_the_same_key(kind):
    datagram = protocol.sign(make_request(hash_type=kind), KEY)
    request = protocol.verify(datagram, KEY, minimum=Hash.SHA1)
    assert (request.op, request.domain, request.seqno, request.hash_type) == (Op.REBOOT, "Node4", 123456, kind)


def test_signature_is_the_digest_of_key_then_request_with_zeroed_digest():
    datagram = protocol.sign(make_request(), KEY)
    expected = hashlib.sha256(KEY + datagram[:112] + b"\0" * 64).digest()
    assert datagram[112:144] == expected
    assert datagram[144:] == b"\0" * 32                     # sha256 is zero-padded to 64 bytes


def test_each_signing_draws_fresh_random_bytes():
    first = protocol.sign(make_request(), KEY)
    second = protocol.sign(make_request(), KEY)
    assert first[98:104] != second[98:104]
    assert first[112:] != second[112:]


def test_wrong_key_is_refused():
    datagram = protocol.sign(make_request(), KEY)
    with pytest.raises(Refused, match="signature does not match"):
        protocol.verify(datagram, OTHER_KEY)


@pytest.mark.parametrize("byte_index", [0, 1, 3, 5, 70, 97, 100, 105, 109, 112, 143])
def test_any_flipped_bit_is_refused(byte_index):
    datagram = bytearray(protocol.sign(make_request(), KEY))
    datagram[byte_index] ^= 0x01
    with pytest.raises(Refused):
        protocol.verify(bytes(datagram), KEY, minimum=Hash.NONE)


def test_weaker_hash_than_required_is_refused_even_if_correctly_signed():
    datagram = protocol.sign(make_request(hash_type=Hash.SHA1), KEY)
    with pytest.raises(Refused, match="sha1 weaker than the required sha256"):
        protocol.verify(datagram, KEY, minimum=Hash.SHA256)


def test_unsigned_request_passes_only_when_none_is_allowed():
    datagram = protocol.sign(make_request(hash_type=Hash.NONE), KEY)
    assert datagram[112:] == b"\0" * 64
    assert protocol.verify(datagram, b"", minimum=Hash.NONE).domain == "Node4"
    with pytest.raises(Refused):
        protocol.verify(datagram, KEY, minimum=Hash.SHA1)


def test_unknown_hash_type_and_short_datagrams_are_refused():
    datagram = bytearray(protocol.sign(make_request(), KEY))
    datagram[1] = 9
    with pytest.raises(Refused, match="unknown hash type 9"):
        protocol.verify(bytes(datagram), KEY, minimum=Hash.NONE)
    with pytest.raises(Refused, match="malformed"):
        protocol.verify(bytes(datagram[:175]), KEY)


def test_refusal_text_carries_no_key_material():
    datagram = protocol.sign(make_request(), KEY)
    with pytest.raises(Refused) as refused:
        protocol.verify(datagram, OTHER_KEY)
    text = str(refused.value)
    assert KEY.hex() not in text and OTHER_KEY.hex() not in text and "x" * 16 not in text


def test_domain_names_are_cut_to_63_bytes_and_nul_terminated():
    packed = make_request(domain="N" * 80).pack()
    assert packed[4:67] == b"N" * 63 and packed[67] == 0
    assert Request.unpack(packed).domain == "N" * 63


def test_is_uuid_matches_uuid_test_c():
    assert protocol.is_uuid("6f1c2a3e-1b2c-4d5e-8f90-0123456789ab")
    assert protocol.is_uuid("6F1C2A3E-1B2C-4D5E-8F90-0123456789AB")
    assert not protocol.is_uuid("Node1")
    assert not protocol.is_uuid("6f1c2a3e1b2c4d5e8f900123456789ab")     # no dashes: not canonical


@pytest.mark.parametrize("kind", [Hash.SHA1, Hash.SHA256, Hash.SHA512])
def test_challenge_response_both_ways_over_a_socket(kind):
    daemon_side, client_side = socket.socketpair()
    outcome = {}

    def client():
        # fence_xvm's tcp_exchange(): challenge first, then answer the daemon's
        outcome["daemon proved"] = protocol.issue_challenge(client_side, kind, KEY)
        protocol.answer_challenge(client_side, kind, KEY)

    with daemon_side, client_side:
        runner = threading.Thread(target=client)
        runner.start()
        protocol.answer_challenge(daemon_side, kind, KEY)
        client_proved = protocol.issue_challenge(daemon_side, kind, KEY)
        runner.join()
    assert outcome["daemon proved"] and client_proved


def test_challenge_fails_when_the_peer_has_another_key():
    daemon_side, client_side = socket.socketpair()
    outcome = {}

    def client():
        outcome["daemon proved"] = protocol.issue_challenge(client_side, Hash.SHA256, KEY)

    with daemon_side, client_side:
        runner = threading.Thread(target=client)
        runner.start()
        protocol.answer_challenge(daemon_side, Hash.SHA256, OTHER_KEY)
        runner.join()
    assert outcome["daemon proved"] is False


def test_challenge_answer_is_zero_padded_digest():
    challenge = bytes(range(64))
    answer = protocol.challenge_response(Hash.SHA1, KEY, challenge)
    assert answer == hashlib.sha1(KEY + challenge).digest() + b"\0" * 44


def test_host_list_encoding_roundtrip_sorted_by_name_ignoring_case():
    entries = [HostEntry("node4", "b" * 36, protocol.DOMAIN_SHUTOFF),
               HostEntry("Node1", "a" * 36, protocol.DOMAIN_RUNNING)]
    reply = protocol.host_list_reply(entries)
    assert reply[0] == Result.HOSTLIST
    assert len(reply) == 1 + 3 * 130 + 1                   # 2 records, terminator, result byte
    assert reply[1 + 2 * 130: 1 + 3 * 130] == b"\0" * 130
    assert reply[-1] == Result.SUCCESS
    decoded = protocol.decode_host_list(reply)
    assert [(e.name, e.uuid, e.on) for e in decoded] == [("Node1", "a" * 36, True), ("node4", "b" * 36, False)]


def test_host_list_line_is_what_fence_xvm_prints():
    entry = HostEntry("Node1", "6f1c2a3e-1b2c-4d5e-8f90-0123456789ab", protocol.DOMAIN_RUNNING)
    # client/mcast.c do_read_hostlist(): printf("%-32s %s %s\n", domain, uuid, on/off)
    assert entry.client_line() == "Node1" + " " * 27 + " 6f1c2a3e-1b2c-4d5e-8f90-0123456789ab on"
    assert HostEntry("Node4", "u", 5).client_line().endswith(" u off")


def test_empty_host_list_is_just_the_terminator():
    reply = protocol.host_list_reply([])
    assert protocol.decode_host_list(reply) == []


def test_hash_parse_accepts_fence_xvm_words():
    assert [Hash.parse(w) for w in ("none", "sha1", "SHA256", "sha512")] == list(Hash)
    with pytest.raises(ValueError):
        Hash.parse("md5")


def test_fence_xvm_defaults_are_sha256():
    assert protocol.DEFAULT_HASH == Hash.SHA256 and protocol.DEFAULT_AUTH == Hash.SHA256
    assert (protocol.MCAST_ADDRESS, protocol.PORT) == ("225.0.0.12", 1229)
