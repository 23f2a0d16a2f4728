"""asyncio sessions of the message protocol over any asyncio-shaped byte stream.

Client side: `connect(...)` performs CONNECT / ACCEPT / ACK and returns a
`ClientSession`; `send()` fragments and transmits DATA within the negotiated
window (1 in step-by-step mode, where `send()` also waits for the ACK);
`disconnect()` waits for every ACK, sends DISCONNECT and waits for its ACK.

Server side: `serve(handler, host, port, ...)` returns a started
`MessageServer`; every session calls `handler(session, payload)` once per
reassembled message and ACKs its last fragment after the handler returns.

Both sides send KEEPALIVE when they have sent nothing for the negotiated
interval and end the session with `SessionTimeout` when the peer has been
silent for `KEEPALIVE_MISSES` intervals.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from .codec import (
    FORMATS,
    MAX_SEQ,
    AutoDecoder,
    CodecError,
    Message,
    MessageType,
    control,
    get_codec,
)
from .negotiation import (
    BURST,
    DEFAULT_KEEPALIVE,
    DEFAULT_PACKET_SIZE,
    DEFAULT_WINDOW,
    STEP,
    Limits,
    Offer,
    Params,
    Reassembler,
    Refused,
    check_accept,
    negotiate,
    split,
)
from . import transport as _transport
from ..limits import MessageLimits

log = logging.getLogger("gannet.messages")

#: Largest control message (CONNECT, ACCEPT, ERROR...) either side accepts.
CONTROL_MAX = 64 * 1024
READ_CHUNK = 256 * 1024


class SessionError(Exception):
    """The message session failed; `str(exc)` is a one-line explanation."""


class SessionRefused(SessionError):
    """The server answered CONNECT with ERROR."""


class PeerError(SessionError):
    """The peer sent ERROR during the session."""


class ProtocolError(SessionError):
    """The peer broke the protocol (bad frame, unexpected message...)."""


class SessionClosed(SessionError, ConnectionError):
    """The connection ended before the session did."""


class SessionTimeout(SessionError, TimeoutError):
    """The peer went silent, or an ACK never came."""


def next_seq(seq: int) -> int:
    """The sequence number after `seq` (1..2**32-1, wrapping past 0)."""
    return seq % MAX_SEQ + 1


class _Channel:
    """One stream plus its codec; remembers when it last sent and received."""

    def __init__(self, reader: Any, writer: Any, fmt: str | None, max_payload: int):
        self.reader = reader
        self.writer = writer
        self.decoder = AutoDecoder(max_payload)
        self.format = fmt
        self.codec = get_codec(fmt) if fmt else None
        self._pending: collections.deque[Message] = collections.deque()
        loop = asyncio.get_running_loop()
        self.clock = loop.time
        self.last_rx = self.last_tx = self.clock()

    def send_nowait(self, msg: Message) -> None:
        if self.codec is None:
            self.format = self.decoder.format or "binary"
            self.codec = get_codec(self.format)
        self.writer.write(self.codec.encode(msg))
        self.last_tx = self.clock()

    async def send(self, msg: Message) -> None:
        self.send_nowait(msg)
        await self.writer.drain()

    async def recv(self) -> Message:
        while not self._pending:
            try:
                data = await self.reader.read(READ_CHUNK)
            except (ConnectionError, OSError) as exc:
                raise SessionClosed(f"connection lost: {exc or exc.__class__.__name__}") from exc
            self.last_rx = self.clock()
            try:
                if not data:
                    self.decoder.eof()
                    raise SessionClosed("connection closed by peer")
                self._pending.extend(self.decoder.feed(data))
            except CodecError as exc:
                raise ProtocolError(f"bad message from peer: {exc}") from exc
        return self._pending.popleft()

    def peer(self) -> str:
        try:
            peer = self.writer.get_extra_info("peername")
        except Exception:  # noqa: BLE001 - a transport without peername
            peer = None
        if isinstance(peer, tuple) and len(peer) >= 2:
            return f"{peer[0]}:{peer[1]}"
        return str(peer) if peer else "?"

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - already closed or broken
            pass

    async def wait_closed(self) -> None:
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)
        except Exception:  # noqa: BLE001 - the peer reset, or took too long
            pass


async def _watchdog(chan: _Channel, interval: float, idle_timeout: float,
                    fail: Callable[[SessionError], None],
                    extra: Callable[[float], SessionError | None] | None = None) -> None:
    """Send KEEPALIVE when idle; fail the session when the peer is silent."""
    tick = min(interval, idle_timeout) / 4
    while True:
        await asyncio.sleep(tick)
        now = chan.clock()
        silent = now - chan.last_rx
        if silent >= idle_timeout:
            fail(SessionTimeout(
                f"peer silent for {silent:.1f} s (keepalive interval {interval:g} s); session ended"
            ))
            return
        if extra is not None:
            err = extra(now)
            if err is not None:
                fail(err)
                return
        if now - chan.last_tx >= interval:
            try:
                chan.send_nowait(Message(MessageType.KEEPALIVE))
            except Exception as exc:  # noqa: BLE001 - transport gone
                fail(SessionClosed(f"connection lost: {exc}"))
                return


@dataclass
class Stats:
    messages: int = 0
    frames: int = 0
    bytes: int = 0
    acks: int = 0
    keepalives_received: int = 0
    max_in_flight: int = 0


# =========================================================================== client


class ClientSession:
    """The client end of an established session (use `connect()`)."""

    def __init__(self, chan: _Channel, params: Params, offer: Offer,
                 ack_timeout: float | None, on_ack: Callable[[int], None] | None):
        self._chan = chan
        self.params = params
        self.offer = offer
        self.format = chan.format
        self.ack_timeout = ack_timeout
        self.on_ack = on_ack
        self.stats = Stats()
        self._seq = 0
        self._inflight: collections.OrderedDict[int, float] = collections.OrderedDict()
        self._waiters: list[asyncio.Future] = []
        self._error: SessionError | None = None
        self._disconnect_seq: int | None = None
        self._disconnected = False
        self._closing = False
        self._reader = asyncio.ensure_future(self._read_loop())
        self._dog = asyncio.ensure_future(_watchdog(
            chan, params.keepalive_interval, params.idle_timeout, self._fail, self._check_acks
        ))

    # ---------------------------------------------------------------- public
    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    @property
    def error(self) -> SessionError | None:
        return self._error

    @property
    def peer(self) -> str:
        return self._chan.peer()

    async def send(self, payload: bytes) -> int:
        """Send one message (split into fragments if needed); returns its last seq.

        In step-by-step mode this returns once the server has ACKed the
        message; in burst mode once it is written (see `wait_acked`).
        """
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        self._check_open()
        parts = split(payload, self.params.max_packet_size)
        seq = 0
        for i, part in enumerate(parts):
            await self._wait_for(lambda: len(self._inflight) < self.params.window_size)
            seq = self._seq = next_seq(self._seq)
            self._inflight[seq] = self._chan.clock()
            self.stats.max_in_flight = max(self.stats.max_in_flight, len(self._inflight))
            self.stats.frames += 1
            self._chan.send_nowait(Message(MessageType.DATA, seq, part, more=i < len(parts) - 1))
            await self._drain()
        self.stats.messages += 1
        self.stats.bytes += len(payload)
        if self.params.operation_mode == STEP:
            await self._wait_for(lambda: seq not in self._inflight)
        return seq

    async def wait_acked(self) -> None:
        """Wait until every DATA sent so far is acknowledged."""
        await self._wait_for(lambda: not self._inflight)

    async def disconnect(self, reason: str = "done", timeout: float = 10.0) -> None:
        """Wait for all ACKs, send DISCONNECT, wait for its ACK, close."""
        try:
            await self.wait_acked()
            seq = self._disconnect_seq = next_seq(self._seq)
            self._seq = seq
            self._chan.send_nowait(control(MessageType.DISCONNECT, {"reason": reason}, seq))
            await self._drain()
            try:
                await asyncio.wait_for(self._wait_for(lambda: self._disconnected), timeout)
            except asyncio.TimeoutError:
                raise SessionTimeout(f"server did not acknowledge DISCONNECT within {timeout:g} s") from None
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the connection now (no DISCONNECT)."""
        self._closing = True
        for task in (self._reader, self._dog):
            task.cancel()
        self._chan.close()
        await self._chan.wait_closed()
        if self._error is None and not self._disconnected:
            self._error = SessionClosed("session closed")
        self._notify()

    async def __aenter__(self) -> "ClientSession":
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self._error is None:
            await self.disconnect()
        else:
            await self.aclose()

    # ---------------------------------------------------------------- internals
    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closing or self._disconnect_seq is not None:
            raise SessionClosed("session is closing")

    async def _wait_for(self, pred: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._error is not None and not (self._disconnected and pred()):
                raise self._error
            if pred():
                return
            fut = loop.create_future()
            self._waiters.append(fut)
            await fut

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _drain(self) -> None:
        try:
            await self._chan.writer.drain()
        except (ConnectionError, OSError) as exc:
            self._fail(SessionClosed(f"connection lost: {exc or exc.__class__.__name__}"))
            raise self._error from exc  # type: ignore[misc]

    def _fail(self, exc: SessionError) -> None:
        if self._error is None:
            self._error = exc
        self._dog.cancel()
        self._chan.close()
        self._notify()

    def _check_acks(self, now: float) -> SessionError | None:
        if self.ack_timeout is None or not self._inflight:
            return None
        seq, sent = next(iter(self._inflight.items()))
        if now - sent > self.ack_timeout:
            return SessionTimeout(f"no ACK for message seq {seq} within {self.ack_timeout:g} s")
        return None

    async def _read_loop(self) -> None:
        try:
            while True:
                msg = await self._chan.recv()
                t = msg.type
                if t is MessageType.ACK:
                    self._on_ack(msg.seq)
                elif t is MessageType.KEEPALIVE:
                    self.stats.keepalives_received += 1
                elif t is MessageType.ERROR:
                    raise PeerError(f"server error: {_reason(msg)}")
                elif t is MessageType.DISCONNECT:
                    raise SessionClosed(f"server ended the session: {_reason(msg)}")
                else:
                    raise ProtocolError(f"unexpected {t.name} from server")
        except SessionError as exc:
            if self._disconnected and isinstance(exc, SessionClosed):
                return  # the server closing after our DISCONNECT is the clean end
            self._fail(exc)
        except asyncio.CancelledError:
            raise

    def _on_ack(self, seq: int) -> None:
        if seq == self._disconnect_seq and not self._inflight:
            self._disconnected = True
            self._notify()
            return
        if seq not in self._inflight:
            raise ProtocolError(f"ACK for unknown sequence number {seq}")
        while self._inflight:
            s, _ = self._inflight.popitem(last=False)
            self.stats.acks += 1
            if self.on_ack is not None:
                self.on_ack(s)
            if s == seq:
                break
        self._notify()


def _reason(msg: Message) -> str:
    try:
        body = msg.json_body()
    except CodecError:
        return msg.payload.decode("utf-8", "replace") or "(no reason given)"
    return str(body.get("reason") or "(no reason given)")


async def connect(
    host: str,
    port: int,
    *,
    mode: str = STEP,
    max_packet_size: int = DEFAULT_PACKET_SIZE,
    window_size: int = DEFAULT_WINDOW,
    keepalive_interval: float = DEFAULT_KEEPALIVE,
    client_id: str | None = None,
    format: str = "binary",
    timeout: float = 10.0,
    ack_timeout: float | None = 30.0,
    on_ack: Callable[[int], None] | None = None,
    open_connection: Callable[..., Awaitable[tuple[Any, Any]]] | None = None,
) -> ClientSession:
    """Open a stream, negotiate, and return an established ClientSession.

    `open_connection` defaults to gannet's streams when this build has them,
    else asyncio TCP (see `transport.resolve`).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}")
    if open_connection is None:
        open_connection = _transport.resolve("auto")[1]
    offer = Offer(mode, max_packet_size, window_size if mode == BURST else 1,
                  keepalive_interval, client_id, format)
    try:
        reader, writer = await asyncio.wait_for(open_connection(host, port), timeout)
    except asyncio.TimeoutError:
        raise SessionTimeout(f"could not connect to {host}:{port} within {timeout:g} s") from None
    chan = _Channel(reader, writer, format, CONTROL_MAX)
    try:
        await chan.send(control(MessageType.CONNECT, offer.to_body()))
        try:
            reply = await asyncio.wait_for(chan.recv(), timeout)
        except asyncio.TimeoutError:
            raise SessionTimeout(f"no answer to CONNECT within {timeout:g} s") from None
        except SessionClosed:
            raise SessionClosed("server closed the connection during the handshake") from None
        if reply.type is MessageType.ERROR:
            raise SessionRefused(f"server refused the session: {_reason(reply)}")
        if reply.type is not MessageType.ACCEPT:
            raise ProtocolError(f"expected ACCEPT, got {reply.type.name}")
        try:
            params = Params.from_body(reply.json_body())
            check_accept(offer, params)
        except (ValueError, CodecError) as exc:
            raise ProtocolError(str(exc)) from None
        await chan.send(control(MessageType.ACK, {"session_id": params.session_id}))
    except BaseException:
        chan.close()
        raise
    return ClientSession(chan, params, offer, ack_timeout, on_ack)


# =========================================================================== server

Handler = Callable[["ServerSession", bytes], Any]


class ServerSession:
    """The server end of one session."""

    def __init__(self, server: "MessageServer", reader: Any, writer: Any):
        self.server = server
        self._chan = _Channel(reader, writer, None, CONTROL_MAX)
        self.peer = self._chan.peer()
        self.params: Params | None = None
        self.stats = Stats()
        self.error: SessionError | None = None
        self.clean = False
        self._queue: asyncio.Queue = asyncio.Queue()
        self._received = 0
        self._acked = 0
        self._buffered = 0  # bytes of an unfinished fragmented message held (counted by the server)
        self._main: asyncio.Task | None = None

    @property
    def id(self) -> str:
        return self.params.session_id if self.params else "-"

    @property
    def format(self) -> str | None:
        return self._chan.format or self._chan.decoder.format

    def _log(self, level: int, text: str, *args: Any) -> None:
        log.log(level, "[%s %s] " + text, self.peer, self.id, *args)

    async def run(self) -> None:
        self._main = asyncio.current_task()
        reader = dog = None
        try:
            await asyncio.wait_for(self._handshake(), self.server.handshake_timeout)
            assert self.params is not None
            self._chan.decoder.max_payload = max(self.params.max_packet_size, CONTROL_MAX)
            reader = asyncio.ensure_future(self._read_loop())
            dog = asyncio.ensure_future(_watchdog(
                self._chan, self.params.keepalive_interval, self.params.idle_timeout, self._fail
            ))
            await self._process_loop()
        except asyncio.TimeoutError:
            self.error = SessionTimeout(
                f"handshake not completed within {self.server.handshake_timeout:g} s"
            )
        except SessionError as exc:
            self.error = self.error or exc
        except (ConnectionError, OSError) as exc:
            self.error = self.error or SessionClosed(f"connection lost: {exc or exc.__class__.__name__}")
        except asyncio.CancelledError:
            if self.error is None:
                self.error = SessionClosed("server shutting down")
                await self._send_error(None, disconnect=True)
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # cancelled by our own watchdog or reader: handled
        except Exception as exc:  # noqa: BLE001 - the application's handler failed
            log.exception("[%s %s] handler failed", self.peer, self.id)
            self.error = SessionError(f"server handler failed: {exc.__class__.__name__}")
        finally:
            for task in (reader, dog):
                if task is not None:
                    task.cancel()
            if self.error is not None:
                self._log(logging.ERROR, "error: %s", self.error)
                if not isinstance(self.error, (PeerError, SessionClosed)):
                    await self._send_error(str(self.error))
            self._release_fragments()
            self._chan.close()
            await self._chan.wait_closed()
            self.server._session_done(self)

    async def _send_error(self, reason: str | None, disconnect: bool = False) -> None:
        try:
            if disconnect:
                self._chan.send_nowait(control(MessageType.DISCONNECT, {"reason": "server shutting down"}))
            else:
                self._chan.send_nowait(control(MessageType.ERROR, {"reason": reason}))
            await asyncio.wait_for(self._chan.writer.drain(), 1.0)
        except Exception:  # noqa: BLE001 - best effort on a failing stream
            pass

    def _fail(self, exc: SessionError) -> None:
        if self.error is None:
            self.error = exc
        if self._main is not None:
            self._main.cancel()

    def _hold_fragment(self, n: int) -> None:
        """Count `n` more bytes of an unfinished message against the server's
        limit on such bytes across all sessions; ProtocolError beyond it."""
        server = self.server
        if server.buffered + n > server.max_buffered_bytes:
            raise ProtocolError(
                f"the server already holds {server.buffered} bytes of unfinished fragmented "
                f"messages (limit {server.max_buffered_bytes}); finish a message in fewer bytes")
        self._buffered += n
        server.buffered += n

    def _release_fragments(self) -> None:
        self.server.buffered -= self._buffered
        self._buffered = 0

    async def _handshake(self) -> None:
        first = await self._chan.recv()
        fmt = self._chan.decoder.format
        if fmt not in self.server.formats:
            raise SessionRefused(f"this server accepts only {' or '.join(self.server.formats)} messages, not {fmt}")
        if first.type is not MessageType.CONNECT:
            raise ProtocolError(f"expected CONNECT, got {first.type.name}")
        try:
            offer = Offer.from_body(first.json_body())
            params = negotiate(offer, self.server.limits)
        except CodecError as exc:
            raise ProtocolError(str(exc)) from None
        except Refused as exc:
            raise SessionRefused(str(exc)) from None
        self.params = params
        await self._chan.send(control(MessageType.ACCEPT, params.to_body()))
        self._log(logging.INFO, "connect: client_id=%s format=%s mode=%s max_packet_size=%d "
                  "window=%d keepalive=%gs", params.client_id or "-", fmt, params.operation_mode,
                  params.max_packet_size, params.window_size, params.keepalive_interval)
        for note in params.notes:
            self._log(logging.INFO, "%s", note)
        ack = await self._chan.recv()
        if ack.type is not MessageType.ACK:
            raise ProtocolError(f"expected ACK of ACCEPT, got {ack.type.name}")
        try:
            sid = ack.json_body().get("session_id")
        except CodecError as exc:
            raise ProtocolError(str(exc)) from None
        if sid != params.session_id:
            raise ProtocolError(f"handshake ACK names session {sid!r}, not {params.session_id}")

    async def _read_loop(self) -> None:
        assert self.params is not None
        window = self.params.window_size
        try:
            while True:
                msg = await self._chan.recv()
                if msg.type is MessageType.DATA:
                    self._received += 1
                    in_flight = self._received - self._acked
                    self.stats.max_in_flight = max(self.stats.max_in_flight, in_flight)
                    if in_flight > window:
                        raise ProtocolError(
                            f"client exceeded the window: {in_flight} messages unacknowledged, window {window}"
                        )
                    if len(msg.payload) > self.params.max_packet_size:
                        raise ProtocolError(
                            f"DATA of {len(msg.payload)} bytes exceeds max_packet_size {self.params.max_packet_size}"
                        )
                    self._queue.put_nowait(msg)
                elif msg.type is MessageType.KEEPALIVE:
                    self.stats.keepalives_received += 1
                elif msg.type is MessageType.DISCONNECT:
                    self._queue.put_nowait(msg)
                elif msg.type is MessageType.ERROR:
                    raise PeerError(f"client error: {_reason(msg)}")
                else:
                    raise ProtocolError(f"unexpected {msg.type.name} from client")
        except SessionError as exc:
            self._fail(exc)

    async def _process_loop(self) -> None:
        assert self.params is not None
        expected = 1
        frag = Reassembler(self.server.max_message_size)
        while True:
            msg = await self._queue.get()
            if msg.seq != expected:
                raise ProtocolError(f"sequence gap: expected {expected}, got {msg.seq}")
            expected = next_seq(expected)
            if msg.type is MessageType.DISCONNECT:
                if frag.pending:
                    raise ProtocolError("DISCONNECT in the middle of a fragmented message")
                await self._chan.send(Message(MessageType.ACK, msg.seq))
                self.clean = True
                self._log(logging.INFO, "disconnect (%s): %d messages, %d bytes",
                          _reason(msg), self.stats.messages, self.stats.bytes)
                return
            self.stats.frames += 1
            if msg.more:
                self._hold_fragment(len(msg.payload))
            try:
                data = frag.add(msg.payload, msg.more)
            except ValueError as exc:
                raise ProtocolError(str(exc)) from None
            if data is not None:
                self._release_fragments()
            if data is not None:
                self.stats.messages += 1
                self.stats.bytes += len(data)
                self._log(logging.DEBUG, "DATA seq=%d %d bytes", msg.seq, len(data))
                result = self.server.handler(self, data)
                if inspect.isawaitable(result):
                    await result
            self._chan.send_nowait(Message(MessageType.ACK, msg.seq))
            self._acked += 1
            self.stats.acks += 1
            await self._chan.writer.drain()


class MessageServer:
    """Accepts message sessions; see `serve()`."""

    def __init__(self, handler: Handler, *, limits: Limits | None = None,
                 formats: tuple[str, ...] = FORMATS, handshake_timeout: float = 10.0,
                 max_message_size: int = MessageLimits.max_message_size,
                 max_buffered_bytes: int = MessageLimits.max_buffered_bytes):
        self.handler = handler
        self.limits = limits or Limits()
        self.formats = tuple(formats)
        self.handshake_timeout = handshake_timeout
        self.max_message_size = max_message_size  # per session (see gannet.apps.limits)
        self.max_buffered_bytes = max_buffered_bytes  # across sessions
        self.buffered = 0  # bytes of unfinished fragmented messages held now
        self.sessions: set[ServerSession] = set()
        self.finished: list[ServerSession] = []
        self._tasks: set[asyncio.Task] = set()
        self._server: Any = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self, host: str, port: int, start_server: Callable[..., Awaitable[Any]] | None = None) -> "MessageServer":
        if start_server is None:
            start_server = _transport.resolve("auto")[2]
        self._server = await start_server(self._on_client, host, port)
        return self

    @property
    def sockets(self) -> Any:
        return self._server.sockets

    @property
    def address(self) -> tuple[str, int]:
        return self._server.sockets[0].getsockname()[:2]

    async def _on_client(self, reader: Any, writer: Any) -> None:
        session = ServerSession(self, reader, writer)
        self.sessions.add(session)
        self._idle.clear()
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await session.run()
        finally:
            if task is not None:
                self._tasks.discard(task)

    def _session_done(self, session: ServerSession) -> None:
        self.sessions.discard(session)
        self.finished.append(session)
        if len(self.finished) > 1000:
            del self.finished[:-1000]
        if not self.sessions:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until no session is active."""
        await self._idle.wait()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def serve_forever(self) -> None:
        await self._server.serve_forever()

    async def __aenter__(self) -> "MessageServer":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
        await self.wait_closed()


async def serve(handler: Handler, host: str = "127.0.0.1", port: int = 0, *,
                start_server: Callable[..., Awaitable[Any]] | None = None,
                **kw: Any) -> MessageServer:
    """Start a message server; `kw` goes to `MessageServer`."""
    return await MessageServer(handler, **kw).start(host, port, start_server)
