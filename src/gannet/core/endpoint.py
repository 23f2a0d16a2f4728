"""The endpoint: every connection behind one UDP socket, sans I/O.

It decodes datagrams, routes them by destination connection ID (so a
connection is not tied to its address), runs the listen backlog and accept
queue, answers segments for unknown connections with RST, and keeps one
timer heap for all connections so that an idle connection costs nothing per
call.

The heap is lazy, because most deadline changes move a deadline later (every
segment received pushes the keep-alive deadline on; every ACK the
retransmission deadline): a connection has one live heap entry, keyed by the
earliest deadline it has had since the entry was pushed. A deadline that moves
later leaves the entry alone; when the entry reaches the top of the heap, it
is either due or pushed again at the connection's real deadline. Only a
deadline that moves earlier pushes a new entry. So the heap holds about one
entry per connection, and a connection's traffic costs O(1) heap work per
deadline that is reached, not O(log n) per segment.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..config import Config
from ..wire.batch import encode_run, rows, scan
from ..wire.datagram import DATA_OVERHEAD, SHORT_SIZE, TRAILER_SIZE, WireError, decode, encode, peek_short
from ..wire.segment import ACK, PSH, RST, SYN, Segment, SegmentRun, reset_for
from .connection import Connection
from .events import ConnectionAvailable, Event
from .states import SYNCHRONIZED, State

_CLOSED = State.CLOSED  # `State.CLOSED` is a slow lookup in Python 3.11 (see connection.py)


@dataclass(slots=True)  # a client has one endpoint per connection
class EndpointStats:
    datagrams_received: int = 0
    datagrams_sent: int = 0
    malformed_dropped: int = 0
    """Datagrams that failed validation (checksum, length, version, options)."""
    unknown_connection: int = 0
    """Segments for connection IDs we do not have (answered with RST)."""
    resets_sent: int = 0
    syn_dropped_backlog: int = 0
    spoofed_dropped: int = 0
    """Segments whose source connection ID did not match the connection."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Endpoint:
    def __init__(self, config: Config | None = None, rng: random.Random | None = None) -> None:
        self.config = config or Config()
        if rng is None:
            raise TypeError("Endpoint needs a random.Random (seeded in tests, SystemRandom in adapters)")
        self.rng = rng
        self.stats = EndpointStats()
        self._conns: dict[int, Connection] = {}
        # (peer address, peer's connection ID) -> connection, for every
        # connection that knows its peer's ID: finds the connection a
        # retransmitted SYN or a RST sent to ID 0 is for.
        self._syn_index: dict[tuple[object, int], Connection] = {}
        self._connecting: dict[object, Connection] = {}
        self._listening = False
        self._backlog = self.config.backlog
        self._accept_queue: deque[Connection] | None = None  # made by the first queued connection
        self._unaccepted: dict[Connection, bool] = {}  # handshaking or queued -> queued
        self._events: deque[Event] = deque()
        self._dirty: dict[Connection, None] = {}
        self._heap: list[tuple[float, int, Connection]] = []
        # Each connection's real deadline and the key of its live heap entry
        # are kept on the connection (_ep_deadline, _ep_key): two dicts per
        # endpoint were two more objects per connection for a client, which
        # has an endpoint per connection.
        self._tick = 0  # heap entries' tie-breaker
        self._out: list[tuple[bytes, object]] | tuple = ()  # queued resets (a list when any)
        self._touch_cb = self._touch  # one bound method shared by every connection
        self.isn_source: Callable[[], int] | None = None
        """Optional ISN generator (tests use it to straddle the 32-bit wrap)."""

    # ----------------------------------------------------------- application
    @property
    def connections(self) -> list[Connection]:
        return list(self._conns.values())

    @property
    def connection_count(self) -> int:
        """len(connections), without building the list."""
        return len(self._conns)

    @property
    def listening(self) -> bool:
        return self._listening

    def listen(self, backlog: int | None = None) -> None:
        self._listening = True
        if backlog is not None:
            if backlog < 1:
                raise ValueError("backlog must be at least 1")
            self._backlog = backlog

    def stop_listening(self) -> None:
        self._listening = False

    def connect(self, addr: object, now: float, config: Config | None = None) -> Connection:
        conn = self._new_connection(addr, now, config)
        self._connecting[addr] = conn
        conn.connect(now)
        return conn

    def accept(self) -> Connection | None:
        while self._accept_queue:
            conn = self._accept_queue.popleft()
            self._unaccepted.pop(conn, None)
            return conn
        return None

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # --------------------------------------------------------------- network
    def receive_batch(self, buf: bytes | bytearray | memoryview, seg: int, addr: object,
                      now: float) -> None:
        """Datagrams that arrived together from `addr`, in order, in the shape
        UDP GRO delivers them: `seg` bytes each, back to back in `buf`, the
        last maybe shorter (`seg` 0 for one datagram).

        Same result as `receive_datagram` on each, but runs of in-order data
        segments for one connection take the connection's fast path
        (`Connection.on_data_run`) in one call.
        """
        one = self._receive_one
        if seg <= 0 or seg >= len(buf):
            # One datagram: parse it once (a scan first would only find a
            # run of one, which decode then parses again when it declines).
            self.stats.datagrams_received += 1
            one(buf, addr, now, True)
            return
        for dst, seq, ack, wnd, ts0, ts1, data, raw in scan(buf, seg):
            size = len(raw)
            count = -(-size // seg)
            self.stats.datagrams_received += count
            if data is not None:
                conn = self._conns.get(dst)
                if conn is not None and conn.remote_cid and conn.remote_addr == addr:
                    last = size - (count - 1) * seg - DATA_OVERHEAD
                    if conn.on_data_run(seq, ack, wnd, ts0, ts1, data, count, last, now):
                        continue
                    if count > 1:
                        # The first segment may move the ACK point or the
                        # window; after it, the others may still be a run.
                        one(raw[:seg], addr, now)
                        first = seg - DATA_OVERHEAD
                        if conn.on_data_run((seq + first) & 0xFFFFFFFF, ack, wnd, ts0, ts1,
                                            data[first:], count - 1, last, now):
                            continue
                        raw = raw[seg:]
            for d in rows(raw, seg):
                one(d, addr, now)

    def receive_datagram(self, data: bytes | bytearray | memoryview, addr: object, now: float) -> None:
        self.stats.datagrams_received += 1
        self._receive_one(data, addr, now)

    def _receive_one(self, data: bytes | bytearray | memoryview, addr: object, now: float,
                     fast: bool = False) -> None:
        """Decode one datagram and hand it to its connection; `fast` lets an
        in-order data segment take the connection's run path as a run of one."""
        head = peek_short(data)
        if head is None:
            try:
                dst, src, seg = decode(data)
            except WireError:
                self.stats.malformed_dropped += 1
                return
        else:
            # The common short-form ACK or data segment: its header is read
            # and checked; header prediction may take it without a Segment.
            dst, flags, seq, ack, wnd, tsval = head
            payload = bytes(data[SHORT_SIZE:-TRAILER_SIZE])  # the core keeps it: a copy
            conn = self._conns.get(dst)
            if (
                conn is not None
                and conn.remote_cid
                and (addr is conn.remote_addr or addr == conn.remote_addr)
                and conn.on_predicted(seq, ack, wnd, tsval, payload, now)
            ):
                return
            seg = Segment(seq, ack, flags, wnd, payload)
            seg.tsval = tsval
            src = None
        if dst == 0:
            self._on_connectionless(seg, src, addr, now)
            return
        conn = self._conns.get(dst)
        if conn is None:
            self.stats.unknown_connection += 1
            self._reset(seg, dst, src, addr)
            return
        if src is None:
            # The short form names no source: only a connection that knows
            # its peer (its handshake has reached it) takes one.
            if not conn.remote_cid:
                self.stats.spoofed_dropped += 1
                return
        elif conn.remote_cid and src != conn.remote_cid:
            self.stats.spoofed_dropped += 1
            return
        if not conn.remote_cid and src is not None:
            conn.remote_cid = src
            self._syn_index[(conn.remote_addr, src)] = conn
            self._connecting.pop(conn.remote_addr, None)
        if addr != conn.remote_addr and conn.state in SYNCHRONIZED:
            # The peer moved (NAT rebinding, new interface): follow it, since
            # the connection ID, not the address, names the connection; but
            # only once the segment passed the connection's checks, so that a
            # forged one (wrong sequence, blind RST or SYN) cannot redirect it.
            dropped = conn.stats.dropped_segments
            conn.on_segment(seg, now)
            if conn.stats.dropped_segments == dropped and conn.state in SYNCHRONIZED:
                if self._syn_index.get((conn.remote_addr, conn.remote_cid)) is conn:
                    del self._syn_index[(conn.remote_addr, conn.remote_cid)]
                self._syn_index[(addr, conn.remote_cid)] = conn
                conn.remote_addr = addr
            return
        text = seg.payload
        if (fast and text and seg.flags | PSH == ACK | PSH and seg.tsval is not None and not seg.sack
                and conn.on_data_run(seg.seq, seg.ack, seg.wnd, seg.tsval, seg.tsval, text, 1,
                                     len(text), now)):
            return
        conn.on_segment(seg, now)

    def datagram_too_big(self, data: bytes | bytearray | memoryview, addr: object) -> bool:
        """The adapter could not send `data` to `addr`: the local stack said
        EMSGSIZE (larger than the interface's MTU). If it was a connection's
        PMTU probe, that connection learns at once (`Connection.
        on_datagram_too_big`). Both header forms name the receiver's
        connection ID at bytes 4-8: the peer's ID, which with the address
        finds ours."""
        if len(data) < 8:
            return False
        conn = self._syn_index.get((addr, int.from_bytes(data[4:8], "big")))
        return conn is not None and conn.on_datagram_too_big(len(data))

    def _on_connectionless(self, seg: Segment, src: int | None, addr: object, now: float) -> None:
        """A segment with no destination ID: a SYN opening a connection, or a
        RST from a peer that does not know the connection the source ID names
        (what `_reset` sends for a short-form segment)."""
        if seg.flags & RST and src:
            conn = self._syn_index.get((addr, src))
            if conn is None:
                self.stats.unknown_connection += 1
            else:
                conn.on_segment(seg, now)  # checks its sequence number (RFC 5961)
            return
        if not seg.flags & SYN or seg.flags & ACK or not src:
            self.stats.malformed_dropped += 1
            return
        existing = self._syn_index.get((addr, src))
        if existing is not None:
            existing.on_segment(seg, now)  # a retransmitted SYN
            return
        pending = self._connecting.get(addr)
        if pending is not None and pending.state == State.SYN_SENT and not pending.remote_cid:
            # Simultaneous open: both sides sent SYN before hearing the other.
            pending.remote_cid = src
            self._syn_index[(addr, src)] = pending
            self._connecting.pop(addr, None)
            pending.on_segment(seg, now)
            return
        if not self._listening:
            self.stats.unknown_connection += 1
            self._reset(seg, 0, src, addr)
            return
        conn = self._passive_open(seg, addr, now)
        if conn is not None:
            conn.remote_cid = src
            self._syn_index[(addr, src)] = conn

    def _passive_open(self, seg: Segment, addr: object, now: float) -> Connection | None:
        """A listener's new connection for the SYN `seg` from `addr`, or None
        when the backlog is full (like Linux, the SYN is dropped and the
        client's retransmission tries again)."""
        if len(self._unaccepted) >= self._backlog:
            self.stats.syn_dropped_backlog += 1
            return None
        conn = self._new_connection(addr, now, None)
        self._unaccepted[conn] = False
        conn.accept_syn(seg, now)
        return conn

    def _reset(self, seg: Segment, dst: int, src: int | None, addr: object) -> None:
        """RFC 9293 3.10.7.1: answer a segment for no connection with RST.

        A short-form segment does not say which connection sent it (`src`
        None): the RST then goes to ID 0 with the ID the segment was sent to
        as its source, and the peer finds its connection by that ID and the
        address (`_on_connectionless`)."""
        rst = reset_for(seg)
        if rst is None:
            return
        if type(self._out) is not list:
            self._out = []
        self._out.append((encode(src or 0, dst, rst), addr))
        self.stats.resets_sent += 1

    def datagrams_to_send(self, now: float, trains: bool = False) -> list[tuple[bytes, object]]:
        """Datagrams to send, with their destination addresses, in order.

        With `trains`, a run of full-size data segments comes as one `Train`
        (datagrams of `train.size` bytes back to back, for one UDP GSO send);
        without, every item is one datagram.
        """
        out = self._out
        if type(out) is list:
            self._out = ()
        else:
            out = []
        sent = len(out)
        while self._dirty:
            dirty = self._dirty
            self._dirty = {}
            for conn in dirty:
                segs = conn.segments_to_send(now, True)
                if segs:
                    sent += self._encode_into(conn, segs, out, trains)
                self._after_change(conn)
        self.stats.datagrams_sent += sent
        return out

    def _encode_into(self, conn: Connection, segs: list, out: list, trains: bool) -> int:
        """Append `conn`'s segments to `out` as (datagram or Train, address);
        returns the number of datagrams. The one step an endpoint for
        another encoding replaces (core/tcp_endpoint.py)."""
        sent = 0
        addr, dst, src = conn.remote_addr, conn.remote_cid, conn.local_cid
        for seg in segs:
            if type(seg) is SegmentRun:
                train = encode_run(dst, seg)
                sent += seg.count
                if trains:
                    out.append((train, addr))
                else:
                    out.extend((d, addr) for d in train.datagrams())
            else:
                out.append((encode(dst, src, seg), addr))
                sent += 1
        return sent

    # ----------------------------------------------------------------- time
    def get_timer(self) -> float | None:
        for conn in self._dirty:
            self._refresh_deadline(conn)
        heap = self._heap
        while heap:
            key, _, conn = heap[0]
            if self._settle_top(key, conn):
                return key
        return None

    def handle_timer(self, now: float) -> None:
        for conn in list(self._dirty):
            self._refresh_deadline(conn)
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            key, _, conn = heap[0]
            if self._settle_top(key, conn):
                heapq.heappop(heap)
                conn._ep_key = conn._ep_deadline = None
                due.append(conn)
        for conn in due:
            conn.handle_timer(now)
            self._dirty[conn] = None

    def _settle_top(self, key: float, conn: Connection) -> bool:
        """Whether the top heap entry (key, _, conn) is a real deadline; if it
        is stale or early, replace it (pop, or push again at the real one)."""
        if conn._ep_key != key:
            heapq.heappop(self._heap)  # superseded by an earlier entry
            return False
        deadline = conn._ep_deadline
        if deadline == key:
            return True
        if deadline is None:
            heapq.heappop(self._heap)
            conn._ep_key = None
        else:  # the deadline moved later since this entry was pushed
            conn._ep_key = deadline
            self._tick += 1
            heapq.heapreplace(self._heap, (deadline, self._tick, conn))
        return False

    # --------------------------------------------------------------- helpers
    def _new_connection(self, addr: object, now: float, config: Config | None) -> Connection:
        cid = self._allocate_cid()
        conn = Connection(
            config or self.config, self.rng, now, remote_addr=addr, local_cid=cid,
            events=self._events, touch=self._touch_cb,
            iss=self.isn_source() if self.isn_source else None,
        )
        self._conns[cid] = conn
        return conn

    def _allocate_cid(self) -> int:
        while True:
            cid = self.rng.getrandbits(32)
            if cid and cid not in self._conns:
                return cid

    def _touch(self, conn: Connection) -> None:
        self._dirty[conn] = None

    def _refresh_deadline(self, conn: Connection) -> None:
        deadline = conn._ep_deadline = conn.get_timer()
        if deadline is None:
            return  # its heap entry, if any, goes when it surfaces
        key = conn._ep_key
        if key is None or deadline < key:
            conn._ep_key = deadline
            self._tick += 1
            heapq.heappush(self._heap, (deadline, self._tick, conn))

    def _after_change(self, conn: Connection) -> None:
        if conn.state is _CLOSED:
            self._forget(conn)
            return
        if conn.passive and self._unaccepted.get(conn) is False and conn.state in SYNCHRONIZED:
            self._unaccepted[conn] = True  # queued
            if self._accept_queue is None:
                self._accept_queue = deque()
            self._accept_queue.append(conn)
            self._events.append(ConnectionAvailable(conn))
        self._refresh_deadline(conn)

    def _forget(self, conn: Connection) -> None:
        self._conns.pop(conn.local_cid, None)
        self._syn_index.pop((conn.remote_addr, conn.remote_cid), None)
        if self._connecting.get(conn.remote_addr) is conn:
            del self._connecting[conn.remote_addr]
        conn._ep_deadline = None  # its heap entry goes when it surfaces
        if self._unaccepted.get(conn) is False:
            del self._unaccepted[conn]  # died before the handshake finished
