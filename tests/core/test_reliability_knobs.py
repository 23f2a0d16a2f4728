"""The configurable parts of reliability, each at explicit times.

RFC 6298 (initial RTO, Karn's rule, min/max RTO with backoff), the fast
retransmit threshold N, NewReno's partial ACKs (RFC 6582), delayed-ACK
bounds (RFC 1122) and silly window avoidance on both sides (RFC 9293 3.8.6.2).
"""

import pytest

from gannet.config import Config
from gannet.core.cc.newreno import NewReno
from gannet.core.states import State
from gannet.wire.segment import ACK, Segment

from corepair import Side, deliver, established_pair, exchange

M32 = 2**32


# -------------------------------------------------------------- RFC 6298
def test_initial_rto_is_the_configured_timeout():
    a = Side("b", 1, Config(timeout=0.3, max_retries=3), 1)
    a.conn.connect(0.0)
    times, now = [], 0.0
    while a.conn.state != State.CLOSED:
        times += [now for _ in a.out(now)]
        now = a.conn.get_timer()
        a.conn.handle_timer(now)
    assert times == pytest.approx([0.0, 0.3, 0.9, 2.1])  # 0.3 s, doubled each time
    assert isinstance(a.conn.error, TimeoutError)


def test_karns_rule_takes_no_sample_from_a_retransmitted_segment():
    a, b = established_pair(Config(tlp=False, delayed_ack=False))
    srtt, samples = a.conn.srtt, a.conn.rtt.samples
    a.conn.send(b"k" * 100)
    (seg,) = a.out(1.0)
    deadline = a.conn.get_timer()
    a.conn.handle_timer(deadline)
    (again,) = a.out(deadline)
    assert again.seq == seg.seq
    # The original arrives very late; its ACK comes back just after the
    # resend. Timing it against either send would be a guess: no sample.
    deliver(b, [seg], deadline + 0.001)
    deliver(a, b.out(deadline + 0.05), deadline + 0.002)
    assert a.conn.snd_una == a.conn.snd_nxt
    assert a.conn.rtt.samples == samples and a.conn.srtt == srtt
    # A segment sent once is timed again.
    a.conn.send(b"k" * 100)
    deliver(b, a.out(5.0), 5.02)
    deliver(a, b.out(5.1), 5.04)
    assert a.conn.rtt.samples == samples + 1 and a.conn.rtt.latest_rtt == pytest.approx(0.04)


def test_backoff_doubles_up_to_max_rto_and_min_rto_is_the_variance_floor():
    a, b = established_pair(Config(min_rto=0.3, max_rto=1.0, max_retries=10, tlp=False))
    assert a.conn.srtt == pytest.approx(0.01)
    assert a.conn.rtt.current_rto() == pytest.approx(0.31)  # 10 ms RTT + min_rto (the variance term's floor)
    a.conn.send(b"lost")
    a.out(1.0)
    gaps, last = [], 1.0
    for _ in range(5):
        deadline = a.conn.get_timer()
        gaps.append(deadline - last)
        a.conn.handle_timer(deadline)
        a.out(deadline)
        last = deadline
    assert gaps == pytest.approx([0.31, 0.62, 1.0, 1.0, 1.0])


def test_an_ack_of_new_data_ends_the_backoff():
    a, b = established_pair(Config(min_rto=0.2, tlp=False, delayed_ack=False))
    a.conn.send(b"x" * 50)
    (seg,) = a.out(1.0)
    for _ in range(2):
        t = a.conn.get_timer()
        a.conn.handle_timer(t)
        a.out(t)
    assert a.conn.rtt.current_rto() == pytest.approx(4 * 0.21)
    deliver(b, [seg], t + 0.01)
    deliver(a, b.out(t + 0.1), t + 0.02)
    assert a.conn.rtt.current_rto() == pytest.approx(0.21)


