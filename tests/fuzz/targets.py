"""What every decoder is held to, once: the property tests and the atheris
harnesses both call these.

Each `check_<name>(data)` takes arbitrary bytes. The input either decodes, and
what it decodes to re-encodes consistently (where an encoder exists), or the
decoder raises its module's own error type (`WireError`, `ProtocolError`,
`CodecError`, `FramingError`, `Refused`/`ValueError`). Any other exception,
or an AssertionError raised here, is a bug: the fuzzer reports it with the
input, and a regression test keeps that input.

The inputs are bytes so that libFuzzer can mutate them; where the decoder
sits behind a checksum (the wire format's CRC32C trailer), the check
computes the checksum itself so that mutations reach the parser behind it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random

from crc32c import crc32c

from gannet.apps.chat import framing
from gannet.apps.messages import codec, negotiation
from gannet.apps.transfer import protocol
from gannet.apps.transfer.sender import _parse_have
from gannet.config import Config
from gannet.core.endpoint import Endpoint
from gannet.core.states import State
from gannet.wire import batch
from gannet.wire.datagram import HEADER, SHORT, SHORT_FORM, VERSION, WireError, decode, encode, peek_short

CLIENT = ("10.0.0.1", 1000)
SERVER = ("10.0.0.2", 2000)
STRANGER = ("10.6.6.6", 666)


class Reader:
    """Fields taken from the front of fuzz input; zeros once it runs out,
    so every input, however short, is a valid script."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def int(self, n: int) -> int:
        return int.from_bytes(self.take(n).ljust(n, b"\0"), "big")

    def rest(self) -> bytes:
        return self.take(len(self.data))

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def with_crc(body: bytes) -> bytes:
    """`body` made a datagram that passes the checksum (wire/datagram.py: the
    CRC32C of everything before it, stored least significant byte first)."""
    return body + crc32c(body).to_bytes(4, "little")


# ------------------------------------------------------------------ wire
def check_wire(data: bytes) -> None:
    """One datagram: the fuzz input with its CRC32C trailer computed."""
    check_datagram(with_crc(data))


def check_datagram(datagram: bytes) -> None:
    head = peek_short(datagram)
    try:
        dst, src, seg = decode(datagram)
    except WireError:
        assert head is None, "peek_short accepted a datagram decode rejects"
        return
    if head is not None:
        assert src is None
        assert head == (dst, seg.flags, seg.seq, seg.ack, seg.wnd, seg.tsval)
    # Re-encoded, it decodes to the same segment; a second round is byte-exact.
    again = encode(dst, src or 0, seg)
    dst2, src2, seg2 = decode(again)
    if src2 is None:  # the short form, which carries neither the source ID nor TSecr
        src, seg.tsecr = None, None
    assert (dst2, src2, seg2) == (dst, src, seg), (dst, src, seg, dst2, src2, seg2)
    assert encode(dst2, src2 or 0, seg2) == again


# ------------------------------------------------------------------ GRO batches
def check_batch(data: bytes) -> None:
    """A GRO-shaped batch for `wire.batch.scan`: 2 bytes of segment size, 1
    byte of rows (the first eight) whose trailers are left as they are, then
    the buffer, each row's CRC32C trailer computed unless so marked."""
    r = Reader(data)
    seg = r.int(2) % 4096
    keep = r.int(1)
    buf = bytearray(r.rest())
    step = seg if 0 < seg < len(buf) else len(buf)
    for i, off in enumerate(range(0, len(buf), step or 1)):
        row = buf[off : off + step]
        if len(row) >= 4 and not (i < 8 and keep >> i & 1):
            buf[off + len(row) - 4 : off + len(row)] = crc32c(bytes(row[:-4])).to_bytes(4, "little")
    groups = batch.scan(bytes(buf), seg)
    assert b"".join(bytes(g[7]) for g in groups) == bytes(buf), "scan lost or reordered bytes"
    for dst, seq, ack, wnd, ts0, ts1, joined, raw in groups:
        parts = batch.rows(raw, step) if step else [raw]
        if joined is None:
            assert len(parts) == 1, "a datagram left for decode is not one datagram"
            check_datagram(bytes(parts[0]))
            continue
        # A run: every row is a valid short-form data segment continuing the last.
        expect_seq = seq
        payloads = []
        for k, part in enumerate(parts):
            d, s, sg = decode(part)  # must not raise: scan verified it
            assert s is None and d == dst and sg.ack == ack and sg.wnd == wnd
            assert sg.flags in (0x10, 0x18) and sg.payload, sg
            assert sg.seq == expect_seq
            if k == 0:
                assert sg.tsval == ts0
            if k == len(parts) - 1:
                assert sg.tsval == ts1
            expect_seq = (expect_seq + len(sg.payload)) & 0xFFFFFFFF
            payloads.append(sg.payload)
        assert b"".join(payloads) == joined


