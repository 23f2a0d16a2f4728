"""One Gannet connection: the RFC 9293 state machine, sans I/O.

Inputs: `on_segment(seg, now)` from the network, `handle_timer(now)` from
time, and `send` / `recv` / `shutdown_write` / `close` / `abort` from the
application. Output: `segments_to_send(now)`, `get_timer()` and events
appended to the deque the endpoint gave us.

Sequence positions are kept as unbounded integers ("absolute"); 32-bit wire
values are unwrapped on arrival (`unwrap`) and wrapped on departure. Sent and
received bytes are tracked as byte ranges (`RangeSet`); a retransmission
resends a byte range from the send buffer, not a stored packet.

The connection is the dispatcher that wires its parts together: the
sending half (`snd`, sender.py: SND.*, what may leave now, segment and run
building, the sent log), the receiving half (`rcv`, receiver.py), loss
recovery (`loss`, recovery.py), congestion control (`cc`) and the timer
table (timers.py). None of them holds a reference back to it; it calls
them in the order RFC 9293 3.10.7 processes a segment.

Variable names follow RFC 9293 (snd_una, snd_nxt, snd_wnd, rcv_nxt, iss,
irs), RFC 6298 (srtt, rto) and RFC 6675 (pipe, recovery point).
"""

from __future__ import annotations

from typing import Final

import random
from collections import deque

from ..config import MODE_STEP, MODES, Config
from ..wire.datagram import DATA_OVERHEAD, MAX_DATA_OVERHEAD, MAX_WSCALE
from ..wire.segment import ACK, FIN, RST, SEQ_MOD, SYN, Payload, Segment, SegmentRun, reset_for, unwrap
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
from .rangeset import RangeSet
from .receiver import INITIAL_RCV_SPACE, MASK32, RCV_SPACE_GAIN, TS_HZ, Receiver  # noqa: F401 (re-exported)
from .recovery import LossRecovery
from .rtt import RttEstimator
from .sender import RUN_BYTES, Sender, pmtu_ladder  # noqa: F401 (RUN_BYTES re-exported)
from .states import CAN_RECEIVE, CAN_SEND, SYNCHRONIZED, TRANSITIONS, State
from .stats import ConnectionStats
from .timers import (
    CONNECT, DELACK, DISPATCH_ORDER, IDLE, KEEPALIVE, NAMES, NEVER, PERSIST, RACK, RTX, TIMEWAIT, unarmed,
)

MAX_UDP_PAYLOAD: Final = 65507
CHALLENGE_ACK_LIMIT: Final = 100  # per second (RFC 5961 section 7)
MAX_ACK_HOLD: Final = 0.5  # longest a held handshake ACK waits (RFC 1122 4.2.3.2's delayed-ACK bound)


# States as module constants for the per-segment paths: `State.X` goes
# through EnumType.__getattr__'s lookup hook in Python 3.11 (about 0.1 us a
# read, several per segment). The per-segment membership tests look for
# ESTABLISHED by identity first (a pointer comparison, compiled; a set
# lookup otherwise).
_CLOSED: Final = State.CLOSED
_LISTEN: Final = State.LISTEN
_SYN_SENT: Final = State.SYN_SENT
_ESTABLISHED: Final = State.ESTABLISHED
_TIME_WAIT: Final = State.TIME_WAIT
_HANDSHAKING: Final = frozenset({State.SYN_SENT, State.SYN_RECEIVED})
_UNSCALED_WINDOW_STATES: Final = frozenset({State.SYN_SENT, State.SYN_RECEIVED, State.LISTEN})  # (a SYN's window)
_KEEPALIVE_STATES: Final = frozenset({State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_2})

_WSCALE: Final[dict[int, int]] = {}  # window size -> the shift _choose_wscale picks


