"""The sending half of a connection.

SND.UNA, SND.NXT, SND.WND and the SND.WL1/WL2 rule (RFC 9293 3.3.1,
3.10.7.4) and the send buffer; what may leave now: the congestion and the
peer's windows, Nagle (RFC 9293 3.7.4) and sender SWS avoidance (3.8.6.2.1),
the pacer's token bucket; building segments (PSH and FIN flags, our ACK,
window, timestamps and SACK blocks) and runs of full-size segments for a GSO
train; the sent log, which times each first transmission (RFC 6298, Karn)
and yields delivery-rate samples (draft-cheng-iccrg-delivery-rate-estimation:
the app-limited mark, the idle restart); PMTU probes (RFC 8899).

The connection owns the state machine and the timer handlers, and decides
when output runs (`output`, in synchronized states) and what an ACK does in
which order; this class knows nothing of states. It holds no reference to
the connection: it is given, at construction, the parts it works with (the
statistics, the RTT estimator, congestion control, loss recovery, the
receiver whose ACK fields every segment carries) and the connection's timer
table, where it arms the retransmission, persist and pacing entries. What it
sends is appended to the list the caller passes.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from typing import Final, TYPE_CHECKING

from ..config import MODE_STEP, MODES
from ..wire.datagram import DATA_OVERHEAD, SACK_ROOM
from ..wire.segment import ACK, FIN, PSH, Payload, Segment, SegmentRun, unwrap
from .rangeset import EMPTY, RangeSet
from .receiver import MASK32, TS_HZ
from .sendbuf import SendBuffer
from .timers import NEVER, PACING, PERSIST, RTX

if TYPE_CHECKING:
    from ..config import Config
    from .cc.base import CongestionControl
    from .receiver import Receiver
    from .recovery import LossRecovery
    from .rtt import RttEstimator
    from .stats import ConnectionStats

# What output builds: segments and runs, in wire order.
Outgoing = list[Segment | SegmentRun]

# Datagram sizes PMTUD tries, smallest first: jumbo Ethernet, then the steps
# up to what loopback carries. A failed size ends the search above it (RFC
# 8899 5.3).
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
# jumbo frames) probes once this many probes' worth was delivered. The
# unit is the smallest size still to try: a route MTU tried first
# (pmtu_ladder's `top_first`) goes when the ladder's first step would
# have, not when the window holds twelve of it (on loopback: 780 kB, 2-3
# ms of 1,472-byte datagrams, whose per-datagram cost flattened the
# delivery rate and ended BBR's Startup with a window of 0.5-1.5 MB); the
# local route carries it, so it is seldom lost.
PMTU_FIRST_PROBE_CWND: Final = 12
PMTU_FIRST_PROBE_DELIVERED: Final = 48
_UNPACED: Final = float("inf")
# A run of segments is at most what one UDP GSO send carries: 64 KB in at
# most 64 datagrams (each with DATA_OVERHEAD bytes of framing).
RUN_BYTES: Final = 65000
RUN_SEGMENTS: Final = 64
# Where that is one datagram (path MTU discovery's sizes) and the encoding
# sends a run's datagrams apart (the endpoint's SourceTrains, `runs` > 1 in
# output), a run holds up to that many: its SegmentRun, sent-log and RACK
# records are then made once per several datagrams, not once a datagram.
# A sender that waited for pacing tokens and woke late keeps what it earned
# while late, up to this long at the pacing rate and this share of the RTT
# (see pacing_budget).
PACING_CARRY: Final = 0.004
PACING_CARRY_RTT: Final = 0.125
RUN_ALONE: Final = 8192  # a segment this large is worth the run path by itself (PMTUD sizes)

_LADDERS: Final[dict[tuple[int, int, bool], tuple[int, ...]]] = {}  # (size, top, top first) -> PMTUD ladder


def pmtu_ladder(size: int, top: int, top_first: bool = False) -> tuple[int, ...]:
    """The PMTU probe sizes to try above `size` up to `top`, in the order
    tried: PMTU_PROBE_SIZES in that range, and `top` itself unless it is
    above them all, smallest first. `top_first` (`top` is the local route's
    MTU, which the adapter read from the kernel): `top` is tried first and
    the smaller sizes only if it fails. RFC 8899 lets the search take the
    local interface's MTU as its MAX_PLPMTU (5.1.2) and choose its probe
    sequence (5.3.2); a local route that carries 64 KB (loopback) is then
    confirmed in one round trip instead of one per step. One shared tuple
    per case (a connection no longer copies a list)."""
    ladder = _LADDERS.get((size, top, top_first))
    if ladder is None:
        steps = [s for s in PMTU_PROBE_SIZES if size < s <= top]
        if top > size and top not in steps and (top < PMTU_PROBE_SIZES[-1] or top_first):
            steps.append(top)
            steps.sort()
        if top_first and len(steps) > 1:
            steps.insert(0, steps.pop())
        ladder = _LADDERS[(size, top, top_first)] = tuple(steps)
    return ladder


def _record_start(record: tuple) -> int:
    return record[0]


class Sender:
    __slots__ = (
        "iss", "snd_una", "snd_nxt", "snd_wnd", "max_snd_wnd", "snd_wl1", "snd_wl2", "snd_wscale",
        "sndbuf", "fin_queued", "fin_sent", "persist_probes", "delivered", "ever_retransmitted",
        "mss", "max_datagram_size", "pmtu_ladder", "pmtu_probe", "ts_ok", "sack_ok", "mode", "now",
        "_sent_log", "_delivered_time", "_first_sent_time", "_app_limited_until",
        "_pacing_tokens", "_pacing_time", "_pacing_due", "_pmtu_failures", "_tsval_at", "_tsval", "_ts_offset",
        "_config", "_stats", "_rtt", "_cc", "_loss", "_rcv", "_deadlines",
        "_sndbuf_least", "_sndbuf_most", "_nodelay",
    )

    def __init__(self, config: Config, stats: ConnectionStats, rtt: RttEstimator, cc: CongestionControl,
                 loss: LossRecovery, rcv: Receiver, deadlines: list[float], iss: int, ts_offset: int,
                 mss: int, now: float) -> None:
        self._config = config
        self._stats = stats
        self._rtt = rtt
        self._cc = cc
        self._loss = loss  # told of every transmission and resend (RACK, the scoreboard)
        self._rcv = rcv  # RCV.NXT, the window, TS.Recent and SACK blocks every segment carries
        self._deadlines = deadlines  # the connection's timer table (timers.py)
        # Settings read per segment, as native attributes (the Config is a
        # Python dataclass: a dictionary lookup per read from compiled
        # code; it is frozen, so the copies hold). The send buffer's bounds
        # (send_buffer_limit): without autotuning both are send_buffer_size.
        self._sndbuf_least = config.send_buffer_size
        self._sndbuf_most = max(config.window_size, config.send_buffer_size) if config.autotune \
            else config.send_buffer_size
        self._nodelay = config.nodelay
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss  # next sequence position to send new data/SYN/FIN at
        self.snd_wnd = config.mss  # until the peer tells us
        self.max_snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.snd_wscale = 0  # the peer's shift (applied to windows it sends)
        self.sndbuf = SendBuffer(iss + 1)
        self.fin_queued = False  # application finished writing
        self.fin_sent = False
        self.persist_probes = 0  # zero-window probes sent since the window last opened
        # (start, end, time) of each first transmission, in send order: RTT
        # samples come from the newest one a cumulative ACK covers, unless any
        # byte that ACK covers was ever resent (Karn's rule, RFC 6298 3).
        # Each record also keeps what had been delivered when it was sent, so
        # its ACK yields a delivery-rate sample (the BBR rate estimator's idea).
        # Made on first use and dropped when empty: an empty deque still costs
        # 760 bytes, and most of 10,000 idle connections have nothing in flight.
        self._sent_log: deque[tuple[int, int, float, int, float, bool, float]] | None = None
        self.delivered = 0  # bytes delivered to the peer so far (ACKed or SACKed)
        self._delivered_time = now
        self._first_sent_time = now  # send time of the newest segment a rate sample came from
        self._app_limited_until = 0  # delivered count until which samples are app-limited
        self._pacing_tokens = 0.0
        self._pacing_time = now
        self._pacing_due: float | None = None  # the sender waits for tokens due then (_pace_wait)
        # Bytes ever resent, for Karn's rule and the PMTU probe's verdict
        # (the shared read-only EMPTY until the first resend).
        self.ever_retransmitted = EMPTY
        self.mss = mss  # the connection's MSS (Connection._set_mss keeps it)
        self.max_datagram_size = config.max_datagram_size  # what we send now
        # PMTUD (RFC 8899): sizes still to try (a tuple shared by the
        # connections with the same limits), the probe in flight, failures.
        self.pmtu_ladder: tuple[int, ...] = ()
        self.pmtu_probe: tuple[int, int, int] | None = None  # (start, end, datagram size)
        self._pmtu_failures = 0
        self.ts_ok = False  # the handshake negotiated timestamps (set with Connection.ts_ok)
        self.sack_ok = False  # the handshake negotiated SACK (set with Connection.sack_ok)
        self.mode = MODES[config.mode]
        self.now = now  # time of the connection's input or output call in progress (for TSval)
        self._tsval_at = -1.0  # the time _tsval was computed for
        self._tsval = 0
        self._ts_offset = ts_offset

    # ------------------------------------------------------ the application
    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Queue bytes for sending, as many as the send buffer takes; returns
        how many were taken."""
        sndbuf = self.sndbuf
        start = sndbuf.start
        snd_una = self.snd_una
        room = self.send_buffer_limit() - (sndbuf.end - (snd_una if snd_una > start else start))  # (unsent_and_unacked)
        size = len(data)
        n = size if size <= room else (room if room > 0 else 0)
        if n:
            sndbuf.append(memoryview(data)[:n] if n < size else data)
        return n

    def send_buffer_limit(self) -> int:
        """Bytes accepted ahead of acknowledgment: with autotuning, twice what
        the congestion and peer's windows let fly (Linux sizes its send
        buffer the same way), at least send_buffer_size (and without
        autotuning, exactly that: then _sndbuf_most is send_buffer_size too)."""
        least = self._sndbuf_least
        want = 2 * min(self._cc.cwnd, max(self.max_snd_wnd, self.snd_wnd))
        if want <= least:
            return least
        return min(want, self._sndbuf_most)

    def data_end(self) -> int:
        """Position just past the last byte the application has written."""
        return self.sndbuf.end

    def unsent_and_unacked(self) -> int:
        return self.sndbuf.end - max(self.snd_una, self.sndbuf.start)

    # ------------------------------------------------------------ windows
    def outstanding(self) -> int:
        """FlightSize: sent and not cumulatively acknowledged data bytes."""
        nxt = self.snd_nxt
        end = self.sndbuf.end  # (data_end(); comparisons rather than min/max calls: once per ACK and send)
        outstanding = (nxt if nxt <= end else end) - self.snd_una
        return outstanding if outstanding > 0 else 0

    def pipe(self) -> int:
        """RFC 6675's pipe: outstanding bytes believed still in the network."""
        return self._loss.pipe(self.outstanding())

    def cwnd(self) -> int:
        if self.mode == MODE_STEP:
            return self.mss  # stop-and-wait: one segment in flight
        return self._cc.cwnd

    def data_mss(self) -> int:
        """Data bytes per segment now: the MSS, less room for SACK blocks
        while this side holds out-of-order data and so reports them on
        every segment (as TCP's current MSS counts its options)."""
        if self.sack_ok and self._rcv.ooo_ranges._starts:  # (emptiness without a __bool__ call)
            return max(self.mss - SACK_ROOM, 64)
        return self.mss

    def syn_window(self, seq: int, wnd: int) -> None:
        """The window of the peer's SYN (never scaled, RFC 7323 2.2), which
        is also where SND.WL1/WL2 start."""
        self.snd_wnd = wnd
        self.snd_wl1, self.snd_wl2 = seq, self.iss

    def update_window(self, seq: int, ack: int, wnd: int) -> bool:
        """RFC 9293 3.10.7.4: take SEG.WND (scaled) from a segment no older
        than the last one that set it (the SND.WL1/WL2 rule). A window that
        opens from zero ends the persist probing. True if the window changed."""
        if self.snd_wl1 < seq or (self.snd_wl1 == seq and self.snd_wl2 <= ack):
            old = self.snd_wnd
            if wnd and not old:
                self._deadlines[PERSIST] = NEVER
                self.persist_probes = 0
            self.snd_wnd = wnd
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            if wnd > self.max_snd_wnd:
                self.max_snd_wnd = wnd
            return wnd != old
        return False

    # --------------------------------------------------------- acknowledgment
    def ack_of_syn(self, seq: int, ack: int, wnd: int) -> None:
        """Our SYN acknowledged: SND.UNA moves past it, the window is taken
        as the ACK carries it, the retransmission timer stops."""
        self.snd_una = ack
        self._deadlines[RTX] = NEVER
        self.snd_wnd = wnd
        self.snd_wl1, self.snd_wl2 = seq, ack
        if wnd > self.max_snd_wnd:
            self.max_snd_wnd = wnd

    def on_ack(self, ack: int, newly_sacked: int, removed_sacked: int, now: float) -> int:
        """SND.UNA < SEG.ACK <= SND.NXT (RFC 9293 3.10.7.4): SND.UNA moves,
        the send buffer lets go of what is acknowledged, the bytes count as
        delivered, and the sent log times the ACK (RFC 6298, Karn) and takes
        its delivery-rate sample. `removed_sacked`: bytes the ACK covered
        that were SACKed earlier (loss recovery's on_cumulative_ack). Returns
        the bytes newly delivered."""
        snd_una = self.snd_una
        sndbuf = self.sndbuf
        data_end = sndbuf.end
        acked_data = (ack if ack < data_end else data_end) - (snd_una if snd_una > sndbuf.start else sndbuf.start)
        self.snd_una = ack
        sndbuf.trim(ack if ack < data_end else data_end)
        delivered = (acked_data if acked_data > 0 else 0) - removed_sacked + newly_sacked
        self.on_delivered(delivered, now)
        log = self._sent_log
        if log:
            # The newest record the ACK covers times the path and gives the
            # delivery-rate sample. (Each record is read from the log once:
            # compiled, every read of a tuple from the deque unboxes it.)
            rec = newest = log[0]
            first = rec[0]
            timed = False
            while True:
                if rec[1] <= ack:
                    log.popleft()
                    newest = rec
                    timed = True
                    if not log:
                        break
                    rec = log[0]
                else:
                    if rec[0] < ack:
                        # Part of a run is acknowledged: all of it left at the
                        # same time, so the acknowledged part times the path
                        # as well as the rest will.
                        newest = rec
                        timed = True
                    break
            if not log:
                self._sent_log = None
            if timed:
                # Time only ACKs that newly covered data sent once (Karn: no
                # sample when any byte this ACK covers was ever resent) and
                # not SACKed earlier: an ACK that jumps over old SACKed data
                # is late by design.
                ever = self.ever_retransmitted
                if not removed_sacked and not (ever._starts and ever.overlap(first, ack)):
                    self._rtt.on_sample(now - newest[2])
                self._first_sent_time = newest[2]
                self._delivery_rate(newest, now)
        if self.ever_retransmitted._starts:
            self.ever_retransmitted.discard_below(ack)
        return delivered

    def on_delivered(self, nbytes: int, now: float) -> None:
        if nbytes <= 0:
            return
        self.delivered += nbytes
        self._delivered_time = now
        # What was just delivered left about an RTT ago; a rate sample, when
        # this ACK yields one, replaces that with the exact send time.
        left = now - 2 * (self._rtt.latest_rtt or 0.0)
        if left > self._first_sent_time:
            self._first_sent_time = left
        if self._app_limited_until and self.delivered > self._app_limited_until:
            self._app_limited_until = 0

    def _delivery_rate(self, rec: tuple[int, int, float, int, float, bool, float], now: float) -> None:
        """The delivery-rate sample of the sent-log record `rec`, acknowledged
        now: what was delivered between its send and its ACK, over the longer
        of the send and ACK intervals, so ACKs that arrive bunched do not
        inflate it (draft-cheng-iccrg-delivery-rate-estimation)."""
        _, _, sent_time, delivered_then, delivered_time_then, app_limited, first_sent_then = rec
        interval = now - delivered_time_then
        if sent_time - first_sent_then > interval:
            interval = sent_time - first_sent_then
        if interval > 0:
            self._cc.on_delivery_rate(now, (self.delivered - delivered_then) / interval, interval, app_limited,
                                      self._stats.retransmitted_bytes)

    def sack_rate_sample(self, seg: Segment, now: float) -> float | None:
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
        rtt = None
        if not self.ever_retransmitted.overlap(edge, edge + 1):
            # Karn: a byte never resent was SACKed by its only transmission.
            # Without these, a path that is in recovery most of the time
            # (2 % loss at 100 ms) gave almost no RTT samples at all.
            rtt = now - rec[2]
            self._rtt.on_sample(rtt)
        self._delivery_rate(rec, now)
        return rtt

    def note_retransmission(self, start: int, end: int) -> None:
        """[start, end) is being resent: recovery's bookkeeping, Karn's."""
        self._loss.on_retransmit(start, end, self.now, self.snd_una, self.snd_nxt, self._deadlines[RTX])
        ever = self.ever_retransmitted
        if ever is EMPTY:  # (made the sender's own at the first resend)
            ever = self.ever_retransmitted = RangeSet()
        ever.add(start, end)
        self._stats.retransmits += 1
        self._stats.retransmitted_bytes += end - start

    def resend(self, start: int, end: int, out: Outgoing) -> None:
        """[start, end) again, as one segment (RFC 6675's rule 1, an RTO's
        first segment, a TLP probe of the last segment)."""
        self.note_retransmission(start, end)
        out.append(self.data_segment(start, end, False))

    # ------------------------------------------------------------- output
    def output(self, now: float, out: Outgoing, runs: int = 0) -> None:
        """Append what may leave now: resends of lost data, new data, the
        FIN (the connection calls this in synchronized states only). `runs`:
        0, every segment alone; else full-size segments as SegmentRuns of at
        most 64 KB of datagrams, or where that is one datagram, of at most
        `runs` of them (Connection.segments_to_send)."""
        lost = self._loss.lost._starts
        if self.snd_nxt >= self.sndbuf.end and not lost and (self.fin_sent or not self.fin_queued):
            # Nothing to send, the usual case (an ACK or a timer for an idle
            # connection): only the bookkeeping the full path below does
            # when it finds nothing either (pacing tokens, app-limited mark).
            self._store_tokens(self.pacing_budget(now))
            self._note_app_limited(self.pipe(), self.cwnd())
            return
        if lost or self.fin_queued or not self.send_small(now, out, runs):
            self.output_full(now, out, runs)

    def send_small(self, now: float, out: Outgoing, runs: int) -> bool:
        """New data that fits in one segment and may all go now (a message,
        a reply): that segment, without the general loop. A guard in front
        of the helpers output_full calls (tests/core/test_send_small.py
        runs both); False, having changed nothing, when anything else
        applies: the caller then takes the general path. Called with
        nothing lost and no FIN queued."""
        nxt = self.snd_nxt
        data_end = self.sndbuf.end
        avail = data_end - nxt
        mss = self.mss
        if avail > mss or avail <= 0 or (self.sack_ok and self._rcv.ooo_ranges._starts):
            return False  # (a smaller data_mss, too)
        cwnd = self.cwnd()
        pipe = self.pipe()
        if (
            avail > self.snd_una + self.snd_wnd - nxt
            or avail > cwnd - pipe
            or (avail < mss and self.nagle_holds(nxt))
        ):
            return False
        # (No PMTU probe can be due here: a probe is larger than the MSS,
        # since every size left on the ladder exceeds max_datagram_size.)
        budget = self.pacing_budget(now)
        if budget < avail:
            # (taking the budget changed the bucket: the general path gets it)
            self.output_full(now, out, runs, budget)
            return True
        self.send_new(nxt, avail, data_end, now, pipe, out)
        self._store_tokens(budget - avail)
        self._note_app_limited(pipe + avail, cwnd)
        self.on_data_sent(now)
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

    def nagle_holds(self, nxt: int) -> bool:
        """Nagle (RFC 9293 3.7.4, RFC 896): a segment smaller than the MSS
        waits while earlier data is unacknowledged, unless `nodelay`."""
        return not self._nodelay and self.snd_una < nxt

    def sws_holds(self, n: int, pipe: int, cwnd: int) -> bool:
        """Sender SWS avoidance (RFC 9293 3.8.6.2.1): a window-limited
        sliver of `n` bytes (less than the MSS and than what is waiting)
        waits unless it is half the largest window the peer offered."""
        return n < self.max_snd_wnd // 2 or pipe + n > cwnd

    def on_data_sent(self, now: float) -> None:
        """Data left: the retransmission timer runs (RFC 6298 5.1) and no
        persist probe is needed."""
        if self._deadlines[RTX] == NEVER:
            self._deadlines[RTX] = now + self._rtt.current_rto()
        self._deadlines[PERSIST] = NEVER

    def restart_rto(self, now: float) -> None:
        """RFC 6298 5.2/5.3 after a new ACK: stop the timer when all is
        acknowledged, else restart it."""
        self._deadlines[RTX] = NEVER if self.snd_una >= self.snd_nxt else now + self._rtt.current_rto()

    def output_full(self, now: float, out: Outgoing, runs: int = 0, budget: float | None = None) -> None:
        """output's whole path (tests check the shortcuts against it);
        `budget`: the pacing budget, when the caller has taken it already."""
        mss = self.data_mss()
        cwnd = self.cwnd()
        pipe = self.pipe()
        sent_any = False
        if budget is None:
            budget = self.pacing_budget(now)
        # 1. Retransmit what is declared lost (RFC 6675 NextSeg rule 1).
        loss = self._loss
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
            self.resend(start, end, out)
            pipe += end - start
            sent_any = True
            if start <= self.snd_una:
                # Resending the first unacknowledged segment restarts the
                # timer (as Linux does): the resend gets a whole RTO, and an
                # RTO armed long ago for the original does not fire while the
                # repair is on its way.
                self._deadlines[RTX] = now + self._rtt.current_rto()
        # 2. New data, within the peer's window and the congestion window.
        data_end = self.sndbuf.end  # data_end()
        wnd_edge = self.snd_una + self.snd_wnd
        probe_payload = self.pmtu_probe_payload()
        while self.snd_nxt < data_end:
            nxt = self.snd_nxt
            avail = data_end - nxt
            if probe_payload and avail >= probe_payload:
                # A data-carrying PMTU probe: one datagram of the next size.
                unit = min(self.pmtu_ladder) - DATA_OVERHEAD  # (see PMTU_FIRST_PROBE_CWND)
                if (
                    nxt + probe_payload <= wnd_edge
                    and pipe + probe_payload <= max(cwnd, 2 * probe_payload)
                    and (cwnd >= PMTU_FIRST_PROBE_CWND * unit
                         or self.delivered >= PMTU_FIRST_PROBE_DELIVERED * unit
                         or self.max_datagram_size > self._config.max_datagram_size)
                ):
                    if budget < probe_payload:
                        # Wait for the tokens (the bucket holds a probe, see
                        # _pacing_burst): sending smaller data first would
                        # spend them, and a paced flow would never probe.
                        self._pace_wait(now, probe_payload - budget)
                        break
                    budget -= probe_payload
                    self.pmtu_probe = (nxt, nxt + probe_payload, self.pmtu_ladder[0])
                    self.send_new(nxt, probe_payload, data_end, now, pipe, out)
                    pipe += probe_payload
                    sent_any = True
                probe_payload = 0
                continue
            if runs and avail > mss:
                rows = RUN_BYTES // (mss + DATA_OVERHEAD + self._config.datagram_overhead)
                apart = rows == 1
                if apart:
                    rows = runs  # (one datagram a GSO send: as many as the encoding sends apart)
                room = min(avail, wnd_edge - nxt, cwnd - pipe, RUN_SEGMENTS * mss, rows * mss)
                if budget < room:
                    # Paced: wait for a millisecond's worth (a whole run on a
                    # fast path) rather than trickle out a segment per
                    # wake-up, each of which costs tens of us of Python.
                    quantum = min(room, max(mss, (self._cc.pacing_rate or 0.0) * 0.001))
                    if budget < quantum:
                        self._pace_wait(now, quantum - budget)
                        break
                    room = int(budget)
                if room >= avail and self._nodelay and not self.fin_queued:
                    length = avail  # all the rest, the last segment short
                else:
                    length = room // mss * mss
                    if self.fin_queued and nxt + length == data_end:
                        length -= mss  # the last segment carries the FIN: send_new sends it
                if length > mss or length == mss >= RUN_ALONE:
                    self._send_run(nxt, length, now, pipe, out, apart)
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
                    if self.sws_holds(n, pipe, cwnd):
                        break
                elif self.nagle_holds(nxt):
                    break
            self.send_new(nxt, n, data_end, now, pipe, out)
            pipe += n
            sent_any = True
        # 3. A FIN on its own once all data is out.
        if self.fin_queued and not self.fin_sent and self.snd_nxt == data_end:
            out.append(self.make(data_end, FIN | ACK))
            self.snd_nxt = data_end + 1
            self.fin_sent = True
            sent_any = True
        self._store_tokens(budget)
        if not lost._starts and (self.snd_nxt >= data_end or self.snd_nxt + mss > wnd_edge):
            # Out of data, or stopped by the peer's receive window: either
            # way the application (ours, or the peer's, which has not read
            # enough to open the window) limits the flow, not the path, as
            # RFC 9438 reads "application-limited". Marked, the rate samples
            # taken until this data is delivered cannot end BBR's Startup
            # while autotuning still grows the peer's window.
            self._note_app_limited(pipe, cwnd)
        if sent_any:
            self.on_data_sent(now)
        elif (
            self.snd_nxt < data_end
            and self.snd_una >= self.snd_nxt
            and self._deadlines[RTX] == NEVER
            and self._deadlines[PERSIST] == NEVER
            and self.snd_wnd < min(mss, data_end - self.snd_nxt)
        ):
            # Zero (or useless) window with data waiting: probe (RFC 9293 3.8.6.1).
            self._deadlines[PERSIST] = now + self._rtt.current_rto()

    def send_new(self, nxt: int, n: int, data_end: int, now: float, pipe: int, out: Outgoing) -> None:
        """New data [nxt, nxt + n) as one segment (with the FIN if it is the last)."""
        fin = self.fin_queued and nxt + n == data_end
        out.append(self.data_segment(nxt, nxt + n, fin))
        self.snd_nxt = nxt + n + (1 if fin else 0)
        if fin:
            self.fin_sent = True
        self._record_first_transmission(nxt, nxt + n, now, pipe, 0)

    def _send_run(self, nxt: int, length: int, now: float, pipe: int, out: Outgoing,
                  apart: bool = False) -> None:
        """Full-size segments [nxt, nxt + length) as one SegmentRun (no FIN;
        runs leave in synchronized states only: the window is scaled).

        `apart`: the run's datagrams leave one by one (path MTU discovery's,
        gathered): it goes out as a SegmentRun for each stretch of it that
        lies in one written chunk of the send buffer, and one for each
        datagram across two (SendBuffer.stretches), so that only such a
        datagram is joined, not the whole run. The datagrams are the same;
        the run is one run for the records and the counters."""
        end = nxt + length
        tsval, tsecr = self.timestamps()
        rcv = self._rcv
        wnd = rcv.advertise_window(False, self.mss)
        rcv.ack_sent()
        sndbuf = self.sndbuf
        ack32 = rcv.rcv_nxt & MASK32
        mss = self.mss
        pieces = 1
        if apart and length > mss:  # (a run of one datagram is joined or not whole, as before)
            stops = sndbuf.stretches(nxt, end, mss)
            pieces = len(stops)
            pos = nxt
            for stop in stops:
                out.append(SegmentRun(pos & MASK32, ack32, ACK, self._data_flags(stop, False),
                                      wnd, tsval, tsecr, *sndbuf.span(pos, stop), stop - pos, mss))
                pos = stop
        else:
            out.append(SegmentRun(nxt & MASK32, ack32, ACK, self._data_flags(end, False),
                                  wnd, tsval, tsecr, *sndbuf.span(nxt, end), length, mss))
        self.snd_nxt = end
        stats = self._stats
        stats.bytes_sent += length
        stats.segments_sent += -(-length // mss) - pieces  # each piece counts as one in segments_to_send
        stats.runs_sent += 1
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
        rack = self._loss.start_rack()
        if run_mss:
            rack.on_transmit_run(start, end, run_mss, now, self.snd_una, self._deadlines[RTX])
        else:
            rack.on_transmit(start, end, now, False, self.snd_una, self._deadlines[RTX])

    # ------------------------------------------------------------- pacing
    def pacing_budget(self, now: float) -> float:
        """Bytes the pacer lets out now (a token bucket refilled at pacing_rate)."""
        rate = self._cc.pacing_rate
        if not rate:
            return _UNPACED
        tokens = self._pacing_tokens + (now - self._pacing_time) * rate
        self._pacing_time = now
        cap = self.pacing_burst()
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
                srtt = self._rtt.srtt
                if srtt is not None and srtt * PACING_CARRY_RTT < carry:
                    carry = srtt * PACING_CARRY_RTT
                cap += min(late, carry) * rate
        return tokens if tokens < cap else cap

    def pacing_burst(self) -> float:
        # A burst of a couple of milliseconds: each output call costs real CPU
        # in Python, so pacing finer than that would only burn it. At least a
        # PMTU probe, which must leave in one piece (none once the search is
        # over, or with PMTUD off: then without the call). (Comparisons
        # rather than max() of three: that is a call through Python's
        # builtins from compiled code, per output pass.)
        burst = float(10 * self.mss)
        by_rate = (self._cc.pacing_rate or 0.0) * 0.002
        if by_rate > burst:
            burst = by_rate
        if self.pmtu_ladder:
            probe = self.pmtu_probe_payload()
            if probe > burst:
                burst = float(probe)
        return burst

    def _pace_wait(self, now: float, missing: float) -> None:
        rate = self._cc.pacing_rate or 1.0
        # At least a microsecond: a shortfall of a rounding error must still
        # move the clock, or the timer would fire again at the same instant.
        self._deadlines[PACING] = self._pacing_due = now + max(missing / rate, 1e-6)

    # ------------------------------------------------------------ segments
    def data_segment(self, start: int, end: int, fin: bool) -> Segment:
        payload = self.sndbuf.view(start, end)  # no copy when it lies in one written chunk
        seg = self.make(start, self._data_flags(end, fin), payload)
        self._stats.bytes_sent += end - start
        return seg

    def _data_flags(self, end: int, fin: bool) -> int:
        """PSH on the segment that empties the send buffer (RFC 9293 3.9.1's
        push), with the FIN when it is the last."""
        if end == self.sndbuf.end:
            return ACK | PSH | FIN if fin else ACK | PSH
        return ACK

    def make(self, seq: int, flags: int, payload: Payload = b"", unscaled: bool = False) -> Segment:
        """A segment with our current ACK, window, timestamps and SACK blocks.
        `unscaled`: the window goes unscaled (a segment sent before the
        handshake completed, RFC 7323 2.2); data segments never are."""
        rcv = self._rcv
        seg = Segment(seq & MASK32, rcv.rcv_nxt & MASK32, flags, 0, payload)
        if flags & ACK:
            seg.wnd = rcv.advertise_window(unscaled, self.mss)
            rcv.ack_sent()
        if self.ts_ok:
            seg.tsval, seg.tsecr = self.timestamps()
        if self.sack_ok and rcv.ooo_ranges._starts:
            seg.sack = rcv.sack_blocks()
        return seg

    def timestamps(self) -> tuple[int, int]:
        """TSval and TSecr for a segment sent now (RFC 7323 4.1; TSval
        computed once per instant)."""
        now = self.now
        if self._tsval_at != now:
            self._tsval_at = now
            self._tsval = (int(now * TS_HZ) + self._ts_offset) & MASK32
        return self._tsval, self._rcv.ts_recent or 0

    # ---------------------------------------------------------------- PMTUD
    def pmtu_probe_payload(self) -> int:
        """Payload of the next PMTU probe to send, or 0 when none is due (or
        the application has finished writing: no probe from FIN-WAIT-1 on)."""
        if not self.pmtu_ladder or self.pmtu_probe is not None or self.fin_queued:
            return 0
        # The probe is a datagram of exactly the size tried (a data segment
        # in the short form); data segments after it carry SACK_ROOM less
        # data when they must report SACK blocks, so none is larger.
        return self.pmtu_ladder[0] - DATA_OVERHEAD

    def pmtu_check(self) -> int:
        """After an ACK: a probe fully delivered, never resent, confirms its
        size. Returns the new datagram size (0: none confirmed); the caller
        sets the MSS that goes with it."""
        probe = self.pmtu_probe
        if probe is None:
            return 0
        start, end, size = probe
        delivered = self.snd_una >= end or not self._loss.sacked.gaps(max(start, self.snd_una), end)
        if delivered and not self.ever_retransmitted.overlap(start, end):
            self.pmtu_probe = None
            self._pmtu_failures = 0
            # What is left to try: the sizes above this one (none after a
            # route MTU tried first, whose smaller sizes follow it).
            self.pmtu_ladder = tuple(s for s in self.pmtu_ladder[1:] if s > size)
            self.max_datagram_size = size
            return size
        if delivered:
            self.pmtu_failed()
        return 0

    def datagram_too_big(self, size: int) -> bool:
        """The local stack refused a datagram of `size` bytes (EMSGSIZE). If
        it was the PMTU probe, the search ends below it (RFC 8899 4.6: a
        local error is authoritative) and the probe's data, which never
        left, is marked lost. Returns whether it was the probe."""
        probe = self.pmtu_probe
        if probe is None or size < probe[2]:  # (larger: the probe with SACK blocks)
            return False
        start, end, _size = probe
        self.pmtu_probe = None
        self._pmtu_failures = 0
        self._pmtu_below(size)
        self._stats.pmtu_local_failures += 1
        if end > self.snd_una:
            self._loss.own_lost().add(max(start, self.snd_una), end)
        return True

    def pmtu_failed(self) -> None:
        self.pmtu_probe = None
        self._pmtu_failures += 1
        if self._pmtu_failures >= PMTU_MAX_PROBES:
            self._pmtu_below(self.pmtu_ladder[0])  # this size does not pass
            self._pmtu_failures = 0

    def _pmtu_below(self, size: int) -> None:
        """`size` does not pass, nor would anything larger: the search goes
        on with the smaller sizes still to try (a route MTU tried first
        falls back to the steps below it), or ends when there are none."""
        self.pmtu_ladder = tuple(s for s in self.pmtu_ladder if s < size)
