"""Wire encoding: golden bytes, round trips, and a decoder that only ever raises WireError."""

import random
import struct

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from gannet.wire import Segment, WireError, decode, encode, seq_diff, seq_lt, unwrap
from gannet.wire.datagram import CRC_RESIDUE, HEADER_SIZE, SHORT_SIZE

U32 = st.integers(0, 2**32 - 1)


def test_golden_syn():
    seg = Segment(0x01020304, 0, 0x02, 65535, mss=1400, wscale=7, sack_permitted=True, tsval=5, tsecr=0)
    data = encode(0, 0xAABBCCDD, seg)
    assert data.hex() == (
        "03"  # version
        "02"  # flags: SYN
        "0030"  # header length 48
        "00000000"  # destination connection ID (unknown yet)
        "aabbccdd"  # source connection ID
        "01020304"  # sequence number
        "00000000"  # acknowledgment number
        "ffff" "0000"  # window, reserved
        "02020578"  # MSS 1400
        "030107"  # window scale 7
        "0400"  # SACK permitted
        "0101"  # two NOPs align the timestamps, as TCP stacks do
        "08080000000500000000"  # timestamps 5, 0
        "000000"  # padding to a multiple of four
        "1ab5865f"  # CRC32C of everything above, least significant byte first
    )
    assert crc32c(data) == CRC_RESIDUE
    dst, src, back = decode(data)
    assert (dst, src) == (0, 0xAABBCCDD)
    assert back == seg


def test_checksum_is_crc32c_castagnoli():
    from crc32c import crc32c

    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720 B.4)
    data = encode(1, 2, Segment(3, 4, 0x10, 5, b"payload"))
    assert data[-4:] == crc32c(data[:-4]).to_bytes(4, "little")


def test_golden_sack_mode_and_max_packet_options():
    seg = Segment(0x10, 0x20, 0x10, 100, b"", sack=((0x100, 0x200), (0x300, 0x400)), tsval=1, tsecr=2,
                  mode=1, max_packet=1200)
    data = encode(1, 2, seg)
    assert data.hex() == (
        "03" "10" "0040"  # version 3, ACK, header length 64
        "00000001" "00000002" "00000010" "00000020" "0064" "0000"
        "0101" "0808" "00000001" "00000002"  # NOP NOP timestamps 1, 2
        "0510" "00000100" "00000200" "00000300" "00000400"  # SACK: two blocks
        "200101"  # operation mode: step-by-step
        "210204b0"  # max packet size 1200
        "000000"  # padding
        "31bb2dca"  # CRC32C, least significant byte first
    )
    assert decode(data)[2] == seg


def test_golden_timestamped_ack_uses_the_short_form():
    data = encode(7, 9, Segment(100, 200, 0x18, 512, b"hi", tsval=0x11223344, tsecr=0x55667788))
    assert data.hex() == (
        "83"  # short form of version 3
        "18"  # flags: ACK PSH
        "0200"  # window
        "00000007"  # destination connection ID (no source ID)
        "00000064" "000000c8"  # sequence, acknowledgment numbers
        "11223344"  # TSval (no TSecr)
        "6869"  # payload
        "8bb3fcad"  # CRC32C
    )
    assert len(data) == SHORT_SIZE + 2 + 4
    assert decode(data) == (7, None, Segment(100, 200, 0x18, 512, b"hi", tsval=0x11223344))


def test_segments_the_short_form_cannot_carry_take_the_long_one():
    for seg in (
        Segment(1, 2, 0x10, 3, b"x"),  # no timestamps
        Segment(1, 2, 0x12, 3, tsval=4, tsecr=5),  # SYN
        Segment(1, 2, 0x14, 3, tsval=4, tsecr=5),  # RST
        Segment(1, 2, 0x11, 3, tsval=4, tsecr=5, sack=((7, 9),)),  # an option besides timestamps
    ):
        data = encode(5, 6, seg)
        assert data[0] == 3
        assert decode(data) == (5, 6, seg)
    # nor a segment for a connection whose ID is not known yet
    assert encode(0, 6, Segment(1, 2, 0x10, 3, tsval=4, tsecr=5))[0] == 3


