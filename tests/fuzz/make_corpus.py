"""Write the hand-made part of the seed corpus (tests/fuzz/corpus/TARGET/*):
valid inputs in each target's input format, made with Gannet's own encoders,
for libFuzzer to start its mutations from.

    python tests/fuzz/make_corpus.py

The files are checked in, with inputs a long run found that reach code these
do not (merged with libFuzzer's -merge=1, see docs/robustness.md). When a
target's input format changes, empty its folder and run this again.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import targets
from gannet.apps.chat import framing
from gannet.apps.messages import codec, negotiation
from gannet.apps.transfer import protocol
from gannet.wire import Segment, encode
from gannet.wire.batch import coalesce, encode_run
from gannet.wire.segment import SegmentRun

HERE = Path(__file__).parent / "corpus"
# JSON nested deeper than Python's recursion limit: json.loads raises
# RecursionError, which every JSON decoder here must turn into its own error.
DEEP = b"[" * 3000


def segments() -> list[Segment]:
    return [
        Segment(0x01020304, 0, 0x02, 65535, mss=1400, wscale=7, sack_permitted=True, tsval=5, tsecr=0,
                mode=1, max_packet=1472),
        Segment(7, 0x01020305, 0x12, 65535, mss=1400, wscale=7, sack_permitted=True, tsval=9, tsecr=5),
        Segment(100, 200, 0x18, 512, b"hello", tsval=0x11223344, tsecr=1),
        Segment(100, 200, 0x10, 512, b"", sack=((300, 400), (500, 600)), tsval=1, tsecr=2),
        Segment(1, 0, 0x04),
        Segment(1, 2, 0x14),
        Segment(5, 6, 0x11, 10, b"bye", tsval=3, tsecr=4),
        Segment(5, 6, 0x10, 10, b"x" * 40, unknown_options=((0x40, b"\xab\xcd"),)),
    ]


def wire() -> list[bytes]:
    out = [encode(9, 8, s)[:-4] for s in segments()]
    out.append(encode(0, 8, segments()[0])[:-4])
    return out


def batch_inputs() -> list[bytes]:
    out = []
    for mss, length, last_flags in ((10, 80, 0x18), (10, 75, 0x18), (1200, 9600, 0x10), (16, 48, 0x18)):
        buf = bytearray(range(256)) * 40
        run = SegmentRun(0xFFFFFF00, 77, 0x10, last_flags, 1000, 5, 6, buf, 3, length, mss)
        train = encode_run(42, run)
        out.append(struct.pack("!HB", train.size, 0) + bytes(train))
    mixed = [encode(42, 1, Segment(1000 + 5 * i, 9, 0x10, 7, b"abcde", tsval=i, tsecr=0)) for i in range(9)]
    mixed.insert(4, encode(42, 1, Segment(9, 9, 0x11, 7, b"", tsval=1, tsecr=0)))
    for buf, size in coalesce(mixed):
        out.append(struct.pack("!HB", size, 0) + buf)
    return out


def short_script(flags: int, payload: bytes, seq_delta: int = 0, ack_delta: int = 0) -> bytes:
    return (bytes([0, flags]) + struct.pack("!HHHI", 0xFFFF, 0x8000 + seq_delta, 0x8000 + ack_delta, 7)
            + bytes([len(payload)]) + payload)


def long_script(flags: int, opts: bytes, payload: bytes, seq_delta: int = 0) -> bytes:
    return (bytes([1, flags]) + struct.pack("!HHH", 0xFFFF, 0x8000 + seq_delta, 0x8000)
            + bytes([len(opts)]) + opts + bytes([0]) + bytes([len(payload)]) + payload)


def endpoint() -> list[bytes]:
    sack = bytes([5, 8]) + struct.pack("!II", 1, 2)
    ts = bytes([1, 1, 8, 8]) + struct.pack("!II", 9, 9)
    out = []
    for batched in (0, 1):
        out.append(bytes([batched]) + short_script(0x18, b"data" * 10) + short_script(0x18, b"more", 40))
        out.append(bytes([batched]) + short_script(0x10, b"", 0, 0) + short_script(0x11, b"", 0, 0))
        out.append(bytes([batched]) + long_script(0x10, sack + ts, b"") + long_script(0x14, b"", b""))
        out.append(bytes([batched]) + long_script(0x02, b"", b"") + bytes([2, 5]) + b"junk!"
                   + bytes([3, 5]) + b"junk!")
        out.append(bytes([batched]) + short_script(0x18, b"z" * 200, 100) + short_script(0x18, b"y" * 100))
    return out


def handshake() -> list[bytes]:
    syn = encode(0, 8, segments()[0])
    opts = syn[24:-4]
    out = []
    for passive, flags in ((1, 0x02), (0, 0x12), (0, 0x02), (0, 0x14), (1, 0x12)):
        out.append(bytes([passive, flags]) + struct.pack("!HIBII", 65535, 1234, 1, 0, 99)
                   + bytes([len(opts)]) + opts + bytes([0, 0]))
    out.append(bytes([0, 0x12]) + struct.pack("!HIBII", 65535, 1234, 1, 0, 99)
               + bytes([8]) + bytes([2, 2, 0, 1, 33, 2, 0, 20]) + bytes([0, 1]))  # MSS 1, max packet 20
    return out


def messages() -> list[bytes]:
    msgs = [
        codec.Message(codec.MessageType.DATA, 1, b"hello"),
        codec.Message(codec.MessageType.DATA, 2, b"\xff\x00binary", more=True),
        codec.control(codec.MessageType.CONNECT, negotiation.Offer().to_body()),
        codec.Message(codec.MessageType.ACK, 3),
        codec.control(codec.MessageType.ERROR, {"reason": "no"}),
    ]
    out = []
    for mode, fmt in ((0, "binary"), (1, "json"), (2, "binary"), (2, "json"), (0x80, "binary")):
        c = codec.get_codec(fmt)
        stream = b"".join(c.encode(codec.Message(m.type, m.seq, m.payload, m.more, 1.5)) for m in msgs)
        out.append(bytes([mode, 128]) + stream)
    out.append(b"\0\0" + codec.encode_binary(codec.Message(codec.MessageType.CONNECT, 0, DEEP)))
    return out


def negotiation_inputs() -> list[bytes]:
    params = negotiation.negotiate(negotiation.Offer(negotiation.BURST, 1400, 16), negotiation.Limits(), "ab")
    return [
        b"\0" + codec.dump_body(negotiation.Offer().to_body()),
        b"\0" + codec.dump_body(negotiation.Offer(negotiation.BURST, 100, 100, 60.0, "me", "json").to_body()),
        b"\1" + codec.dump_body(params.to_body()),
        b"\0" + DEEP,
    ]


def transfer() -> list[bytes]:
    files = [protocol.FileEntry("a.txt", 10, 0o644), protocol.FileEntry("d/b.bin", 1 << 40, 0o755)]
    header = protocol.encode_header(files, ["d", "e"], ["zstd"])
    reply = json.dumps({"ok": True, "compression": "zstd", "have": {"1": [100, "ab" * 32]}}).encode() + b"\n"
    return [
        b"\0" + header[:-1],
        b"\1" + header,
        b"\0" + reply[:-1],
        b"\2" + protocol.frame_head(protocol.DATA, 1024),
        b"\2" + protocol.frame_head(protocol.START, 13),
        b"\3" + protocol.start_payload(1, 4096, protocol.CODEC_ZSTD),
        b"\0" + DEEP,
        b"\0" + b'{"protocol":"gannet-transfer","version":1,"files":[{"path":"a\\ud800","size":1}]}',
    ]


def chat() -> list[bytes]:
    F = framing.FrameType
    stream = b"".join([
        framing.encode_json(F.HELLO, {"name": "bob", "nonce": 5, "version": 1, "connected": True}),
        framing.encode_json(F.SELECT, {}),
        framing.encode_json(F.MESSAGE, {"text": "hi \u00e9", "time": 1.5}),
        framing.encode_json(F.OFFER, {"id": 1, "name": "f.txt", "size": 10}),
        framing.encode_chunk(1, b"0123456789"),
        framing.encode_json(F.END, {"id": 1, "sha256": "00" * 32}),
        framing.encode(F.BYE),
    ])
    return [bytes([100]) + stream, bytes([0]) + stream[:40], bytes([0]) + framing.encode(F.MESSAGE, DEEP),
            bytes([0]) + framing.encode(F.MESSAGE, b'{"text":"\\ud800"}')]


SEEDS = {
    "wire": wire,
    "batch": batch_inputs,
    "handshake": handshake,
    "endpoint": endpoint,
    "messages": messages,
    "negotiation": negotiation_inputs,
    "transfer": transfer,
    "chat": chat,
}


def main() -> None:
    assert set(SEEDS) == set(targets.TARGETS)
    for name, make in SEEDS.items():
        folder = HERE / name
        folder.mkdir(parents=True, exist_ok=True)
        for data in make():
            targets.TARGETS[name](data)  # every seed passes its check
            (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)


if __name__ == "__main__":
    main()
