"""Gannet's UDP encoding of a segment: one segment per datagram.

Two header forms (network byte order; docs/protocol.md has the diagrams).
The long form carries any segment:

     0: version (8)   flags (8)   header length in bytes (16)
     4: destination connection ID (32)
     8: source connection ID (32)
    12: sequence number (32)
    16: acknowledgment number (32)
    20: window (16)   reserved, zero (16)
    24: options (TLV), up to the header length
     H: payload
   N-4: CRC32C of bytes [0, N-4), least significant byte first

The short form carries the segments of an established connection - ACK,
maybe PSH or FIN, whose only option is the timestamp - in 20 bytes instead
of 36, so a 1,500-byte packet holds as much payload as a TCP segment with
timestamps (1,448 bytes):

     0: SHORT_FORM (8)   flags (8)   window (16)
     4: destination connection ID (32)
     8: sequence number (32)
    12: acknowledgment number (32)
    16: TSval (32)
    20: payload
   N-4: CRC32C

It leaves out what the receiver already knows or never reads: the source
connection ID (both ends know each other's once the handshake is done; the
address and the destination ID name the connection, as in QUIC's short
header), the header length and padding, and TSecr - Gannet takes its RTT
samples from its own send times (RACK), so nothing reads the echo; decode
gives None for it.

The checksum is a trailer so that it is one C call over one contiguous
buffer on both send and receive, with no field to zero first. Stored least
significant byte first (the order of the reflected CRC's register), a
datagram's CRC32C over all its bytes, trailer included, is the constant
CRC_RESIDUE: a receiver checks a datagram without reading the field, and a
whole GRO batch of equal-size datagrams with one call (wire.batch).
"""

from __future__ import annotations

from typing import Final

import struct

from .checksum import crc32c

from .segment import ACK, FIN, PSH, RST, SYN, Segment

VERSION: Final = 3  # 3: the short form; 2: the CRC trailer stored least significant byte first
SHORT_FORM: Final = 0x80 | VERSION  # first byte of a short header: high bit set, same version
HEADER: Final = struct.Struct("!BBHIIIIHH")
HEADER_SIZE: Final = HEADER.size  # 24
TRAILER_SIZE: Final = 4
CRC_RESIDUE: Final = 0x48674BC7  # CRC32C of any datagram with a correct trailer
MAX_HEADER_SIZE: Final = 0xFFFC
# The short form: first byte, flags, window, destination ID, seq, ack, TSval.
SHORT: Final = struct.Struct("!BBHIIII")
SHORT_SIZE: Final = SHORT.size  # 20
# Largest header+trailer a data segment carries: the long form with
# timestamps (10, padded to 12), four SACK blocks (2 + 32, padded to 36),
# checksum.
MAX_DATA_OVERHEAD: Final = HEADER_SIZE + 12 + 36 + TRAILER_SIZE
# What a data segment in the short form needs (the common case, and every
# segment of a run): the MSS is the datagram size less this, and a segment
# that must also carry SACK blocks takes SACK_ROOM bytes less data.
DATA_OVERHEAD: Final = SHORT_SIZE + TRAILER_SIZE
SACK_ROOM: Final = MAX_DATA_OVERHEAD - DATA_OVERHEAD

# Option kinds. 0-1 and the TCP-derived kinds keep TCP's numbers; 32+ are
# Gannet's. Unknown kinds below 128 are skipped (so a future handshake option,
# such as a key share in 64-95, can be offered without breaking old peers);
# unknown kinds 128 and above are "must understand" and fail the datagram.
OPT_END: Final = 0
OPT_NOP: Final = 1
OPT_MSS: Final = 2
OPT_WSCALE: Final = 3
OPT_SACK_PERMITTED: Final = 4
OPT_SACK: Final = 5
OPT_TIMESTAMPS: Final = 8
OPT_MODE: Final = 32
OPT_MAX_PACKET: Final = 33
# A listener's stateless Retry carries a token that the client's next SYN
# echoes (docs/protocol.md, "Retry"). Must-understand: a peer that does not
# know it drops the Retry, which then costs it a SYN retransmission.
OPT_RETRY_TOKEN: Final = 130
MAX_RETRY_TOKEN: Final = 40
MAX_SACK_BLOCKS: Final = 4
MAX_WSCALE: Final = 14  # RFC 7323 section 2.3