def test_golden_data_segment():
    data = encode(7, 9, Segment(100, 200, 0x18, 512, b"hello"))
    assert data[:HEADER_SIZE] == struct.pack("!BBHIIIIHH", 3, 0x18, 24, 7, 9, 100, 200, 512, 0)
    assert data[HEADER_SIZE:-4] == b"hello"
    assert len(data) == HEADER_SIZE + 5 + 4


segments = st.builds(
    Segment,
    U32,
    U32,
    st.sampled_from([0x10, 0x18, 0x11, 0x12, 0x02, 0x04, 0x14, 0x19]),
    st.integers(0, 0xFFFF),
    st.binary(max_size=300),
    mss=st.none() | st.integers(1, 0xFFFF),
    wscale=st.none() | st.integers(0, 14),
    sack_permitted=st.booleans(),
    sack=st.lists(st.tuples(U32, U32), max_size=4).map(tuple),
    tsval=st.none() | U32,
    tsecr=st.none() | U32,
    mode=st.none() | st.integers(0, 1),
    max_packet=st.none() | st.integers(1, 0xFFFF),
)


@given(U32, U32, segments)
def test_round_trip(dst, src, seg):
    # Normalize what the format cannot express: an echo without a timestamp,
    # or an acknowledgment number on a RST that has no ACK bit.
    if seg.tsval is None:
        seg.tsecr = None
    elif seg.tsecr is None:
        seg.tsecr = 0
    if seg.flags & 0x04 and not seg.flags & 0x10:
        seg.ack = 0
    short = (seg.tsval is not None and seg.flags & ~0x09 == 0x10 and dst and not seg.sack and seg.mss is None
             and seg.wscale is None and not seg.sack_permitted and seg.mode is None and seg.max_packet is None)
    data = encode(dst, src, seg)
    if short:  # the short form carries neither the source ID nor TSecr
        src = None
        seg.tsecr = None
    got_dst, got_src, got = decode(data)
    assert (got_dst, got_src) == (dst, src)
    assert got == seg


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_wire_error(data):
    try:
        decode(data)
    except WireError:
        pass


def _with_crc(body: bytes) -> bytes:
    return body + crc32c(body).to_bytes(4, "little")


def _mutate(raw: bytearray, draw_int) -> list[bytes]:
    """`raw` with a few bytes changed, whole and cut short, each with its
    CRC32C trailer computed again: a mutation left behind the checksum stops
    at the checksum and never reaches the header and option parser."""
    for _ in range(draw_int(1, 4)):
        raw[draw_int(0, len(raw) - 5)] = draw_int(0, 255)
    cut = draw_int(4, len(raw))
    return [_with_crc(bytes(raw[:-4])), _with_crc(bytes(raw[: cut - 4]))]


@settings(max_examples=300)
@given(U32, U32, segments, st.data())
def test_mutated_datagrams_decode_or_wire_error(dst, src, seg, data):
    raw = bytearray(encode(dst, src, seg))
    for candidate in _mutate(raw, lambda lo, hi: data.draw(st.integers(lo, hi))):
        try:
            got_dst, got_src, got = decode(candidate)
        except WireError:
            continue
        # What decodes re-encodes to a datagram that decodes the same.
        again = encode(got_dst, got_src or 0, got)
        back_dst, back_src, back = decode(again)
        if back_src is None:  # the short form carries neither the source ID nor TSecr
            got_src, got.tsecr = None, None
        assert (back_dst, back_src, back) == (got_dst, got_src, got)


