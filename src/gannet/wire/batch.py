"""Batches of datagrams: runs of data segments in and out of one buffer.

A bulk transfer is made of full-size data segments that differ only in their
sequence numbers. Handling them one `Segment` object at a time costs tens of
microseconds of Python each; here a run is handled as rows of one buffer,
with numpy doing the per-row work in C:

- `encode_run` writes a `SegmentRun` as a `Train`: datagrams of one size back
  to back in one buffer, which an I/O adapter hands to the kernel in one
  sendmsg with UDP_SEGMENT (GSO), or slices. Per datagram, what is left in
  Python is one CRC call.
- `scan` takes a batch in the shape UDP GRO delivers it (datagrams of one
  size back to back, the last maybe shorter) and groups the datagrams that
  continue each other - short form, same connection, same ACK and window,
  consecutive sequence numbers - into runs, each with its
  payload already joined; the rest are left for `decode`. A large batch is
  checked with one CRC call over all of it (see datagram.CRC_RESIDUE), or
  row by row in the C primitive's one pass.
- `coalesce` groups datagrams the way GRO does (the simulator delivers
  same-instant arrivals through it).

Where the project's C extension `gannet.wire._batch` is built (and the CPU
has a CRC32C instruction), it does the per-row work of both, each in one
call: `encode_rows` writes every row of a train with its trailer,
`same_rows` checks that a batch's rows are one run (and, asked to, that
each row's CRC32C is correct) and joins their payloads, `scan_run` does
all of `scan` for a batch off the wire that is one run, and `encode_heads`
writes a `SourceTrain`'s headers and trailers. What a row holds, which fields must match and where they lie are
decided here and passed to it; the numpy and one-row-at-a-time code below
is its Python equivalent, which runs where it is missing and under
GANNET_PURE=1 (tests/core/test_batch_native.py holds the two to the same
bytes and verdicts). It cut the adapter's CPU per GB at 1,472-byte
datagrams (BENCHMARKS.md, "The batch path's rows in one C call").

numpy is not imported with this module: small messages never need it, and
a program that sends a few (`gannet send` of a small file, a chat) starts
without the tens of milliseconds its import takes. The first run of
VECTOR_MIN datagrams or more asks for it (`loaded_numpy`, `import_numpy`):
a sans-I/O driver imports it then and there; the I/O adapter imports it in
a background thread, and until it is there the rows are handled one at a
time (the same bytes, more Python), so that a transfer does not stall on
the import.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._build import extension
from .checksum import crc32c

from .datagram import CRC_RESIDUE, SHORT, SHORT_FORM, SHORT_SIZE, TRAILER_SIZE
from .datagram import scan_rows as _scan_loop  # (the row-at-a-time walk, compiled with the core)
from .segment import ACK, PSH, SEQ_MOD, SegmentRun

if TYPE_CHECKING:
    import numpy

_MASK32 = SEQ_MOD - 1
_MIN_DATA = SHORT_SIZE + 1 + TRAILER_SIZE  # a short-form segment with data
_OVERHEAD = SHORT_SIZE + TRAILER_SIZE
_SEQ_AT = 8  # where the sequence number is in the short header
_TSVAL_AT = 16
# Where the short header's fields lie (SHORT: form, flags, window, dst,
# seq, ack, TSval), for the C primitive's scan_run.
_FIELDS = (0, 1, 2, 4, _SEQ_AT, 12, _TSVAL_AT)
_CRC = struct.Struct("<I")
_U32 = struct.Struct("!I")  # a sequence number or a timestamp
# Below this many rows the numpy calls cost more than the Python loop
# (measured: equal at about 8 rows of 1,432 bytes, numpy 1.5x faster at 44).
VECTOR_MIN = 8
# Kernel limits on one GRO/GSO batch: 64 segments, 64 KB.
GRO_SEGMENTS = 64
GRO_BYTES = 65535

# The short header's 32-bit words, as `scan` checks them (see datagram.py's
# layout): word 0 form/flags/window, 1 dst, 2 seq, 3 ack, 4 TSval.
# Bits that must be the same in every row of a run: all of the form, flags
# but PSH, window, destination and ACK (seq and TSval differ; seq is checked
# on its own, and the first row's flags are ACK or ACK|PSH, so every row's are).
_SAME = (0xFF00FFFF | (0xFF & ~PSH) << 16, 0xFFFFFFFF, 0, 0xFFFFFFFF)


# The C rows primitive (see the module docstring), or None: then the numpy
# and loop code here runs. Without a CRC32C instruction it would cost more
# than the crc32c package's calls, so it is not used then.
_c: Any = extension("gannet.wire._batch")
if _c is not None and not _c.HARDWARE_CRC:
    _c = None
# A receive's destination whose bytes become a bytes object without a copy
# (see _batch.c): None where the extension is missing or GANNET_PURE=1, and
# then a large datagram is read into the shared buffer and its payload
# copied, as every datagram is (io/datapath.py's receive_gro). It needs no
# CRC32C instruction.
_ext: Any = _c if _c is not None else extension("gannet.wire._batch")
Receptacle: Any = _ext.Receptacle if _ext is not None else None
# Trains of datagrams this large or larger (path MTU discovery's, a row or
# a few per train) are written by the Python code when they carry CRC32C
# trailers: a call per row costs nothing beside the row, and the crc32c
# package runs three lanes over one long buffer, about three times as fast
# as encode_rows' one lane per row. Without trailers (a train sealed next,
# gannet.crypto) there is no CRC to compute, and encode_rows writes them:
# its header and payload copy in one call, where the Python loop's
# interpreted lines and calls were most of a sealing sender's own Python
# per 64 KB datagram (docs/security.md, "Path MTU discovery encrypted:
# the extra beside the AEAD").
NATIVE_BELOW = 16384


def _swapped(word: int) -> int:
    return int.from_bytes(word.to_bytes(4, "big"), "little")


# numpy and the arrays made with it, set by `load_numpy` (np last: a thread
# that sees it set sees the others).
np: Any = None
_U8: Any = None
# The masks for the headers read as little-endian words: numpy works on an
# array of the machine's byte order without converting every element (it
# cost a third of _scan_rows), and the masks only need their bytes swapped.
_SAME_LE: Any = None


def load_numpy() -> None:
    """Import numpy for the vector paths (gannet/__init__.py keeps its
    OpenBLAS to one thread)."""
    global np, _U8, _SAME_LE
    import numpy

    _SAME_LE = numpy.array([_swapped(w) for w in _SAME], dtype="<u4")
    _U8 = numpy.uint8
    np = numpy


# What the first run that wants numpy calls: load_numpy, at once, for a
# sans-I/O driver (the simulator, bench/core_cost.py); the I/O adapter
# (io/endpoint.py) sets a function that runs it in a background thread.
import_numpy: Callable[[], None] = load_numpy
_asked = [False]


def loaded_numpy() -> Any:
    """numpy, or None while it is not imported yet (see the module
    docstring); the first call asks for it (`import_numpy`)."""
    if np is None and not _asked[0]:
        _asked[0] = True
        import_numpy()
    return np


class Train(bytearray):
    """Datagrams of `size` bytes back to back; the last may be shorter.

    An I/O adapter gives a train back with `release` once the kernel has
    copied it; `encode_run` then fills the same buffer again, through views
    made once (building them, and each row's CRC slice, cost a bulk sender
    a tenth of its time)."""

    __slots__ = ("size", "_parts")
    size: int
    # (rows, sequence numbers, CRC trailers, what each CRC covers), made
    # when a released train is pooled for the vector path
    _parts: tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray, list[memoryview]] | None

    def datagrams(self) -> list[bytes]:
        size = self.size
        return [bytes(self[i : i + size]) for i in range(0, len(self), size)]


# Released trains by (datagram size, rows). A paced sender encodes up to a
# few milliseconds of trains before handing them to the kernel (about 30 at
# 1 GB/s), so the pool keeps that many, up to POOL_BYTES in all. With path
# MTU discovery sealed, a pass of a sender catching up holds more than 60
# one-row trains of 64 KB before the adapter releases them: with 4 MB, 3,880
# of a GiB's 16,486 sealed trains were fresh buffers (zeroed and faulted
# in), with 8 MB 101 (docs/benchmarks-history.md, "Path MTU discovery
# encrypted: the extra beside the AEAD").
_pool: dict[tuple[int, int], list[Train]] = {}
POOL_BYTES = 8 * 1024 * 1024
POOL_LOOP_SIZE = 16384  # below the vector path, only datagrams this large are pooled
_pooled = [0]  # bytes held in _pool


def release(train: Train) -> None:
    """The kernel has copied `train` (and nothing else holds it): its buffer
    may be filled again. Kept: whole-row trains of the vector path, and of
    large datagrams (with path MTU discovery a train is one 64 KB datagram:
    reusing it saves zeroing and faulting in 64 KB per send)."""
    size = train.size
    rows, tail = divmod(len(train), size)
    if tail or (rows < VECTOR_MIN and size < POOL_LOOP_SIZE):
        return
    if _pooled[0] + len(train) > POOL_BYTES:
        return
    free = _pool.setdefault((size, rows), [])
    if (rows >= VECTOR_MIN and (_c is None or size >= NATIVE_BELOW) and getattr(train, "_parts", None) is None
            and (np := loaded_numpy()) is not None):
        body = size - TRAILER_SIZE
        view = memoryview(train)
        train._parts = (
            np.frombuffer(train, _U8).reshape(rows, size),
            np.ndarray((rows,), ">u4", train, _SEQ_AT, (size,)),  # sequence numbers
            np.ndarray((rows,), "<u4", train, body, (size,)),  # CRC trailers
            [view[off : off + body] for off in range(0, rows * size, size)],  # what each CRC covers
        )
    free.append(train)
    _pooled[0] += len(train)


def _reuse(size: int, rows: int) -> Train | None:
    free = _pool.get((size, rows))
    if free:
        try:
            train = free.pop()
        except IndexError:  # another thread took the last one
            return None
        _pooled[0] -= len(train)
        return train
    return None


def encode_run(dst_cid: int, run: SegmentRun, trailers: bool = True) -> Train:
    """`run` as short-form datagrams for connection `dst_cid`. Without
    `trailers` the rows' CRC32C trailers are left unwritten (whatever the
    buffer held): for a train that is sealed next, whose AEAD tag does the
    CRC's job and drops the trailer (gannet.crypto)."""
    mss = run.mss
    length = run.length
    size = SHORT_SIZE + mss + TRAILER_SIZE
    full, tail = divmod(length, mss)
    count = full + (tail > 0)
    header = SHORT.pack(SHORT_FORM, run.flags, run.wnd, dst_cid, 0, run.ack, run.tsval)
    if _c is not None and (size < NATIVE_BELOW or not trailers):
        # Every row in one call (the code below is its Python equivalent).
        train = _reuse(size, full) if not tail and (count >= VECTOR_MIN or size >= POOL_LOOP_SIZE) else None
        if train is None:
            train = Train(size * full + (tail + _OVERHEAD if tail else 0))
            train.size = size
            train._parts = None
        _c.encode_rows(train, header, run.buf, run.offset, run.seq, mss, size, run.last_flags, _SEQ_AT, trailers)
        return train
    if not tail and (count >= VECTOR_MIN or size >= POOL_LOOP_SIZE):
        train = _reuse(size, full)
        if train is not None and count < VECTOR_MIN:
            _encode_loop(train, header, run, size, trailers)
            return train
        if train is not None and train._parts is not None:  # a pooled whole-row train has its parts
            np = loaded_numpy()  # (not None: it made the parts)
            rows, seqs, crcs, bodies = train._parts
            rows[:, :SHORT_SIZE] = np.frombuffer(header, _U8)
            rows[:, SHORT_SIZE : SHORT_SIZE + mss] = np.frombuffer(
                run.buf, _U8, length, run.offset).reshape(full, mss)
            seqs[:] = _steps(count, mss) + np.uint32(run.seq)
            train[(count - 1) * size + 1] = run.last_flags
            if trailers:
                crcs[:] = list(map(crc32c, bodies))
            return train
    total = size * full + (tail + _OVERHEAD if tail else 0)
    train = Train(total)
    train.size = size
    train._parts = None
    if count < VECTOR_MIN or (np := loaded_numpy()) is None:
        _encode_loop(train, header, run, size, trailers)
        return train
    rows = np.frombuffer(train, _U8, full * size).reshape(full, size)
    rows[:, :SHORT_SIZE] = np.frombuffer(header, _U8)
    src = np.frombuffer(run.buf, _U8, length, run.offset)
    rows[:, SHORT_SIZE : SHORT_SIZE + mss] = src[: full * mss].reshape(full, mss)
    with memoryview(train) as out:
        if tail:
            off = full * size
            out[off : off + SHORT_SIZE] = header
            out[off + SHORT_SIZE : total - TRAILER_SIZE] = src[full * mss :].data
        np.ndarray((count,), ">u4", train, _SEQ_AT, (size,))[:] = _steps(count, mss) + np.uint32(run.seq)
        last = (count - 1) * size
        out[last + 1] = run.last_flags
        if not trailers:
            return train
        body = size - TRAILER_SIZE
        np.ndarray((full,), "<u4", train, body, (size,))[:] = [
            crc32c(out[off : off + body]) for off in range(0, full * size, size)
        ]
        if tail:
            _CRC.pack_into(out, total - TRAILER_SIZE, crc32c(out[last : total - TRAILER_SIZE]))
    return train


