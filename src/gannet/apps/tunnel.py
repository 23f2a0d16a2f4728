"""TCP port forwarding over Gannet.

Two halves, one per end of a lossy path:

- the tunnel *client* listens on a TCP port and carries the TCP
  connections it accepts to the tunnel server, in one of two modes:
  *mux* (the default), every TCP connection a channel of one Gannet
  connection, opened at the first and kept (gannet.apps.tunnel_mux: the
  framing, credit per channel and per connection, the channels); or
  *stream*, a Gannet connection of its own for each;
- the tunnel *server* listens on a UDP port for Gannet connections of
  either mode (told apart by the 8-byte preamble every client writes
  first) and opens a TCP connection to a fixed target for every tunneled
  TCP connection.

In stream mode a `Relay` copies both directions between the two sockets of
a pair at once, in the callbacks that deliver the data (no task, buffer or
drain per chunk), with backpressure (a direction only reads while the
other side takes what it is given); in mux mode a `Channel` does the same
between a TCP connection and its frames. Both carry what happens at the
edges across:

- EOF (a half-close) on one side becomes `write_eof` on the other (an EOF
  frame in between, in mux mode), and the opposite direction keeps flowing
  until it ends too;
- a reset, a timeout or a refused connection on one side aborts the other
  (an RST on TCP, a Gannet RST or a RESET frame), so the application sees
  the failure promptly.

Mux mode sends the requests of many TCP connections in one loop turn as
one segment and costs a new TCP connection no handshake; stream mode keeps
loss recovery, congestion and failure independent per TCP connection (a
lost datagram stalls only its own). See docs/tunnel.md, "Two modes".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import gannet
from gannet.io.aio import connect_endpoint, divert
from gannet.io.endpoint import AioEndpoint, create_endpoint, make_config

__all__ = [
    "TunnelClient", "TunnelServer", "Relay", "RelayResult", "TcpSide", "parse_address",
    "start_tunnel_client", "start_tunnel_server", "log",
]

log = logging.getLogger("gannet.tunnel")

TCP_HIGH_WATER = 1024 * 1024
"""Bytes queued in a TCP transport before the Gannet side stops reading."""
GANNET_LIMIT = 1024 * 1024
"""StreamReader limit of the Gannet side (until the relay diverts it)."""
GANNET_HIGH_WATER = 256 * 1024
"""Bytes a Gannet writer holds beyond its send buffer before the TCP side stops reading."""
CLOSE_TIMEOUT = 30.0
"""Longest a clean close waits for the peer to acknowledge our FIN."""
SETTINGS = {"busy_poll": 0}
"""Gannet settings of both halves unless given: no polling before sleeping
(`Config.busy_poll`; docs/design.md, "Polling before sleeping"). A tunnel
relays: the answer its Gannet endpoint would poll for comes through one of
its TCP sockets first, which the poll does not watch, so a poll holds up the
very callback that answers. A mux connection is the endpoint's one
connection, the case polling is for: its server spent 1,993 polls and more
CPU per request than a relay (strace -c, 20,000 GETs)."""


def parse_address(text: str, *, default_host: str = "") -> tuple[str, int]:
    """'host:port', ':port', '[::1]:port' or 'port' -> (host, port).

    An empty host means `default_host`. Raises ValueError with a readable message.
    """
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"bad address {text!r}: write IPv6 addresses as [addr]:port")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad address {text!r}: expected HOST:PORT") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"bad address {text!r}: port must be 0-65535")
    return (host or default_host), port


def format_address(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)


# --------------------------------------------------------------------- relay
@dataclass
class RelayResult:
    """What one relayed connection did."""

    sent: int = 0
    """Bytes copied from side A to side B."""
    received: int = 0
    """Bytes copied from side B to side A."""
    reason: str = "closed"
    """'closed' after a clean end both ways, else what ended it."""
    error: BaseException | None = None
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def clean(self) -> bool:
        return self.error is None

    @property
    def duration(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        word = "refused"
    elif isinstance(exc, (ConnectionResetError, ConnectionAbortedError)):
        word = "reset"
    elif isinstance(exc, BrokenPipeError):
        word = "closed while writing"
    elif isinstance(exc, TimeoutError):
        word = "timed out"
    else:
        word = type(exc).__name__
    detail = str(exc)
    return f"{word} ({detail})" if detail and detail != word else word


def abort_tcp(transport: asyncio.Transport | None) -> None:
    """Reset a TCP connection now: an RST (SO_LINGER 0), not a FIN."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        transport.abort()


