"""gannet.wire._batch (the C rows primitive) against its Python equivalent in
wire/batch.py: the same trains byte for byte, the same verdicts on batches.

Under GANNET_PURE=1, or where the extension is not built, there is nothing
to compare and these tests skip saying so; tests/core/test_batch_path.py
runs the Python equivalent in every build."""

from __future__ import annotations

import random

import pytest
from crc32c import crc32c

from gannet.wire import batch
from gannet.wire.batch import encode_run, release, scan
from corepair import established_endpoints
from gannet.wire.datagram import CRC_RESIDUE, SHORT_SIZE
from gannet.wire.segment import ACK, FIN, PSH, SegmentRun

NATIVE = batch._c

pytestmark = pytest.mark.skipif(
    NATIVE is None, reason="gannet.wire._batch is not built in this build (GANNET_PURE=1 or no compiler)")


def random_run(rng: random.Random) -> SegmentRun:
    mss = rng.choice([1, 3, 100, 1000, 1448, 8952, 65000 - 24])
    count = rng.randint(1, 64 if mss < 2000 else 6)
    length = mss * count - (rng.randint(0, mss - 1) if rng.random() < 0.5 else 0)
    offset = rng.randint(0, 9)
    buf = rng.randbytes(offset + length + rng.randint(0, 9))
    if rng.random() < 0.3:
        buf = bytearray(buf)
    seq = rng.choice([0, 2**32 - 1, 2**32 - 5 * mss, rng.getrandbits(32)])  # wraps inside the run
    return SegmentRun(seq, rng.getrandbits(32), ACK, rng.choice([ACK, ACK | PSH]), rng.getrandbits(16),
                      rng.getrandbits(32), rng.getrandbits(32), buf, offset, length, mss)


def encoded(run: SegmentRun, native: bool, trailers: bool = True, monkeypatch=None, dst: int = 9) -> bytes:
    monkeypatch.setattr(batch, "_c", NATIVE if native else None)
    if not native:
        batch.load_numpy()
    return bytes(encode_run(dst, run, trailers))


def test_the_crc_is_the_crc32c_packages():
    rng = random.Random(5)
    for n in [0, 1, 7, 8, 9, 15, 16, 17, 1444, 1448, 65000, *[rng.randint(0, 3000) for _ in range(50)]]:
        data = rng.randbytes(n)
        assert NATIVE.crc32c(data) == crc32c(data), n


def test_trains_are_byte_for_byte_the_python_ones(monkeypatch):
    rng = random.Random(1)
    for _ in range(300):
        run = random_run(rng)
        assert encoded(run, True, monkeypatch=monkeypatch) == encoded(run, False, monkeypatch=monkeypatch), (
            run.mss, run.length)


def test_without_trailers_everything_but_the_trailers_is_written(monkeypatch):
    rng = random.Random(2)
    for _ in range(100):
        run = random_run(rng)
        ours = encoded(run, True, False, monkeypatch)
        theirs = encoded(run, False, True, monkeypatch)
        size = SHORT_SIZE + run.mss + 4
        for off in range(0, len(theirs), size):
            end = min(off + size, len(theirs)) - 4
            assert ours[off:end] == theirs[off:end]


def test_a_pooled_train_is_filled_again_in_one_call(monkeypatch):
    monkeypatch.setattr(batch, "_c", NATIVE)
    batch._pool.clear()
    batch._pooled[0] = 0
    mss = 1448
    first = encode_run(7, SegmentRun(5, 6, ACK, ACK, 9, 9, 9, bytes(50 * mss), 0, 44 * mss, mss))
    release(first)
    assert first._parts is None  # (no numpy views: the C call needs none)
    data = random.Random(3).randbytes(44 * mss)
    run = SegmentRun(2**32 - 100, 6, ACK, ACK | PSH, 9, 10, 9, data, 0, 44 * mss, mss)
    again = encode_run(7, run)
    assert again is first
    assert bytes(again) == encoded(run, False, monkeypatch=monkeypatch, dst=7)


