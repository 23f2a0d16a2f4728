"""ChunkReader: asyncio.StreamReader behaviour, without copying what read(n) returns."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gannet.io.reader import ChunkReader


class FakeTransport:
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pause_reading(self) -> None:
        self.paused += 1

    def resume_reading(self) -> None:
        self.resumed += 1


def run(coro):
    return asyncio.run(coro)


def test_read_hands_out_the_chunk_itself():
    async def main():
        r = ChunkReader(1024, asyncio.get_running_loop())
        data = b"x" * 5000
        r.feed_data(data)
        got = await r.read(1 << 20)
        assert got is data  # no copy
        r.feed_eof()
        assert await r.read(10) == b""
        assert r.at_eof()
    run(main())


def test_partial_reads_walk_one_chunk_in_order():
    async def main():
        r = ChunkReader(1024, asyncio.get_running_loop())
        r.feed_data(b"0123456789")
        r.feed_data(b"abc")
        assert await r.read(3) == b"012"
        assert await r.read(3) == b"345"
        assert await r.read(100) == b"6789"  # the rest of the first chunk only
        assert await r.read(100) == b"abc"
        assert not r.at_eof()
        r.feed_eof()
        assert r.at_eof()
    run(main())


def test_scanning_methods_see_chunks_in_order():
    async def main():
        r = ChunkReader(1024, asyncio.get_running_loop())
        r.feed_data(b"hello ")
        r.feed_data(b"world\nrest")
        assert await r.read(2) == b"he"
        assert await r.readline() == b"llo world\n"
        r.feed_data(bytearray(b"-mutable-"))  # copied path, behind what is buffered
        r.feed_data(b"tail")
        assert await r.readexactly(8) == b"rest-mut"
        assert await r.read(100) == b"able-tail"
    run(main())


def test_a_waiting_readuntil_wakes_for_data_that_arrives_as_chunks():
    async def main():
        loop = asyncio.get_running_loop()
        r = ChunkReader(1024, loop)
        task = asyncio.ensure_future(r.readuntil(b"!"))
        await asyncio.sleep(0)
        r.feed_data(b"abc")
        await asyncio.sleep(0)
        assert not task.done()
        r.feed_data(b"def!ghi")
        assert await asyncio.wait_for(task, 1) == b"abcdef!"
        assert await r.read(10) == b"ghi"
    run(main())


def test_a_waiting_read_wakes_and_eof_ends_it():
    async def main():
        r = ChunkReader(1024, asyncio.get_running_loop())
        task = asyncio.ensure_future(r.read(10))
        await asyncio.sleep(0)
        r.feed_data(b"0123456789abc")
        assert await asyncio.wait_for(task, 1) == b"0123456789"
        assert await r.read(10) == b"abc"
        task = asyncio.ensure_future(r.read(10))
        await asyncio.sleep(0)
        r.feed_eof()
        assert await asyncio.wait_for(task, 1) == b""
    run(main())


def test_an_error_reaches_a_waiting_read():
    async def main():
        r = ChunkReader(1024, asyncio.get_running_loop())
        task = asyncio.ensure_future(r.read(10))
        await asyncio.sleep(0)
        r.set_exception(ConnectionResetError("reset"))
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(task, 1)
    run(main())


def test_read_all_joins_every_chunk():
    async def main():
        r = ChunkReader(4, asyncio.get_running_loop())
        for piece in (b"ab", b"cdefgh", b"ij"):
            r.feed_data(piece)
        r.feed_eof()
        assert await r.read() == b"abcdefghij"
    run(main())


def test_flow_control_counts_chunks():
    async def main():
        t = FakeTransport()
        r = ChunkReader(100, asyncio.get_running_loop())
        r.set_transport(t)
        r.feed_data(b"a" * 150)
        assert t.paused == 0
        r.feed_data(b"b" * 60)  # 210 > 2 * limit
        assert t.paused == 1
        await r.read(150)  # 60 left, under the limit
        assert t.resumed == 1
    run(main())



def test_readexactly_takes_a_message_from_its_chunk():
    async def main():
        r = ChunkReader(1024, asyncio.get_running_loop())
        msg = b"hello 1 2\n"
        r.feed_data(msg)
        got = await r.readexactly(len(msg))
        assert got is msg  # the chunk itself: nothing joined or copied
        assert r._chunks is None and not r._buffer
        r.feed_data(b"headpayload")
        assert await r.readexactly(4) == b"head"  # a slice, the rest stays a chunk
        assert await r.read(100) == b"payload"
    run(main())


def test_a_waiting_readexactly_wakes_for_a_chunk_or_joins_several():
    async def main():
        r = ChunkReader(1024, asyncio.get_running_loop())
        task = asyncio.ensure_future(r.readexactly(5))
        await asyncio.sleep(0)
        r.feed_data(b"abcde")
        assert await asyncio.wait_for(task, 1) == b"abcde"
        task = asyncio.ensure_future(r.readexactly(6))
        await asyncio.sleep(0)
        r.feed_data(b"abc")
        await asyncio.sleep(0)
        assert not task.done()
        r.feed_data(b"defg")
        assert await asyncio.wait_for(task, 1) == b"abcdef"
        assert await r.read(10) == b"g"
    run(main())


def test_readexactly_at_eof_or_error_raises_as_before():
    async def main():
        r = ChunkReader(1024, asyncio.get_running_loop())
        task = asyncio.ensure_future(r.readexactly(5))
        await asyncio.sleep(0)
        r.feed_data(b"ab")
        await asyncio.sleep(0)
        r.feed_eof()
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await asyncio.wait_for(task, 1)
        assert info.value.partial == b"ab"
        r = ChunkReader(1024, asyncio.get_running_loop())
        r.feed_data(b"abcdef")
        r.set_exception(ConnectionResetError("reset"))
        with pytest.raises(ConnectionResetError):
            await r.readexactly(3)  # the error first, as StreamReader does
        r = ChunkReader(1024, asyncio.get_running_loop())
        task = asyncio.ensure_future(r.readexactly(3))
        await asyncio.sleep(0)
        r.set_exception(ConnectionResetError("reset"))
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(task, 1)
    run(main())

# Random feeds and reads against a model of the stream: every result is the
# next bytes of what was fed, as each method defines it.
_feed = st.tuples(st.just("feed"), st.binary(min_size=1, max_size=40), st.booleans())
_read = st.tuples(st.sampled_from(["read", "readexactly", "readline"]), st.integers(1, 50))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_feed, _read), max_size=40))
def test_every_result_is_the_next_part_of_the_stream(ops):
    async def main():
        r = ChunkReader(1 << 16, asyncio.get_running_loop())
        pending = b""  # fed and not yet read
        for op in ops:
            if op[0] == "feed":
                r.feed_data(op[1] if op[2] else bytearray(op[1]))
                pending += op[1]
                continue
            kind, n = op
            if kind == "read" and pending:
                got = await r.read(n)
                assert 0 < len(got) <= n and pending.startswith(got)
            elif kind == "readexactly" and len(pending) >= n:
                got = await r.readexactly(n)
                assert got == pending[:n]
            elif kind == "readline" and b"\n" in pending:
                got = await r.readline()
                assert got == pending[: pending.index(b"\n") + 1]
            else:
                continue
            assert type(got) is bytes
            pending = pending[len(got):]
        r.feed_eof()
        assert await r.read() == pending
        assert r.at_eof()

    run(main())