class Connection:
    # Every attribute __init__ sets has a slot: a connection holds about 80
    # of them, and a plain instance dict of that size costs some 3 KB per
    # connection (10,000 idle connections: 30 MB). "__dict__" stays, so that
    # attributes set elsewhere (the class-level defaults below) still work;
    # tests/core/test_connection_slots.py keeps this list complete.
    __slots__ = (
        "config", "rng", "remote_addr", "local_cid", "remote_cid", "passive", "state", "route_mtu",
        "error", "stats", "created", "_events", "_dirty", "snd",
        "_want_send_space", "_all_acked_reported", "loss", "_retries",
        "peer_mss", "mss", "cc", "rtt", "sack_ok", "ts_ok",
        "last_received", "_keepalive_probes",
        "_challenge_window", "_challenge_count", "_out", "_terminated",
        "rcv_wscale_ok", "_keepalive_sent",
        "hold_handshake_ack", "_ep_deadline", "_ep_key", "_deadlines", "rcv", "retry_token",
        "_idle_timeout", "_autotune", "_keepalive", "_keepalive_idle", "_keepalive_interval",
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
        dirty: dict[Connection, None] | None = None,
        iss: int | None = None,
    ) -> None:
        self.config = config
        # Settings read per segment or per timer query, as native attributes
        # (the Config is a Python dataclass: a dictionary lookup per read
        # from compiled code; it is frozen, so the copies hold). No idle
        # timeout is an infinite one: its deadline is then NEVER.
        self._idle_timeout = NEVER if config.idle_timeout is None else config.idle_timeout
        self._autotune = config.autotune
        self._keepalive = config.keepalive
        self._keepalive_idle = config.keepalive_idle
        self._keepalive_interval = config.keepalive_interval
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
        # The largest datagram the local route toward the peer carries (UDP
        # payload bytes), as the adapter learned it from the kernel before
        # the handshake (Endpoint.route_mtu); 0: not known (the simulator,
        # platforms without it). PMTUD caps its search there and tries it
        # first (sender.pmtu_ladder).
        self.route_mtu = 0
        self.state = State.CLOSED
        self.error: Exception | None = None
        self.stats = ConnectionStats()
        self.created = now
        self._events: deque[Event] = events if events is not None else deque()
        # The endpoint's set of connections to look at next (output, the
        # deadline): `_touch` puts this one in it. A dict the endpoint keeps
        # for good, so that marking is a native store, not a call.
        self._dirty: dict[Connection, None] = dirty if dirty is not None else {}

        # --- send side: SND.*, what may leave now, the sent log (sender.py)
        # RFC 9293 3.4.1 asks for an unpredictable ISN; a seeded rng in tests.
        iss = rng.getrandbits(32) if iss is None else iss
        self._want_send_space = False
        self._all_acked_reported = False
        self._retries = 0  # consecutive timeouts without progress
        self.peer_mss = 536  # RFC 9293 default until the SYN says otherwise
        self.mss = min(config.mss, config.max_datagram_size - DATA_OVERHEAD)
        self.cc = cc_registry.create(config.congestion_control, self.mss, config.initial_window)
        self.rtt = RttEstimator(config.timeout, config.min_rto, config.max_rto)
        # Loss recovery (scoreboard, NewReno, RACK-TLP, RTO marking): its own
        # object, told the sender's positions on every call (recovery.py).
        self.loss = LossRecovery(config, self.rtt, self.mss)
        self.sack_ok = False
        self.ts_ok = False
        self.rcv_wscale_ok = False  # peer offered window scaling in its SYN
        self._keepalive_sent = 0.0
        ts_offset = rng.getrandbits(32)

        # --- liveness ----------------------------------------------------------
        self.last_received = now
        self._keepalive_probes = 0
        # Every timer's deadline, NEVER when unarmed (timers.py).
        self._deadlines = unarmed()

        # --- receive side: RCV.*, reassembly, the offered window (receiver.py)
        self.rcv = Receiver(config, self.stats, self._events, self, self._deadlines,
                            self._choose_wscale(config.window_size) if config.window_scaling else 0, now)
        self.snd = Sender(config, self.stats, self.rtt, self.cc, self.loss, self.rcv, self._deadlines,
                          iss, ts_offset, self.mss, now)
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
        snd = self.snd
        return max(0, snd.send_buffer_limit() - snd.unsent_and_unacked())

    # SND.* and what the sender holds (sender.py), read-only.
    @property
    def iss(self) -> int:
        return self.snd.iss

    @property
    def snd_una(self) -> int:
        return self.snd.snd_una

    @property
    def snd_nxt(self) -> int:
        return self.snd.snd_nxt

    @property
    def snd_wnd(self) -> int:
        return self.snd.snd_wnd

    @property
    def max_snd_wnd(self) -> int:
        return self.snd.max_snd_wnd

    @property
    def snd_wl1(self) -> int:
        return self.snd.snd_wl1

    @property
    def snd_wl2(self) -> int:
        return self.snd.snd_wl2

    @property
    def snd_wscale(self) -> int:
        """The peer's window scale shift (RFC 7323)."""
        return self.snd.snd_wscale

    @property
    def delivered(self) -> int:
        """Bytes delivered to the peer so far (ACKed or SACKed)."""
        return self.snd.delivered

    @property
    def max_datagram_size(self) -> int:
        """The largest datagram we send now (PMTUD raises it)."""
        return self.snd.max_datagram_size

    @property
    def mode(self) -> int:
        """The operation mode (config.MODES), step-by-step if either side asked."""
        return self.snd.mode

    @property
    def established(self) -> bool:
        return self.state in SYNCHRONIZED

    @property
    def srtt(self) -> float | None:
        return self.rtt.srtt

    @property
    def bytes_in_flight(self) -> int:
        return self.snd.pipe()

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
        snd = self.snd
        state = self.state
        if snd.fin_queued or state is not _ESTABLISHED and state not in CAN_SEND and state not in _HANDSHAKING:
            raise BrokenPipeError("connection is closed for sending")
        n = snd.write(data)
        if n:
            self._all_acked_reported = False
            self._touch()
        if n < len(data):
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
        if self._autotune:
            self.rcv.space_adjust(self.snd.now, self.rtt.srtt)
        self._maybe_window_update()

    def shutdown_write(self, now: float) -> None:
        """Half-close: a FIN follows the data already queued."""
        if self.snd.fin_queued or self.state in (State.CLOSED, State.LISTEN):
            return
        if self.state == State.SYN_SENT:
            self._terminate(None)
            return
        self.snd.fin_queued = True
        self._all_acked_reported = False
        if self.state in (State.ESTABLISHED, State.SYN_RECEIVED):
            self._transition("close")
        elif self.state == State.CLOSE_WAIT:
            self._transition("close")
        self._touch()

    def close(self, now: float) -> None:
        """Graceful close of both directions (data still queued is delivered)."""
        self.shutdown_write(now)

    def release_ack(self) -> bool:
        """Send a delayed (or held handshake) ACK on the next output pass
        instead of waiting for its timer; False if no ACK is owed."""
        if self._deadlines[DELACK] == NEVER or self.state not in SYNCHRONIZED:
            return False
        self.rcv.ack_now = True
        self._touch()
        return True

    def abort(self, now: float) -> None:
        """Send RST and forget the connection (RFC 9293 3.10.5 ABORT)."""
        if self.state in SYNCHRONIZED or self.state == State.SYN_RECEIVED:
            self._queued().append(self._control(self.snd.snd_nxt, RST | ACK))
        self._terminate(None)

    # --------------------------------------------------------------- timers
    def get_timer(self) -> float | None:
        """The earliest armed deadline (None: no timer is armed)."""
        # (A loop rather than min(): compiled, it runs natively instead of
        # calling Python's builtin over boxed floats; the endpoint asks
        # after every change.)
        best = NEVER
        for at in self._sync_deadlines():
            if at < best:
                best = at
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
        # (last_received + an infinite _idle_timeout is NEVER)
        state = self.state
        at[IDLE] = self.last_received + self._idle_timeout if state is _ESTABLISHED or state in SYNCHRONIZED \
            else NEVER
        return at

    def handle_timer(self, now: float) -> None:
        """Run the handler of every due timer, in DISPATCH_ORDER; a due
        timer is disarmed before its handler runs (which may arm it again)."""
        if self.state is _CLOSED:
            return
        self.snd.now = now
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
        self._touch()  # the pacer allows more: the output path runs next

    def _on_delack(self, now: float) -> None:
        self.rcv.ack_now = True

    # --------------------------------------------------------------- input
    def on_segment(self, seg: Segment, now: float) -> None:
        """Process one arriving segment (RFC 9293 3.10.7, SEGMENT ARRIVES)."""
        self.stats.segments_received += 1
        self.snd.now = now
        state = self.state
        if state is _CLOSED:
            return
        if state is _LISTEN:
            self._on_listen(seg, now)
        elif state is _SYN_SENT:
            self._on_syn_sent(seg, now)
        else:
            self._on_synchronized(seg, now)
        self._touch()

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
        snd = self.snd
        if (
            seq32 != rcv_nxt & MASK32
            or ack32 != snd.snd_una & MASK32
            or wnd << snd.snd_wscale != snd.snd_wnd
        ):
            return False
        if self.rcv.ts_older(tsval_first) or self.rcv.ts_older(tsval_last):
            return False  # older than TS.Recent: PAWS decides, one by one
        end = rcv_nxt + len(data)
        if end > self.rcv.rcv_adv:
            return False
        self.stats.segments_received += count
        self.stats.fast_path_segments += count
        snd.now = now
        self._peer_alive(now)
        self.rcv.update_ts_recent(tsval_last)
        # Their ACK and window are what we hold: only SND.WL1/WL2 can move.
        snd.update_window(end - last_len, snd.snd_una, snd.snd_wnd)
        self.rcv.deliver(data, count)
        self.rcv.schedule_ack(now)
        self._touch()
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
        snd = self.snd
        if (
            self.state is not _ESTABLISHED
            or not self.ts_ok
            or snd.fin_sent
            or not self.loss.quiet()
        ):
            return False
        rcv_nxt = self.rcv.rcv_nxt
        if seq32 != rcv_nxt & MASK32:
            return False
        if self.rcv.ts_older(tsval):
            return False  # older than TS.Recent: PAWS decides
        snd_una = snd.snd_una
        acked = (ack32 - snd_una) & MASK32
        if not acked or acked > snd.snd_nxt - snd_una:
            return False  # no new ACK (on_data_run's case), or beyond SND.NXT
        n = len(payload)
        if n and (self.rcv.ooo or self.rcv.fin_rcv is not None or rcv_nxt + n > self.rcv.rcv_adv):
            return False
        # What _on_synchronized and _process_ack do for this segment, less
        # the checks that cannot fire: the same helpers, in the same order.
        self.stats.segments_received += 1
        snd.now = now
        self._peer_alive(now)
        self.rcv.update_ts_recent(tsval)
        ack = snd_una + acked
        snd.update_window(rcv_nxt, ack, wnd << snd.snd_wscale)
        self._ack_new_data(None, ack, 0, snd.pipe(), now)
        self._after_ack(now)
        if n and (self.state is _ESTABLISHED or self.state in CAN_RECEIVE):
            self.rcv.deliver(payload, 1)
            self.rcv.schedule_ack(now)
        self._touch()
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
        self.snd.syn_window(self.rcv.rcv_nxt - 1, seg.wnd)
        self._transition("rcv SYN")
        self._send_syn(now)

    def _on_syn_sent(self, seg: Segment, now: float) -> None:
        flags = seg.flags
        snd = self.snd
        ack = unwrap(seg.ack, snd.snd_nxt) if flags & ACK else None
        if ack is not None and (ack <= snd.iss or ack > snd.snd_nxt):
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
            self.snd.syn_window(self.rcv.rcv_nxt - 1, seg.wnd)
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
        snd = self.snd
        ack = unwrap(seg.ack, snd.snd_una)
        if self.state == State.SYN_RECEIVED:
            if snd.snd_una < ack <= snd.snd_nxt:
                self._ack_of_syn(seq=seq, ack=ack, wnd=seg.wnd << snd.snd_wscale, now=now)
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
        snd = self.snd
        snd_una = snd.snd_una
        if ack > snd.snd_nxt:
            self.rcv.ack_now = True  # acks something not yet sent (RFC 9293)
            self.stats.dropped_segments += 1
            return False
        if ack < snd_una - max(snd.max_snd_wnd, self.mss):
            self._challenge_ack(now)  # RFC 5961 5.2: too old to be believable
            return False

        window_changed = snd.update_window(seq, ack, seg.wnd << snd.snd_wscale)
        newly_sacked = self._process_sack(seg, ack) if self.sack_ok and seg.sack else 0
        in_flight_before = snd.pipe()
        if ack > snd_una:
            self._ack_new_data(seg, ack, newly_sacked, in_flight_before, now)
        else:
            if newly_sacked:
                snd.on_delivered(newly_sacked, now)
                rtt = snd.sack_rate_sample(seg, now)
                if not self.loss.in_recovery or self.cc.acks_in_recovery:
                    self.cc.on_ack(now, newly_sacked, in_flight_before, rtt)
            # RFC 5681 duplicate ACK: no data, same ack, same window, data outstanding.
            if (
                ack == snd_una
                and not seg.payload
                and not seg.flags & (SYN | FIN)
                and not window_changed
                and snd.snd_nxt > snd_una
            ):
                self.loss.on_duplicate_ack()
        self._after_ack(now)
        return True

    def _ack_of_syn(self, seq: int, ack: int, wnd: int, now: float) -> None:
        """Our SYN acknowledged (RFC 9293 3.10.7.3 and 3.10.7.4, SYN-RECEIVED):
        time it (Karn), take the window, stop the retransmission timer."""
        if self._retries == 0 and self.stats.retransmits == 0:
            self.rtt.on_sample(now - self.created)  # the SYN was timed if it was never resent (Karn)
        self.snd.ack_of_syn(seq, ack, wnd)
        self._retries = 0

    def _ack_new_data(self, seg: Segment | None, ack: int, newly_sacked: int, in_flight_before: int,
                      now: float) -> None:
        """SND.UNA < SEG.ACK <= SND.NXT (RFC 9293 3.10.7.4, RFC 5681, RFC 6298):
        drop what is acknowledged from the scoreboard and the send buffer,
        count it delivered, time it, tell congestion control, restart the
        RTO. `seg` (None on header prediction: no SACK blocks) is the ACK."""
        snd = self.snd
        data_end = snd.sndbuf.end
        loss = self.loss
        removed_sacked = loss.on_cumulative_ack(ack)
        self._retries = 0
        # Forward progress ends RTO backoff (as Linux does), so a lossy
        # path does not keep paying for timeouts that are already over.
        self.rtt.backoff = 0
        delivered = snd.on_ack(ack, newly_sacked, removed_sacked, now)
        recovering = loss.in_recovery
        if recovering and loss.on_recovery_ack(ack, data_end):
            self.cc.on_recovery_end(now)
        if not recovering or self.cc.acks_in_recovery:
            self.cc.on_ack(now, delivered, in_flight_before, self.rtt.latest_rtt)
        snd.restart_rto(now)
        self._after_ack_progress()

    def _after_ack(self, now: float) -> None:
        """What every acceptable ACK ends with: loss detection, the PMTU
        probe's verdict, and whether our FIN is now acknowledged."""
        self._detect_losses(now)
        snd = self.snd
        if snd.pmtu_probe is not None:
            size = snd.pmtu_check()
            if size:
                self._set_mss(min(self.config.mss, self.peer_mss, size - DATA_OVERHEAD))
        if snd.fin_sent and snd.snd_una >= snd.snd_nxt and snd.fin_queued:
            self._on_fin_acked(now)

    def _process_sack(self, seg: Segment, ack: int) -> int:
        """Add the peer's SACK blocks to the scoreboard; returns bytes newly SACKed."""
        new = 0
        snd = self.snd
        lo = max(ack, snd.snd_una)
        hi = min(snd.snd_nxt, snd.sndbuf.end)
        for left32, right32 in seg.sack:
            left = unwrap(left32, lo)
            right = unwrap(right32, lo)
            left, right = max(left, lo), min(right, hi)
            if left < right:
                new += self.loss.on_sack_block(left, right)
        return new

    def _detect_losses(self, now: float) -> None:
        """Loss detection (LossRecovery.detect_losses) and what follows it."""
        snd = self.snd
        if self.loss.detect_losses(now, snd.snd_una, snd.snd_nxt, snd.sndbuf.end, self._deadlines[RTX]):
            self._on_newly_lost(now)

    def _on_newly_lost(self, now: float) -> None:
        """_detect_losses found something newly lost: a PMTU probe's loss
        ends the probe; otherwise recovery begins (once per window)."""
        snd = self.snd
        probe = snd.pmtu_probe
        lost = self.loss.lost
        if probe is not None and lost.overlap(probe[0], probe[1]):
            snd.pmtu_failed()
            if probe[0] <= lost.first()[0] and lost.last()[1] <= probe[1]:
                # Only the oversized probe was lost: that says the path's MTU
                # is smaller, not that it is congested (RFC 8899 4.1).
                return
        if self.loss.enter_recovery(snd.snd_una, snd.snd_nxt):
            self.stats.fast_recoveries += 1
            self.cc.on_congestion_event(now, snd.outstanding())

    def _after_ack_progress(self) -> None:
        if self._want_send_space and self.send_space >= self.config.send_buffer_size // 4:
            self._want_send_space = False
            self._events.append(SendSpaceAvailable(self))
        snd = self.snd
        if (
            not self._all_acked_reported
            and snd.snd_una >= snd.sndbuf.end
            and (snd.sndbuf or snd.fin_queued)
        ):
            if not snd.fin_queued or snd.snd_una > snd.sndbuf.end:
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
            if self.snd.fin_sent and self.snd.snd_una >= self.snd.snd_nxt:
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
    def segments_to_send(self, now: float, runs: int = 0) -> list[Segment | SegmentRun]:
        """Everything the connection wants on the wire now, in order.

        With `runs` (1 or more), consecutive full-size data segments may come
        as one `SegmentRun` (for encodings that write a batch in one pass):
        at most 64 KB of datagrams (one GSO send), or where that is one
        datagram, at most `runs` of them (for an encoding that sends a run's
        datagrams apart, core/endpoint.py's SourceTrains).
        """
        snd = self.snd
        snd.now = now
        out = self._out
        if out is not None:
            self._out = None
        else:
            out = []
        state = self.state
        synchronized = state is _ESTABLISHED or state in SYNCHRONIZED
        if synchronized and state is not _TIME_WAIT:
            snd.output(now, out, runs if self.ts_ok and not (self.sack_ok and self.rcv.ooo_ranges._starts) else 0)
        if self.rcv.ack_now and state is not _CLOSED and state is not _SYN_SENT:
            # Without SACK the sender counts duplicate ACKs, so each
            # out-of-order arrival gets its own (RFC 5681 4.2).
            owed = self.rcv.dupacks_owed
            self.rcv.dupacks_owed = 0
            if owed > 1:
                ack = self._control(snd.snd_nxt, ACK)
                out.extend([ack] * owed)
            elif not any(s.flags & ACK for s in out[-1:]) or (out and out[-1].flags & RST):
                out.append(self._control(snd.snd_nxt, ACK))
            self.rcv.ack_sent()
        if out:
            self.stats.segments_sent += len(out)
        if synchronized:
            self._arm_keepalive(now)
        return out

    def _control(self, seq: int, flags: int) -> Segment:
        """A segment without data (an ACK, a probe, a RST) from the sender's
        one segment builder; its window is unscaled before the handshake
        completes (RFC 7323 2.2)."""
        return self.snd.make(seq, flags, b"", self.state in _UNSCALED_WINDOW_STATES)

    def _queued(self) -> list[Segment | SegmentRun]:
        """The list of segments queued for the next segments_to_send (made
        when the first is queued: an idle connection holds none)."""
        out = self._out
        if out is None:
            out = self._out = []
        return out

    def on_datagram_too_big(self, size: int) -> bool:
        """The local stack refused to send a datagram of `size` bytes
        (EMSGSIZE: larger than the interface's MTU). If it was the PMTU
        probe, the probe failed for certain, and so would every larger size:
        the search ends below it at once (RFC 8899 4.6: a local error is
        authoritative), and the probe's data, which never left, is marked
        lost so that it goes again now rather than after loss detection
        (Sender.datagram_too_big). Returns whether it was the probe."""
        snd = self.snd
        probe = snd.pmtu_probe
        if not snd.datagram_too_big(size):
            return False
        if probe is not None and probe[1] > snd.snd_una:
            self._touch()  # its data is lost: the output path runs next
        return True

    def _maybe_window_update(self) -> None:
        """After the application reads, tell the sender if the window opened a lot."""
        state = self.state
        if state is not _ESTABLISHED and state not in CAN_RECEIVE or self.rcv.eof:
            return
        if self.rcv.window_update(self.mss, self.snd.now):
            self._touch()

    def _send_syn(self, now: float) -> None:
        cfg = self.config
        flags = SYN | (ACK if self.state == State.SYN_RECEIVED else 0)
        snd = self.snd
        seg = Segment(snd.iss & MASK32, self.rcv.rcv_nxt & MASK32 if flags & ACK else 0, flags)
        seg.wnd = min(cfg.window_size, 0xFFFF)
        seg.mss = cfg.mss
        offered_ws = self._choose_wscale(cfg.window_size) if cfg.window_scaling else None
        if self.state == State.SYN_SENT or (self.state == State.SYN_RECEIVED and self.rcv_wscale_ok):
            seg.wscale = offered_ws
        if cfg.sack and (self.state == State.SYN_SENT or self.sack_ok):
            seg.sack_permitted = True
        if cfg.timestamps and (self.state == State.SYN_SENT or self.ts_ok):
            snd.now = now
            seg.tsval, seg.tsecr = snd.timestamps()
        seg.mode = snd.mode
        seg.max_packet = min(cfg.max_packet_size or MAX_UDP_PAYLOAD, 0xFFFF)
        if self.state == State.SYN_SENT:
            seg.retry_token = self.retry_token
        snd.snd_nxt = max(snd.snd_nxt, snd.iss + 1)
        self._queued().append(seg)
        self._deadlines[RTX] = now + self.rtt.current_rto()
        self._touch()


    def _take_syn_options(self, seg: Segment) -> None:
        """Negotiate options from the peer's SYN (RFC 7323, RFC 2018, seed 003)."""
        cfg = self.config
        snd = self.snd
        if seg.mss:
            self.peer_mss = seg.mss
        if seg.wscale is not None and cfg.window_scaling:
            snd.snd_wscale = min(seg.wscale, MAX_WSCALE)
            self.rcv_wscale_ok = True
        else:
            snd.snd_wscale = 0
            self.rcv.rcv_wscale = 0  # both sides scale or neither (RFC 7323 2.2)
        self.sack_ok = self.loss.sack_ok = self.rcv.sack_ok = snd.sack_ok = cfg.sack and seg.sack_permitted
        self.ts_ok = snd.ts_ok = cfg.timestamps and seg.tsval is not None
        if seg.mode == MODE_STEP:
            snd.mode = MODE_STEP  # either side asking for step-by-step gets it
        ceiling = min(seg.max_packet or MAX_UDP_PAYLOAD, cfg.max_packet_size or MAX_UDP_PAYLOAD)
        snd.max_datagram_size = min(snd.max_datagram_size, ceiling)
        room = snd.max_datagram_size - DATA_OVERHEAD
        if room < 64:
            room = 64
        self._set_mss(min(self.mss, self.peer_mss, room))
        if cfg.pmtud and snd.mode != MODE_STEP:
            top = min(ceiling, cfg.pmtud_max, self.peer_mss + MAX_DATA_OVERHEAD, cfg.mss + MAX_DATA_OVERHEAD)
            route = self.route_mtu - cfg.datagram_overhead
            if self.route_mtu and route < top:
                top = route  # nothing larger leaves this host (RFC 8899 5.1.2's MAX_PLPMTU)
            snd.pmtu_ladder = pmtu_ladder(snd.max_datagram_size, top, self.route_mtu > 0)

    def _set_mss(self, mss: int) -> None:
        """The MSS changed (the peer's SYN, PMTUD): everyone who counts in
        segments hears of it."""
        self.mss = self.snd.mss = mss
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
        snd = self.snd
        if snd.snd_una >= snd.snd_nxt:
            return
        self.cc.on_rto(now, snd.outstanding())
        if snd.pmtu_probe is not None:
            snd.pmtu_failed()
        data_end = snd.sndbuf.end
        data_hi = min(snd.snd_nxt, data_end)
        # Everything outstanding and not SACKed is presumed lost; resend from snd_una.
        self.loss.on_rto(snd.snd_una, snd.snd_nxt, data_hi)
        if snd.fin_sent and snd.snd_una <= data_end:
            snd.fin_sent = False  # resend the FIN after the data
            snd.snd_nxt = data_end
        # One segment goes out at once even though pipe may exceed cwnd; a
        # FIN alone is resent by the normal output path.
        self._touch()
        lost = self.loss.lost
        if lost._starts:
            start, end = lost.first()
            snd.resend(start, min(end, start + snd.data_mss()), self._queued())
        self._deadlines[RTX] = now + self.rtt.current_rto()

    def _on_rack_timer(self, now: float) -> None:
        """RACK's reorder timer or TLP's probe timeout (recovery.py says which)."""
        if self.loss.rack.timer_fired(now):
            self._send_loss_probe(now)
        else:
            self._detect_losses(now)
        self._touch()

    def _send_loss_probe(self, now: float) -> None:
        """TLP (RFC 8985 7.3): one new segment if the peer's window takes it,
        else the last segment again, outside cwnd and pacing, to draw an ACK."""
        snd = self.snd
        data_end = snd.sndbuf.end
        nxt = snd.snd_nxt
        mss = snd.data_mss()
        n = min(mss, data_end - nxt, snd.snd_una + snd.snd_wnd - nxt)
        if n > 0 and snd.mode != MODE_STEP:  # step-by-step: never two segments in flight
            self.loss.start_rack().on_probe(nxt + n, False, now)
            snd.send_new(nxt, n, data_end, now, snd.pipe(), self._queued())
        else:
            end = min(nxt, data_end)
            start = max(snd.snd_una, snd.sndbuf.start, end - mss)
            if start >= end:
                return  # only a FIN is out: the RTO resends it
            self.loss.start_rack().on_probe(end, True, now)
            snd.resend(start, end, self._queued())
        self._deadlines[RTX] = now + self.rtt.current_rto()  # RFC 8985 7.3: the RTO guards the probe

    def _on_persist(self, now: float) -> None:
        self._deadlines[PERSIST] = NEVER
        self.snd.persist_probes += 1
        if self.snd.persist_probes > self.config.max_retries + self.config.keepalive_count:
            self._terminate(TimeoutError("peer's window stayed closed and it stopped answering probes"))
            return
        self.stats.window_probes += 1
        self.rtt.on_timeout()
        self._queued().append(self._control(self.snd.snd_una - 1, ACK))
        self._deadlines[PERSIST] = now + self.rtt.current_rto()
        self._touch()

    def _arm_keepalive(self, now: float) -> None:
        state = self.state
        if not self._keepalive or state is not _ESTABLISHED and state not in _KEEPALIVE_STATES:
            self._deadlines[KEEPALIVE] = NEVER
            return
        if self.snd.snd_una < self.snd.snd_nxt or self._deadlines[RTX] != NEVER:
            self._deadlines[KEEPALIVE] = NEVER  # the retransmission timer watches the peer
            return
        if self._keepalive_probes:
            self._deadlines[KEEPALIVE] = self._keepalive_sent + self._keepalive_interval
        else:
            self._deadlines[KEEPALIVE] = self.last_received + self._keepalive_idle


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
        self._queued().append(self._control(self.snd.snd_nxt - 1, ACK))
        self._deadlines[KEEPALIVE] = now + cfg.keepalive_interval
        self._touch()

    def _silence_note(self, now: float) -> str:
        """What a connection that gives up on its peer last knew of it, for
        the error: whether the peer had fallen silent or was still sending
        segments that failed our checks, and where each direction stood."""
        st = self.stats
        note = (f"last segment from the peer {now - self.last_received:.1f} s ago; "
                f"{st.segments_received} received, {st.dropped_segments} dropped")
        outstanding = self.snd.snd_nxt - self.snd.snd_una
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
    def _touch(self) -> None:
        """Output or a deadline may have changed: the endpoint looks at this
        connection on its next pass."""
        self._dirty[self] = None

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

    def _terminate(self, error: Exception | None) -> None:
        """Enter CLOSED for good, once: later calls change nothing."""
        if self._terminated:
            return
        self._terminated = True
        self.state = State.CLOSED
        self.error = error
        self._deadlines[:] = _UNARMED
        self.loss.rack.stop()
        self._events.append(ConnectionTerminated(self, error))
        self._touch()

    def __repr__(self) -> str:
        return f"<Connection cid={self.local_cid:#x} {self.state} peer={self.remote_addr!r}>"


# The handler of each timer (timers.py), by index.
_TIMER_HANDLERS = (
    Connection._on_rto, Connection._on_rack_timer, Connection._on_persist, Connection._on_delack,
    Connection._on_keepalive, Connection._on_pacing, Connection._on_timewait, Connection._on_connect_timeout,
    Connection._on_idle,
)
_UNARMED: Final = unarmed()


def copy_error(error: Exception) -> Exception:
    """A fresh instance of a stored connection error, to raise."""
    try:
        return type(error)(*error.args)
    except Exception:  # noqa: BLE001 - exotic constructor: raise the original
        return error
