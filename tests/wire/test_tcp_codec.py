"""The TCP wire codec: golden bytes, round trips, rejection reasons, and
agreement with segments the Linux kernel made."""

import os
import socket
import struct
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gannet.wire import tcp
from gannet.wire.segment import ACK, FIN, PSH, RST, SYN, Segment
from gannet.wire.tcp import TcpWireError, checksum, checksum_ok, decode, encode

LO = bytes([127, 0, 0, 1])
V6A = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
V6B = socket.inet_pton(socket.AF_INET6, "2001:db8::2")
U32 = st.integers(0, 2**32 - 1)


def test_checksum_rfc1071_example():
    # RFC 1071 section 3's example words 0001 f203 f4f5 f6f7 sum to ddf2 (one's
    # complement); with an all-zero pseudo-header contribution removed, the
    # checksum field is its complement.
    data = bytes.fromhex("0001f203f4f5f6f7")
    zero = bytes(4)
    # pseudo-header of zero addresses adds 6 + len(8) = 0x0e
    assert checksum(data, zero, zero) == 0xFFFF - ((0xDDF2 + 0x0E) % 0xFFFF)


def test_golden_syn_in_linux_layout():
    seg = Segment(0x361D115D, 0, SYN, 65495, mss=65495, wscale=10, sack_permitted=True,
                  tsval=0xF87A4E9C, tsecr=0)
    data = encode(52116, 46147, seg, LO, LO)
    assert data.hex() == (
        "cb94" "b443"  # ports
        "361d115d" "00000000"  # seq, ack
        "a0" "02" "ffd7"  # offset 10 words, SYN, window
        + data[16:18].hex() + "0000"  # checksum, urgent pointer
        "0204ffd7"  # MSS 65495
        "0402"  # SACK permitted
        "080af87a4e9c00000000"  # timestamps
        "0103030a"  # NOP, window scale 10
    )
    assert checksum_ok(data, LO, LO)
    assert decode(data, LO, LO) == (52116, 46147, seg)


def test_golden_data_segment_with_timestamps():
    seg = Segment(1, 2, ACK | PSH, 64, b"hi", tsval=0x11223344, tsecr=0x55667788)
    data = encode(1000, 2000, seg, LO, LO)
    assert data[:16].hex() == "03e807d0" "00000001" "00000002" "80" "18" "0040"
    assert data[18:].hex() == "0000" "0101080a1122334455667788" "6869"
    assert decode(data, LO, LO)[2] == seg


def test_sack_blocks_fit_in_forty_bytes():
    blocks = ((1, 2), (3, 4), (5, 6), (7, 8))
    with_ts = Segment(1, 2, ACK, 5, sack=blocks, tsval=1, tsecr=2)
    data = encode(1, 2, with_ts, LO, LO)
    assert (data[12] >> 4) * 4 == 60  # the largest header
    assert decode(data, LO, LO)[2].sack == blocks[:3]  # RFC 2018: three beside timestamps
    no_ts = Segment(1, 2, ACK, 5, sack=blocks)
    assert decode(encode(1, 2, no_ts, LO, LO), LO, LO)[2].sack == blocks


def test_gannet_only_options_are_not_sent():
    data = encode(1, 2, Segment(1, 0, SYN, 100, mss=1460, mode=1, max_packet=1200), LO, LO)
    assert len(data) == 24
    back = decode(data, LO, LO)[2]
    assert back.mode is None and back.max_packet is None and back.mss == 1460


def test_ipv6_pseudo_header():
    seg = Segment(7, 8, ACK, 9, b"odd")
    data = encode(5, 6, seg, V6A, V6B)
    assert decode(data, V6A, V6B)[2] == seg
    with pytest.raises(TcpWireError, match="checksum"):
        decode(data, V6B, LO + bytes(12))


def _fix_checksum(data: bytes) -> bytes:
    zeroed = data[:16] + b"\0\0" + data[18:]
    return data[:16] + checksum(zeroed, LO, LO).to_bytes(2, "big") + data[18:]


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda d: d[:19], "too short"),
        (lambda d: _fix_checksum(d[:12] + b"\x40" + d[13:]), "below 5"),
        (lambda d: _fix_checksum(d[:12] + b"\xf0" + d[13:]), "runs past the segment"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "checksum"),
        (lambda d: _fix_checksum(bytes(2) + d[2:]), "port zero"),
    ],
)
def test_rejections_say_why(mutate, reason):
    good = encode(1, 2, Segment(1, 2, ACK, 3, b"abcd", tsval=1, tsecr=2), LO, LO)
    assert decode(_fix_checksum(good), LO, LO)[2].payload == b"abcd"
    with pytest.raises(TcpWireError, match=reason):
        decode(mutate(good), LO, LO)


