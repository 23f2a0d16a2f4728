"""An asyncio.StreamReader that hands out received chunks without copying them.

A plain StreamReader copies every byte twice: `feed_data` appends it to one
bytearray, and `read(n)` copies it out again (and, for a partial read, moves
the rest to the front). At high rates the second copy also lands in freshly
allocated pages: a bulk receiver reading a megabyte at a time took a page
fault for every 4 KB it received, and spent more time in the kernel than in
Python (see docs/design.md, "Copies and memory").

`ChunkReader` keeps what arrives as the chunks the connection delivered (each
one datagram's or one batch's payload, at most 64 KB) and `read(n)` returns
the oldest chunk itself when it fits: no copy and no large allocation. Every
other method (readexactly, readuntil, readline, iteration) works on the
inherited bytearray buffer as before: the chunks are moved into it first.
At most one of the two holds data at any time, so the order of the stream is
kept: new data goes to the bytearray while it is not empty.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, SupportsIndex

if TYPE_CHECKING:
    from asyncio.streams import _ReaduntilBuffer  # (typeshed's name for what readuntil takes)


class ChunkReader(asyncio.StreamReader):
    """An asyncio.StreamReader whose `read(n)` returns received chunks as they are."""

    __slots__ = ("_chunks", "_head", "_chunked")  # not in the inherited __dict__: a server holds thousands

    # The inherited StreamReader's state, which the chunk paths read and
    # write directly (CPython's asyncio/streams.py; typeshed declares none
    # of it, being private).
    _buffer: bytearray
    _eof: bool
    _exception: Exception | None
    _waiter: asyncio.Future[None] | None
    _transport: asyncio.ReadTransport | None
    _paused: bool
    _limit: int
    _loop: asyncio.AbstractEventLoop

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self._chunks: deque[bytes] | None = None  # made on first use, dropped when empty
        self._head = 0  # bytes of _chunks[0] already read
        self._chunked = 0  # bytes held in _chunks, unread

    # ------------------------------------------------------------- feeding
    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        if self._buffer or type(data) is not bytes:
            # Behind data already in the bytearray, or a mutable buffer the
            # caller may reuse: the plain path (copied into the bytearray).
            self._flatten()
            super().feed_data(data)
            return
        assert not self._eof, "feed_data after feed_eof"
        if not data:
            return
        chunks = self._chunks
        if chunks is None:
            chunks = self._chunks = deque()
        chunks.append(data)
        self._chunked += len(data)
        waiter = self._waiter  # (the inherited _wakeup_waiter, inline: once per message)
        if waiter is not None:
            self._waiter = None
            if not waiter.cancelled():
                waiter.set_result(None)
        if (self._transport is not None and not self._paused
                and self._chunked > 2 * self._limit):
            try:
                self._transport.pause_reading()
            except NotImplementedError:
                self._transport = None
            else:
                self._paused = True

    def _flatten(self) -> None:
        """Move the chunks into the inherited bytearray (for the methods that scan it)."""
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
            assert self._transport is not None  # (reading is paused only through a transport)
            self._transport.resume_reading()

    def _new_waiter(self, func_name: str) -> asyncio.Future[None]:
        """The future feed_data, feed_eof or set_exception resolves (the
        inherited _wait_for_data's, made without its coroutine: the chunk
        paths await it directly, once per message). If reading was paused,
        it resumes: asyncio's version resumes the transport and then makes
        the waiter; ours feeds synchronously on resume (what the connection
        holds), and would pause again before the waiter existed: a
        readexactly(n) larger than twice the limit then waited forever
        behind a zero window. So the waiter comes first."""
        if self._waiter is not None:
            raise RuntimeError(f"{func_name}() called while another coroutine is "
                               "already waiting for incoming data")
        waiter = self._waiter = self._loop.create_future()
        if self._paused and self._transport is not None:
            self._paused = False
            try:
                self._transport.resume_reading()  # may wake (and clear) the waiter
            except BaseException:
                self._waiter = None
                raise
        return waiter

    async def _wait_for_data(self, func_name: str) -> None:
        # The inherited methods re-check the bytearray after waking up: what
        # arrived as chunks must be there by then.
        waiter = self._new_waiter(func_name)
        try:
            await waiter
        finally:
            self._waiter = None
        self._flatten()

    # ------------------------------------------------------------- reading
    def at_eof(self) -> bool:
        return self._eof and not self._buffer and not self._chunked

    async def read(self, n: int = -1) -> bytes:
        if n <= 0 or self._buffer:
            return await super().read(n)  # read(-1) calls read(limit) in a loop
        if not self._chunked:
            if self._exception is not None:
                raise self._exception
            if self._eof:
                return b""
            waiter = self._new_waiter("read")
            try:
                await waiter
            finally:
                self._waiter = None
            if self._buffer or not self._chunked:
                return await super().read(n)  # fed through the bytearray, or EOF/error
        return self._take(n)

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

    async def readexactly(self, n: int) -> bytes:
        # The common case, a message that arrived in one piece: hand out
        # (a slice of) the oldest chunk, as read(n) does, rather than join
        # the chunks into the bytearray and cut the message out of it again.
        while n > 0 and not self._buffer and self._exception is None:
            chunks = self._chunks
            if chunks:
                if len(chunks[0]) - self._head >= n:
                    return self._take(n)
                break  # spread over chunks: the bytearray path joins them
            if self._eof:
                break  # the inherited method raises IncompleteReadError
            waiter = self._new_waiter("readexactly")
            try:
                await waiter
            finally:
                self._waiter = None
        self._flatten()
        return await super().readexactly(n)

    async def readuntil(self, separator: _ReaduntilBuffer = b"\n") -> bytes:
        self._flatten()
        return await super().readuntil(separator)

    def __repr__(self) -> str:
        text = super().__repr__()
        if self._chunked:
            text = text[:-1] + f" {self._chunked} bytes in chunks>"
        return text