def abort_gannet(writer: gannet.StreamWriter) -> None:
    """Reset a Gannet connection now (RST), dropping buffered data."""
    with contextlib.suppress(Exception):
        writer.abort()


async def close_gannet(writer: gannet.StreamWriter, timeout: float = CLOSE_TIMEOUT) -> None:
    """Close gracefully; abort if the peer does not confirm within `timeout`."""
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), timeout)
    except (OSError, asyncio.TimeoutError):
        abort_gannet(writer)


class TcpSide(asyncio.Protocol):
    """The TCP socket of a relayed pair, as an asyncio protocol: the relay
    forwards in its callbacks (no StreamReader, no task per chunk). Reading
    stays paused until a `Relay` takes the connection over."""

    def __init__(self, on_made: Callable[[TcpSide], None] | None = None) -> None:
        self.on_made = on_made  # called once connected (a listener's handler)
        self.transport: asyncio.Transport | None = None
        self.relay: Relay | None = None
        self.lost: asyncio.Future | None = None  # made by wait_lost
        self.gone = False
        self.early_error: BaseException | None = None  # lost before a relay took over
        self.early: list[bytes] = []  # read before a relay took over (uvloop reads
        self.early_eof = False  # once after connection_made even when paused there)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport: asyncio's is an asyncio.Transport; uvloop's has
        # its methods without the base class, so no isinstance can say so.
        tcp: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = tcp
        if self.relay is None:
            tcp.pause_reading()  # until the other side is there
        tcp.set_write_buffer_limits(high=TCP_HIGH_WATER)
        if self.on_made is not None:
            self.on_made(self)

    def data_received(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.from_tcp(data)
        else:
            self.early.append(data)
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        if self.relay is not None:
            self.relay.tcp_eof()
        else:
            self.early_eof = True
        return True  # half-closed: the other direction goes on

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        if self.relay is not None:
            self.relay.tcp_lost(exc)
        else:
            self.early_error = exc or ConnectionResetError("closed before the tunnel opened")

    def pause_writing(self) -> None:
        if self.relay is not None:
            self.relay.tcp_full()

    def resume_writing(self) -> None:
        if self.relay is not None:
            self.relay.tcp_drained()

    def hand_over(self, relay: Any) -> None:
        """From now on `relay` (a `Relay`, or a mux `Channel`) takes this
        connection's callbacks; what arrived before is replayed to it. The
        loop hands each chunk TCP delivers to `relay.from_tcp` itself,
        without TcpSide.data_received between: the instance attribute
        shadows the method, and set_protocol makes the loop read it again
        (uvloop keeps the bound data_received it took when the protocol
        was set; asyncio's transports look it up per read). Reading stays
        as it was: the relay resumes it."""
        self.relay = relay
        transport = self.transport
        assert transport is not None  # (made connected: by a listener or create_connection)
        self.data_received = relay.from_tcp  # type: ignore[method-assign]
        transport.set_protocol(self)
        early, self.early = self.early, []
        for data in early:
            relay.from_tcp(data)
        if self.early_eof:
            relay.tcp_eof()
        if self.early_error is not None:
            relay.tcp_lost(self.early_error)

    async def wait_lost(self, timeout: float) -> bool:
        if self.gone:
            return True
        if self.lost is None:
            self.lost = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), timeout)
        except asyncio.TimeoutError:
            return False
        return True


