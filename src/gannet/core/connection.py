"""One Gannet connection: the RFC 9293 state machine, sans I/O.

Inputs: `on_segment(seg, now)` from the network, `handle_timer(now)` from
time, and `send` / `recv` / `shutdown_write` / `close` / `abort` from the
application. Output: `segments_to_send(now)`, `get_timer()` and events
appended to the deque the endpoint gave us.

Sequence positions are kept as unbounded integers ("absolute"); 32-bit wire
values are unwrapped on arrival (`unwrap`) and wrapped on departure. Sent and
received bytes are tracked as byte ranges (`RangeSet`); a retransmission
resends a byte range from the send buffer, not a stored packet.

Variable names follow RFC 9293 (snd_una, snd_nxt, snd_wnd, rcv_nxt, iss,
irs), RFC 6298 (srtt, rto) and RFC 6675 (pipe, recovery point).
"""

from __future__ import annotations

from typing import Final

import random
from bisect import bisect_right
from collections import deque
from collections.abc import Callable

from ..config import MODE_STEP, MODES, Config
from ..wire.datagram import DATA_OVERHEAD, MAX_DATA_OVERHEAD, MAX_WSCALE, SACK_ROOM
from ..wire.segment import ACK, FIN, PSH, RST, SEQ_MOD, SYN, Payload, Segment, SegmentRun, reset_for, unwrap
from . import cc as cc_registry
from .events import (
    AllDataAcknowledged,
    ConnectionEstablished,
    ConnectionTerminated,
    DataReceived,
    Event,
    SendSpaceAvailable,
    StreamEnded,
)
from .rangeset import EMPTY, RangeSet
from .receiver import INITIAL_RCV_SPACE, MASK32, RCV_SPACE_GAIN, TS_HZ, Receiver  # noqa: F401 (re-exported)
from .recovery import LossRecovery
from .rtt import RttEstimator
from .sendbuf import SendBuffer
from .states import CAN_RECEIVE, CAN_SEND, SYNCHRONIZED, TRANSITIONS, State
from .stats import ConnectionStats
from .timers import (
    CONNECT, DELACK, DISPATCH_ORDER, IDLE, KEEPALIVE, NAMES, NEVER, PACING, PERSIST, RACK, RTX, TIMEWAIT, unarmed,
)

# What segments_to_send builds: segments and runs, in wire order.
Outgoing = list[Segment | SegmentRun]

MAX_UDP_PAYLOAD: Final = 65507
# Datagram sizes PMTUD tries, smallest first: jumbo Ethernet, then the steps
# up to what loopback carries. A failed size ends the search (RFC 8899 5.3).
PMTU_PROBE_SIZES = (8972, 16384, 32768, 65000)
PMTU_MAX_PROBES: Final = 3  # MAX_PROBES (RFC 8899 5.1.2)
# Until a probe has passed, one waits for a congestion window of this many
# probes: on a 1,500-byte path the first size is lost, and in the first
# rounds (cwnd 15-60 kB) each lost probe took a third to a half of a round's
# data, held Startup back about three rounds, and its resends could be read
# as congestion. At 12x a lost probe costs at most a twelfth of a round
# (simulated 50 Mbit/s, 40 ms, 1,500-byte path: Startup then costs what it
# costs with PMTUD off, 4 ms more, instead of 105 ms more). A path whose
# window never gets that large (a small bandwidth-delay product: a LAN with
# jumbo frames) probes once this many probes' worth was delivered.
PMTU_FIRST_PROBE_CWND: Final = 12
PMTU_FIRST_PROBE_DELIVERED: Final = 48
_UNPACED: Final = float("inf")
CHALLENGE_ACK_LIMIT: Final = 100  # per second (RFC 5961 section 7)
# A run of segments is at most what one UDP GSO send carries: 64 KB in at
# most 64 datagrams (each with DATA_OVERHEAD bytes of framing).
RUN_BYTES: Final = 65000
RUN_SEGMENTS: Final = 64
# A sender that waited for pacing tokens and woke late keeps what it earned
# while late, up to this long at the pacing rate and this share of the RTT
# (see _pacing_budget).
PACING_CARRY: Final = 0.004
PACING_CARRY_RTT: Final = 0.125
RUN_ALONE: Final = 8192  # a segment this large is worth the run path by itself (PMTUD sizes)
MAX_ACK_HOLD: Final = 0.5  # longest a held handshake ACK waits (RFC 1122 4.2.3.2's delayed-ACK bound)


# States as module constants for the per-segment paths: `State.X` goes
# through EnumType.__getattr__'s lookup hook in Python 3.11 (about 0.1 us a
# read, several per segment).
_CLOSED, _LISTEN, _SYN_SENT = State.CLOSED, State.LISTEN, State.SYN_SENT
_ESTABLISHED, _TIME_WAIT = State.ESTABLISHED, State.TIME_WAIT
_HANDSHAKING: Final = frozenset({State.SYN_SENT, State.SYN_RECEIVED})
_UNSCALED_WINDOW_STATES = (State.SYN_SENT, State.SYN_RECEIVED, State.LISTEN)  # (a SYN's window)
_KEEPALIVE_STATES: Final = frozenset({State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_2})

_WSCALE: Final[dict[int, int]] = {}  # window size -> the shift _choose_wscale picks


_LADDERS: Final[dict[tuple[int, int], tuple[int, ...]]] = {}  # (datagram size, top) -> PMTUD ladder


def _pmtu_ladder(size: int, top: int) -> tuple[int, ...]:
    """The PMTU probe sizes to try above `size` up to `top`, smallest first:
    PMTU_PROBE_SIZES in that range, and `top` itself unless it is above them
    all. One shared tuple per pair (a connection no longer copies a list)."""
    ladder = _LADDERS.get((size, top))
    if ladder is None:
        steps = [s for s in PMTU_PROBE_SIZES if size < s <= top]
        if top > size and top not in steps and top < PMTU_PROBE_SIZES[-1]:
            steps.append(top)
            steps.sort()
        ladder = _LADDERS[(size, top)] = tuple(steps)
    return ladder


def _record_start(record: tuple) -> int:
    return record[0]


