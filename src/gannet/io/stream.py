"""The asyncio streams' per-message glue: one connection's reader and writer state.

`_StreamConn` is the event handler the endpoint calls for one connection: it
moves what the connection received into the reader (or a `divert` sink) and
what the writer wrote into the connection. The public classes around it
(`StreamWriter`, `Server`, `open_connection`) are in io/aio.py.

This module is compiled with the core (`gannet._build.MODULES`): per 64-byte
message and side the handler, `pull`, the writer's `write` and `drain` and
the reader's `feed_data` and `readexactly` run here as native code, calling
the compiled `Connection` and `ChunkReader` directly (docs/design.md, "The
small-message path"). The pure build runs the same source.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol

from ..core.connection import Connection
from ..core.events import (
    AllDataAcknowledged,
    ConnectionEstablished,
    ConnectionTerminated,
    DataReceived,
    Event,
    SendSpaceAvailable,
    StreamEnded,
)
from ..core.states import State
from .endpoint import AioEndpoint, copy_error
from .reader import ChunkReader

HIGH_WATER: Final = 64 * 1024  # bytes waiting beyond Gannet's send buffer before drain() blocks
FIN_ACKED = (State.FIN_WAIT_2, State.TIME_WAIT, State.CLOSED)
_CLOSED: Final = State.CLOSED  # `State.CLOSED` is a slow lookup in Python 3.11 (see core/connection.py)

# The event classes the handler tells apart, once per event: as Final names a
# compiled build holds them in C statics, not a module dictionary probe each.
_DataReceived: Final = DataReceived
_SendSpaceAvailable: Final = SendSpaceAvailable
_StreamEnded: Final = StreamEnded
_ConnectionEstablished: Final = ConnectionEstablished
_AllDataAcknowledged: Final = AllDataAcknowledged


class Sink(Protocol):
    """What `divert` hands a connection's input to, in place of its reader.
    Called on the loop's thread with the endpoint's lock held."""

    def feed_data(self, data: bytes) -> None: ...
    def feed_eof(self) -> None: ...
    def set_exception(self, exc: Exception) -> None: ...


class _Pending:
    """Bytes written but not yet taken by the connection, as a queue of chunks:
    handing a prefix to the connection never moves the rest (a bytearray's
    `del buf[:n]` would, on every ACK of a bulk writer)."""

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        # The deque is made by the first write that does not fit: an empty
        # one costs 760 bytes, and a server's 10,000 idle connections almost
        # never have anything waiting here.
        self.chunks: deque[bytes | memoryview] | None = None
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(self, data: Any) -> None:
        """Queue `data`; anything mutable is copied, as a transport's write does."""
        if type(data) is not bytes and not (type(data) is memoryview and type(data.obj) is bytes):
            data = bytes(data)
        if data:
            chunks = self.chunks
            if chunks is None:
                chunks = self.chunks = deque()
            chunks.append(data)
            self.size += len(data)

    def clear(self) -> None:
        self.chunks = None
        self.size = 0

    def feed(self, conn: Connection) -> None:
        """Give the connection as much as it takes, oldest first."""
        chunks = self.chunks
        while chunks:
            chunk = chunks[0]
            n = conn.send(chunk)
            self.size -= n
            if n < len(chunk):
                if n:
                    chunks[0] = memoryview(chunk)[n:]
                return
            chunks.popleft()
        self.chunks = None


