"""TCP port forwarding over Gannet.

Two halves, one per end of a lossy path:

- the tunnel *client* listens on a TCP port; for every TCP connection it
  accepts it opens its own Gannet connection to the tunnel server;
- the tunnel *server* listens on a UDP port for Gannet connections; for every
  one it opens a TCP connection to a fixed target.

Between the two sockets of a pair, `relay` copies both directions at once,
with backpressure (a direction only reads while the other side drains), and
carries what happens at the edges across:

- EOF (a half-close) on one side becomes `write_eof` on the other, and the
  opposite direction keeps flowing until it ends too;
- a reset, a timeout or a refused connection on one side aborts the other
  (an RST on TCP, a Gannet RST), so the application sees the failure promptly.

One Gannet connection per TCP connection (not one shared connection with
streams inside) keeps loss recovery, congestion and flow control independent
per stream: a lost datagram stalls only the stream it belonged to, a slow
reader only closes its own window. See docs/tunnel.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gannet

__all__ = [
    "TunnelClient", "TunnelServer", "RelayResult", "relay", "parse_address",
    "start_tunnel_client", "start_tunnel_server", "log",
]

log = logging.getLogger("gannet.tunnel")

CHUNK = 256 * 1024
"""Largest read per copy step."""
TCP_LIMIT = 1024 * 1024
"""StreamReader limit of the TCP side (it buffers up to twice this)."""
TCP_HIGH_WATER = 1024 * 1024
"""Bytes queued in a TCP transport before drain() waits."""
GANNET_LIMIT = 1024 * 1024
"""StreamReader limit of the Gannet side."""
CLOSE_TIMEOUT = 30.0
"""Longest a clean close waits for the peer to acknowledge our FIN."""


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


class _Failure(Exception):
    """An error on one side of a relay, tagged with that side's name."""

    def __init__(self, side: str, exc: BaseException) -> None:
        super().__init__(side, exc)
        self.side = side
        self.exc = exc


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


def is_tcp(writer: object) -> bool:
    return isinstance(writer, asyncio.StreamWriter)


def abort_writer(writer: object) -> None:
    """Reset a stream now: an RST on TCP (SO_LINGER 0), a Gannet RST otherwise."""
    try:
        if is_tcp(writer):
            sock = writer.get_extra_info("socket")  # type: ignore[union-attr]
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # type: ignore[union-attr]
        else:
            writer.abort()  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - already gone is fine
        pass


async def close_writer(writer: object, timeout: float = CLOSE_TIMEOUT) -> None:
    """Close gracefully; abort if the peer does not confirm within `timeout`."""
    try:
        writer.close()  # type: ignore[union-attr]
        await asyncio.wait_for(writer.wait_closed(), timeout)  # type: ignore[union-attr]
    except (OSError, asyncio.TimeoutError):
        abort_writer(writer)


async def _copy(reader: asyncio.StreamReader, writer: object, src: str, dst: str,
                count: Callable[[int], None]) -> None:
    """Copy reader -> writer until EOF, then half-close the writer."""
    while True:
        try:
            data = await reader.read(CHUNK)
        except Exception as exc:  # noqa: BLE001
            raise _Failure(src, exc) from None
        if not data:
            break
        try:
            writer.write(data)  # type: ignore[union-attr]
            await writer.drain()  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001
            raise _Failure(dst, exc) from None
        count(len(data))
    try:
        if writer.can_write_eof():  # type: ignore[union-attr]
            writer.write_eof()  # type: ignore[union-attr]
        await writer.drain()  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001
        raise _Failure(dst, exc) from None


async def relay(a: tuple[asyncio.StreamReader, object], b: tuple[asyncio.StreamReader, object],
                names: tuple[str, str] = ("a", "b"),
                result: RelayResult | None = None) -> RelayResult:
    """Copy both ways between two (reader, writer) pairs until both directions
    end (clean close of both) or one side fails (both are aborted).

    Works with asyncio TCP streams and Gannet streams alike. Never raises on a
    connection error: the outcome is in the returned RelayResult.
    """
    (ra, wa), (rb, wb) = a, b
    na, nb = names
    res = result if result is not None else RelayResult()

    def add_sent(n: int) -> None:
        res.sent += n

    def add_received(n: int) -> None:
        res.received += n

    up = asyncio.ensure_future(_copy(ra, wb, na, nb, add_sent))
    down = asyncio.ensure_future(_copy(rb, wa, nb, na, add_received))
    tasks = {up, down}
    try:
        pending = tasks
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if t.exception() is not None]
            if failed:
                exc = failed[0].exception()
                if isinstance(exc, _Failure):
                    res.error = exc.exc
                    res.reason = f"{exc.side} {_describe(exc.exc)}"
                else:
                    res.error = exc
                    res.reason = f"relay failed: {exc!r}"
                break
    except asyncio.CancelledError:
        res.error = ConnectionAbortedError("relay cancelled")
        res.reason = "cancelled"
        raise
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        if res.error is not None:
            abort_writer(wa)
            abort_writer(wb)
        res.ended = time.monotonic()
    if res.error is None:
        await asyncio.gather(close_writer(wa), close_writer(wb))
        res.ended = time.monotonic()
    return res


# ------------------------------------------------------------------ tunnels
_ids = itertools.count(1)


