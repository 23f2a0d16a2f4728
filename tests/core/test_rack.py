"""RACK-TLP (RFC 8985), scripted: drop exactly these segments, jump to the timer.

The pair's handshake takes 10 ms, so SRTT and min_rtt start at 10 ms and the
reorder window is min_rtt/4 = 2.5 ms; the RTO is clamped to 200 ms.
"""

import pytest

from gannet.config import Config

from corepair import deliver, established_pair

NO_DELACK = Config(delayed_ack=False)


def data(segs):
    return [s for s in segs if s.payload]


def test_tail_loss_is_repaired_by_a_probe_long_before_the_rto():
    a, b = established_pair()
    mss = a.conn.mss
    a.conn.send(bytes(4 * mss))
    segs = a.out(1.0)
    assert len(segs) == 4
    deliver(b, segs[:2], 1.005)  # the last two are lost: a tail loss
    deliver(a, b.out(1.005), 1.010)
    assert a.out(1.010) == []
    rto = a.conn.deadline("rtx")
    pto = a.conn.get_timer()
    # PTO = 2*SRTT with more than one segment in flight (RFC 8985 7.2).
    assert pto == pytest.approx(1.010 + 2 * a.conn.srtt)
    assert pto < rto - 0.15
    a.conn.handle_timer(pto)
    (probe,) = a.out(pto)  # no new data: the last segment again
    assert (probe.seq, probe.payload) == (segs[3].seq, segs[3].payload)
    deliver(b, [probe], pto + 0.006)
    deliver(a, b.out(pto + 0.006), pto + 0.012)  # SACKs the probe: RACK sees segs[2] lost
    (resent,) = data(a.out(pto + 0.012))
    assert resent.seq == segs[2].seq
    deliver(b, [resent], pto + 0.018)
    deliver(a, b.out(pto + 0.018), pto + 0.024)
    assert b.conn.recv(1 << 20) == bytes(4 * mss)
    assert a.conn.snd_una == a.conn.snd_nxt
    assert a.conn.stats.timeouts == 0 and pto + 0.024 < rto
    assert a.conn.loss.rack.probes == 1


def test_a_lone_lost_segment_gets_the_delayed_ack_allowance_and_a_congestion_response():
    a, b = established_pair()
    a.conn.send(b"ping")
    (lost,) = a.out(1.0)
    pto = a.conn.get_timer()
    # One segment in flight: the peer may hold its ACK for ack_delay; the
    # probe allows twice that (timer slop must not let it win the race).
    assert pto == pytest.approx(1.0 + 2 * a.conn.srtt + 2 * a.conn.config.ack_delay)
    a.conn.handle_timer(pto)
    (probe,) = a.out(pto)
    assert probe.payload == b"ping" and probe.seq == lost.seq
    deliver(b, [probe], pto + 0.006)
    b.conn.handle_timer(pto + 0.006 + 0.025)  # b's delayed ACK
    deliver(a, b.out(pto + 0.031), pto + 0.037)
    assert b.conn.recv(10) == b"ping"
    # No DSACK to say the probe was redundant: the loss counts (RFC 8985 7.4).
    assert a.conn.stats.fast_recoveries == 1 and a.conn.stats.timeouts == 0


def test_the_probe_replaces_an_rto_that_would_come_first():
    a, b = established_pair(Config(min_rto=0.2))
    a.conn.rtt.srtt = 0.15  # 2*SRTT beyond the 200 ms RTO
    a.conn.send(bytes(2 * a.conn.mss))
    segs = a.out(1.0)
    rto = a.conn.deadline("rtx")
    assert a.conn.get_timer() == pytest.approx(rto)
    a.conn.handle_timer(rto)
    (probe,) = a.out(rto)
    assert probe.seq == segs[1].seq
    assert a.conn.stats.timeouts == 0
    assert a.conn.get_timer() == pytest.approx(rto + a.conn.rtt.current_rto())  # the RTO guards the probe


def test_a_lost_retransmission_is_found_by_rack_without_an_rto():
    a, b = established_pair(NO_DELACK)
    mss = a.conn.mss
    a.conn.send(bytes(6 * mss))
    segs = a.out(1.0)
    deliver(b, segs[1:], 1.006)  # the first is lost
    deliver(a, b.out(1.006), 1.012)
    a.conn.send(bytes(2 * mss))  # more data: it leaves after the retransmission
    out = data(a.out(1.012))
    assert out[0].seq == segs[0].seq and len(out) == 3
    retx, new = out[0], out[1:]
    deliver(b, new, 1.018)  # the retransmission is lost too; the new data arrives
    deliver(a, b.out(1.018), 1.024)
    # Data sent after the retransmission was delivered: RACK calls it lost
    # (in recovery, no reordering seen: no reorder window).
    (again,) = data(a.out(1.024))
    assert (again.seq, again.payload) == (retx.seq, retx.payload)
    deliver(b, [again], 1.030)
    deliver(a, b.out(1.030), 1.036)
    assert b.conn.recv(1 << 20) == bytes(8 * mss)
    assert a.conn.stats.timeouts == 0 and a.conn.stats.retransmits == 2


