"""Gannet's stream reader: asyncio.StreamReader's API, without copying what it hands out.

A plain asyncio.StreamReader copies every byte twice: `feed_data` appends it
to one bytearray, and `read(n)` copies it out again (and, for a partial read,
moves the rest to the front). At high rates the second copy also lands in
freshly allocated pages: a bulk receiver reading a megabyte at a time took a
page fault for every 4 KB it received, and spent more time in the kernel than
in Python (see docs/design.md, "Copies and memory").

`ChunkReader` keeps what arrives as the chunks the connection delivered (each
one datagram's or one batch's payload, at most 64 KB): `read(n)` returns the
oldest chunk itself when it fits, and `readexactly(n)` a message that arrived
in one piece, with no copy and no large allocation. The methods that scan
(readuntil, readline, iteration) and a readexactly spread over chunks work on
a bytearray: the chunks are moved into it first. At most one of the two holds
data at any time, so the order of the stream is kept: new data goes to the
bytearray while it is not empty.

It is a class of its own, not an asyncio.StreamReader subclass: the module is
compiled (`gannet._build.MODULES`), and a compiled subclass of a Python class
keeps its attributes generic (docs/design.md, "The small-message path"). It
offers the whole public API of asyncio.StreamReader (read, readexactly,
readline, readuntil, at_eof, exception, set_exception, feed_data, feed_eof,
set_transport, async iteration) with asyncio's limit handling and its
exceptions (IncompleteReadError, LimitOverrunError, ValueError from
readline), but `isinstance(reader, asyncio.StreamReader)` is False
(asyncio.StreamReader is a plain class, not an ABC one could register with).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from typing import Any, Protocol

DEFAULT_LIMIT = 2 ** 16  # asyncio.StreamReader's own default (64 KB)


class ReadFlow(Protocol):
    """What the reader calls on its transport: flow control only."""

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class ChunkReader:
    """A stream reader with asyncio.StreamReader's API, whose `read(n)` and
    `readexactly(n)` return received chunks as they are."""

    # (A pure build keeps these in slots: a server holds thousands of readers.
    # The compiled class is a C struct of them.)
    __slots__ = ("_limit", "_loop", "_buffer", "_eof", "_waiter", "_want", "_exception",
                 "_transport", "_paused", "_chunks", "_head", "_chunked")

    def __init__(self, limit: int = DEFAULT_LIMIT,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        if limit <= 0:
            raise ValueError("Limit cannot be <= 0")
        self._limit = limit
        if loop is None:
            loop = asyncio.get_event_loop()
        self._loop: asyncio.AbstractEventLoop = loop
        self._buffer = bytearray()  # the scanning methods' data (see the module's docstring)
        self._eof = False
        # What a read waiting for data waits on: resolved with None (a wake-up
        # for a read that then looks again), or, while `_want` > 0, with the
        # `_want` bytes readexactly waits for (see readexactly).
        self._waiter: asyncio.Future[Any] | None = None
        self._want = 0
        self._exception: BaseException | None = None
        self._transport: ReadFlow | None = None
        self._paused = False
        self._chunks: deque[bytes] | None = None  # made on first use, dropped when empty
        self._head = 0  # bytes of _chunks[0] already read
        self._chunked = 0  # bytes held in _chunks, unread

    @property
    def limit(self) -> int:
        return self._limit

    # ------------------------------------------------------------- feeding
    def exception(self) -> BaseException | None:
        return self._exception

    def set_exception(self, exc: BaseException) -> None:
        self._exception = exc
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            self._want = 0
            if not waiter.cancelled():
                waiter.set_exception(exc)

    def set_transport(self, transport: ReadFlow) -> None:
        assert self._transport is None, "Transport already set"
        self._transport = transport

    def feed_eof(self) -> None:
        self._eof = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            want = self._want
            if not waiter.cancelled():
                if want:
                    self._want = 0
                    self._flatten()
                    incomplete = bytes(self._buffer)
                    self._buffer.clear()
                    waiter.set_exception(asyncio.IncompleteReadError(incomplete, want))
                else:
                    waiter.set_result(None)
            self._want = 0

    def feed_data(self, data: Any) -> None:
        """Append `data` (any bytes-like object; all but `bytes` are copied,
        as they may be reused by the caller)."""
        assert not self._eof, "feed_data after feed_eof"
        if not data:
            return
        if self._buffer:
            self._buffer.extend(data)  # behind data already in the bytearray
        else:
            chunk: bytes = data if type(data) is bytes else bytes(data)
            chunks = self._chunks
            if chunks is None:
                chunks = self._chunks = deque()
            chunks.append(chunk)
            self._chunked += len(chunk)
        waiter = self._waiter  # (the wake-up, inline: once per message)
        if waiter is not None:
            want = self._want
            if not want:
                self._waiter = None
                if not waiter.cancelled():
                    waiter.set_result(None)
            elif waiter.cancelled():
                self._waiter = None
                self._want = 0
            elif len(self._buffer) + self._chunked >= want:
                # readexactly's message is here: handed over in the future
                # it awaits (from the chunk itself when it arrived whole).
                self._waiter = None
                self._want = 0
                waiter.set_result(self._take_exactly(want))
        transport = self._transport
        if (transport is not None and not self._paused
                and len(self._buffer) + self._chunked > 2 * self._limit):
            try:
                transport.pause_reading()
            except NotImplementedError:
                self._transport = None  # cannot be paused: buffer everything
            else:
                self._paused = True

    def _flatten(self) -> None:
        """Move the chunks into the bytearray (for the methods that scan it)."""
        chunks = self._chunks
        if chunks:
            head = self._head
            if head:
                self._buffer.extend(memoryview(chunks.popleft())[head:])
            self._buffer.extend(b"".join(chunks))
        self._chunks = None
        self._head = self._chunked = 0

    def _maybe_resume_transport(self) -> None:
        if self._paused and len(self._buffer) + self._chunked <= self._limit:
            self._paused = False
            transport = self._transport
            assert transport is not None  # (reading is paused only through a transport)
            transport.resume_reading()

    def _new_waiter(self, func_name: str) -> asyncio.Future[None]:
        """The future feed_data, feed_eof or set_exception resolves (the read
        paths await it directly, once per message, rather than through a
        coroutine around it). If reading was paused, it resumes: asyncio's
        version resumes the transport and then makes the waiter; ours feeds
        synchronously on resume (what the connection holds), and would
        pause again before the waiter existed: a readexactly(n) larger than
        twice the limit then waited forever behind a zero window. So the
        waiter comes first."""
        if self._waiter is not None:
            if not (self._want and self._waiter.cancelled()):
                raise RuntimeError(f"{func_name}() called while another coroutine is "
                                   "already waiting for incoming data")
            self._want = 0  # (a readexactly future cancelled before data came)
        assert not self._eof, "_wait_for_data after EOF"
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiter = waiter
        if self._paused and self._transport is not None:
            self._paused = False
            try:
                self._transport.resume_reading()  # may wake (and clear) the waiter
            except BaseException:
                self._waiter = None
                raise
        return waiter

    async def _wait_for_data(self, func_name: str) -> None:
        waiter = self._new_waiter(func_name)
        try:
            await waiter
        finally:
            self._waiter = None

    # ------------------------------------------------------------- reading
    def at_eof(self) -> bool:
        """True if everything was read and `feed_eof` was called."""
        return self._eof and not self._buffer and not self._chunked

    async def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes, as soon as any are there (b"" at EOF); n < 0:
        everything until EOF. The oldest chunk itself when it fits."""
        if self._exception is not None:
            raise self._exception
        if n == 0:
            return b""
        if n < 0:
            # Reading in pieces of `limit`, as asyncio does: a transport
            # paused above twice the limit resumes as the pieces go.
            blocks = []
            while True:
                block = await self.read(self._limit)
                if not block:
                    break
                blocks.append(block)
            return b"".join(blocks)
        if not self._buffer and not self._chunked and not self._eof:
            waiter = self._new_waiter("read")
            try:
                await waiter
            finally:
                self._waiter = None
        if self._chunked:
            return self._take(n)
        return self._take_buffer(n)

    def _take(self, n: int) -> bytes:
        """Up to `n` bytes from the oldest chunk (there is one)."""
        chunks = self._chunks
        assert chunks is not None  # (the callers saw _chunked > 0)
        chunk = chunks[0]
        head = self._head
        size = len(chunk) - head
        if size <= n:
            chunks.popleft()
            self._head = 0
            if head:
                chunk = chunk[head:]
            if not chunks:
                self._chunks = None
        else:
            size = n
            self._head = head + n
            chunk = chunk[head:head + n]
        self._chunked -= size
        if self._paused:
            self._maybe_resume_transport()
        return chunk

    def _take_buffer(self, n: int) -> bytes:
        """Up to `n` bytes from the bytearray."""
        buffer = self._buffer
        if len(buffer) <= n:
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:n])
            del buffer[:n]
        if self._paused:
            self._maybe_resume_transport()
        return data

    def readexactly(self, n: int) -> Awaitable[bytes]:
        """Exactly `n` bytes; IncompleteReadError if the stream ends first
        (its `partial` holds what there was, now consumed).

        When nothing is buffered (a request-response exchange: the reader
        asks before the message is there) this returns the future that
        feed_data resolves with the message itself, not a coroutine waiting
        on a wake-up and then taking it: no coroutine made and resumed per
        message (BENCHMARKS.md, "The stream API compiled"). `n` is within
        the limit then, so that reading never pauses before it is there."""
        if (0 < n <= self._limit and not self._chunked and not self._buffer
                and self._exception is None and not self._eof and not self._paused):
            waiter = self._waiter
            if waiter is None or (self._want and waiter.cancelled()):
                fut: asyncio.Future[bytes] = self._loop.create_future()
                self._waiter = fut
                self._want = n
                return fut
        return self._readexactly(n)

    def _take_exactly(self, n: int) -> bytes:
        """`n` bytes (there are as many): a slice of the oldest chunk when
        it holds them, else joined in the bytearray."""
        if not self._buffer:
            chunks = self._chunks
            assert chunks is not None  # (the caller counted n bytes)
            if len(chunks[0]) - self._head >= n:
                return self._take(n)
            self._flatten()
        return self._take_buffer(n)

    async def _readexactly(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        if self._exception is not None:
            raise self._exception
        if n == 0:
            return b""
        while True:
            if self._buffer:
                if len(self._buffer) >= n:
                    break
            elif self._chunked:
                chunks = self._chunks
                assert chunks is not None  # (held while _chunked > 0)
                # The common case, a message that arrived in one piece: (a
                # slice of) the oldest chunk, nothing joined or copied.
                if len(chunks[0]) - self._head >= n:
                    return self._take(n)
                if self._chunked >= n:
                    return self._take_exactly(n)  # spread over chunks: joined
            if self._eof:
                self._flatten()
                incomplete = bytes(self._buffer)
                self._buffer.clear()
                raise asyncio.IncompleteReadError(incomplete, n)
            waiter = self._new_waiter("readexactly")
            try:
                await waiter
            finally:
                self._waiter = None
        return self._take_buffer(n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Up to and including `separator`. LimitOverrunError (data kept) if
        it is not within `limit` bytes; IncompleteReadError (data consumed)
        if the stream ends first."""
        seplen = len(separator)
        if seplen == 0:
            raise ValueError("Separator should be at least one-byte string")
        if self._exception is not None:
            raise self._exception
        # `offset`: how far from the start the separator is known not to begin.
        offset = 0
        while True:
            self._flatten()
            buffer = self._buffer
            buflen = len(buffer)
            if buflen - offset >= seplen:
                isep = buffer.find(separator, offset)
                if isep != -1:
                    break
                offset = buflen + 1 - seplen  # (a separator may straddle the end)
                if offset > self._limit:
                    raise asyncio.LimitOverrunError(
                        "Separator is not found, and chunk exceed the limit", offset)
            # What is buffered is scanned before EOF is looked at: the last
            # chunk may have completed the separator.
            if self._eof:
                chunk = bytes(buffer)
                buffer.clear()
                raise asyncio.IncompleteReadError(chunk, None)
            await self._wait_for_data("readuntil")
        if isep > self._limit:
            raise asyncio.LimitOverrunError("Separator is found, but chunk is longer than limit", isep)
        return self._take_buffer(isep + seplen)

    async def readline(self) -> bytes:
        """One line with its b"\\n"; at EOF what is left (b"" if nothing).
        ValueError over `limit` (the line is dropped, or all that is buffered)."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            return e.partial
        except asyncio.LimitOverrunError as e:
            buffer = self._buffer
            if buffer.startswith(b"\n", e.consumed):
                del buffer[:e.consumed + 1]
            else:
                buffer.clear()
            self._maybe_resume_transport()
            raise ValueError(e.args[0])  # (chained to it, as asyncio's is)

    def __aiter__(self) -> ChunkReader:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if line == b"":
            raise StopAsyncIteration
        return line

    def __repr__(self) -> str:
        info = ["gannet.StreamReader"]
        if self._buffer or self._chunked:
            info.append(f"{len(self._buffer) + self._chunked} bytes")
        if self._eof:
            info.append("eof")
        if self._limit != DEFAULT_LIMIT:
            info.append(f"limit={self._limit}")
        if self._waiter is not None:
            info.append(f"waiter={self._waiter!r}")
        if self._exception is not None:
            info.append(f"exception={self._exception!r}")
        if self._transport is not None:
            info.append(f"transport={self._transport!r}")
        if self._paused:
            info.append("paused")
        return "<{}>".format(" ".join(info))