class _Tunnel:
    """What both halves share: connection bookkeeping and logging."""

    kind = "tunnel"

    def __init__(self, config_overrides: dict[str, object]) -> None:
        self.config_overrides = config_overrides
        self.tasks: set[asyncio.Task] = set()
        self.results: list[RelayResult] = []
        self.active = 0
        self.total = 0

    def _spawn(self, reader: asyncio.StreamReader, writer: object) -> None:
        """The listeners' callback: run `_handle` as a task the tunnel owns
        (and cancels on close), so its cancellation is not reported as an error."""
        task = asyncio.get_running_loop().create_task(self._handle(reader, writer))
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("connection handler failed: %r", task.exception())

    async def _handle(self, reader: asyncio.StreamReader, writer: object) -> None:
        raise NotImplementedError

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
    """Accepts Gannet connections; relays each to a new TCP connection to the target."""

    kind = "server"

    def __init__(self, target: tuple[str, int], config_overrides: dict[str, object],
                 connect_timeout: float) -> None:
        super().__init__(config_overrides)
        self.target = target
        self.connect_timeout = connect_timeout
        self.server: gannet.Server | None = None

    @property
    def address(self) -> tuple:
        assert self.server is not None
        return self.server.addresses[0]

    async def _handle(self, g_reader: asyncio.StreamReader, g_writer: gannet.StreamWriter) -> None:
        cid = next(_ids)
        peer = format_address(g_writer.get_extra_info("peername"))
        target = format_address(self.target)
        self._log_open(cid, f"{peer} -> {target}")
        res = RelayResult()
        try:
            try:
                t_reader, t_writer = await asyncio.wait_for(
                    asyncio.open_connection(self.target[0], self.target[1], limit=TCP_LIMIT),
                    self.connect_timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                if isinstance(exc, asyncio.TimeoutError):
                    exc = TimeoutError(f"no answer within {self.connect_timeout:g}s")
                res.error = exc
                res.reason = f"target {_describe(exc)}"
                abort_writer(g_writer)
                res.ended = time.monotonic()
                return
            t_writer.transport.set_write_buffer_limits(high=TCP_HIGH_WATER)
            await relay((g_reader, g_writer), (t_reader, t_writer), ("tunnel", "target"), res)
        except asyncio.CancelledError:
            abort_writer(g_writer)
            res.reason = "tunnel stopped"
            raise
        finally:
            self._log_close(cid, res, "up", "down")

    async def close(self) -> None:
        """Stop listening and reset every open connection."""
        if self.server is not None:
            self.server.close()
        await self._finish()
        if self.server is not None:
            self.server.abort_clients()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 5)


class TunnelClient(_Tunnel):
    """Accepts TCP connections; relays each over its own Gannet connection."""

    kind = "client"

    def __init__(self, server: tuple[str, int], config_overrides: dict[str, object]) -> None:
        super().__init__(config_overrides)
        self.remote = server
        self.server: asyncio.Server | None = None

    @property
    def address(self) -> tuple:
        assert self.server is not None
        return self.server.sockets[0].getsockname()

    async def _handle(self, t_reader: asyncio.StreamReader, t_writer: asyncio.StreamWriter) -> None:
        cid = next(_ids)
        peer = format_address(t_writer.get_extra_info("peername"))
        remote = format_address(self.remote)
        self._log_open(cid, f"{peer} -> {remote}")
        t_writer.transport.set_write_buffer_limits(high=TCP_HIGH_WATER)
        res = RelayResult()
        try:
            try:
                g_reader, g_writer = await gannet.open_connection(
                    self.remote[0], self.remote[1], limit=GANNET_LIMIT, **self.config_overrides)
            except (OSError, asyncio.TimeoutError) as exc:
                res.error = exc
                res.reason = f"tunnel {_describe(exc)}"
                abort_writer(t_writer)
                res.ended = time.monotonic()
                return
            await relay((t_reader, t_writer), (g_reader, g_writer), ("client", "tunnel"), res)
        except asyncio.CancelledError:
            abort_writer(t_writer)
            res.reason = "tunnel stopped"
            raise
        finally:
            self._log_close(cid, res, "up", "down")

    async def close(self) -> None:
        """Stop listening and reset every open connection."""
        if self.server is not None:
            self.server.close()
        await self._finish()
        if self.server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 5)


async def start_tunnel_server(listen: tuple[str, int], target: tuple[str, int], *,
                              connect_timeout: float = 10.0,
                              **config_overrides: object) -> TunnelServer:
    """Listen for Gannet connections at `listen`; forward each to TCP `target`.

    `config_overrides` are Gannet settings (see gannet.Config) for the
    accepted connections. Returns a running TunnelServer (`.address`, `.close()`).
    """
    tunnel = TunnelServer(target, config_overrides, connect_timeout)
    host = listen[0] or None
    tunnel.server = await gannet.start_server(tunnel._spawn, host, listen[1],
                                              limit=GANNET_LIMIT, **config_overrides)
    return tunnel


async def start_tunnel_client(listen: tuple[str, int], server: tuple[str, int],
                              **config_overrides: object) -> TunnelClient:
    """Listen for TCP connections at `listen`; carry each over Gannet to `server`."""
    tunnel = TunnelClient(server, config_overrides)
    host = listen[0] or None
    tunnel.server = await asyncio.start_server(tunnel._spawn, host, listen[1], limit=TCP_LIMIT)
    return tunnel
