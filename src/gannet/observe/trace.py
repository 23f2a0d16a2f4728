"""The observer: watches one sans-I/O Endpoint from the outside.

It wraps the endpoint's four boundary calls (`receive_datagram`,
`receive_batch`, `handle_timer`, `datagrams_to_send`), so the core itself
has no hooks: the observer has the four, observed, for a driver to call
instead of the endpoint's (the simulator's scenarios do), and by default
puts them on the endpoint instance too, for a driver that holds the
endpoint (the I/O adapter). An instance of a compiled class (the plain
Endpoint, SecureEndpoint, InsecureEndpoint) takes no such attributes:
observe it through the observer's methods, or make it of its class's
`observable` subclass (the I/O adapter does when a qlog or a pcap is on).
The limit accounting alone needs no wrapper: it runs after each output
pass (`after_pass`), which the I/O adapter then calls itself, so its
endpoint stays native (gannet.observe.per_packet). Every datagram in and out passes through
here (for pcap and qlog packet events), and after each call the
connections it touched are compared with the snapshot taken after the
previous one (metrics, congestion phase, path MTU, state, newly lost byte
ranges). After each output pass a connection's LimitClock takes the reason
it stopped sending (observe/limits.py). An endpoint without an observer
runs exactly the code it ran before: nothing is checked per call.

An encrypted endpoint (SecureEndpoint) seals at that boundary, so there the
pcap still takes the sealed datagrams, while the qlog packet records come
from the endpoint's plaintext side: it calls `inner_sent` with an output
pass before sealing and `inner_received` / `inner_batch_received` with what
it opened before the plain endpoint reads it, and these go to the same
parsers (`_record_*`) as the wire datagrams of a plaintext endpoint.
"""

from __future__ import annotations

import logging
import struct
import time
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from ..core.rangeset import RangeSet
from ..core.states import State
from ..wire.batch import SourceTrain, Train, loaded_numpy
from ..wire.datagram import SHORT, SHORT_FORM, SHORT_SIZE, TRAILER_SIZE, WireError, decode
from ..wire.segment import ACK, FIN, PSH, RST, SYN, unwrap
from .limits import LimitClock, account_pass
from .qlog import RS, QlogWriter, file_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core.connection import Connection
    from ..core.endpoint import Endpoint
    from .pcap import PcapWriter

log = logging.getLogger("gannet.observe")
_CLOSED = State.CLOSED
_FLAG_NAMES = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "A"))


class _FlagLetters(dict):
    """Control bits -> their letters ("SA" for a SYN-ACK), for qlog lines:
    each value made on first use (the 256 made at import were about 2
    million instructions of every command's start, traced or not)."""

    def __missing__(self, flags: int) -> str:
        letters = self[flags] = "".join(ch for bit, ch in _FLAG_NAMES if flags & bit)
        return letters


_FLAGS = _FlagLetters()
_U32 = struct.Struct("!I")
E = TypeVar("E", bound="Endpoint")
ENDED_KEPT = 256


class ConnTrace:
    """What the observer keeps per connection."""

    __slots__ = ("conn", "clock", "qlog", "metrics", "cc_state", "mtu", "state", "reported_lost",
                 "high_sent", "pn_out", "pn_in", "limit", "timeouts", "cpu0", "done")

    def __init__(self, conn: Connection, now: float, qlog: QlogWriter | None, track: bool) -> None:
        self.conn = conn
        self.clock = LimitClock(now) if track else None
        self.qlog = qlog
        self.metrics: tuple = ()
        self.cc_state = ""
        self.mtu = 0
        self.state = conn.state
        self.reported_lost = RangeSet()
        self.high_sent = conn.iss + 1
        self.pn_out = 0
        self.pn_in = 0
        self.limit = ""
        self.timeouts = 0
        self.cpu0 = time.process_time()
        self.done = False


_OBSERVABLE: dict[type, type] = {}


def observable(cls: type[E]) -> type[E]:
    """The endpoint class `cls`, or, for a compiled class (whose instances
    take no attributes beyond the class's), a Python subclass of it whose
    instances take the observer's wrappers (`EndpointObserver` with
    `install`). Only such an instance's calls go through Python, to find
    the wrappers; an endpoint made unobserved stays native. (The compiled
    classes allow it: `mypyc_attr(allow_interpreted_subclasses=True)`.)"""
    if cls.__dictoffset__:  # (a Python class: its instances take them already)
        return cls
    sub = _OBSERVABLE.get(cls)
    if sub is None:
        sub = _OBSERVABLE[cls] = type(f"Observable{cls.__name__}", (cls,),
                                      {"__module__": __name__,
                                       "__doc__": f"{cls.__name__} taking an observer's wrappers."})
    return sub


