"""Per-connection state made on first use (memory and cycle-collector work at scale).

A connection's range sets (SACK scoreboard, lost, resent, out-of-order,
RACK's resent bytes) start as the shared read-only `rangeset.EMPTY`, and
RACK's transmission lists, the retransmission marks and the queue of
control segments as None; BBR's filters are tuples. A connection
that never sees a loss, a SACK or reordering never builds any of them;
one that does builds its own, behaves as before, and leaves EMPTY empty.
"""

from __future__ import annotations

import gc
from collections import deque
from enum import Enum

import pytest

from gannet.config import Config
from gannet.core.cc import bbr as bbr_module
from gannet.core.cc.bbr import BW_WINDOW_ROUNDS, Bbr
from gannet.core.rangeset import EMPTY, RangeSet
from gannet.core.recovery import IDLE_RACK, RackTlp

from corepair import deliver, established_pair, exchange

SETS = ("loss.sacked", "loss.lost", "loss.retransmitted", "snd.ever_retransmitted", "rcv.ooo_ranges")


def attr(obj, dotted: str):
    for name in dotted.split("."):
        obj = getattr(obj, name)
    return obj


def assert_nothing_built(conn) -> None:
    for name in SETS:
        assert attr(conn, name) is EMPTY, name
    rack = conn.loss.rack
    if rack is not IDLE_RACK:  # made when the first data left
        assert type(rack) is RackTlp
        assert rack._resent is EMPTY
        assert rack._starts is None and rack._recs is None and rack._retx is None and rack._blocks is None
    assert conn.loss.retx_marks is None
    assert conn._out is None


def owned_tracked_objects(conn) -> list:
    """GC-tracked objects reachable from `conn` that belong to it alone
    (not its config, rng, event queue, the endpoint's dirty set or the shared EMPTY)."""
    shared = {id(conn.config), id(conn.rng), id(conn._events), id(conn._dirty), id(EMPTY),
              id(conn.remote_addr)}
    seen, stack, out = set(), [conn], []
    while stack:
        obj = stack.pop()
        if id(obj) in seen or id(obj) in shared or isinstance(obj, (type, Enum)):
            continue
        seen.add(id(obj))
        if gc.is_tracked(obj):
            out.append(obj)
        stack.extend(gc.get_referents(obj))
    return out


def settle(a, b, now: float, until: float = 30.0) -> float:
    """Exchange segments and fire timers until neither side has anything
    unacknowledged (delayed ACKs, probes and retransmissions included)."""
    while now < until:
        now = exchange(a, b, now)
        if all(s.conn.snd_una == s.conn.snd_nxt for s in (a, b)):
            return now
        now = min(t for t in (a.conn.get_timer(), b.conn.get_timer()) if t is not None)
        for side in (a, b):
            timer = side.conn.get_timer()
            if timer is not None and timer <= now:
                side.conn.handle_timer(now)
    raise AssertionError("the pair did not settle")


def test_empty_is_read_only_and_stays_empty():
    assert not EMPTY and len(EMPTY) == 0 and EMPTY.total == 0
    assert EMPTY.add(5, 5) == 0  # nothing to add
    assert EMPTY.subtract(0, 10) == 0 and EMPTY.discard_below(10) == 0
    EMPTY.clear()
    assert EMPTY.gaps(0, 4) == [(0, 4)] and EMPTY.overlap(0, 4) == [] and 3 not in EMPTY
    with pytest.raises(TypeError):
        EMPTY.add(0, 1)
    assert not EMPTY and EMPTY.ranges() == []


def test_a_connection_that_never_sends_data_builds_no_loss_state():
    a, b = established_pair()
    now = exchange(a, b, 1.0)
    a.conn.handle_timer(now + 20)  # keep-alive or nothing: no data either way
    exchange(a, b, now + 20)
    for side in (a, b):
        assert_nothing_built(side.conn)
        assert side.conn.loss.rack is IDLE_RACK  # no RACK-TLP without data sent
        assert side.conn.cc._bw_samples == ()
    # ... nor after a half-close and a close: FINs are not data.
    a.conn.close(now + 21)
    b.conn.close(now + 21)
    settle(a, b, now + 21)
    assert a.conn.loss.rack is IDLE_RACK and b.conn.loss.rack is IDLE_RACK


