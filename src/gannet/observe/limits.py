"""What held a sender back, and for how long (Linux's "chrono" accounting:
tcpi_busy_time, tcpi_rwnd_limited, tcpi_sndbuf_limited).

After every output pass of a connection the observer (observe/trace.py)
asks `classify` why it stopped sending, reading only the connection's
fields; a `LimitClock` adds the time since the previous pass to the reason
seen then. A reason holds until the next pass: the connection sends again
only when something changes (an ACK, a timer, a write), and each of those
runs a pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..core.states import SYNCHRONIZED, State
from ..core import timers

if TYPE_CHECKING:
    from ..core.connection import Connection

# Reasons, as classify returns them.
IDLE = "idle"  # not sending at all (handshake, closed, all sent and FIN queued)
APP = "app"  # nothing left to send: the application has not written more
RWND = "rwnd"  # the peer's receive window is full
CWND = "cwnd"  # the congestion window is full
PACING = "pacing"  # the pacer holds the next segment back
OTHER = "other"  # something to send, held by Nagle or sender SWS avoidance
REASONS = (APP, RWND, CWND, PACING, OTHER)
_TIME_WAIT, _ESTABLISHED, _CLOSED = State.TIME_WAIT, State.ESTABLISHED, State.CLOSED  # (Enum lookups are slow in 3.11)


def classify(conn: Connection) -> tuple[str, bool]:
    """(reason the sender is not sending more now, whether it is busy: data
    unacknowledged or waiting). Read after an output pass; it runs once per
    pass, so it reads fields rather than calling the connection's helpers
    (each read names the helper it stands for)."""
    state = conn.state
    if state is not _ESTABLISHED and (state not in SYNCHRONIZED or state is _TIME_WAIT):
        return IDLE, False
    end = conn.snd.sndbuf.end
    nxt = conn.snd_nxt
    una = conn.snd_una
    lost = conn.lost._starts
    if nxt >= end and not lost:
        busy = una < end
        if conn.snd.fin_queued or not conn.stats.bytes_sent:
            return IDLE, busy
        return APP, busy
    # A full window binds before the pacer: a paced sender whose window is
    # also full would wait for the window after the tokens came.
    mss = conn.snd.data_mss()
    cwnd_room = conn.snd.cwnd() - conn.snd.pipe()
    paced = conn._deadlines[timers.PACING] != timers.NEVER
    if lost:
        return (CWND if cwnd_room < mss else PACING if paced else OTHER), True
    want = end - nxt if end - nxt < mss else mss
    rwnd_room = una + conn.snd_wnd - nxt
    if rwnd_room < want and rwnd_room <= cwnd_room:
        return RWND, True
    if cwnd_room < want:
        return CWND, True
    return (PACING if paced else OTHER), True


class LimitClock:
    """Seconds per reason for one connection (see the module docstring)."""

    __slots__ = ("reason", "busy", "since", "_totals", "busy_time", "zero_windows", "_zero",
                 "shrunk", "shrunk_time")

    def __init__(self, now: float) -> None:
        self.reason = IDLE
        self.busy = False
        self.since = now
        self._totals = dict.fromkeys(REASONS, 0.0)
        self.busy_time = 0.0
        self.zero_windows = 0
        self._zero = False
        # Receiver-window limited while the peer offered less than half of
        # its largest window: its buffer was filling, so its application
        # reads slowly (a window that is merely small stays whole).
        self.shrunk = False
        self.shrunk_time = 0.0

    def update(self, conn: Connection, now: float) -> str:
        """After an output pass: account the time since the last one, take
        the new reason; returns it. When nothing changed (most passes: a
        request-response exchange stays application-limited) nothing is
        written: the time since `since` still counts for the same reason,
        busy and shrunk state, which is what `totals` adds."""
        reason, busy = classify(conn)
        wnd = conn.snd_wnd
        return self.take(reason, busy, reason is RWND and 2 * wnd < conn.max_snd_wnd,
                         wnd < conn.mss and reason is not IDLE, now)

    def take(self, reason: str, busy: bool, shrunk: bool, zero: bool, now: float) -> str:
        """`update` once the pass is classified: `shrunk`, receiver-window
        limited by a window under half the peer's largest; `zero`, a window
        under one segment."""
        if reason is self.reason and busy is self.busy and shrunk is self.shrunk and zero is self._zero:
            return reason
        elapsed = now - self.since
        if elapsed > 0:
            if self.reason is not IDLE:
                self._totals[self.reason] += elapsed
            if self.busy:
                self.busy_time += elapsed
            if self.shrunk:
                self.shrunk_time += elapsed
        self.since = now
        self.reason = reason
        self.busy = busy
        self.shrunk = shrunk
        if zero and not self._zero:
            self.zero_windows += 1
        self._zero = zero
        return reason

    def totals(self, now: float) -> dict[str, float]:
        """Seconds per reason and "busy", counting the current one up to `now`."""
        out = dict(self._totals)
        busy = self.busy_time
        elapsed = now - self.since
        if elapsed > 0:
            if self.reason is not IDLE:
                out[self.reason] += elapsed
            if self.busy:
                busy += elapsed
        out["busy"] = busy
        out["shrunk"] = self.shrunk_time + (elapsed if self.shrunk and elapsed > 0 else 0.0)
        return out


def account_pass(clocks: dict[Connection, LimitClock], other: Callable[[Connection, float], None],
                 conns: list[Connection], now: float) -> None:
    """An output pass's limit accounting (observe/trace.py's
    `EndpointObserver.after_pass`, this bound to its `clocks` and
    `_after_output`): each of `conns` whose clock is in `clocks` (a
    connection the observer traces without a qlog) and that is open takes
    its reason here; any other goes to `other` (its first pass, a qlog's
    events, the end). Here, compiled, rather than a Python call per
    connection and pass: under a request-response load of many connections
    (a tunnel's) that call cost as much as the accounting itself."""
    for conn in conns:
        clock = clocks.get(conn)
        if clock is not None and conn.state is not _CLOSED:
            clock.update(conn, now)
        else:
            other(conn, now)
