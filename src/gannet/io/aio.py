"""asyncio streams over Gannet, shaped like `asyncio.open_connection` / `start_server`.

The reader (`StreamReader`, io/reader.py's `ChunkReader`) has
asyncio.StreamReader's API, and its `read(n)` returns received chunks
without copying them. Flow control reaches the
peer: when the reader holds more than twice its `limit`, Gannet stops
pulling from the connection's receive buffer, so the advertised window closes.

The writer (`StreamWriter`) hands bytes to the connection's send buffer;
what does not fit waits in a small local buffer and `drain()` blocks while
that is above the high-water mark, i.e. while Gannet's send buffer is full.

The per-message work of both (the event handler, the writer's `write` and
`drain`, the reader) is in compiled modules (io/stream.py, io/reader.py).
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from .. import observe
from ..config import Config
from ..core.connection import Connection
from ..core.states import State
from .endpoint import AioEndpoint, copy_error, create_endpoint, make_config
from .reader import ChunkReader
from .stream import HIGH_WATER, Sink, _StreamConn

StreamReader = ChunkReader  # gannet's reader: asyncio.StreamReader's API (io/reader.py)

DEFAULT_LIMIT = 256 * 1024  # the reader's limit; it holds up to twice this before pausing

__all__ = ["open_connection", "start_server", "StreamReader", "StreamWriter", "Server",
           "connect_endpoint", "divert", "Sink", "HIGH_WATER"]

DEFAULT_LIMIT = 256 * 1024  # StreamReader limit; it holds up to twice this before pausing
class StreamWriter:
    """Writes to a Gannet connection; the asyncio.StreamWriter interface, no transport."""

    # A server holds one per connection: slots, and a __dict__ only if someone
    # sets an attribute of their own.
    __slots__ = ("_sc", "_reader", "_closing", "__dict__", "__weakref__")

    def __init__(self, sc: _StreamConn, reader: ChunkReader | Sink) -> None:
        self._sc = sc
        self._reader = reader
        self._closing = False

    # ---------------------------------------------------------------- write
    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._sc.write(data, self._closing)  # (compiled: io/stream.py)

    def writelines(self, data) -> None:
        for chunk in data:
            self.write(chunk)

    def drain(self) -> Awaitable[None]:
        """Wait while more than HIGH_WATER bytes do not fit in Gannet's send
        buffer (a coroutine of the compiled glue, returned as it is: no
        coroutine of this method's own around it)."""
        return self._sc.drain(self._closing)

    def get_write_buffer_size(self) -> int:
        """Bytes waiting for room in Gannet's send buffer (not the buffer itself)."""
        pending = self._sc.pending
        return pending.size if pending is not None else 0

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


def divert(writer: StreamWriter, sink: Sink) -> _StreamConn:
    """From now on, hand what `writer`'s connection receives to `sink` (each
    chunk as it is taken from the receive buffer, then the end or the error)
    instead of buffering it in the StreamReader for a task to read: a relay
    forwards each chunk without a task switch. What the reader held unread
    goes to the sink first. Returns the flow control: `pause_reading()`
    stops taking data (the advertised window closes as the receive buffer
    fills), `resume_reading()` takes it again."""
    sc = writer._sc
    with sc.aep.lock:
        sc.divert(sink)
    sc.aep.request_flush()  # the window may have opened
    return sc


async def connect_endpoint(aep: AioEndpoint, addr: object, config: Config | None = None,
                           limit: int = DEFAULT_LIMIT, server_name: str | None = None,
                           ) -> tuple[ChunkReader, StreamWriter]:
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
    return sc.reader, StreamWriter(sc, sc.reader)


async def open_connection(
    host: str | None = None, port: int | None = None, *, config: Config | None = None,
    local_addr: tuple[str, int] | None = None, limit: int = DEFAULT_LIMIT, family: int = 0,
    wire: str = "udp", **config_overrides: object,
) -> tuple[ChunkReader, StreamWriter]:
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


ClientCallback = Callable[[ChunkReader, StreamWriter], Awaitable[None] | None]


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
