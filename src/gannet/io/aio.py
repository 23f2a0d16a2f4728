"""asyncio streams over Gannet, shaped like `asyncio.open_connection` / `start_server`.

The reader is an `asyncio.StreamReader` (a `ChunkReader`, whose `read(n)`
returns received chunks without copying them). Flow control reaches the
peer: when the reader holds more than twice its `limit`, Gannet stops
pulling from the connection's receive buffer, so the advertised window closes.

The writer (`StreamWriter`) hands bytes to the connection's send buffer;
what does not fit waits in a small local buffer and `drain()` blocks while
that is above the high-water mark, i.e. while Gannet's send buffer is full.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .. import observe
from ..config import Config
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
from .endpoint import AioEndpoint, copy_error, create_endpoint, make_config
from .reader import ChunkReader

__all__ = ["open_connection", "start_server", "StreamWriter", "Server", "connect_endpoint",
           "divert", "Sink"]

DEFAULT_LIMIT = 256 * 1024  # StreamReader limit; it holds up to twice this before pausing
HIGH_WATER = 64 * 1024  # bytes waiting beyond Gannet's send buffer before drain() blocks
FIN_ACKED = (State.FIN_WAIT_2, State.TIME_WAIT, State.CLOSED)
_CLOSED = State.CLOSED  # `State.CLOSED` is a slow lookup in Python 3.11 (see core/connection.py)


class _Pending:
    """Bytes written but not yet taken by the connection, as a queue of chunks:
    handing a prefix to the connection never moves the rest (a bytearray's
    `del buf[:n]` would, on every ACK of a bulk writer)."""

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        # The deque is made by the first write that does not fit: an empty
        # one costs 760 bytes, and a server's 10,000 idle connections almost
        # never have anything waiting here.
        self.chunks: deque[bytes | memoryview] | tuple[()] = ()
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Queue `data`; anything mutable is copied, as a transport's write does."""
        if type(data) is not bytes and not (type(data) is memoryview and type(data.obj) is bytes):
            data = bytes(data)
        if data:
            chunks = self.chunks
            if not chunks:
                chunks = self.chunks = deque()
            chunks.append(data)
            self.size += len(data)

    def clear(self) -> None:
        self.chunks = ()
        self.size = 0

    def feed(self, send: Callable[[bytes | memoryview], int]) -> None:
        """Give the connection (`send`) as much as it takes, oldest first."""
        chunks = self.chunks
        while chunks:
            chunk = chunks[0]
            n = send(chunk)
            self.size -= n
            if n < len(chunk):
                if n:
                    chunks[0] = memoryview(chunk)[n:]
                return
            chunks.popleft()
        self.chunks = ()


