"""TCP's own encoding of a segment (RFC 9293 section 3.1), for raw IP.

The same `Segment` the UDP encoding carries goes in a real TCP header, so the
core state machine talks to a kernel TCP peer unchanged. The header, network
byte order:

     0: source port (16)   destination port (16)
     4: sequence number (32)
     8: acknowledgment number (32)
    12: data offset (4)  reserved (4)  control bits (8)  window (16)
    16: checksum (16)   urgent pointer (16)
    20: options, up to data offset * 4 (at most 40 bytes)

The checksum is the 16-bit one's complement of the one's complement sum over
a pseudo-header (source and destination address, protocol 6, TCP length)
and the whole segment (RFC 9293 3.1; RFC 8200 8.1 for IPv6). A one's
complement sum of 16-bit words is the value of the byte string, read as one
big-endian number, modulo 0xFFFF (2**16 is 1 modulo 0xFFFF), which Python
computes in C: no per-word loop.

Options (RFC 9293 3.2, RFC 7323, RFC 2018): EOL, NOP, MSS, window scale,
SACK-permitted, SACK blocks and timestamps are understood; other kinds are
skipped (kept in `Segment.unknown_options`). Gannet's UDP-only options
(operation mode, max packet size) have no TCP form and are not sent.

`decode` raises `TcpWireError`, and nothing else, for any input that is not
a valid segment; the message says why.
"""

from __future__ import annotations

import ipaddress
import struct

from .segment import Segment

HEADER = struct.Struct("!HHIIBBHHH")
HEADER_SIZE = HEADER.size  # 20
MAX_OPTIONS = 40  # data offset is 4 bits of 32-bit words: 60 bytes of header at most
PROTO_TCP = 6

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERMITTED = 4
OPT_SACK = 5
OPT_TIMESTAMPS = 8
MAX_WSCALE = 14  # RFC 7323 2.3: a larger shift is used as 14
TS_OPTION_SIZE = 12  # NOP NOP TS: what a timestamped segment's options take

_PORTS = struct.Struct("!HH")
_U16 = struct.Struct("!H")
_U32X2 = struct.Struct("!II")
_TS_ALIGNED = struct.Struct("!BBBBII")  # NOP NOP kind len TSval TSecr
_TS_PREFIX = b"\x01\x01\x08\x0a"
_HEADER_TS = struct.Struct("!HHIIBBHHHBBBBII")  # the header with NOP NOP TS after it


class TcpWireError(ValueError):
    """Bytes that are not a valid TCP segment. The message says why."""


def pseudo_sum(src: bytes, dst: bytes, length: int) -> int:
    """The pseudo-header's contribution to the checksum, modulo 0xFFFF:
    the addresses (4 or 16 bytes each), the protocol and the TCP length."""
    return (int.from_bytes(src, "big") + int.from_bytes(dst, "big") + PROTO_TCP + length) % 0xFFFF


def checksum(segment: bytes | bytearray | memoryview, src: bytes, dst: bytes) -> int:
    """The checksum field's value for `segment` (its checksum field zero)."""
    n = len(segment)
    total = int.from_bytes(segment, "big")
    if n & 1:
        total <<= 8  # an odd length is padded with a zero byte
    r = (total + pseudo_sum(src, dst, n)) % 0xFFFF
    return 0xFFFF - r if r else 0


def checksum_ok(segment: bytes | bytearray | memoryview, src: bytes, dst: bytes,
                partial: bool = False) -> bool:
    """Whether the sum over pseudo-header and segment, checksum included, is
    all ones (zero modulo 0xFFFF).

    With `partial`, a segment whose checksum field holds only the folded
    pseudo-header sum passes too: that is what a raw socket reads of a
    segment the kernel sent over loopback (or a veth with checksum offload),
    where the checksum is left for a NIC that never computes it (Linux's
    CHECKSUM_PARTIAL). Only segments that never left the host look so.
    That form is tested first: it costs nothing, where the full sum costs
    about 4 ns a byte (a 64 KB GRO segment: 0.3 ms); the segments accepted
    are the same either way."""
    n = len(segment)
    pseudo = pseudo_sum(src, dst, n)
    if partial and (segment[16] << 8 | segment[17]) % 0xFFFF == pseudo:
        return True
    total = int.from_bytes(segment, "big")
    if n & 1:
        total <<= 8
    return (total + pseudo) % 0xFFFF == 0


def address_bytes(addr: str) -> bytes:
    """An IPv4 or IPv6 address as the pseudo-header holds it."""
    return ipaddress.ip_address(addr).packed


def encode_options(seg: Segment, room: int = MAX_OPTIONS) -> bytes:
    """The options of `seg` in Linux's layout (MSS, SACK-permitted with the
    timestamps, NOP and window scale in a SYN; NOP NOP TS, then NOP NOP and
    SACK blocks otherwise), padded to 32 bits. SACK blocks that do not fit
    in the 40 bytes are left out (three fit beside the timestamps)."""
    out = bytearray()
    if seg.mss is not None:
        out += bytes((OPT_MSS, 4)) + _U16.pack(seg.mss)
    if seg.tsval is not None:
        if seg.sack_permitted:
            out += bytes((OPT_SACK_PERMITTED, 2))  # it fills the NOPs' place
        else:
            out += b"\x01\x01"
        out += b"\x08\x0a" + _U32X2.pack(seg.tsval, seg.tsecr or 0)
    elif seg.sack_permitted:
        out += b"\x01\x01" + bytes((OPT_SACK_PERMITTED, 2))
    if seg.wscale is not None:
        out += bytes((OPT_NOP, OPT_WSCALE, 3, seg.wscale))
    if seg.sack:
        fit = (room - len(out) - 4) // 8
        blocks = seg.sack[: max(0, min(4, fit))]
        if blocks:
            out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(blocks)))
            for left, right in blocks:
                out += _U32X2.pack(left, right)
    for kind, value in seg.unknown_options:
        if len(out) + 2 + len(value) <= room:
            out += bytes((kind, 2 + len(value))) + value
    pad = -len(out) % 4
    if pad:
        out += bytes(pad)  # EOL, then zeros
    return bytes(out)