# Runs of datagrams this large or larger (path MTU discovery's) leave as
# SourceTrains where the I/O adapter asks for them (Endpoint.source_trains):
# a row or a few per train, so a sendmsg of header, payload and trailer
# buffers costs the kernel little, and the copy into a train it saves is
# 64 KB a datagram. Below, the kernel's cost per buffer (two a row) is more
# than the copy (BENCHMARKS.md, "Path MTU discovery's datagrams without a
# copy"), and the run is written into a Train.
GATHER_FROM = NATIVE_BELOW
# A run of such datagrams holds up to this many (core/sender.py's `runs`,
# where 64 KB is one datagram): its core records are made once for them
# all, and its rows leave as a SourceTrain each (SourceTrain.apart), in the
# I/O adapter's sendmmsg of a pass's trains.
GATHER_ROWS = 8


class SourceTrain:
    """A train whose payloads stay where the sender's buffer holds them.

    `heads` holds, for each row, its header and then its CRC32C trailer
    (SHORT_SIZE + TRAILER_SIZE bytes a row): what `encode_run` writes around
    each payload. An I/O adapter sends it in one sendmsg of `pieces()`, so
    the kernel's copy of each payload byte is the only one; what cannot
    send it that way (one datagram at a time, an observer, an error that
    needs the datagram) takes `train()`, the same datagrams in one buffer."""

    __slots__ = ("size", "heads", "buf", "offset", "length", "mss")

    def __init__(self, size: int, heads: bytearray, buf: Any, offset: int, length: int, mss: int) -> None:
        self.size = size  # the datagram size (the last row may be shorter)
        self.heads = heads
        self.buf = buf  # the payloads: buf[offset : offset + length], not to change
        self.offset = offset
        self.length = length
        self.mss = mss

    @property
    def count(self) -> int:
        return -(-self.length // self.mss)

    def __len__(self) -> int:
        """The bytes of its datagrams, as len() of the `Train` they make."""
        return self.length + self.count * _OVERHEAD

    def pieces(self) -> list[memoryview]:
        """The train's bytes in order, as buffers for one sendmsg: row 0's
        header, its payload, its trailer with row 1's header (adjacent in
        `heads`), the next payload, and so on."""
        heads = memoryview(self.heads)
        mss, offset, length = self.mss, self.offset, self.length
        src = memoryview(self.buf)[offset : offset + length]
        if length <= mss:  # one row (path MTU discovery's common train)
            return [heads[:SHORT_SIZE], src, heads[SHORT_SIZE:]]
        last = self.count - 1
        out = [heads[:SHORT_SIZE]]
        for k in range(last + 1):
            at = k * _OVERHEAD + SHORT_SIZE
            out.append(src[k * mss : (k + 1) * mss])
            out.append(heads[at : at + (_OVERHEAD if k < last else TRAILER_SIZE)])
        return out

    def apart(self) -> list[SourceTrain]:
        """Its rows as SourceTrains of one datagram each, in order (for a
        train larger than one GSO send: path MTU discovery's run of several
        64 KB datagrams, which leave as a message each). The payloads stay
        where they are; each row's header and trailer are its own copy."""
        mss, offset, length, heads, size = self.mss, self.offset, self.length, self.heads, self.size
        return [SourceTrain(size, heads[k * _OVERHEAD : (k + 1) * _OVERHEAD], self.buf, offset + k * mss,
                            mss if k * mss + mss <= length else length - k * mss, mss)
                for k in range(self.count)]

    def train(self) -> Train:
        """The same datagrams as one `Train` (a copy of every byte)."""
        train = Train(b"".join(self.pieces()))
        train.size = self.size
        train._parts = None
        return train


def encode_source(dst_cid: int, run: SegmentRun) -> SourceTrain:
    """`run` as a `SourceTrain` for connection `dst_cid`: the datagrams of
    `encode_run(dst_cid, run)`, the payloads left where `run.buf` holds
    them. Each row's CRC32C runs over its header and then its payload, in
    place: with the C rows primitive, every row in one call (each payload
    in three parts side by side, their CRCs combined), else a row at a time
    with the crc32c package."""
    mss, seq, length, offset = run.mss, run.seq, run.length, run.offset
    count = -(-length // mss)
    heads = bytearray(count * _OVERHEAD)
    if _c is not None:
        # Every row in one call (the loop below is its Python equivalent).
        header = SHORT.pack(SHORT_FORM, run.flags, run.wnd, dst_cid, 0, run.ack, run.tsval)
        _c.encode_heads(heads, header, run.buf, offset, seq, mss, length, run.last_flags, _SEQ_AT)
        return SourceTrain(SHORT_SIZE + mss + TRAILER_SIZE, heads, run.buf, offset, length, mss)
    pack, pack_crc = SHORT.pack_into, _CRC.pack_into
    flags, wnd, ack, tsval = run.flags, run.wnd, run.ack, run.tsval
    last = count - 1
    with memoryview(run.buf) as src:
        for k in range(count):
            at = k * _OVERHEAD
            pack(heads, at, SHORT_FORM, flags if k < last else run.last_flags, wnd, dst_cid,
                 (seq + k * mss) & _MASK32, ack, tsval)
            start = offset + k * mss
            crc = crc32c(src[start : start + mss if k < last else offset + length],
                         crc32c(heads[at : at + SHORT_SIZE]))
            pack_crc(heads, at + SHORT_SIZE, crc)
    return SourceTrain(SHORT_SIZE + mss + TRAILER_SIZE, heads, run.buf, offset, length, mss)


def _encode_loop(train: Train, header: bytes, run: SegmentRun, size: int, trailers: bool = True) -> None:
    """`encode_run`'s rows one at a time: for a few rows (a PMTU-sized
    segment sent alone, the end of a flight), cheaper than numpy's set-up."""
    mss = run.mss
    seq = run.seq
    pack_seq = _U32.pack_into
    pack_crc = _CRC.pack_into
    with memoryview(train) as out, memoryview(run.buf) as buf:
        src = buf[run.offset : run.offset + run.length]
        last = len(train) - 1 - (len(train) - 1) % size  # where the last row starts
        for off in range(0, len(train), size):
            data_at = off + SHORT_SIZE
            pos = off // size * mss
            end = min(off + size, len(train)) - TRAILER_SIZE
            out[off:data_at] = header
            pack_seq(out, off + _SEQ_AT, (seq + pos) & _MASK32)
            if off == last:
                out[off + 1] = run.last_flags
            out[data_at:end] = src[pos : pos + end - data_at]
            if trailers:
                pack_crc(out, end, crc32c(out[off:end]))


def scan(buf: bytes | bytearray | memoryview, seg: int, authenticated: bool = False) -> list[tuple]:
    """Group a batch of datagrams (from one address, in arrival order) into runs.

    `buf` holds datagrams of `seg` bytes back to back, the last maybe
    shorter, as UDP GRO delivers them (`seg` 0, or not less than the length,
    means one datagram). Returns `(dst_cid, seq, ack, wnd, tsval_first,
    tsval_last, data, raw)` tuples in order; `raw` is a slice
    of `buf` holding the group's datagrams (`rows(raw, seg)` cuts them
    apart). For a run, `data` is its payloads joined (checksums verified);
    for a datagram that is anything else (control flags, options beyond
    the long form, no data, a bad checksum...), `data` is None and `raw` holds
    just it, for `decode` to parse or reject. The trailers of `authenticated`
    datagrams (see datagram.peek_short) are not read.
    """
    if _c is not None and not authenticated and type(buf) is memoryview:
        # The common case, a batch whose full rows are one run, in one call:
        # what the code below does for it (None: anything else, which the
        # code below handles from the start).
        one = _c.scan_run(buf, seg, VECTOR_MIN, _SAME, _FIELDS, SHORT_SIZE, SHORT_FORM, ACK, PSH, CRC_RESIDUE)
        if one is not None:
            runs = [one]
            n = len(buf)
            full = n - n % seg
            if full < n:
                _scan_loop(buf, full, seg, runs)
            return runs
    n = len(buf)
    view = buf if type(buf) is memoryview else memoryview(buf)
    if not n:
        return [(0, 0, 0, 0, 0, 0, None, view)]  # one empty datagram, for decode to reject
    if seg <= 0 or seg >= n:
        seg = n
    count = n // seg
    full = count * seg
    # (the first and last rows name one connection: it may be one run)
    vector = count >= VECTOR_MIN and seg >= _MIN_DATA and view[4:8] == view[full - seg + 4 : full - seg + 8]
    run: tuple | bool | None = None
    if vector and _c is not None and not authenticated:
        # The rows' checksums checked in the run check's own call (one pass
        # over the batch, see _scan_rows): False if one is wrong.
        run = _scan_rows(view, seg, count, True)
        checked = run is not False
    else:
        # Every full row correct at once: one CRC call over them all (see
        # batch_residue) instead of one per row, or none for rows the AEAD
        # authenticated.
        checked = count > 1 and seg >= _MIN_DATA and (
            authenticated or crc32c(view[:full]) == batch_residue(seg, count))
        if checked and vector:
            run = _scan_rows(view, seg, count)
    # A batch that fails the check is walked row by row, each row checked
    # on its own. (rows before this offset are known correct)
    known = n if authenticated else 0
    if type(run) is tuple:
        runs = [run]
        if full < n:
            _scan_loop(view, full, seg, runs, known)
        return runs
    runs = []
    if checked:
        # Rows of several connections (replies to many clients that
        # arrived together, each its own run) or not one run: the rows
        # are known correct, only the last, shorter one is checked.
        known = max(known, full)
    _scan_loop(view, 0, seg, runs, known)
    return runs


def rows(raw: memoryview, seg: int) -> list[memoryview]:
    """The datagrams of a `scan` group (`seg` bytes each, the last maybe shorter)."""
    return [raw[off : off + seg] for off in range(0, len(raw), seg)]


_seq_steps: dict[tuple[int, int], numpy.ndarray] = {}


def _steps(count: int, mss: int) -> numpy.ndarray:
    """0, mss, 2 mss, ... as uint32, so that adding a sequence number wraps."""
    steps = _seq_steps.get((count, mss))
    if steps is None:
        np = loaded_numpy()
        steps = _seq_steps[(count, mss)] = np.arange(count, dtype=np.uint32) * np.uint32(mss)
    return steps


def _scan_rows(view: memoryview, seg: int, count: int, crc: bool = False) -> tuple | bool | None:
    """The `count` full datagrams as one run, checked with numpy, or None
    if they are not one (the caller then walks them one by one). Their
    checksums the caller verified together (or the AEAD authenticated);
    with `crc`, they are checked here, and False means one is wrong (None
    then says the rows are correct). With the C primitive that check is
    part of its one pass over the rows; the Python equivalent is the check
    `scan` makes without it, one CRC call over the batch."""
    full = count * seg
    form, flags, wnd, dst, seq0, ack, ts0 = SHORT.unpack_from(view)
    if form != SHORT_FORM or flags | PSH != ACK | PSH or not dst:
        return None if not crc or crc32c(view[:full]) == batch_residue(seg, count) else False
    mss = seg - _OVERHEAD
    if _c is not None:
        # The same checks and join in one call (the numpy below is its
        # Python equivalent), and every row's CRC32C against the value each
        # correct datagram has.
        joined = _c.same_rows(view, seg, count, _SAME, _SEQ_AT, SHORT_SIZE, mss, CRC_RESIDUE if crc else None)
        if joined is None or joined is False:
            return joined
        ts_last = _U32.unpack_from(view, (count - 1) * seg + _TSVAL_AT)[0]
        return (dst, seq0, ack, wnd, ts0, ts_last, joined, view[:full])
    if crc and crc32c(view[:full]) != batch_residue(seg, count):
        return False
    if (np := loaded_numpy()) is None:
        return None
    # Every row: the same form, flags (but PSH), connection, ACK and window
    # as the first, sequence numbers stepping by the payload size.
    # (count_nonzero, not .any(): a fifth of the cost on arrays this small.)
    head = np.ndarray((count, 4), "<u4", view, 0, (seg, 4))
    if (np.count_nonzero((head ^ head[0]) & _SAME_LE)
            or np.count_nonzero(np.ndarray((count,), ">u4", view, _SEQ_AT, (seg,))
                                != _steps(count, mss) + np.uint32(seq0))):
        return None
    data = np.ndarray((count, mss), _U8, view, SHORT_SIZE, (seg, 1)).tobytes()
    ts_last = _U32.unpack_from(view, (count - 1) * seg + _TSVAL_AT)[0]
    return (dst, seq0, ack, wnd, ts0, ts_last, data, view[:full])


_residues: dict[int, tuple[bytes, list[int]]] = {}


def batch_residue(seg: int, rows: int) -> int:
    """The CRC32C of `rows` correct datagrams of `seg` bytes back to back.

    CRC32C(data, start) is affine in `start`, and every correct datagram has
    the same CRC32C (CRC_RESIDUE) from a zero start, so the CRC of a batch
    depends only on the size and number of its datagrams. Computed from any
    correct datagram of that size: zeros followed by their own trailer."""
    entry = _residues.get(seg)
    if entry is None:
        body = bytes(seg - TRAILER_SIZE)
        entry = _residues[seg] = (body + _CRC.pack(crc32c(body)), [0])
    model, table = entry
    while len(table) <= rows:
        table.append(crc32c(model, table[-1]))
    return table[rows]


def coalesce(datagrams: list) -> list[tuple[bytes, int]]:
    """Group datagrams, in order, as UDP GRO would: runs of equal size (the
    last of a group may be shorter, and ends it), at most GRO_SEGMENTS and
    GRO_BYTES each. Returns (buffer, segment size) pairs for `scan`."""
    out: list[tuple[bytes, int]] = []
    group: list = []
    size = total = 0
    for d in datagrams:
        n = len(d)
        if not n:
            # GRO never merges an empty datagram: it arrives on its own.
            if group:
                out.append((b"".join(group), size))
                group = []
            out.append((b"", 0))
            continue
        if group and (n > size or len(group) >= GRO_SEGMENTS or total + n > GRO_BYTES):
            out.append((b"".join(group), size))
            group = []
        if not group:
            size, total = n, 0
        group.append(d)
        total += n
        if n < size:
            out.append((b"".join(group), size))
            group = []
    if group:
        out.append((b"".join(group), size))
    return out
