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
- WINDOW (4 bytes, an increment >= 1): credit for more DATA on the
  channel (QUIC's MAX_STREAM_DATA), or, on channel 0, for the connection
  (QUIC's MAX_DATA);
- BLOCKED (empty): the sender used the channel's whole window (its TCP
  reading paused there), once per grant it waited for (QUIC's
  STREAM_DATA_BLOCKED): a hint for the window's growth.

Flow control is by credit at two levels, as QUIC has it (RFC 9000 section
4). DATA counts against the channel's window and the connection's credit
at once; a DATA frame beyond either resets the mux connection.

- A channel's window starts at `CHANNEL_WINDOW` (256 KiB) each way. The
  receiver grants back what its TCP side took once a quarter of the
  window accumulated. It grows (autotuning, as Linux's receive buffer and
  QUIC implementations do): when the sender says BLOCKED and the TCP
  side took every byte at once since the last grant, the application
  drained the window faster than credit makes a round trip, so the window
  set the pace: it doubles, up to `CHANNEL_WINDOW_MAX` (4 MiB, what one
  bulk channel needs to reach the speed of a connection of its own). A
  slow application does not grow it.
- The connection credit is `CONNECTION_WINDOW` (16 MiB) each way, for all
  channels together, and comes back as the bytes leave this process's
  memory, not as they arrive: a channel's TCP transport runs with a
  high-water mark of 0, so `pause_writing` says it kept some bytes and
  `resume_writing` that it kept none; bytes written to a transport that
  kept nothing were taken by the kernel at once. So an application that
  stops reading keeps its bytes charged to the connection until it reads
  again (or its channel ends), but never more than its channel's window,
  at most CHANNEL_WINDOW_MAX = a quarter of the connection credit: three
  stalled channels at their largest windows still leave a quarter to the
  others.

A sender forwards at most the smaller of the two credits and pauses its
TCP socket's reading when either runs out (what one read brought beyond
is held; a channel waiting for connection credit queues, and the queue
is served in turn as credit returns). Every channel's reading pauses while
the connection credit is spent, while more than `HELD_LIMIT` bytes are
held over all channels, and while the Gannet writer holds more than
`GANNET_HIGH_WATER` beyond its send buffer. The mux connection's own
reading is never paused: a slow application stalls only its own channel.

What a peer can make one endpoint hold, per mux connection:

- of the peer's DATA: at most CONNECTION_WINDOW = 16 MiB (the transports'
  buffers and what waits for a target's connect; a payload is handed to a
  transport as a view of the received chunk only when it is at least half
  of it, so at most 32 MiB of memory), plus a cut control frame (at most
  1,009 bytes);
- of what it does not let us send: what the TCP sides read beyond the
  credits, at most HELD_LIMIT = 16 MiB and the one read that crossed it
  (256 KiB: asyncio's and uvloop's largest), and what waits for the Gannet
  connection beyond its send buffer, at most WRITER_LIMIT = 1 MiB (past
  that the peer makes us answer and does not read: its mux connection is
  reset);
- and the Gannet connection's own receive and send buffers, which its
  window settings bound (`--window`).

That is 16 + 16 + 0.25 + 1 = 33.25 MiB of the mux's own (49.25 MiB if
every payload were such a view) beside the Gannet connection's buffers,
where one window per channel alone allowed 4,096 channels x 4 MiB = 16 GiB.
A server holds at most that for each mux connection it serves (at most
`MAX_MUX` at once, 64 by default: 64 x 33.25 MiB = 2.1 GiB).

A frame the protocol does not allow (an unknown kind, a length beyond its
kind's limit, DATA beyond either credit or after the channel's EOF, credit
beyond CHANNEL_WINDOW_MAX or CONNECTION_WINDOW, a frame for a channel never
opened, an OPEN from the server) resets the whole mux connection with a
logged reason and is counted (`malformed` of the tunnel); the channels on
it are reset as when the connection fails. Frames for a channel that has
already ended (they were in flight) are dropped, their bytes returned to
the connection credit.

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
from collections import deque
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
    "HEADER", "OPEN", "DATA", "EOF", "RESET", "WINDOW", "BLOCKED", "CHANNEL_WINDOW", "CHANNEL_WINDOW_MAX",
    "CONNECTION_WINDOW", "MAX_CHANNELS",
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
BLOCKED: Final = 6
KIND_NAMES: Final = {OPEN: "OPEN", DATA: "DATA", EOF: "EOF", RESET: "RESET", WINDOW: "WINDOW",
                     BLOCKED: "BLOCKED"}