def encode(src_port: int, dst_port: int, seg: Segment, src: bytes, dst: bytes,
           partial: bool = False) -> bytes:
    """One TCP segment from `src_port` to `dst_port`, checksummed for the
    addresses `src` and `dst` (packed, 4 or 16 bytes each).

    `partial`: leave the checksum for the kernel to finish (a TUN device
    with a virtio-net header asking for it: Linux's CHECKSUM_PARTIAL): the
    field holds the folded pseudo-header sum, which the kernel adds the
    segment's own sum to, and which stays right when it cuts the segment
    in pieces (TSO)."""
    payload = seg.payload
    if (seg.tsval is not None and seg.mss is None and seg.wscale is None and not seg.sack
            and not seg.sack_permitted and not seg.unknown_options):
        # The common data or ACK segment: header and timestamps in one pack.
        head = _HEADER_TS.pack(src_port, dst_port, seg.seq, seg.ack, 0x80, seg.flags & 0xFF,
                               seg.wnd, 0, 0, OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, 10,
                               seg.tsval, seg.tsecr or 0)
    else:
        opts = encode_options(seg)
        head = HEADER.pack(src_port, dst_port, seg.seq, seg.ack, (5 + len(opts) // 4) << 4,
                           seg.flags & 0xFF, seg.wnd, 0, 0) + opts
    data = head + payload if payload else head
    csum = pseudo_sum(src, dst, len(data)) if partial else checksum(data, src, dst)
    return b"".join((data[:16], _U16.pack(csum), data[18:]))


def peek_ports(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """(source port, destination port), or None if `data` is too short to
    hold them: what a demultiplexer reads before deciding to decode."""
    if len(data) < 4:
        return None
    return _PORTS.unpack_from(data)


def decode(data: bytes | bytearray | memoryview, src: bytes, dst: bytes,
           verify: bool = True, partial: bool = False) -> tuple[int, int, Segment]:
    """Parse and validate one TCP segment that came from address `src` to
    `dst`: (source port, destination port, segment). Raises TcpWireError,
    and nothing else, for a segment that is not valid. `verify` False skips
    the checksum; `partial` accepts the kernel's unfinished one on loopback
    (see `checksum_ok`)."""
    n = len(data)
    if n < HEADER_SIZE:
        raise TcpWireError(f"segment too short ({n} bytes)")
    view = memoryview(data)
    if verify and not checksum_ok(view, src, dst, partial):
        raise TcpWireError("checksum mismatch")
    sport, dport, seq, ack, offset, flags, wnd, _csum, _urg = HEADER.unpack_from(view)
    hlen = (offset >> 4) * 4
    if hlen < HEADER_SIZE:
        raise TcpWireError(f"data offset {hlen // 4} is below 5")
    if hlen > n:
        raise TcpWireError(f"data offset {hlen // 4} runs past the segment ({n} bytes)")
    if sport == 0 or dport == 0:
        raise TcpWireError("port zero")
    seg = Segment(seq, ack, flags, wnd, bytes(view[hlen:]))
    if hlen == HEADER_SIZE + TS_OPTION_SIZE and view[20:24] == _TS_PREFIX:
        seg.tsval, seg.tsecr = _U32X2.unpack_from(view, 24)
    elif hlen > HEADER_SIZE:
        _decode_options(view[HEADER_SIZE:hlen], seg)
    return sport, dport, seg


def _decode_options(opts: memoryview, seg: Segment) -> None:
    i, n = 0, len(opts)
    unknown = []
    while i < n:
        kind = opts[i]
        if kind == OPT_EOL:
            break  # the rest is padding (RFC 9293 3.2: whatever it holds)
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 2 > n:
            raise TcpWireError(f"option {kind} truncated (no length byte)")
        length = opts[i + 1]
        if length < 2:
            raise TcpWireError(f"option {kind} has length {length} (below 2)")
        start, i = i + 2, i + length
        if i > n:
            raise TcpWireError(f"option {kind} of length {length} runs past the header")
        value = opts[start:i]
        size = length - 2
        # A known option with the wrong length is ignored, as Linux does
        # (tcp_parse_options): the segment itself may still be good.
        if kind == OPT_MSS:
            if size == 2:
                seg.mss = _U16.unpack(value)[0] or None
        elif kind == OPT_WSCALE:
            if size == 1:
                seg.wscale = min(value[0], MAX_WSCALE)  # RFC 7323 2.3: clamp, log, go on
        elif kind == OPT_SACK_PERMITTED:
            if size == 0:
                seg.sack_permitted = True
        elif kind == OPT_TIMESTAMPS:
            if size == 8:
                seg.tsval, seg.tsecr = _U32X2.unpack(value)
        elif kind == OPT_SACK:
            if size and size % 8 == 0:
                seg.sack = tuple(_U32X2.iter_unpack(value))
        else:
            unknown.append((kind, bytes(value)))
    if unknown:
        seg.unknown_options = tuple(unknown)
