"""Protocol rules tested directly, each on its own: Nagle, the persist
timer giving up, connect_timeout, a zero window reopening on the header
prediction path, and the fast paths' refusals that only the general path
may handle.

(The fast paths' equivalence with the general path is tested in
test_header_prediction.py, test_send_small.py and test_batch_path.py; a rule
wrong in both paths passes those, so these state the rules themselves.)
"""

from __future__ import annotations

import copy

import pytest

from gannet.config import Config
from gannet.core.connection import MASK32
from gannet.core.states import State
from gannet.wire.segment import ACK, Segment

from corepair import Side, deliver, established_pair, exchange
from test_header_prediction import snapshot


# ----------------------------------------------------------------- Nagle
def test_nagle_holds_a_small_segment_while_one_is_unacknowledged():
    """RFC 9293 3.7.4 (RFC 896): with nodelay off, a second small write
    waits until the first is acknowledged, then leaves as one segment with
    whatever was written meanwhile."""
    a, b = established_pair(Config(nodelay=False, delayed_ack=False))
    a.conn.send(b"one")
    first = a.out(1.0)
    assert [s.payload for s in first] == [b"one"]
    a.conn.send(b"two")
    a.conn.send(b"three")
    assert a.out(1.001) == []  # held: "one" is not yet acknowledged
    deliver(b, first, 1.01)
    ack = b.out(1.01)
    deliver(a, ack, 1.02)
    assert [bytes(s.payload) for s in a.out(1.02)] == [b"twothree"]


def test_nagle_does_not_hold_a_full_segment_or_with_nodelay():
    a, b = established_pair(Config(nodelay=False))
    a.conn.send(b"x")
    assert len(a.out(1.0)) == 1
    a.conn.send(bytes(a.conn.mss))  # a full segment is never held
    assert [len(s.payload) for s in a.out(1.001)] == [a.conn.mss]

    a, b = established_pair(Config(nodelay=True))
    a.conn.send(b"x")
    a.out(1.0)
    a.conn.send(b"y")
    assert [bytes(s.payload) for s in a.out(1.001)] == [b"y"]


# ---------------------------------------------------------- persist timer
def test_the_persist_timer_gives_up_on_a_silent_peer_with_a_closed_window():
    """Window probes (RFC 9293 3.8.6.1) back off; a peer that keeps its
    window closed and answers none of them is given up after max_retries +
    keepalive_count probes, with a TimeoutError saying why."""
    cfg = Config(window_size=8 * 1400, mss=1400, autotune=False, max_retries=3, keepalive_count=2)
    a, b = established_pair(cfg)
    a.conn.send(bytes(40_000))
    now = exchange(a, b, 1.0)  # b never reads: its window closes
    assert a.conn.snd_wnd == 0 and a.conn.snd_nxt < a.conn.snd_una + 40_000
    probe_times = []
    for _ in range(50):
        deadline = a.conn.get_timer()
        assert deadline is not None
        counted = a.conn.stats.window_probes
        a.conn.handle_timer(deadline)
        out = a.out(deadline)  # dropped: the peer is silent
        if a.conn.state is State.CLOSED:
            break
        if a.conn.stats.window_probes > counted:
            assert len(out) == 1 and not out[0].payload and out[0].seq == (a.conn.snd_una - 1) & MASK32
            probe_times.append(deadline)
    assert a.conn.state is State.CLOSED
    assert len(probe_times) == cfg.max_retries + cfg.keepalive_count == a.conn.stats.window_probes
    gaps = [later - earlier for earlier, later in zip(probe_times, probe_times[1:])]
    assert all(later > earlier for earlier, later in zip(gaps, gaps[1:])), gaps  # backing off
    assert isinstance(a.conn.error, TimeoutError) and "window stayed closed" in str(a.conn.error)
    assert [type(e).__name__ for e in a.events][-1] == "ConnectionTerminated"


# --------------------------------------------------------- connect_timeout
def test_connect_timeout_ends_a_connection_attempt_at_its_deadline():
    """SYNs are resent with backoff until connect_timeout, which ends the
    attempt even though max_retries would allow more."""
    cfg = Config(timeout=0.5, connect_timeout=2.0, max_retries=15)
    a = Side("b", 1, cfg, 1)
    a.conn.connect(0.0)
    syns = [s for s in a.out(0.0)]
    fired = []
    while a.conn.state is not State.CLOSED:
        deadline = a.conn.get_timer()
        fired.append(deadline)
        a.conn.handle_timer(deadline)
        syns += a.out(deadline)
    assert fired[-1] == pytest.approx(2.0)
    assert fired[:-1] == pytest.approx([0.5, 1.5])  # RTO 0.5 s, then 1 s (backoff)
    assert len(syns) == 3 and all(s.seq == syns[0].seq for s in syns)
    assert isinstance(a.conn.error, TimeoutError) and "timed out" in str(a.conn.error)


def test_connect_timeout_is_disarmed_once_established():
    a, b = established_pair(Config(connect_timeout=1.0))
    assert a.conn.deadline("connect") is None
    assert a.conn.state is State.ESTABLISHED


# ------------------------------------------- header prediction, zero window
def _forged_ack(side: Side, peer: Side, ack: int, wnd: int) -> tuple[int, int, int, int, bytes]:
    """The fields of an ACK from `peer` acknowledging up to `ack` and
    offering `wnd` (unscaled), as header prediction receives them."""
    tsval = peer.conn.snd.timestamps()[0]
    return (side.conn.rcv_nxt & MASK32, ack & MASK32, wnd >> side.conn.snd_wscale, tsval, b"")