_U16: Final = struct.Struct("!H")
_U32X2: Final = struct.Struct("!II")
_TS_OPT: Final = struct.Struct("!BBII")
_SHORT_MIN: Final = SHORT_SIZE + TRAILER_SIZE
_ACK_PSH: Final = ACK | PSH
_SHORT_MASK: Final = 0xFF & ~(PSH | FIN)  # flags & _SHORT_MASK == ACK: the short form can carry them
# short_fields' answer for a datagram that is not a short-form ACK or data segment
NOT_SHORT: Final = (0, 0, 0, 0, 0, 0)
_SMALL: Final = 512  # payloads up to this size are encoded by concatenation (encode_short)
# The per-datagram calls, bound once: compiled, a Final is a C static, where
# a name imported from an uncompiled module is a dictionary lookup per use
# and a method call looks the method up by name each time.
_crc32c: Final = crc32c
_pack_short: Final = SHORT.pack
_unpack_short: Final = SHORT.unpack_from


class WireError(ValueError):
    """A datagram that is not a valid Gannet datagram. The message says why."""


def encode(dst_cid: int, src_cid: int, seg: Segment) -> bytes:
    """Serialize `seg` into one datagram addressed to connection `dst_cid`.

    A segment the short form can carry (ACK, maybe PSH or FIN, timestamps
    and no other option, both connection IDs known) goes in it; the source
    ID and TSecr are then left out. (A retry token rides only on a SYN or on
    a Retry, which has no timestamps: neither ever takes the short form.)"""
    tsval = seg.tsval
    if tsval is not None and short_form(dst_cid, seg):
        return encode_short(dst_cid, seg.flags, seg.seq, seg.ack, seg.wnd, tsval, seg.payload)
    opts = _encode_options(seg)
    hlen = HEADER_SIZE + len(opts)
    buf = bytearray(hlen + len(seg.payload) + TRAILER_SIZE)
    HEADER.pack_into(buf, 0, VERSION, seg.flags, hlen, dst_cid, src_cid, seg.seq, seg.ack, seg.wnd, 0)
    if opts:
        buf[HEADER_SIZE:hlen] = opts
    end = hlen + len(seg.payload)
    buf[hlen:end] = seg.payload
    buf[end:] = crc32c(memoryview(buf)[:end]).to_bytes(4, "little")
    return bytes(buf)


def short_form(dst_cid: int, seg: Segment) -> bool:
    """Whether the short form carries `seg` addressed to `dst_cid` (the
    rule `encode` follows; the security layer seals such a segment from
    its fields, crypto.protection.Sealer.seal_short): ACK, maybe PSH or
    FIN, timestamps and no other option, both connection IDs known."""
    return (
        seg.tsval is not None
        and seg.flags & _SHORT_MASK == ACK
        and dst_cid != 0
        and not seg.sack
        and seg.mss is None
        and seg.wscale is None
        and seg.mode is None
        and seg.max_packet is None
        and not seg.sack_permitted
        and not seg.unknown_options
    )


def encode_short(dst_cid: int, flags: int, seq: int, ack: int, wnd: int, tsval: int,
                 payload: bytes | bytearray | memoryview) -> bytes:
    """The short-form datagram of a segment (what `encode` writes for one
    it can carry), from its fields: no Segment needed."""
    if len(payload) <= _SMALL:
        # Small: two short concatenations cost less than filling a bytearray
        # through slice assignments and copying it out.
        body = _pack_short(SHORT_FORM, flags, wnd, dst_cid, seq, ack, tsval) + payload
        return body + _crc32c(body).to_bytes(4, "little")
    end = SHORT_SIZE + len(payload)
    buf = bytearray(end + TRAILER_SIZE)
    SHORT.pack_into(buf, 0, SHORT_FORM, flags, wnd, dst_cid, seq, ack, tsval)
    buf[SHORT_SIZE:end] = payload
    buf[end:] = crc32c(memoryview(buf)[:end]).to_bytes(4, "little")
    return bytes(buf)


