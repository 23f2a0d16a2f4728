"""The tunnel's mux mode: many TCP connections as channels of one Gannet connection.

A tunnel client in mux mode opens one Gannet connection to the tunnel
server (lazily, at the first TCP connection it accepts) and keeps it; every
TCP connection it accepts becomes a *channel* of that connection, as
`ssh -L` carries its forwarded connections. A new TCP client costs no
handshake, and the requests that several channels deliver in one loop turn
leave as one Gannet segment (one seal, one open, one trip through the
core) instead of one segment per TCP connection.

The framing on the Gannet byte stream (after the mux preamble, see
`gannet.apps.tunnel.PREAMBLE_MUX`): each frame is a 9-byte header, kind
(1 byte), channel id (4 bytes), length of what follows (4 bytes), all
big-endian, then `length` bytes:

- OPEN (client to server only, empty): a new channel; ids increase, are
  never reused on one connection, and 0 is not an id;
- DATA: bytes of the channel's TCP stream;
- EOF (empty): the sender's TCP side ended its stream (a half-close); the
  other direction goes on;
- RESET (a UTF-8 reason, at most 1,000 bytes): the channel failed at the
  sender (its TCP connection was reset, the target refused...); the receiver
  resets its TCP connection;
- WINDOW (4 bytes, an increment >= 1): credit for more DATA on the channel.

Flow control is per channel, by credit, as SSH channels and QUIC streams
have it: each direction of a channel starts with `CHANNEL_WINDOW` bytes of
credit; a sender forwards at most what it was granted, pausing its TCP
socket's reading when the credit runs out (what one read brought beyond the
credit is held, at most one read), and a receiver grants what its TCP
transport took once a quarter of the window accumulated, only while that
transport is below its high-water mark (after `pause_writing`, at
`resume_writing`). The mux connection's own reading is never paused: a
slow application stalls only its own channel. When the Gannet writer holds
more than `GANNET_HIGH_WATER` beyond its send buffer (the path is slower
than the TCP sides), every channel's reading pauses until it drains.

A frame the protocol does not allow (an unknown kind, a length beyond its
kind's limit, DATA beyond the granted credit or after the channel's EOF,
a frame for a channel never opened, an OPEN from the server) resets the whole mux connection with a
logged reason and is counted (`malformed` of the tunnel); the channels on
it are reset as when the connection fails. Frames for a channel that has
already ended (they were in flight) are dropped.

Frames are parsed in batches from what each receive delivers:
`struct.unpack_from` over the chunk, one step per frame; a DATA payload
that continues into the next chunk is forwarded as it arrives (only a
partial header or control frame is kept between chunks).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from typing import Any, Final

import gannet
from gannet.apps.display import safe_text
from gannet.apps.tunnel import (
    GANNET_HIGH_WATER,
    RelayResult,
    TcpSide,
    _describe,
    abort_gannet,
    abort_tcp,
    format_address,
    log,
)
from gannet.io.aio import divert

__all__ = [
    "HEADER", "OPEN", "DATA", "EOF", "RESET", "WINDOW", "CHANNEL_WINDOW", "MAX_CHANNELS",
    "MuxSession", "Channel", "MuxError", "frame",
]

# Final names are constants in the compiled build (no module lookup per use).
HEADER: Final = struct.Struct("!BII")
"""A frame's header: kind, channel id, length of the body."""
HEADER_SIZE: Final[int] = HEADER.size
OPEN: Final = 1
DATA: Final = 2
EOF: Final = 3
RESET: Final = 4
WINDOW: Final = 5
KIND_NAMES: Final = {OPEN: "OPEN", DATA: "DATA", EOF: "EOF", RESET: "RESET", WINDOW: "WINDOW"}
_INCREMENT: Final = struct.Struct("!I")
CHANNEL_WINDOW: Final = 4 * 1024 * 1024
"""Each direction's credit when a channel opens (as large as a Gannet
connection's default receive window: one channel's bulk transfer is not
held back by its credit where a connection of its own would not be)."""
GRANT_AT: Final = CHANNEL_WINDOW // 4
"""Bytes taken by the TCP side before the receiver grants them back."""
MAX_CREDIT: Final = 1 << 31
"""More outstanding credit than this is a broken peer."""
MAX_REASON: Final = 1000
"""Longest RESET reason (bytes, UTF-8)."""
MAX_CHANNELS = 4096
"""Open channels per mux connection; an OPEN beyond is reset."""