class _StreamConn:
    """Glue between one Connection and its reader / StreamWriter (loop thread).

    A server holds one per connection, so it is kept small: slots, no future
    for the handshake unless someone waits for it (active opens), the
    "finished" future made only when awaited, and the object itself is the
    event handler the endpoint calls (no bound method kept per connection).
    """

    __slots__ = ("aep", "conn", "loop", "reader", "sink", "pending", "paused", "discard",
                 "eof_seen", "eof_fed", "eof_requested", "fin_queued", "error", "established",
                 "done", "_finished", "drain_waiters", "on_done")

    def __init__(self, aep: AioEndpoint, conn: Connection, limit: int, *,
                 active: bool = False) -> None:
        self.aep = aep
        self.conn = conn
        self.loop: asyncio.AbstractEventLoop = aep.loop
        reader = ChunkReader(limit, self.loop)
        reader.set_transport(self)  # (the reader calls only pause_reading and resume_reading)
        self.reader = reader  # the application's
        self.sink: Sink | None = None  # after `divert`: what takes the reader's place
        # Written but not yet taken by conn.send: a _Pending only while a
        # write did not fit (most connections never have one).
        self.pending: _Pending | None = None
        self.paused = False
        self.discard = False  # closed for reading: drop what arrives
        self.eof_seen = False
        self.eof_fed = False
        self.eof_requested = False  # write_eof/close called
        self.fin_queued = False  # conn.shutdown_write called
        self.error: Exception | None = None
        # Resolved when the handshake completes; only an active open waits for it.
        self.established: asyncio.Future[None] | None = self.loop.create_future() if active else None
        self.done = False  # our FIN acknowledged, or terminated (see `finished`)
        self._finished: asyncio.Future[None] | None = None
        self.drain_waiters: list[asyncio.Future[None]] | None = None
        self.on_done: Callable[[_StreamConn], None] | None = None  # the server's bookkeeping
        aep.attach(conn, self)
        self._sync()

    @property
    def finished(self) -> asyncio.Future[None]:
        """A future resolved once `done` (made on demand)."""
        fut = self._finished
        if fut is None:
            fut = self._finished = self.loop.create_future()
            if self.done:
                fut.set_result(None)
        return fut

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        _resolve_if(self._finished)
        if self.on_done is not None:
            self.on_done(self)

    def _input(self) -> ChunkReader | Sink:
        """Where received data, the end and errors go."""
        sink = self.sink
        return self.reader if sink is None else sink

    # The reader calls these (as if we were its transport).
    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            with self.aep.lock:
                self.pull()
            self.aep.request_flush()  # the window opened: tell the peer

    def _sync(self) -> None:
        """Catch up with what happened before we were attached (level, not edge)."""
        conn = self.conn
        if conn.established:
            _resolve_if(self.established)
        if conn.eof:
            self.eof_seen = True
        if conn.state is _CLOSED:
            self._terminated(conn.error)
        else:
            self.pull()

    def __call__(self, ev: Event) -> None:
        kind = type(ev)
        if kind is _DataReceived:
            self.pull()
        elif kind is _SendSpaceAvailable:
            self.push()
        elif kind is _StreamEnded:
            self.eof_seen = True
            self.pull()
        elif kind is _ConnectionEstablished:
            _resolve_if(self.established)
            if self.conn.hold_handshake_ack:
                # The task waiting in connect_endpoint runs first (its wake-up
                # is already queued): a first write there joins this flush and
                # carries the ACK.
                self.aep.release_ack_soon(self.conn)
        elif kind is _AllDataAcknowledged:
            if self.fin_queued and self.conn.state in FIN_ACKED:
                self._finish()
        elif isinstance(ev, ConnectionTerminated):
            self._terminated(ev.error)

    def pull(self) -> None:
        conn = self.conn
        rcv = conn.rcv
        if self.discard:
            while conn.readable_bytes:
                conn.recv(conn.readable_bytes)
        else:
            sink = self.sink
            if sink is None:
                reader = self.reader
                while not self.paused and rcv.buf_len:  # (conn.readable_bytes)
                    reader.feed_data(conn.recv_chunk())  # kept as it is: no join, no copy
            else:
                while not self.paused and rcv.buf_len:
                    sink.feed_data(conn.recv_chunk())
            if self.paused and rcv.buf_len:
                return
        if self.eof_seen and not self.eof_fed and not conn.readable_bytes:
            self.eof_fed = True
            self._input().feed_eof()

    def push(self) -> None:
        pending = self.pending
        if pending is not None:
            try:
                pending.feed(self.conn)
            except OSError as exc:
                self._fail_writers(exc)
                return
            if not pending.size:
                self.pending = pending = None
        if pending is None:
            if self.eof_requested and not self.fin_queued:
                self.fin_queued = True
                self.conn.shutdown_write(self.aep.now())
        if (pending is None or pending.size <= HIGH_WATER) and self.drain_waiters:
            waiters, self.drain_waiters = self.drain_waiters, None
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    # ------------------------------------------------------- the writer's
    def write(self, data: Any, closing: bool) -> None:
        """StreamWriter.write (`closing`: the writer's close() was called)."""
        if self.error is not None:
            raise copy_error(self.error)
        if self.eof_requested or closing:
            raise BrokenPipeError("write after write_eof() or close()")
        if not data:
            return
        pending = self.pending
        aep = self.aep
        if pending is not None and pending.size:
            pending.append(data)
        else:
            with aep.lock:
                n = self.conn.send(data)
            if n < len(data):
                if pending is None:
                    pending = self.pending = _Pending()
                pending.append(memoryview(data)[n:])
        aep.flush_now()  # the first write of a loop iteration leaves at once

    def forward(self, data: Any) -> int:
        """A relay's write of one chunk (apps/tunnel.py's `Relay.from_tcp`):
        the flush of this loop turn is requested first and the write joins
        it (the chunks several connections deliver in one turn leave in one
        pass and one send), then the write; returns the bytes left waiting
        beyond Gannet's send buffer, for the relay's backpressure."""
        self.aep.request_flush()
        self.write(data, False)
        pending = self.pending
        return 0 if pending is None else pending.size

    async def drain(self, closing: bool) -> None:
        """StreamWriter.drain: wait while more than HIGH_WATER bytes do not
        fit in Gannet's send buffer."""
        if self.error is not None:
            raise copy_error(self.error)
        pending = self.pending
        if pending is not None and pending.size > HIGH_WATER:
            fut: asyncio.Future[None] = self.loop.create_future()
            if self.drain_waiters is None:
                self.drain_waiters = []
            self.drain_waiters.append(fut)
            await fut
        elif closing:
            await asyncio.sleep(0)

    def _fail_writers(self, exc: Exception) -> None:
        self.pending = None
        waiters, self.drain_waiters = self.drain_waiters, None
        for fut in waiters or ():
            if not fut.done():
                fut.set_exception(copy_error(exc))

    def _terminated(self, error: Exception | None) -> None:
        self.aep.detach(self.conn)
        established = self.established
        if error is not None:
            self.error = error
            if established is not None and not established.done():
                established.set_exception(copy_error(error))
            if not self.eof_fed:
                self.eof_fed = True
                self._input().set_exception(copy_error(error))
            self._fail_writers(error)
        else:
            if established is not None and not established.done():
                established.set_exception(ConnectionResetError("connection closed during the handshake"))
            self.eof_seen = True
            if not self.paused:
                self.pull()
            if self.pending is not None and self.pending.size:
                self._fail_writers(BrokenPipeError("connection closed with data unsent"))
            else:
                self.push()  # wake drain() waiters
        self._finish()

    def start_close(self, *, reading_too: bool) -> None:
        with self.aep.lock:
            if reading_too and not self.discard:
                self.discard = True
                # What the application did not read is dropped, the reader ends.
                if not self.eof_fed and self.error is None:
                    self.eof_fed = True
                    self._input().feed_eof()
                self.pull()
            if not self.eof_requested:
                self.eof_requested = True
                self.push()
        self.aep.request_flush()

    def divert(self, sink: Sink) -> None:
        """Hand the input to `sink` from now on (gannet.io.aio.divert)."""
        reader = self.reader
        assert self.sink is None, "already diverted"
        reader._flatten()
        held = bytes(reader._buffer)
        reader._buffer.clear()
        self.sink = sink  # what pull() and _terminated() feed from now on
        if held:
            sink.feed_data(held)
        exc = reader._exception
        if exc is not None:
            assert isinstance(exc, Exception)  # (what _terminated gives it)
            sink.set_exception(exc)
        elif reader._eof:
            sink.feed_eof()
        self.paused = False  # (the reader's own pause, if any, no longer applies)
        self.pull()


def _resolve_if(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)