class _StreamConn:
    """Glue between one Connection and its StreamReader / StreamWriter (loop thread).

    A server holds one per connection, so it is kept small: slots, no future
    for the handshake unless someone waits for it (active opens), the
    "finished" future made only when awaited, and the object itself is the
    event handler the endpoint calls (no bound method kept per connection).
    """

    __slots__ = ("aep", "conn", "loop", "reader", "pending", "paused", "discard", "eof_seen",
                 "eof_fed", "eof_requested", "fin_queued", "error", "established", "done",
                 "_finished", "drain_waiters", "on_done")

    def __init__(self, aep: AioEndpoint, conn: Connection, limit: int, *,
                 active: bool = False) -> None:
        self.aep = aep
        self.conn = conn
        self.loop = aep.loop
        reader = ChunkReader(limit, self.loop)
        # (not a transport: the reader calls only pause_reading and resume_reading)
        reader.set_transport(self)  # type: ignore[arg-type]
        # The application's reader, or after `divert` the sink that takes its place.
        self.reader: ChunkReader | Sink = reader
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
        self.established: asyncio.Future | None = self.loop.create_future() if active else None
        self.done = False  # our FIN acknowledged, or terminated (see `finished`)
        self._finished: asyncio.Future | None = None
        self.drain_waiters: list[asyncio.Future] | None = None
        self.on_done: Callable[[_StreamConn], None] | None = None  # the server's bookkeeping
        aep.attach(conn, self)
        self._sync()

    @property
    def finished(self) -> asyncio.Future:
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
        _resolve_if(self._finished, None)
        if self.on_done is not None:
            self.on_done(self)

    # StreamReader calls these (as if we were its transport).
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
            _resolve_if(self.established, None)
        if conn.eof:
            self.eof_seen = True
        if conn.state is _CLOSED:
            self._terminated(conn.error)
        else:
            self.pull()

    def __call__(self, ev: Event) -> None:
        kind = type(ev)
        if kind is DataReceived:
            self.pull()
        elif kind is SendSpaceAvailable:
            self.push()
        elif kind is StreamEnded:
            self.eof_seen = True
            self.pull()
        elif kind is ConnectionEstablished:
            _resolve_if(self.established, None)
            if self.conn.hold_handshake_ack:
                # The task waiting in connect_endpoint runs first (its wake-up
                # is already queued): a first write there joins this flush and
                # carries the ACK.
                self.aep.release_ack_soon(self.conn)
        elif kind is AllDataAcknowledged:
            if self.fin_queued and self.conn.state in FIN_ACKED:
                self._finish()
        elif type(ev) is ConnectionTerminated:  # (`type` again: it narrows `ev`)
            self._terminated(ev.error)

    def pull(self) -> None:
        conn = self.conn
        if self.discard:
            while conn.readable_bytes:
                conn.recv(conn.readable_bytes)
        else:
            feed = self.reader.feed_data
            while not self.paused and conn.rcv.buf_len:  # (conn.readable_bytes)
                feed(conn.recv_chunk())  # kept as it is (ChunkReader): no join, no copy
            if self.paused and conn.rcv.buf_len:
                return
        if self.eof_seen and not self.eof_fed and not conn.readable_bytes:
            self.eof_fed = True
            self.reader.feed_eof()

    def push(self) -> None:
        pending = self.pending
        if pending is not None:
            try:
                pending.feed(self.conn.send)
            except OSError as exc:
                self._fail_writers(exc)
                return
            if not pending:
                self.pending = pending = None
        if pending is None:
            if self.eof_requested and not self.fin_queued:
                self.fin_queued = True
                self.conn.shutdown_write(self.aep.now())
        if (pending is None or len(pending) <= HIGH_WATER) and self.drain_waiters:
            waiters, self.drain_waiters = self.drain_waiters, None
            for fut in waiters:
                _resolve(fut, None)

    def _fail_writers(self, exc: Exception) -> None:
        self.pending = None
        waiters, self.drain_waiters = self.drain_waiters, None
        for fut in waiters or ():
            if not fut.done():
                fut.set_exception(copy_error(exc))

    def _terminated(self, error: Exception | None) -> None:
        self.aep.detach(self.conn)
        if error is not None:
            self.error = error
            if self.established is not None and not self.established.done():
                self.established.set_exception(copy_error(error))
            if not self.eof_fed:
                self.eof_fed = True
                self.reader.set_exception(copy_error(error))
            self._fail_writers(error)
        else:
            if self.established is not None and not self.established.done():
                self.established.set_exception(ConnectionResetError("connection closed during the handshake"))
            self.eof_seen = True
            if not self.paused:
                self.pull()
            if self.pending:
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
                    self.reader.feed_eof()
                self.pull()
            if not self.eof_requested:
                self.eof_requested = True
                self.push()
        self.aep.request_flush()


def _resolve(fut: asyncio.Future, value: object) -> None:
    if not fut.done():
        fut.set_result(value)


def _resolve_if(fut: asyncio.Future | None, value: object) -> None:
    if fut is not None and not fut.done():
        fut.set_result(value)


