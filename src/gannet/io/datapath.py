"""The asyncio adapter's per-datagram path, compiled (gannet._build.MODULES).

`DatagramPath` is the base class of `io.endpoint.AioEndpoint`: it holds the
state every message reads (the pass's flags, the core endpoint's queues, the
receive buffers, the armed deadline) as native attributes, and runs what a
message costs the adapter: the read (`_receive_gro`, `_receive_plain`), the
pass (`_process_locked`: the core's output, one-datagram send, dispatch, the
timer check) and the flushes that start one. Everything else - setup,
closing, the blocking callers' drive, and every error and batch path of the
send (`_transmit`, `_send_failed`, ...) - is AioEndpoint's, in Python.

Why a native class (docs/design.md, "The small-message path"): code moved
as it is into a compiled module gained nothing, because each line read an
attribute of an untyped object through a generic lookup. Here the reads of
`self`'s state and of the core `Endpoint`'s queues (`_out`, `_conns`) are
struct reads, and the parts of the path call each other as native functions
(the module functions below): a call to a method of `self` goes through
Python (AioEndpoint is a Python subclass, whose methods may override), so
methods are the entry points from Python and the seams a subclass overrides
(`_receive_plain`, `_transmit`), never the way one hot part calls another.

The methods AioEndpoint defines and this path calls on an error or a batch
are declared here (`_read_error_queue`, `_transmit`, ...); their bodies are
AioEndpoint's. Under GANNET_PURE=1 this module runs from this source.
"""

from __future__ import annotations

import logging
import math
import socket
import sys
import threading
import time as _time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from mypy_extensions import mypyc_attr

from ..core.connection import Connection
from ..core.endpoint import Endpoint
from ..core.events import (AllDataAcknowledged, ConnectionAvailable, ConnectionEstablished,
                           ConnectionTerminated, DataReceived, Event, SendSpaceAvailable,
                           StreamEnded)
from ..crypto.endpoint import HandshakeRefused
from ..wire.batch import Receptacle, SourceTrain, Train
from ..wire.datagram import SHORT_SIZE, TRAILER_SIZE

if TYPE_CHECKING:
    from .endpoint import Handler, Outgoing, SockAddr

RECV_BATCH: Final = 256  # datagrams drained per readiness callback before we send
RECV_CALLS: Final = 64  # recvmsg calls per readiness callback (each may carry a GRO batch)
PROCESS_ROUNDS: Final = 8  # send/dispatch rounds per flush before yielding to the loop
SOL_UDP: Final = int(getattr(socket, "SOL_UDP", 17))
UDP_GRO: Final = int(getattr(socket, "UDP_GRO", 104))  # (linux/udp.h)
GRO_CMSG_SPACE: Final = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0
MSG_TRUNC: Final = int(getattr(socket, "MSG_TRUNC", 0x20))  # a plain int: `flags & IntFlag` runs Python code
_NATIVE: Final = sys.byteorder
_NOTHING_QUEUED: Final = bytes(4)  # FIONREAD's answer: no datagram queued

# Busy polling (Config.busy_poll; docs/design.md, "Polling before sleeping"):
# after this many polls in a row that ended without an answer, poll only
# once in BUSY_RETRY_EVERY activations that would, until one is answered.
BUSY_MISSES_OFF: Final = 8
BUSY_RETRY_EVERY: Final = 64
_monotonic_ns: Final = _time.monotonic_ns

# From this size up a datagram is read straight into a bytes object of its
# own (receive_gro): below it, a GRO batch of smaller datagrams in the shared
# buffer and one copy of each payload cost less than a new object a read.
SPLIT_FROM: Final = 16384
_SPLIT_MIN: Final = SHORT_SIZE + TRAILER_SIZE
# What a split read takes in all: the largest UDP datagram or GRO batch (64
# KB). Not RECV_SIZE: a new object a read, shrunk to its datagram, leaves
# little beside it in the heap, and a freed payload's block fits the next.
SPLIT_SIZE: Final = 65536
RECV_SIZE: Final = 65536 * 2  # a GRO batch can hold up to 64 KB of payload; room to spare

log = logging.getLogger("gannet.io")

_thread_buffers = threading.local()


def _receive_buffer() -> tuple[bytearray, memoryview, list[bytearray]]:
    """The receive buffer of this thread, shared by every endpoint whose loop
    runs here. Safe because a readiness callback decodes each datagram before
    the next receive and nothing else runs in between (see the contract
    in io/endpoint.py); it saves a client with one endpoint per connection 128 KB of
    address space and a few touched pages per connection."""
    bufs = getattr(_thread_buffers, "bufs", None)
    if bufs is None:
        buf = bytearray(RECV_SIZE)
        bufs = _thread_buffers.bufs = (buf, memoryview(buf), [buf])
    return bufs

