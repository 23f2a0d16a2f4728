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


# The same operations on asyncio's own StreamReader and on ChunkReader: the
# same results, the same exceptions (type, message, `partial`, `consumed`),
# and the same state after each, including the limit's errors.
_op = st.one_of(
    st.tuples(st.just("feed"), st.binary(min_size=1, max_size=30), st.booleans()),
    st.tuples(st.sampled_from(["read", "readexactly", "readline"]), st.integers(-1, 40)),
    st.tuples(st.just("readuntil"), st.sampled_from([b"\n", b"ab", b"xyz", b""])),
)


def _outcome(exc):
    if isinstance(exc, asyncio.IncompleteReadError):
        return ("incomplete", exc.partial, exc.expected)
    if isinstance(exc, asyncio.LimitOverrunError):
        return ("overrun", exc.args[0], exc.consumed)
    return (type(exc).__name__, str(exc))


async def _apply(r, op, pending):
    """Run `op` on reader `r` if it would not wait; its outcome, or None."""
    kind = op[0]
    if kind == "feed":
        r.feed_data(op[1] if op[2] else bytearray(op[1]))
        return "fed"
    method = getattr(r, kind)
    task = asyncio.ensure_future(method() if kind == "readline" else method(op[1]))
    for _ in range(3):
        await asyncio.sleep(0)  # a call that need not wait is done by now
    if not task.done():
        task.cancel()
        return "waited"
    exc = task.exception()
    return ("ok", task.result()) if exc is None else _outcome(exc)


@settings(max_examples=200, deadline=None)
@given(st.lists(_op, max_size=30), st.integers(4, 40), st.booleans())
def test_same_results_and_errors_as_asyncio_streamreader(ops, limit, end):
    async def main():
        loop = asyncio.get_running_loop()
        ours, theirs = ChunkReader(limit, loop), asyncio.StreamReader(limit, loop)
        for op in ops:
            if op[0] != "feed":
                # Only calls that complete without waiting: compare what
                # asyncio's reader holds (enough data, or the end).
                held = bytes(theirs._buffer)
                kind, arg = op
                if not theirs.at_eof() and not end:
                    if kind == "read" and (arg < 0 or not held):
                        continue
                    if kind == "readexactly" and 0 <= arg and len(held) < arg:
                        continue
                    if kind in ("readline", "readuntil") and (
                            not arg or (arg if kind == "readuntil" else b"\n") not in held) \
                            and len(held) <= limit:
                        continue
            a = await _apply(ours, op, None)
            b = await _apply(theirs, op, None)
            if op[0] == "read" and a != b and a[0] == b[0] == "ok":
                # read(n) may return less than asyncio's (the oldest chunk
                # only): a non-empty start of it, the rest still there.
                assert a[1] and b[1].startswith(a[1]), (op, a, b)
                a = ("ok", a[1] + await ours.readexactly(len(b[1]) - len(a[1])))
            assert a == b, (op, a, b)
            assert ours.at_eof() == theirs.at_eof()
        if end:
            ours.feed_eof()
            theirs.feed_eof()
            for op in (("readline", 0), ("read", 5), ("readexactly", 3), ("read", -1)):
                assert await _apply(ours, op, None) == await _apply(theirs, op, None), op
            assert ours.at_eof() and theirs.at_eof()

    run(main())


def test_api_beside_asyncio_streamreader():
    async def main():
        loop = asyncio.get_running_loop()
        r = ChunkReader(loop=loop)
        assert r.limit == asyncio.StreamReader(loop=loop)._limit  # the same default limit
        with pytest.raises(ValueError):
            ChunkReader(0, loop)
        r.feed_data(b"one\ntwo\n")
        r.feed_data(memoryview(b"three"))
        r.feed_eof()
        assert [line async for line in r] == [b"one\n", b"two\n", b"three"]
        assert r.at_eof() and r.exception() is None
        with pytest.raises(AssertionError):
            r.feed_data(b"late")  # as asyncio's: feed_data after feed_eof
        r = ChunkReader(8, loop)
        r.feed_data(b"0123456789abc\nrest")
        with pytest.raises(ValueError, match="chunk is longer than limit"):
            await r.readline()  # the over-long line is dropped, as asyncio's
        assert await r.read(10) == b"rest"
        r.set_exception(ConnectionResetError("x"))
        assert isinstance(r.exception(), ConnectionResetError)
        with pytest.raises(ConnectionResetError):
            await r.read(1)
        r = ChunkReader(8, loop)
        reader_task = asyncio.ensure_future(r.read(3))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already waiting"):
            await r.read(3)
        r.feed_data(b"abcd")
        assert await reader_task == b"abc"

    run(main())


def test_a_readexactly_that_waits_gets_the_message_in_its_future():
    # Nothing buffered: readexactly returns the future feed_data resolves
    # with the message (the chunk itself when it arrived whole, else joined).
    async def main():
        loop = asyncio.get_running_loop()
        r = ChunkReader(1024, loop)
        pending = r.readexactly(4)
        assert isinstance(pending, asyncio.Future)
        msg = b"abcd"
        r.feed_data(msg)
        assert pending.done() and pending.result() is msg
        pending = r.readexactly(5)
        r.feed_data(b"ab")
        assert not pending.done()
        r.feed_data(b"cdefg")
        assert pending.result() == b"abcde"
        assert await r.read(10) == b"fg"
        # Cancelled before the data came (wait_for's timeout): the next
        # read works, and the data is kept for it.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(r.readexactly(3), 0.01)
        r.feed_data(b"xyz")
        assert await r.readexactly(3) == b"xyz"
        pending = r.readexactly(3)
        with pytest.raises(RuntimeError, match="already waiting"):
            await r.read(1)  # two readers at once, as asyncio refuses them
        r.set_exception(ConnectionResetError("reset"))
        with pytest.raises(ConnectionResetError):
            await pending
        # Over the limit: the coroutine path, which resumes a paused transport.
        t = FakeTransport()
        r = ChunkReader(4, loop)
        r.set_transport(t)
        task = asyncio.ensure_future(r.readexactly(20))
        await asyncio.sleep(0)
        for piece in (b"0123456789", b"abcdefghij"):
            r.feed_data(piece)
            await asyncio.sleep(0)
        assert await task == b"0123456789abcdefghij"

    run(main())