def _with_options(opts: bytes, payload: bytes = b"") -> bytes:
    head = struct.pack("!HHIIBBHHH", 1, 2, 3, 4, (5 + len(opts) // 4) << 4, ACK, 5, 0, 0)
    raw = head + opts + payload
    c = checksum(raw, LO, LO)
    return raw[:16] + c.to_bytes(2, "big") + raw[18:]


@pytest.mark.parametrize(
    "opts, reason",
    [
        (b"\x01\x01\x01\x02", "no length byte"),
        (b"\x02\x00\x00\x00", "below 2"),
        (b"\x02\x01\x00\x00", "below 2"),
        (b"\x05\x0a\x00\x00", "runs past the header"),
    ],
)
def test_truncated_options_rejected(opts, reason):
    with pytest.raises(TcpWireError, match=reason):
        decode(_with_options(opts), LO, LO)


def test_unknown_options_skipped_and_eol_ends_the_list():
    # kind 30 (MPTCP) of 4 bytes, NOP, window scale 20 (clamped to 14), EOL, junk
    seg = decode(_with_options(b"\x1e\x04\xab\xcd\x01\x03\x03\x14\x00\xff\xff\xff"), LO, LO)[2]
    assert seg.unknown_options == ((30, b"\xab\xcd"),)
    assert seg.wscale == 14


def test_known_option_with_wrong_length_is_ignored():
    seg = decode(_with_options(b"\x02\x03\x05\x01"), LO, LO)[2]  # MSS of length 3
    assert seg.mss is None


opts_st = st.fixed_dictionaries(
    {},
    optional={
        "mss": st.integers(1, 0xFFFF),
        "wscale": st.integers(0, 14),
        "sack_permitted": st.booleans(),
        "sack": st.lists(st.tuples(U32, U32), min_size=1, max_size=3).map(tuple),
        "tsval": U32,
    },
)


@given(U32, U32, st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=300),
       opts_st, st.integers(1, 0xFFFF), st.integers(1, 0xFFFF), st.booleans())
def test_round_trip(seq, ack, flags, wnd, payload, opts, sport, dport, v6):
    if "tsval" in opts:
        opts["tsecr"] = seq ^ ack
    sack = opts.pop("sack", ())
    seg = Segment(seq, ack, flags, wnd, payload, **opts)
    fit = (tcp.MAX_OPTIONS - len(tcp.encode_options(seg)) - 4) // 8
    seg.sack = sack[:fit]  # what fits beside the other options is sent
    src, dst = (V6A, V6B) if v6 else (LO, bytes([10, 0, 0, 1]))
    data = encode(sport, dport, seg, src, dst)
    assert decode(data, src, dst) == (sport, dport, seg)


@given(st.binary(max_size=120))
def test_decoder_only_raises_its_own_error(data):
    for verify in (True, False):
        try:
            decode(data, LO, LO, verify=verify, partial=True)
        except TcpWireError:
            pass


@given(st.binary(min_size=20, max_size=80))
def test_any_header_with_a_fixed_checksum_decodes_or_says_why(data):
    raw = bytearray(data)
    raw[16:18] = b"\0\0"
    raw[16:18] = checksum(raw, LO, LO).to_bytes(2, "big")
    try:
        decode(bytes(raw), LO, LO)
    except TcpWireError as e:
        assert "checksum" not in str(e)


# ---------------------------------------------------------- against Linux
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="raw sockets need root")


def _capture(raw: socket.socket, port: int, want: int, deadline: float) -> list[tuple[bytes, bytes, bytes]]:
    """(segment, src, dst) of `want` TCP packets to or from `port` seen on `raw`."""
    got = []
    while len(got) < want and time.monotonic() < deadline:
        try:
            pkt = raw.recv(70000)
        except TimeoutError:
            continue
        ihl = (pkt[0] & 15) * 4
        seg = pkt[ihl:]
        if port in tcp.peek_ports(seg):
            got.append((seg, pkt[12:16], pkt[16:20]))
    return got


