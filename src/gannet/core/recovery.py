"""RACK-TLP loss detection (RFC 8985) for the sending side of a Connection.

RACK ("recent acknowledgment", RFC 8985 6) judges loss by time, not by
counting: once data sent at time T has been delivered (ACKed or SACKed),
anything sent before T that is still outstanding is lost when it is older
than RACK.rtt + reo_wnd. It finds lost retransmissions (a retransmission is
judged by its own send time) and losses at the end of a flight that a count
of SACKed segments never reaches. TLP (tail loss probe, RFC 8985 7) makes
sure an ACK comes back to judge by: when ACKs stop for about two RTTs it
sends one segment, new data or the last segment again.

Why RACK replaces the RFC 6675 DupThresh rule instead of running beside it
(RFC 8985 permits either): with no reordering seen, RACK's window is zero
once DupThresh segments are SACKed or recovery has begun, so it marks a
hole lost on the same ACK that DupThresh would; once reordering has been
seen, DupThresh would retransmit exactly the segments RACK is waiting for,
which is the spurious retransmission RACK exists to avoid. Linux made the
same choice (RACK only, for SACK connections). Without SACK, the connection
keeps counting duplicate ACKs (NewReno) and this module stays idle.

Bookkeeping is per transmission, as byte ranges in send order:

- originals: first transmissions, in two parallel lists (starts, records)
  with a moving head. New data leaves in sequence order, so these are sorted
  by sequence *and* by time: a cumulative ACK pops from the head, a SACK
  block finds its newest original by bisection. A record is a run: segments
  of `mss` bytes that left at one instant with consecutive serials (a
  `SegmentRun`, or one segment alone), so segment k of a record is
  [start + k*mss, ...) with serial serial0 + k, and every rule below reads
  per segment exactly as if each had its own record. (One record per
  segment cost a bulk sender a sixth of its time allocating and freeing
  them; an earlier attempt at run records that did not keep per-segment
  serials caused a storm of spurious retransmissions.)
- retransmissions: a short list in send order (only what is resent and not
  yet delivered); bytes resent since the last ACK are also kept in a
  RangeSet so that an original whose bytes were resent no longer counts.

Every transmission carries a serial number; "sent before" is "smaller
serial", which orders segments that left at the same instant (the RFC
breaks such ties by sequence number, which a retransmission would get
wrong). An in-order ACK with no loss pops the originals it covers, updates
RACK from the newest of them and stops at the first record not yet ACKed,
because that record was sent after everything delivered: O(1) amortized.

Reorder window adaptation: Gannet receivers send no DSACK, so the signal
for a spurious retransmission is the one RFC 8985 6.2 step 2 already uses:
a retransmitted range delivered sooner than min_rtt after it was resent
was delivered by the original. Each such event (at most one per round
trip; TLP probes and go-back-N resends after an RTO excluded) widens the window by min_rtt/4 (reo_wnd_mult),
for the next 16 recoveries (reo_wnd_persist), as the RFC does with DSACK.

`LossRecovery` below is what the connection sees: the scoreboard and the
recovery state, with RACK-TLP inside it. It holds no reference to the
connection: the sender's positions (SND.UNA, SND.NXT, the end of the data
written, the RTO deadline) come as arguments, and what it decides is in
`lost` (ranges to resend), `in_recovery` and the return values. The
connection owns every segment that is sent and tells congestion control.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import repeat
from typing import Final, TYPE_CHECKING

from .rangeset import EMPTY, RangeSet
from .rtt import RttEstimator
from .timers import NEVER

if TYPE_CHECKING:
    from ..config import Config

# Float rounding in t + (now - t) must not postpone a verdict due "now".
EPSILON: Final = 1e-9
# PTO before any RTT sample (RFC 8985 7.2: 1 second).
PTO_WITHOUT_RTT: Final = 1.0
# Floor for the PTO: below ~10 ms the peer's scheduling jitter alone would
# fire it (older Linux and early QUIC drafts used the same 10 ms floor).
PTO_MIN: Final = 0.01
# RFC 8985 6.2 step 4: a widened reorder window lasts 16 recoveries.
REO_WND_PERSIST: Final = 16
REO_WND_MULT_MAX: Final = 16
# Drop the popped prefix of the originals lists once it is this long and
# more than half of them (amortized O(1) per record).
COMPACT_AT: Final = 256

# What RackTlp's record lists read as while they are None (never stored,
# never written: a reader's stand-in, so the loops need no None branch).
_NO_STARTS: Final[list[int]] = []
_NO_RECS: Final[list[tuple[int, int, float, int, int]]] = []


class IdleRack:
    """What a connection holds instead of a RackTlp until it first sends
    data (then it makes its own, `LossRecovery.start_rack`). RACK-TLP is idle
    until then anyway (`active` is None, no timer, nothing recorded), and
    many connections never send: one shared, stateless stand-in."""

    __slots__ = ()
    active = None
    deadline = None
    reo_deadline = None
    pto_deadline = None
    tlp_end = None
    probes = 0
    reorder_timeouts = 0
    spurious = 0
    tlp_losses = 0
    reordering_seen = False

    def on_sacked(self, left: int, right: int) -> None:
        pass  # nothing of ours to SACK

    def detect_losses(self, now: float, una: int, nxt: int, rto: float) -> bool:
        return False

    def timer_fired(self, now: float) -> bool:
        return False

    def stop(self) -> None:
        pass


IDLE_RACK: Final = IdleRack()


class RackTlp:
    __slots__ = (
        "board", "active", "tlp", "ack_delay",
        "_starts", "_recs", "_head", "_judged", "_retx", "_resent", "_serial", "_blocks", "_una", "_high",
        "rack_serial", "xmit_ts", "rack_rtt", "fack", "reordering_seen",
        "reo_wnd_mult", "reo_wnd_persist", "_spurious_round", "_was_in_recovery", "_rto_high",
        "reo_deadline", "pto_deadline", "deadline", "_pto_at",
        "tlp_end", "tlp_retrans", "tlp_time", "_probing",
        "probes", "reorder_timeouts", "spurious", "tlp_losses",
    )

    def __init__(self, board: LossRecovery, cfg: Config) -> None:
        self.board = board  # the scoreboard it reads (sacked, in_recovery) and marks (lost)
        # None until the first data transmission: SACK is negotiated by then.
        self.active: bool | None = None if cfg.rack else False
        self.tlp = cfg.tlp
        # The peer delays an ACK for a lone segment by up to its ack_delay
        # (Gannet peers use the same default as ours); RFC 8985's WCDelAckT is
        # the worst case of that, so allow twice it: with exactly ack_delay the
        # probe raced the peer's delayed ACK (timers fire late, by up to a
        # millisecond under uvloop) and won, resending every lone reply of a
        # request-response exchange 25 ms after it was sent.
        self.ack_delay = 2 * cfg.ack_delay

        # --- transmissions not yet delivered or judged lost -------------------
        # The lists are None until something is put in them, and the
        # originals' lists go back to that once every record is done: most of
        # a server's connections are idle, with nothing in flight, and an
        # empty list per field is one more object per connection for the
        # cycle collector to walk (the same reason as rangeset.EMPTY).
        self._starts: list[int] | None = None  # originals: start positions, for bisection
        self._recs: list[tuple[int, int, float, int, int]] | None = None  # (start, end, time, serial0, mss)
        self._head = 0  # originals before this index are done
        self._judged = 0  # the head record is judged (lost or delivered) below this position
        self._retx: list[tuple[int, int, float, int, bool]] | None = None  # (start, end, time, serial, judged)
        self._resent: RangeSet = EMPTY  # bytes above snd_una that have been resent (own set at the first)
        self._serial = 0  # transmissions so far
        self._blocks: list[tuple[int, int]] | None = None  # SACK blocks that added news since the last ACK
        self._una = 0  # snd_una when the last ACK was processed
        self._high = 0  # end of the highest original sent

        # --- RACK state (RFC 8985 6.1) -------------------------------------
        self.rack_serial = -1  # serial of the newest transmission delivered
        self.xmit_ts = 0.0  # RACK.xmit_ts: its send time
        self.rack_rtt = 0.0  # RACK.rtt: delivery time minus xmit_ts
        self.fack = 0  # highest position delivered (RACK.fack)
        self.reordering_seen = False
        self.reo_wnd_mult = 1
        self.reo_wnd_persist = 0
        self._spurious_round = 0  # snd_una must pass this before the window widens again
        self._was_in_recovery = False
        # snd_nxt at the last RTO: resends below it are go-back-N after a
        # timeout, and their being spurious says nothing about reordering.
        self._rto_high = 0

        # --- timers ----------------------------------------------------------
        self.reo_deadline: float | None = None  # RACK reorder timer
        self.pto_deadline: float | None = None  # TLP probe timeout
        self.deadline: float | None = None  # the earlier of the two, for get_timer
        self._pto_at = -1.0  # when the PTO was last armed for more than one segment

        # --- TLP episode (RFC 8985 7.4) --------------------------------------
        self.tlp_end: int | None = None  # TLP.end_seq while a probe is outstanding
        self.tlp_retrans = False
        self.tlp_time = 0.0
        self._probing = False  # the next transmission is the probe

        # --- counters --------------------------------------------------------
        self.probes = 0
        self.reorder_timeouts = 0
        self.spurious = 0
        self.tlp_losses = 0

    # ---------------------------------------------------------------- hooks
    def on_transmit(self, start: int, end: int, now: float, retransmission: bool, una: int, rto: float) -> None:
        """Data [start, end) left now (first transmission or a resend);
        `una`: SND.UNA, `rto`: the RTO deadline (NEVER when unarmed)."""
        active = self.active
        if not active:
            if active is False or not self._activate(una):
                return
        self._serial += 1
        if retransmission:
            if self._retx and self._resent.overlap(start, end):
                self._supersede(start, end)
            # The last field: whether a spurious verdict on this resend may
            # widen the reorder window (not for probes or after a timeout).
            rec = (start, end, now, self._serial, not self._probing and start >= self._rto_high)
            retx = self._retx
            if retx:
                retx.append(rec)
            else:
                self._retx = [rec]
            resent = self._resent
            if resent is EMPTY:
                resent = self._resent = RangeSet()
            resent.add(start, end)
        else:
            orig = (start, end, now, self._serial, end - start or 1)
            starts, recs = self._starts, self._recs
            if starts and recs:  # (_add_original, inline; the two lists go together)
                starts.append(start)
                recs.append(orig)
            else:
                self._starts = [start]
                self._recs = [orig]
                self._head = 0
            if end > self._high:
                self._high = end
            # RFC 8985 7.2: (re)start the PTO after sending new data, not a
            # probe (once per instant: the rest of a burst would not move it).
            if self.tlp and self.tlp_end is None and now != self._pto_at:
                self._arm_pto(now, una, rto)
        self._probing = False

    def on_transmit_run(self, start: int, end: int, mss: int, now: float, una: int, rto: float) -> None:
        """New data [start, end) left now as segments of `mss` bytes: one
        record, whose segments have consecutive serials (in sequence order,
        as RFC 8985 orders segments sent at one instant), so a loss inside
        a run is judged like any other."""
        active = self.active
        if not active:
            if active is False or not self._activate(una):
                return
        serial = self._serial
        self._add_original(start, (start, end, now, serial + 1, mss))
        self._serial = serial + -(-(end - start) // mss)
        if end > self._high:
            self._high = end
        if self.tlp and self.tlp_end is None and now != self._pto_at:
            self._arm_pto(now, una, rto)
        self._probing = False

    def on_sacked(self, left: int, right: int) -> None:
        """The peer SACKed [left, right) and some of it is news."""
        if self.active:
            blocks = self._blocks
            if blocks:
                blocks.append((left, right))
            else:
                self._blocks = [(left, right)]

    def _add_original(self, start: int, rec: tuple[int, int, float, int, int]) -> None:
        starts, recs = self._starts, self._recs
        if starts and recs:  # the two lists go together
            starts.append(start)
            recs.append(rec)
        else:  # () or emptied: (re)start both lists
            self._starts = [start]
            self._recs = [rec]
            self._head = 0

    def detect_losses(self, now: float, una: int, nxt: int, rto: float) -> bool:
        """After an ACK (or when the reorder timer fires): update RACK from
        what was delivered, add lost ranges to the board's `lost`, arm the
        timers. `una`, `nxt`: SND.UNA and SND.NXT; `rto`: the RTO deadline.

        True when something new was found lost, or a TLP retransmission
        turned out to have repaired a loss (RFC 8985 7.4: the congestion
        controller must hear of it either way)."""
        if not self.active:
            return False
        board = self.board
        sacked = board.sacked
        resent = self._resent
        starts = self._starts or _NO_STARTS
        recs = self._recs or _NO_RECS
        head = self._head
        best_serial = self.rack_serial
        best_time = self.xmit_ts
        old_una = self._una
        advanced = una > old_una

        # 1. Originals the cumulative ACK covers: the last one popped is the newest.
        if advanced:
            if self.fack > old_una and old_una not in resent:
                # The hole at snd_una was filled by its original transmission
                # after data sent later was SACKed: the path reorders.
                self.reordering_seen = True
            if not resent._starts:  # (RangeSet emptiness without a __bool__ call)
                # Nothing resent: the newest covered segment is the last one
                # ending at or below una, found by bisection (a bulk ACK can
                # cover a hundred segments; walking them cost a microsecond each).
                # (The common ACK covers every original: then without the
                # call, which compiled code makes through Python.)
                j = len(starts) - 1 if starts and starts[-1] < una else bisect_right(starts, una - 1, head) - 1
                if j >= head:
                    s, e, t, serial0, mss = recs[j]
                    if e <= una:
                        best_serial, best_time = serial0 + (e - s - 1) // mss, t
                        head = j + 1
                    else:
                        covered = (una - s) // mss  # segments of record j wholly acknowledged
                        if covered:
                            best_serial, best_time = serial0 + covered - 1, t
                        elif j > head:
                            s, e, t, serial0, mss = recs[j - 1]
                            best_serial, best_time = serial0 + (e - s - 1) // mss, t
                        head = j
            else:
                n = len(recs)
                while head < n:
                    s, e, t, serial0, mss = recs[head]
                    top = e if e <= una else s + (una - s) // mss * mss
                    # The newest segment of this record below `top` not resent.
                    k = (top - s - 1) // mss
                    while k >= 0:
                        ss = s + k * mss
                        if not resent.overlap(ss, min(ss + mss, e)):
                            best_serial, best_time = serial0 + k, t
                            break
                        k -= 1
                    if e > una:
                        break
                    head += 1
            self._head = head

        # 2. Originals inside newly SACKed blocks: bisect for the newest.
        blocks = self._blocks
        if blocks:
            fack = self.fack
            for left, right in blocks:
                if right <= fack and not (resent and resent.overlap(left, right)):
                    self.reordering_seen = True  # delivered below data sent after it
                j = bisect_right(starts, right - 1, head) - 1
                if j < head:
                    continue
                s, e, t, serial0, mss = recs[j]
                k = (min(right, e) - 1 - s) // mss  # the segment holding right - 1
                for _ in range(4):  # the newest wholly delivered segment is near the top
                    if k < 0:
                        j -= 1
                        if j < head:
                            break
                        s, e, t, serial0, mss = recs[j]
                        k = (e - s - 1) // mss
                    ss = s + k * mss
                    se = min(ss + mss, e)
                    serial = serial0 + k
                    if se <= left or serial <= best_serial:
                        break
                    if (
                        se <= right
                        and (ss >= left or self._delivered(ss, se, una, sacked))
                        and not (resent and resent.overlap(ss, se))
                    ):
                        best_serial, best_time = serial, t
                        break
                    k -= 1

        # 3. Retransmissions now delivered. One delivered sooner than min_rtt
        # after it was resent was delivered by an earlier transmission: it
        # says nothing about RACK's time (RFC 8985 6.2 step 2) and it shows
        # that the resend was spurious.
        if self._retx and (advanced or blocks):
            min_rtt = board.rtt.min_rtt
            keep = []
            for rec in self._retx:
                s, e, t, serial, judged = rec
                if e <= una or self._delivered(s, e, una, sacked):
                    if min_rtt is not None and now - t + EPSILON < min_rtt:
                        if judged:
                            self._on_spurious(una, nxt)
                    elif serial > best_serial:
                        best_serial, best_time = serial, t
                else:
                    keep.append(rec)
            self._retx = keep or None
        if blocks:
            self._blocks = None

        if best_serial > self.rack_serial:
            self.rack_serial = best_serial
            self.xmit_ts = best_time
            self.rack_rtt = now - best_time
        if advanced:
            if resent._starts:
                resent.discard_below(una)
            self._una = una
        top = sacked.last()[1] if sacked._starts else una
        if top > self.fack:
            self.fack = top
        in_recovery = board.in_recovery
        if self._was_in_recovery and not in_recovery and self.reo_wnd_persist:
            self.reo_wnd_persist -= 1
            if not self.reo_wnd_persist:
                self.reo_wnd_mult = 1
        self._was_in_recovery = in_recovery

        # 4. The time rule (RFC 8985 6.2 step 5).
        newly_lost = self._mark_lost(now, una) if self.rack_serial >= 0 else False

        # 5. TLP: end the probe's episode, restart the PTO on forward progress.
        tlp_loss = False
        if self.tlp:
            end = self.tlp_end
            if end is not None:
                if newly_lost:
                    self.tlp_end = None  # RACK found the loss; fast recovery answers it
                elif una >= end:
                    # No DSACK to say the probe was redundant: unless the ACK
                    # came too soon to be for the probe, a loss was repaired.
                    min_rtt = board.rtt.min_rtt
                    if self.tlp_retrans and not in_recovery and (min_rtt is None or now - self.tlp_time >= min_rtt):
                        tlp_loss = True
                        self.tlp_losses += 1
                    self.tlp_end = None
            if advanced and not tlp_loss:
                self._arm_pto(now, una, rto)
            elif self.pto_deadline is not None and (sacked or in_recovery or board.lost or tlp_loss):
                self.pto_deadline = None
                self._set_deadline()
        return newly_lost or tlp_loss

    def timer_fired(self, now: float) -> bool:
        """The deadline passed: True means send a loss probe now, False
        means run detect_losses (the reorder timer fired)."""
        reo = self.reo_deadline
        if reo is not None and now >= reo:
            self.reo_deadline = None
            self.reorder_timeouts += 1
            self._set_deadline()
            return False
        pto = self.pto_deadline
        if pto is not None and now >= pto:
            self.pto_deadline = None
            self._set_deadline()
            return True
        return False

    def on_probe(self, end: int, retransmission: bool, now: float) -> None:
        """The connection is about to send the loss probe, ending at `end`."""
        self.tlp_end = end
        self.tlp_retrans = retransmission
        self.tlp_time = now
        self._probing = True
        self.probes += 1

    def on_rto(self, nxt: int) -> None:
        """The RTO fired and marked everything outstanding lost: forget the
        transmissions (their resends will be recorded afresh)."""
        self._starts = self._recs = self._retx = self._blocks = None
        self._head = 0
        self._rto_high = nxt
        self.tlp_end = None
        self.reo_deadline = self.pto_deadline = self.deadline = None

    def stop(self) -> None:
        """The connection is closed: no more timers."""
        self.reo_deadline = self.pto_deadline = self.deadline = None
        self.active = False

    def reo_wnd(self) -> float:
        """RACK.reo_wnd (RFC 8985 6.2 step 4)."""
        board = self.board
        if not self.reordering_seen:
            if board.in_recovery:
                return 0.0
            sacked = board.sacked
            thresh = board.thresh
            if sacked.total > (thresh - 1) * board.mss or len(sacked) >= thresh:
                return 0.0
        rtt = board.rtt
        wnd = self.reo_wnd_mult * (rtt.min_rtt or 0.0) / 4
        srtt = rtt.srtt
        return wnd if srtt is None or wnd < srtt else srtt

    # -------------------------------------------------------------- helpers
    def _activate(self, una: int) -> bool:
        self.active = bool(self.board.sack_ok)
        self._una = self.fack = self._high = una
        return self.active

    @staticmethod
    def _delivered(s: int, e: int, una: int, sacked: RangeSet) -> bool:
        if e <= una:
            return True
        r = sacked.range_containing(s if s > una else una)
        return r is not None and r[1] >= e

    def _supersede(self, start: int, end: int) -> None:
        """A resend of [start, end) replaces older resends of those bytes."""
        out = []
        for rec in self._retx or ():
            s, e = rec[0], rec[1]
            if e <= start or s >= end:
                out.append(rec)
                continue
            if s < start:
                out.append((s, start, rec[2], rec[3], rec[4]))
            if e > end:
                out.append((end, e, rec[2], rec[3], rec[4]))
        self._retx = out or None

    def _on_spurious(self, una: int, nxt: int) -> None:
        self.spurious += 1
        self.reordering_seen = True
        if una >= self._spurious_round:  # at most once per round trip
            self._spurious_round = nxt
            if self.reo_wnd_mult < REO_WND_MULT_MAX:
                self.reo_wnd_mult += 1
            self.reo_wnd_persist = REO_WND_PERSIST

    def _mark_lost(self, now: float, una: int) -> bool:
        """Mark lost what was sent before RACK.xmit_ts and is older than
        RACK.rtt + reo_wnd; arm the reorder timer for the first that is not."""
        board = self.board
        sacked = board.sacked
        lost = board.lost
        resent = self._resent
        rack_serial = self.rack_serial
        starts = self._starts or _NO_STARTS
        recs = self._recs or _NO_RECS
        i = self._head
        n = len(recs)
        retx = self._retx
        judged = self._judged if self._judged > una else una
        if i < n:
            s, e, t, serial0, mss = recs[i]
            # The serial of the head record's first segment not yet judged.
            first = serial0 + (judged - s) // mss if judged > s else serial0
        else:
            first = rack_serial + 1
        if first > rack_serial and (not retx or retx[0][3] > rack_serial):
            # The common case: everything outstanding was sent after the
            # newest delivered segment, so nothing can be judged yet.
            if i and i >= n:
                self._starts = self._recs = None
                self._head = 0
            if self.reo_deadline is not None:
                self.reo_deadline = None
                self._set_deadline()
            return False
        limit = self.rack_rtt + self.reo_wnd()
        due = now + EPSILON
        newly = False
        deadline = None
        while i < n:
            s, e, t, serial0, mss = recs[i]
            if serial0 > rack_serial:
                break  # sent after everything delivered: nothing to judge by yet
            # Only the segments sent before the newest delivered one are judged
            # (all of a record's segments left at the same time t).
            partial = serial0 + (e - s - 1) // mss > rack_serial
            hi = s + (rack_serial - serial0 + 1) * mss if partial else e
            lo = s if s > judged else judged  # the head record may be judged in part
            if hi > lo:
                parts = sacked.gaps(lo, hi) if sacked else [(lo, hi)]
                if resent and parts:
                    parts = [g for ps, pe in parts for g in resent.gaps(ps, pe)]
                if parts:
                    if t + limit > due:
                        deadline = t + limit
                        break
                    if lost is EMPTY:
                        lost = board.own_lost()
                    for ps, pe in parts:
                        if lost.add(ps, pe):
                            newly = True
            if partial:
                self._judged = hi
                break  # the rest of this record was sent after the newest delivered segment
            i += 1
            judged = una
        if i >= n:
            self._starts = self._recs = None
            i = 0
        elif i > COMPACT_AT and 2 * i > n:
            del recs[:i]
            del starts[:i]
            i = 0
        self._head = i

        if retx:
            k = 0
            while k < len(retx):
                s, e, t, serial, _ = retx[k]
                if serial > rack_serial:
                    break
                if e > una:
                    parts = sacked.gaps(s if s > una else una, e)
                    if parts:
                        if t + limit > due:
                            if deadline is None or t + limit < deadline:
                                deadline = t + limit
                            break
                        if lost is EMPTY:
                            lost = board.own_lost()
                        for ps, pe in parts:
                            if lost.add(ps, pe):
                                newly = True
                k += 1
            if k:
                del retx[:k]
                if not retx:
                    self._retx = None

        self.reo_deadline = deadline
        self._set_deadline()
        return newly

    def _arm_pto(self, now: float, una: int, rto: float) -> None:
        """RFC 8985 7.2: PTO = 2*SRTT (+ the peer's ACK delay for a lone
        segment), no later than the RTO; none in recovery, with SACKed or
        lost data, or while a probe is outstanding."""
        board = self.board
        flight = self._high - una
        if flight <= 0:
            # Nothing in flight (a request answered): no PTO (_set_deadline, inline).
            self._pto_at = -1.0
            self.pto_deadline = None
            self.deadline = self.reo_deadline
            return
        deadline = None
        self._pto_at = now if flight > board.mss else -1.0
        if (flight > 0 and self.tlp_end is None and not board.in_recovery and not board.sacked._starts
                and not board.lost._starts):
            srtt = board.rtt.srtt
            if srtt is None:
                pto = PTO_WITHOUT_RTT
            else:
                pto = 2 * srtt
                if flight <= board.mss:
                    pto += self.ack_delay
                if pto < PTO_MIN:
                    pto = PTO_MIN
            deadline = now + pto
            if rto == NEVER:
                rto = now + board.rtt.current_rto()
            if rto < deadline:
                deadline = rto
        self.pto_deadline = deadline
        self._set_deadline()

    def _set_deadline(self) -> None:
        reo, pto = self.reo_deadline, self.pto_deadline
        if reo is None:
            self.deadline = pto
        elif pto is None or reo < pto:
            self.deadline = reo
        else:
            self.deadline = pto


class LossRecovery:
    """The sender's loss recovery: the SACK scoreboard (RFC 6675), the
    DupThresh rule and NewReno without SACK (RFC 5681, RFC 6582), RACK-TLP
    with SACK (RackTlp above, RFC 8985), and the RTO's marking of all that
    is outstanding as lost (RFC 6298 5.4, RFC 6675 5.1).

    Inputs are the calls below, with the sender's positions as arguments;
    outputs are `lost` (ranges to resend, first to last), `in_recovery`,
    and the return values. It never sends and never touches congestion
    control: the connection does both on what this reports.
    """

    __slots__ = (
        "sacked", "lost", "retransmitted", "retx_marks", "in_recovery", "recovery_point", "dupacks",
        "recoveries", "sack_ok", "thresh", "mss", "rtt", "rack", "_config",
    )

    def __init__(self, config: Config, rtt: RttEstimator, mss: int) -> None:
        # The range sets start as the shared read-only EMPTY and get their
        # own RangeSet at the first add (own_*): most connections never see
        # a SACK, a loss or a resend (rangeset.EMPTY says why).
        self.sacked: RangeSet = EMPTY  # SACK scoreboard above SND.UNA (RFC 6675)
        self.lost: RangeSet = EMPTY  # declared lost, waiting to be resent
        self.retransmitted: RangeSet = EMPTY  # resent during the current recovery
        # (start, end, SND.NXT then) per retransmission in this recovery, to
        # notice a lost retransmission once data sent after it is SACKed
        # (a list from the first retransmission on).
        self.retx_marks: list[tuple[int, int, int]] | None = None
        self.in_recovery = False
        self.recovery_point = 0  # RFC 6582's "recover"
        self.dupacks = 0  # duplicate ACKs counted (RFC 5681; without SACK)
        self.recoveries = 0  # fast recoveries entered
        self.sack_ok = False  # the handshake negotiated SACK
        self.thresh: int = config.fast_retransmit_threshold  # DupThresh
        self.mss = mss
        self.rtt = rtt
        # RACK-TLP, made when the first data leaves (start_rack); the shared
        # idle stand-in until then.
        self.rack: RackTlp | IdleRack = IDLE_RACK
        self._config = config

    # ----------------------------------------------------------- state
    def own_lost(self) -> RangeSet:
        """`lost`, made this connection's own if it is still EMPTY."""
        lost = self.lost
        if lost is EMPTY:
            lost = self.lost = RangeSet()
        return lost

    def start_rack(self) -> RackTlp:
        """RACK-TLP of our own, made now if the idle stand-in is still there."""
        rack = self.rack
        if type(rack) is not RackTlp:
            rack = self.rack = RackTlp(self, self._config)
        return rack

    def pipe(self, outstanding: int) -> int:
        """RFC 6675's pipe: of `outstanding` bytes, those believed still in
        the network (without SACK, less a segment per duplicate ACK)."""
        pipe = outstanding - self.sacked.total - self.lost.total
        if not self.sack_ok:
            pipe -= self.dupacks * self.mss
        return pipe if pipe > 0 else 0

    def quiet(self) -> bool:
        """Nothing SACKed, lost or counted as duplicate, no recovery: an ACK
        can only move SND.UNA (header prediction's precondition)."""
        return not (self.in_recovery or self.dupacks or self.sacked._starts or self.lost._starts)

    # ------------------------------------------------------------ ACKs
    def on_sack_block(self, left: int, right: int) -> int:
        """The peer SACKed [left, right) (clipped to what is outstanding);
        returns the bytes it newly covers."""
        sacked = self.sacked
        if sacked is EMPTY:
            sacked = self.sacked = RangeSet()
        added = sacked.add(left, right)
        if added:
            self.lost.subtract(left, right)
            self.rack.on_sacked(left, right)
        return added

    def on_cumulative_ack(self, ack: int) -> int:
        """SND.UNA moved up to `ack`: forget what lies below it; returns the
        SACKed bytes it covered (they were counted delivered already)."""
        removed = self.sacked.discard_below(ack) if self.sacked._starts else 0
        if self.lost._starts:
            self.lost.discard_below(ack)
        if self.retransmitted._starts:
            self.retransmitted.discard_below(ack)
        self.dupacks = 0
        return removed

    def on_recovery_ack(self, ack: int, data_end: int) -> bool:
        """A new ACK during recovery: True when it ends recovery (it covers
        the recovery point); without SACK, a partial ACK marks the next hole
        lost (NewReno, RFC 6582 3.2 (5))."""
        if ack >= self.recovery_point:
            self.in_recovery = False
            self.retransmitted.clear()
            self.retx_marks = None
            return True
        if not self.sack_ok:
            self.own_lost().add(ack, min(ack + self.mss, data_end))
        return False

    def on_duplicate_ack(self) -> None:
        """RFC 5681's duplicate ACK (the connection decides what is one)."""
        self.dupacks += 1

    # ---------------------------------------------------------- losses
    def detect_losses(self, now: float, una: int, nxt: int, data_end: int, rto: float) -> bool:
        """RACK-TLP with SACK; otherwise RFC 6675 IsLost() on the scoreboard,
        or DupThresh duplicate ACKs without SACK. True when something was
        newly marked lost."""
        rack = self.rack
        if self.sack_ok and rack.active:
            # RACK-TLP replaces the DupThresh walk and the lost-retransmission
            # marks below (why: this module's docstring).
            self.retx_marks = None
            return rack.detect_losses(now, una, nxt, rto)
        thresh = self.thresh
        newly_lost = False
        sacked = self.sacked
        if self.sack_ok and sacked._starts:
            limit = (thresh - 1) * self.mss
            # Walk holes from the bottom; a hole is lost when enough is SACKed above it.
            for start, end in sacked.gaps(una, sacked.last()[1]):
                if sacked.count_above(end) <= limit and sacked.ranges_above(end) < thresh:
                    break
                for s, e in self.retransmitted.gaps(start, end):
                    if self.own_lost().add(s, e):
                        newly_lost = True
            # A retransmission is lost too when data first sent after it has
            # been SACKed while it has not (the idea behind RFC 8985's RACK).
            if self.retx_marks:
                highest = sacked.last()[1]
                keep = []
                for start, end, mark in self.retx_marks:
                    if end <= una:
                        continue
                    if sacked.count_above(mark) > limit or (highest > mark and thresh == 1):
                        for s, e in sacked.gaps(max(start, una), end):
                            if self.own_lost().add(s, e):
                                newly_lost = True
                    else:
                        keep.append((start, end, mark))
                self.retx_marks = keep
        elif not self.sack_ok and self.dupacks >= thresh and not self.in_recovery:
            data_hi = min(nxt, data_end)
            if una < data_hi:
                self.own_lost().add(una, min(una + self.mss, data_hi))
                newly_lost = True
        return newly_lost

    def enter_recovery(self, una: int, nxt: int) -> bool:
        """Something was newly lost: enter loss recovery, once per window
        (RFC 6675 5, RFC 6582's recovery point). True when it did (the
        congestion controller must then hear of a congestion event)."""
        if self.in_recovery or (una < self.recovery_point and self.recoveries):
            return False
        self.in_recovery = True
        self.recovery_point = nxt
        self.recoveries += 1
        return True

    def on_rto(self, una: int, nxt: int, data_hi: int) -> None:
        """The retransmission timer expired: everything outstanding and not
        SACKed is presumed lost, to be resent from SND.UNA (RFC 6298 5.4,
        RFC 6675 5.1); no fast retransmit for what was sent before (RFC 6582 4)."""
        self.lost.clear()
        for start, end in self.sacked.gaps(una, data_hi):
            self.own_lost().add(start, end)
        self.retransmitted.clear()
        self.retx_marks = None
        self.start_rack().on_rto(nxt)
        self.in_recovery = False
        self.recovery_point = nxt
        self.dupacks = 0

    def on_retransmit(self, start: int, end: int, now: float, una: int, nxt: int, rto: float) -> None:
        """[start, end) is being resent (taken out of `lost` if it was there)."""
        if self.lost._starts:
            self.lost.subtract(start, end)
        self.start_rack().on_transmit(start, end, now, True, una, rto)
        retransmitted = self.retransmitted
        if retransmitted is EMPTY:
            retransmitted = self.retransmitted = RangeSet()
        retransmitted.add(start, end)
        marks = self.retx_marks
        if not marks:
            marks = self.retx_marks = []
        marks.append((start, end, nxt))