def peek_short(data: bytes | bytearray | memoryview,
               authenticated: bool = False) -> tuple[int, int, int, int, int, int] | None:
    """The header of a short-form ACK or data segment (PSH allowed, not FIN)
    without building a Segment: (dst_cid, flags, seq, ack, wnd, tsval); its
    payload is data[SHORT_SIZE:-TRAILER_SIZE].

    None for anything else, valid or not: `decode` then parses it (and
    raises WireError if it is invalid). What it returns passed every check
    `decode` makes, checksum included - but for an `authenticated`
    datagram (one an AEAD tag vouched for: gannet.crypto), whose trailer
    is not read.
    """
    head = short_fields(data, authenticated)
    return head if head[0] else None


def short_fields(data: bytes | bytearray | memoryview,
                 authenticated: bool = False) -> tuple[int, int, int, int, int, int]:
    """`peek_short`'s fields, or NOT_SHORT (destination ID 0, which no
    short-form segment has) where it gives None: the same checks. For the
    receive path of every datagram: compiled, the fields go to the caller
    as six machine words, not as a tuple object of six ints."""
    if len(data) < _SHORT_MIN:
        return NOT_SHORT
    head = _short_head(data)
    if not head[0] or (not authenticated and _crc32c(data) != CRC_RESIDUE):
        return NOT_SHORT
    return head


def peek_short_parts(head: bytes | bytearray, payload: bytes,
                     trailer: bytes) -> tuple[int, int, int, int, int, int] | None:
    """`peek_short` for a datagram received in three parts, its first
    SHORT_SIZE bytes, the payload, and its last TRAILER_SIZE bytes (a
    receive that put the payload straight into a bytes object of its own:
    io/datapath.py's receive_gro). The same checks, the CRC32C over the
    three parts in order; None for anything else."""
    if len(head) != SHORT_SIZE or len(trailer) != TRAILER_SIZE:
        return None
    fields = _short_head(head)
    if not fields[0] or _crc32c(trailer, _crc32c(payload, _crc32c(head))) != CRC_RESIDUE:
        return None
    return fields


def _short_head(data: bytes | bytearray | memoryview) -> tuple[int, int, int, int, int, int]:
    """The short header's fields if they are a short-form ACK or data
    segment's (peek_short's checks but the CRC), else NOT_SHORT."""
    form, flags, wnd, dst, seq, ack, tsval = _unpack_short(data)
    if form != SHORT_FORM or flags | PSH != _ACK_PSH or not dst:
        return NOT_SHORT
    return dst, flags, seq, ack, wnd, tsval