class Relay:
    """Copies both ways between a TCP connection (`TcpSide`) and a Gannet
    stream, in the callbacks that deliver the data: a chunk read from one
    side is written to the other at once, with no buffer, task switch or
    drain between (the Gannet input is diverted from its StreamReader with
    `gannet.io.aio.divert`). Backpressure: a TCP transport above its
    high-water mark pauses Gannet's reading (its window closes); Gannet's
    writer above its high-water mark pauses the TCP reading.

    What happens at the edges is carried across: EOF (a half-close) on one
    side becomes `write_eof` on the other while the opposite direction keeps
    flowing; a reset, a timeout or a refused connection on one side aborts
    the other (an RST on TCP, a Gannet RST).
    """

    def __init__(self, tcp: TcpSide, g_writer: gannet.StreamWriter, names: tuple[str, str],
                 result: RelayResult, *, tcp_is_a: bool) -> None:
        self.tcp = tcp
        self.g_writer = g_writer
        self.tcp_name, self.g_name = names
        self.res = result
        self.tcp_is_a = tcp_is_a  # the TCP side is side A: its bytes count as `sent`
        self.tcp_ended = False  # EOF from TCP, passed on
        self.g_ended = False  # EOF from Gannet, passed on
        self.outcome: asyncio.Future = asyncio.get_running_loop().create_future()
        self.ended = False  # the outcome is set (a plain flag: read for every chunk)
        self.draining = False
        transport = tcp.transport
        assert transport is not None  # (TcpSide is made connected: by a listener or create_connection)
        # Bound once: the transport's write is a method of a C type, made
        # anew on every attribute read.
        self._tcp_write = transport.write
        self.flow = divert(g_writer, self)
        tcp.hand_over(self)
        if not self.ended and not self.draining and not self.tcp_ended:
            transport.resume_reading()

    # TCP -> Gannet (the TCP transport's data_received, see __init__)
    def from_tcp(self, data: bytes) -> None:
        if self.ended:
            return
        # The flush first, then the write, which joins it: the chunks that
        # several TCP connections deliver in one loop turn (a convoy of
        # requests from many clients) leave in one pass and one GSO send at
        # the end of the turn. Without it the first would leave at once in
        # a pass and a send call of its own (StreamWriter.write's rule for a
        # lone write), the rest in a second pass. Both in one call of the
        # compiled stream glue (io/stream.py), not the writer's methods.
        try:
            waiting = self.flow.forward(data)
        except Exception as exc:  # noqa: BLE001 - the Gannet side failed
            self.fail(self.g_name, exc)
            return
        if self.tcp_is_a:
            self.res.sent += len(data)
        else:
            self.res.received += len(data)
        if waiting > GANNET_HIGH_WATER and not self.draining:
            self.draining = True
            assert self.tcp.transport is not None
            self.tcp.transport.pause_reading()
            asyncio.ensure_future(self.g_writer.drain()).add_done_callback(self._drained)

    def _drained(self, fut: asyncio.Future) -> None:
        self.draining = False
        if fut.cancelled() or self.ended:
            return
        exc = fut.exception()
        if exc is not None:
            self.fail(self.g_name, exc)
        elif self.tcp.transport is not None and not self.tcp_ended:
            self.tcp.transport.resume_reading()

    def tcp_eof(self) -> None:
        if self.ended or self.tcp_ended:
            return
        self.tcp_ended = True
        try:
            self.g_writer.write_eof()
        except Exception as exc:  # noqa: BLE001
            self.fail(self.g_name, exc)
            return
        self._maybe_done()

    def tcp_lost(self, exc: BaseException | None) -> None:
        if not self.ended:
            self.fail(self.tcp_name, exc or ConnectionResetError("connection closed"))

    def tcp_full(self) -> None:
        self.flow.pause_reading()  # Gannet's window closes behind us

    def tcp_drained(self) -> None:
        self.flow.resume_reading()

    # Gannet -> TCP (the Sink of gannet.io.aio.divert)
    def feed_data(self, data: bytes) -> None:
        if self.ended:
            return
        self._tcp_write(data)
        if self.tcp_is_a:
            self.res.received += len(data)
        else:
            self.res.sent += len(data)

    def feed_eof(self) -> None:
        if self.ended or self.g_ended:
            return
        self.g_ended = True
        transport = self.tcp.transport
        try:
            if transport is not None and transport.can_write_eof():
                transport.write_eof()
        except Exception as exc:  # noqa: BLE001
            self.fail(self.tcp_name, exc)
            return
        self._maybe_done()

    def set_exception(self, exc: BaseException) -> None:
        if not self.ended:
            self.fail(self.g_name, exc)

    # ending
    def _end(self) -> None:
        self.ended = True
        self.outcome.set_result(None)

    def _maybe_done(self) -> None:
        if self.tcp_ended and self.g_ended and not self.ended:
            self._end()

    def fail(self, side: str, exc: BaseException) -> None:
        if self.ended:
            return
        self.res.error = exc
        self.res.reason = f"{side} {_describe(exc)}"
        abort_tcp(self.tcp.transport)
        abort_gannet(self.g_writer)
        self._end()

    async def run(self) -> RelayResult:
        res = self.res
        try:
            await asyncio.shield(self.outcome)
        except asyncio.CancelledError:
            res.error = ConnectionAbortedError("relay cancelled")
            res.reason = "cancelled"
            abort_tcp(self.tcp.transport)
            abort_gannet(self.g_writer)
            res.ended = time.monotonic()
            raise
        if res.error is None:
            transport = self.tcp.transport
            if transport is not None:
                transport.close()  # what is buffered still leaves, then FIN
            closing = [close_gannet(self.g_writer)]
            done = await asyncio.gather(self.tcp.wait_lost(CLOSE_TIMEOUT), *closing)
            if not done[0]:
                abort_tcp(transport)
        res.ended = time.monotonic()
        return res


