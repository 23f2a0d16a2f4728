"""The receiving half of a connection.

RCV.NXT and the receive buffer; reassembly of out-of-order data and the
SACK blocks that report it (RFC 2018); the window we offer (RFC 9293
3.8.6.2.2, scaled as RFC 7323 says) and its autotuning; TS.Recent and PAWS
(RFC 7323); the delayed-ACK rule (RFC 9293 3.8.6.3, RFC 5681 4.2).

The connection owns the state machine and decides which segments reach
`receive` (RFC 9293 3.10.7.4's checks, in `Connection._on_synchronized`);
this class knows nothing of states. It shares two things with the
connection, both given at construction: the event queue (it appends
DataReceived, naming `source`, the connection, which it never reads) and
the connection's timer table (it arms the delayed-ACK entry).
"""

from __future__ import annotations

from collections import deque
from typing import Final, TYPE_CHECKING

from ..wire.segment import SEQ_MOD, Payload
from .events import DataReceived, Event
from .rangeset import EMPTY, RangeSet
from .stats import ConnectionStats
from .timers import DELACK, NEVER

if TYPE_CHECKING:
    from ..config import Config
    from .connection import Connection

MASK32: Final = SEQ_MOD - 1
TS_HZ: Final = 1_000_000  # timestamp clock: microseconds (RFC 7323 allows 1 us .. 1 s ticks)
INITIAL_RCV_SPACE: Final = 1 << 20  # autotuned receive window to start with
RCV_SPACE_GAIN: Final = 3  # window = this x bytes the application read per round trip
# What one held out-of-order piece costs beyond its bytes: the bytes object's
# header, its int key and dict slot, and its range in ooo_ranges (measured
# with tracemalloc: about 200 bytes). Charged so that one-byte slivers cannot
# hold more memory than the window allows (_ooo_hold).
OOO_PIECE_COST: Final = 256


