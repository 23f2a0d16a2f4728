"""Batches of datagrams: runs of data segments in and out of one buffer.

A bulk transfer is made of full-size data segments that differ only in their
sequence numbers. Handling them one `Segment` object at a time costs tens of
microseconds of Python each; here a run costs, per datagram, one header field
store (or one header unpack), one payload copy and one CRC call in C.

- `encode_run` writes a `SegmentRun` as a `Train`: datagrams of one size back
  to back in one buffer, which an I/O adapter hands to the kernel in one
  sendmsg with UDP_SEGMENT (GSO), or slices.
- `scan` walks a batch of received datagrams (a GRO buffer) and groups the
  ones that continue each other - same connection, same ACK and window,
  consecutive sequence numbers, only the timestamp option - into runs; the
  rest are left for `decode`.
"""

from __future__ import annotations

import struct

from crc32c import crc32c

from .datagram import HEADER_TS, HEADER_TS_SIZE, OPT_NOP, OPT_TIMESTAMPS, TRAILER_SIZE, VERSION
from .segment import ACK, PSH, SEQ_MOD, SegmentRun

_U32 = struct.Struct("!I")
_MASK32 = SEQ_MOD - 1
_MIN_DATA = HEADER_TS_SIZE + 1 + TRAILER_SIZE  # a timestamped segment with data


class Train(bytearray):
    """Datagrams of `size` bytes back to back; the last may be shorter."""

    __slots__ = ("size",)

    def datagrams(self) -> list[bytes]:
        size = self.size
        return [bytes(self[i : i + size]) for i in range(0, len(self), size)]


def encode_run(dst_cid: int, src_cid: int, run: SegmentRun) -> Train:
    mss = run.mss
    length = run.length
    size = HEADER_TS_SIZE + mss + TRAILER_SIZE
    count = -(-length // mss)
    train = Train(HEADER_TS_SIZE * count + length + TRAILER_SIZE * count)
    train.size = size
    header = HEADER_TS.pack(VERSION, run.flags, HEADER_TS_SIZE, dst_cid, src_cid, 0, run.ack,
                            run.wnd, 0, OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, 8, run.tsval, run.tsecr)
    pack_u32 = _U32.pack_into
    seq = run.seq
    full = length - length % mss  # the full segments; a short tail follows
    off = 0
    with memoryview(train) as out, memoryview(run.buf) as src:
        src = src[run.offset : run.offset + length]
        for pos in range(0, full, mss):
            data_at = off + HEADER_TS_SIZE
            crc_at = data_at + mss
            out[off:data_at] = header
            pack_u32(out, off + 12, (seq + pos) & _MASK32)
            out[data_at:crc_at] = src[pos : pos + mss]
            pack_u32(out, crc_at, crc32c(out[off:crc_at]))
            off = crc_at + TRAILER_SIZE
        if full < length:
            data_at = off + HEADER_TS_SIZE
            crc_at = data_at + length - full
            out[off:data_at] = header
            pack_u32(out, off + 12, (seq + full) & _MASK32)
            out[data_at:crc_at] = src[full:]
            out[off + 1] = run.last_flags
            pack_u32(out, crc_at, crc32c(out[off:crc_at]))
        else:
            # the last full segment carries the last flags: patch and re-sum it
            off -= size
            out[off + 1] = run.last_flags
            pack_u32(out, off + size - TRAILER_SIZE, crc32c(out[off : off + size - TRAILER_SIZE]))
    return train


def scan(datagrams: list) -> list[tuple]:
    """Group a batch of datagrams (from one address, in arrival order) into runs.

    Returns `(dst_cid, src_cid, seq, ack, wnd, tsval_first, tsval_last,
    payloads, raw)` tuples in order. For a run, `payloads` are memoryviews of
    each datagram's data (checksums verified) and `raw` the datagrams; for a
    datagram that is anything else (control flags, options beyond timestamps,
    no data, a bad checksum...), `payloads` is None and `raw` holds just it,
    for `decode` to parse or reject.
    """
    unpack = HEADER_TS.unpack_from
    runs: list[tuple] = []
    cur = None  # [dst, src, seq, ack, wnd, ts0, ts1, payloads, raw, next_seq]
    for d in datagrams:
        n = len(d)
        fields = None
        if n >= _MIN_DATA:
            fields = unpack(d)
            (version, flags, hlen, dst, src, seq, ack, wnd, _r, nop1, nop2, kind, olen,
             tsval, _tsecr) = fields
            if not (version == VERSION and hlen == HEADER_TS_SIZE and flags | PSH == ACK | PSH
                    and nop1 == OPT_NOP and nop2 == OPT_NOP and kind == OPT_TIMESTAMPS and olen == 8):
                fields = None
            else:
                view = d if type(d) is memoryview else memoryview(d)
                end = n - TRAILER_SIZE
                if crc32c(view[:end]) != int.from_bytes(view[end:], "big"):
                    fields = None
        if fields is None:
            if cur is not None:
                runs.append(tuple(cur[:9]))
                cur = None
            runs.append((0, 0, 0, 0, 0, 0, 0, None, [d]))
            continue
        payload = view[HEADER_TS_SIZE:end]
        if (cur is not None and seq == cur[9] and dst == cur[0] and src == cur[1]
                and ack == cur[3] and wnd == cur[4]):
            cur[6] = tsval
            cur[7].append(payload)
            cur[8].append(d)
            cur[9] = (seq + end - HEADER_TS_SIZE) & _MASK32
            continue
        if cur is not None:
            runs.append(tuple(cur[:9]))
        cur = [dst, src, seq, ack, wnd, tsval, tsval, [payload], [d],
               (seq + end - HEADER_TS_SIZE) & _MASK32]
    if cur is not None:
        runs.append(tuple(cur[:9]))
    return runs