# The events that go only to their connection's handler (most of them).
_TO_HANDLER = frozenset({DataReceived, SendSpaceAvailable, StreamEnded, ConnectionEstablished,
                         AllDataAcknowledged})

# Outcomes of a failed send (AioEndpoint._send_failed): the socket is full
# (a writable callback or a retry is arranged), one datagram dropped, or
# send the datagrams again one at a time.
STOP: Final = object()
DROPPED: Final = object()
FALLBACK: Final = object()


@dataclass(slots=True)
class IoStats:
    """What the adapter did with the socket (the core's counters are `stats`);
    native, as the path counts on it per datagram."""

    datagrams_sent: int = 0
    send_calls: int = 0
    """System calls that sent: sendto plus sendmsg."""
    gso_calls: int = 0
    """GSO sends (sendmsg calls with UDP_SEGMENT, or one train of a
    sendmmsg), each carrying 2-64 datagrams."""
    gso_datagrams: int = 0
    gathered_sends: int = 0
    """Sends whose payloads were gathered from the send buffer (a
    SourceTrain's, one sendmsg each) rather than copied into a train first."""
    gso_fallbacks: int = 0
    """GSO sends the kernel refused, sent again one datagram at a time."""
    send_errors: int = 0
    last_send_error: str = ""
    """The most recent send failure (errno name and datagram size), for diagnosis."""
    datagrams_received: int = 0
    recv_calls: int = 0
    """Successful receive system calls."""
    gro_batches: int = 0
    """Receives that carried more than one datagram (UDP GRO)."""
    truncated: int = 0
    uncopied: int = 0
    """Datagrams read with their payload straight into a bytes object the
    core kept (path MTU discovery's large ones, see receive_gro)."""
    loop_calls: int = 0
    """Callbacks the event loop ran for this endpoint (readiness, timer,
    flush): each one a wake-up of the loop's thread."""
    timer_calls: int = 0
    """Of loop_calls, those of the endpoint's timer: their number follows
    the wall clock (a deadline per tail-loss probe, delayed ACK, ...), not
    the messages."""
    caller_passes: int = 0
    """Passes run by an application thread waiting in a blocking `Socket`
    call (see AioEndpoint.begin_drive)."""
    busy_polls: int = 0
    """Busy polls begun (Config.busy_poll): each a run of non-blocking
    readiness checks after a send, instead of sleeping at once."""
    busy_poll_hits: int = 0
    """Busy polls that found the socket readable within the budget."""
    busy_poll_checks: int = 0
    """Non-blocking readiness checks those polls made."""
    passes: int = 0
    """Passes run on any thread (the core's output handed to the kernel, its
    events dispatched, the timer armed): one per readiness that read
    datagrams (a reply the application writes at once joins it, see
    AioEndpoint._after_receive) or timer fired, one per write that leaves
    at once. A call that would find nothing to do runs none."""