_pack: Final = HEADER.pack
_unpack_from: Final = HEADER.unpack_from


class MuxError(Exception):
    """Framing the protocol does not allow, from the peer."""


def frame(kind: int, channel: int, body: bytes = b"") -> bytes:
    """One frame (what `MuxSession` writes; tests build hostile ones with it)."""
    return _pack(kind, channel, len(body)) + body


class Channel:
    """One TCP connection carried by a `MuxSession`: the TcpSide's callbacks
    (from_tcp, tcp_eof, tcp_lost, tcp_full, tcp_drained) and the mux's
    (to_tcp, peer_eof, peer_reset, granted)."""

    __slots__ = ("mux", "id", "log_id", "tcp", "transport", "_tcp_write", "res", "up_from_tcp",
                 "tcp_name", "credit", "window", "consumed", "held", "reading", "full",
                 "tcp_ended", "eof_sent", "peer_ended", "early", "ended", "connecting")

    def __init__(self, mux: MuxSession, cid: int, log_id: int, res: RelayResult, *,
                 up_from_tcp: bool, tcp_name: str) -> None:
        self.mux = mux
        self.id = cid
        self.log_id = log_id  # the tunnel's connection number (#N in the log)
        self.tcp: TcpSide | None = None
        self.transport: asyncio.Transport | None = None
        self._tcp_write: Callable[[Any], None] | None = None
        self.res = res
        self.up_from_tcp = up_from_tcp  # the client's TCP side: its bytes go up
        self.tcp_name = tcp_name
        self.credit = CHANNEL_WINDOW  # bytes we may still send
        self.window = CHANNEL_WINDOW  # bytes the peer may still send
        self.consumed = 0  # taken by the TCP side, not yet granted back
        self.held: bytes | None = None  # read from TCP beyond the credit
        self.reading = False  # the TCP side's reading is on
        self.full = False  # the TCP transport is above its high-water mark
        self.tcp_ended = False  # EOF from TCP
        self.eof_sent = False  # ... and passed on (after what was held)
        self.peer_ended = False  # EOF from the peer
        self.early: list[bytes] | None = None  # the peer's data before the TCP side is there
        self.ended = False
        self.connecting: asyncio.Task | None = None  # the server's connect to the target

    # ------------------------------------------------------------ attach
    def attach(self, side: TcpSide) -> None:
        """Take the TCP connection over (the client's at open, the server's
        once the target answered)."""
        transport = side.transport
        assert transport is not None  # (TcpSide is made connected)
        self.tcp = side
        self.transport = transport
        self._tcp_write = transport.write
        early, self.early = self.early, None
        for data in early or ():
            self.to_tcp(data)
        if self.peer_ended:
            self.peer_ended = False
            self.peer_eof()
        side.hand_over(self)
        if not self.ended:
            self.update_reading()

    def update_reading(self) -> None:
        transport = self.transport
        if transport is None:
            return
        want = (self.credit > 0 and self.held is None and not self.tcp_ended
                and not self.ended and not self.mux.draining)
        if want != self.reading:
            self.reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    # ------------------------------------------- TCP -> mux (TcpSide's)
    def from_tcp(self, data: bytes) -> None:
        if self.ended:
            return
        n = len(data)
        credit = self.credit
        if n > credit:
            held = self.held  # (credit is 0 while something is held)
            self.held = data[credit:] if held is None else held + data
            data = data[:credit]
            n = credit
        self.credit = credit - n
        if n:
            if self.up_from_tcp:
                self.res.sent += n
            else:
                self.res.received += n
            self.mux.send(_pack(DATA, self.id, n) + data)
        if self.credit <= 0:
            self.update_reading()

    def tcp_eof(self) -> None:
        if self.ended or self.tcp_ended:
            return
        self.tcp_ended = True
        self.update_reading()
        if self.held is None:
            self._send_eof()

    def _send_eof(self) -> None:
        self.eof_sent = True
        self.mux.send(_pack(EOF, self.id, 0))
        self._maybe_done()

    def tcp_lost(self, exc: BaseException | None) -> None:
        if not self.ended:
            self.fail(f"{self.tcp_name} {_describe(exc or ConnectionResetError('connection closed'))}",
                      exc or ConnectionResetError("connection closed"), tell_peer=True)

    def tcp_full(self) -> None:
        self.full = True

    def tcp_drained(self) -> None:
        self.full = False
        if self.consumed and not self.ended:
            self._grant()

    # ------------------------------------------- mux -> TCP (MuxSession's)
    def to_tcp(self, data: Any) -> None:
        if self.ended:
            return
        n = len(data)
        write = self._tcp_write
        if write is None:  # (the server's target connection is not there yet)
            if self.early is None:
                self.early = []
            self.early.append(bytes(data))
            return
        write(data)
        if self.up_from_tcp:
            self.res.received += n
        else:
            self.res.sent += n
        consumed = self.consumed = self.consumed + n
        if consumed >= GRANT_AT and not self.full:
            self._grant()

    def _grant(self) -> None:
        consumed, self.consumed = self.consumed, 0
        self.window += consumed
        self.mux.send(_pack(WINDOW, self.id, 4) + _INCREMENT.pack(consumed))

    def granted(self, increment: int) -> None:
        credit = self.credit + increment
        if credit > MAX_CREDIT:
            raise MuxError(f"channel {self.id}: credit beyond {MAX_CREDIT} bytes")
        self.credit = credit
        held = self.held
        if held is not None and not self.ended:
            self.held = None
            self.from_tcp(held)
            if self.held is None and self.tcp_ended and not self.eof_sent:
                self._send_eof()
        self.update_reading()

    def peer_eof(self) -> None:
        if self.ended or self.peer_ended:
            return
        self.peer_ended = True
        transport = self.transport
        if transport is None:
            return  # passed on once connected (attach)
        try:
            if transport.can_write_eof():
                transport.write_eof()
        except Exception as exc:  # noqa: BLE001 - the TCP side failed
            self.fail(f"{self.tcp_name} {_describe(exc)}", exc, tell_peer=True)
            return
        self._maybe_done()

    def peer_reset(self, reason: str) -> None:
        if not self.ended:
            self.fail(f"tunnel reset ({reason})", ConnectionResetError(reason), tell_peer=False)

    # ------------------------------------------------------------ ending
    def _maybe_done(self) -> None:
        if self.eof_sent and self.peer_ended and self.transport is not None and not self.ended:
            self.transport.close()  # what is buffered still leaves
            self._finish()

    def fail(self, reason: str, exc: BaseException, *, tell_peer: bool) -> None:
        if self.ended:
            return
        self.res.error = exc
        self.res.reason = reason
        if tell_peer:
            self.mux.send(frame(RESET, self.id, reason.encode("utf-8", "replace")[:MAX_REASON]))
        abort_tcp(self.transport)
        self._finish()

    def _finish(self) -> None:
        self.ended = True
        self.held = self.early = None
        if self.connecting is not None and not self.connecting.done():
            self.connecting.cancel()
        self.res.ended = time.monotonic()
        self.mux.channel_done(self)