@pytest.mark.pure
def test_mutated_datagrams_reach_the_option_parser(monkeypatch):
    """Counted: most mutated datagrams with options get past the checksum and
    the fixed header into _decode_options, and some pass it."""
    from gannet.wire import datagram

    reached = []
    parse = datagram._decode_options

    def counting(opts, seg):
        reached.append(len(opts))
        parse(opts, seg)

    monkeypatch.setattr(datagram, "_decode_options", counting)
    rng = random.Random(12)
    with_options = [
        Segment(1, 0, 0x02, 100, mss=1400, wscale=7, sack_permitted=True, tsval=5, tsecr=0, mode=1,
                max_packet=1472),
        Segment(5, 6, 0x10, 7, b"data", sack=((1, 2), (3, 4)), tsval=1, tsecr=2),
        Segment(5, 6, 0x12, 7, unknown_options=((0x40, b"\xab\xcd"),), mss=536),
    ]
    outcomes = {"options parsed": 0, "options rejected": 0}
    tries = 0
    for seg in with_options:
        raw = encode(rng.getrandbits(32) | 1, rng.getrandbits(32) | 1, seg)
        for _ in range(500):
            mutated = bytearray(raw)
            # Only option bytes (24 up to the header length) change here, so
            # that every datagram has options to parse.
            hlen = int.from_bytes(raw[2:4], "big")
            for _ in range(rng.randint(1, 3)):
                mutated[rng.randrange(24, hlen)] = rng.randrange(256)
            tries += 1
            before = len(reached)
            try:
                decode(_with_crc(bytes(mutated[:-4])))
                outcomes["options parsed"] += 1
            except WireError:
                if len(reached) > before:
                    outcomes["options rejected"] += 1
            if mutated != raw:  # left with the old CRC, it stops at the checksum
                with pytest.raises(WireError, match="checksum"):
                    decode(bytes(mutated))
    assert len(reached) == tries  # every one, with its trailer fixed, got to the options
    assert outcomes["options parsed"] > tries // 10 and outcomes["options rejected"] > tries // 10, outcomes


def test_checksum_catches_a_flipped_bit():
    raw = bytearray(encode(1, 2, Segment(1, 2, 0x10, 3, b"x" * 100)))
    raw[40] ^= 0x01
    with pytest.raises(WireError, match="checksum"):
        decode(bytes(raw))


@pytest.mark.parametrize(
    "body, reason",
    [
        (struct.pack("!BBHIIIIHH", 1, 0x10, 24, 1, 2, 3, 4, 5, 0), "version"),  # version 1 stored the CRC the other way round
        (struct.pack("!BBHIIIIHH", 2, 0x10, 24, 1, 2, 3, 4, 5, 0), "version"),  # version 2 had no short form
        (struct.pack("!BBHIIIIHH", 3, 0x10, 20, 1, 2, 3, 4, 5, 0), "header length"),
        (struct.pack("!BBHIIIIHH", 3, 0x10, 26, 1, 2, 3, 4, 5, 0) + b"\0\0", "header length"),
        (struct.pack("!BBHIIIIHH", 3, 0x03, 24, 1, 2, 3, 4, 5, 0), "impossible flags"),
        (struct.pack("!BBHIIIIHH", 3, 0x10, 28, 1, 2, 3, 4, 5, 0) + b"\x02\x03\x00\x00", "option 2"),
        (struct.pack("!BBHIIIIHH", 3, 0x10, 28, 1, 2, 3, 4, 5, 0) + b"\x05\x08\x00\x00", "overruns"),
        (struct.pack("!BBHIIIIHH", 3, 0x10, 28, 1, 2, 3, 4, 5, 0) + b"\x90\x00\x00\x00", "must-understand"),
        (struct.pack("!BBHIIII", 0x83, 0x12, 5, 1, 3, 4, 6), "short header with flags"),  # SYN
        (struct.pack("!BBHIIII", 0x83, 0x08, 5, 1, 3, 4, 6), "short header with flags"),  # no ACK
        (struct.pack("!BBHIIII", 0x83, 0x10, 5, 0, 3, 4, 6), "destination"),
        (struct.pack("!BBHII", 0x83, 0x10, 5, 1, 3), "too short"),
        (struct.pack("!BBHIIII", 0x82, 0x10, 5, 1, 3, 4, 6), "version"),
    ],
)
def test_rejections_say_why(body, reason):
    with pytest.raises(WireError, match=reason):
        decode(_with_crc(body))


def test_unknown_optional_option_is_kept_not_fatal():
    body = struct.pack("!BBHIIIIHH", 3, 0x02, 28, 0, 2, 3, 0, 5, 0) + b"\x40\x02\xab\xcd"
    _, _, seg = decode(_with_crc(body))
    assert seg.unknown_options == ((0x40, b"\xab\xcd"),)


def test_sequence_arithmetic_wraps():
    assert seq_lt(2**32 - 10, 5)
    assert not seq_lt(5, 2**32 - 10)
    assert seq_diff(3, 2**32 - 3) == 6
    assert unwrap(5, 2**32 - 10) == 2**32 + 5
    assert unwrap(2**32 - 10, 2**32 + 5) == 2**32 - 10
    assert unwrap(100, 2**40 + 50) == 2**40 + 100