class EndpointObserver:
    """Observe `ep` (see the module docstring).

    `local_addr`: the socket's address, for pcap records (None: no pcap);
    `qlog_dir`: where to write one qlog file per connection (None: none);
    `pcap`: a PcapWriter; `track_limits`: run the LimitClocks;
    `wall_offset`: added to the core's clock to get wall-clock time;
    `install`: put the observed calls on `ep` as well (see the module
    docstring; TypeError for an endpoint of a compiled class).
    """

    def __init__(self, ep: Endpoint, *, local_addr: object = None, qlog_dir: str | None = None,
                 pcap: PcapWriter | None = None, track_limits: bool = True,
                 wall_offset: float | None = None, install: bool = True) -> None:
        self.ep = ep
        self.local_addr = local_addr
        self.qlog_dir = qlog_dir
        self.pcap = pcap if local_addr is not None else None
        self.track_limits = track_limits
        self.wall_offset = time.time() - time.monotonic() if wall_offset is None else wall_offset
        self.traces: dict[Connection, ConnTrace] = {}
        self.finished: list[dict] = []  # summaries of connections that ended (last 64)
        # Clocks of connections that ended, for info() read after the close
        # (insertion order; the oldest go past ENDED_KEPT).
        self.ended: dict[Connection, LimitClock | None] = {}
        self.closed = False
        # The clocks of the traces without a qlog, for `after_pass`, which
        # needs nothing else of them (see _trace and _finish).
        self._clocks: dict[Connection, LimitClock] = {}
        self.after_pass: Callable[[list[Connection], float], None] = partial(
            account_pass, self._clocks, self._after_output)
        """After an output pass that built the output of the connections
        given (those dirty when it began): each one's limit accounting and
        snapshot (observe/limits.py's `account_pass`). The observed
        `datagrams_to_send` calls it after the endpoint's; an adapter that
        drives an endpoint observed for the limit accounting alone calls it
        itself, with no wrapper on the endpoint (gannet.observe.per_packet)."""
        self._wrap(install)

    # ------------------------------------------------------------ wrapping
    def _wrap(self, install: bool) -> None:
        ep = self.ep
        if install and not hasattr(ep, "__dict__"):
            raise TypeError(f"{type(ep).__name__} is a compiled class: drive its observer's methods "
                            "instead, or make the endpoint of its class's `observable` subclass")
        datagrams_to_send = ep.datagrams_to_send
        receive_datagram, receive_batch, handle_timer = ep.receive_datagram, ep.receive_batch, ep.handle_timer
        self.get_timer = ep.get_timer
        # Per-packet work only for qlog or pcap; limit accounting alone needs
        # just the output passes (once per pass, not per datagram).
        packets = self.qlog_dir is not None or self.pcap is not None
        # An encrypted endpoint: the pcap keeps what is on the wire (sealed),
        # the qlog what the connections send and read, given by the endpoint
        # at its plaintext side (inner_sent, inner_received,
        # inner_batch_received) to the same parsers.
        inner = packets and getattr(ep, "datagram_overhead", 0) > 0
        log_out: Callable[..., object]
        log_train: Callable[..., object]
        log_in: Callable[..., Connection | None]
        log_rows: Callable[..., Connection | None]
        if inner:
            # (`inner`: a SecureEndpoint, which reports its plaintext side to it)
            ep.plaintext_observer = self  # type: ignore[attr-defined]
            log_out = log_train = self._pcap_out
            log_in, log_rows = self._pcap_in, self._pcap_rows
        else:
            log_out, log_train = self._log_out, self._log_train
            log_in, log_rows = self._log_in, self._log_rows
        after_pass = self.after_pass

        def observed_datagrams_to_send(now, trains=False):
            conns = list(ep._dirty)
            out = datagrams_to_send(now, trains)
            if packets:
                for data, addr in out:
                    if type(data) is Train:
                        log_train(data, addr, now)
                    elif type(data) is SourceTrain:
                        log_train(data.train(), addr, now)  # (its bytes, as they leave)
                    else:
                        log_out(data, addr, now)
            after_pass(conns, now)
            return out

        self.datagrams_to_send = observed_datagrams_to_send
        self.receive_datagram, self.receive_batch, self.handle_timer = receive_datagram, receive_batch, handle_timer
        if install:
            # (the observed calls on the instance, over the class's: a Python
            # subclass's only, which the I/O adapter drives; _wrap refused a
            # compiled one)
            ep.datagrams_to_send = observed_datagrams_to_send  # type: ignore[method-assign]
        if not packets:
            return
        after_input = self._after_input

        def observed_receive_datagram(data, addr, now):
            self._conn_in = log_in(data, addr, now)
            receive_datagram(data, addr, now)
            after_input(self._conn_in, now, "reordering_threshold")

        def observed_receive_batch(buf, seg, addr, now, authenticated=False):
            if seg <= 0 or seg >= len(buf):
                self._conn_in = log_in(buf, addr, now)
            else:
                self._conn_in = log_rows(buf, seg, addr, now)
            receive_batch(buf, seg, addr, now, authenticated)
            after_input(self._conn_in, now, "reordering_threshold")

        def observed_handle_timer(now):
            handle_timer(now)
            for conn in list(ep._dirty):  # the connections whose deadline came
                self._snapshot(conn, now, "time_threshold")

        self.receive_datagram = observed_receive_datagram
        self.receive_batch = observed_receive_batch
        self.handle_timer = observed_handle_timer
        if install:
            ep.receive_datagram = observed_receive_datagram  # type: ignore[method-assign]
            ep.receive_batch = observed_receive_batch  # type: ignore[method-assign]
            ep.handle_timer = observed_handle_timer  # type: ignore[method-assign]

    # The endpoint's input and output calls, observed (or the endpoint's own
    # when nothing per packet is recorded).
    datagrams_to_send: Callable[..., list]
    receive_datagram: Callable[..., None]
    receive_batch: Callable[..., None]
    handle_timer: Callable[[float], None]

    _conn_in: Connection | None = None  # the connection the current input call reached

    # ------------------------------------------- the envelope's plaintext side
    def inner_sent(self, out: list, now: float) -> None:
        """An encrypted endpoint's output pass before sealing."""
        for data, addr in out:
            if type(data) is Train:
                self._record_train(data, addr, now)
            else:
                self._record_out(data, addr, now)

    def inner_received(self, data, addr, now: float) -> None:
        """One opened (or clear handshake) datagram an encrypted endpoint
        hands to the plain endpoint."""
        self._conn_in = self._record_in(data, addr, now) or self._conn_in

    def inner_batch_received(self, buf, seg: int, addr, now: float) -> None:
        """An opened GRO batch an encrypted endpoint hands to the plain endpoint."""
        if seg <= 0 or seg >= len(buf):
            conn = self._record_in(buf, addr, now)
        else:
            conn = self._record_rows(memoryview(buf), seg, addr, now)
        self._conn_in = conn or self._conn_in

    # ------------------------------------------------------------- pcap only
    def _pcap_out(self, data, addr, now: float) -> None:
        if self.pcap is None:
            return
        wall = now + self.wall_offset
        if type(data) is Train:
            view = memoryview(data)
            for off in range(0, len(view), data.size):
                self.pcap.write(wall, self.local_addr, addr, view[off : off + data.size])
        else:
            self.pcap.write(wall, self.local_addr, addr, data)

    def _pcap_in(self, data, addr, now: float) -> None:
        if self.pcap is not None:
            self.pcap.write(now + self.wall_offset, addr, self.local_addr, data)
        return None  # (the connection is found on the plaintext side)

    def _pcap_rows(self, buf, seg: int, addr, now: float) -> None:
        if self.pcap is not None:
            wall = now + self.wall_offset
            view = memoryview(buf)
            for off in range(0, len(view), seg):
                self.pcap.write(wall, addr, self.local_addr, view[off : off + seg])
        return None

    # ---------------------------------------------------------- per packet
    def _trace(self, conn: Connection, now: float) -> ConnTrace:
        tr = self.traces.get(conn)
        if tr is None:
            qlog = None
            if self.qlog_dir is not None:
                vantage = "server" if conn.passive else "client"
                wall = now + self.wall_offset
                try:
                    qlog = QlogWriter(self.qlog_dir, name=file_name(wall, conn.local_cid, vantage),
                                      vantage=vantage, title=f"gannet connection {conn.local_cid:08x}",
                                      reference=now, wall_reference=wall,
                                      fields={"ODCID": f"{conn.local_cid:08x}"})
                except OSError as exc:
                    log.warning("cannot write a qlog file in %s: %s", self.qlog_dir, exc)
                    self.qlog_dir = None
            tr = self.traces[conn] = ConnTrace(conn, now, qlog, self.track_limits)
            if qlog is None and tr.clock is not None:
                self._clocks[conn] = tr.clock
            if qlog is not None:
                local = self.local_addr if isinstance(self.local_addr, tuple) else ("", 0)
                remote = conn.remote_addr if isinstance(conn.remote_addr, tuple) else (str(conn.remote_addr), 0)
                qlog.event(now, "connectivity:connection_started", {
                    "ip_version": "ipv6" if ":" in str(remote[0]) else "ipv4",
                    "src_ip": str(local[0]), "dst_ip": str(remote[0]),
                    "protocol": "GANNET", "src_port": local[1], "dst_port": remote[1],
                    "src_cid": f"{conn.local_cid:08x}", "dst_cid": f"{conn.remote_cid:08x}",
                })
        return tr

    def _conn_out(self, data, addr) -> Connection | None:
        if len(data) < 8:
            return None
        dst = _U32.unpack_from(data, 4)[0]
        ep = self.ep
        if dst:
            return ep._syn_index.get((addr, dst))
        return ep._connecting.get(addr)

    def _log_out(self, data, addr, now: float) -> None:
        if self.pcap is not None:
            self.pcap.write(now + self.wall_offset, self.local_addr, addr, data)
        self._record_out(data, addr, now)

    def _record_out(self, data, addr, now: float) -> None:
        """The qlog packet_sent record of one plaintext datagram."""
        conn = self._conn_out(data, addr)
        if conn is None:
            return
        tr = self._trace(conn, now)
        rel = None
        ack_rel: int | None
        sack: tuple[tuple[int, int], ...]
        if len(data) >= SHORT_SIZE + TRAILER_SIZE and data[0] == SHORT_FORM:
            _, flags, wnd, dst, seq, ack, _ = SHORT.unpack_from(data)
            plen = len(data) - SHORT_SIZE - TRAILER_SIZE
            start = unwrap(seq, conn.snd_una)
            rel = start - conn.iss - 1
            ack_rel = unwrap(ack, conn.rcv_nxt) - conn.irs - 1
            sack = ()
            src = None
        else:
            try:
                dst, src, seg = decode(data)
            except WireError:
                return
            flags, wnd, plen = seg.flags, seg.wnd, len(seg.payload)
            start = unwrap(seg.seq, conn.snd_una) if not flags & SYN else conn.iss
            rel = start - conn.iss - 1
            ack_rel = unwrap(seg.ack, conn.rcv_nxt) - conn.irs - 1 if flags & ACK and conn.irs else None
            sack = tuple((unwrap(left, conn.rcv_nxt) - conn.irs - 1, unwrap(right, conn.rcv_nxt) - conn.irs - 1)
                         for left, right in seg.sack) if conn.irs else ()
        end = start + plen
        if plen and end <= tr.high_sent:
            # A retransmission; after a timeout, what it resends was lost
            # (RACK's losses were reported when the lost set took them).
            if conn.stats.timeouts > tr.timeouts and tr.qlog is not None:
                for s, e in tr.reported_lost.gaps(start, end):
                    tr.qlog.event(now, "recovery:packet_lost", {
                        "header": {"packet_type": "1RTT"},
                        "frames": [_stream_frame(s - conn.iss - 1, e - s, False)],
                        "trigger": "pto_expired"})
                    tr.reported_lost.add(s, e)
        elif end > tr.high_sent:
            tr.high_sent = end
        tr.pn_out += 1
        if tr.qlog is not None:
            tr.qlog.raw(_packet_record("transport:packet_sent", now - tr.qlog.reference, tr.pn_out, len(data),
                                       plen, flags, wnd, rel, ack_rel, sack, dst, src))

    def _log_train(self, train: Train, addr, now: float) -> None:
        """A run of full-size short-form datagrams of one connection (a GSO
        train): new data only, consecutive, one header but for the sequence
        number. The records are made from one template."""
        self._pcap_out(train, addr, now)
        self._record_train(train, addr, now)

    def _record_train(self, train: Train, addr, now: float) -> None:
        size = train.size
        n = len(train)
        rows = -(-n // size)
        conn = self._conn_out(train, addr)
        if conn is None:
            return
        tr = self._trace(conn, now)
        _, flags, wnd, dst, seq, ack, _ = SHORT.unpack_from(train)
        plen = size - SHORT_SIZE - TRAILER_SIZE
        start = unwrap(seq, conn.snd_una)
        end = start + n - rows * (SHORT_SIZE + TRAILER_SIZE)
        if end > tr.high_sent:
            tr.high_sent = end
        q = tr.qlog
        pn = tr.pn_out
        tr.pn_out += rows
        if q is None:
            return
        base = start - conn.iss - 1
        ack_rel = unwrap(ack, conn.rcv_nxt) - conn.irs - 1
        head = (f'{RS}{{"time":{(now - q.reference) * 1000.0:.3f},"name":"transport:packet_sent",'
                f'"data":{{"header":{{"packet_type":"1RTT","packet_number":')
        mid = (f'}},"raw":{{"length":{size},"payload_length":{plen}}},"frames":['
               f'{{"frame_type":"ack","acked_ranges":[{f"[0,{ack_rel - 1}]" if ack_rel > 0 else ""}]}},'
               f'{{"frame_type":"stream","stream_id":0,"offset":')
        tail = (f',"length":{plen},"fin":false}}],"gannet":{{"flags":"{_FLAGS[flags]}","window":{wnd},'
                f'"dcid":"{dst:08x}"}}}}}}\n')
        q.raw("".join([f"{head}{pn + k + 1}{mid}{base + k * plen}{tail}" for k in range(rows - 1)]))
        last = (rows - 1) * size
        lflags = train[last + 1]
        q.raw(_packet_record("transport:packet_sent", now - q.reference, pn + rows, n - last,
                             n - last - SHORT_SIZE - TRAILER_SIZE, lflags, wnd, base + (rows - 1) * plen,
                             ack_rel, (), dst, None))

    def _log_rows(self, buf, seg: int, addr, now: float) -> Connection | None:
        """A GRO batch: datagrams of `seg` bytes back to back. Rows of the
        short form for one connection take one template; others go one by one."""
        self._pcap_rows(buf, seg, addr, now)
        return self._record_rows(memoryview(buf), seg, addr, now)

    def _record_rows(self, view: memoryview, seg: int, addr, now: float) -> Connection | None:
        n = len(view)
        if view[0] != SHORT_FORM or n < SHORT_SIZE + TRAILER_SIZE:
            return self._rows_one_by_one(view, seg, addr, now)
        dst0 = _U32.unpack_from(view, 4)[0]
        conn = self.ep._conns.get(dst0)
        if conn is None or conn.state is _CLOSED:
            return None
        tr = self._trace(conn, now)
        q = tr.qlog
        if q is None:
            tr.pn_in += -(-n // seg)
            return conn
        irs1 = conn.irs + 1
        snd_una = conn.snd_una
        iss1 = conn.iss + 1
        head = (f'{RS}{{"time":{(now - q.reference) * 1000.0:.3f},"name":"transport:packet_received",'
                f'"data":{{"header":{{"packet_type":"1RTT","packet_number":')
        full = n // seg
        if full >= 8:
            done = self._uniform_rows(view, seg, full, dst0, conn, tr, q, head, now)
            if done:
                if full * seg < n:  # a shorter last row
                    self._rows_one_by_one_q(view[full * seg:], seg, addr, now)
                return conn
        unpack = SHORT.unpack_from
        parts: list[str] = []
        append = parts.append
        pn = tr.pn_in
        seq0 = base = None
        key = mid = tail = None
        for off in range(0, n, seg):
            size = n - off if n - off < seg else seg
            if size < SHORT_SIZE + TRAILER_SIZE or view[off] != SHORT_FORM:
                continue
            _, flags, wnd, dst, seq, ack, _ = unpack(view, off)
            if dst != dst0:
                continue
            if seq0 is None:
                seq0 = seq
                base = unwrap(seq, conn.rcv_nxt) - irs1
            pn += 1
            if (size, flags, wnd, ack) != key:
                # the parts every row of a run shares, made once per run
                key = (size, flags, wnd, ack)
                plen = size - SHORT_SIZE - TRAILER_SIZE
                ack_rel = unwrap(ack, snd_una) - iss1
                mid = (f'}},"raw":{{"length":{size},"payload_length":{plen}}},"frames":['
                       f'{{"frame_type":"ack","acked_ranges":[{f"[0,{ack_rel - 1}]" if ack_rel > 0 else ""}]}}')
                tail = f'],"gannet":{{"flags":"{_FLAGS[flags]}","window":{wnd},"dcid":"{dst:08x}"}}}}}}\n'
                if plen or flags & FIN:
                    mid += ',{"frame_type":"stream","stream_id":0,"offset":'
                    tail = f',"length":{plen},"fin":{"true" if flags & FIN else "false"}}}' + tail
                else:
                    mid += tail
                    tail = None
            if tail is None:
                append(f"{head}{pn}{mid}")
            else:
                append(f"{head}{pn}{mid}{base + ((seq - seq0) & 0xFFFFFFFF)}{tail}")
        tr.pn_in = pn
        q.raw("".join(parts))
        return conn

    def _uniform_rows(self, view, seg, full, dst0, conn, tr, q, head, now) -> bool:
        """The `full` rows of `seg` bytes are one run (same form, flags,
        window, connection and ACK; checked as columns of 32-bit words): their
        records from one template, sequence numbers read as one vector.
        False (nothing written) if they are not, or while numpy is not
        imported yet (wire/batch.py: an observed program that sends a few
        small messages starts without it)."""
        np = loaded_numpy()
        if np is None:
            return False
        words = np.ndarray((full, 4), ">u4", view, 0, (seg, 4))
        first = words[0]
        if not ((words[:, 0] == first[0]).all() and (words[:, 1] == dst0).all()
                and (words[:, 3] == first[3]).all()):
            return False
        _, flags, wnd, dst, seq0, ack, _ = SHORT.unpack_from(view, 0)
        plen = seg - SHORT_SIZE - TRAILER_SIZE
        base = unwrap(seq0, conn.rcv_nxt) - conn.irs - 1
        ack_rel = unwrap(ack, conn.snd_una) - conn.iss - 1
        offsets = (((words[:, 2].astype(np.int64) - seq0) & 0xFFFFFFFF) + base).tolist()
        mid = (f'}},"raw":{{"length":{seg},"payload_length":{plen}}},"frames":['
               f'{{"frame_type":"ack","acked_ranges":[{f"[0,{ack_rel - 1}]" if ack_rel > 0 else ""}]}},'
               f'{{"frame_type":"stream","stream_id":0,"offset":')
        tail = (f',"length":{plen},"fin":{"true" if flags & FIN else "false"}}}],"gannet":{{"flags":'
                f'"{_FLAGS[flags]}","window":{wnd},"dcid":"{dst:08x}"}}}}}}\n')
        pn = tr.pn_in
        q.raw("".join([f"{head}{pn + k + 1}{mid}{off}{tail}" for k, off in enumerate(offsets)]))
        tr.pn_in = pn + full
        return True

    def _rows_one_by_one_q(self, view, seg: int, addr, now: float) -> None:
        self._record_in(view, addr, now)

    def _rows_one_by_one(self, view, seg: int, addr, now: float) -> Connection | None:
        conn = None
        for off in range(0, len(view), seg):
            conn = self._record_in(view[off : off + seg], addr, now) or conn
        return conn

    def _log_in(self, data, addr, now: float) -> Connection | None:
        self._pcap_in(data, addr, now)
        return self._record_in(data, addr, now)

    def _record_in(self, data, addr, now: float) -> Connection | None:
        """The qlog packet_received record of one plaintext datagram; the
        connection it is for, if any."""
        ep = self.ep
        n = len(data)
        if n >= SHORT_SIZE + TRAILER_SIZE and data[0] == SHORT_FORM:
            _, flags, wnd, dst, seq, ack, _ = SHORT.unpack_from(data)
            conn = ep._conns.get(dst)
            if conn is None or conn.state is _CLOSED:
                return None
            tr = self._trace(conn, now)
            tr.pn_in += 1
            if tr.qlog is not None:
                plen = n - SHORT_SIZE - TRAILER_SIZE
                rel = unwrap(seq, conn.rcv_nxt) - conn.irs - 1
                ack_rel = unwrap(ack, conn.snd_una) - conn.iss - 1
                tr.qlog.raw(_packet_record("transport:packet_received", now - tr.qlog.reference, tr.pn_in, n,
                                           plen, flags, wnd, rel, ack_rel, (), dst, None))
            return conn
        try:
            dst, src, seg = decode(data)
        except WireError:
            return None
        conn = ep._conns.get(dst) if dst else ep._syn_index.get((addr, src or 0))
        if conn is None and dst == 0 and seg.flags & SYN:
            # A SYN for a new connection: it exists once the endpoint has
            # taken the SYN; the packet is logged then (_after_input).
            self._pending_syn = (data if isinstance(data, bytes) else bytes(data), addr, src)
            return None
        if conn is None or conn.state is _CLOSED:
            return None
        self._log_long_in(conn, seg, n, dst, src, now)
        return conn

    _pending_syn: tuple | None = None

    def _log_long_in(self, conn, seg, n, dst, src, now) -> None:
        tr = self._trace(conn, now)
        tr.pn_in += 1
        if tr.qlog is None:
            return
        flags = seg.flags
        irs = conn.irs if conn.irs or not flags & SYN else seg.seq
        rel = (unwrap(seg.seq, conn.rcv_nxt) if conn.rcv_nxt else seg.seq) - irs - 1
        ack_rel = unwrap(seg.ack, conn.snd_una) - conn.iss - 1 if flags & ACK else None
        sack = tuple((unwrap(left, conn.snd_una) - conn.iss - 1, unwrap(right, conn.snd_una) - conn.iss - 1)
                     for left, right in seg.sack)
        tr.qlog.raw(_packet_record("transport:packet_received", now - tr.qlog.reference, tr.pn_in, n,
                                   len(seg.payload), flags, seg.wnd, rel, ack_rel, sack, dst, src))

    # --------------------------------------------------------- after calls
    def _after_input(self, conn: Connection | None, now: float, trigger: str) -> None:
        pending = self._pending_syn
        if pending is not None:
            self._pending_syn = None
            data, addr, src = pending
            new = self.ep._syn_index.get((addr, src))
            if new is not None:
                try:
                    dst, src, seg = decode(data)
                    self._log_long_in(new, seg, len(data), dst, src, now)
                except WireError:
                    pass
        if conn is not None:
            self._snapshot(conn, now, trigger)  # (the others: after their output pass)

    def _after_output(self, conn: Connection, now: float) -> None:
        tr = self.traces.get(conn)
        if tr is None or tr.qlog is not None:
            tr = self._snapshot(conn, now, "time_threshold")
            if tr is None:
                return
        elif conn.state is _CLOSED:
            # (what _snapshot does for a trace without qlog: the end)
            if not tr.done:
                self._finish(tr, now)
            return
        if tr.qlog is not None:
            tr.timeouts = conn.stats.timeouts
        clock = tr.clock
        if clock is not None:
            reason = clock.update(conn, now)
            if reason is not tr.limit:
                tr.limit = reason
                if tr.qlog is not None:
                    tr.qlog.event(now, "gannet:limits_updated", {
                        "limit": reason, "cwnd": conn.snd.cwnd(), "bytes_in_flight": conn.snd.pipe(),
                        "peer_window": conn.snd_wnd,
                        "pacing_rate": round(conn.cc.pacing_rate * 8) if conn.cc.pacing_rate else None})

    def _snapshot(self, conn: Connection, now: float, trigger: str) -> ConnTrace | None:
        tr = self.traces.get(conn)
        if tr is None:
            if conn.state is _CLOSED:
                return None
            tr = self._trace(conn, now)
        if tr.done:
            return None
        q = tr.qlog
        if q is not None:
            rtt = conn.rtt
            cc = conn.cc
            metrics = (conn.snd.cwnd(), conn.snd.pipe(), rtt.srtt, rtt.min_rtt, rtt.latest_rtt, rtt.rttvar,
                       cc.ssthresh, cc.pacing_rate)
            old = tr.metrics
            if metrics != old:
                tr.metrics = metrics
                data = {}
                for i, key in enumerate(_METRICS):
                    value = metrics[i]
                    if value is None or (old and old[i] == value):
                        continue
                    if key in _MS:
                        value = round(value * 1000.0, 3)
                    elif key == "ssthresh" and value >= 1 << 60:
                        continue
                    elif key == "pacing_rate":
                        value = round(value * 8)  # bits per second, as qlog has it
                    data[key] = value
                if data:
                    q.event(now, "recovery:metrics_updated", data)
            from .info import cc_state  # (qlog only: not loaded on a client's way to its SYN)

            phase = cc_state(conn)
            if phase != tr.cc_state:
                q.event(now, "recovery:congestion_state_updated",
                        {"old": tr.cc_state, "new": phase} if tr.cc_state else {"new": phase})
                tr.cc_state = phase
            if conn.max_datagram_size != tr.mtu:
                q.event(now, "connectivity:mtu_updated",
                        {"old": tr.mtu, "new": conn.max_datagram_size, "done": not conn.snd.pmtu_ladder}
                        if tr.mtu else {"new": conn.max_datagram_size})
                tr.mtu = conn.max_datagram_size
            if conn.state is not tr.state:
                q.event(now, "connectivity:connection_state_updated",
                        {"old": tr.state.name.lower(), "new": conn.state.name.lower()})
            lost = conn.lost
            if lost._starts:
                reported = tr.reported_lost
                timeout = conn.stats.timeouts > tr.timeouts
                for s, e in lost:
                    for gs, ge in reported.gaps(s, e):
                        q.event(now, "recovery:packet_lost", {
                            "header": {"packet_type": "1RTT"},
                            "frames": [_stream_frame(gs - conn.iss - 1, ge - gs, False)],
                            "trigger": "pto_expired" if timeout else trigger})
                    reported.add(s, e)
                reported.discard_below(conn.snd_una)
        tr.state = conn.state
        if conn.state is _CLOSED:
            self._finish(tr, now)
        return tr

    def _finish(self, tr: ConnTrace, now: float) -> None:
        tr.done = True
        conn = tr.conn
        from .info import connection_info

        summary = connection_info(conn, now, tr.clock,
                                  getattr(self.ep, "datagram_overhead", 0)).as_dict()
        summary["cpu_time"] = round(time.process_time() - tr.cpu0, 6)
        summary["error"] = None if conn.error is None else repr(conn.error)
        self.finished.append(summary)
        del self.finished[:-64]
        if tr.qlog is not None:
            tr.qlog.event(now, "gannet:connection_summary", summary)
            tr.qlog.close()
            log.debug("qlog written: %s", tr.qlog.path)
        self.traces.pop(conn, None)
        self._clocks.pop(conn, None)
        self.ended[conn] = tr.clock
        if len(self.ended) > ENDED_KEPT:
            del self.ended[next(iter(self.ended))]

    # ------------------------------------------------------------------ API
    def clock_of(self, conn: Connection) -> LimitClock | None:
        tr = self.traces.get(conn)
        return tr.clock if tr is not None else self.ended.get(conn)

    def qlog_path(self, conn: Connection) -> str | None:
        tr = self.traces.get(conn)
        return tr.qlog.path if tr is not None and tr.qlog is not None else None

    def close(self, now: float) -> None:
        """Finish every trace (the endpoint is closing)."""
        if self.closed:
            return
        self.closed = True
        for tr in list(self.traces.values()):
            if not tr.done:
                self._finish(tr, now)
        if self.pcap is not None:
            self.pcap.flush()


_METRICS = ("congestion_window", "bytes_in_flight", "smoothed_rtt", "min_rtt", "latest_rtt",
            "rtt_variance", "ssthresh", "pacing_rate")
_MS = frozenset({"smoothed_rtt", "min_rtt", "latest_rtt", "rtt_variance"})


def _stream_frame(offset: int, length: int, fin: bool) -> dict:
    return {"frame_type": "stream", "stream_id": 0, "offset": offset, "length": length, "fin": fin}


def _packet_record(name: str, t: float, pn: int, size: int, plen: int, flags: int, wnd: int,
                   rel: int | None, ack_rel: int | None, sack: tuple, dst: int, src: int | None) -> str:
    """One packet event, formatted by hand (json.dumps per packet would be
    most of the cost of tracing a bulk transfer)."""
    frames = []
    if flags & ACK and ack_rel is not None:
        ranges = [f"[0,{ack_rel - 1}]"] if ack_rel > 0 else []
        ranges.extend(f"[{left},{right - 1}]" for left, right in sack)
        frames.append('{"frame_type":"ack","acked_ranges":[' + ",".join(ranges) + "]}")
    if (plen or flags & FIN) and rel is not None:
        frames.append(f'{{"frame_type":"stream","stream_id":0,"offset":{rel},"length":{plen},'
                      f'"fin":{"true" if flags & FIN else "false"}}}')
    if flags & RST:
        frames.append('{"frame_type":"connection_close","error_space":"transport","error_code":"reset"}')
    ptype = "initial" if flags & SYN else "1RTT"
    src_s = f',"scid":"{src:08x}"' if src is not None else ""
    return (f'{RS}{{"time":{t * 1000.0:.3f},"name":"{name}","data":{{"header":{{"packet_type":"{ptype}",'
            f'"packet_number":{pn}}},"raw":{{"length":{size},"payload_length":{plen}}},'
            f'"frames":[{",".join(frames)}],"gannet":{{"flags":"{_FLAGS[flags & 0xFF]}","window":{wnd},'
            f'"dcid":"{dst:08x}"{src_s}}}}}}}\n')