class MuxSession:
    """One Gannet connection carrying channels, on either end: the `Sink` its
    input is diverted to (`gannet.io.aio.divert`), the frame parser, and the
    channel table. The client opens channels (`open_channel`); the server
    answers an OPEN with `on_open(session, channel_id)`."""

    def __init__(self, tunnel: Any, g_writer: gannet.StreamWriter, log_id: int, *,
                 client: bool, on_open: Callable[[MuxSession, int], None] | None = None) -> None:
        self.tunnel = tunnel  # the TunnelClient / TunnelServer: logging and counters
        self.g_writer = g_writer
        self.log_id = log_id
        self.client = client
        self.on_open = on_open
        self.peer = format_address(g_writer.get_extra_info("peername"))
        self.channels: dict[int, Channel] = {}
        self.max_id = 0  # highest channel id opened on this connection
        self.opened = 0
        self.partial = b""  # a header or control frame cut by the end of a chunk
        self.remaining = 0  # bytes of a DATA payload still to come
        self.current: Channel | None = None  # ... and its channel (None: ended)
        self.ended = False
        self.reason = "closed"
        self.draining = False
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self.started = time.monotonic()
        # What the reader already holds is parsed inside divert (an OPEN
        # beyond MAX_CHANNELS is answered there): frames written before it
        # returns wait in a list.
        self._before: list[bytes] = []
        self._forward: Callable[[bytes], int] = self._before_divert
        # Only the glue's `forward` is kept (called as a plain callable, so
        # typed loosely: what divert returns is not this module's business).
        flow: Any = divert(g_writer, self)
        self._forward = flow.forward
        before, self._before = self._before, []
        for data in before:
            self.send(data)

    def _before_divert(self, data: bytes) -> int:
        self._before.append(data)
        return 0

    # --------------------------------------------------------- sending
    def send(self, data: bytes) -> None:
        """Write frames to the Gannet connection: they join the loop turn's
        one flush (the stream glue's `forward`), so the frames of every
        channel written in one turn leave together, in as few segments as
        their size needs."""
        if self.ended:
            return
        try:
            waiting = self._forward(data)
        except Exception as exc:  # noqa: BLE001 - the Gannet side failed
            self.fail(exc)
            return
        if waiting > GANNET_HIGH_WATER and not self.draining:
            self.draining = True
            for ch in list(self.channels.values()):
                ch.update_reading()
            asyncio.ensure_future(self.g_writer.drain()).add_done_callback(self._drained)

    def _drained(self, fut: asyncio.Future) -> None:
        self.draining = False
        if fut.cancelled() or self.ended:
            return
        exc = fut.exception()
        if exc is not None:
            self.fail(exc)
            return
        for ch in list(self.channels.values()):
            ch.update_reading()

    def open_channel(self, side: TcpSide, log_id: int, res: RelayResult) -> Channel | None:
        """The client's: carry `side` on a new channel. None when this
        connection has ended (the caller opens another)."""
        if self.ended:
            return None
        cid = self.max_id = self.max_id + 1
        self.opened += 1
        ch = Channel(self, cid, log_id, res, up_from_tcp=True, tcp_name="client")
        self.channels[cid] = ch
        self.send(_pack(OPEN, cid, 0))
        ch.attach(side)
        return ch

    def channel_done(self, ch: Channel) -> None:
        if self.channels.get(ch.id) is ch:
            del self.channels[ch.id]
        if self.current is ch:
            self.current = None
        self.tunnel._log_close(ch.log_id, ch.res, "up", "down")

    # ------------------------------------------ receiving (the Sink)
    def feed_data(self, data: bytes) -> None:
        if self.ended:
            return
        try:
            self._parse(data)
        except MuxError as exc:
            self.malformed(str(exc))
        except Exception as exc:  # noqa: BLE001 - a failure of ours: this connection ends, not the process
            log.error("#%d mux %s reset: %r", self.log_id, self.peer, exc, exc_info=exc)
            self.fail(exc)

    def _parse(self, data: bytes) -> None:
        kind: int
        cid: int
        length: int
        off = 0
        remaining = self.remaining
        if remaining:  # the rest of a DATA payload
            ch = self.current
            if len(data) <= remaining:
                self.remaining = remaining - len(data)
                if ch is not None:
                    ch.to_tcp(data)
                return
            self.remaining = 0
            if ch is not None:
                ch.to_tcp(memoryview(data)[:remaining])
            off = remaining
        elif self.partial:
            data = self.partial + data
            self.partial = b""
        end = len(data)
        channels = self.channels
        while end - off >= HEADER_SIZE:
            kind, cid, length = _unpack_from(data, off)
            body = off + HEADER_SIZE
            stop = body + length
            if kind == DATA:
                ch = channels.get(cid)
                if ch is None:
                    if cid > self.max_id or not cid:
                        raise MuxError(f"DATA for channel {cid}, which was never opened")
                elif length > ch.window:
                    raise MuxError(f"channel {cid} sent {length} bytes with "
                                   f"{ch.window} of credit")
                elif ch.peer_ended:
                    raise MuxError(f"DATA after EOF on channel {cid}")
                else:
                    ch.window -= length
                if stop > end:  # the payload goes on in the next chunks
                    self.remaining = stop - end
                    self.current = ch
                    if ch is not None and body < end:
                        ch.to_tcp(memoryview(data)[body:])
                    return
                if ch is not None and length:
                    ch.to_tcp(data[body:stop] if length < 4096 else memoryview(data)[body:stop])
            else:
                if length > MAX_REASON:
                    raise MuxError(f"{KIND_NAMES.get(kind, kind)} frame of {length} bytes")
                if stop > end:
                    break
                self._control(kind, cid, bytes(data[body:stop]))
                if self.ended:
                    return
            off = stop
        if off < end:
            self.partial = bytes(data[off:])

    def _control(self, kind: int, cid: int, body: bytes) -> None:
        if kind == WINDOW:
            if len(body) != 4:
                raise MuxError(f"WINDOW frame of {len(body)} bytes")
            (increment,) = _INCREMENT.unpack(body)
            if not increment:
                raise MuxError(f"WINDOW of 0 for channel {cid}")
            ch = self._known(cid, "WINDOW")
            if ch is not None:
                ch.granted(increment)
        elif kind == EOF:
            if body:
                raise MuxError(f"EOF frame of {len(body)} bytes")
            ch = self._known(cid, "EOF")
            if ch is not None:
                ch.peer_eof()
        elif kind == RESET:
            ch = self._known(cid, "RESET")
            if ch is not None:
                ch.peer_reset(safe_text(body))  # the peer's words, shown inert in our log
        elif kind == OPEN:
            if self.client:
                raise MuxError(f"the server opened channel {cid}")
            if body:
                raise MuxError(f"OPEN frame of {len(body)} bytes")
            if cid <= self.max_id:
                raise MuxError(f"OPEN of channel {cid} after {self.max_id}: ids must increase")
            self.max_id = cid
            self.opened += 1
            if len(self.channels) >= MAX_CHANNELS:
                self.send(frame(RESET, cid, b"too many channels"))
                log.warning("#%d mux %s: channel %d refused: %d channels open",
                            self.log_id, self.peer, cid, len(self.channels))
                return
            assert self.on_open is not None
            self.on_open(self, cid)
        else:
            raise MuxError(f"unknown frame kind {kind}")

    def _known(self, cid: int, what: str) -> Channel | None:
        ch = self.channels.get(cid)
        if ch is None and (cid > self.max_id or not cid):
            raise MuxError(f"{what} for channel {cid}, which was never opened")
        return ch

    def feed_eof(self) -> None:
        """The peer closed the mux connection: channels still open are reset."""
        if not self.ended:
            self.fail(ConnectionResetError("closed by the peer"), clean=not self.channels)

    def set_exception(self, exc: BaseException) -> None:
        if not self.ended:
            self.fail(exc)

    # ----------------------------------------------------------- ending
    def malformed(self, why: str) -> None:
        self.tunnel.malformed += 1
        log.warning("#%d mux %s reset: malformed framing: %s", self.log_id, self.peer, why)
        self.fail(ConnectionAbortedError(f"malformed framing: {why}"))

    def fail(self, exc: BaseException, *, clean: bool = False, reason: str | None = None) -> None:
        """End the mux connection: every channel on it is reset."""
        if self.ended:
            return
        self.ended = True
        self.reason = reason or ("closed" if clean else f"tunnel {_describe(exc)}")
        for ch in list(self.channels.values()):
            ch.fail(self.reason, exc, tell_peer=False)
        if clean:
            self.g_writer.close()
        else:
            abort_gannet(self.g_writer)
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        """Stop: reset every channel and the connection (the peer resets its side)."""
        self.fail(ConnectionAbortedError("tunnel stopped"), reason="tunnel stopped")

    def summary(self) -> str:
        return (f"{self.opened} channels, {time.monotonic() - self.started:.2f}s, {self.reason}")