def _batch_of(rng: random.Random, mss: int, count: int) -> bytearray:
    data = rng.randbytes(mss * count)
    run = SegmentRun(rng.getrandbits(32), rng.getrandbits(32), ACK, ACK | PSH, rng.getrandbits(16),
                     rng.getrandbits(32), 0, data, 0, len(data), mss)
    return bytearray(encode_run(rng.randint(1, 2**32 - 1), run))


def _scanned(buf: bytes, seg: int, native: bool, monkeypatch) -> list[tuple]:
    """scan's verdict on `buf` as the adapter hands it over (a memoryview of
    its receive buffer: scan_run's way, with the extension), and as bytes
    (the general path): the same either way."""
    monkeypatch.setattr(batch, "_c", NATIVE if native else None)
    if not native:
        batch.load_numpy()
    out = [(*r[:7], bytes(r[7])) for r in scan(memoryview(bytearray(buf)), seg)]
    assert out == [(*r[:7], bytes(r[7])) for r in scan(bytes(buf), seg)]
    return out


def test_scan_run_takes_a_batch_of_one_run_with_or_without_a_short_last_row(monkeypatch):
    """scan_run, the C call for scan's common case: one run of full rows
    (and the last, shorter row left to the row-by-row walk), anything else
    declined to the code that handles it; scan's result is the Python
    equivalent's every way."""
    rng = random.Random(10)
    for _ in range(120):
        mss = rng.choice([1, 100, 1448])
        count = rng.randint(batch.VECTOR_MIN - 2, 44)
        seg = SHORT_SIZE + mss + 4
        data = rng.randbytes(mss * count - (rng.randint(1, mss - 1) if mss > 1 and rng.random() < 0.5 else 0))
        run = SegmentRun(rng.getrandbits(32), rng.getrandbits(32), ACK, ACK | PSH, rng.getrandbits(16),
                         rng.getrandbits(32), 0, data, 0, len(data), mss)
        buf = bytes(encode_run(rng.randint(1, 2**32 - 1), run))
        if rng.random() < 0.3:
            buf = bytearray(buf)
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
            buf = bytes(buf)
        ours = _scanned(buf, seg, True, monkeypatch)
        assert ours == _scanned(buf, seg, False, monkeypatch), (mss, count, len(buf))
        took = NATIVE.scan_run(memoryview(buf), seg, batch.VECTOR_MIN, batch._SAME, batch._FIELDS, SHORT_SIZE,
                               batch.SHORT_FORM, ACK, PSH, CRC_RESIDUE)
        if took is not None:
            assert (*took[:7], bytes(took[7])) == ours[0] and len(buf) // seg >= batch.VECTOR_MIN
    with pytest.raises(TypeError):
        NATIVE.scan_run(memoryview(buf), seg, 8, batch._SAME, (0, 1, 2), SHORT_SIZE, 0, 0, 0, 0)
    with pytest.raises(ValueError):  # (a field past the header)
        NATIVE.scan_run(memoryview(buf), seg, 8, batch._SAME, (0, 1, 2, 4, 8, 12, 30), SHORT_SIZE, 0, 0, 0, 0)
    assert NATIVE.scan_run(bytes(buf), seg, 8, batch._SAME, batch._FIELDS, SHORT_SIZE, 0, 0, 0, 0) is None


def test_same_rows_gives_the_numpy_verdict_on_every_field(monkeypatch):
    """A byte changed in any header field of any row (the CRC mended, so that
    only the run check can tell): both say run or not-a-run alike, with the
    same payloads."""
    rng = random.Random(4)
    for _ in range(150):
        mss = rng.choice([100, 1448])
        count = rng.randint(batch.VECTOR_MIN, 44)
        buf = _batch_of(rng, mss, count)
        seg = SHORT_SIZE + mss + 4
        row = rng.randrange(count)
        at = rng.randrange(SHORT_SIZE)
        buf[row * seg + at] ^= rng.choice([1, PSH, FIN, 0x80, 0xFF])
        body = row * seg + seg - 4
        buf[body : body + 4] = crc32c(bytes(buf[row * seg : body])).to_bytes(4, "little")
        ours = _scanned(bytes(buf), seg, True, monkeypatch)
        theirs = _scanned(bytes(buf), seg, False, monkeypatch)
        assert ours == theirs, (row, at)