_INCREMENT: Final = struct.Struct("!I")
CONNECTION_WINDOW: Final = 16 * 1024 * 1024
"""Connection credit (QUIC's MAX_DATA, RFC 9000 section 4.1): DATA bytes of
all channels together that one direction may have sent and the receiver
not yet taken out of its memory. The bound on what a peer can make an
endpoint hold (see the module docstring)."""
CHANNEL_WINDOW_MAX: Final = CONNECTION_WINDOW // 4
"""A channel's window (QUIC's MAX_STREAM_DATA) grows to this and no
further: as large as a Gannet connection's default receive window, so one
bulk channel is not held back where a connection of its own would not be,
and a quarter of the connection credit, so a channel whose application
stopped reading holds at most that much of it."""
CHANNEL_WINDOW: Final = 256 * 1024
"""A channel's window when it opens, each direction (doubled each time
the sender used it all while the application took every byte at once, up
to CHANNEL_WINDOW_MAX)."""
GRANT_FRACTION: Final = 4
"""The receiver grants a channel's window back once 1/GRANT_FRACTION of
it was taken by the TCP side."""
CONNECTION_GRANT_AT: Final = CONNECTION_WINDOW // 8
"""Bytes taken out of memory before the connection credit is returned."""
HELD_LIMIT: Final = CONNECTION_WINDOW
"""Bytes read from TCP beyond the credit (at most one read per channel),
all channels of a mux connection together, above which every channel's
reading pauses until the peer grants some."""
WRITER_LIMIT: Final = 4 * GANNET_HIGH_WATER
"""Bytes the Gannet writer may hold beyond its send buffer: past
GANNET_HIGH_WATER only answers to the peer's frames are written (a RESET
for a refused OPEN, grants), so more than this is a peer that makes us
answer and never reads: its mux connection is reset."""
MAX_REASON: Final = 1000
"""Longest RESET reason (bytes, UTF-8)."""
MAX_CHANNELS = 4096
"""Open channels per mux connection; an OPEN beyond is reset."""

_pack: Final = HEADER.pack
_unpack_from: Final = HEADER.unpack_from