# ------------------------------------------------------------------ tunnels
_ids = itertools.count(1)

MODES = ("mux", "stream")
"""The tunnel client's modes: all TCP connections as channels of one Gannet
connection (gannet.apps.tunnel_mux), or a Gannet connection each."""
DEFAULT_MODE = "mux"
PREAMBLE_STREAM = b"GTUN\x01S\r\n"
"""A stream-mode connection's first bytes (then the TCP stream itself)."""
PREAMBLE_MUX = b"GTUN\x02M\r\n"
"""A mux connection's first bytes (then frames): the framing with
connection credit (gannet.apps.tunnel_mux)."""
PREAMBLE_MUX_1 = b"GTUN\x01M\r\n"
"""The first mux framing's (per-channel credit only): refused with a line
that says so, not mistaken for the current one."""
PREAMBLE_SIZE = 8
MAX_MUX = 64
"""Mux connections a server serves at once (one per tunnel client); one
more is refused with a line that says so. With what one mux connection
can make the server hold (gannet.apps.tunnel_mux), this bounds the
server's."""
PREAMBLE_TIMEOUT = 10.0
"""Longest the server waits for a new connection's preamble (it normally
rides on the handshake's last datagram)."""
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 15.0
"""A mux client that failed to reach the server waits this long (doubling
from BACKOFF_FIRST) before its next attempt."""