@pytest.mark.pure
def test_a_zero_window_reopening_on_the_fast_path():
    """The peer shrinks its window to zero while data is in flight (RFC 9293
    3.8.6 lets a receiver do so, reluctantly), then a new ACK reopens it.
    Header prediction takes both ACKs; it must reach exactly the state the
    general path reaches, and the waiting data must flow again."""
    a, b = established_pair(Config(delayed_ack=False))
    mss = a.conn.mss
    a.conn.send(bytes(40 * mss))
    sent = a.out(1.0)
    assert len(sent) >= 3 and a.conn.snd_nxt < a.conn.snd.sndbuf.end  # more waits for the window
    una = a.conn.snd_una
    shrink = _forged_ack(a, b, una + mss, 0)
    reopen = _forged_ack(a, b, una + 2 * mss, 64 * mss)
    general = copy.deepcopy(a.conn)

    assert a.conn.on_predicted(*shrink, now=1.02)
    assert a.conn.snd_wnd == 0
    assert a.conn.on_predicted(*reopen, now=1.03)
    assert a.conn.snd_wnd == reopen[2] << a.conn.snd_wscale > 0

    for fields, now in ((shrink, 1.02), (reopen, 1.03)):
        seq32, ack32, wnd, tsval, payload = fields
        seg = Segment(seq32, ack32, ACK, wnd, payload)
        seg.tsval, seg.tsecr = tsval, 0
        general.on_segment(seg, now)
    assert snapshot(a.conn) == snapshot(general)
    assert a.conn.stats.segments_received == general.stats.segments_received
    assert sum(len(s.payload) for s in a.conn.segments_to_send(1.03)) > 0  # data flows again


def test_header_prediction_declines_what_it_cannot_judge():
    """Each refusal leaves the connection untouched (the general path then
    runs): an old timestamp, no new ACK, an ACK beyond SND.NXT."""
    a, b = established_pair(Config(delayed_ack=False))
    a.conn.send(bytes(3 * a.conn.mss))
    a.out(1.0)
    una, nxt = a.conn.snd_una, a.conn.snd_nxt
    before = snapshot(a.conn)
    seq32, ack32, wnd, tsval, payload = _forged_ack(a, b, una + 1, 1 << 16)
    old_ts = (a.conn.rcv.ts_recent - 10) & MASK32
    assert not a.conn.on_predicted(seq32, ack32, wnd, old_ts, payload, 1.01)
    assert not a.conn.on_predicted(seq32, una & MASK32, wnd, tsval, payload, 1.01)  # nothing new
    assert not a.conn.on_predicted(seq32, (nxt + 1) & MASK32, wnd, tsval, payload, 1.01)
    assert not a.conn.on_predicted((seq32 + 1) & MASK32, ack32, wnd, tsval, payload, 1.01)
    assert snapshot(a.conn) == before


def test_a_data_run_beyond_the_offered_window_takes_the_general_path():
    """on_data_run declines bytes past the window it advertised (RFC 9293
    3.10.7.4 trims them, one segment at a time)."""
    a, b = established_pair(Config(delayed_ack=False))
    conn = b.conn
    before, start = snapshot(conn), conn.rcv_nxt
    room = conn.rcv.rcv_adv - conn.rcv_nxt
    tsval = a.conn.snd.timestamps()[0]
    args = (conn.rcv_nxt & MASK32, conn.snd_una & MASK32, conn.snd_wnd >> conn.snd_wscale, tsval, tsval)
    assert not conn.on_data_run(*args, bytes(room + 1), 2, 1, 1.0)
    assert snapshot(conn) == before
    assert conn.on_data_run(*args, bytes(room), 1, room, 1.0)
    assert conn.rcv_nxt == start + room


def test_a_pmtu_probe_is_always_larger_than_the_mss():
    """_send_small relies on it (a message of at most an MSS is never the
    probe): every size left on the ladder exceeds the current datagram size,
    before the search, while it climbs, and after it ends."""
    a, b = established_pair(Config(pmtud=True), pmtud=True)
    now, seen = 1.0, set()
    for _ in range(60):
        a.conn.send(bytes(20_000))
        for conn in (a.conn, b.conn):
            probe = conn.snd.pmtu_probe_payload()
            assert probe == 0 or probe > conn.mss, (probe, conn.mss)
            seen.add(conn.max_datagram_size)
        now = exchange(a, b, now, rounds=5)
        b.conn.recv(1 << 22)
    assert len(seen) > 1  # the search did climb


def test_a_short_form_datagram_to_a_connection_still_connecting_is_dropped():
    """The short form names no source connection: a connection that has not
    yet heard its peer (SYN-SENT) cannot tell it from a forgery, so it is
    counted as spoofed and changes nothing."""
    import random

    from gannet.core.endpoint import Endpoint
    from gannet.wire.datagram import encode_short
    from gannet.wire.segment import PSH

    ep = Endpoint(Config(), random.Random(3))
    conn = ep.connect("B", 0.0)
    ep.datagrams_to_send(0.0)
    before = snapshot(conn)
    forged = encode_short(conn.local_cid, ACK | PSH, 1, (conn.snd_nxt) & MASK32, 100, 7, b"evil")
    ep.receive_datagram(forged, "B", 0.01)
    assert ep.stats.spoofed_dropped == 1
    assert conn.state is State.SYN_SENT and snapshot(conn) == before
