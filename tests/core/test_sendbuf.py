"""SendBuffer: chunks kept by reference, ranges read back as the stream had them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gannet.core import sendbuf as sendbuf_mod
from gannet.core.sendbuf import SendBuffer

needs_follows = pytest.mark.skipif(sendbuf_mod._follows is None,
                                   reason="gannet.wire._batch's follows is not built here (or GANNET_PURE=1)")


def test_bytes_are_kept_by_reference_and_mutable_input_is_copied():
    buf = SendBuffer(100)
    data = b"a" * 1000
    buf.append(data)
    chunk, off = buf.span(100, 600)
    assert chunk is data and off == 0  # no copy
    mutable = bytearray(b"xyz")
    buf.append(mutable)
    mutable[:] = b"!!!"  # the caller reuses its buffer
    assert bytes(buf.view(1100, 1103)) == b"xyz"
    assert len(buf) == 1003 and buf.end == 1103


def test_a_range_across_chunks_is_joined():
    buf = SendBuffer(0)
    for piece in (b"abc", b"def", b"ghi"):
        buf.append(piece)
    data, off = buf.span(2, 8)
    assert (bytes(data), off) == (b"cdefgh", 0)
    assert bytes(buf.view(3, 6)) == b"def"


@needs_follows
def test_consecutive_slices_of_one_buffer_are_one_chunk_read_in_place():
    data = bytes(range(256)) * 64
    view = memoryview(data)
    buf = SendBuffer(1000)
    for at in range(0, 4096, 1024):
        buf.append(view[at : at + 1024])
    buf.append(view[8192:9000])  # a gap: a chunk of its own
    buf.append(memoryview(bytes(data[9000:9100])))  # another object: its own
    buf.append(view[9000:9100])  # next to view[8192:9000] in the buffer, but not in the stream
    assert len(buf._chunks) == 4  # (the writes of 4,096 bytes from 0 are one chunk)
    chunk, off = buf.span(1000 + 1000, 1000 + 3000)  # across the first writes' seams
    assert chunk.obj is data and off == 1000 and bytes(chunk[off : off + 2000]) == data[1000:3000]
    joined, off = buf.span(1000 + 4000, 1000 + 4200)  # across the gap: joined, as before
    assert (bytes(joined), off) == (data[4000:4096] + data[8192:8296], 0)
    assert bytes(buf.view(1000, buf.end)) == data[:4096] + data[8192:9000] + data[9000:9100] * 2
    buf.trim(1000 + 2048)  # a merged chunk partly acknowledged stays
    assert bytes(buf.view(1000 + 2048, 1000 + 4096)) == data[2048:4096]


@needs_follows
def test_follows_joins_only_byte_views_that_continue_each_other():
    follows = sendbuf_mod._follows
    data = bytes(range(256)) * 4
    view = memoryview(data)
    both = follows(view[10:20], view[20:50])
    assert both.obj is data and bytes(both) == data[10:50]
    assert follows(view[10:20], view[21:50]) is None  # a gap
    assert follows(view[20:50], view[10:20]) is None  # the other order
    assert follows(view[0:8:2], view[8:16]) is None  # strided
    assert follows(view[0:8].cast("I"), view[8:16]) is None  # not bytes
    assert follows(view[0:8], memoryview(bytes(data[8:16]))) is None  # another object
    assert follows(view[0:8], data[8:16]) is None and follows(None, view[8:16]) is None
    assert follows(memoryview(bytearray(8)), memoryview(bytearray(8))) is None  # (not a bytes object)


def test_the_chunks_of_different_buffers_or_out_of_order_slices_stay_apart():
    data = bytes(range(200))
    view = memoryview(data)
    buf = SendBuffer(0)
    buf.append(view[100:150])
    buf.append(view[0:100])  # before it in the buffer: not its continuation
    buf.append(data[150:])  # bytes, not a view of the buffer
    buf.append(bytearray(view[150:160]))  # copied (mutable)
    assert len(buf._chunks) == 4
    assert bytes(buf.view(0, buf.end)) == data[100:150] + data[0:100] + data[150:] + data[150:160]


def test_trim_releases_acknowledged_chunks_and_keeps_a_partial_one():
    buf = SendBuffer(0)
    for i in range(100):
        buf.append(bytes([i]) * 10)
    buf.trim(505)
    assert buf.start == 505 and len(buf) == 495
    assert bytes(buf.view(505, 512)) == bytes([50]) * 5 + bytes([51]) * 2
    with pytest.raises(IndexError):
        buf.span(500, 510)  # acknowledged, gone
    with pytest.raises(IndexError):
        buf.span(990, 1001)  # never written
    # view slices like bytes: past the end gives what is held, empty gives b""
    assert bytes(buf.view(995, 1010)) == bytes([99]) * 5
    assert buf.view(1000, 1000) == b"" and buf.view(700, 700) == b""
    with pytest.raises(IndexError):
        buf.view(500, 510)
    buf.trim(1000)
    assert not buf and buf.start == buf.end == 1000
    buf.append(b"more")
    assert bytes(buf.view(1000, 1004)) == b"more"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("append"), st.binary(min_size=0, max_size=50), st.booleans()),
    st.tuples(st.just("trim"), st.integers(0, 60)),
    st.tuples(st.just("read"), st.integers(0, 400), st.integers(1, 120)),
), max_size=60))
def test_reads_match_a_model_of_the_stream(ops):
    base = 1 << 40  # positions are unwrapped 64-bit stream offsets
    buf = SendBuffer(base)
    stream = b""  # everything ever written
    start = base
    for op in ops:
        if op[0] == "append":
            buf.append(op[1] if op[2] else bytearray(op[1]))
            stream += op[1]
        elif op[0] == "trim":
            start = min(start + op[1], base + len(stream))
            buf.trim(start)
        else:
            lo = start + op[1]
            hi = lo + op[2]
            if hi > base + len(stream) or lo >= hi:
                continue
            assert bytes(buf.view(lo, hi)) == stream[lo - base : hi - base]
        assert buf.start == start and buf.end == base + len(stream)


def test_view_matches_the_bytes_held_on_random_ranges():
    """view() (its newest-chunk shortcut included) gives exactly the bytes
    written, as the chunk itself when a range is one whole chunk."""
    import random

    rng = random.Random(4)
    buf = SendBuffer(1000)
    data = bytearray()  # everything written, from position 1000
    for _ in range(2000):
        r = rng.random()
        if r < 0.5:
            chunk = rng.randbytes(rng.choice((1, 5, 64, 700)))
            buf.append(chunk)
            data += chunk
            got = buf.view(buf.end - len(chunk), buf.end)
            assert got is chunk  # no copy, no view: the chunk as written
        elif r < 0.7 and len(buf):
            buf.trim(rng.randint(buf.start, buf.end))
        if len(buf):
            start = rng.randint(buf.start, buf.end)
            end = rng.randint(start, buf.end + 3)
            assert bytes(buf.view(start, end)) == bytes(data[start - 1000:min(end, buf.end) - 1000])


POOL = bytes(range(251)) * 8


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("slice"), st.integers(0, 3), st.integers(1, 80)),  # a gap of 0: the next slice
    st.tuples(st.just("trim"), st.integers(0, 90)),
    st.tuples(st.just("read"), st.integers(0, 400), st.integers(1, 200)),
), max_size=60))
def test_slices_of_one_buffer_read_back_as_written(ops):
    """Consecutive slices of one buffer (held as one chunk where the
    extension can tell) read back as the stream had them, across trims."""
    view = memoryview(POOL)
    buf = SendBuffer(7)
    stream, start, at = b"", 7, 0
    for op in ops:
        if op[0] == "slice":
            at += op[1]
            if at + op[2] > len(POOL):
                at = 0
            buf.append(view[at : at + op[2]])
            stream += POOL[at : at + op[2]]
            at += op[2]
        elif op[0] == "trim":
            start = min(start + op[1], 7 + len(stream))
            buf.trim(start)
        else:
            lo = start + op[1]
            hi = lo + op[2]
            if hi > 7 + len(stream) or lo >= hi:
                continue
            assert bytes(buf.view(lo, hi)) == stream[lo - 7 : hi - 7]
            data, off = buf.span(lo, hi)
            assert bytes(memoryview(data)[off : off + hi - lo]) == stream[lo - 7 : hi - 7]
        assert buf.start == start and buf.end == 7 + len(stream)


def _chunk_of(ends: list[int], pos: int) -> int:
    return next(i for i, e in enumerate(ends) if pos < e)


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(1, 50), min_size=1, max_size=8), step=st.integers(1, 20),
       trim=st.integers(0, 30), data=st.data())
def test_stretches_cut_a_range_at_the_seams_of_its_chunks(sizes, step, trim, data):
    """SendBuffer.stretches: whole steps from the start, each stretch within
    one written chunk, a step across a seam alone (the last may be shorter):
    checked against the chunk of every byte."""
    buf = SendBuffer(0)
    ends, pos = [], 0
    for n in sizes:
        buf.append(bytes(n))  # separate objects: a chunk each
        pos += n
        ends.append(pos)
    trim = min(trim, pos - 1)
    buf.trim(trim)
    start = data.draw(st.integers(trim, pos - 1))
    end = data.draw(st.integers(start + 1, pos))
    stops = buf.stretches(start, end, step)
    assert stops[-1] == end and stops == sorted(set(stops))
    at = start
    for stop in stops:
        chunks = {_chunk_of(ends, p) for p in range(at, stop)}
        if len(chunks) > 1:
            assert stop - at <= step  # a step across a seam, alone
        if stop < end:
            assert (stop - start) % step == 0  # cut after whole steps only
        at = stop
    # as few stretches as the rule allows: two neighbours never lie in one chunk
    bounds = [start] + stops
    for a, b, c in zip(bounds, bounds[1:], bounds[2:]):
        assert len({_chunk_of(ends, p) for p in range(a, c)}) > 1


def test_a_range_in_one_chunk_is_one_stretch():
    buf = SendBuffer(0)
    buf.append(bytes(100))
    buf.append(bytes(100))
    assert buf.stretches(0, 100, 30) == [100]
    assert buf.stretches(0, 200, 30) == [90, 120, 200]
    assert buf.stretches(0, 200, 50) == [100, 200]
