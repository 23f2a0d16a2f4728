"""The transport-independent segment representation.

A `Segment` is what the core state machine consumes and produces. It carries
TCP's semantics (32-bit byte sequence numbers, flags, window, options) and
nothing about how it travels: `gannet.wire.datagram` puts it in a UDP
datagram with connection IDs and a CRC32C, and a raw-socket encoding can put
the same object in a real TCP header.
"""

from __future__ import annotations

from typing import Final

from enum import IntFlag

SEQ_MOD: Final = 1 << 32

# A payload as it travels: bytes, or a view into a received datagram or the
# send buffer (no copy).
Payload = bytes | bytearray | memoryview


# The control bits the core uses, as plain ints: `Final`, so the compiled
# modules have them inline (a module dictionary lookup each, otherwise).
FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10


class Flags(IntFlag):
    """Control bits, at TCP's bit positions (RFC 9293 section 3.1)."""

    FIN = FIN
    SYN = SYN
    RST = RST
    PSH = PSH
    ACK = ACK
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


# Segment's header and option fields (what __eq__ compares beside the
# payload; a compiled class has no __slots__ attribute to read them from).
_HEADER_FIELDS = (
    "seq", "ack", "flags", "wnd",
    "mss", "wscale", "sack_permitted", "sack", "tsval", "tsecr",
    "mode", "max_packet", "unknown_options",
)


class Segment:
    """One segment: header fields, options and payload.

    `seq` and `ack` are 32-bit wire values; the connection unwraps them to
    absolute positions on arrival. Option attributes are None when absent.
    `sack` is a tuple of (left, right) 32-bit edges (RFC 2018).
    """

    __slots__ = (
        "seq", "ack", "flags", "wnd", "payload",
        "mss", "wscale", "sack_permitted", "sack", "tsval", "tsecr",
        "mode", "max_packet", "unknown_options", "retry_token",
    )

    def __init__(
        self,
        seq: int = 0,
        ack: int = 0,
        flags: int = 0,
        wnd: int = 0,
        payload: Payload = b"",
        *,
        mss: int | None = None,
        wscale: int | None = None,
        sack_permitted: bool = False,
        sack: tuple[tuple[int, int], ...] = (),
        tsval: int | None = None,
        tsecr: int | None = None,
        mode: int | None = None,
        max_packet: int | None = None,
        unknown_options: tuple[tuple[int, bytes], ...] = (),
        retry_token: bytes | None = None,
    ) -> None:
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.wnd = wnd
        self.payload = payload
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        self.sack = sack
        self.tsval = tsval
        self.tsecr = tsecr
        self.mode = mode
        self.max_packet = max_packet
        self.unknown_options = unknown_options
        self.retry_token = retry_token

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies: data plus one each for SYN and FIN."""
        return len(self.payload) + (self.flags & SYN and 1) + (self.flags & FIN and 1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Segment):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in _HEADER_FIELDS) and bytes(
            self.payload
        ) == bytes(other.payload)

    def __repr__(self) -> str:
        names = [f.name for f in Flags if self.flags & f and f.name]
        parts = [f"seq={self.seq}", f"ack={self.ack}", "|".join(names) or "-", f"wnd={self.wnd}"]
        if self.payload:
            parts.append(f"len={len(self.payload)}")
        for name in ("mss", "wscale", "tsval", "tsecr", "mode", "max_packet"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value}")
        if self.sack_permitted:
            parts.append("sack_ok")
        if self.sack:
            parts.append(f"sack={list(self.sack)}")
        if self.retry_token is not None:
            parts.append(f"retry_token={self.retry_token.hex()}")
        return f"Segment({' '.join(parts)})"


def reset_for(seg: Segment) -> Segment | None:
    """The RST answering `seg` where no connection takes it (RFC 9293 3.10.7.1);
    None for a RST, which is never answered."""
    if seg.flags & RST:
        return None
    if seg.flags & ACK:
        return Segment(seg.ack, 0, RST)
    return Segment(0, (seg.seq + seg.seg_len) % SEQ_MOD, RST | ACK)


def seq_add(a: int, n: int) -> int:
    return (a + n) % SEQ_MOD


def seq_diff(a: int, b: int) -> int:
    """a - b in sequence space, as a signed number in [-2**31, 2**31)."""
    return ((a - b + (1 << 31)) % SEQ_MOD) - (1 << 31)


def seq_lt(a: int, b: int) -> bool:
    """RFC 9293's `a < b` with wrap-around (serial number arithmetic, RFC 1982)."""
    return seq_diff(a, b) < 0


def seq_le(a: int, b: int) -> bool:
    return seq_diff(a, b) <= 0


def unwrap(value32: int, reference: int) -> int:
    """The absolute position nearest `reference` whose low 32 bits are `value32`.

    The core keeps sequence positions as unbounded integers so that range
    arithmetic never has to think about wrap-around; this is the one place
    where 32-bit wire values become positions.
    """
    return reference + ((value32 - reference + (1 << 31)) % SEQ_MOD) - (1 << 31)


class SegmentRun:
    """Consecutive full-size data segments that differ only in sequence number.

    A bulk sender emits many segments with the same ACK, window and
    timestamps; describing them as one run (`count` segments of `mss` bytes
    from `buf[offset:offset + length]`, the last maybe shorter) lets an
    encoding write them in one pass. `flags` is every segment's flags but the
    last one's, which is `last_flags` (PSH at the end of the written data).
    `buf` is the sender's buffer: encode the run before that buffer changes.
    """

    __slots__ = ("seq", "ack", "flags", "last_flags", "wnd", "tsval", "tsecr",
                 "buf", "offset", "length", "mss")

    def __init__(self, seq: int, ack: int, flags: int, last_flags: int, wnd: int,
                 tsval: int, tsecr: int, buf: Payload, offset: int, length: int,
                 mss: int) -> None:
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.last_flags = last_flags
        self.wnd = wnd
        self.tsval = tsval
        self.tsecr = tsecr
        self.buf = buf
        self.offset = offset
        self.length = length
        self.mss = mss

    @property
    def count(self) -> int:
        return -(-self.length // self.mss)

    def segments(self) -> list[Segment]:
        """The run as separate segments (for encodings without a batch form)."""
        out = []
        data = bytes(self.buf[self.offset : self.offset + self.length])
        last = self.count - 1
        for i in range(last + 1):
            chunk = data[i * self.mss : (i + 1) * self.mss]
            out.append(Segment((self.seq + i * self.mss) % SEQ_MOD, self.ack,
                               self.last_flags if i == last else self.flags, self.wnd, chunk,
                               tsval=self.tsval, tsecr=self.tsecr))
        return out

    def __repr__(self) -> str:
        return f"SegmentRun(seq={self.seq} count={self.count} mss={self.mss} len={self.length})"