def test_same_rows_rejects_what_is_not_one_run_and_joins_what_is():
    seg, mss = SHORT_SIZE + 10 + 4, 10
    masks = batch._SAME
    rows = []
    for k in range(3):
        header = bytearray(SHORT_SIZE)
        header[8:12] = (0xFFFFFFF6 + k * mss & 0xFFFFFFFF).to_bytes(4, "big")  # wraps
        rows.append(bytes(header) + bytes([k]) * mss + bytes(4))
    good = b"".join(rows)
    assert (NATIVE.same_rows(good, seg, 3, masks, 8, SHORT_SIZE, mss, None)
            == bytes(10) + bytes([1]) * 10 + bytes([2]) * 10)
    bad = bytearray(good)
    bad[2 * seg + 11] ^= 1  # the third row's sequence number
    assert NATIVE.same_rows(bytes(bad), seg, 3, masks, 8, SHORT_SIZE, mss, None) is None
    with pytest.raises(ValueError):
        NATIVE.same_rows(good, seg, 4, masks, 8, SHORT_SIZE, mss, None)  # fewer bytes than rows
    with pytest.raises(ValueError):
        NATIVE.same_rows(good, seg, 3, masks, 8, SHORT_SIZE, mss, 2**32)  # not a CRC32C
    with pytest.raises(TypeError):
        NATIVE.same_rows(good, seg, 3, masks, 8, SHORT_SIZE, mss)  # what to check is always said
    with pytest.raises(ValueError):
        NATIVE.encode_rows(bytearray(10), bytes(SHORT_SIZE), b"x", 0, 0, 1, 25, ACK, 8, True)
    with pytest.raises(ValueError):  # (the payloads would run past the end of src)
        NATIVE.encode_rows(bytearray(50), bytes(SHORT_SIZE), bytes(30), 5, 0, 26, 50, ACK, 8, True)
    with pytest.raises(BufferError):  # (what any writer into a read-only buffer raises)
        NATIVE.encode_rows(b"read-only", bytes(SHORT_SIZE), b"x", 0, 0, 1, 25, ACK, 8, True)


def test_rows_too_large_for_it_are_left_to_python_yet_it_writes_them_alike(monkeypatch):
    """Path MTU discovery's datagrams (batch.NATIVE_BELOW and up) with CRC
    trailers take the Python code, whose CRC calls run three lanes over a
    long row; called on such rows anyway, encode_rows writes the same
    bytes."""
    mss = 65000 - 24
    data = random.Random(6).randbytes(2 * mss - 10)
    run = SegmentRun(2**32 - mss, 1, ACK, ACK | PSH, 9, 10, 11, data, 0, len(data), mss)
    size = SHORT_SIZE + mss + 4
    assert size >= batch.NATIVE_BELOW
    python = encoded(run, False, monkeypatch=monkeypatch)
    assert encoded(run, True, monkeypatch=monkeypatch) == python
    out = bytearray(len(python))
    header = bytearray(python[:SHORT_SIZE])
    header[8:12] = bytes(4)  # (the template's sequence number is written per row)
    header[1] = ACK
    NATIVE.encode_rows(out, bytes(header), data, 0, run.seq, mss, size, ACK | PSH, 8, True)
    assert bytes(out) == python


def test_large_rows_without_trailers_are_written_in_one_call(monkeypatch):
    """Without trailers (a train sealed next) there is no CRC for the
    Python code to run faster: path MTU discovery's rows are written by
    one encode_rows call too, everything but the trailers as the Python
    code writes it."""
    calls = []

    class Counting:
        def __getattr__(self, name):
            return getattr(NATIVE, name)

        def encode_rows(self, *args):
            calls.append(args[6])
            return NATIVE.encode_rows(*args)

    mss = 65000 - 24
    size = SHORT_SIZE + mss + 4
    data = random.Random(18).randbytes(3 * mss - 7)
    run = SegmentRun(2**32 - mss, 1, ACK, ACK | PSH, 9, 10, 11, data, 0, len(data), mss)
    python = encoded(run, False, monkeypatch=monkeypatch)
    monkeypatch.setattr(batch, "_c", Counting())
    ours = bytes(encode_run(9, run, False))
    assert calls == [size]
    for off in range(0, len(python), size):
        end = min(off + size, len(python)) - 4
        assert ours[off:end] == python[off:end]
    encode_run(9, run, True)  # with trailers: the Python code's
    assert calls == [size]