# ------------------------------------------------------------------ endpoints
def _pump(a: Endpoint, a_addr, b: Endpoint, b_addr, now: float, rounds: int = 40) -> float:
    """Datagrams both ways without loss, timers run, until both are quiet.
    Every datagram an endpoint sends must itself decode."""
    for _ in range(rounds):
        moved = False
        for src_ep, src_addr, dst_ep in ((a, a_addr, b), (b, b_addr, a)):
            if src_ep is None:
                continue
            for d, to in src_ep.datagrams_to_send(now):
                decode(d)  # what Gannet sends is valid (raises WireError if not)
                moved = True
                if dst_ep is not None:
                    dst_ep.receive_datagram(d, src_addr, now)
        if not moved:
            timers = [t for t in (a.get_timer(), b.get_timer() if b is not None else None) if t is not None]
            if not timers or min(timers) > now + 5:
                return now
            now = max(now, min(timers))
            a.handle_timer(now)
            if b is not None:
                b.handle_timer(now)
        else:
            now += 0.001
    return now


def established_pair(seed: int = 1):
    """A client and a server endpoint with one established connection."""
    config = Config(pmtud=False)
    client = Endpoint(config, rng=random.Random(seed))
    server = Endpoint(config, rng=random.Random(seed + 1))
    server.listen()
    cconn = client.connect(SERVER, 0.0)
    now = _pump(client, CLIENT, server, SERVER, 0.0, rounds=10)
    sconn = server.accept()
    assert sconn is not None and cconn.state is State.ESTABLISHED and sconn.state is State.ESTABLISHED
    return client, cconn, server, sconn, now


def _forged(r: Reader, cconn, sconn) -> bytes:
    """One datagram for the server, from a script: a segment of the live
    connection (short or long form, options as raw bytes), or raw bytes."""
    kind = r.int(1) % 4
    if kind == 0:  # short form, right IDs, sequence numbers near the live ones
        flags, wnd = r.int(1), r.int(2)
        seq = (sconn.rcv_nxt + r.int(2) - 0x8000) & 0xFFFFFFFF
        ack = (cconn.rcv_nxt + r.int(2) - 0x8000) & 0xFFFFFFFF
        body = SHORT.pack(SHORT_FORM, flags, wnd, sconn.local_cid, seq, ack, r.int(4)) + r.take(r.int(1))
        return with_crc(body)
    if kind == 1:  # long form, right IDs, raw options
        flags, wnd = r.int(1), r.int(2)
        seq = (sconn.rcv_nxt + r.int(2) - 0x8000) & 0xFFFFFFFF
        ack = (cconn.rcv_nxt + r.int(2) - 0x8000) & 0xFFFFFFFF
        opts = r.take(r.int(1) % 64)
        opts += bytes(-len(opts) % 4)
        dst = sconn.local_cid if r.int(1) < 240 else r.int(4)
        head = HEADER.pack(VERSION, flags, HEADER.size + len(opts), dst, sconn.remote_cid, seq, ack, wnd, 0)
        return with_crc(head + opts + r.take(r.int(1)))
    body = r.take(r.int(1))
    return with_crc(body) if kind == 2 else body


def _deliver(server: Endpoint, datagrams: list[bytes], as_batches: int, now: float) -> None:
    if as_batches:
        for buf, size in batch.coalesce(datagrams):
            server.receive_batch(buf, size, CLIENT, now)
    else:
        for d in datagrams:
            server.receive_datagram(d, CLIENT, now)