class Receiver:
    __slots__ = (
        "irs", "rcv_nxt", "rcv_wscale", "rcv_adv", "rcv_adv_at", "eof", "fin_rcv", "ooo", "ooo_ranges",
        "ack_now", "unacked_segs", "dupacks_owed", "ts_recent", "buf_len", "sack_ok",
        "_buf", "_last_ooo", "_space", "_copied", "_space_copied", "_space_time",
        "_config", "_stats", "_events", "_source", "_deadlines", "_data_event",
        "_ack_every", "_delayed_ack", "_ack_delay",
    )

    def __init__(self, config: Config, stats: ConnectionStats, events: deque[Event], source: Connection,
                 deadlines: list[float], rcv_wscale: int, now: float) -> None:
        self._config = config
        self._stats = stats
        self._events = events
        self._source = source  # the connection, as events name it
        self._deadlines = deadlines  # the connection's timer table (timers.py)
        # The DataReceived this receiver queues, made at its first delivery
        # and queued again after that: an event names its connection and
        # carries nothing else, and making one ran Python (a frozen
        # dataclass's __init__) twice per round trip of the compiled core.
        self._data_event: DataReceived | None = None
        # The delayed-ACK rule's settings, read per segment: the Config is
        # a Python dataclass (a dictionary lookup per read from compiled
        # code), these are native attributes. Config is frozen: copies hold.
        self._ack_every = config.ack_every
        self._delayed_ack = config.delayed_ack
        self._ack_delay = config.ack_delay
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_wscale = rcv_wscale  # our shift (applied to the windows we send)
        self.rcv_adv = 0  # right edge of the window we last advertised
        self.rcv_adv_at = 0  # RCV.NXT when we advertised it
        self.eof = False
        self.fin_rcv: int | None = None  # position of the peer's FIN once seen
        self.ooo: dict[int, bytes] = {}  # out-of-order payloads by start position
        # The out-of-order ranges start as the shared read-only EMPTY (see
        # rangeset.EMPTY) and become a RangeSet of their own at the first.
        self.ooo_ranges: RangeSet = EMPTY
        self._last_ooo: tuple[int, int] | None = None  # newest out-of-order block, SACKed first
        self.ack_now = False
        self.unacked_segs = 0
        self.dupacks_owed = 0  # without SACK, one duplicate ACK per out-of-order arrival
        self.ts_recent: int | None = None
        self.sack_ok = False  # the handshake negotiated SACK
        # The buffer is made on first use and dropped when empty: an empty
        # deque costs 760 bytes, and most of 10,000 idle connections hold
        # nothing unread.
        self._buf: deque[bytes] | None = None
        self.buf_len = 0
        # Autotuning: the window to offer, and what the application has read
        # since the current round-trip measurement began.
        self._space = min(config.window_size, INITIAL_RCV_SPACE) if config.autotune else config.window_size
        self._copied = 0
        self._space_copied = 0
        self._space_time = now

    # ------------------------------------------------------ the handshake
    def on_syn(self, seq: int, tsval: int | None) -> None:
        """The peer's SYN: IRS, RCV.NXT and the first window we offer (a
        SYN's, unscaled), TS.Recent."""
        self.irs = seq
        self.rcv_nxt = seq + 1  # absolute positions start at the wire value
        self.rcv_adv = self.rcv_nxt + min(self._config.window_size, 0xFFFF)
        self.rcv_adv_at = self.rcv_nxt
        self.update_ts_recent(tsval)

    # ---------------------------------------------------------- TS.Recent
    def ts_older(self, tsval: int) -> bool:
        """SEG.TSval is older than TS.Recent (RFC 7323 5.3's comparison)."""
        recent = self.ts_recent
        return recent is not None and (tsval - recent) & MASK32 >= 1 << 31

    def paws_rejects(self, tsval: int) -> bool:
        """PAWS (RFC 7323 5.3): older than TS.Recent by more than the
        reordering tolerance `paws_window` allows."""
        recent = self.ts_recent
        if recent is None:
            return False
        age = (recent - tsval) & MASK32
        return age < 1 << 31 and age > self._config.paws_window * TS_HZ

    def update_ts_recent(self, tsval: int | None) -> None:
        """RFC 7323 4.3: remember the newest timestamp of in-order segments."""
        if tsval is not None and not self.ts_older(tsval):
            self.ts_recent = tsval

    # ------------------------------------------------------------- arrival
    def acceptable(self, seq: int, seg_len: int) -> bool:
        """RFC 9293 3.10.7.4's four cases, against the window we offered."""
        rcv_nxt = self.rcv_nxt
        rcv_wnd = self.rcv_adv - rcv_nxt
        if rcv_wnd < 0:
            rcv_wnd = 0
        if seg_len == 0:
            if rcv_wnd == 0:
                return seq == rcv_nxt
            return rcv_nxt <= seq < rcv_nxt + rcv_wnd
        if rcv_wnd == 0:
            return False
        end = rcv_nxt + rcv_wnd
        return rcv_nxt <= seq < end or rcv_nxt <= seq + seg_len - 1 < end

    def receive(self, seq: int, payload: Payload, fin: bool, now: float) -> bool:
        """Segment text and FIN (RFC 9293 3.10.7.4, seventh and eighth
        steps) of an acceptable segment. True when the peer's FIN is now in
        order: the connection then runs the FIN's state transition (and
        `on_fin`); otherwise the delayed-ACK rule has run."""
        if type(payload) is not bytes:
            payload = bytes(payload)  # held past the call: a copy of a view
        start, end = seq, seq + len(payload)
        if fin:
            self.fin_rcv = end
        rcv_nxt = self.rcv_nxt
        if start < rcv_nxt:  # trim what we already have
            payload = payload[rcv_nxt - start :]
            start = rcv_nxt
        if end > self.rcv_adv:  # and what lies beyond the window we offered
            payload = payload[: max(0, self.rcv_adv - start)]
            end = start + len(payload)
            if self.fin_rcv is not None and self.fin_rcv > self.rcv_adv:
                self.fin_rcv = None
        if payload:
            if start == rcv_nxt:
                if self.ooo:
                    self.deliver(payload, 0)
                    self._drain_ooo()
                    self.ack_now = True  # RFC 5681 4.2: ACK hole fills at once
                else:
                    self.deliver(payload, 1)
            else:
                self._stats.out_of_order_segments += 1
                self._ooo_hold(start, payload)
                self._last_ooo = self.ooo_ranges.range_containing(start)
                self.ack_now = True  # RFC 5681 4.2: out-of-order data, ACK now
                if not self.sack_ok:
                    self.dupacks_owed += 1
        elif seq + len(payload) <= rcv_nxt and not fin:
            self._stats.duplicate_segments += 1
            self.ack_now = True
        if self.fin_rcv is not None and self.rcv_nxt == self.fin_rcv and not self.eof:
            return True
        self.schedule_ack(now)
        return False

    def on_fin(self) -> None:
        """The peer's FIN is in order: it takes a sequence number, ends the
        stream, and is acknowledged at once."""
        self.rcv_nxt += 1
        self.eof = True
        self.ack_now = True

    def schedule_ack(self, now: float) -> None:
        """The delayed-ACK rule (RFC 9293 3.8.6.3, RFC 5681 4.2): an ACK at
        once for every `ack_every` segments received in order (or for each
        without delayed ACKs), otherwise within `ack_delay`."""
        unacked = self.unacked_segs
        if unacked >= self._ack_every or not self._delayed_ack:
            self.ack_now = True
        elif unacked and self._deadlines[DELACK] == NEVER:
            self._deadlines[DELACK] = now + self._ack_delay

    def deliver(self, payload: Payload, segments: int) -> None:
        """In-order bytes at RCV.NXT into the receive buffer; `segments`: how
        many arriving segments they count as for the delayed-ACK rule (0 for
        data released from the reassembly queue)."""
        if type(payload) is not bytes:
            payload = bytes(payload)  # held past the call: a copy of a view
        buf = self._buf
        if buf is None:
            buf = self._buf = deque()
        n = len(payload)
        buf.append(payload)
        was_empty = not self.buf_len
        self.buf_len += n
        self.rcv_nxt += n
        self._stats.bytes_received += n
        self.unacked_segs += segments
        if was_empty:
            event = self._data_event
            if event is None:
                event = self._data_event = DataReceived(self._source)
            self._events.append(event)

    def _ooo_hold(self, start: int, payload: bytes) -> int:
        """Keep the bytes of an out-of-order segment that are not held yet;
        returns how many were kept (0 for a duplicate, counted as one).

        Only the gaps between pieces already held are stored (a peer sending
        overlapping segments that each add one byte must not make us keep
        every segment whole), and what is held is charged its bytes plus
        OOO_PIECE_COST per piece, within twice the window we offered beyond
        RCV.NXT. A segment that would pass that is dropped whole and counted
        (`ooo_dropped`); it was never SACKed, so the sender resends it, as
        Linux prunes its out-of-order queue when the receive buffer is full
        (tcp_prune_ofo_queue)."""
        end = start + len(payload)
        held = self.ooo_ranges
        gaps = held.gaps(start, end) if held else [(start, end)]
        if not gaps:
            self._stats.duplicate_segments += 1
            return 0
        new = 0
        for s, e in gaps:
            new += e - s
        cost = held.total + new + (len(self.ooo) + len(gaps)) * OOO_PIECE_COST
        if cost > 2 * (self.rcv_adv - self.rcv_nxt):
            self._stats.ooo_dropped += 1
            return 0
        if held is EMPTY:
            held = self.ooo_ranges = RangeSet()
        ooo = self.ooo
        for s, e in gaps:
            held.add(s, e)
            ooo[s] = payload if e - s == len(payload) else payload[s - start : e - start]
        return new

    def _drain_ooo(self) -> None:
        """Move out-of-order data that now continues the stream into the buffer."""
        ranges = self.ooo_ranges
        if not ranges or ranges.first()[0] > self.rcv_nxt:
            return
        target = ranges.first()[1]
        ready = sorted(k for k in self.ooo if k < target)
        for key in ready:
            data = self.ooo.pop(key)
            end = key + len(data)
            if end > self.rcv_nxt:
                self.deliver(data[self.rcv_nxt - key :] if key < self.rcv_nxt else data, 0)
        ranges.discard_below(self.rcv_nxt)
        if self._last_ooo and self._last_ooo[1] <= self.rcv_nxt:
            self._last_ooo = None

    # ------------------------------------------------------------ reading
    def read(self, max_bytes: int) -> bytes:
        """Take up to `max_bytes` in-order bytes (b"" if none are ready)."""
        if max_bytes <= 0 or not self.buf_len:
            return b""
        buf = self._buf
        assert buf is not None  # buf_len > 0
        if len(buf[0]) >= max_bytes:
            chunk = buf[0]
            if len(chunk) == max_bytes:
                buf.popleft()
            else:
                buf[0] = chunk[max_bytes:]
                chunk = chunk[:max_bytes]
            out = chunk
        else:
            parts = []
            need = max_bytes
            while buf and need:
                chunk = buf[0]
                if len(chunk) <= need:
                    parts.append(buf.popleft())
                    need -= len(chunk)
                else:
                    parts.append(chunk[:need])
                    buf[0] = chunk[need:]
                    need = 0
            out = b"".join(parts)
        self._taken(len(out))
        return out  # (bytes already: the buffer holds bytes, see deliver)

    def read_chunk(self) -> bytes:
        """The oldest received piece of the stream, as it arrived (b"" if
        none is ready)."""
        if not self.buf_len:
            return b""
        buf = self._buf
        assert buf is not None  # buf_len > 0
        chunk = buf.popleft()
        self._taken(len(chunk))
        return chunk

    def _taken(self, n: int) -> None:
        self.buf_len -= n
        if not self.buf_len:
            self._buf = None
        self._copied += n

    # ------------------------------------------------------------- window
    @property
    def space(self) -> int:
        """The receive space autotuning has grown to (bytes the window may offer)."""
        return self._space

    def space_adjust(self, now: float, srtt: float | None) -> None:
        """Once a round trip, grow the window to RCV_SPACE_GAIN x what the
        application read in it (the idea of Linux's tcp_rcv_space_adjust).
        Counting what was read, not what arrived, keeps a slow reader's
        window from growing: a sender can only fill what is taken out."""
        if srtt is None or now - self._space_time < srtt:
            return
        want = RCV_SPACE_GAIN * (self._copied - self._space_copied)
        if want > self._space:
            self._space = min(want, self._config.window_size)
        self._space_copied = self._copied
        self._space_time = now

    def advertise_window(self, unscaled: bool, mss: int) -> int:
        """Window to offer (SEG.WND as sent); never shrinks, grows in useful
        steps (RFC 9293 3.8.6.2.2). `unscaled`: a SYN's window (RFC 7323 2.2)."""
        if unscaled:
            return min(self._config.window_size, 0xFFFF)
        # (comparisons rather than min/max calls: this runs for every segment sent)
        space = self._space
        avail = space - self.buf_len
        if avail < 0:
            avail = 0
        rcv_nxt = self.rcv_nxt
        adv = self.rcv_adv
        edge = rcv_nxt + avail
        if edge < adv:
            edge = adv
        elif adv > rcv_nxt:
            step = space // 2
            if mss < step:
                step = mss
            if edge - adv < step:
                edge = adv
        wscale = self.rcv_wscale
        wnd = (edge - rcv_nxt) >> wscale
        if wnd > 0xFFFF:
            wnd = 0xFFFF
        edge = rcv_nxt + (wnd << wscale)
        if edge > adv:
            self.rcv_adv = edge
        self.rcv_adv_at = rcv_nxt
        return wnd

    def window_update(self, mss: int, now: float) -> bool:
        """After the application read: True when the window opened enough
        to tell the sender (RFC 9293 3.8.6.2.2), at once or with the next
        delayed ACK."""
        space = self._space
        avail = space - self.buf_len
        offered = self.rcv_adv - self.rcv_nxt
        step = space // 4  # (max(space // 4, 2 * mss))
        if step < 2 * mss:
            step = 2 * mss
        if not (avail - offered >= step or (offered < 2 * mss and avail - offered >= mss)):
            return False
        if offered < 2 * mss or 2 * (self.rcv_nxt - self.rcv_adv_at) >= self.rcv_adv - self.rcv_adv_at:
            self.ack_now = True  # the peer may be waiting for it: at once
        elif self._deadlines[DELACK] == NEVER:
            # The peer has used less than half of what it was offered, so
            # nothing waits on the update: it rides on our next segment
            # (a reply, typically) or goes with the delayed ACK. Sent at
            # once, it cost every request-response connection a datagram
            # (the first read after the handshake always opens the window
            # from the SYN's 64 KB to the autotuned size).
            self._deadlines[DELACK] = now + self._ack_delay
        return True

    # ------------------------------------------------------------ sending
    def ack_sent(self) -> None:
        """An ACK left (alone or on a segment): nothing is owed any more."""
        self.ack_now = False
        self.unacked_segs = 0
        self._deadlines[DELACK] = NEVER

    def sack_blocks(self) -> tuple[tuple[int, int], ...]:
        """RFC 2018 4: the newest block first, then the others, highest first."""
        blocks = []
        first = self._last_ooo
        if first is not None:
            blocks.append(first)
        for rng in reversed(self.ooo_ranges.ranges()):
            if len(blocks) >= 4:
                break
            if rng != first:
                blocks.append(rng)
        return tuple((s & MASK32, e & MASK32) for s, e in blocks)