def test_a_connection_starts_rack_with_its_first_data_as_before():
    a, b = established_pair()
    assert a.conn.loss.rack is IDLE_RACK
    a.conn.send(b"x" * 10)
    (seg,) = a.out(1.0)
    rack = a.conn.loss.rack
    assert type(rack) is RackTlp and rack.active  # SACK was negotiated
    assert rack._una == rack.fack == a.conn.snd_una and rack._high == a.conn.snd_nxt
    assert rack.pto_deadline is not None and a.conn.get_timer() <= rack.pto_deadline
    assert b.conn.loss.rack is IDLE_RACK  # the receiver has sent nothing yet


def test_a_lost_syn_times_out_as_before_without_data():
    from corepair import Side

    from gannet.wire.segment import SYN
    c = Side("x", 9, Config(), 9)
    c.conn.connect(0.0)
    c.out(0.0)  # the SYN is lost
    t = c.conn.get_timer()
    c.conn.handle_timer(t)
    (syn,) = c.out(t)
    assert syn.flags & SYN and c.conn.stats.timeouts == 1  # the SYN again, as before
    assert c.conn.loss.rack is IDLE_RACK  # a handshake timeout is not RACK's business


def test_a_loss_free_exchange_builds_no_loss_state_and_rack_forgets_its_records():
    a, b = established_pair()
    a.conn.send(b"hello")
    now = settle(a, b, 1.0)
    assert b.conn.recv(100) == b"hello"
    b.conn.send(b"hello")
    now = settle(a, b, now)
    assert a.conn.recv(100) == b"hello"
    for side in (a, b):
        conn = side.conn
        assert conn.snd_una == conn.snd_nxt
        assert_nothing_built(conn)  # records done: RACK's lists are None again
        assert conn.loss.rack.rack_serial >= 0  # ... but RACK did run on the ACKs
    assert a.conn.cc._bw_samples and type(a.conn.cc._bw_samples) is tuple
    # What an idle connection keeps for the cycle collector: itself, its
    # stats, sender and its send buffer, RTT estimator, controller (and its
    # round counter), receiver, loss recovery and RACK, its timer table, and
    # the DataReceived its receiver made at its first delivery and queues
    # again (receiver.py). Not one empty
    # range set. (Two collections: the
    # collector stops tracking a tuple of numbers, then the tuple holding it.)
    gc.collect()
    gc.collect()
    kinds = sorted(type(o).__name__ for o in owned_tracked_objects(a.conn))
    assert kinds == sorted(["Connection", "ConnectionStats", "Sender", "SendBuffer", "RttEstimator", "Bbr",
                            "RoundCounter", "Receiver", "LossRecovery", "RackTlp", "list",  # (the list: its timer table)
                            "DataReceived"])