def check_endpoint(data: bytes) -> None:
    """Arbitrary datagrams at the server end of an established connection,
    one at a time or as GRO batches: nothing escapes, each invalid one is
    counted as malformed, the batch path ends where one at a time does, and
    if all were invalid the connection carries data both ways as if nothing
    had happened."""
    r = Reader(data)
    as_batches = r.int(1) & 1
    client, cconn, server, sconn, now = established_pair()
    datagrams = []
    while r.left and len(datagrams) < 32:
        datagrams.append(_forged(r, cconn, sconn))
    invalid = 0
    connectionless = 0
    for d in datagrams:
        try:
            dst, _, _ = decode(d)
        except WireError:
            invalid += 1
        else:
            connectionless += dst == 0
    before = server.stats.malformed_dropped
    received = server.stats.datagrams_received
    _deliver(server, datagrams, as_batches, now)
    dropped = server.stats.malformed_dropped - before
    assert server.stats.datagrams_received - received == len(datagrams)
    assert invalid <= dropped <= invalid + connectionless, (invalid, dropped, connectionless)
    # The same datagrams the other way (Endpoint.receive_batch: "same result
    # as receive_datagram on each"): same bytes delivered, same counters.
    _, _, other, other_conn, _ = established_pair()
    _deliver(other, datagrams, not as_batches, now)
    assert (other_conn.state, other.stats.as_dict(), other_conn.readable_bytes) == (
        sconn.state, server.stats.as_dict(), sconn.readable_bytes)
    assert other_conn.recv(1 << 20) == sconn.recv(1 << 20)
    now = _pump(client, CLIENT, server, SERVER, now)
    if invalid < len(datagrams):
        # Valid forged segments may have changed the connection (that is
        # what they are for); both ends must still run without an exception.
        if cconn.state is State.ESTABLISHED:
            cconn.send(b"after")
        _pump(client, CLIENT, server, SERVER, now)
        return
    assert sconn.state is State.ESTABLISHED and cconn.state is State.ESTABLISHED
    cconn.send(b"ping" * 500)
    sconn.send(b"pong" * 500)
    _pump(client, CLIENT, server, SERVER, now)
    assert sconn.recv(1 << 20) == b"ping" * 500
    assert cconn.recv(1 << 20) == b"pong" * 500


def check_handshake(data: bytes) -> None:
    """A forged opening segment (any flags, options as raw bytes) at a
    listening endpoint, or a forged answer to a connecting one's SYN; the
    endpoint then runs its timers and, once established, sends data. Nothing
    escapes, and every datagram it sends decodes."""
    r = Reader(data)
    passive = r.int(1) & 1
    flags, wnd, seq = r.int(1), r.int(2), r.int(4)
    right_ack = r.int(1) & 1
    raw_ack = r.int(4)
    src = r.int(4)
    opts = r.take(r.int(1) % 64)
    opts += bytes(-len(opts) % 4)
    payload = r.take(r.int(1))
    config = Config(pmtud=bool(r.int(1) & 1))
    ep = Endpoint(config, rng=random.Random(7))
    if passive:
        ep.listen()
        dst, peer = 0, CLIENT
        ack = raw_ack
        conn = None
    else:
        conn = ep.connect(SERVER, 0.0)
        syn = ep.datagrams_to_send(0.0)[0][0]
        _, _, syn_seg = decode(syn)
        dst, peer = conn.local_cid, SERVER
        ack = (syn_seg.seq + 1) & 0xFFFFFFFF if right_ack else raw_ack
    head = HEADER.pack(VERSION, flags, HEADER.size + len(opts), dst, src, seq, ack, wnd, 0)
    ep.receive_datagram(with_crc(head + opts + payload), peer, 0.01)
    if conn is None:
        conn = next(iter(ep.connections), None)
    if conn is not None and conn.state is State.ESTABLISHED:
        conn.send(bytes(5000))
    _pump(ep, peer, None, None, 0.01, rounds=30)


# ------------------------------------------------------------------ messages
def check_messages(data: bytes) -> None:
    """The message codecs: a stream fed in two parts to the binary, JSON or
    auto-detecting decoder."""
    r = Reader(data)
    mode = r.int(1)
    fmt = ("binary", "json", "auto")[mode % 3]
    limit = 16 if mode & 0x80 else codec.DEFAULT_MAX_PAYLOAD
    cut = r.int(1)
    stream = r.rest()
    cut = cut * len(stream) // 255
    dec = codec.AutoDecoder(limit) if fmt == "auto" else codec.get_codec(fmt).decoder(limit)
    out = []
    try:
        out += dec.feed(stream[:cut])
        out += dec.feed(stream[cut:])
        dec.eof()
    except codec.CodecError:
        pass
    used = fmt if fmt != "auto" else dec.format
    for msg in out:
        assert len(msg.payload) <= limit
        if used == "binary":
            pass  # checked as a whole below
        else:
            assert codec.decode_json_line(codec.encode_json(msg)[:-1]) == msg
        if msg.type is not codec.MessageType.DATA:
            try:
                msg.json_body()
            except codec.CodecError:
                pass
    if used == "binary":
        encoded = b"".join(codec.encode_binary(m) for m in out)
        assert stream.startswith(encoded), "binary messages do not re-encode to their bytes"


