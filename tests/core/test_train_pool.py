"""A released Train is filled again in place: the bytes must be exactly a fresh encoding's."""

from __future__ import annotations

from gannet.wire import batch
from gannet.wire.batch import Train, encode_run, release
from gannet.wire.datagram import decode
from gannet.wire.segment import ACK, PSH, SegmentRun

MSS = 1448


def _run(seq: int, ack: int, tsval: int, data: bytes, last_flags: int = ACK | PSH) -> SegmentRun:
    return SegmentRun(seq, ack, ACK, last_flags, 4000, tsval, 77, data, 5, 44 * MSS, MSS)


def test_a_reused_train_holds_exactly_the_new_runs_datagrams():
    batch._pool.clear()
    batch._pooled[0] = 0
    data1 = bytes(range(256)) * 260
    data2 = bytes(reversed(range(256))) * 260
    first = encode_run(7, _run(1000, 50, 1, data1))
    fresh = bytes(encode_run(7, _run(0xFFFFFF00, 60, 2, data2, ACK)))  # pool empty: a new train
    release(first)
    again = encode_run(7, _run(0xFFFFFF00, 60, 2, data2, ACK))
    assert again is first  # the released buffer, filled again
    assert bytes(again) == fresh
    rows = again.datagrams()
    for i, raw in enumerate(rows):
        dst, src, seg = decode(raw)  # every row's CRC is right
        assert (dst, src) == (7, None)  # the short form
        assert seg.seq == (0xFFFFFF00 + i * MSS) & 0xFFFFFFFF  # sequence numbers wrap
        assert seg.payload == data2[5 + i * MSS : 5 + (i + 1) * MSS]
        assert seg.flags == ACK and seg.tsval == 2


def test_only_whole_row_trains_are_kept_and_only_so_many_bytes():
    batch._pool.clear()
    batch._pooled[0] = 0
    short = encode_run(1, SegmentRun(0, 0, ACK, ACK, 1, 1, 1, bytes(50000), 0, 3 * MSS, MSS))
    release(short)  # below the vector path: not kept
    tail = encode_run(1, SegmentRun(0, 0, ACK, ACK, 1, 1, 1, bytes(50000), 0, 10 * MSS + 7, MSS))
    release(tail)  # a short last row: not kept
    assert not any(batch._pool.values())
    size = 44 * (MSS + 24)
    keep = batch.POOL_BYTES // size
    trains = [encode_run(1, _run(0, 0, 1, bytes(70000))) for _ in range(keep + 2)]
    for t in trains:
        release(t)
    assert sum(len(v) for v in batch._pool.values()) == keep
    assert batch._pooled[0] == keep * size
    encode_run(1, _run(0, 0, 1, bytes(70000)))
    assert batch._pooled[0] == (keep - 1) * size
    plain = Train(bytes(3 * 1472))
    plain.size = 1472
    release(plain)  # made outside encode_run: no error


def test_a_large_single_datagram_train_is_reused_too():
    batch._pool.clear()
    batch._pooled[0] = 0
    mss = 64000
    data1, data2 = bytes(range(256)) * 300, bytes(reversed(range(256))) * 300

    def one(seq, data, flags):
        return SegmentRun(seq, 5, ACK, flags, 100, 3, 4, data, 17, mss, mss)

    first = encode_run(1, one(10, data1, ACK | PSH))
    fresh = bytes(encode_run(1, one(20, data2, ACK)))
    release(first)
    again = encode_run(1, one(20, data2, ACK))
    assert again is first and bytes(again) == fresh
    dst, src, seg = decode(bytes(again))
    assert seg.seq == 20 and seg.flags == ACK and seg.payload == data2[17 : 17 + mss]