def test_a_loss_builds_the_sets_and_recovery_works_as_before():
    a, b = established_pair(Config(delayed_ack=False))
    mss = a.conn.mss
    payload = bytes(range(256)) * (6 * mss // 256 + 1)
    a.conn.send(payload)
    segs = a.out(1.0)
    assert len(segs) >= 4
    deliver(b, segs[:1] + segs[2:], 1.005)  # the second segment is lost
    assert b.conn.rcv.ooo_ranges is not EMPTY and type(b.conn.rcv.ooo_ranges) is RangeSet
    deliver(a, b.out(1.005), 1.010)  # SACKs above the hole
    assert type(a.conn.sacked) is RangeSet and a.conn.sacked
    now = settle(a, b, 1.010)
    assert b.conn.recv(1 << 20) == payload
    assert a.conn.stats.retransmits >= 1
    assert type(a.conn.snd.ever_retransmitted) is RangeSet
    assert type(a.conn.loss.rack._resent) is RangeSet
    assert a.conn.snd_una == a.conn.snd_nxt
    assert not EMPTY  # the shared instance never took a range
    # Another connection still starts with nothing built.
    c, d = established_pair()
    assert_nothing_built(c.conn)
    assert now > 1.0


def test_a_timeout_marks_lost_into_an_own_set():
    a, b = established_pair()
    data = bytes(range(256)) * (3 * a.conn.mss // 256)
    a.conn.send(data)
    a.out(1.0)  # the flight is lost, and so is every probe until the RTO
    now = 1.0
    while not a.conn.stats.timeouts:
        now = a.conn.get_timer()
        a.conn.handle_timer(now)
        if not a.conn.stats.timeouts:
            a.out(now)  # a tail-loss probe, dropped
    assert type(a.conn.lost) is RangeSet and a.conn.lost
    deliver(b, a.out(now), now + 0.005)
    settle(a, b, now + 0.005)
    assert b.conn.recv(1 << 20) == data
    assert not a.conn.lost and not EMPTY


def test_pmtud_ladders_are_shared_tuples():
    a, b = established_pair(pmtud=True)
    c, d = established_pair(pmtud=True)
    assert a.conn.snd.pmtu_ladder and type(a.conn.snd.pmtu_ladder) is tuple
    assert a.conn.snd.pmtu_ladder is c.conn.snd.pmtu_ladder
    assert list(a.conn.snd.pmtu_ladder) == sorted(a.conn.snd.pmtu_ladder)


def test_bbr_bandwidth_filter_is_the_windowed_maximum():
    """The tuple filter keeps what the deque did: per round the highest rate,
    over the last BW_WINDOW_ROUNDS rounds."""
    cc = Bbr(1200, 10)
    ref: deque = deque()
    rates = [5.0, 7.0, 3.0, 9.0, 2.0, 2.5, 1.0, 1.0, 8.0, 0.5, 0.4, 0.3, 0.2, 6.0, 0.1, 0.1, 0.1]
    for i, rate in enumerate(rates * 3):
        rnd = i // 2  # two samples per round
        cc.rounds.round = rnd
        cc._update_bw(rate)
        if ref and ref[-1][0] == rnd:
            ref[-1] = (rnd, max(ref[-1][1], rate))
        else:
            ref.append((rnd, rate))
        while ref[0][0] <= rnd - BW_WINDOW_ROUNDS:
            ref.popleft()
        assert cc._bw_samples == tuple(ref)
        assert cc.btl_bw == max(r for _, r in ref)


def test_bbr_ack_aggregation_keeps_two_window_maxima():
    cc = Bbr(1200, 10)
    cc.btl_bw = 1e6  # bytes/s
    cc.cwnd = 10**9
    cc.filled_pipe = True
    assert cc._extra_acked == (0, 0)
    cc._update_ack_aggregation(1.0, 5000)  # a new epoch: all of it is excess
    assert cc._extra_acked == (5000, 0) and cc._extra_idx == 0
    cc._update_ack_aggregation(1.001, 20000)  # 1 ms explains 1000 bytes of 25000
    assert cc._extra_acked == (24000, 0)
    assert cc.aggregation_cwnd() == min(24000, int(1e6 * bbr_module.ACK_AGG_MAX_TIME))
    cc.rounds.round = bbr_module.ACK_AGG_WINDOW_ROUNDS  # the other window starts afresh
    cc._update_ack_aggregation(2.0, 3000)
    assert cc._extra_acked == (24000, 3000) and cc._extra_idx == 1
    cc.rounds.round = 2 * bbr_module.ACK_AGG_WINDOW_ROUNDS  # the first one is reset
    cc._update_ack_aggregation(3.0, 1000)
    assert cc._extra_acked == (1000, 3000) and cc._extra_idx == 0
    assert cc.aggregation_cwnd() == 3000


@pytest.mark.pure
def test_the_nothing_to_send_shortcut_does_what_the_full_path_does():
    """Sender.output returns early when nothing is unsent, lost or owed a FIN;
    its bookkeeping (pacing tokens, app-limited mark, timers) must be what
    the full path leaves, on a paced BBR connection at every step of an
    exchange with loss."""
    import copy

    a, b = established_pair(Config(delayed_ack=False, congestion_control="bbr"))
    a.conn.send(bytes(40 * a.conn.mss))
    now, checked = 1.0, 0
    fields = ("_pacing_tokens", "_pacing_time", "_pacing_due", "_app_limited_until",
              "_deadlines", "snd_nxt", "fin_sent")
    for step in range(200):
        conn = a.conn
        idle = (conn.snd_nxt >= conn.snd.sndbuf.end and not conn.lost
                and (conn.snd.fin_sent or not conn.snd.fin_queued))
        if idle:
            twin = copy.deepcopy(conn)
            out_fast, out_full = [], []
            conn.snd.output(now, out_fast)
            twin.snd.output_full(now, out_full)
            assert out_fast == out_full == []
            assert [getattr(conn.snd, f) for f in fields] == [getattr(twin.snd, f) for f in fields]
            checked += 1
        segs = a.out(now)
        if step % 7 == 3:
            segs = segs[1:]  # now and then a loss
        deliver(b, segs, now + 0.005)
        b.conn.recv(1 << 20)
        deliver(a, b.out(now + 0.005), now + 0.01)
        now += 0.01
        timer = a.conn.get_timer()
        if timer is not None and timer <= now:
            a.conn.handle_timer(now)
        if step == 120:
            a.conn.close(now)
    assert checked > 50
    assert a.conn.cc.pacing_rate  # the shortcut ran paced