def test_same_rows_checks_every_rows_crc_when_asked():
    """Given the value every correct datagram's CRC32C has, same_rows checks
    each row's (rows in threes and the rest alone): False for a byte changed
    anywhere in any row, whether or not the rows are one run; None only for
    correct rows that are not one run."""
    rng = random.Random(7)
    for count in [8, 9, 10, 11, 44, 64]:
        mss = rng.choice([100, 1448])
        seg = SHORT_SIZE + mss + 4
        buf = _batch_of(rng, mss, count)
        args = (seg, count, batch._SAME, 8, SHORT_SIZE, mss)
        joined = NATIVE.same_rows(bytes(buf), *args, None)
        assert joined is not None and NATIVE.same_rows(bytes(buf), *args, CRC_RESIDUE) == joined
        for row in {0, 1, 2, count - 3, count - 2, count - 1, rng.randrange(count)}:
            for at in [0, 9, SHORT_SIZE, rng.randrange(seg), seg - 1]:  # header, payload, trailer
                bad = bytearray(buf)
                bad[row * seg + at] ^= 1 << rng.randrange(8)
                assert NATIVE.same_rows(bytes(bad), *args, CRC_RESIDUE) is False, (count, row, at)
        other = bytearray(buf)
        k = rng.randrange(1, count)
        other[k * seg + 15] ^= 1  # the ACK number: not one run...
        body = k * seg + seg - 4
        other[body : body + 4] = crc32c(bytes(other[k * seg : body])).to_bytes(4, "little")  # ...of correct rows
        assert NATIVE.same_rows(bytes(other), *args, CRC_RESIDUE) is None
        other[(k - 1) * seg + SHORT_SIZE] ^= 1
        assert NATIVE.same_rows(bytes(other), *args, CRC_RESIDUE) is False


def test_a_corrupted_row_is_found_and_isolated_as_the_python_does(monkeypatch):
    """scan of a batch with damaged rows (the CRC not mended): the C path
    checks the CRCs in its run check, the Python equivalent with one CRC call
    over the batch; both give the same runs, the damaged rows alone."""
    rng = random.Random(8)
    for _ in range(150):
        mss = rng.choice([100, 1448])
        count = rng.randint(batch.VECTOR_MIN, 44)
        seg = SHORT_SIZE + mss + 4
        buf = _batch_of(rng, mss, count)
        for _ in range(rng.choice([1, 1, 2, 3])):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        ours = _scanned(bytes(buf), seg, True, monkeypatch)
        assert ours == _scanned(bytes(buf), seg, False, monkeypatch)
        assert any(r[6] is None for r in ours)  # the damage was found


def _established():
    return established_endpoints()


@pytest.mark.parametrize("row", [0, 4, 9])
def test_an_endpoint_drops_and_counts_a_corrupted_row_alike(row, monkeypatch):
    """Through Endpoint.receive_batch: with the C check or the Python one, the
    damaged datagram is dropped and counted as malformed, the rows before it
    are delivered, and the batch's stats are the same."""
    results = []
    for native in (True, False):
        monkeypatch.setattr(batch, "_c", NATIVE if native else None)
        if not native:
            batch.load_numpy()
        a, b, ca, cb = _established()
        message = random.Random(9).randbytes(10 * ca.mss)  # within the initial window: one run of 10
        ca.send(message)
        (train, _addr), = a.datagrams_to_send(0.01, trains=True)
        buf = bytearray(train)
        buf[row * train.size + SHORT_SIZE + 3] ^= 0x10  # a payload byte
        before = b.stats.malformed_dropped
        b.receive_batch(memoryview(buf), train.size, "A", 0.02)
        assert b.stats.malformed_dropped == before + 1
        assert cb.recv(100_000) == message[: row * ca.mss]
        results.append((b.stats.datagrams_received, cb.stats.fast_path_segments, cb.readable_bytes))
    assert results[0] == results[1]