@needs_root
def test_kernel_segments_on_loopback_decode_and_reencode_identically():
    """The kernel's SYN, SYN-ACK, ACK and data on loopback: our decoding of
    them re-encodes to the same bytes (option layout included), and their
    checksum is the kernel's unfinished one that `partial` accepts."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    raw.settimeout(0.5)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    with raw, srv, socket.create_connection(("127.0.0.1", port)) as c:
        a, _ = srv.accept()
        with a:
            c.sendall(b"hello from the kernel")
            a.recv(100)
            got = _capture(raw, port, 4, time.monotonic() + 5)
    assert len(got) == 4
    flags_seen = []
    for seg_bytes, src, dst in got:
        sport, dport, seg = decode(seg_bytes, src, dst, partial=True)
        flags_seen.append(seg.flags)
        again = encode(sport, dport, seg, src, dst)
        assert again[:16] == seg_bytes[:16] and again[18:] == seg_bytes[18:]
        # What checksum offload would write: the complement of the sum of the
        # segment's words, its field holding the pseudo-header sum, as is.
        total = int.from_bytes(seg_bytes + b"\0" * (len(seg_bytes) & 1), "big") % 0xFFFF
        offloaded = 0xFFFF - total if total else 0
        assert int.from_bytes(again[16:18], "big") % 0xFFFF == offloaded % 0xFFFF
        assert not checksum_ok(seg_bytes, src, dst)  # unfinished, so strict fails
    assert flags_seen[:3] == [SYN, SYN | ACK, ACK]
    assert decode(got[0][0], got[0][1], got[0][2], partial=True)[2].sack_permitted
    assert got[3][0].endswith(b"hello from the kernel")


@needs_root
def test_kernel_reset_has_a_full_checksum_we_verify_and_reproduce():
    """Linux computes a RST's checksum in software (tcp_v4_send_reset): our
    SYN to a closed port is answered with one that passes our strict check,
    and encoding its decoded form gives the same bytes, checksum included."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    closed = probe.getsockname()[1]
    probe.close()  # a port nobody listens on
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    raw.settimeout(0.5)
    with raw:
        syn = encode(40001, closed, Segment(12345, 0, SYN, 1000, mss=1460), LO, LO)
        raw.sendto(syn, ("127.0.0.1", 0))
        got = [g for g in _capture(raw, closed, 2, time.monotonic() + 5) if g[0] != syn]
    assert got, "the kernel sent no RST"
    rst_bytes, src, dst = got[0]
    assert checksum_ok(rst_bytes, src, dst)  # strict: a full checksum
    sport, dport, rst = decode(rst_bytes, src, dst)
    assert (sport, dport) == (closed, 40001)
    assert rst.flags == RST | ACK and rst.ack == 12346  # the kernel took our SYN's checksum
    assert encode(sport, dport, rst, src, dst) == rst_bytes


def test_fin_round_trip_keeps_flags():
    seg = Segment(5, 6, FIN | ACK, 7)
    assert decode(encode(9, 10, seg, LO, LO), LO, LO)[2].flags == FIN | ACK


@pytest.mark.parametrize("mutate, reason", [
    (lambda p: p[:19], "too short"),
    (lambda p: b"\x65" + p[1:], "IP version 6"),
    (lambda p: b"\x44" + p[1:], "header length 16"),
    (lambda p: p[:2] + (len(p) + 1).to_bytes(2, "big") + p[4:], "total length"),
    (lambda p: p[:6] + b"\x20\x00" + p[8:], "a fragment"),
    (lambda p: p[:6] + b"\x00\x08" + p[8:], "a fragment"),
])
def test_ipv4_rejections_say_why(mutate, reason):
    from gannet.wire import ipv4

    seg = encode(1, 2, Segment(1, 2, ACK, 3, b"data"), LO, LO)
    packet = ipv4.build(LO, LO, len(seg)) + seg
    assert ipv4.parse(packet) == (LO, LO, 6, 20, len(packet))
    assert ipv4.header_checksum(packet[:20]) == 0
    with pytest.raises(ipv4.IPv4Error, match=reason):
        ipv4.parse(mutate(packet))