def check_negotiation(data: bytes) -> None:
    """The message protocol's handshake: a CONNECT body through
    Offer.from_body and negotiate, and an ACCEPT body through
    Params.from_body; the server's answer is one the client accepts."""
    r = Reader(data)
    which = r.int(1) & 1
    try:
        body = codec.Message(codec.MessageType.CONNECT, 0, r.rest()).json_body()
    except codec.CodecError:
        return
    if which == 0:
        try:
            offer = negotiation.Offer.from_body(body)
            params = negotiation.negotiate(offer, negotiation.Limits(), "s")
        except negotiation.Refused:
            return
        negotiation.check_accept(offer, params)
        assert negotiation.Params.from_body(json.loads(codec.dump_body(params.to_body()))) == params
        assert negotiation.Offer.from_body(offer.to_body()) == offer
    else:
        try:
            params = negotiation.Params.from_body(body)
        except ValueError:
            return
        assert negotiation.Params.from_body(params.to_body()) == params


# ------------------------------------------------------------------ file transfer
def check_transfer(data: bytes) -> None:
    """The transfer protocol: a header or reply line, a frame head, a START payload."""
    r = Reader(data)
    kind = r.int(1) % 4
    rest = r.rest()
    if kind in (0, 1):
        line = rest + b"\n" if kind == 0 else rest
        try:
            obj = protocol.decode_line(line)
        except protocol.ProtocolError:
            return
        try:
            _parse_have(obj.get("have", {}), 10)
        except protocol.ProtocolError:
            pass
        try:
            header = protocol.parse_header(obj)
        except protocol.ProtocolError:
            return
        for path in [f.path for f in header.files] + header.dirs:
            os.fsencode(path)  # an accepted path names a file here
        again = protocol.encode_header(header.files, header.dirs, header.compression)
        assert protocol.parse_header(protocol.decode_line(again)) == header
    elif kind == 2:
        head = rest[: protocol.FRAME_HEAD.size].ljust(protocol.FRAME_HEAD.size, b"\0")
        try:
            ftype, length = protocol.parse_frame_head(head)
        except protocol.ProtocolError:
            return
        assert protocol.frame_head(ftype, length) == head
    else:
        try:
            index, offset, codec_id = protocol.parse_start(rest)
        except protocol.ProtocolError:
            return
        assert protocol.start_payload(index, offset, codec_id) == rest


# ------------------------------------------------------------------ chat
def check_chat(data: bytes) -> None:
    """Chat framing: a stream fed in two parts; every frame re-encodes to
    its bytes, and its payload parses as the frame type says or raises
    FramingError."""
    r = Reader(data)
    cut = r.int(1)
    stream = r.rest()
    cut = cut * len(stream) // 255
    dec = framing.Decoder()
    frames = []
    try:
        frames += dec.feed(stream[:cut])
        frames += dec.feed(stream[cut:])
    except framing.FramingError:
        pass
    encoded = b"".join(framing.encode(f.type, f.payload) for f in frames)
    assert stream.startswith(encoded), "frames do not re-encode to their bytes"
    # read_frame, the stream reader's way, reads the same frames and stops
    # where the decoder does.
    reader = _StreamBytes(stream)
    read: list[framing.Frame] = []
    try:
        while (frame := _run(framing.read_frame(reader))) is not None:
            read.append(frame)
    except (framing.FramingError, asyncio.IncompleteReadError):
        pass
    assert read == frames, (read, frames)
    for f in frames:
        if f.type is framing.FrameType.CHUNK:
            try:
                tid, chunk = f.chunk()
            except framing.FramingError:
                continue
            assert framing.encode_chunk(tid, chunk) == framing.encode(f.type, f.payload)
            continue
        try:
            obj = f.json()
        except framing.FramingError:
            continue
        again = framing.Decoder().feed(framing.encode_json(f.type, obj))
        assert [json.dumps(g.json(), sort_keys=True) for g in again] == [json.dumps(obj, sort_keys=True)]


class _StreamBytes:
    """The one method of asyncio.StreamReader that read_frame uses, over bytes."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    async def readexactly(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        if len(chunk) < n:
            raise asyncio.IncompleteReadError(chunk, n)
        return chunk


def _run(coro):
    """Run a coroutine that never waits (its reads are from memory) to its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the coroutine waited")


TARGETS = {
    "wire": check_wire,
    "batch": check_batch,
    "handshake": check_handshake,
    "endpoint": check_endpoint,
    "messages": check_messages,
    "negotiation": check_negotiation,
    "transfer": check_transfer,
    "chat": check_chat,
}
