"""The endpoint: every connection behind one UDP socket, sans I/O.

It decodes datagrams, routes them by destination connection ID (so a
connection is not tied to its address), runs the listen backlog and accept
queue, answers segments for unknown connections with RST, and keeps one
timer heap for all connections so that an idle connection costs nothing per
call.

A listener under a flood of forged SYNs keeps no state for them: past
`Config.half_open_limit` half-open connections from unproven addresses (or
`half_open_per_source` from one host, or a full backlog) it answers a SYN
with a stateless Retry whose token the client's next SYN echoes, as a QUIC
server does (RFC 9000 8.1.2); the token, a MAC under a secret drawn from the
endpoint's rng, proves the client receives at its address. Until then no
more than three times the bytes a client sent go to it, half-open
connections live through `synack_retries` SYN,ACKs, and an address that
answered with an ICMP unreachable gets nothing for `unreachable_hold`
seconds. docs/design.md says why Retry rather than SYN cookies.

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

import hashlib
import heapq
import hmac
import random
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Final

from mypy_extensions import mypyc_attr

from ..config import Config
from ..wire.batch import GATHER_FROM, GATHER_ROWS, encode_run, encode_source, rows, scan
from ..wire.datagram import (
    DATA_OVERHEAD,
    SHORT_SIZE,
    TRAILER_SIZE,
    VERSION,
    WireError,
    decode,
    encode,
    peek_short_parts,
    short_fields,
)
from ..wire.segment import ACK, PSH, RST, SYN, Segment, SegmentRun, reset_for
from .connection import Connection
from .events import ConnectionAvailable, Event
from .states import SYNCHRONIZED, State
from .sender import RUN_BYTES

_CLOSED: Final = State.CLOSED  # `State.CLOSED` is a slow lookup in Python 3.11 (see connection.py)
_MASK32: Final = 0xFFFFFFFF
# A Retry token: when it was made (milliseconds, 32 bits) and a 12-byte MAC
# of that time, the client's address and its connection ID. It only has to
# outlive one round trip and a few SYN retransmissions.
# What a listener does with a SYN for a new connection (Endpoint.syn_verdict).
SYN_ADMIT: Final = "admit"  # a half-open connection answers it
SYN_RETRY: Final = "retry"  # a stateless Retry answers it
SYN_UNREACHABLE: Final = "unreachable"  # dropped: the address answered with ICMP unreachable
SYN_BAD_TOKEN: Final = "bad token"  # dropped: its Retry token is not ours, or too old
SYN_BACKLOG_FULL: Final = "backlog full"  # dropped: the client's retransmission tries again
RETRY_TOKEN_LIFETIME: Final = 10.0
_TOKEN_SIZE: Final = 16
# Once under pressure (a half-open limit reached, or a half-open connection
# whose address proved unreachable: a forged SYN), every SYN from an unproven
# address gets a Retry until this long after the last such SYN (Linux, too,
# keeps sending SYN cookies for a while after its SYN queue overflowed):
# otherwise forged SYNs whose half-open connections die at once of ICMP
# errors would each cost a whole connection made and torn down.
PRESSURE_HOLD: Final = 10.0
AMPLIFICATION_LIMIT: Final = 3  # bytes sent per byte received before the address is proven (RFC 9000 8.1)
UNREACHABLE_MEMORY: Final = 16384  # addresses remembered as unreachable (~3 MB), oldest forgotten first


def source_host(addr: object) -> object:
    """The host part of an address, for the per-source limits: the first
    item of a socket address tuple, the address itself otherwise (the core
    treats addresses as opaque)."""
    return addr[0] if type(addr) is tuple else addr


def _listener_answer(sent: bytes) -> bool:
    """Whether a datagram we sent (its first bytes) was a SYN,ACK or a
    Retry: the long form, with SYN and ACK, or with ACK alone from source
    connection ID 0."""
    if len(sent) < 12 or sent[0] != VERSION:
        return False
    flags = sent[1]
    return flags & (SYN | ACK) == SYN | ACK or (flags == ACK and not any(sent[8:12]))


class _HalfOpen:
    """A passive connection in SYN-RECEIVED, as the listener counts it."""

    __slots__ = ("key", "received", "sent")

    def __init__(self, key: tuple[object, bool], received: int | None) -> None:
        self.key = key  # (source host, address proven by a Retry token)
        self.received = received  # bytes of its SYNs; None once the address is proven
        self.sent = 0  # bytes sent to it while unproven


@dataclass(slots=True)  # a client has one endpoint per connection
class EndpointStats:
    datagrams_received: int = 0
    datagrams_sent: int = 0
    malformed_dropped: int = 0
    """Datagrams that failed validation (checksum, length, version, options)."""
    unknown_connection: int = 0
    """Segments for connection IDs we do not have (answered with RST)."""
    resets_sent: int = 0
    resets_rate_limited: int = 0
    """RSTs not sent because `Config.reset_rate` was reached."""
    syn_dropped_backlog: int = 0
    spoofed_dropped: int = 0
    """Segments whose source connection ID did not match the connection
    (answered as if the ID did not exist, as are segments from another
    address that fail the connection's checks)."""
    other_address_dropped: int = 0
    """Plaintext segments for a live connection from another address than
    its peer's (answered as a stranger's): nothing proves who sent them, so
    a plaintext connection does not follow its peer to a new address."""
    retries_sent: int = 0
    """SYNs answered with a stateless Retry (the listener was under pressure)."""
    retry_tokens_invalid: int = 0
    """SYNs dropped for a Retry token that is forged, expired or not theirs."""
    syn_dropped_half_open: int = 0
    """SYNs with a valid token dropped: that host's proven half-open limit."""
    syn_dropped_unreachable: int = 0
    """SYNs ignored from an address that answered with an ICMP unreachable."""
    half_open_unreachable: int = 0
    """Half-open connections dropped when their address proved unreachable."""
    amplification_limited: int = 0
    """SYN,ACKs not sent: three times what an unproven address sent was reached."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# Compiled (gannet/_build.py), and subclassed natively by the encrypted
# endpoint (crypto/endpoint.py) and in Python by the TCP wire's
# (core/tcp_endpoint.py).
# An instance of the compiled class takes no attributes beyond its own, so a
# driver that watches its calls wraps it (observe/trace.py), not patches it.
@mypyc_attr(allow_interpreted_subclasses=True)
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
        # queued resets (a list when any)
        self._out: list[tuple[bytes | bytearray, object]] | tuple = ()
        # Listener defences (see the module docstring). Half-open passive
        # connections, their counts per (host, proven), how many are unproven.
        self._half_open: dict[Connection, _HalfOpen] = {}
        self._half_open_counts: dict[tuple[object, bool], int] = {}
        self._unproven = 0
        self._half_open_at: dict[object, Connection] = {}  # address -> its newest half-open connection
        self._unreachable: dict[object, float] = {}  # address -> until when it gets nothing
        self._secret: bytes | None = None  # the Retry tokens' MAC key, drawn at first need
        self._pressure_until = -1.0  # unproven SYNs get a Retry until then (PRESSURE_HOLD)
        self._rst_tokens = float(self.config.reset_burst)  # the RST token bucket
        self._rst_time: float | None = None
        self.isn_source: Callable[[], int] | None = None
        """Optional ISN generator (tests use it to straddle the 32-bit wrap)."""
        self.route_mtu: Callable[[object], int] | None = None
        """Optional: the largest datagram (UDP payload bytes) the local route
        toward an address carries, 0 if unknown. An adapter that can ask its
        kernel sets it (gannet.io.endpoint.route_mtu); each new connection
        takes the answer as its PMTUD search's ceiling (Connection.route_mtu)."""
        # Runs are encoded with their CRC32C trailers; an endpoint that seals
        # them next (gannet.crypto.endpoint) turns this off: its tag does the
        # CRC's job and the trailer is dropped unread.
        self.run_trailers = True
        # With `trains`, runs of datagrams of GATHER_FROM bytes or more as
        # SourceTrains (the payloads left in the send buffer, wire/batch.py)
        # rather than Trains: set by an I/O adapter that sends them gathered
        # (io/endpoint.py), for the plain encoding only (an endpoint that
        # seals its runs needs their bytes).
        self.source_trains = False

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

    def has_pending(self) -> bool:
        """Whether events wait for `next_event` or output for
        `datagrams_to_send` (an application's reaction to events may queue
        more of both)."""
        return bool(self._events) or bool(self._dirty)

    # --------------------------------------------------------------- network
    def receive_batch(self, buf: bytes | bytearray | memoryview, seg: int, addr: object,
                      now: float, authenticated: bool = False) -> None:
        """Datagrams that arrived together from `addr`, in order, in the shape
        UDP GRO delivers them: `seg` bytes each, back to back in `buf`, the
        last maybe shorter (`seg` 0 for one datagram).

        Same result as `receive_datagram` on each, but runs of in-order data
        segments for one connection take the connection's fast path
        (`Connection.on_data_run`) in one call. `authenticated`: datagrams an
        AEAD tag vouched for (gannet.crypto), whose CRC trailers are not read.
        """
        if seg <= 0 or seg >= len(buf):
            # One datagram: parse it once (a scan first would only find a
            # run of one, which decode then parses again when it declines).
            self.stats.datagrams_received += 1
            self._receive_one(buf, addr, now, True, authenticated)
            return
        one = self._receive_one  # (a bound method: compiled code calls self._receive_one directly)
        for dst, seq, ack, wnd, ts0, ts1, data, raw in scan(buf, seg, authenticated):
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
                        one(raw[:seg], addr, now, False, authenticated)
                        first = seg - DATA_OVERHEAD
                        if conn.on_data_run((seq + first) & 0xFFFFFFFF, ack, wnd, ts0, ts1,
                                            data[first:], count - 1, last, now):
                            continue
                        raw = raw[seg:]
            if count == 1:
                one(raw, addr, now, False, authenticated)  # (rows() would cut nothing)
                continue
            for d in rows(raw, seg):
                one(d, addr, now, False, authenticated)

    def receive_datagram(self, data: bytes | bytearray | memoryview, addr: object, now: float) -> None:
        self.stats.datagrams_received += 1
        self._receive_one(data, addr, now)

    def _receive_one(self, data: bytes | bytearray | memoryview, addr: object, now: float,
                     fast: bool = False, authenticated: bool = False) -> None:
        """Decode one datagram and hand it to its connection; `fast` lets an
        in-order data segment take the connection's run path as a run of one;
        `authenticated` (see receive_batch) skips its CRC."""
        src: int | None  # the short form names no source
        head = short_fields(data, authenticated)
        if not head[0]:
            if self._unreachable and data[1] & SYN and addr in self._unreachable and not any(data[4:8]):
                # A SYN from an address that answered with an ICMP unreachable:
                # a flood comes round to the same forged ports again and again,
                # so this is dropped before any parsing (_on_syn for the rest).
                if self._unreachable[addr] > now:
                    self.stats.syn_dropped_unreachable += 1
                    return
            try:
                dst, src, seg = decode(data, authenticated)
            except WireError:
                self.stats.malformed_dropped += 1
                return
        else:
            # The common short-form ACK or data segment: its header is read
            # and checked. The core keeps the payload: a copy (slicing bytes
            # makes one; compiled, this is a native slice rather than a call
            # to bytes()).
            payload: bytes
            if type(data) is bytes:
                payload = data[SHORT_SIZE:-TRAILER_SIZE]
            else:
                payload = bytes(data[SHORT_SIZE:-TRAILER_SIZE])
            self._on_short(head, payload, addr, now, fast, authenticated)
            return
        if dst == 0:
            self._on_connectionless(seg, src, addr, now, len(data))
            return
        self._on_segment_for(dst, src, seg, addr, now, fast, authenticated)

    def receive_parts(self, head: bytes | bytearray, payload: bytes, trailer: bytes, addr: object,
                      now: float) -> None:
        """One datagram received in three parts: its first SHORT_SIZE bytes,
        the rest but the last TRAILER_SIZE, and those (io/datapath.py's
        receive of a large datagram straight into a bytes object of its
        own). A short-form segment's payload is kept as it is, without the
        copy `_receive_one` makes; anything else is joined and goes there."""
        self.stats.datagrams_received += 1
        fields = peek_short_parts(head, payload, trailer)
        if fields is None:
            self._receive_one(head + payload + trailer, addr, now, True)
            return
        self._on_short(fields, payload, addr, now, True, False)

    def _on_short(self, head: tuple[int, int, int, int, int, int], payload: bytes, addr: object,
                  now: float, fast: bool, authenticated: bool) -> None:
        """A checked short-form ACK or data segment (`peek_short`'s fields):
        header prediction may take it without a Segment."""
        dst, flags, seq, ack, wnd, tsval = head
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
        self._on_segment_for(dst, None, seg, addr, now, fast, authenticated)

    def _on_segment_for(self, dst: int, src: int | None, seg: Segment, addr: object, now: float,
                        fast: bool, authenticated: bool) -> None:
        """A decoded segment for connection `dst` (not 0): to its connection,
        after the checks of who may send it."""
        conn = self._conns.get(dst)
        if conn is None:
            self.stats.unknown_connection += 1
            self._reset(seg, dst, src, addr, now)
            return
        if src is None:
            # The short form names no source: only a connection that knows
            # its peer (its handshake has reached it) takes one.
            if not conn.remote_cid:
                self.stats.spoofed_dropped += 1
                self._answer_stranger(conn, seg, dst, src, addr, now)
                return
        elif seg.retry_token is not None:
            # A listener's Retry (from connection ID 0), or a forged one.
            if src or not self._on_retry(conn, seg, addr, now):
                self.stats.spoofed_dropped += 1
                self._answer_stranger(conn, seg, dst, src, addr, now)
            return
        elif conn.remote_cid and src != conn.remote_cid:
            self.stats.spoofed_dropped += 1
            self._answer_stranger(conn, seg, dst, src, addr, now)
            return
        if not conn.remote_cid:
            if not src:
                # Source ID 0 names no connection: only a RST from an endpoint
                # that has none (`_reset`) carries it. Learnt as the peer's
                # ID, it would address every later segment to no one.
                if seg.flags & RST:
                    conn.on_segment(seg, now)
                else:
                    self.stats.malformed_dropped += 1
                return
            conn.remote_cid = src
            self._syn_index[(conn.remote_addr, src)] = conn
            self._connecting.pop(conn.remote_addr, None)
        if addr != conn.remote_addr and conn.state in SYNCHRONIZED:
            # From another address than the peer's. The connection ID, not
            # the address, names the connection, so the peer may have moved
            # (NAT rebinding, RFC 9000 section 9); or someone else sent it.
            # Only a datagram an AEAD tag vouched for says who sent it: a
            # plaintext one is dropped and answered as a stranger's, so a
            # plaintext connection never moves. An authenticated one (the
            # peer made it, and it is no replay) is the connection's to
            # judge like any other, and moves the peer only once the layer
            # that opened it has validated the new path (`_on_peer_address`,
            # `move_peer`) - even one the connection drops, such as a
            # keep-alive probe, which may be all a peer that moved sends.
            if not authenticated:
                self.stats.other_address_dropped += 1
                self._answer_stranger(conn, seg, dst, src, addr, now)
                return
            conn.on_segment(seg, now)
            if conn.state in SYNCHRONIZED:
                self._on_peer_address(conn, addr, now)
            return
        text = seg.payload
        if (fast and text and seg.flags | PSH == ACK | PSH and seg.tsval is not None and not seg.sack
                and conn.on_data_run(seg.seq, seg.ack, seg.wnd, seg.tsval, seg.tsval, text, 1,
                                     len(text), now)):
            return
        conn.on_segment(seg, now)

    def _on_peer_address(self, conn: Connection, addr: object, now: float) -> None:
        """An authenticated segment of `conn` came from `addr`, not from
        the peer's address. The layer that authenticated it
        (gannet.crypto.endpoint) validates that path, then calls
        `move_peer`; the plain endpoint authenticates nothing and never
        gets here."""

    def move_peer(self, conn: Connection, addr: object) -> None:
        """`conn`'s peer is at `addr` from now on (its path was validated):
        every later datagram goes there, and lookups by address find it."""
        index = self._syn_index
        if index.get((conn.remote_addr, conn.remote_cid)) is conn:
            del index[(conn.remote_addr, conn.remote_cid)]
        index[(addr, conn.remote_cid)] = conn
        conn.remote_addr = addr

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

    def address_unreachable(self, addr: object, now: float, sent: bytes = b"") -> list[Connection]:
        """The adapter heard an ICMP unreachable for a datagram sent to
        `addr`; `sent` is the start of that datagram, as the error returns it.

        A listener drops the half-open connection to it at once (no more
        SYN,ACKs), and if what drew the error was a listener's answer (a
        SYN,ACK or a Retry) it ignores SYNs from the address for
        `Config.unreachable_hold` seconds: forged SYNs name closed ports, and
        the ports answer. (An error for anything else, such as our own SYN
        to a chat peer not started yet, or the last ACK to a peer that
        exited, does not: that peer may well connect to us next.) Returns our
        own connection attempts to `addr` still in SYN-SENT (a port
        unreachable refuses them: the adapter decides)."""
        conn = self._half_open_at.get(addr)
        if conn is not None:
            self.stats.half_open_unreachable += 1
            # Closed without a RST: the address would only answer it again.
            conn._terminate(None)
            self._pressure_until = now + PRESSURE_HOLD
        if self._listening and self.config.unreachable_hold > 0 and _listener_answer(sent):
            held = self._unreachable
            if addr not in held and len(held) >= UNREACHABLE_MEMORY:
                del held[next(iter(held))]  # the oldest
            held[addr] = now + self.config.unreachable_hold
        if addr not in self._connecting:
            return []
        return [c for c in self._conns.values() if c.state is State.SYN_SENT and c.remote_addr == addr]

    def _on_connectionless(self, seg: Segment, src: int | None, addr: object, now: float, size: int) -> None:
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
            entry = self._half_open.get(existing)
            if entry is not None and entry.received is not None:
                entry.received += size  # its SYN,ACK may go again within 3x
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
            self._reset(seg, 0, src, addr, now)
            return
        self._on_syn(seg, src, addr, now, size)

    def _on_syn(self, seg: Segment, src: int, addr: object, now: float, size: int) -> None:
        """A listener's answer to a SYN for a new connection: a half-open
        connection, a stateless Retry, or nothing (see the module docstring)."""
        verdict = self.syn_verdict(seg, src, addr, now)
        if verdict is SYN_UNREACHABLE:
            self.stats.syn_dropped_unreachable += 1
            return
        if self._unreachable.get(addr) is not None:
            del self._unreachable[addr]  # its hold is over
        if verdict is SYN_BAD_TOKEN:
            self.stats.retry_tokens_invalid += 1
            return
        if verdict is SYN_BACKLOG_FULL:
            # Like Linux: drop the SYN; the client's retransmission tries again.
            self.stats.syn_dropped_backlog += 1
            return
        if verdict is SYN_RETRY:
            self._pressure_until = now + PRESSURE_HOLD
            self._send_retry(seg, src, addr, now)
            return
        proven = seg.retry_token is not None
        key = (source_host(addr), proven)
        received = None if proven else size
        if not proven:
            self._unproven += 1
        conn = self._admit(seg, addr, now)  # the backlog has room (checked above)
        conn.remote_cid = src
        self._syn_index[(addr, src)] = conn
        self._half_open[conn] = _HalfOpen(key, received)
        self._half_open_counts[key] = self._half_open_counts.get(key, 0) + 1
        self._half_open_at[addr] = conn

    def syn_verdict(self, seg: Segment, src: int, addr: object, now: float) -> str:
        """What a listener does with the SYN `seg` for a new connection, with
        no side effect: SYN_ADMIT, SYN_RETRY, or a reason to drop it. An
        endpoint that spends work on a SYN before the core sees it (the key
        exchange of crypto/endpoint.py) asks first, so that a flood costs it
        no more than it costs the core."""
        until = self._unreachable.get(addr)
        if until is not None and now < until:
            return SYN_UNREACHABLE
        if seg.retry_token is not None:
            if not self._token_valid(seg.retry_token, addr, src, now):
                return SYN_BAD_TOKEN
            # A proven address is bounded by the backlog alone: one host
            # opening many connections at once (a tunnel, a NAT, a load
            # test) must not wait out SYN retransmissions.
            return SYN_BACKLOG_FULL if len(self._unaccepted) >= self._backlog else SYN_ADMIT
        # Unproven half-open connections fill at most half the backlog:
        # forged SYNs leave a proven client room. (At least one: a listener
        # with a backlog of 1 must not answer every SYN with a Retry.)
        cfg = self.config
        if (now < self._pressure_until
                or self._unproven >= min(cfg.half_open_limit, max(1, self._backlog // 2))
                or self._half_open_counts.get((source_host(addr), False), 0) >= cfg.half_open_per_source
                or len(self._unaccepted) >= self._backlog):
            return SYN_RETRY
        return SYN_ADMIT

    def _passive_open(self, seg: Segment, addr: object, now: float) -> Connection | None:
        """A listener's new connection for the SYN `seg` from `addr`, or None
        when the backlog is full (like Linux, the SYN is dropped and the
        client's retransmission tries again). The TCP wire's listener
        (core/tcp_endpoint.py) opens this way; `_on_syn` adds the flood
        limits of Gannet's own wire."""
        if len(self._unaccepted) >= self._backlog:
            self.stats.syn_dropped_backlog += 1
            return None
        return self._admit(seg, addr, now)

    def _admit(self, seg: Segment, addr: object, now: float) -> Connection:
        """A new connection in the accept queue, answering the SYN `seg`."""
        conn = self._new_connection(addr, now, None)
        self._unaccepted[conn] = False
        conn.accept_syn(seg, now)
        return conn

    def _send_retry(self, syn: Segment, src: int, addr: object, now: float) -> None:
        """Answer `syn` with a Retry: an ACK of the client's SYN, from
        connection ID 0, carrying a token (48 bytes: under twice the
        smallest SYN), and keep nothing."""
        retry = Segment(0, (syn.seq + 1) & _MASK32, ACK, 0, retry_token=self._make_token(addr, src, now))
        if type(self._out) is not list:
            self._out = []
        self._out.append((encode(src, 0, retry), addr))
        self.stats.retries_sent += 1

    def _on_retry(self, conn: Connection, seg: Segment, addr: object, now: float) -> bool:
        """A Retry for our connection attempt `conn`: it must acknowledge our
        SYN exactly (so only who saw the SYN can send one) and come from where
        the SYN went."""
        return (
            seg.retry_token is not None
            and seg.flags == ACK
            and not seg.payload
            and seg.ack == (conn.iss + 1) & _MASK32
            and addr == conn.remote_addr
            and conn.on_retry(seg.retry_token, now)
        )

    def _token_mac(self, issued: bytes, addr: object, cid: int) -> bytes:
        if self._secret is None:
            self._secret = self.rng.getrandbits(256).to_bytes(32, "big")
        msg = issued + cid.to_bytes(4, "big") + repr(addr).encode()
        return hashlib.blake2s(msg, key=self._secret, digest_size=_TOKEN_SIZE - 4).digest()

    def _make_token(self, addr: object, cid: int, now: float) -> bytes:
        issued = (int(now * 1000) & _MASK32).to_bytes(4, "big")
        return issued + self._token_mac(issued, addr, cid)

    def _token_valid(self, token: bytes, addr: object, cid: int, now: float) -> bool:
        if len(token) != _TOKEN_SIZE:
            return False
        issued = token[:4]
        age = (int(now * 1000) - int.from_bytes(issued, "big")) & _MASK32
        if age > RETRY_TOKEN_LIFETIME * 1000:
            return False
        return hmac.compare_digest(token[4:], self._token_mac(issued, addr, cid))

    def _answer_stranger(self, conn: Connection, seg: Segment, dst: int, src: int | None,
                         addr: object, now: float) -> None:
        """A segment naming `conn` that cannot be from its peer gets what a
        segment naming no connection gets: the same RST, so that scanning
        connection IDs tells live ones from dead ones by nothing.

        Unless that RST could end the connection: if `addr` were really the
        peer (it moved, and this is an old duplicate), a RST whose sequence
        number lies in [SND.UNA, SND.NXT] could be the peer's RCV.NXT, which
        is all a RST needs (RFC 5961). A made-up acknowledgment number lands
        there with odds of the window over 2^32."""
        rst = reset_for(seg)
        if rst is None:
            return
        if ((rst.seq - conn.snd_una) & _MASK32) <= ((conn.snd_nxt - conn.snd_una) & _MASK32):
            return
        self._reset(seg, dst, src, addr, now)

    def _reset(self, seg: Segment, dst: int, src: int | None, addr: object, now: float) -> None:
        """RFC 9293 3.10.7.1: answer a segment for no connection with RST,
        at most `Config.reset_rate` per second (a token bucket of
        `reset_burst`): a stream of datagrams to made-up IDs gets no stream
        of answers.

        A short-form segment does not say which connection sent it (`src`
        None): the RST then goes to ID 0 with the ID the segment was sent to
        as its source, and the peer finds its connection by that ID and the
        address (`_on_connectionless`)."""
        rst = reset_for(seg)
        if rst is None:
            return
        if not self._may_answer(now):
            self.stats.resets_rate_limited += 1
            return
        if type(self._out) is not list:
            self._out = []
        self._out.append((encode(src or 0, dst, rst), addr))
        self.stats.resets_sent += 1

    def _may_answer(self, now: float) -> bool:
        """Take a token from the bucket that paces the answers to datagrams
        no connection takes (RSTs here, the encrypted endpoint's alerts):
        `Config.reset_rate` per second, `reset_burst` at once."""
        cfg = self.config
        tokens = self._rst_tokens
        last = self._rst_time
        if last is not None and now > last:
            tokens = min(float(cfg.reset_burst), tokens + (now - last) * cfg.reset_rate)
        if last is None or now > last:
            self._rst_time = now
        if tokens < 1:
            self._rst_tokens = tokens
            return False
        self._rst_tokens = tokens - 1
        return True

    def datagrams_to_send(self, now: float,
                          trains: bool = False) -> list[tuple[bytes | bytearray, object]]:
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
        half = self._half_open
        dirty = self._dirty  # (the connections' own: kept, emptied per pass)
        # Runs of datagrams that leave apart (SourceTrains) may hold several
        # of path MTU discovery's; else a run is at most one GSO send.
        runs = GATHER_ROWS if trains and self.source_trains else 1
        while dirty:
            conns = list(dirty)
            dirty.clear()
            for conn in conns:
                segs = conn.segments_to_send(now, runs)
                if half and segs and conn in half:
                    sent += self._send_half_open(conn, half[conn], segs, out)
                elif segs:
                    sent += self._encode_into(conn, segs, out, trains)
                self._after_change(conn)
        self.stats.datagrams_sent += sent
        return out

    def _encode_into(self, conn: Connection, segs: list, out: list, trains: bool) -> int:
        """Append `conn`'s segments to `out` as (datagram, Train or SourceTrain, address);
        returns the number of datagrams. The one step an endpoint for
        another encoding replaces (core/tcp_endpoint.py)."""
        sent = 0
        addr, dst, src = conn.remote_addr, conn.remote_cid, conn.local_cid
        for seg in segs:
            if type(seg) is SegmentRun:
                sent += seg.count
                if trains and self.source_trains and seg.mss + DATA_OVERHEAD >= GATHER_FROM:
                    source = encode_source(dst, seg)
                    if len(source) <= RUN_BYTES:  # (one GSO send)
                        out.append((source, addr))
                    else:  # (several of path MTU discovery's datagrams: a message each)
                        out.extend([(row, addr) for row in source.apart()])
                    continue
                train = encode_run(dst, seg, self.run_trailers)
                if trains:
                    out.append((train, addr))
                else:
                    out.extend((d, addr) for d in train.datagrams())
            else:
                out.append((encode(dst, src, seg), addr))
                sent += 1
        return sent

    def _send_half_open(self, conn: Connection, entry: _HalfOpen, segs: list, out: list) -> int:
        """A half-open connection's segments (its SYN,ACK): to an address not
        yet proven, no more than AMPLIFICATION_LIMIT times the bytes that
        came from it (RFC 9000 8.1); the rest is not sent (counted)."""
        n = 0
        addr, dst, src = conn.remote_addr, conn.remote_cid, conn.local_cid
        for seg in segs:
            data = encode(dst, src, seg)
            if entry.received is not None:
                if entry.sent + len(data) > AMPLIFICATION_LIMIT * entry.received:
                    self.stats.amplification_limited += 1
                    continue
                entry.sent += len(data)
            out.append((data, addr))
            n += 1
        return n

    def _half_open_done(self, conn: Connection) -> None:
        """`conn` left SYN-RECEIVED (established, or gone): uncount it."""
        entry = self._half_open.pop(conn, None)
        if entry is None:
            return
        counts = self._half_open_counts
        left = counts[entry.key] - 1
        if left:
            counts[entry.key] = left
        else:
            del counts[entry.key]
        if entry.received is not None:
            self._unproven -= 1
        if self._half_open_at.get(conn.remote_addr) is conn:
            del self._half_open_at[conn.remote_addr]

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
            events=self._events, dirty=self._dirty,
            iss=self.isn_source() if self.isn_source else None,
        )
        if self.route_mtu is not None:
            conn.route_mtu = self.route_mtu(addr)
        self._conns[cid] = conn
        return conn

    def _allocate_cid(self) -> int:
        while True:
            cid = self.rng.getrandbits(32)
            if cid and cid not in self._conns:
                return cid

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
            self._half_open_done(conn)
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
            self._half_open_done(conn)