# ----------------------------------------------------------- threshold N
def _dupacks_before_fast_retransmit(threshold: int) -> int:
    """Send 8 segments, lose the first, feed duplicate ACKs one at a time;
    return how many it took before the lost segment went out again."""
    cfg = Config(sack=False, delayed_ack=False, fast_retransmit_threshold=threshold, tlp=False,
                 congestion_control="newreno")  # no pacing: the 8 segments leave at once
    a, b = established_pair(cfg)
    # One exchange first, so that the peer's window is settled: an ACK that
    # changes the window is not a duplicate (RFC 5681 2 (d)).
    a.conn.send(b"warm-up")
    exchange(a, b, 0.5)
    a.conn.send(bytes(8 * a.conn.mss))
    segs = a.out(1.0)
    assert len(segs) == 8
    for i, seg in enumerate(segs[1:], start=1):
        deliver(b, [seg], 1.01)
        (dupack,) = b.out(1.01)
        assert dupack.ack == segs[0].seq
        deliver(a, [dupack], 1.02)
        resent = a.out(1.02)
        if resent:
            assert resent[0].seq == segs[0].seq and a.conn.stats.timeouts == 0
            return i
    return -1


@pytest.mark.parametrize("threshold", [1, 3, 5])
def test_fast_retransmit_threshold_is_configurable(threshold):
    assert _dupacks_before_fast_retransmit(threshold) == threshold


@pytest.mark.parametrize("threshold", [3, 5])
def test_sack_threshold_without_rack_counts_sacked_segments(threshold):
    cfg = Config(rack=False, tlp=False, delayed_ack=False, fast_retransmit_threshold=threshold)
    a, b = established_pair(cfg)
    a.conn.send(bytes(8 * a.conn.mss))
    segs = a.out(1.0)
    for i, seg in enumerate(segs[1:], start=1):
        deliver(b, [seg], 1.01)
        deliver(a, b.out(1.01), 1.02)
        if a.out(1.02):
            break
    assert i == threshold  # the hole is lost once N segments above it are SACKed
    assert a.conn.stats.fast_recoveries == 1