def test_without_rack_the_same_lost_retransmission_waits_for_the_rto():
    a, b = established_pair(NO_DELACK.with_(rack=False, tlp=False))
    mss = a.conn.mss
    a.conn.send(bytes(6 * mss))
    segs = a.out(1.0)
    deliver(b, segs[1:], 1.006)
    deliver(a, b.out(1.006), 1.012)
    a.conn.send(bytes(2 * mss))
    out = data(a.out(1.012))
    deliver(b, out[1:], 1.018)
    deliver(a, b.out(1.018), 1.024)
    assert data(a.out(1.024)) == []  # two SACKed segments are below DupThresh
    assert a.conn.get_timer() == pytest.approx(a.conn.deadline("rtx"))


def test_a_loss_with_fewer_than_dupthresh_sacked_is_found_by_the_reorder_timer():
    a, b = established_pair(NO_DELACK)
    mss = a.conn.mss
    a.conn.send(bytes(2 * mss))
    segs = a.out(1.0)
    deliver(b, segs[1:], 1.005)  # one SACKed segment above the hole
    deliver(a, b.out(1.005), 1.010)
    assert a.out(1.010) == []
    # Lost once RACK.rtt (10 ms) + reo_wnd (min_rtt/4) have passed since it was sent.
    deadline = a.conn.get_timer()
    assert deadline == pytest.approx(1.0 + 0.010 + 0.0025)
    a.conn.handle_timer(deadline)
    (resent,) = data(a.out(deadline))
    assert resent.seq == segs[0].seq
    assert a.conn.stats.fast_recoveries == 1 and a.conn.stats.timeouts == 0
    deliver(b, [resent], deadline + 0.005)
    assert b.conn.recv(1 << 20) == bytes(2 * mss)


def reorder_round(a, b, t, n):
    """Send n segments at t; all but the first arrive at t+5 ms, the first at t+6 ms."""
    segs = a.out(t)
    assert len(segs) == n
    deliver(b, segs[1:], t + 0.005)
    deliver(a, b.out(t + 0.005), t + 0.010)
    early = data(a.out(t + 0.010))
    deliver(b, segs[:1], t + 0.006)
    deliver(a, b.out(t + 0.006), t + 0.011)
    a.out(t + 0.011)
    return early


def test_reordering_within_the_reorder_window_is_not_retransmitted():
    a, b = established_pair(NO_DELACK)
    mss = a.conn.mss
    # One segment overtaken by one other: below DupThresh, so RACK waits
    # min_rtt/4 and the late original arrives in time. Reordering is now known.
    a.conn.send(bytes(2 * mss))
    assert reorder_round(a, b, 1.0, 2) == []
    assert a.conn.loss.rack.reordering_seen
    # Now three segments overtake the first: DupThresh would resend it at
    # once; RACK keeps its reorder window because reordering has been seen.
    a.conn.send(bytes(4 * mss))
    assert reorder_round(a, b, 1.1, 4) == []
    assert a.conn.stats.retransmits == 0 and a.conn.snd_una == a.conn.snd_nxt
    assert b.conn.recv(1 << 20) == bytes(6 * mss)


def test_without_rack_the_same_reordering_causes_a_spurious_retransmission():
    a, b = established_pair(NO_DELACK.with_(rack=False, tlp=False))
    mss = a.conn.mss
    a.conn.send(bytes(2 * mss))
    reorder_round(a, b, 1.0, 2)
    a.conn.send(bytes(4 * mss))
    early = reorder_round(a, b, 1.1, 4)
    assert len(early) == 1 and a.conn.stats.retransmits == 1


def test_a_spurious_retransmission_widens_the_reorder_window():
    a, b = established_pair(NO_DELACK)
    mss = a.conn.mss
    # Three segments overtake the first before any reordering is known:
    # RACK resends it at once (reo_wnd is 0), and the original arrives 1 ms later.
    a.conn.send(bytes(4 * mss))
    early = reorder_round(a, b, 1.0, 4)
    rack = a.conn.loss.rack  # made when the first data left
    assert len(early) == 1 and rack.reordering_seen
    # The ACK for that resend came sooner than min_rtt after it: the original
    # was delivered, so the resend was spurious and the window grows.
    assert rack.spurious == 1 and rack.reo_wnd_mult == 2