def _slice(data: bytes, start: int, stop: int) -> bytes | memoryview:
    """A DATA payload out of a received chunk: a copy when small, or when a
    view would keep a chunk more than twice its size alive in a transport's
    buffer (so what a channel holds is at most twice what it counts), else
    a view (no copy for bulk). (`data` typed bytes: compiled, its slice is
    a direct call, not a slice object through the generic protocol.)"""
    n = stop - start
    if n < 4096 or 2 * n < len(data):
        return data[start:stop]
    return memoryview(data)[start:stop]


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
                 "tcp_name", "credit", "blocked", "window", "size", "grant_at", "consumed", "pending",
                 "exhausted", "stalled", "held", "waiting", "reading", "full",
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
        # Sending (TCP -> peer)
        self.credit = CHANNEL_WINDOW  # bytes we may still send
        self.blocked = False  # ... none: BLOCKED sent, until the next grant
        self.held: bytes | None = None  # read from TCP beyond the credit
        self.waiting = False  # ... for connection credit, in the mux's queue
        self.reading = False  # the TCP side's reading is on
        # Receiving (peer -> TCP)
        self.window = CHANNEL_WINDOW  # bytes the peer may still send
        self.size = CHANNEL_WINDOW  # the window as granted (autotuned)
        self.grant_at = CHANNEL_WINDOW // GRANT_FRACTION
        self.consumed = 0  # taken out of memory by the TCP side, not yet granted back
        self.pending = 0  # received, still in memory (the transport's buffer, `early`)
        self.exhausted = False  # the peer used the whole window since the last grant
        self.stalled = False  # ... and the TCP side did not take every byte at once
        self.full = False  # the TCP transport holds unsent bytes (its high-water mark is 0)
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
        side.hand_over(self)
        # A high-water mark of 0: pause_writing (tcp_full) as soon as the
        # transport keeps a byte, resume_writing (tcp_drained) once it kept
        # none, so the channel knows which received bytes are still in
        # this process's memory (they hold connection credit) and which
        # the kernel took.
        transport.set_write_buffer_limits(high=0)
        early, self.early = self.early, None
        if early is not None:
            for data in early:
                self.pending -= len(data)  # (counted again as written)
                self.to_tcp(data)
        if self.peer_ended:
            self.peer_ended = False
            self.peer_eof()
        if not self.ended:
            self.update_reading()
            self.mux.return_credit()

    def update_reading(self) -> None:
        transport = self.transport
        if transport is None:
            return
        want = (self.credit > 0 and self.held is None and not self.tcp_ended
                and not self.ended and not self.mux.paused)
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
        mux = self.mux
        held = self.held
        if held is not None:  # (a read after the pause: it queues behind)
            self.held = held + data
            mux.held += len(data)
            return
        n = len(data)
        credit = self.credit
        room = mux.credit
        if room < credit:
            credit = room
        if n > credit:  # what is beyond the credit waits for a grant
            self.held = data[credit:]
            mux.held += n - credit
            data = data[:credit]
            n = credit
            if credit == room and not self.waiting:  # (the connection's credit ran out)
                self.waiting = True
                mux.waiting.append(self)
        if n:
            self.credit -= n
            room = mux.credit = room - n
            if self.up_from_tcp:
                self.res.sent += n
            else:
                self.res.received += n
            mux.send(_pack(DATA, self.id, n) + data)
            if room <= 0:  # the connection credit is spent: every channel's reading pauses
                mux.blocked += 1
                mux.update_pause()
        if self.held is not None:
            if mux.held > HELD_LIMIT:
                mux.update_pause()
            self.update_reading()
        elif self.credit <= 0:
            self.update_reading()
        if self.credit <= 0 and not self.blocked and not self.ended:
            # The window, not the TCP side, stops this channel: say so, so
            # the receiver can grow it (QUIC's STREAM_DATA_BLOCKED).
            self.blocked = True
            mux.send(_pack(BLOCKED, self.id, 0))

    def release_held(self) -> None:
        """Send what was held back, as far as the credits reach (after a
        grant; while the Gannet writer drains it waits for the drain)."""
        held = self.held
        if held is None or self.ended or self.mux.draining:
            return
        self._drop_held()  # (in a method of its own: see _drop_held)
        mux = self.mux
        self.from_tcp(held)
        if self.held is None and self.tcp_ended and not self.eof_sent:
            self._send_eof()
        if mux.paused:
            mux.update_pause()

    def _drop_held(self) -> None:
        """No more held bytes. (Not written inline where from_tcp follows:
        the compiled build would take `self.held` for None after such an
        assignment, though from_tcp may hold bytes again.)"""
        held = self.held
        if held is not None:
            self.held = None
            self.mux.held -= len(held)

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
        elif self.pending:  # (closed with bytes still buffered: they are gone now)
            self._free_pending()

    def tcp_full(self) -> None:
        self.full = True
        self.stalled = True

    def tcp_drained(self) -> None:
        self.full = False
        if self.pending and not self.ended:
            self._free_pending()

    # ------------------------------------------- mux -> TCP (MuxSession's)
    def to_tcp(self, data: Any) -> None:
        """Bytes of a DATA frame (counted against both windows by the parser)."""
        n = len(data)
        if self.ended:
            self.mux.released += n  # (dropped: out of memory at once)
            return
        write = self._tcp_write
        if write is None:  # (the server's target connection is not there yet)
            if self.early is None:
                self.early = []
            self.early.append(bytes(data))
            self.pending += n
            self.stalled = True
            return
        if self.full:
            data = bytes(data)  # (kept: a copy, not a view holding the whole chunk)
        write(data)
        if self.up_from_tcp:
            self.res.received += n
        else:
            self.res.sent += n
        if self.full:  # the transport kept (some of) it: in memory until it drains
            self.pending += n
            return
        self.mux.released += n
        consumed = self.consumed = self.consumed + n
        if consumed >= self.grant_at:
            self._grant()

    def _free_pending(self) -> None:
        """What the transport or `early` held left this process's memory."""
        pending, self.pending = self.pending, 0
        mux = self.mux
        mux.released += pending
        if not self.ended:
            consumed = self.consumed = self.consumed + pending
            if consumed >= self.grant_at and not self.full:
                self._grant()
        mux.return_credit()

    def _grant(self) -> None:
        """Grant the window back (QUIC's MAX_STREAM_DATA): what the TCP side
        took, and, when the peer used the whole window before a grant
        reached it while the TCP side took every byte at once (the window,
        not the application, set the pace: the application drained it
        within a round trip), as much again: the window doubles, up to
        CHANNEL_WINDOW_MAX (the idea of Linux's receive buffer autotuning
        and of QUIC implementations' window autotuning)."""
        increment, self.consumed = self.consumed, 0
        size = self.size
        if self.exhausted and not self.stalled and size < CHANNEL_WINDOW_MAX:
            grow = CHANNEL_WINDOW_MAX - size
            if grow > size:
                grow = size
            size = self.size = size + grow
            self.grant_at = size // GRANT_FRACTION
            increment += grow
            self.mux.grown += 1
        self.exhausted = self.stalled = False
        self.window += increment
        self.mux.send(_pack(WINDOW, self.id, 4) + _INCREMENT.pack(increment))

    def granted(self, increment: int) -> None:
        credit = self.credit + increment
        if credit > CHANNEL_WINDOW_MAX:
            raise MuxError(f"channel {self.id}: credit beyond {CHANNEL_WINDOW_MAX} bytes")
        self.credit = credit
        self.blocked = False
        self.release_held()
        self.update_reading()

    def peer_blocked(self) -> None:
        """The peer used the whole window (BLOCKED): if the TCP side took
        every byte at once since the last grant, the window, not the
        application, set the pace: grant now, with the growth."""
        self.exhausted = True
        if not self.stalled and not self.full and not self.ended and self.size < CHANNEL_WINDOW_MAX:
            self._grant()

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
            self.transport.close()  # what is buffered still leaves (pending: freed at tcp_lost)
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
        if self.pending:  # (aborted: what the transport held is dropped)
            self._free_pending()

    def _finish(self) -> None:
        self.ended = True
        self._drop_held()
        if self.early is not None:
            self.early = None
            self._free_pending()
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
        self.draining = False  # the Gannet writer is above GANNET_HIGH_WATER
        # Connection credit (RFC 9000 section 4.1's MAX_DATA), each way.
        self.credit = CONNECTION_WINDOW  # DATA bytes we may still send
        self.waiting: deque[Channel] = deque()  # channels holding data for want of it
        self.held = 0  # bytes read from TCP beyond the credits, all channels
        self.paused = False  # every channel's reading paused (draining, no credit, held)
        self.window = CONNECTION_WINDOW  # DATA bytes the peer may still send
        self.released = 0  # ... taken out of memory, not yet returned to the peer
        self.grown = 0  # channel windows doubled (autotuning)
        self.refused = 0  # OPENs beyond MAX_CHANNELS
        self.blocked = 0  # times our connection credit ran out
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
        if waiting > GANNET_HIGH_WATER:
            if self.draining and waiting <= WRITER_LIMIT:
                return
            if waiting > WRITER_LIMIT:
                # Only our answers to its frames pass the high-water mark
                # (every channel's reading paused there): a peer that
                # makes us answer and never reads.
                log.warning("#%d mux %s reset: the peer does not read (%d bytes wait to be sent)",
                            self.log_id, self.peer, waiting)
                self.fail(ConnectionAbortedError("the peer does not read"))
                return
            self.draining = True
            self.update_pause()
            asyncio.ensure_future(self.g_writer.drain()).add_done_callback(self._drained)

    def update_pause(self) -> None:
        """Every channel's reading pauses while the Gannet writer drains, the
        connection credit is spent, or more than HELD_LIMIT bytes wait for
        credit; it resumes once none of these holds."""
        paused = self.draining or self.credit <= 0 or self.held > HELD_LIMIT
        if paused != self.paused:
            self.paused = paused
            for ch in list(self.channels.values()):
                ch.update_reading()

    def _drained(self, fut: asyncio.Future) -> None:
        self.draining = False
        if fut.cancelled():
            return
        exc = fut.exception()
        if self.ended:
            return
        if exc is not None:
            self.fail(exc)
            return
        self.update_pause()
        for ch in list(self.channels.values()):  # what waited for the drain, not for credit
            if ch.held is not None and ch.credit > 0 and self.credit > 0 and not self.draining:
                ch.release_held()
                ch.update_reading()

    def granted(self, increment: int) -> None:
        """A WINDOW for the connection (channel 0): more connection credit;
        the channels that wait for it send in turn, each as far as it
        reaches (one held read each, round robin)."""
        credit = self.credit + increment
        if credit > CONNECTION_WINDOW:
            raise MuxError(f"connection credit beyond {CONNECTION_WINDOW} bytes")
        self.credit = credit
        waiting = self.waiting
        while waiting and self.credit > 0:
            ch = waiting.popleft()
            ch.waiting = False
            if not ch.ended:
                ch.release_held()  # (back at the end of the queue if the credit ran out again)
                ch.update_reading()
        self.update_pause()

    def return_credit(self) -> None:
        """Return the connection credit of the bytes taken out of memory
        (QUIC's MAX_DATA, sent as the application consumes), once an eighth
        of it accumulated."""
        released = self.released
        if released >= CONNECTION_GRANT_AT and not self.ended:
            self.released = 0
            self.window += released
            self.send(_pack(WINDOW, 0, 4) + _INCREMENT.pack(released))

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
        except Exception as err:  # noqa: BLE001 - a failure of ours: this connection ends, not the process
            # (a name of its own: compiled, `exc` would be typed MuxError here)
            log.error("#%d mux %s reset: %r", self.log_id, self.peer, err, exc_info=err)
            self.fail(err)
        else:
            if self.released >= CONNECTION_GRANT_AT:
                self.return_credit()

    def _parse(self, data: bytes) -> None:
        kind: int
        cid: int
        length: int
        off = 0
        end = len(data)
        remaining = self.remaining
        if remaining:  # the rest of a DATA payload
            ch = self.current
            if end <= remaining:
                self.remaining = remaining - end
                if ch is not None:
                    ch.to_tcp(data)
                else:
                    self.released += end
                return
            self.remaining = 0
            if ch is not None:
                ch.to_tcp(_slice(data, 0, remaining))
            else:
                self.released += remaining
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
                # Both credits are checked as the header arrives: DATA beyond
                # either is the peer's fault however it is cut.
                if length > self.window:
                    raise MuxError(f"channel {cid} sent {length} bytes with {self.window} "
                                   f"of connection credit")
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
                self.window -= length
                if stop > end:  # the payload goes on in the next chunks
                    self.remaining = stop - end
                    self.current = ch
                    if ch is not None:
                        if body < end:
                            ch.to_tcp(_slice(data, body, end))
                    else:  # (a channel that ended: its bytes are dropped)
                        self.released += end - body
                    return
                if ch is not None:
                    if length:
                        # (a request's few bytes: the copy inline, no call)
                        ch.to_tcp(data[body:stop] if length < 4096 else _slice(data, body, stop))
                else:
                    self.released += length
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
            if not cid:  # the connection's credit
                self.granted(increment)
                return
            ch = self._known(cid, "WINDOW")
            if ch is not None:
                ch.granted(increment)
        elif kind == BLOCKED:
            if body:
                raise MuxError(f"BLOCKED frame of {len(body)} bytes")
            ch = self._known(cid, "BLOCKED")
            if ch is not None:
                ch.peer_blocked()
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
                self.refused += 1
                if self.refused == 1:  # (once: the count is in the summary)
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
        why = safe_text(why)  # (built from the peer's numbers; shown inert whatever it holds)
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
        refused = f" ({self.refused} refused: too many open)" if self.refused else ""
        return f"{self.opened} channels{refused}, {time.monotonic() - self.started:.2f}s, {self.reason}"
