"""Message codecs: golden bytes, round trips, incremental feeding, fuzzing."""

import json

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gannet.apps.messages.codec import (
    HEADER_SIZE,
    AutoDecoder,
    BinaryDecoder,
    ChecksumError,
    CodecError,
    FrameTooLarge,
    JsonDecoder,
    Message,
    MessageType,
    UnsupportedVersion,
    control,
    decode_all,
    encode_binary,
    encode_json,
    get_codec,
)
from gannet.apps.messages.negotiation import Reassembler, split

# ------------------------------------------------------------------ golden bytes


def test_binary_golden_data():
    frame = encode_binary(Message(MessageType.DATA, 1, b"hi"))
    assert frame.hex() == "00000002" "01" "00" "00000001" "2e702e75" "6869"
    assert len(frame) == HEADER_SIZE + 2
    # checksum = CRC32C(first 10 header bytes + payload)
    assert int.from_bytes(frame[10:14], "big") == crc32c.crc32c(frame[:10] + b"hi")


def test_binary_golden_fragment_and_keepalive():
    assert encode_binary(Message(MessageType.DATA, 7, b"abc", more=True)).hex() == (
        "00000003" "01" "01" "00000007" "1660d092" "616263"
    )
    assert encode_binary(Message(MessageType.KEEPALIVE)).hex() == "00000000040000000000" "5128c71c"


def test_message_type_numbers():
    assert [int(t) for t in MessageType] == [0x01, 0x02, 0x03, 0x04, 0x05, 0x10, 0x11]


def test_json_golden():
    line = encode_json(Message(MessageType.DATA, 1, b"hi", timestamp=1700000000.5))
    assert line == (
        b'{"version":"1.0","type":"DATA","seq":1,"timestamp":1700000000.5,'
        b'"payload":"hi","checksum":4120762818}\n'
    )
    err = encode_json(control(MessageType.ERROR, {"reason": "no"}))
    obj = json.loads(err)
    assert obj["payload"] == {"reason": "no"} and obj["type"] == "ERROR"
    assert isinstance(obj["timestamp"], float)
    binary = encode_json(Message(MessageType.DATA, 2, b"\xff\x00", timestamp=1.0))
    assert json.loads(binary)["encoding"] == "base64"
    assert json.loads(binary)["payload"] == "/wA="


# ------------------------------------------------------------------ round trips

messages = st.builds(
    Message,
    type=st.sampled_from(list(MessageType)),
    seq=st.integers(0, 2**32 - 1),
    payload=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=50).map(lambda s: s.encode("utf-8")),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3).map(
            lambda d: json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        ),
    ),
    more=st.booleans(),
    # fixed, so that JSON frames (and hence hypothesis' draws) are reproducible
    timestamp=st.just(1700000000.25),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(messages, max_size=8), st.sampled_from(["binary", "json"]), st.data())
def test_round_trip_any_split(msgs, fmt, data):
    codec = get_codec(fmt)
    stream = b"".join(codec.encode(m) for m in msgs)
    assert decode_all(stream, fmt) == msgs
    assert decode_all(stream, "auto") == msgs if msgs else True
    # fed in arbitrary pieces, the decoder yields the same messages
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = codec.decoder()
    out = []
    prev = 0
    for cut in cuts + [len(stream)]:
        out += dec.feed(stream[prev:cut])
        prev = cut
    dec.eof()
    assert out == msgs


def test_byte_at_a_time():
    msgs = [Message(MessageType.DATA, i, bytes([i]) * i, more=i % 2 == 0) for i in range(1, 20)]
    for fmt in ("binary", "json"):
        codec = get_codec(fmt)
        dec = codec.decoder()
        out = []
        for b in b"".join(map(codec.encode, msgs)):
            out += dec.feed(bytes([b]))
        assert out == msgs


# ------------------------------------------------------------------ errors


def test_binary_errors():
    good = encode_binary(Message(MessageType.DATA, 1, b"hello"))
    bad_crc = good[:-1] + b"X"
    with pytest.raises(ChecksumError):
        decode_all(bad_crc)
    with pytest.raises(CodecError, match="unknown message type"):
        decode_all(good[:4] + b"\x09" + good[5:])
    with pytest.raises(CodecError, match="flags"):
        decode_all(good[:5] + b"\x02" + good[6:])
    with pytest.raises(CodecError, match="inside a frame"):
        decode_all(good[:-1])
    with pytest.raises(FrameTooLarge):
        BinaryDecoder(max_payload=4).feed(good)
    # a failed decoder stays failed
    dec = BinaryDecoder()
    with pytest.raises(ChecksumError):
        dec.feed(bad_crc)
    with pytest.raises(ChecksumError):
        dec.feed(good)


def test_json_errors():
    with pytest.raises(UnsupportedVersion):
        JsonDecoder().feed(b'{"version":"2.0","type":"DATA","checksum":0}\n')
    with pytest.raises(ChecksumError):
        JsonDecoder().feed(b'{"version":"1.0","type":"DATA","seq":1,"payload":"x","checksum":1}\n')
    with pytest.raises(CodecError):
        JsonDecoder().feed(b"[1,2]\n")
    with pytest.raises(CodecError):
        JsonDecoder().feed(b'{"version":"1.0","type":"NOPE","checksum":0}\n')
    with pytest.raises(FrameTooLarge):
        JsonDecoder(max_payload=10).feed(b"{" + b" " * 5000)


def test_auto_detects_format():
    for fmt in ("binary", "json"):
        dec = AutoDecoder()
        msg = Message(MessageType.CONNECT, 0, b'{"a":1}')
        assert dec.feed(get_codec(fmt).encode(msg)) == [msg]
        assert dec.format == fmt


# ------------------------------------------------------------------ fuzz: never anything but CodecError


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["binary", "json", "auto"]),
       st.sampled_from([16, 1 << 24]))
def test_fuzz_arbitrary_bytes(data, fmt, limit):
    try:
        out = decode_all(data, fmt, max_payload=limit)
    except CodecError:
        return
    assert all(isinstance(m, Message) for m in out)


@settings(max_examples=300, deadline=None)
@given(messages, st.sampled_from(["binary", "json"]), st.data())
def test_fuzz_mutated_frames(msg, fmt, data):
    frame = bytearray(get_codec(fmt).encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    try:
        dec = get_codec(fmt).decoder()
        out = dec.feed(bytes(frame[:cut])) + dec.feed(bytes(frame[cut:]))
        dec.eof()
    except CodecError:
        return
    assert all(isinstance(m, Message) for m in out)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='{}[]":,0123456789.-truefalsnul\\ \nversiontypepayloadchecksumseq',
               max_size=200))
def test_fuzz_json_like_text(text):
    try:
        decode_all(text.encode(), "json")
    except CodecError:
        pass


# ------------------------------------------------------------------ fragmentation


@given(st.binary(max_size=2000), st.integers(1, 300))
def test_split_and_reassemble(payload, size):
    parts = split(payload, size)
    assert all(len(p) <= size for p in parts)
    r = Reassembler()
    results = [r.add(p, i < len(parts) - 1) for i, p in enumerate(parts)]
    assert results[:-1] == [None] * (len(parts) - 1)
    assert results[-1] == payload


def test_reassembly_limit():
    r = Reassembler(max_message=10)
    r.add(b"x" * 6, True)
    with pytest.raises(ValueError, match="exceeds"):
        r.add(b"x" * 6, True)