def scan_rows(view: memoryview, start: int, seg: int, runs: list[tuple], checked: int = 0) -> None:
    """wire/batch.py's `scan`, a datagram at a time from offset `start` of a
    batch of `seg`-byte datagrams: each maximal run of in-order data
    segments of one connection (same ACK and window) is appended to `runs`
    as `(dst, seq, ack, wnd, tsval_first, tsval_last, data, raw)`, any other
    datagram as `(0, 0, 0, 0, 0, 0, None, raw)` for `decode`. The checksums
    of the rows before offset `checked` are known correct (all of them for
    authenticated datagrams).

    Here, compiled with the core, rather than beside `scan`: a GRO batch
    that holds the datagrams of many connections of one peer (a tunnel's
    requests, one from each of several clients) is walked row by row, and
    this loop ran as much Python per row as the connection's own receive."""
    n = len(view)
    open_run = False
    dst = seq0 = ack0 = wnd0 = ts0 = ts1 = first = next_seq = 0
    payloads: list[memoryview] = []
    off = start
    while off < n:
        d = view[off : off + seg]
        end = len(d) - TRAILER_SIZE
        head = NOT_SHORT
        if end > SHORT_SIZE:  # a short-form segment with data
            head = _short_head(d)
            if head[0] and off >= checked and _crc32c(d) != CRC_RESIDUE:
                head = NOT_SHORT
        if not head[0]:
            if open_run:
                runs.append(_joined(dst, seq0, ack0, wnd0, ts0, ts1, payloads, view[first:off]))
                open_run = False
            runs.append((0, 0, 0, 0, 0, 0, None, d))
            off += seg
            continue
        r_dst, _, r_seq, r_ack, r_wnd, tsval = head
        payload = d[SHORT_SIZE:end]
        if open_run and r_seq == next_seq and r_dst == dst and r_ack == ack0 and r_wnd == wnd0:
            ts1 = tsval
            payloads.append(payload)
        else:
            if open_run:
                runs.append(_joined(dst, seq0, ack0, wnd0, ts0, ts1, payloads, view[first:off]))
            open_run = True
            dst, seq0, ack0, wnd0, ts0, ts1, first = r_dst, r_seq, r_ack, r_wnd, tsval, tsval, off
            payloads = [payload]
        next_seq = (r_seq + end - SHORT_SIZE) & 0xFFFFFFFF
        off += seg
    if open_run:
        runs.append(_joined(dst, seq0, ack0, wnd0, ts0, ts1, payloads, view[first:n]))


def _joined(dst: int, seq: int, ack: int, wnd: int, ts0: int, ts1: int, payloads: list[memoryview],
            raw: memoryview) -> tuple:
    data = b"".join(payloads) if len(payloads) > 1 else bytes(payloads[0])
    return (dst, seq, ack, wnd, ts0, ts1, data, raw)


def _encode_options(seg: Segment) -> bytes:
    parts = []
    if seg.mss is not None:
        parts.append(bytes((OPT_MSS, 2)) + _U16.pack(seg.mss))
    if seg.wscale is not None:
        parts.append(bytes((OPT_WSCALE, 1, seg.wscale)))
    if seg.sack_permitted:
        parts.append(bytes((OPT_SACK_PERMITTED, 0)))
    if seg.tsval is not None:
        parts.append(b"\x01\x01" + _TS_OPT.pack(OPT_TIMESTAMPS, 8, seg.tsval, seg.tsecr or 0))
    if seg.sack:
        blocks = seg.sack[:MAX_SACK_BLOCKS]
        parts.append(bytes((OPT_SACK, 8 * len(blocks))) + b"".join(_U32X2.pack(l, r) for l, r in blocks))
    if seg.mode is not None:
        parts.append(bytes((OPT_MODE, 1, seg.mode)))
    if seg.max_packet is not None:
        parts.append(bytes((OPT_MAX_PACKET, 2)) + _U16.pack(seg.max_packet))
    if seg.retry_token is not None:
        parts.append(bytes((OPT_RETRY_TOKEN, len(seg.retry_token))) + seg.retry_token)
    for kind, value in seg.unknown_options:
        parts.append(bytes((kind, len(value))) + value)
    if not parts:
        return b""
    opts = b"".join(parts)
    pad = -len(opts) % 4
    return opts + bytes(pad) if pad else opts