class Connection:
    # Every attribute __init__ sets has a slot: a connection holds about 80
    # of them, and a plain instance dict of that size costs some 3 KB per
    # connection (10,000 idle connections: 30 MB). "__dict__" stays, so that
    # attributes set elsewhere (the class-level defaults below) still work;
    # tests/core/test_connection_slots.py keeps this list complete.
    __slots__ = (
        "config", "rng", "remote_addr", "local_cid", "remote_cid", "passive", "state",
        "error", "stats", "created", "_events", "_touch", "iss", "snd_una", "snd_nxt",
        "snd_wnd", "max_snd_wnd", "snd_wl1", "snd_wl2", "snd_wscale", "_sndbuf",
        "_fin_queued", "_fin_sent", "_want_send_space",
        "_all_acked_reported", "loss", "_retries",
        "_persist_probes", "_sent_log", "delivered", "_delivered_time",
        "_app_limited_until", "_pacing_tokens", "_pacing_time", "_pacing_due",
        "_ever_retransmitted", "peer_mss", "mss", "max_datagram_size",
        "_pmtu_ladder", "_pmtu_probe", "_pmtu_failures", "cc", "rtt", "sack_ok", "ts_ok",
        "mode", 
        
        "_ts_offset", "last_received",
        "_keepalive_probes",
        "_challenge_window", "_challenge_count", "_out", "_terminated",
        
        "_now_hint", "_tsval_at", "_tsval", "rcv_wscale_ok", "_keepalive_sent", "_first_sent_time",
        "hold_handshake_ack", "_ep_deadline", "_ep_key", "_deadlines", "rcv", "retry_token",
        "__dict__",
    )

    def __init__(
        self,
        config: Config,
        rng: random.Random,
        now: float,
        *,
        remote_addr: object,
        local_cid: int,
        events: deque[Event] | None = None,
        touch: Callable[[Connection], None] | None = None,
        iss: int | None = None,
    ) -> None:
        self.config = config
        self.rng = rng
        self.remote_addr = remote_addr
        self.local_cid = local_cid
        self.remote_cid = 0  # learned from the peer's SYN or SYN-ACK
        self.passive = False
        # Active open: let the application's first data carry the handshake's
        # final ACK instead of sending it alone (see _on_syn_sent). An adapter
        # that sets this calls release_ack() if nothing is written soon.
        self.hold_handshake_ack = False
        self.retry_token: bytes | None = None  # from a listener's Retry; our SYNs echo it
        self.state = State.CLOSED
        self.error: BaseException | None = None
        self.stats = ConnectionStats()
        self.created = now
        self._events: deque[Event] = events if events is not None else deque()
        self._touch = touch or (lambda conn: None)

        # --- send side ---------------------------------------------------
        # RFC 9293 3.4.1 asks for an unpredictable ISN; a seeded rng in tests.
        self.iss = rng.getrandbits(32) if iss is None else iss
        self.snd_una = self.iss
        self.snd_nxt = self.iss  # next sequence position to send new data/SYN/FIN at
        self.snd_wnd = config.mss  # until the peer tells us
        self.max_snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.snd_wscale = 0  # the peer's shift (applied to windows it sends)
        self._sndbuf = SendBuffer(self.iss + 1)
        self._fin_queued = False  # application finished writing
        self._fin_sent = False
        self._want_send_space = False
        self._all_acked_reported = False
        self._retries = 0  # consecutive timeouts without progress
        self._persist_probes = 0
        # (start, end, time) of each first transmission, in send order: RTT
        # samples come from the newest one a cumulative ACK covers, unless any
        # byte that ACK covers was ever resent (Karn's rule, RFC 6298 3).
        # Each record also keeps what had been delivered when it was sent, so
        # its ACK yields a delivery-rate sample (the BBR rate estimator's idea).
        # Both queues are made on first use and dropped when empty: an empty
        # deque still costs 760 bytes, and most of 10,000 idle connections
        # have nothing in flight and nothing unread.
        self._sent_log: deque[tuple[int, int, float, int, float, bool, float]] | None = None
        self.delivered = 0  # bytes delivered to the peer so far (ACKed or SACKed)
        self._delivered_time = now
        self._first_sent_time = now  # send time of the newest segment a rate sample came from
        self._app_limited_until = 0  # delivered count until which samples are app-limited
        self._pacing_tokens = 0.0
        self._pacing_time = now
        self._pacing_due: float | None = None  # the sender waits for tokens due then (_pace_wait)
        # Bytes ever resent, for Karn's rule and the PMTU probe's verdict
        # (the shared read-only EMPTY until the first resend, see _writable).
        self._ever_retransmitted = EMPTY
        self.peer_mss = 536  # RFC 9293 default until the SYN says otherwise
        self.mss = min(config.mss, config.max_datagram_size - DATA_OVERHEAD)
        self.max_datagram_size = config.max_datagram_size  # what we send now
        # PMTUD (RFC 8899): sizes still to try (a tuple shared by the
        # connections with the same limits), the probe in flight, failures.
        self._pmtu_ladder: tuple[int, ...] = ()
        self._pmtu_probe: tuple[int, int, int] | None = None  # (start, end, datagram size)
        self._pmtu_failures = 0
        self.cc = cc_registry.create(config.congestion_control, self.mss, config.initial_window)
        self.rtt = RttEstimator(config.timeout, config.min_rto, config.max_rto)
        # Loss recovery (scoreboard, NewReno, RACK-TLP, RTO marking): its own
        # object, told the sender's positions on every call (recovery.py).
        self.loss = LossRecovery(config, self.rtt, self.mss)
        self.sack_ok = False
        self.ts_ok = False
        self.mode = MODES[config.mode]

        self._now_hint = now  # time of the input or output call in progress (for tsval)
        self._tsval_at = -1.0  # the time _tsval was computed for
        self._tsval = 0
        self.rcv_wscale_ok = False  # peer offered window scaling in its SYN
        self._keepalive_sent = 0.0
        self._ts_offset = rng.getrandbits(32)

        # --- liveness ----------------------------------------------------------
        self.last_received = now
        self._keepalive_probes = 0
        # Every timer's deadline, NEVER when unarmed (timers.py).
        self._deadlines = unarmed()

        # --- receive side: RCV.*, reassembly, the offered window (receiver.py)
        self.rcv = Receiver(config, self.stats, self._events, self, self._deadlines,
                            self._choose_wscale(config.window_size) if config.window_scaling else 0, now)
        self._challenge_window = 0
        self._challenge_count = 0
        # Control segments queued by input processing: a list only while it
        # holds any (see _queued).
        self._out: list[Segment | SegmentRun] | None = None
        self._terminated = False
        # The endpoint's timer heap: this connection's deadline, and the key
        # of its live heap entry (core/endpoint.py; None while it has none).
        self._ep_deadline: float | None = None
        self._ep_key: float | None = None

    # ------------------------------------------------------------------ API
    @property
    def readable_bytes(self) -> int:
        return self.rcv.buf_len

    @property
    def rcv_nxt(self) -> int:
        """RCV.NXT (rcv.rcv_nxt)."""
        return self.rcv.rcv_nxt

    @property
    def irs(self) -> int:
        return self.rcv.irs

    @property
    def rcv_wscale(self) -> int:
        """Our window scale shift (RFC 7323)."""
        return self.rcv.rcv_wscale

    @property
    def eof(self) -> bool:
        """The peer's FIN has been received in order."""
        return self.rcv.eof

    @property
    def send_space(self) -> int:
        if self.state not in CAN_SEND and self.state not in _HANDSHAKING:
            return 0
        return max(0, self._send_buffer_limit() - self._unsent_and_unacked())

    def _send_buffer_limit(self) -> int:
        """Bytes accepted ahead of acknowledgment: with autotuning, twice what
        the congestion and peer's windows let fly (Linux sizes its send
        buffer the same way), at least send_buffer_size."""
        cfg = self.config
        if not cfg.autotune:
            return cfg.send_buffer_size
        want = 2 * min(self.cc.cwnd, max(self.max_snd_wnd, self.snd_wnd))
        if want <= cfg.send_buffer_size:
            return cfg.send_buffer_size
        return min(want, max(cfg.window_size, cfg.send_buffer_size))

    @property
    def established(self) -> bool:
        return self.state in SYNCHRONIZED

    @property
    def srtt(self) -> float | None:
        return self.rtt.srtt

    @property
    def bytes_in_flight(self) -> int:
        return self._pipe()

    @property
    def sacked(self) -> RangeSet:
        """The SACK scoreboard above SND.UNA (loss.sacked)."""
        return self.loss.sacked

    @property
    def lost(self) -> RangeSet:
        """Ranges declared lost and not yet resent (loss.lost)."""
        return self.loss.lost

    @property
    def in_recovery(self) -> bool:
        return self.loss.in_recovery

    @property
    def recovery_point(self) -> int:
        return self.loss.recovery_point

    def connect(self, now: float) -> None:
        """Active open: send a SYN (RFC 9293 3.10.1)."""
        self._transition("connect")
        self._deadlines[CONNECT] = now + self.config.connect_timeout
        self._send_syn(now)

    def on_retry(self, token: bytes, now: float) -> bool:
        """A listener under pressure answered our SYN with a stateless Retry
        (as QUIC's, RFC 9000 8.1.2): send the SYN again at once, echoing its
        token, which proves we receive at our address. Taken once per
        connection and only in SYN-SENT; False when ignored."""
        if self.state is not _SYN_SENT or self.retry_token is not None:
            return False
        self.retry_token = token
        self.stats.retransmits += 1  # a SYN sent again: no handshake RTT sample (Karn)
        self._send_syn(now)
        return True

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue bytes for sending; returns how many were taken (maybe fewer)."""
        if self.error is not None:
            raise copy_error(self.error)
        if self._fin_queued or self.state not in CAN_SEND and self.state not in _HANDSHAKING:
            raise BrokenPipeError("connection is closed for sending")
        sndbuf = self._sndbuf
        start = sndbuf.start
        snd_una = self.snd_una
        room = self._send_buffer_limit() - (sndbuf.end - (snd_una if snd_una > start else start))  # (_unsent_and_unacked)
        size = len(data)
        n = size if size <= room else (room if room > 0 else 0)
        if n:
            sndbuf.append(memoryview(data)[:n] if n < size else data)
            self._all_acked_reported = False
            self._touch(self)
        if n < size:
            self._want_send_space = True
        return n

    def recv(self, max_bytes: int) -> bytes:
        """Take up to `max_bytes` in-order bytes (b"" if none are ready)."""
        out = self.rcv.read(max_bytes)
        if out:
            self._after_read()
        return out

    def recv_chunk(self) -> bytes:
        """The oldest received piece of the stream, as it arrived, without
        copying it (b"" if none is ready): for adapters that keep their own
        buffer and would only copy a joined `recv` again."""
        chunk = self.rcv.read_chunk()
        if chunk:
            self._after_read()
        return chunk

    def _after_read(self) -> None:
        """The application read: autotune the window, and tell the sender
        if it opened enough."""
        if self.config.autotune:
            self.rcv.space_adjust(self._now_hint, self.rtt.srtt)
        self._maybe_window_update()

    def shutdown_write(self, now: float) -> None:
        """Half-close: a FIN follows the data already queued."""
        if self._fin_queued or self.state in (State.CLOSED, State.LISTEN):
            return
        if self.state == State.SYN_SENT:
            self._terminate(None)
            return
        self._fin_queued = True
        self._all_acked_reported = False
        if self.state in (State.ESTABLISHED, State.SYN_RECEIVED):
            self._transition("close")
        elif self.state == State.CLOSE_WAIT:
            self._transition("close")
        self._touch(self)

    def close(self, now: float) -> None:
        """Graceful close of both directions (data still queued is delivered)."""
        self.shutdown_write(now)

    def release_ack(self) -> bool:
        """Send a delayed (or held handshake) ACK on the next output pass
        instead of waiting for its timer; False if no ACK is owed."""
        if self._deadlines[DELACK] == NEVER or self.state not in SYNCHRONIZED:
            return False
        self.rcv.ack_now = True
        self._touch(self)
        return True

    def abort(self, now: float) -> None:
        """Send RST and forget the connection (RFC 9293 3.10.5 ABORT)."""
        if self.state in SYNCHRONIZED or self.state == State.SYN_RECEIVED:
            self._queued().append(self._make(self.snd_nxt, RST | ACK))
        self._terminate(None)

    # --------------------------------------------------------------- timers
    def get_timer(self) -> float | None:
        """The earliest armed deadline (None: no timer is armed)."""
        best = min(self._sync_deadlines())
        return None if best == NEVER else best

    def deadline(self, name: str) -> float | None:
        """The deadline of the timer `name` (timers.NAMES), None if unarmed."""
        at = self._sync_deadlines()[NAMES.index(name)]
        return None if at == NEVER else at

    def _sync_deadlines(self) -> list[float]:
        """The timer table, with the entries kept elsewhere copied in."""
        at = self._deadlines
        d = self.loss.rack.deadline
        at[RACK] = NEVER if d is None else d
        idle = self.config.idle_timeout
        at[IDLE] = self.last_received + idle if idle is not None and self.state in SYNCHRONIZED else NEVER
        return at

    def handle_timer(self, now: float) -> None:
        """Run the handler of every due timer, in DISPATCH_ORDER; a due
        timer is disarmed before its handler runs (which may arm it again)."""
        if self.state is _CLOSED:
            return
        self._now_hint = now
        at = self._sync_deadlines()
        for which in DISPATCH_ORDER:
            if at[which] <= now:
                at[which] = NEVER
                _TIMER_HANDLERS[which](self, now)
                if self.state is _CLOSED:
                    return

    def _on_timewait(self, now: float) -> None:
        self._transition("timeout 2MSL")
        self._terminate(None)

    def _on_connect_timeout(self, now: float) -> None:
        self._terminate(TimeoutError("connection attempt timed out"))

    def _on_idle(self, now: float) -> None:
        self._terminate(TimeoutError(f"no packets from the peer for {self.config.idle_timeout:g} s"))

    def _on_pacing(self, now: float) -> None:
        self._touch(self)  # the pacer allows more: the output path runs next

    def _on_delack(self, now: float) -> None:
        self.rcv.ack_now = True

    # --------------------------------------------------------------- input
    def on_segment(self, seg: Segment, now: float) -> None:
        """Process one arriving segment (RFC 9293 3.10.7, SEGMENT ARRIVES)."""
        self.stats.segments_received += 1
        self._now_hint = now
        state = self.state
        if state is _CLOSED:
            return
        if state is _LISTEN:
            self._on_listen(seg, now)
        elif state is _SYN_SENT:
            self._on_syn_sent(seg, now)
        else:
            self._on_synchronized(seg, now)
        self._touch(self)

    def on_data_run(self, seq32: int, ack32: int, wnd: int, tsval_first: int, tsval_last: int,
                    data: Payload, count: int, last_len: int, now: float) -> bool:
        """In-order data segments that continue each other, in one step.

        The fast path for bulk data: segments carrying the next expected
        bytes, the ACK and window we already have (so there is nothing to
        learn from their ACK fields), and fresh timestamps, in ESTABLISHED
        with no out-of-order data held: `count` segments whose payloads,
        joined, are `data`, the last one `last_len` bytes long. Processing them one by one with
        `on_segment` would reach the same state; here it costs one check and
        one copy. Returns False, having changed nothing, when any condition
        does not hold: the caller then feeds the segments one by one.
        """
        if self.state is not _ESTABLISHED or not self.ts_ok or self.rcv.ooo or self.rcv.fin_rcv is not None:
            return False
        rcv_nxt = self.rcv.rcv_nxt
        if (
            seq32 != rcv_nxt & MASK32
            or ack32 != self.snd_una & MASK32
            or wnd << self.snd_wscale != self.snd_wnd
        ):
            return False
        if self.rcv.ts_older(tsval_first) or self.rcv.ts_older(tsval_last):
            return False  # older than TS.Recent: PAWS decides, one by one
        end = rcv_nxt + len(data)
        if end > self.rcv.rcv_adv:
            return False
        self.stats.segments_received += count
        self.stats.fast_path_segments += count
        self._now_hint = now
        self._peer_alive(now)
        self.rcv.update_ts_recent(tsval_last)
        # Their ACK and window are what we hold: only SND.WL1/WL2 can move.
        self._update_window(end - last_len, self.snd_una, self.snd_wnd)
        self.rcv.deliver(data, count)
        self.rcv.schedule_ack(now)
        self._touch(self)
        return True

    def on_predicted(self, seq32: int, ack32: int, wnd: int, tsval: int, payload: Payload, now: float) -> bool:
        """Header prediction (RFC 9293 3.10.7.4's note, Van Jacobson's): the
        segment a request-response exchange or a bulk sender's ACK stream is
        made of, in one short step.

        The segment is an ACK (PSH allowed, no SYN/FIN/RST) whose only option
        is timestamps (the caller checked that much), in ESTABLISHED, at
        RCV.NXT, not older than TS.Recent, that newly acknowledges data
        (SND.UNA < SEG.ACK <= SND.NXT) and carries in-window data or none,
        while nothing is SACKed, lost or held out of order, no recovery is
        on and no FIN has been sent or received. `on_segment` would reach
        exactly the same state (tests/core/test_header_prediction.py runs
        both); this skips the checks that cannot fire and the calls that
        would do nothing. Returns False, having changed nothing, when any
        condition does not hold: the caller then uses `on_segment`.
        """
        if (
            self.state is not _ESTABLISHED
            or not self.ts_ok
            or self._fin_sent
            or not self.loss.quiet()
        ):
            return False
        rcv_nxt = self.rcv.rcv_nxt
        if seq32 != rcv_nxt & MASK32:
            return False
        if self.rcv.ts_older(tsval):
            return False  # older than TS.Recent: PAWS decides
        snd_una = self.snd_una
        acked = (ack32 - snd_una) & MASK32
        if not acked or acked > self.snd_nxt - snd_una:
            return False  # no new ACK (on_data_run's case), or beyond SND.NXT
        n = len(payload)
        if n and (self.rcv.ooo or self.rcv.fin_rcv is not None or rcv_nxt + n > self.rcv.rcv_adv):
            return False
        # What _on_synchronized and _process_ack do for this segment, less
        # the checks that cannot fire: the same helpers, in the same order.
        self.stats.segments_received += 1
        self._now_hint = now
        self._peer_alive(now)
        self.rcv.update_ts_recent(tsval)
        ack = snd_una + acked
        self._update_window(rcv_nxt, ack, wnd << self.snd_wscale)
        self._ack_new_data(None, ack, 0, self._pipe(), now)
        self._after_ack(now)
        if n and self.state in CAN_RECEIVE:
            self.rcv.deliver(payload, 1)
            self.rcv.schedule_ack(now)
        self._touch(self)
        return True

    def accept_syn(self, seg: Segment, now: float) -> None:
        """Passive open: take the SYN that the endpoint matched to a listener."""
        self.passive = True
        self.state = State.LISTEN
        self.on_segment(seg, now)

    def _on_listen(self, seg: Segment, now: float) -> None:
        flags = seg.flags
        if flags & RST:
            return
        if flags & ACK:
            self._send_reset_for(seg)
            return
        if not flags & SYN:
            return
        self._take_syn(seg, now)
        self.snd_wnd = seg.wnd  # never scaled in a SYN (RFC 7323 2.2)
        self.snd_wl1, self.snd_wl2 = self.rcv.rcv_nxt - 1, self.iss
        self._transition("rcv SYN")
        self._send_syn(now)

    def _on_syn_sent(self, seg: Segment, now: float) -> None:
        flags = seg.flags
        ack = unwrap(seg.ack, self.snd_nxt) if flags & ACK else None
        if ack is not None and (ack <= self.iss or ack > self.snd_nxt):
            if not flags & RST:
                self._send_reset_for(seg)
            self.stats.dropped_segments += 1
            return
        if flags & RST:
            if ack is not None:
                self._terminate(ConnectionRefusedError("connection refused by peer"))
            return
        if not flags & SYN:
            return
        self._take_syn(seg, now)
        if ack is not None:
            self._ack_of_syn(seq=self.rcv.rcv_nxt - 1, ack=ack, wnd=seg.wnd, now=now)  # (a SYN's window: unscaled)
            self._transition("rcv SYN,ACK")
            self._on_established(now)
            if self.hold_handshake_ack:
                # The first data segment carries the ACK (Linux, too, delays
                # it when a write is pending): one datagram less each way for
                # a client that speaks first. The adapter releases it a loop
                # turn later if nothing was written; at the latest it goes as
                # a delayed ACK would, within an RTO and 500 ms.
                self._deadlines[DELACK] = now + min(self.rtt.current_rto(), MAX_ACK_HOLD)
            else:
                self.rcv.ack_now = True
        else:
            # Simultaneous open (RFC 9293 figure 7): answer with SYN,ACK.
            self.snd_wnd = seg.wnd
            self.snd_wl1, self.snd_wl2 = self.rcv.rcv_nxt - 1, self.iss
            self._transition("rcv SYN (simultaneous open)")
            self._deadlines[RTX] = NEVER
            self._send_syn(now)

    def _on_synchronized(self, seg: Segment, now: float) -> None:
        flags = seg.flags
        seq = unwrap(seg.seq, self.rcv.rcv_nxt)
        payload = seg.payload
        seg_len = len(payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        self._peer_alive(now)  # any segment from the peer, even a duplicate

        if self.state == State.SYN_RECEIVED and flags & SYN and seq == self.rcv.irs:
            if not flags & ACK:
                # A retransmitted SYN: our SYN,ACK was lost, so send it again.
                self._send_syn(now)
                return
            # Simultaneous open (RFC 9293 figure 8): the peer's SYN,ACK repeats
            # a SYN we already have; what is new is its ACK.
            flags &= ~SYN
            seq += 1
            seg_len -= 1

        # PAWS (RFC 7323 5.3), with a tolerance for reordering.
        if self.ts_ok and seg.tsval is not None and not flags & RST and self.rcv.paws_rejects(seg.tsval):
            self.stats.dropped_segments += 1
            self.rcv.ack_now = True
            return

        # RFC 7323 4.3: a segment covering Last.ACK.sent (here rcv_nxt)
        # refreshes TS.Recent even when it is a duplicate, so the ACK it
        # provokes echoes this segment's time and not an older one.
        if seg.tsval is not None and seq <= self.rcv.rcv_nxt <= seq + seg_len:
            self.rcv.update_ts_recent(seg.tsval)

        # 1. Sequence number check.
        if not self.rcv.acceptable(seq, seg_len):
            if not flags & RST:
                self.rcv.ack_now = True  # RFC 9293: send an ACK and drop
                if seg_len and seq + seg_len <= self.rcv.rcv_nxt:
                    self.stats.duplicate_segments += 1
            self.stats.dropped_segments += 1
            if self.state == State.TIME_WAIT and flags & FIN:
                self._deadlines[TIMEWAIT] = now + 2 * self.config.msl
            return

        # 2. RST (RFC 5961 3.2: exact match resets, in-window gets a challenge).
        if flags & RST:
            if seq == self.rcv.rcv_nxt:
                if self.state == State.SYN_RECEIVED and self.passive:
                    self._terminate(None)  # back to LISTEN: the listener forgets it
                elif self.state in (State.CLOSING, State.LAST_ACK, State.TIME_WAIT):
                    self._terminate(None)
                else:
                    self._terminate(ConnectionResetError("connection reset by peer"))
            else:
                self._challenge_ack(now)
            return

        # 4. SYN in a synchronized state: challenge ACK (RFC 5961 4.2).
        if flags & SYN:
            self._challenge_ack(now)
            return

        # 5. ACK field.
        if not flags & ACK:
            self.stats.dropped_segments += 1
            return
        ack = unwrap(seg.ack, self.snd_una)
        if self.state == State.SYN_RECEIVED:
            if self.snd_una < ack <= self.snd_nxt:
                self._ack_of_syn(seq=seq, ack=ack, wnd=seg.wnd << self.snd_wscale, now=now)
                self._transition("rcv ACK of SYN")
                self._on_established(now)
            else:
                self._send_reset_for(seg)
                return
        elif not self._process_ack(seg, seq, ack, now):
            return
        if self.state == State.CLOSED:
            return

        # TIME-WAIT: the only thing that can arrive is a retransmitted FIN.
        if self.state == State.TIME_WAIT:
            if flags & FIN:
                self.rcv.ack_now = True
                self._deadlines[TIMEWAIT] = now + 2 * self.config.msl
            return

        # 7. Segment text, 8. FIN.
        if (payload or flags & FIN) and self.state in CAN_RECEIVE:
            self._receive_data(seq, payload, bool(flags & FIN), now)
        elif payload:
            # Data after the peer's FIN is a protocol violation; just ACK.
            self.rcv.ack_now = True

    def _process_ack(self, seg: Segment, seq: int, ack: int, now: float) -> bool:
        """ACK processing in synchronized states; False means drop the segment."""
        snd_una = self.snd_una
        if ack > self.snd_nxt:
            self.rcv.ack_now = True  # acks something not yet sent (RFC 9293)
            self.stats.dropped_segments += 1
            return False
        if ack < snd_una - max(self.max_snd_wnd, self.mss):
            self._challenge_ack(now)  # RFC 5961 5.2: too old to be believable
            return False

        window_changed = self._update_window(seq, ack, seg.wnd << self.snd_wscale)
        newly_sacked = self._process_sack(seg, ack) if self.sack_ok and seg.sack else 0
        in_flight_before = self._pipe()
        if ack > snd_una:
            self._ack_new_data(seg, ack, newly_sacked, in_flight_before, now)
        else:
            if newly_sacked:
                self._on_delivered(newly_sacked, now)
                rtt = self._sack_rate_sample(seg, now)
                if not self.loss.in_recovery or self.cc.acks_in_recovery:
                    self.cc.on_ack(now, newly_sacked, in_flight_before, rtt)
            # RFC 5681 duplicate ACK: no data, same ack, same window, data outstanding.
            if (
                ack == snd_una
                and not seg.payload
                and not seg.flags & (SYN | FIN)
                and not window_changed
                and self.snd_nxt > snd_una
            ):
                self.loss.on_duplicate_ack()
        self._after_ack(now)
        return True

    def _update_window(self, seq: int, ack: int, wnd: int) -> bool:
        """RFC 9293 3.10.7.4: take SEG.WND (scaled) from a segment no older
        than the last one that set it (the SND.WL1/WL2 rule). A window that
        opens from zero ends the persist probing. True if the window changed."""
        if self.snd_wl1 < seq or (self.snd_wl1 == seq and self.snd_wl2 <= ack):
            old = self.snd_wnd
            if wnd and not old:
                self._deadlines[PERSIST] = NEVER
                self._persist_probes = 0
            self.snd_wnd = wnd
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            if wnd > self.max_snd_wnd:
                self.max_snd_wnd = wnd
            return wnd != old
        return False

    def _ack_of_syn(self, seq: int, ack: int, wnd: int, now: float) -> None:
        """Our SYN acknowledged (RFC 9293 3.10.7.3 and 3.10.7.4, SYN-RECEIVED):
        time it (Karn), take the window, stop the retransmission timer."""
        self._rtt_sample_from(None, now, handshake=True)
        self.snd_una = ack
        self._deadlines[RTX] = NEVER
        self._retries = 0
        self.snd_wnd = wnd
        self.snd_wl1, self.snd_wl2 = seq, ack
        if wnd > self.max_snd_wnd:
            self.max_snd_wnd = wnd

    def _ack_new_data(self, seg: Segment | None, ack: int, newly_sacked: int, in_flight_before: int,
                      now: float) -> None:
        """SND.UNA < SEG.ACK <= SND.NXT (RFC 9293 3.10.7.4, RFC 5681, RFC 6298):
        drop what is acknowledged from the scoreboard and the send buffer,
        count it delivered, time it, tell congestion control, restart the
        RTO. `seg` (None on header prediction: no SACK blocks) is the ACK."""
        snd_una = self.snd_una
        sndbuf = self._sndbuf
        data_end = sndbuf.end
        acked_data = (ack if ack < data_end else data_end) - (snd_una if snd_una > sndbuf.start else sndbuf.start)
        loss = self.loss
        removed_sacked = loss.on_cumulative_ack(ack)
        self.snd_una = ack
        sndbuf.trim(ack if ack < data_end else data_end)
        self._retries = 0
        # Forward progress ends RTO backoff (as Linux does), so a lossy
        # path does not keep paying for timeouts that are already over.
        self.rtt.backoff = 0
        delivered = (acked_data if acked_data > 0 else 0) - removed_sacked + newly_sacked
        self._on_delivered(delivered, now)
        # Time only ACKs that newly covered data sent once and not SACKed
        # earlier: an ACK that jumps over old SACKed data is late by design.
        self._rtt_sample_from(seg, now, acked_to=ack, clean=not removed_sacked)
        if self._ever_retransmitted._starts:
            self._ever_retransmitted.discard_below(ack)
        recovering = loss.in_recovery
        if recovering and loss.on_recovery_ack(ack, data_end):
            self.cc.on_recovery_end(now)
        if not recovering or self.cc.acks_in_recovery:
            self.cc.on_ack(now, delivered, in_flight_before, self.rtt.latest_rtt)
        self._restart_rto(now)
        self._after_ack_progress()

    def _after_ack(self, now: float) -> None:
        """What every acceptable ACK ends with: loss detection, the PMTU
        probe's verdict, and whether our FIN is now acknowledged."""
        self._detect_losses(now)
        if self._pmtu_probe is not None:
            self._pmtu_check()
        if self._fin_sent and self.snd_una >= self.snd_nxt and self._fin_queued:
            self._on_fin_acked(now)

    def _process_sack(self, seg: Segment, ack: int) -> int:
        """Add the peer's SACK blocks to the scoreboard; returns bytes newly SACKed."""
        new = 0
        lo = max(ack, self.snd_una)
        hi = min(self.snd_nxt, self._data_end())
        for left32, right32 in seg.sack:
            left = unwrap(left32, lo)
            right = unwrap(right32, lo)
            left, right = max(left, lo), min(right, hi)
            if left < right:
                new += self.loss.on_sack_block(left, right)
        return new

    def _detect_losses(self, now: float) -> None:
        """Loss detection (LossRecovery.detect_losses) and what follows it."""
        if self.loss.detect_losses(now, self.snd_una, self.snd_nxt, self._sndbuf.end, self._deadlines[RTX]):
            self._on_newly_lost(now)

    def _on_newly_lost(self, now: float) -> None:
        """_detect_losses found something newly lost: a PMTU probe's loss
        ends the probe; otherwise recovery begins (once per window)."""
        probe = self._pmtu_probe
        lost = self.loss.lost
        if probe is not None and lost.overlap(probe[0], probe[1]):
            self._pmtu_failed()
            if probe[0] <= lost.first()[0] and lost.last()[1] <= probe[1]:
                # Only the oversized probe was lost: that says the path's MTU
                # is smaller, not that it is congested (RFC 8899 4.1).
                return
        if self.loss.enter_recovery(self.snd_una, self.snd_nxt):
            self.stats.fast_recoveries += 1
            self.cc.on_congestion_event(now, self._outstanding())

    def _after_ack_progress(self) -> None:
        if self._want_send_space and self.send_space >= self.config.send_buffer_size // 4:
            self._want_send_space = False
            self._events.append(SendSpaceAvailable(self))
        if (
            not self._all_acked_reported
            and self.snd_una >= self._data_end()
            and (self._sndbuf or self._fin_queued)
        ):
            if not self._fin_queued or self.snd_una > self._data_end():
                self._all_acked_reported = True
                self._events.append(AllDataAcknowledged(self))

    def _receive_data(self, seq: int, payload: Payload, fin: bool, now: float) -> None:
        """Segment text and FIN (receiver.py), then the FIN's transition."""
        if self.rcv.receive(seq, payload, fin, now):
            self._on_fin(now)

    def _on_fin(self, now: float) -> None:
        """RFC 9293 3.10.7.4 eighth step: the peer's FIN is in order."""
        self.rcv.on_fin()
        self._events.append(StreamEnded(self))
        if self.state in (State.SYN_RECEIVED, State.ESTABLISHED):
            self._transition("rcv FIN")
        elif self.state == State.FIN_WAIT_1:
            if self._fin_sent and self.snd_una >= self.snd_nxt:
                self._transition("rcv FIN,ACK of FIN")
                self._enter_time_wait(now)
            else:
                self._transition("rcv FIN")
        elif self.state == State.FIN_WAIT_2:
            self._transition("rcv FIN")
            self._enter_time_wait(now)

    def _on_fin_acked(self, now: float) -> None:
        if self.state == State.FIN_WAIT_1:
            self._transition("rcv ACK of FIN")
        elif self.state == State.CLOSING:
            self._transition("rcv ACK of FIN")
            self._enter_time_wait(now)
        elif self.state == State.LAST_ACK:
            self._transition("rcv ACK of FIN")
            self._terminate(None)

    def _enter_time_wait(self, now: float) -> None:
        self._deadlines[RTX] = NEVER
        self._deadlines[PERSIST] = NEVER
        self._deadlines[KEEPALIVE] = NEVER
        self._deadlines[TIMEWAIT] = now + 2 * self.config.msl

    def _on_established(self, now: float) -> None:
        self._deadlines[CONNECT] = NEVER
        # The peer's MSS and max packet size bound what we put in a datagram.
        mss = min(self.mss, self.peer_mss)
        if mss != self.mss:
            self._set_mss(mss)
        self._events.append(ConnectionEstablished(self))
        self._arm_keepalive(now)

    # --------------------------------------------------------------- output
    def segments_to_send(self, now: float, runs: bool = False) -> list[Segment | SegmentRun]:
        """Everything the connection wants on the wire now, in order.

        With `runs`, consecutive full-size data segments may come as one
        `SegmentRun` (for encodings that write a batch in one pass).
        """
        self._now_hint = now
        out = self._out
        if out is not None:
            self._out = None
        else:
            out = []
        state = self.state
        if state in SYNCHRONIZED and state is not _TIME_WAIT:
            self._send_data(now, out, runs and self.ts_ok and not (self.sack_ok and self.rcv.ooo_ranges._starts))
        if self.rcv.ack_now and state is not _CLOSED and state is not _SYN_SENT:
            # Without SACK the sender counts duplicate ACKs, so each
            # out-of-order arrival gets its own (RFC 5681 4.2).
            owed = self.rcv.dupacks_owed
            self.rcv.dupacks_owed = 0
            if owed > 1:
                ack = self._make(self.snd_nxt, ACK)
                out.extend([ack] * owed)
            elif not any(s.flags & ACK for s in out[-1:]) or (out and out[-1].flags & RST):
                out.append(self._make(self.snd_nxt, ACK))
            self.rcv.ack_sent()
        if out:
            self.stats.segments_sent += len(out)
        if state in SYNCHRONIZED:
            self._arm_keepalive(now)
        return out

    def _data_mss(self) -> int:
        """Data bytes per segment now: the MSS, less room for SACK blocks
        while this side holds out-of-order data and so reports them on
        every segment (as TCP's current MSS counts its options)."""
        if self.sack_ok and self.rcv.ooo_ranges._starts:  # (emptiness without a __bool__ call)
            return max(self.mss - SACK_ROOM, 64)
        return self.mss

    def _send_data(self, now: float, out: Outgoing, runs: bool = False) -> None:
        if (self.snd_nxt >= self._sndbuf.end and not self.loss.lost._starts
                and (self._fin_sent or not self._fin_queued)):
            # Nothing to send, the usual case (an ACK or a timer for an idle
            # connection): only the bookkeeping the full path below does
            # when it finds nothing either (pacing tokens, app-limited mark).
            self._store_tokens(self._pacing_budget(now))
            self._note_app_limited(self._pipe(), self._cwnd())
            return
        if self.loss.lost._starts or self._fin_queued or not self._send_small(now, out, runs):
            self._send_data_full(now, out, runs)

    def _send_small(self, now: float, out: Outgoing, runs: bool) -> bool:
        """New data that fits in one segment and may all go now (a message,
        a reply): that segment, without the general loop. A guard in front
        of the helpers _send_data_full calls (tests/core/test_send_small.py
        runs both); False, having changed nothing, when anything else
        applies: the caller then takes the general path. Called with
        nothing lost and no FIN queued."""
        nxt = self.snd_nxt
        data_end = self._sndbuf.end
        avail = data_end - nxt
        mss = self.mss
        if avail > mss or avail <= 0 or (self.sack_ok and self.rcv.ooo_ranges._starts):
            return False  # (a smaller _data_mss, too)
        cwnd = self._cwnd()
        pipe = self._pipe()
        if (
            avail > self.snd_una + self.snd_wnd - nxt
            or avail > cwnd - pipe
            or (avail < mss and self._nagle_holds(nxt))
        ):
            return False
        # (No PMTU probe can be due here: a probe is larger than the MSS,
        # since every size left on the ladder exceeds max_datagram_size.)
        budget = self._pacing_budget(now)
        if budget < avail:
            # (taking the budget changed the bucket: the general path gets it)
            self._send_data_full(now, out, runs, budget)
            return True
        self._send_new(nxt, avail, data_end, now, pipe, out)
        self._store_tokens(budget - avail)
        self._note_app_limited(pipe + avail, cwnd)
        self._on_data_sent(now)
        return True

    def _store_tokens(self, budget: float) -> None:
        """Keep what is left of the pacing budget for the next output pass."""
        if budget != _UNPACED:
            self._pacing_tokens = budget

    def _note_app_limited(self, pipe: int, cwnd: int) -> None:
        """Nothing is left to send though the window has room: rate samples
        taken until this data is delivered measure the application, not the
        path (the app-limited mark of the delivery-rate estimator)."""
        if pipe < cwnd:
            self._app_limited_until = self.delivered + (pipe if pipe > 1 else 1)

    def _nagle_holds(self, nxt: int) -> bool:
        """Nagle (RFC 9293 3.7.4, RFC 896): a segment smaller than the MSS
        waits while earlier data is unacknowledged, unless `nodelay`."""
        return not self.config.nodelay and self.snd_una < nxt

    def _on_data_sent(self, now: float) -> None:
        """Data left: the retransmission timer runs (RFC 6298 5.1) and no
        persist probe is needed."""
        if self._deadlines[RTX] == NEVER:
            self._deadlines[RTX] = now + self.rtt.current_rto()
        self._deadlines[PERSIST] = NEVER

    def _restart_rto(self, now: float) -> None:
        """RFC 6298 5.2/5.3 after a new ACK: stop the timer when all is
        acknowledged, else restart it."""
        self._deadlines[RTX] = NEVER if self.snd_una >= self.snd_nxt else now + self.rtt.current_rto()

    def _send_data_full(self, now: float, out: Outgoing, runs: bool = False, budget: float | None = None) -> None:
        """_send_data's whole path (tests check the shortcuts against it);
        `budget`: the pacing budget, when the caller has taken it already."""
        mss = self._data_mss()
        cwnd = self._cwnd()
        pipe = self._pipe()
        sent_any = False
        if budget is None:
            budget = self._pacing_budget(now)
        # 1. Retransmit what is declared lost (RFC 6675 NextSeg rule 1).
        loss = self.loss
        lost = loss.lost
        while lost._starts:  # (RangeSet emptiness without a __bool__ call)
            start, end = lost.first()
            end = min(end, start + mss)
            # The first retransmission of a recovery (or after a partial ACK
            # acknowledged every earlier one) goes at once, whatever pipe
            # says (RFC 6675 5 (4.3), RFC 5681 3.2 (4), RFC 6582 3.2 (5)).
            if pipe + (end - start) > cwnd and pipe > 0 and (loss.retransmitted._starts or not loss.in_recovery):
                break
            if budget < end - start:
                self._pace_wait(now, end - start - budget)
                break
            budget -= end - start
            self._note_retransmission(start, end)
            out.append(self._data_segment(start, end, False))
            pipe += end - start
            sent_any = True
            if start <= self.snd_una:
                # Resending the first unacknowledged segment restarts the
                # timer (as Linux does): the resend gets a whole RTO, and an
                # RTO armed long ago for the original does not fire while the
                # repair is on its way.
                self._deadlines[RTX] = now + self.rtt.current_rto()
        # 2. New data, within the peer's window and the congestion window.
        data_end = self._sndbuf.end  # _data_end()
        wnd_edge = self.snd_una + self.snd_wnd
        probe_payload = self._pmtu_probe_payload()
        while self.snd_nxt < data_end:
            nxt = self.snd_nxt
            avail = data_end - nxt
            if probe_payload and avail >= probe_payload:
                # A data-carrying PMTU probe: one datagram of the next size.
                if (
                    nxt + probe_payload <= wnd_edge
                    and pipe + probe_payload <= max(cwnd, 2 * probe_payload)
                    and (cwnd >= PMTU_FIRST_PROBE_CWND * probe_payload
                         or self.delivered >= PMTU_FIRST_PROBE_DELIVERED * probe_payload
                         or self.max_datagram_size > self.config.max_datagram_size)
                ):
                    if budget < probe_payload:
                        # Wait for the tokens (the bucket holds a probe, see
                        # _pacing_burst): sending smaller data first would
                        # spend them, and a paced flow would never probe.
                        self._pace_wait(now, probe_payload - budget)
                        break
                    budget -= probe_payload
                    self._pmtu_probe = (nxt, nxt + probe_payload, self._pmtu_ladder[0])
                    self._send_new(nxt, probe_payload, data_end, now, pipe, out)
                    pipe += probe_payload
                    sent_any = True
                probe_payload = 0
                continue
            if runs and avail > mss:
                room = min(avail, wnd_edge - nxt, cwnd - pipe, RUN_SEGMENTS * mss,
                           RUN_BYTES // (mss + DATA_OVERHEAD + self.config.datagram_overhead) * mss)
                if budget < room:
                    # Paced: wait for a millisecond's worth (a whole run on a
                    # fast path) rather than trickle out a segment per
                    # wake-up, each of which costs tens of us of Python.
                    quantum = min(room, max(mss, (self.cc.pacing_rate or 0.0) * 0.001))
                    if budget < quantum:
                        self._pace_wait(now, quantum - budget)
                        break
                    room = int(budget)
                if room >= avail and self.config.nodelay and not self._fin_queued:
                    length = avail  # all the rest, the last segment short
                else:
                    length = room // mss * mss
                    if self._fin_queued and nxt + length == data_end:
                        length -= mss  # the last segment carries the FIN: _send_new sends it
                if length > mss or length == mss >= RUN_ALONE:
                    self._send_run(nxt, length, data_end, now, pipe, out)
                    budget -= length
                    pipe += length
                    sent_any = True
                    continue
            n = min(mss, avail, wnd_edge - nxt, cwnd - pipe)
            if n <= 0:
                break
            if budget < n:
                self._pace_wait(now, n - budget)
                break
            budget -= n
            if n < mss:
                if n < avail:
                    # Sender SWS avoidance (RFC 9293 3.8.6.2.1): a window-limited
                    # sliver waits unless it is half the largest window seen.
                    if n < self.max_snd_wnd // 2 or pipe + n > cwnd:
                        break
                elif self._nagle_holds(nxt):
                    break
            self._send_new(nxt, n, data_end, now, pipe, out)
            pipe += n
            sent_any = True
        # 3. A FIN on its own once all data is out.
        if self._fin_queued and not self._fin_sent and self.snd_nxt == data_end:
            out.append(self._make(data_end, FIN | ACK))
            self.snd_nxt = data_end + 1
            self._fin_sent = True
            sent_any = True
        self._store_tokens(budget)
        if self.snd_nxt >= data_end and not lost._starts:
            self._note_app_limited(pipe, cwnd)
        if sent_any:
            self._on_data_sent(now)
        elif (
            self.snd_nxt < data_end
            and self.snd_una >= self.snd_nxt
            and self._deadlines[RTX] == NEVER
            and self._deadlines[PERSIST] == NEVER
            and self.snd_wnd < min(mss, data_end - self.snd_nxt)
        ):
            # Zero (or useless) window with data waiting: probe (RFC 9293 3.8.6.1).
            self._deadlines[PERSIST] = now + self.rtt.current_rto()

    def _send_new(self, nxt: int, n: int, data_end: int, now: float, pipe: int, out: Outgoing) -> None:
        """New data [nxt, nxt + n) as one segment (with the FIN if it is the last)."""
        fin = self._fin_queued and nxt + n == data_end
        out.append(self._data_segment(nxt, nxt + n, fin))
        self.snd_nxt = nxt + n + (1 if fin else 0)
        if fin:
            self._fin_sent = True
        self._record_first_transmission(nxt, nxt + n, now, pipe, 0)

    def _send_run(self, nxt: int, length: int, data_end: int, now: float, pipe: int, out: Outgoing) -> None:
        """Full-size segments [nxt, nxt + length) as one SegmentRun (no FIN)."""
        end = nxt + length
        tsval, tsecr = self._timestamps()
        wnd = self.rcv.advertise_window(self.state in _UNSCALED_WINDOW_STATES, self.mss)
        self.rcv.ack_sent()
        out.append(SegmentRun(nxt & MASK32, self.rcv.rcv_nxt & MASK32, ACK, self._data_flags(end, False),
                              wnd, tsval, tsecr, *self._sndbuf.span(nxt, end), length, self.mss))
        self.snd_nxt = end
        self.stats.bytes_sent += length
        self.stats.segments_sent += -(-length // self.mss) - 1  # the run itself counts as one below
        self.stats.runs_sent += 1
        self._record_first_transmission(nxt, end, now, pipe, self.mss)

    def _record_first_transmission(self, start: int, end: int, now: float, pipe: int, run_mss: int) -> None:
        """New data [start, end) left at `now` (as one run of `run_mss`-byte
        segments when run_mss is given): the sent log's record, which times
        it and yields its delivery-rate sample, and RACK's."""
        if not pipe:
            self._delivered_time = self._first_sent_time = now  # idle restart: the interval starts now
        log = self._sent_log
        if log is None:
            log = self._sent_log = deque()
        log.append(
            (start, end, now, self.delivered, self._delivered_time, self._app_limited_until > 0, self._first_sent_time)
        )
        rack = self.loss.start_rack()
        if run_mss:
            rack.on_transmit_run(start, end, run_mss, now, self.snd_una, self._deadlines[RTX])
        else:
            rack.on_transmit(start, end, now, False, self.snd_una, self._deadlines[RTX])

    # ---------------------------------------------------------------- PMTUD
    def _pmtu_probe_payload(self) -> int:
        """Payload of the next PMTU probe to send, or 0 when none is due."""
        if not self._pmtu_ladder or self._pmtu_probe is not None or self.state not in CAN_SEND:
            return 0
        # The probe is a datagram of exactly the size tried (a data segment
        # in the short form); data segments after it carry SACK_ROOM less
        # data when they must report SACK blocks, so none is larger.
        return self._pmtu_ladder[0] - DATA_OVERHEAD

    def _queued(self) -> list[Segment | SegmentRun]:
        """The list of segments queued for the next segments_to_send (made
        when the first is queued: an idle connection holds none)."""
        out = self._out
        if out is None:
            out = self._out = []
        return out

    def _writable(self, name: str) -> RangeSet:
        """The range set `name` (_ooo_ranges, _ever_retransmitted), made the connection's own
        if it is still the shared EMPTY: call before adding to one."""
        ranges = getattr(self, name)
        if ranges is EMPTY:
            ranges = RangeSet()
            setattr(self, name, ranges)
        return ranges

    def _pmtu_check(self) -> None:
        """After an ACK: a probe fully delivered, never resent, confirms its size."""
        probe = self._pmtu_probe
        if probe is None:
            return
        start, end, size = probe
        delivered = self.snd_una >= end or not self.loss.sacked.gaps(max(start, self.snd_una), end)
        if delivered and not self._ever_retransmitted.overlap(start, end):
            self._pmtu_probe = None
            self._pmtu_failures = 0
            self._pmtu_ladder = self._pmtu_ladder[1:]
            self.max_datagram_size = size
            self._set_mss(min(self.config.mss, self.peer_mss, size - DATA_OVERHEAD))
        elif delivered:
            self._pmtu_failed()

    def on_datagram_too_big(self, size: int) -> bool:
        """The local stack refused to send a datagram of `size` bytes
        (EMSGSIZE: larger than the interface's MTU). If it was the PMTU
        probe, the probe failed for certain, and so would every larger size:
        the search ends below it at once (RFC 8899 4.6: a local error is
        authoritative), and the probe's data, which never left, is marked
        lost so that it goes again now rather than after loss detection.
        Returns whether it was the probe."""
        probe = self._pmtu_probe
        if probe is None or size < probe[2]:  # (larger: the probe with SACK blocks)
            return False
        start, end, _size = probe
        self._pmtu_probe = None
        self._pmtu_failures = 0
        self._pmtu_ladder = tuple(s for s in self._pmtu_ladder if s < size)
        self.stats.pmtu_local_failures += 1
        if end > self.snd_una:
            self.loss.own_lost().add(max(start, self.snd_una), end)
            self._touch(self)
        return True

    def _pmtu_failed(self) -> None:
        self._pmtu_probe = None
        self._pmtu_failures += 1
        if self._pmtu_failures >= PMTU_MAX_PROBES:
            self._pmtu_ladder = ()  # search done: this size does not pass
            self._pmtu_failures = 0

    def _pacing_budget(self, now: float) -> float:
        """Bytes the pacer lets out now (a token bucket refilled at pacing_rate)."""
        rate = self.cc.pacing_rate
        if not rate:
            return _UNPACED
        tokens = self._pacing_tokens + (now - self._pacing_time) * rate
        self._pacing_time = now
        cap = self._pacing_burst()
        due = self._pacing_due
        if due is not None:
            # The sender has been waiting for tokens: it was held back by the
            # pacer alone. Woken late (a busy CPU, the loop's timer slack),
            # it keeps what it earned after the due time, up to PACING_CARRY
            # of it (and an eighth of the RTT): with the bucket's 2 ms alone,
            # every wake-up more than ~1 ms late lost tokens, and a sender on
            # a loaded machine fell below its pacing rate - and its
            # bandwidth model with it. A window- or application-limited
            # sender (no wait pending) still keeps only the burst.
            self._pacing_due = None
            late = now - due
            if late > 0:
                carry = PACING_CARRY
                srtt = self.rtt.srtt
                if srtt is not None and srtt * PACING_CARRY_RTT < carry:
                    carry = srtt * PACING_CARRY_RTT
                cap += min(late, carry) * rate
        return tokens if tokens < cap else cap

    def _pacing_burst(self) -> float:
        # A burst of a couple of milliseconds: each output call costs real CPU
        # in Python, so pacing finer than that would only burn it. At least a
        # PMTU probe, which must leave in one piece.
        return max(10 * self.mss, (self.cc.pacing_rate or 0.0) * 0.002, self._pmtu_probe_payload())

    def _pace_wait(self, now: float, missing: float) -> None:
        rate = self.cc.pacing_rate or 1.0
        # At least a microsecond: a shortfall of a rounding error must still
        # move the clock, or the timer would fire again at the same instant.
        self._deadlines[PACING] = self._pacing_due = now + max(missing / rate, 1e-6)

    def _data_segment(self, start: int, end: int, fin: bool) -> Segment:
        payload = self._sndbuf.view(start, end)  # no copy when it lies in one written chunk
        seg = self._make(start, self._data_flags(end, fin), payload)
        self.stats.bytes_sent += end - start
        return seg

    def _data_flags(self, end: int, fin: bool) -> int:
        """PSH on the segment that empties the send buffer (RFC 9293 3.9.1's
        push), with the FIN when it is the last."""
        if end == self._sndbuf.end:
            return ACK | PSH | FIN if fin else ACK | PSH
        return ACK

    def _make(self, seq: int, flags: int, payload: Payload = b"") -> Segment:
        """A segment with our current ACK, window, timestamps and SACK blocks."""
        seg = Segment(seq & MASK32, self.rcv.rcv_nxt & MASK32, flags, 0, payload)
        if flags & ACK:
            seg.wnd = self.rcv.advertise_window(self.state in _UNSCALED_WINDOW_STATES, self.mss)
            self.rcv.ack_sent()
        if self.ts_ok:
            seg.tsval, seg.tsecr = self._timestamps()
        if self.sack_ok and self.rcv.ooo_ranges._starts:
            seg.sack = self.rcv.sack_blocks()
        return seg

    def _timestamps(self) -> tuple[int, int]:
        """TSval and TSecr for a segment sent now (RFC 7323 4.1; TSval
        computed once per instant)."""
        now = self._now_hint
        if self._tsval_at != now:
            self._tsval_at = now
            self._tsval = (int(now * TS_HZ) + self._ts_offset) & MASK32
        return self._tsval, self.rcv.ts_recent or 0


    def _maybe_window_update(self) -> None:
        """After the application reads, tell the sender if the window opened a lot."""
        if self.state not in CAN_RECEIVE or self.rcv.eof:
            return
        if self.rcv.window_update(self.mss, self._now_hint):
            self._touch(self)

    def _send_syn(self, now: float) -> None:
        cfg = self.config
        flags = SYN | (ACK if self.state == State.SYN_RECEIVED else 0)
        seg = Segment(self.iss & MASK32, self.rcv.rcv_nxt & MASK32 if flags & ACK else 0, flags)
        seg.wnd = min(cfg.window_size, 0xFFFF)
        seg.mss = cfg.mss
        offered_ws = self._choose_wscale(cfg.window_size) if cfg.window_scaling else None
        if self.state == State.SYN_SENT or (self.state == State.SYN_RECEIVED and self.rcv_wscale_ok):
            seg.wscale = offered_ws
        if cfg.sack and (self.state == State.SYN_SENT or self.sack_ok):
            seg.sack_permitted = True
        if cfg.timestamps and (self.state == State.SYN_SENT or self.ts_ok):
            self._now_hint = now
            seg.tsval, seg.tsecr = self._timestamps()
        seg.mode = self.mode
        seg.max_packet = min(cfg.max_packet_size or MAX_UDP_PAYLOAD, 0xFFFF)
        if self.state == State.SYN_SENT:
            seg.retry_token = self.retry_token
        self.snd_nxt = max(self.snd_nxt, self.iss + 1)
        self._queued().append(seg)
        self._deadlines[RTX] = now + self.rtt.current_rto()
        self._touch(self)


    def _take_syn_options(self, seg: Segment) -> None:
        """Negotiate options from the peer's SYN (RFC 7323, RFC 2018, seed 003)."""
        cfg = self.config
        if seg.mss:
            self.peer_mss = seg.mss
        if seg.wscale is not None and cfg.window_scaling:
            self.snd_wscale = min(seg.wscale, MAX_WSCALE)
            self.rcv_wscale_ok = True
        else:
            self.snd_wscale = 0
            self.rcv.rcv_wscale = 0  # both sides scale or neither (RFC 7323 2.2)
        self.sack_ok = self.loss.sack_ok = self.rcv.sack_ok = cfg.sack and seg.sack_permitted
        self.ts_ok = cfg.timestamps and seg.tsval is not None
        if seg.mode == MODE_STEP:
            self.mode = MODE_STEP  # either side asking for step-by-step gets it
        ceiling = min(seg.max_packet or MAX_UDP_PAYLOAD, cfg.max_packet_size or MAX_UDP_PAYLOAD)
        self.max_datagram_size = min(self.max_datagram_size, ceiling)
        room = self.max_datagram_size - DATA_OVERHEAD
        if room < 64:
            room = 64
        self._set_mss(min(self.mss, self.peer_mss, room))
        if cfg.pmtud and self.mode != MODE_STEP:
            top = min(ceiling, cfg.pmtud_max, self.peer_mss + MAX_DATA_OVERHEAD, cfg.mss + MAX_DATA_OVERHEAD)
            self._pmtu_ladder = _pmtu_ladder(self.max_datagram_size, top)

    def _set_mss(self, mss: int) -> None:
        """The MSS changed (the peer's SYN, PMTUD): everyone who counts in
        segments hears of it."""
        self.mss = mss
        self.cc.set_mss(mss)
        self.loss.mss = mss

    @staticmethod
    def _choose_wscale(window: int) -> int:
        shift = _WSCALE.get(window)
        if shift is None:  # computed once per window size (twice per connection otherwise)
            shift = 0
            while (0xFFFF << shift) < window and shift < MAX_WSCALE:
                shift += 1
            _WSCALE[window] = shift
        return shift

    # --------------------------------------------------------------- timers
    def _on_rto(self, now: float) -> None:
        """Retransmission timeout (RFC 6298 5.4-5.7)."""
        self._deadlines[RTX] = NEVER
        self._retries += 1
        self.stats.timeouts += 1
        if self.passive and self.state == State.SYN_RECEIVED:
            # A half-open connection lives through few SYN,ACKs (Linux:
            # tcp_synack_retries); a client that lost them all sends its SYN
            # again and gets a fresh one.
            if self._retries > self.config.synack_retries:
                self._terminate(TimeoutError("no ACK for our SYN,ACK"))
                return
        elif self._retries > self.config.max_retries:
            self._terminate(TimeoutError(
                f"no acknowledgment after {self.config.max_retries} retransmissions ({self._silence_note(now)})"))
            return
        self.rtt.on_timeout()
        if self.state in (State.SYN_SENT, State.SYN_RECEIVED):
            self.stats.retransmits += 1
            self._send_syn(now)
            return
        if self.snd_una >= self.snd_nxt:
            return
        self.cc.on_rto(now, self._outstanding())
        if self._pmtu_probe is not None:
            self._pmtu_failed()
        data_hi = min(self.snd_nxt, self._data_end())
        # Everything outstanding and not SACKed is presumed lost; resend from snd_una.
        self.loss.on_rto(self.snd_una, self.snd_nxt, data_hi)
        if self._fin_sent and self.snd_una <= self._data_end():
            self._fin_sent = False  # resend the FIN after the data
            self.snd_nxt = self._data_end()
        # One segment goes out at once even though pipe may exceed cwnd; a
        # FIN alone is resent by the normal output path.
        self._touch(self)
        lost = self.loss.lost
        if lost._starts:
            start, end = lost.first()
            end = min(end, start + self._data_mss())
            self._note_retransmission(start, end)
            self._queued().append(self._data_segment(start, end, False))
        self._deadlines[RTX] = now + self.rtt.current_rto()

    def _on_rack_timer(self, now: float) -> None:
        """RACK's reorder timer or TLP's probe timeout (recovery.py says which)."""
        if self.loss.rack.timer_fired(now):
            self._send_loss_probe(now)
        else:
            self._detect_losses(now)
        self._touch(self)

    def _send_loss_probe(self, now: float) -> None:
        """TLP (RFC 8985 7.3): one new segment if the peer's window takes it,
        else the last segment again, outside cwnd and pacing, to draw an ACK."""
        data_end = self._data_end()
        nxt = self.snd_nxt
        mss = self._data_mss()
        n = min(mss, data_end - nxt, self.snd_una + self.snd_wnd - nxt)
        if n > 0 and self.mode != MODE_STEP:  # step-by-step: never two segments in flight
            self.loss.start_rack().on_probe(nxt + n, False, now)
            self._send_new(nxt, n, data_end, now, self._pipe(), self._queued())
        else:
            end = min(nxt, data_end)
            start = max(self.snd_una, self._sndbuf.start, end - mss)
            if start >= end:
                return  # only a FIN is out: the RTO resends it
            self.loss.start_rack().on_probe(end, True, now)
            self._note_retransmission(start, end)
            self._queued().append(self._data_segment(start, end, False))
        self._deadlines[RTX] = now + self.rtt.current_rto()  # RFC 8985 7.3: the RTO guards the probe

    def _on_persist(self, now: float) -> None:
        self._deadlines[PERSIST] = NEVER
        self._persist_probes += 1
        if self._persist_probes > self.config.max_retries + self.config.keepalive_count:
            self._terminate(TimeoutError("peer's window stayed closed and it stopped answering probes"))
            return
        self.stats.window_probes += 1
        self.rtt.on_timeout()
        self._queued().append(self._make(self.snd_una - 1, ACK))
        self._deadlines[PERSIST] = now + self.rtt.current_rto()
        self._touch(self)

    def _arm_keepalive(self, now: float) -> None:
        cfg = self.config
        if not cfg.keepalive or self.state not in _KEEPALIVE_STATES:
            self._deadlines[KEEPALIVE] = NEVER
            return
        if self.snd_una < self.snd_nxt or self._deadlines[RTX] != NEVER:
            self._deadlines[KEEPALIVE] = NEVER  # the retransmission timer watches the peer
            return
        if self._keepalive_probes:
            self._deadlines[KEEPALIVE] = self._keepalive_sent + cfg.keepalive_interval
        else:
            self._deadlines[KEEPALIVE] = self.last_received + cfg.keepalive_idle


    def _on_keepalive(self, now: float) -> None:
        cfg = self.config
        if self._keepalive_probes >= cfg.keepalive_count:
            self._terminate(TimeoutError(
                f"peer unreachable: {cfg.keepalive_count} keep-alive probes unanswered ({self._silence_note(now)})"))
            return
        # RFC 1122 4.2.3.6: a segment with SEG.SEQ = SND.NXT-1 and no data.
        self._keepalive_probes += 1
        self._keepalive_sent = now
        self.stats.keepalive_probes += 1
        self._queued().append(self._make(self.snd_nxt - 1, ACK))
        self._deadlines[KEEPALIVE] = now + cfg.keepalive_interval
        self._touch(self)

    def _silence_note(self, now: float) -> str:
        """What a connection that gives up on its peer last knew of it, for
        the error: whether the peer had fallen silent or was still sending
        segments that failed our checks, and where each direction stood."""
        st = self.stats
        note = (f"last segment from the peer {now - self.last_received:.1f} s ago; "
                f"{st.segments_received} received, {st.dropped_segments} dropped")
        outstanding = self.snd_nxt - self.snd_una
        if outstanding > 0:
            note += f"; {outstanding} bytes unacknowledged"
            if self.loss.sacked:
                note += f" ({self.loss.sacked.total} SACKed)"
        if self.rcv.ooo_ranges:
            note += f"; holding {self.rcv.ooo_ranges.total} bytes above a hole at {self.rcv.rcv_nxt - self.rcv.irs - 1}"
        return note

    def _challenge_ack(self, now: float) -> None:
        second = int(now)
        if second != self._challenge_window:
            self._challenge_window, self._challenge_count = second, 0
        self._challenge_count += 1
        self.stats.dropped_segments += 1
        if self._challenge_count <= CHALLENGE_ACK_LIMIT:
            self.stats.challenge_acks += 1
            self.rcv.ack_now = True

    # --------------------------------------------------------------- helpers
    def _data_end(self) -> int:
        """Position just past the last byte the application has written."""
        return self._sndbuf.end

    def _unsent_and_unacked(self) -> int:
        return self._sndbuf.end - max(self.snd_una, self._sndbuf.start)

    def _trim_sndbuf(self) -> None:
        self._sndbuf.trim(min(self.snd_una, self._sndbuf.end))

    def _outstanding(self) -> int:
        """FlightSize: sent and not cumulatively acknowledged data bytes."""
        nxt = self.snd_nxt
        end = self._sndbuf.end  # (_data_end(); comparisons rather than min/max calls: once per ACK and send)
        outstanding = (nxt if nxt <= end else end) - self.snd_una
        return outstanding if outstanding > 0 else 0

    def _pipe(self) -> int:
        """RFC 6675's pipe: outstanding bytes believed still in the network."""
        return self.loss.pipe(self._outstanding())

    def _cwnd(self) -> int:
        if self.mode == MODE_STEP:
            return self.mss  # stop-and-wait: one segment in flight
        return self.cc.cwnd

    def _on_delivered(self, nbytes: int, now: float) -> None:
        if nbytes <= 0:
            return
        self.delivered += nbytes
        self._delivered_time = now
        # What was just delivered left about an RTT ago; a rate sample, when
        # this ACK yields one, replaces that with the exact send time.
        self._first_sent_time = max(self._first_sent_time, now - 2 * (self.rtt.latest_rtt or 0.0))
        if self._app_limited_until and self.delivered > self._app_limited_until:
            self._app_limited_until = 0

    def _note_retransmission(self, start: int, end: int) -> None:
        """[start, end) is being resent: recovery's bookkeeping, Karn's."""
        self.loss.on_retransmit(start, end, self._now_hint, self.snd_una, self.snd_nxt, self._deadlines[RTX])
        self._writable("_ever_retransmitted").add(start, end)
        self.stats.retransmits += 1
        self.stats.retransmitted_bytes += end - start

    def _rtt_sample_from(
        self, seg: Segment | None, now: float, acked_to: int = 0, handshake: bool = False, clean: bool = True
    ) -> None:
        if handshake:
            # The SYN was timed if it was never resent (Karn).
            if self._retries == 0 and self.stats.retransmits == 0:
                self.rtt.on_sample(now - self.created)
            return
        log = self._sent_log
        if not log:
            return
        first = log[0][0]
        newest = None
        while log and log[0][1] <= acked_to:
            newest = log.popleft()
        if not log:
            self._sent_log = None
        if log and log[0][0] < acked_to:
            # Part of a run is acknowledged: all of it left at the same time,
            # so the acknowledged part times the path as well as the rest will.
            newest = log[0]
        if newest is None:
            return
        # Karn: no sample when any byte this ACK covers was ever resent.
        ever = self._ever_retransmitted
        if clean and not (ever._starts and ever.overlap(first, acked_to)):
            self.rtt.on_sample(now - newest[2])
        # Delivery rate: what was delivered between this segment's send and
        # its ACK, over the longer of the send and ACK intervals, so ACKs that
        # arrive bunched do not inflate it (draft-cheng-iccrg-delivery-rate-estimation).
        _, _, sent_time, delivered_then, delivered_time_then, app_limited, first_sent_then = newest
        self._first_sent_time = sent_time
        interval = now - delivered_time_then
        if sent_time - first_sent_then > interval:
            interval = sent_time - first_sent_then
        if interval > 0:
            self.cc.on_delivery_rate(now, (self.delivered - delivered_then) / interval, interval, app_limited,
                                     self.stats.retransmitted_bytes)

    def _sack_rate_sample(self, seg: Segment, now: float) -> float | None:
        """A delivery-rate sample and an RTT sample from the segment a
        SACK-only ACK reports (the first SACK block's right edge: the block
        the arrival that triggered this ACK joined, RFC 2018). While a hole
        holds the cumulative ACK, as it does for an RTT per loss, these are
        the only fresh samples; Linux takes both from newly SACKed segments
        as well. Returns the RTT sample (None: Karn, or no logged segment)."""
        log = self._sent_log
        if not log:
            return None
        edge = min(unwrap(seg.sack[0][1], self.snd_una), self.snd_nxt) - 1
        if edge < self.snd_una:
            return None  # a D-SACK or stale block
        i = bisect_right(log, edge, key=_record_start) - 1
        if i < 0:
            return None
        rec = log[i]
        if rec[1] <= edge:
            return None  # not from a logged first transmission
        _, _, sent_time, delivered_then, delivered_time_then, app_limited, first_sent_then = rec
        rtt = None
        if not self._ever_retransmitted.overlap(edge, edge + 1):
            # Karn: a byte never resent was SACKed by its only transmission.
            # Without these, a path that is in recovery most of the time
            # (2 % loss at 100 ms) gave almost no RTT samples at all.
            rtt = now - sent_time
            self.rtt.on_sample(rtt)
        interval = max(now - delivered_time_then, sent_time - first_sent_then)
        if interval > 0:
            self.cc.on_delivery_rate(now, (self.delivered - delivered_then) / interval, interval, app_limited,
                                     self.stats.retransmitted_bytes)
        return rtt

    def _peer_alive(self, now: float) -> None:
        """A segment from the peer: the idle and keep-alive clocks restart
        (RFC 1122 4.2.3.6)."""
        self.last_received = now
        self._keepalive_probes = 0

    def _take_syn(self, seg: Segment, now: float) -> None:
        """The peer's SYN (in LISTEN or SYN-SENT): its options, then the
        receiver's start (IRS, RCV.NXT, the first window, TS.Recent)."""
        self._take_syn_options(seg)
        self.rcv.on_syn(seg.seq, seg.tsval)
        self._peer_alive(now)

    def _send_reset_for(self, seg: Segment) -> None:
        rst = reset_for(seg)
        if rst is not None:
            self._queued().append(rst)

    def _transition(self, event: str) -> None:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise AssertionError(f"no transition from {self.state} on {event!r}") from None

    def _terminate(self, error: BaseException | None) -> None:
        """Enter CLOSED for good, once: later calls change nothing."""
        if self._terminated:
            return
        self._terminated = True
        self.state = State.CLOSED
        self.error = error
        self._deadlines[:] = _UNARMED
        self.loss.rack.stop()
        self._events.append(ConnectionTerminated(self, error))
        self._touch(self)

    def __repr__(self) -> str:
        return f"<Connection cid={self.local_cid:#x} {self.state} peer={self.remote_addr!r}>"


# The handler of each timer (timers.py), by index.
_TIMER_HANDLERS = (
    Connection._on_rto, Connection._on_rack_timer, Connection._on_persist, Connection._on_delack,
    Connection._on_keepalive, Connection._on_pacing, Connection._on_timewait, Connection._on_connect_timeout,
    Connection._on_idle,
)
_UNARMED: Final = unarmed()


def copy_error(error: BaseException) -> BaseException:
    """A fresh instance of a stored connection error, to raise."""
    try:
        return type(error)(*error.args)
    except Exception:  # noqa: BLE001 - exotic constructor: raise the original
        return error
