"""Inputs that broke a decoder, kept: each is replayed through its fuzz
check (targets.py) and the behaviour it got wrong is asserted directly."""

from __future__ import annotations

import random

import pytest
import targets

from gannet.apps.chat import framing
from gannet.apps.messages import codec
from gannet.apps.transfer import protocol
from gannet.config import Config
from gannet.core.endpoint import Endpoint
from gannet.core.states import State
from gannet.wire import Segment, WireError, batch, decode, encode
from gannet.wire.segment import ACK, RST, SYN

# Found by the batch harness: an empty buffer made scan divide by zero.
EMPTY_BATCH = b""

# Found by the endpoint harness: a zero-length datagram between others
# vanished in coalesce (the simulator's GRO), so it was neither received nor
# counted.
ZERO_LENGTH_AMONG_OTHERS = bytes.fromhex(
    "010102ffff80000000000000000000000000300080000000000205"
    "6a756e6b21" "0700" "6a756e6b21")

# Found by the handshake harness: a SYN-ACK with source connection ID 0 was
# taken, the client learnt 0 as its peer's ID, and every segment it sent
# after was addressed to no connection (short-form datagrams that do not decode).
SYN_ACK_FROM_ID_ZERO = bytes.fromhex(
    "0012ffff000004d201001c00000000000063020205780301010108080000000000"
    "0500fb5d0101210205c00000")

# Found by the chat harness: an escaped lone surrogate in a frame's JSON
# parsed, and sending the object back (or printing it) raised UnicodeEncodeError.
LONE_SURROGATE_HELLO = b'd\x01\x00\x00\x005{"name":"bob","ngnce":5,"version":1,"con\\ud800":true}\x02d":1.5'

# JSON nested past Python's recursion limit: json.loads raises RecursionError,
# which the transfer line, chat frame and message-body decoders let escape.
DEEP = b"[" * 3000


def test_scan_of_an_empty_buffer_is_one_empty_datagram():
    targets.check_batch(EMPTY_BATCH)
    (group,) = batch.scan(b"", 0)
    assert group[6] is None and len(group[7]) == 0
    with pytest.raises(WireError):
        decode(bytes(group[7]))


def test_coalesce_keeps_a_zero_length_datagram():
    targets.check_endpoint(ZERO_LENGTH_AMONG_OTHERS)
    d = encode(1, 2, Segment(1, 2, ACK, 5, b"x"))
    groups = batch.coalesce([d, b"", d])
    assert [len(buf) for buf, _ in groups] == [len(d), 0, len(d)]
    client, cconn, server, sconn, now = targets.established_pair()
    dropped = server.stats.malformed_dropped
    for buf, size in batch.coalesce([b"junk!", b"", b"junk"]):
        server.receive_batch(buf, size, targets.CLIENT, now)
    assert server.stats.malformed_dropped - dropped == 3


def test_syn_ack_from_connection_id_zero_is_dropped():
    targets.check_handshake(SYN_ACK_FROM_ID_ZERO)
    ep = Endpoint(Config(), rng=random.Random(7))
    conn = ep.connect(targets.SERVER, 0.0)
    _, src, syn = decode(ep.datagrams_to_send(0.0)[0][0])
    synack = Segment(1000, (syn.seq + 1) % 2**32, SYN | ACK, 65535, mss=1400)
    ep.receive_datagram(encode(conn.local_cid, 0, synack), targets.SERVER, 0.01)
    assert conn.state is State.SYN_SENT and not conn.remote_cid
    assert ep.stats.malformed_dropped == 1
    # The RST an endpoint without the connection sends (source ID 0) still refuses it.
    ep.receive_datagram(encode(conn.local_cid, 0, Segment(0, (syn.seq + 1) % 2**32, RST | ACK)),
                        targets.SERVER, 0.02)
    ep.datagrams_to_send(0.02)
    assert conn.state is State.CLOSED and ep.connection_count == 0


def test_chat_frame_with_a_lone_surrogate_is_a_framing_error():
    targets.check_chat(LONE_SURROGATE_HELLO)
    frame = framing.Frame(framing.FrameType.MESSAGE, b'{"text":"a\\ud800"}')
    with pytest.raises(framing.FramingError):
        frame.json()
    # A surrogate pair is a character, and stays one.
    assert framing.Frame(framing.FrameType.MESSAGE, b'{"text":"\\ud83d\\ude00"}').json() == {"text": "\U0001F600"}


def test_transfer_path_with_a_lone_surrogate_is_rejected():
    line = b'{"protocol":"gannet-transfer","version":1,"files":[{"path":"a\\ud800","size":1}]}'
    targets.check_transfer(b"\0" + line)
    with pytest.raises(protocol.ProtocolError, match="invalid character"):
        protocol.parse_header(protocol.decode_line(line + b"\n"))
    # A name the sender read from a non-UTF-8 directory (surrogate-escaped) still passes.
    assert protocol.check_path("caf\udce9") == "caf\udce9"


def test_json_nested_too_deep_raises_each_decoders_own_error():
    targets.check_transfer(b"\0" + DEEP)
    targets.check_chat(b"\0" + framing.encode(framing.FrameType.MESSAGE, DEEP))
    targets.check_messages(b"\0\0" + codec.encode_binary(codec.Message(codec.MessageType.CONNECT, 0, DEEP)))
    targets.check_negotiation(b"\0" + DEEP)
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_line(DEEP + b"\n")
    with pytest.raises(framing.FramingError):
        framing.Frame(framing.FrameType.MESSAGE, DEEP).json()
    with pytest.raises(codec.CodecError):
        codec.Message(codec.MessageType.CONNECT, 0, DEEP).json_body()