class StreamWriter:
    """Writes to a Gannet connection; the asyncio.StreamWriter interface, no transport."""

    # A server holds one per connection: slots, and a __dict__ only if someone
    # sets an attribute of their own.
    __slots__ = ("_sc", "_reader", "_closing", "__dict__", "__weakref__")

    def __init__(self, sc: _StreamConn, reader: asyncio.StreamReader | Sink) -> None:
        self._sc = sc
        self._reader = reader
        self._closing = False

    # ---------------------------------------------------------------- write
    def _check_writable(self) -> None:
        sc = self._sc
        if sc.error is not None:
            raise copy_error(sc.error)
        if sc.eof_requested or self._closing:
            raise BrokenPipeError("write after write_eof() or close()")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        sc = self._sc
        if sc.error is not None or sc.eof_requested or self._closing:
            self._check_writable()  # raises
        if not data:
            return
        if sc.pending:
            sc.pending.append(data)
        else:
            with sc.aep.lock:
                n = sc.conn.send(data)
            if n < len(data):
                if sc.pending is None:
                    sc.pending = _Pending()
                sc.pending.append(memoryview(data)[n:])
        sc.aep.flush_now()  # the first write of a loop iteration leaves at once

    def writelines(self, data) -> None:
        for chunk in data:
            self.write(chunk)

    async def drain(self) -> None:
        """Wait while more than HIGH_WATER bytes do not fit in Gannet's send buffer."""
        sc = self._sc
        if sc.error is not None:
            raise copy_error(sc.error)
        if sc.pending is not None and len(sc.pending) > HIGH_WATER:
            fut = sc.loop.create_future()
            if sc.drain_waiters is None:
                sc.drain_waiters = []
            sc.drain_waiters.append(fut)
            await fut
        elif self._closing:
            await asyncio.sleep(0)

    def get_write_buffer_size(self) -> int:
        """Bytes waiting for room in Gannet's send buffer (not the buffer itself)."""
        pending = self._sc.pending
        return len(pending) if pending is not None else 0

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: a FIN follows everything written."""
        sc = self._sc
        if sc.error is not None:
            raise copy_error(sc.error)
        if sc.eof_requested:
            return
        sc.start_close(reading_too=False)

    # ---------------------------------------------------------------- close
    def close(self) -> None:
        """Graceful close: what was written is still delivered, then FIN.
        Data that arrives afterwards is discarded."""
        if self._closing:
            return
        self._closing = True
        if self._sc.error is None:
            self._sc.start_close(reading_too=True)

    def is_closing(self) -> bool:
        return self._closing

    async def wait_closed(self) -> None:
        """Wait until everything written (and our FIN) is acknowledged, or the
        connection ended. Connection errors are not raised here."""
        await asyncio.shield(self._sc.finished)

    def abort(self) -> None:
        """Reset the connection now (RST), dropping buffered data."""
        self._closing = True
        sc = self._sc
        with sc.aep.lock:
            sc.conn.abort(sc.aep.now())
        sc.aep.request_flush()

    # ---------------------------------------------------------------- info
    @property
    def connection(self) -> Connection:
        return self._sc.conn

    @property
    def stats(self):
        return self._sc.conn.stats

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sc = self._sc
        if name == "peername":
            return sc.conn.remote_addr
        if name == "sockname":
            return sc.aep.local_address
        if name == "connection":
            return sc.conn
        if name == "endpoint":
            return sc.aep
        if name == "stats":
            return sc.conn.stats
        if name == "gannet_info":  # a ConnectionInfo (gannet.observe.info), like TCP_INFO
            with sc.aep.lock:
                return observe.info_of(sc.aep, sc.conn)
        return default

    def __repr__(self) -> str:
        return f"<gannet.StreamWriter {self._sc.conn!r}>"


class Sink(Protocol):
    """What `divert` hands a connection's input to, in place of its reader.
    Called on the loop's thread with the endpoint's lock held."""

    def feed_data(self, data: bytes) -> None: ...
    def feed_eof(self) -> None: ...
    def set_exception(self, exc: Exception) -> None: ...


def divert(writer: StreamWriter, sink: Sink) -> _StreamConn:
    """From now on, hand what `writer`'s connection receives to `sink` (each
    chunk as it is taken from the receive buffer, then the end or the error)
    instead of buffering it in the StreamReader for a task to read: a relay
    forwards each chunk without a task switch. What the reader held unread
    goes to the sink first. Returns the flow control: `pause_reading()`
    stops taking data (the advertised window closes as the receive buffer
    fills), `resume_reading()` takes it again."""
    sc = writer._sc
    reader = sc.reader
    assert isinstance(reader, ChunkReader), "already diverted"
    with sc.aep.lock:
        reader._flatten()
        held = bytes(reader._buffer)
        reader._buffer.clear()
        sc.reader = sink  # what pull() and _terminated() feed from now on
        if held:
            sink.feed_data(held)
        if reader._exception is not None:
            sink.set_exception(reader._exception)
        elif reader._eof:
            sink.feed_eof()
        sc.paused = False  # (the reader's own pause, if any, no longer applies)
        sc.pull()
    sc.aep.request_flush()  # the window may have opened
    return sc


async def connect_endpoint(aep: AioEndpoint, addr: object, config: Config | None = None,
                           limit: int = DEFAULT_LIMIT, server_name: str | None = None,
                           ) -> tuple[asyncio.StreamReader, StreamWriter]:
    """Open a connection to `addr` through an existing endpoint;
    `server_name`: the host `addr` was resolved from (pins are kept under it)."""
    with aep.lock:
        conn = aep.connect(addr, config, server_name)
        conn.hold_handshake_ack = True  # see AioEndpoint.release_ack_soon
        sc = _StreamConn(aep, conn, limit, active=True)
    aep.flush_now()  # the SYN leaves now, as connect() sends it (or joins a flush due)
    try:
        established = sc.established
        assert established is not None  # (made for active opens)
        await established
        sc.established = None  # done with: one object less per connection to keep
    except BaseException:
        with aep.lock:
            if conn.state != State.CLOSED:
                conn.abort(aep.now())
        aep.request_flush()
        raise
    reader = sc.reader
    assert isinstance(reader, ChunkReader)  # (a sink takes its place only through divert, later)
    return reader, StreamWriter(sc, reader)


async def open_connection(
    host: str | None = None, port: int | None = None, *, config: Config | None = None,
    local_addr: tuple[str, int] | None = None, limit: int = DEFAULT_LIMIT, family: int = 0,
    wire: str = "udp", **config_overrides: object,
) -> tuple[asyncio.StreamReader, StreamWriter]:
    """Connect to a Gannet server; returns (reader, writer) like asyncio's.

    Each connection gets its own UDP socket (closed when the connection ends).
    Raises ConnectionRefusedError if nothing listens there, TimeoutError after
    `config.connect_timeout`. `wire="tcp"` speaks real TCP instead, to any
    TCP server (IPv4, raw sockets, root: gannet.io.rawtcp).
    """
    if port is None:
        raise ValueError("port is required")
    _check_wire(wire)
    cfg = make_config(config, config_overrides)
    loop = asyncio.get_running_loop()
    if wire == "tcp":
        family = socket.AF_INET
    infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
    targets = [(f, a) for f, _, _, _, a in infos if f in (socket.AF_INET, socket.AF_INET6)]
    if not targets:
        raise OSError(errno.EAFNOSUPPORT, f"no IPv4/IPv6 address for {host!r}")
    error: BaseException | None = None
    for fam, addr in dict.fromkeys(targets):
        if local_addr is not None:
            lhost, lport = local_addr[0], local_addr[1]
        elif wire == "tcp":
            from .rawtcp import route_source

            ip = addr[0]
            assert isinstance(ip, str)  # (an IPv4 address: AF_INET only)
            lhost, lport = route_source(ip), 0  # a TCP endpoint sends from one address
        else:
            lhost, lport = ("::" if fam == socket.AF_INET6 else "0.0.0.0"), 0
        aep = await create_endpoint(lhost, lport, config=cfg, family=fam, loop=loop, wire=wire)
        aep.close_when_idle = True
        try:
            return await connect_endpoint(aep, addr, cfg, limit, host)
        except (ConnectionRefusedError, OSError) as exc:
            error = exc
            if aep.ep.connection_count:
                continue  # it closes itself when the aborted connection is gone
            aep.close()
        except BaseException:
            aep.close()
            raise
    assert error is not None
    raise error


WIRES = ("udp", "tcp")


def _check_wire(wire: str) -> None:
    if wire not in WIRES:
        raise ValueError(f"wire must be one of {WIRES}, not {wire!r}")


ClientCallback = Callable[[asyncio.StreamReader, StreamWriter], Awaitable[None] | None]


class Server:
    """A listening Gannet endpoint; like asyncio.Server."""

    def __init__(self, aep: AioEndpoint, callback: ClientCallback, limit: int,
                 backlog: int | None) -> None:
        self._aep = aep
        self._callback = callback
        self._limit = limit
        self._loop = aep.loop
        self._serving = True
        self._streams: set[_StreamConn] = set()
        self._tasks: dict[asyncio.Task, StreamWriter] = {}
        self._serve_forever: asyncio.Future | None = None
        self._forget = self._streams.discard  # every connection's on_done (one bound method)
        aep.on_available = self._on_available
        aep.ep.listen(backlog)  # (None: the config's)
        aep.prepare_soon()  # (the first SYN's code exchange, started while none is here)

    def _on_available(self, _conn: Connection) -> None:
        aep = self._aep
        while (conn := aep.ep.accept()) is not None:
            sc = _StreamConn(aep, conn, self._limit)
            if not sc.done:
                self._streams.add(sc)
                sc.on_done = self._forget
            reader = sc.reader
            assert isinstance(reader, ChunkReader)  # (a sink takes its place only by divert, later)
            writer = StreamWriter(sc, reader)
            try:
                res = self._callback(reader, writer)
            except Exception as exc:  # noqa: BLE001
                self._report(exc, writer)
                continue
            if asyncio.iscoroutine(res):
                task = self._loop.create_task(res)
                self._tasks[task] = writer
                task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        writer = self._tasks.pop(task, None)
        if writer is not None and not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self._report(exc, writer)

    def _report(self, exc: BaseException, writer: StreamWriter) -> None:
        self._loop.call_exception_handler(
            {"message": "Unhandled exception in client_connected_cb", "exception": exc}
        )
        writer.abort()

    # ------------------------------------------------------------- info
    @property
    def addresses(self) -> list[tuple]:
        return [self._aep.local_address]

    @property
    def sockets(self) -> tuple[_SocketInfo, ...]:
        return (_SocketInfo(self._aep),)

    @property
    def stats(self):
        """The endpoint's counters (datagrams, malformed_dropped, resets_sent, ...)."""
        return self._aep.ep.stats

    @property
    def endpoint(self) -> AioEndpoint:
        return self._aep

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        return None

    # ----------------------------------------------------------- closing
    def close(self) -> None:
        """Stop accepting; connections already open carry on."""
        if not self._serving:
            return
        self._serving = False
        self._aep.ep.stop_listening()
        self._aep.on_available = None
        if self._serve_forever is not None and not self._serve_forever.done():
            self._serve_forever.cancel()
        self._aep.request_flush()

    def close_clients(self) -> None:
        for sc in list(self._streams):
            StreamWriter(sc, sc.reader).close()

    def abort_clients(self) -> None:
        for sc in list(self._streams):
            StreamWriter(sc, sc.reader).abort()

    async def wait_closed(self) -> None:
        """After close(): wait until every connection is done, then release the socket."""
        if self._serving:
            return
        while True:
            pending = [sc.finished for sc in self._streams if not sc.done]
            if not pending:
                break
            await asyncio.wait(pending)
        self._aep.close()

    async def serve_forever(self) -> None:
        if self._serve_forever is not None:
            raise RuntimeError("serve_forever() is already running")
        if not self._serving:
            raise RuntimeError("server is closed")
        self._serve_forever = self._loop.create_future()
        try:
            await self._serve_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serve_forever = None

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        return f"<gannet.Server {self._aep.local_address!r} serving={self._serving}>"