class _Tunnel:
    """What both halves share: connection bookkeeping and logging."""

    kind = "tunnel"

    def __init__(self, config_overrides: dict[str, object]) -> None:
        self.config_overrides = {**SETTINGS, **config_overrides}
        self.tasks: set[asyncio.Task] = set()
        self.results: list[RelayResult] = []
        self.active = 0
        self.total = 0
        self.malformed = 0  # mux connections reset for framing the protocol does not allow
        self.refused = 0  # connections that did not start with a preamble

    def _spawn(self, *args: object) -> None:
        """The listeners' callback: run `_handle` as a task the tunnel owns
        (and cancels on close), so its cancellation is not reported as an error."""
        self._task(self._handle(*args))

    def _task(self, coro: Coroutine[object, object, None]) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("connection handler failed: %r", task.exception())

    # Each half's handler of one accepted connection (what its listener
    # hands over differs: a Gannet stream's reader and writer, a TCP side).
    _handle: Callable[..., Coroutine[object, object, None]]

    def _log_open(self, cid: int, text: str) -> None:
        self.active += 1
        self.total += 1
        log.info("#%d open %s", cid, text)

    def _log_close(self, cid: int, res: RelayResult, up: str, down: str) -> None:
        self.active -= 1
        self.results.append(res)
        if len(self.results) > 1000:
            del self.results[:500]
        level = logging.INFO if res.clean else logging.WARNING
        log.log(level, "#%d close: %s %d B, %s %d B, %.2fs, %s",
                cid, up, res.sent, down, res.received, res.duration, res.reason)

    async def _finish(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


class TunnelServer(_Tunnel):
    """Accepts Gannet connections of both kinds of client: a stream-mode
    connection is relayed to a new TCP connection to the target, a mux
    connection's channels each to one (told apart by the preamble)."""

    kind = "server"

    def __init__(self, target: tuple[str, int], config_overrides: dict[str, object],
                 connect_timeout: float, modes: tuple[str, ...] = MODES,
                 max_mux: int = MAX_MUX) -> None:
        unknown = [m for m in modes if m not in MODES]
        if unknown or not modes:
            raise ValueError(f"tunnel modes must be some of {', '.join(MODES)}, not {modes!r}")
        if max_mux < 1:
            raise ValueError(f"max_mux must be at least 1, not {max_mux!r}")
        super().__init__(config_overrides)
        self.max_mux = max_mux
        self.modes = tuple(modes)  # the client modes accepted
        self.target = target
        self.connect_timeout = connect_timeout
        self.server: gannet.Server | None = None
        self.muxes: set[Any] = set()  # the MuxSessions open

    @property
    def address(self) -> tuple:
        assert self.server is not None
        return self.server.addresses[0]

    async def _handle(self, g_reader: gannet.StreamReader, g_writer: gannet.StreamWriter) -> None:
        peer = format_address(g_writer.get_extra_info("peername"))
        try:
            preamble = await asyncio.wait_for(g_reader.readexactly(PREAMBLE_SIZE), PREAMBLE_TIMEOUT)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            self.refused += 1
            # (asyncio.TimeoutError is TimeoutError, an OSError: "timed out")
            log.warning("refused %s: no tunnel preamble (%s)", peer,
                        _describe(exc) if isinstance(exc, OSError) else "closed")
            abort_gannet(g_writer)
            return
        except asyncio.CancelledError:
            abort_gannet(g_writer)
            raise
        mode = {PREAMBLE_MUX: "mux", PREAMBLE_STREAM: "stream"}.get(preamble)
        if preamble == PREAMBLE_MUX_1:
            self.refused += 1
            log.warning("refused %s: a mux client of an earlier version (its framing has no "
                        "connection credit); upgrade the client or use --mode stream", peer)
            abort_gannet(g_writer)
        elif mode is None:
            self.refused += 1
            log.warning("refused %s: not a gannet tunnel client of this version (first bytes %r)",
                        peer, preamble)
            abort_gannet(g_writer)
        elif mode not in self.modes:
            self.refused += 1
            log.warning("refused %s: a %s-mode client; this server takes %s", peer, mode,
                        " and ".join(self.modes))
            abort_gannet(g_writer)
        elif mode == "mux" and len(self.muxes) >= self.max_mux:
            self.refused += 1
            log.warning("refused %s: %d mux connections open, the most this server serves "
                        "(--max-mux)", peer, len(self.muxes))
            abort_gannet(g_writer)
        elif mode == "mux":
            await self._serve_mux(g_writer, peer)
        else:
            await self._relay(g_writer, peer)

    async def _relay(self, g_writer: gannet.StreamWriter, peer: str) -> None:
        cid = next(_ids)
        target = format_address(self.target)
        self._log_open(cid, f"{peer} -> {target}")
        res = RelayResult()
        try:
            try:
                _, side = await asyncio.wait_for(
                    asyncio.get_running_loop().create_connection(
                        TcpSide, self.target[0], self.target[1]),
                    self.connect_timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                res.error = error = self._connect_error(exc)
                res.reason = f"target {_describe(error)}"
                abort_gannet(g_writer)
                res.ended = time.monotonic()
                return
            await Relay(side, g_writer, ("target", "tunnel"), res, tcp_is_a=False).run()
        except asyncio.CancelledError:
            abort_gannet(g_writer)
            res.reason = "tunnel stopped"
            raise
        finally:
            self._log_close(cid, res, "up", "down")

    def _connect_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, asyncio.TimeoutError):
            return TimeoutError(f"no answer within {self.connect_timeout:g}s")
        return exc

    async def _serve_mux(self, g_writer: gannet.StreamWriter, peer: str) -> None:
        from gannet.apps.tunnel_mux import MuxSession

        mid = next(_ids)
        log.info("#%d mux open %s", mid, peer)
        mux = MuxSession(self, g_writer, mid, client=False, on_open=self._open_channel)
        self.muxes.add(mux)
        try:
            await asyncio.shield(mux.closed)
        except asyncio.CancelledError:
            mux.close()
            raise
        finally:
            self.muxes.discard(mux)
            log.info("#%d mux close: %s", mid, mux.summary())

    def _open_channel(self, mux: Any, channel_id: int) -> None:
        """An OPEN from a mux client: a channel whose TCP side is the target."""
        from gannet.apps.tunnel_mux import Channel

        cid = next(_ids)
        self._log_open(cid, f"{mux.peer} -> {format_address(self.target)} "
                            f"(mux #{mux.log_id} channel {channel_id})")
        ch = Channel(mux, channel_id, cid, RelayResult(), up_from_tcp=False, tcp_name="target")
        mux.channels[channel_id] = ch
        ch.connecting = self._task(self._connect_channel(ch))

    async def _connect_channel(self, ch: Any) -> None:
        try:
            _, side = await asyncio.wait_for(
                asyncio.get_running_loop().create_connection(TcpSide, self.target[0], self.target[1]),
                self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            error = self._connect_error(exc)
            ch.fail(f"target {_describe(error)}", error, tell_peer=True)
            return
        except asyncio.CancelledError:
            ch.fail("tunnel stopped", ConnectionAbortedError("tunnel stopped"), tell_peer=True)
            raise
        ch.connecting = None
        if ch.ended:
            abort_tcp(side.transport)
        else:
            ch.attach(side)

    async def close(self) -> None:
        """Stop listening and reset every open connection."""
        if self.server is not None:
            self.server.close()
        for mux in list(self.muxes):
            mux.close()
        await self._finish()
        if self.server is not None:
            self.server.abort_clients()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 5)


class TunnelClient(_Tunnel):
    """Accepts TCP connections; carries them over Gannet to the server.

    In mux mode (the default) every TCP connection is a channel of one Gannet
    connection, opened at the first and kept (gannet.apps.tunnel_mux); when
    it fails its channels are reset and the next TCP connection opens a new
    one, after a back-off if reaching the server failed.

    In stream mode each TCP connection has its own Gannet connection. They
    share one UDP socket per address family (Gannet tells them apart by
    connection ID), as the server's do: replies that arrive together are
    read in one readiness callback, and requests written in one loop
    iteration leave in one flush (one GSO send when they are the same
    size). Each connection keeps its own loss recovery, congestion and flow
    control."""

    kind = "client"

    def __init__(self, server: tuple[str, int], config_overrides: dict[str, object],
                 mode: str = DEFAULT_MODE) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown tunnel mode {mode!r} (one of {', '.join(MODES)})")
        super().__init__(config_overrides)
        self.remote = server
        self.mode = mode
        self.server: asyncio.Server | None = None
        self.config = make_config(None, self.config_overrides)
        self.endpoints: dict[int, AioEndpoint] = {}  # address family -> the shared endpoint
        self._making = asyncio.Lock()
        self.mux: Any = None  # the MuxSession in use (mux mode)
        self.mux_connections = 0  # mux connections opened
        self._waiting: list[tuple[TcpSide, int, RelayResult]] = []  # TCP sides before the mux is up
        self._opening: asyncio.Task | None = None
        self._backoff = 0.0  # wait before the next attempt to reach the server
        self._closing = False

    async def _connect(self) -> gannet.StreamWriter:
        """A new Gannet connection to the tunnel server, through the shared endpoint."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.remote[0], self.remote[1], type=socket.SOCK_DGRAM)
        targets = [(f, a) for f, _, _, _, a in infos if f in (socket.AF_INET, socket.AF_INET6)]
        if not targets:
            raise OSError(f"no IPv4/IPv6 address for {self.remote[0]!r}")
        error: BaseException | None = None
        for fam, addr in dict.fromkeys(targets):
            aep = self.endpoints.get(fam)
            if aep is None or aep.closed:
                async with self._making:  # (connections opened at once make one)
                    aep = self.endpoints.get(fam)
                    if aep is None or aep.closed:
                        wildcard = "::" if fam == socket.AF_INET6 else "0.0.0.0"
                        aep = self.endpoints[fam] = await create_endpoint(
                            wildcard, 0, config=self.config, family=fam, loop=loop)
            try:
                _, writer = await connect_endpoint(aep, addr, self.config, GANNET_LIMIT, self.remote[0])
                # (the preamble joins the handshake's last datagram)
                writer.write(PREAMBLE_MUX if self.mode == "mux" else PREAMBLE_STREAM)
                return writer
            except OSError as exc:
                error = exc
        assert error is not None
        raise error

    @property
    def address(self) -> tuple:
        assert self.server is not None
        return self.server.sockets[0].getsockname()

    def _accepted(self, side: TcpSide) -> None:
        """The TCP listener's callback."""
        if self.mode == "stream":
            self._spawn(side)
            return
        cid = next(_ids)
        assert side.transport is not None
        self._log_open(cid, f"{format_address(side.transport.get_extra_info('peername'))} -> "
                            f"{format_address(self.remote)}")
        res = RelayResult()
        mux = self.mux
        if mux is not None and mux.open_channel(side, cid, res) is not None:
            return
        self._waiting.append((side, cid, res))
        if self._opening is None:
            self._opening = self._task(self._open_mux())

    async def _open_mux(self) -> None:
        """Open a mux connection for the TCP sides waiting; on failure reset
        them and back off before the next attempt."""
        from gannet.apps.tunnel_mux import MuxSession

        try:
            if self._backoff:
                await asyncio.sleep(self._backoff)
            try:
                g_writer = await self._connect()
            except (OSError, asyncio.TimeoutError) as exc:
                self._backoff = min(BACKOFF_MAX, max(BACKOFF_FIRST, 2 * self._backoff))
                waiting, self._waiting = self._waiting, []
                for side, cid, res in waiting:
                    self._fail_waiting(side, cid, res, f"tunnel {_describe(exc)}", exc)
                return
            mid = next(_ids)
            self.mux_connections += 1
            self.mux = mux = MuxSession(self, g_writer, mid, client=True)
            log.info("#%d mux open %s", mid, mux.peer)
            mux.closed.add_done_callback(lambda _: self._mux_ended(mux))
        except asyncio.CancelledError:
            waiting, self._waiting = self._waiting, []
            for side, cid, res in waiting:
                self._fail_waiting(side, cid, res, "tunnel stopped", ConnectionAbortedError("tunnel stopped"))
            raise
        finally:
            self._opening = None
        waiting, self._waiting = self._waiting, []
        for side, cid, res in waiting:
            if mux.open_channel(side, cid, res) is None:
                self._fail_waiting(side, cid, res, mux.reason, ConnectionResetError(mux.reason))

    def _fail_waiting(self, side: TcpSide, cid: int, res: RelayResult, reason: str,
                      exc: BaseException) -> None:
        res.error = exc
        res.reason = reason
        abort_tcp(side.transport)
        res.ended = time.monotonic()
        self._log_close(cid, res, "up", "down")

    def _mux_ended(self, mux: Any) -> None:
        if self.mux is mux:
            self.mux = None
        lived = time.monotonic() - mux.started
        if lived > BACKOFF_MAX:
            self._backoff = 0.0  # it worked for a while: the next one goes at once
        elif mux.reason != "closed":
            self._backoff = min(BACKOFF_MAX, max(BACKOFF_FIRST, 2 * self._backoff))
        level = logging.INFO if mux.reason in ("closed", "tunnel stopped") else logging.WARNING
        log.log(level, "#%d mux close: %s", mux.log_id, mux.summary())

    async def _handle(self, side: TcpSide) -> None:
        cid = next(_ids)
        assert side.transport is not None
        peer = format_address(side.transport.get_extra_info("peername"))
        remote = format_address(self.remote)
        self._log_open(cid, f"{peer} -> {remote}")
        res = RelayResult()
        try:
            try:
                g_writer = await self._connect()
            except (OSError, asyncio.TimeoutError) as exc:
                res.error = exc
                res.reason = f"tunnel {_describe(exc)}"
                abort_tcp(side.transport)
                res.ended = time.monotonic()
                return
            await Relay(side, g_writer, ("client", "tunnel"), res, tcp_is_a=True).run()
        except asyncio.CancelledError:
            abort_tcp(side.transport)
            res.reason = "tunnel stopped"
            raise
        finally:
            self._log_close(cid, res, "up", "down")

    async def close(self) -> None:
        """Stop listening and reset every open connection."""
        self._closing = True
        if self.server is not None:
            self.server.close()
        if self.mux is not None:
            self.mux.close()
        await self._finish()
        for aep in self.endpoints.values():
            aep.close_when_idle = True  # once the reset connections are gone
            aep.request_flush()
        if self.server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 5)