def decode(data: bytes | bytearray | memoryview,
           authenticated: bool = False) -> tuple[int, int | None, Segment]:
    """Parse and validate one datagram: (dst_cid, src_cid, segment).

    src_cid is None for the short form, which does not carry it (nor TSecr:
    the segment's tsecr is None). Raises WireError, and nothing else, for
    any input that is not valid. The trailer of an `authenticated`
    datagram (see `peek_short`) is not read.
    """
    n = len(data)
    if n < _SHORT_MIN:
        raise WireError(f"datagram too short ({n} bytes)")
    view = memoryview(data)
    if not authenticated and crc32c(view) != CRC_RESIDUE:
        raise WireError("checksum mismatch")
    if view[0] == SHORT_FORM:
        form, flags, wnd, dst_cid, seq, ack, tsval = SHORT.unpack_from(view)
        if flags & _SHORT_MASK != ACK:
            raise WireError(f"short header with flags {flags:#04x} (only ACK, PSH, FIN)")
        if not dst_cid:
            raise WireError("short header without a destination connection ID")
        seg = Segment(seq, ack, flags, wnd, bytes(view[SHORT_SIZE : n - TRAILER_SIZE]))
        seg.tsval = tsval
        return dst_cid, None, seg
    if view[0] != VERSION:
        raise WireError(f"unsupported version {view[0]:#04x}")
    if n < HEADER_SIZE + TRAILER_SIZE:
        raise WireError(f"datagram too short ({n} bytes)")
    version, flags, hlen, dst_cid, src_cid, seq, ack, wnd, _reserved = HEADER.unpack_from(view)
    if hlen < HEADER_SIZE or hlen % 4 or hlen > n - TRAILER_SIZE:
        raise WireError(f"bad header length {hlen}")
    if flags & SYN and flags & (FIN | RST):
        raise WireError("impossible flags: SYN with FIN or RST")
    if flags & RST and not flags & ACK and ack:
        raise WireError("RST without ACK carries an acknowledgment number")
    seg = Segment(seq, ack, flags, wnd, bytes(view[hlen : n - TRAILER_SIZE]))
    if hlen > HEADER_SIZE:
        _decode_options(view[HEADER_SIZE:hlen], seg)
    return dst_cid, src_cid, seg


def _decode_options(opts: memoryview, seg: Segment) -> None:
    i, n = 0, len(opts)
    unknown = []
    while i < n:
        kind = opts[i]
        if kind == OPT_END:
            if any(opts[i:]):
                raise WireError("non-zero bytes after END option")
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 2 > n:
            raise WireError(f"option {kind} truncated")
        length = opts[i + 1]
        start, i = i + 2, i + 2 + length
        if i > n:
            raise WireError(f"option {kind} overruns the header")
        value = opts[start:i]
        if kind == OPT_MSS:
            _expect(kind, length, 2)
            seg.mss = _U16.unpack(value)[0]
            if seg.mss == 0:
                raise WireError("MSS option of zero")
        elif kind == OPT_WSCALE:
            _expect(kind, length, 1)
            seg.wscale = min(value[0], MAX_WSCALE)  # RFC 7323: clamp, do not fail
        elif kind == OPT_SACK_PERMITTED:
            _expect(kind, length, 0)
            seg.sack_permitted = True
        elif kind == OPT_TIMESTAMPS:
            _expect(kind, length, 8)
            seg.tsval, seg.tsecr = _U32X2.unpack(value)
        elif kind == OPT_SACK:
            if length == 0 or length % 8 or length > 8 * MAX_SACK_BLOCKS:
                raise WireError(f"bad SACK option length {length}")
            seg.sack = tuple(_U32X2.iter_unpack(value))
        elif kind == OPT_MODE:
            _expect(kind, length, 1)
            seg.mode = value[0]
        elif kind == OPT_MAX_PACKET:
            _expect(kind, length, 2)
            seg.max_packet = _U16.unpack(value)[0]
        elif kind == OPT_RETRY_TOKEN:
            if not 1 <= length <= MAX_RETRY_TOKEN:
                raise WireError(f"bad retry token length {length}")
            seg.retry_token = bytes(value)
        elif kind >= 128:
            raise WireError(f"unknown must-understand option {kind}")
        else:
            unknown.append((kind, bytes(value)))
    if unknown:
        seg.unknown_options = tuple(unknown)


def _expect(kind: int, length: int, wanted: int) -> None:
    if length != wanted:
        raise WireError(f"option {kind} has length {length}, expected {wanted}")