# --------------------------------------------------------------- NewReno
def test_newreno_partial_ack_resends_the_next_hole_without_new_dupacks():
    cfg = Config(sack=False, delayed_ack=False, congestion_control="newreno", tlp=False)
    a, b = established_pair(cfg)
    assert isinstance(a.conn.cc, NewReno)
    mss = a.conn.mss
    a.conn.send(bytes(10 * mss))
    segs = a.out(1.0)
    cwnd_before = a.conn.cc.cwnd
    deliver(b, segs[1:5] + segs[6:], 1.01)  # segments 0 and 5 are lost
    deliver(a, b.out(1.01), 1.02)
    first = a.out(1.02)
    assert [s.seq for s in first if s.payload][:1] == [segs[0].seq]
    assert a.conn.in_recovery and a.conn.stats.fast_recoveries == 1
    assert a.conn.cc.cwnd == a.conn.cc.ssthresh == max(10 * mss // 2, 2 * mss) < cwnd_before
    # The resent segment 0 fills the first hole: the ACK stops at segment 5,
    # short of the recovery point, and that partial ACK alone resends 5.
    deliver(b, [first[0]], 1.03)
    (partial,) = b.out(1.03)
    assert partial.ack == segs[5].seq
    deliver(a, [partial], 1.04)
    second = a.out(1.04)
    assert second and second[0].seq == segs[5].seq
    assert a.conn.in_recovery and a.conn.stats.fast_recoveries == 1  # one window, one reduction
    deliver(b, [second[0]], 1.05)
    deliver(a, b.out(1.05), 1.06)
    assert not a.conn.in_recovery and a.conn.snd_una == a.conn.snd_nxt
    assert b.conn.recv(1 << 20) == bytes(10 * mss)


MSS = 1000


def test_newreno_slow_start_grows_by_bytes_acked():
    c = NewReno(MSS, 10)
    assert c.cwnd == 10 * MSS and c.in_slow_start
    c.on_ack(0.0, 2 * MSS, c.cwnd, 0.05)
    assert c.cwnd == 12 * MSS


def test_newreno_congestion_avoidance_adds_about_one_mss_per_window():
    c = NewReno(MSS, 10)
    c.ssthresh = c.cwnd = 20 * MSS
    for _ in range(20):  # one full window acknowledged, an MSS at a time
        c.on_ack(0.0, MSS, c.cwnd, 0.05)
    assert 20 * MSS + MSS * 0.9 <= c.cwnd <= 21 * MSS


def test_newreno_halves_on_loss_and_restarts_from_one_segment_on_rto():
    c = NewReno(MSS, 10)
    c.cwnd = 40 * MSS
    c.on_congestion_event(0.0, 40 * MSS)
    assert c.ssthresh == c.cwnd == 20 * MSS and not c.in_slow_start
    c.on_congestion_event(0.0, 3 * MSS)
    assert c.ssthresh == 2 * MSS  # never below two segments (RFC 5681 (4))
    c.cwnd = 30 * MSS
    c.on_rto(0.0, 30 * MSS)
    assert c.cwnd == MSS and c.ssthresh == 15 * MSS and c.in_slow_start


def test_newreno_does_not_grow_an_unused_window():
    c = NewReno(MSS, 10)
    c.on_ack(0.0, MSS, MSS, 0.05)  # 2 segments in use of 10
    assert c.cwnd == 10 * MSS


# ------------------------------------------------------ delayed ACK bounds
@pytest.mark.parametrize("bad", [0.5, 0.75, -0.01])
def test_ack_delay_must_stay_within_rfc_1122(bad):
    with pytest.raises(ValueError, match="ack_delay"):
        Config(ack_delay=bad)


def test_without_delayed_acks_every_segment_is_acked_at_once():
    a, b = established_pair(Config(delayed_ack=False))
    a.conn.send(b"z" * 10)
    deliver(b, a.out(1.0), 1.01)
    assert [s.flags for s in b.out(1.01)] == [ACK]


def test_ack_every_sets_how_many_full_segments_wait():
    a, b = established_pair(Config(ack_every=3, ack_delay=0.1))
    mss = a.conn.mss
    a.conn.send(bytes(3 * mss))
    segs = a.out(1.0)
    deliver(b, segs[:2], 1.01)
    assert b.out(1.01) == []
    deliver(b, segs[2:], 1.02)
    assert len(b.out(1.02)) == 1


# ------------------------------------------------------ silly windows
def _fixed_window_pair(window: int):
    cfg = Config(autotune=False, window_scaling=False, window_size=window, mss=1000, delayed_ack=False)
    return established_pair(cfg)


def test_receiver_does_not_advertise_a_small_opening():
    a, b = _fixed_window_pair(8000)
    a.conn.send(bytes(20_000))
    now = exchange(a, b, 1.0)
    assert b.conn.readable_bytes == 8000  # the window is full and closed
    assert b.conn.rcv.advertise_window(False, b.conn.mss) == 0
    b.conn.recv(300)  # a little room: not worth announcing
    assert b.out(now) == []
    b.conn.recv(2000)  # now a quarter of the buffer is free: announce it
    (update,) = b.out(now)
    assert update.flags == ACK and update.wnd == 2300


def test_sender_holds_back_a_window_limited_sliver():
    a, b = _fixed_window_pair(60_000)
    mss = a.conn.mss
    # The peer offers room for two segments and 100 bytes more.
    deliver(a, [Segment(b.conn.snd_nxt % M32, a.conn.snd_una % M32, ACK, 2 * mss + 100)], 1.0)
    assert a.conn.snd_wnd == 2 * mss + 100
    a.conn.send(bytes(10 * mss))
    out = a.out(1.0)
    assert [len(s.payload) for s in out] == [mss, mss]  # not the 100-byte sliver
    # Once the window opens the rest follows in full segments.
    deliver(a, [Segment(b.conn.snd_nxt % M32, a.conn.snd_una % M32, ACK, 20 * mss)], 1.1)
    assert all(len(s.payload) == mss for s in a.out(1.1))