@mypyc_attr(allow_interpreted_subclasses=True)
class DatagramPath:
    """The per-datagram state and path of an AioEndpoint (its base class)."""

    # Set by AioEndpoint.__init__ (see there for what each is).
    loop: Any  # asyncio.AbstractEventLoop
    sock: Any  # socket.socket, or what stands for it (a TUN device, a test's wrapper)
    lock: Any  # threading.RLock
    io_stats: IoStats
    now: Callable[[], float]
    core: Endpoint  # the core endpoint (AioEndpoint.ep, unless a test swaps that)
    _events: deque[Event]
    _dirty: dict[Connection, None]
    _heap: list[tuple[float, int, Connection]]
    _handlers: dict[Connection, Handler]
    _refused: dict[Connection, Exception]
    _timer: Any  # the loop's _LoopTimers
    _drive: Any  # _Drive | None
    _preparer: Any  # SecureEndpoint | None
    _batch_passed_on: tuple[int, Callable[..., None] | None]
    # Path MTU discovery's datagrams without the user-space copy (see
    # receive_gro): the plain core's receive_parts, bound, and the header
    # buffer and Receptacle a large datagram is read into; None where the
    # C extension is missing or the core is not the plain endpoint's.
    _parts_passed_on: Callable[..., None] | None = None
    _split: list[Any] | None = None  # [bytearray(SHORT_SIZE), Receptacle]
    on_available: Callable[[Connection], None] | None
    on_refused: Callable[[HandshakeRefused], None] | None
    # An observer's limit accounting (gannet.observe), called by each pass
    # with the connections that had output to build, after the core built
    # it: the adapter calls it, so an endpoint observed for that alone stays
    # of its native class (docs/design.md, "The tunnel's per-request cost").
    after_pass: Callable[[list[Connection], float], None] | None = None
    _rbuf: bytearray
    _rview: memoryview
    _rbufs: list[bytearray]
    _queued: bytearray
    _fd: int
    _safe: int
    _shortcut: bool  # ONE_DATAGRAM_SHORTCUT, read once
    # fcntl.ioctl for the FIONREAD check after a read (None: not POSIX, or off)
    _ioctl: Callable[[int, int, bytearray], int] | None
    _fionread: int
    gso: bool
    gro: bool

    closed: bool = False
    close_when_idle: bool = False
    _off_loop: bool = False  # flush_threadsafe is sending on another thread
    _flush_scheduled: bool = False
    _sent_at_once: bool = False  # a write left at once and no pass has run since (flush_now)
    _timer_moved: bool = False
    _timer_at: float | None = None
    _timer_tick: int = -1
    _held_acks: list[Connection] | None = None
    _backlog: deque[tuple[bytes | bytearray, SockAddr]] | None = None
    _df: bool = False  # DF currently set on the socket (see set_dont_fragment)
    _df_supported: bool = True
    _large: bool = False  # the last read was one datagram of SPLIT_FROM bytes or more
    # Busy polling (see busy_poll_due): the budget in nanoseconds (0: off,
    # set by AioEndpoint.__init__), a poll of the loop's queued, polls in a
    # row that ended unanswered, activations skipped since, and the socket
    # alone in a select.poll (the loop's poll; a driving thread has its own).
    _busy_ns: int = 0
    _busy_queued: bool = False
    _busy_misses: int = 0
    _busy_skipped: int = 0
    _busy_poller: Any = None

    # ---------------------------------------------------- flushing (entry)
    def request_flush(self) -> None:
        """After an application action on the loop thread: flush soon, once."""
        if not self._flush_scheduled and not self.closed:
            self._flush_scheduled = True
            self.loop.call_soon(self._process)

    def flush_now(self) -> None:
        """After an application write on the loop thread: send at once if the
        endpoint has run a pass since the last write that left at once (a
        kernel TCP socket with TCP_NODELAY sends at once, too), else join
        one flush at the end of this loop iteration: writes that follow one
        another without the loop running ours are coalesced rather than each
        sent on its own. A request-response exchange pays for no extra pass:
        the reply's arrival runs one."""
        if self._flush_scheduled or self.closed:
            return
        if self._sent_at_once:
            self.request_flush()
            return
        with self.lock:  # (self._process())
            process(self)
        self._sent_at_once = True

    def flush_threadsafe(self) -> None:
        """From an application thread, with `self.lock` held, after a write
        (or a read that may open the window): run the pass on this thread -
        hand what the core has ready to the kernel, dispatch the events (the
        blocking API's handlers only notify Conditions on this lock) - for a
        loop thread hand-off costs more than the pass. Whoever watches the
        deadlines next (the loop, or a thread driving the endpoint) is told
        only when one moved earlier than it would look."""
        if self.closed or not has_work(self):
            return  # (a read that opened no window, typically)
        self._off_loop = True
        try:
            process(self)
        except OSError as exc:  # the socket was closed under us
            log.debug("flush from thread failed: %r", exc)
        finally:
            self._off_loop = False

    def request_flush_threadsafe(self) -> None:
        """The same, from any thread; call it with `self.lock` held. Nothing
        is asked of the loop when it would have nothing to do (no connection
        to process, no event, no timer to move): a blocking request-response
        exchange would wake the loop thread twice per message for nothing."""
        request_flush_threadsafe(self)

    def _has_work(self) -> bool:
        return has_work(self)

    def _process(self) -> None:
        with self.lock:
            self.io_stats.loop_calls += 1
            process(self)

    def _process_locked(self) -> None:
        process(self)

    def _dispatch(self) -> bool:
        return dispatch(self)

    def _deadline_moved_off_loop(self) -> None:
        deadline_moved_off_loop(self)

    def _arm_timer(self) -> None:
        arm_timer(self)

    def drive(self, until: float | None, ready: Callable[[], bool] | None = None) -> None:
        """Between begin_drive and end_drive, with the lock held (once or
        more: it is released only while the thread sleeps in poll): wait for
        a datagram, a wake-up or the core's next deadline (at most until
        `until`, on the core's clock), then run the pass that is due. The
        lock is taken back once, for the receive, the timers and the pass
        together. `ready` (optional) says whether what the caller waits for
        is there already: then it returns at once."""
        drive(self, until, ready)

    def begin_drive(self) -> bool:
        """From an application thread about to wait, with the lock held:
        become the thread that runs this endpoint until `end_drive`. False
        if another thread drives it (wait on a Condition of this lock,
        counted in `drive_waiting()` meanwhile: the driver's passes dispatch
        the events, and end_drive notifies one waiter of each Condition
        there) or the endpoint is closed."""
        return begin_drive(self)

    def end_drive(self) -> None:
        """With the lock held: this thread stops running the endpoint."""
        end_drive(self)

    # ------------------------------------------------------ network (entry)
    def _on_readable(self) -> None:
        self.io_stats.loop_calls += 1
        if self.gro:
            receive_gro(self, self._rbufs, self._rview)
        else:
            self._receive_plain(self._rbuf, self._rview)

    def _after_receive(self) -> None:
        after_receive(self)

    def _busy_poll(self) -> None:
        busy_poll_on_loop(self)

    def _pass_after_receive(self) -> None:
        # (the same loop turn as the readiness that read the datagrams: no
        # wake-up of its own, so not counted in loop_calls)
        with self.lock:
            process(self)

    def _receive_gro(self, bufs: list[bytearray], view: memoryview) -> None:
        receive_gro(self, bufs, view)

    def _receive_plain(self, buf: bytearray, view: memoryview) -> None:
        """Read what is queued (into this thread's buffer), then run a pass.
        (A subclass whose carrier is not a UDP socket reads its own way.)"""
        recvfrom_into = self.sock.recvfrom_into
        time = self.now
        st = self.io_stats
        got = 0
        fd, ioctl, queued, fionread = self._fd, self._ioctl, self._queued, self._fionread
        with self.lock:
            feed = self.core.receive_datagram
            for _ in range(RECV_BATCH):
                try:
                    n, addr = recvfrom_into(buf)
                except (BlockingIOError, InterruptedError):
                    if not got:
                        self._read_error_queue()  # woken for an error, not for data
                    break
                except OSError as exc:
                    if self.closed:
                        return
                    # An ICMP error for something we sent (IP_RECVERR).
                    if not self._read_error_queue(True):
                        log.debug("recvfrom failed: %r", exc)
                        break
                    continue
                got += 1
                feed(view[:n], addr, time())  # the core copies what it keeps
                if (got == 1 and ioctl is not None and not ioctl(fd, fionread, queued)
                        and queued == _NOTHING_QUEUED):
                    break
            st.recv_calls += got
            st.datagrams_received += got
            after_receive(self)

    def _send(self, out: Outgoing) -> None:
        send(self, out)

    # ------------------------- AioEndpoint's (errors, batches, setup, close)
    def _read_error_queue(self, taken: bool = False) -> bool:
        raise NotImplementedError

    def _transmit(self, out: Outgoing) -> int:
        raise NotImplementedError

    def _transmit_plain_run(self, out: Outgoing, i: int, j: int) -> int:
        raise NotImplementedError

    def _send_failed(self, exc: OSError, size: int, count: int, addr: SockAddr,
                     data: bytes | bytearray | None = None) -> object:
        raise NotImplementedError

    def _set_df(self, on: bool) -> None:
        raise NotImplementedError

    def _call_loop(self, fn: Callable[[], None]) -> None:
        raise NotImplementedError

    def _check_callers(self) -> None:
        raise NotImplementedError

    def _reader_off(self) -> None:
        raise NotImplementedError

    def _new_drive(self) -> Any:  # a _Drive
        raise NotImplementedError

    def prepare_soon_threadsafe(self) -> None:
        raise NotImplementedError

    def prepare_soon(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# ------------------------------------------------------------------ the pass
def has_work(p: DatagramPath) -> bool:
    """Whether a pass would do anything: the core's output, events and
    deadlines change only through the connections it marks dirty, its
    queued resets and its events; the adapter adds its own (a timer to
    move, held ACKs, closing when idle)."""
    return bool(p._dirty or p.core._out or p._events or p._timer_moved or p.close_when_idle
                or p._held_acks is not None)


def request_flush_threadsafe(p: DatagramPath) -> None:
    if p._flush_scheduled or p.closed or not has_work(p):
        return
    p._flush_scheduled = True
    try:
        p.loop.call_soon_threadsafe(p._process)
    except RuntimeError:  # the loop is gone (interpreter exit)
        p._flush_scheduled = False


def process(p: DatagramPath) -> None:
    """The pass: hand the core's output to the kernel, dispatch its events
    (until a round dispatches nothing), then look at the timer."""
    if p.closed:
        return
    p.io_stats.passes += 1
    # Handlers that write while we run need no extra flush: we loop until
    # a round dispatches nothing, so nothing can be left behind.
    p._flush_scheduled = True
    p._sent_at_once = False
    ep = p.core
    dirty, events = p._dirty, p._events
    more = False
    held = p._held_acks
    if held is not None:
        p._held_acks = None
        for conn in held:
            conn.release_ack()
    # A pass with nothing to do (the follow-up flush after a write that
    # left at once, typically) touches neither the core nor the timer:
    # the core's output, events and deadlines change only through the
    # connections it marks dirty, its queued resets and its events.
    moved = p._timer_moved
    sent = False
    try:
        for _ in range(PROCESS_ROUNDS):
            if dirty or ep._out:
                moved = True
                watch = p.after_pass
                if watch is None:
                    out = cast("Outgoing", ep.datagrams_to_send(p.now(), p.gso))
                else:
                    now = p.now()
                    passed = list(dirty)
                    out = cast("Outgoing", ep.datagrams_to_send(now, p.gso))
                    watch(passed, now)
                if out:
                    send(p, out)
                    sent = True
            if not events or not dispatch(p):
                break
        else:
            more = True
    finally:
        p._flush_scheduled = False
    if p._off_loop:  # an application thread's pass: the loop's parts are the loop's
        if more or dirty or (p.close_when_idle and not ep._conns):
            request_flush_threadsafe(p)
        if moved:
            deadline_moved_off_loop(p)
        return
    if more or p._held_acks is not None or dirty:
        # (dirty after the last pass: a send error the core heard of,
        # such as a PMTU probe refused with EMSGSIZE)
        p.request_flush()
    if p.close_when_idle and not ep._conns:  # (not ep.connection_count)
        p.close()
        return
    if moved:
        p._timer_moved = False
        arm_timer(p)
        preparer = p._preparer
        if preparer is not None and preparer.prepare_due:  # (what was sent is out)
            p.prepare_soon()
    if sent and p._busy_ns and not p._busy_queued and busy_poll_wanted_on_loop(p):
        # After the callbacks this pass's datagrams woke, before the loop
        # sleeps: busy_poll_on_loop.
        p._busy_queued = True
        p.loop.call_soon(p._busy_poll)


def dispatch(p: DatagramPath) -> bool:
    events = p._events
    handled = False
    handlers = p._handlers
    while events:
        ev: Any = events.popleft()
        handled = True
        try:
            kind = type(ev)
            if kind in _TO_HANDLER:  # (most events: data, send space)
                handler = handlers.get(ev.conn)
                if handler is not None:
                    handler(ev)
                continue
            if kind is ConnectionAvailable:
                if p.on_available is not None:
                    p.on_available(ev.conn)
                continue
            if kind is HandshakeRefused:  # (rare kinds from here)
                if p.on_refused is not None:
                    p.on_refused(ev)
                continue
            handler = handlers.get(ev.conn)
            if kind is ConnectionTerminated and p._refused and ev.error is None:
                error = p._refused.get(ev.conn)
                if error is not None:
                    ev = ConnectionTerminated(ev.conn, error)
            if handler is not None:
                handler(ev)
        except Exception as exc:  # noqa: BLE001 - one bad handler must not stop the endpoint
            p.loop.call_exception_handler(
                {"message": "Gannet event handler failed", "exception": exc, "event": ev}
            )
        if type(ev) is ConnectionTerminated:
            handlers.pop(ev.conn, None)
            p._refused.pop(ev.conn, None)
    d = p._drive
    if handled and d is not None and d.poll_until is not None:
        d.wake()  # the driving thread sleeps in poll, not on a Condition
    return handled


def after_receive(p: DatagramPath) -> None:
    """With the lock held, after datagrams were fed to the core. On the
    loop, the events go to their handlers now and the pass that sends
    runs after the callbacks they woke: an application task woken by a
    message that answers it at once writes before that pass, and the
    reply carries the ACK the message asked for, one pass per message
    where a pass for the read and one for the reply were two. On an
    application thread (drive), with nothing to dispatch, or with a
    pass already due in this loop turn, the pass runs now."""
    if p._off_loop or p._flush_scheduled or p.closed or not p._events:
        process(p)
        return
    p._flush_scheduled = True  # what the handlers write joins that pass
    try:
        dispatch(p)
    finally:
        p.loop.call_soon(p._pass_after_receive)


# ---------------------------------------------------------- busy polling
def busy_poll_due(p: DatagramPath) -> bool:
    """Whether to poll the socket for the budget before sleeping (with the
    lock held, or on the loop). An answer is expected when the endpoint's
    one connection has data in flight (a request not yet answered, a reply
    not yet acknowledged) and nothing written waits to be sent: a bulk
    sender (data queued behind its window) is woken by its ACKs as before,
    and its loop keeps running its pacing timer on time. With no data in
    flight, or several connections
    (whose datagrams the poll would hold back, at most the budget), or
    with the budget at 0 or a single CPU (p._busy_ns, see
    AioEndpoint.__init__), it sleeps at once. After BUSY_MISSES_OFF polls
    in a row found nothing (a peer farther than the budget, or one that
    answers slowly), only one activation in BUSY_RETRY_EVERY polls, until
    one is answered again."""
    if not p._busy_ns or p.closed:
        return False
    conns = p.core._conns
    if len(conns) != 1:
        return False
    for conn in conns.values():
        snd = conn.snd
        nxt = snd.snd_nxt
        if nxt == snd.snd_una or nxt < snd.sndbuf.end:
            return False
    if p._busy_misses >= BUSY_MISSES_OFF:
        p._busy_skipped += 1
        if p._busy_skipped < BUSY_RETRY_EVERY:
            return False
        p._busy_skipped = 0
    return True


def busy_poll(p: DatagramPath, poll: Callable[[int], list[Any]]) -> list[Any]:
    """Ask `poll` (a select.poll's) with a zero timeout until it names a
    ready descriptor or the budget is spent; returns its last answer (empty:
    nothing in the budget). Called without the lock: nothing here reads the
    endpoint's protocol state.

    It keeps its CPU between checks (no sched_yield): a yield hands the CPU
    to any runnable task there for up to a whole time slice (4 ms and more
    beside a compiler, measured), far past the budget, where a poll that
    keeps it costs the CPU's other tasks at most the budget. An answer
    found after the budget ran out (the thread was preempted meanwhile)
    counts as a miss: that placement gains nothing from polling."""
    st = p.io_stats
    st.busy_polls += 1
    checks = 0
    end = _monotonic_ns() + p._busy_ns
    while True:
        ready = poll(0)
        checks += 1
        late = _monotonic_ns() >= end
        if ready:
            if late:
                p._busy_misses += 1
            else:
                st.busy_poll_hits += 1
                p._busy_misses = 0
            break
        if late:
            p._busy_misses += 1
            break
    st.busy_poll_checks += checks
    return ready


def busy_poll_wanted_on_loop(p: DatagramPath) -> bool:
    """At the end of a pass on the loop that sent: whether to queue
    busy_poll_on_loop. Not while application threads drive the endpoint
    (they poll in drive), nor with another endpoint on this loop, whose
    callbacks would wait; else as busy_poll_due says (asked here, in the
    pass, so that a pass that will not poll queues nothing: a bulk
    sender's many)."""
    d = p._drive
    if (d is not None and d.active) or p._timer.endpoints != 1:
        return False
    return busy_poll_due(p)


def busy_poll_on_loop(p: DatagramPath) -> None:
    """On the loop, queued by a pass that sent (busy_poll_wanted_on_loop):
    poll the socket for the budget, and hand what arrives to the reader's
    own receive path, as the loop's readiness callback would (the same
    counts and events; not counted in loop_calls, being no wake-up)."""
    p._busy_queued = False
    d = p._drive
    if p.closed or (d is not None and d.active):
        return
    poller = p._busy_poller
    if poller is None:
        import select

        poller = p._busy_poller = select.poll()
        poller.register(p._fd, select.POLLIN)
    if busy_poll(p, poller.poll) and not p.closed:
        if p.gro:
            receive_gro(p, p._rbufs, p._rview)
        else:
            p._receive_plain(p._rbuf, p._rview)


# ------------------------------------------------------------------- network
def batch_can_grow(p: DatagramPath) -> bool:
    """After a lone datagram was fed to the core: whether reading on before
    the pass may gather more for it, so that the FIONREAD check is worth
    its system call (about 7 % of a 64-byte round trip with both processes
    on one CPU; BENCHMARKS.md, "Where a round trip's wall-clock time goes").

    Not when the endpoint has one connection and all of its data is
    acknowledged: no datagram queued behind this one can then be an ACK
    that lets more of ours go (a bulk sender reads its ACKs one datagram
    at a time, and one pass per batch of them, not per ACK, is what this
    check is for), nor another connection's datagram (a server's passes
    serve every connection a readiness callback read). What is left for
    the peer to have queued is its own data, which a train sends as one
    GRO batch (always checked; so is a datagram of SPLIT_FROM bytes or
    more, and a socket without GRO, `_receive_plain`, checks after every
    lone datagram) and a request-response exchange does not send at all
    before it has our answer. If something is queued after all, the
    level-triggered loop calls again at once: one more pass, no datagram
    left unread."""
    conns = p.core._conns
    if len(conns) != 1:
        return True
    for conn in conns.values():
        snd = conn.snd
        return snd.snd_nxt != snd.snd_una or snd.unsent_and_unacked() != 0
    return True


def receive_gro(p: DatagramPath, bufs: list[bytearray], view: memoryview) -> None:
    """Read what is queued, each read possibly a GRO batch of one flow's
    same-sized datagrams, feed it to the core, then run a pass."""
    recvmsg_into = p.sock.recvmsg_into
    time = p.now
    st = p.io_stats
    datagrams = calls = 0
    fd, ioctl, queued, fionread = p._fd, p._ioctl, p._queued, p._fionread
    # After a read of one datagram of SPLIT_FROM bytes or more (path MTU
    # discovery's), the next reads go to `split`: the header into a small
    # buffer and the rest into a Receptacle, whose storage becomes the
    # payload's bytes object, kept by the core and read by the application
    # without a copy in user space (the kernel's is the only one). Anything
    # else read that way is put back together in the shared buffer.
    split = p._split
    parts = p._parts_passed_on
    large = p._large
    with p.lock:
        feed_batch = p.core.receive_batch
        first, passed_on = p._batch_passed_on
        while calls < RECV_CALLS and datagrams < RECV_BATCH:
            try:
                # (declared: compiled, a typed tuple is read by index, where
                # an untyped one was unpacked through an iterator per read)
                got: tuple[int, list[Any], int, Any]
                if large and split is not None:
                    got = recvmsg_into(split, GRO_CMSG_SPACE)
                else:
                    large = False
                    got = recvmsg_into(bufs, GRO_CMSG_SPACE)
                n, anc, flags, addr = got
            except (BlockingIOError, InterruptedError):
                if not calls:
                    p._read_error_queue()  # woken for an error, not for data
                break
            except OSError as exc:
                if p.closed:
                    return
                if not p._read_error_queue(True):
                    log.debug("recvmsg failed: %r", exc)
                    break
                continue
            calls += 1
            if flags & MSG_TRUNC:
                st.truncated += 1
                continue
            now = time()
            # UDP_GRO is the only control message this socket asks for.
            seg = int.from_bytes(anc[0][2], _NATIVE) if anc and anc[0][1] == UDP_GRO else 0
            if 0 < seg < n:
                st.gro_batches += 1
                datagrams += -(-n // seg)
            else:
                seg = 0
                datagrams += 1
            if large and split is not None:
                head = split[0]
                if not seg and n >= _SPLIT_MIN and head[0] == first and parts is not None:
                    payload, trailer = split[1].take(n - SHORT_SIZE, TRAILER_SIZE)
                    st.uncopied += 1
                    parts(head, payload, trailer, addr, now)  # (what feed_batch would do, without a copy)
                    large = n >= SPLIT_FROM
                    if (calls == 1 and ioctl is not None and not ioctl(fd, fionread, queued)
                            and queued == _NOTHING_QUEUED):
                        break
                    continue
                view[:min(n, SHORT_SIZE)] = head[:n]
                if n > SHORT_SIZE:
                    with memoryview(split[1]) as rest:
                        view[SHORT_SIZE:n] = rest[:n - SHORT_SIZE]
            large = not seg and n >= SPLIT_FROM and split is not None
            if passed_on is not None and n and view[0] == first:
                passed_on(view[:n], seg, addr, now)  # (what feed_batch would call, see __init__)
            else:
                feed_batch(view[:n], seg, addr, now)  # the core copies what it keeps
            if calls == 1 and ioctl is not None and (
                    (not seg and n < SPLIT_FROM and not batch_can_grow(p))
                    or (not ioctl(fd, fionread, queued) and queued == _NOTHING_QUEUED)):
                break
        p._large = large
        st.recv_calls += calls
        st.datagrams_received += datagrams
        after_receive(p)


def send(p: DatagramPath, out: Outgoing) -> None:
    backlog = p._backlog
    if backlog:
        backlog.extend(out)
        return
    if len(out) == 1 and p.gso and p._shortcut:
        # (Read as objects: a SourceTrain, which is no bytes, may be the one
        # item, and the compiled build checks a typed tuple as it unpacks.)
        items: list[Any] = out
        item: tuple[Any, Any] = items[0]  # (a typed tuple: read by index, not through an iterator)
        data, addr = item
        if type(data) is not Train and type(data) is not SourceTrain:
            # One datagram (a message, a reply, an ACK): what _transmit_gso
            # does with it, without its run machinery.
            size = len(data)
            big = size > p._safe
            if big is not p._df:
                p._set_df(big)
            try:
                p.sock.sendto(data, addr)
            except OSError as exc:
                outcome = p._send_failed(exc, size, 1, addr, data)
                if outcome is STOP or (outcome is FALLBACK and not p._transmit_plain_run(out, 0, 1)):
                    if p._backlog is None:
                        p._backlog = deque()
                    p._backlog.extend(out)
                return
            st = p.io_stats
            st.send_calls += 1
            st.datagrams_sent += 1
            return
    i = p._transmit(out)
    if i < len(out):
        if p._backlog is None:
            p._backlog = deque()
        p._backlog.extend(out[i:] if i else out)


def begin_drive(p: DatagramPath) -> bool:
    if p.closed:
        return False
    d = p._drive
    if d is None:
        d = p._drive = p._new_drive()
    if d.driving:
        return False
    d.driving = True
    d.after = math.nan
    if not d.active:
        d.active = True
        p._call_loop(p._reader_off)  # once, until the loop takes the socket back
    return True


def end_drive(p: DatagramPath) -> None:
    d = p._drive
    assert d is not None
    d.driving = False
    d.left_at = p.now()
    waiting = d.waiting
    if waiting:
        for cond in waiting:
            cond.notify()  # one of them drives next
    if p.closed:
        return
    preparer = p._preparer
    if preparer is not None and preparer.prepare_due:  # (a hello answered on the way out)
        p.prepare_soon_threadsafe()
    # A deadline before the loop's next look needs the loop sooner.
    deadline = d.after
    if deadline != deadline:  # (nan: the drive returned before its pass)
        deadline = p.core.get_timer()
    if deadline is not None:
        check_at = d.check_at
        if check_at is not None and deadline < check_at:
            p._call_loop(p._check_callers)


def drive(p: DatagramPath, until: float | None, ready: Callable[[], bool] | None) -> None:
    d = p._drive
    assert d is not None and d.driving
    if p.closed or (ready is not None and ready()):
        return
    ep = p.core
    preparer = p._preparer
    if preparer is not None and preparer.prepare_due:
        preparer.prepare()  # the next hello's work, while we wait
    deadline = ep.get_timer()
    if until is not None and (deadline is None or until < deadline):
        deadline = until
    # poll() counts whole milliseconds, as the event loops do: round up,
    # so the pass after it finds the deadline reached.
    if deadline is None:
        timeout = -1
        d.poll_until = math.inf
    else:
        timeout = max(0, math.ceil((deadline - p.now()) * 1000))
        d.poll_until = deadline
    spin = timeout != 0 and busy_poll_due(p)
    lock = p.lock
    saved = lock._release_save()  # (an RLock, held once or more)
    try:
        # (busy_poll's answer, else sleep: a wake-up ends either)
        ready_fds = busy_poll(p, d.poller.poll) if spin else []
        if not ready_fds:
            ready_fds = d.poller.poll(timeout)
    except InterruptedError:
        ready_fds = []
    finally:
        lock._acquire_restore(saved)
        d.poll_until = None
    if p.closed:
        return
    p.io_stats.caller_passes += 1
    readable = False
    for fd, _ in ready_fds:
        if fd == p._fd:
            readable = True
        else:
            d.drain()
    p._off_loop = True
    try:
        if readable:
            buf, view, bufs = _receive_buffer()  # this thread's
            if p.gro:
                receive_gro(p, bufs, view)
            else:
                p._receive_plain(buf, view)
        due = ep.get_timer()
        if due is not None and not p.closed:
            now = p.now()
            if due <= now:
                ep.handle_timer(now)
                p._timer_moved = True
                process(p)
                due = ep.get_timer()
        d.after = due  # (the caller holds the lock until end_drive: it stays so)
    finally:
        p._off_loop = False


# ---------------------------------------------------------------------- time
def arm_timer(p: DatagramPath) -> None:
    armed = p._timer_at
    if armed is not None and not p._dirty:
        # Every key in the core's lazy heap is at or before the deadline
        # it stands for: a timer armed no later than the smallest key
        # fires first (and re-arms), so the heap need not be settled now.
        heap = p._heap
        if heap and armed <= heap[0][0]:
            return
    deadline = p.core.get_timer()
    if deadline is None:
        return  # a stale armed timer is harmless: handle_timer finds nothing due
    if armed is not None:
        if armed <= deadline:
            return  # it fires first and re-arms for the later deadline
        p._timer.superseded()
    p._timer_at = deadline
    p._timer.arm(p, deadline)


def deadline_moved_off_loop(p: DatagramPath) -> None:
    """After a pass on an application thread that touched connections:
    make sure whoever runs the endpoint looks at its next deadline in time.
    The core's deadline is asked for only when someone waits on an
    earlier one (the driver's own pass needs none: it computes its next
    poll from the core afterwards)."""
    d = p._drive
    if d is not None and d.active:
        # (poll_until is None while the driver runs its own pass; check_at
        # None: _reader_off is on its way and arms the check)
        until = d.poll_until if d.driving else d.check_at
        if until is not None:
            deadline = p.core.get_timer()
            if deadline is not None and deadline < until:
                if d.driving:
                    d.wake()
                else:
                    p._call_loop(p._check_callers)
        return
    deadline = p.core.get_timer()
    if deadline is None:
        return
    armed = p._timer_at
    if armed is None or deadline < armed:
        p._timer_moved = True
        request_flush_threadsafe(p)