async def start_tunnel_server(listen: tuple[str, int], target: tuple[str, int], *,
                              connect_timeout: float = 10.0, modes: tuple[str, ...] = MODES,
                              max_mux: int = MAX_MUX,
                              **config_overrides: object) -> TunnelServer:
    """Listen for Gannet connections at `listen`; forward each to TCP `target`.

    Clients of the `modes` named are accepted (both by default), others
    refused, and at most `max_mux` mux connections at once. `config_overrides`
    are Gannet settings (see gannet.Config) for the accepted connections.
    Returns a running TunnelServer (`.address`, `.close()`).
    """
    tunnel = TunnelServer(target, config_overrides, connect_timeout, tuple(modes), max_mux)
    host = listen[0] or None
    tunnel.server = await gannet.start_server(tunnel._spawn, host, listen[1], limit=GANNET_LIMIT,
                                              config=make_config(None, tunnel.config_overrides))
    # A client refused by the security layer (another PSK, a client that
    # refused our key) never reaches _spawn: the operator still hears of it.
    tunnel.server.endpoint.on_refused = lambda ev: log.warning(
        "refused %s: %s", format_address(ev.addr), ev.error)
    return tunnel


async def start_tunnel_client(listen: tuple[str, int], server: tuple[str, int], *,
                              mode: str = DEFAULT_MODE,
                              **config_overrides: object) -> TunnelClient:
    """Listen for TCP connections at `listen`; carry them over Gannet to `server`:
    as channels of one Gannet connection (`mode="mux"`) or each over its
    own (`mode="stream"`)."""
    tunnel = TunnelClient(server, config_overrides, mode)
    host = listen[0] or None
    tunnel.server = await asyncio.get_running_loop().create_server(
        lambda: TcpSide(on_made=tunnel._accepted), host, listen[1])
    return tunnel