class _SocketInfo:
    """What asyncio.Server.sockets offers callers that only inspect them."""

    def __init__(self, aep: AioEndpoint) -> None:
        self._aep = aep
        self.family = aep.family
        self.type = socket.SOCK_DGRAM

    def getsockname(self) -> tuple:
        return self._aep.local_address

    def fileno(self) -> int:
        return -1 if self._aep.closed else self._aep.sock.fileno()

    def __repr__(self) -> str:
        return f"<gannet socket {self._aep.local_address!r}>"


async def start_server(
    client_connected_cb: ClientCallback, host: str | None = None, port: int = 0, *,
    config: Config | None = None, backlog: int | None = None, limit: int = DEFAULT_LIMIT,
    family: int = 0, wire: str = "udp", **config_overrides: object,
) -> Server:
    """Listen on one UDP socket at host:port (port 0: any; see `.addresses`).

    `backlog`: connections waiting to be accepted (None: the config's
    `backlog`, 128 by default).

    `client_connected_cb(reader, writer)` is called (and awaited as a task if
    it is a coroutine) for every established connection. `wire="tcp"`
    listens for real TCP clients instead (IPv4, raw sockets, root).
    """
    _check_wire(wire)
    cfg = make_config(config, config_overrides)
    aep = await create_endpoint(host, port, config=cfg, family=family, wire=wire)
    return Server(aep, client_connected_cb, limit, backlog)
