"""Scripted loss: drop exactly this segment, jump to the timer, assert what is resent."""

import pytest

from gannet.config import Config
from gannet.core.states import State

from corepair import deliver, established_pair, exchange


def test_lost_segment_is_resent_when_the_rto_expires():
    # TLP off: this is the RTO's own behaviour (test_rack.py covers the probe).
    a, b = established_pair(Config(min_rto=0.2, tlp=False))
    a.conn.send(b"hello")
    (lost,) = a.out(1.0)  # dropped on the floor
    deadline = a.conn.get_timer()
    assert deadline == pytest.approx(1.0 + a.conn.rtt.current_rto())
    assert a.conn.rtt.current_rto() == pytest.approx(0.21)  # srtt 10 ms + min_rto (the variance term's floor)
    a.conn.handle_timer(deadline)
    (again,) = a.out(deadline)
    assert again.seq == lost.seq and again.payload == b"hello"
    assert a.conn.stats.retransmits == 1 and a.conn.stats.timeouts == 1
    # Exponential backoff: the next timeout is twice as far (RFC 6298 5.5).
    assert a.conn.get_timer() == pytest.approx(deadline + 0.42)
    deliver(b, [again], deadline + 0.005)
    assert b.conn.recv(10) == b"hello"


def test_fast_retransmit_after_three_duplicate_acks_without_sack():
    a, b = established_pair(Config(sack=False, delayed_ack=False))
    assert not a.conn.sack_ok
    mss = a.conn.mss
    a.conn.send(bytes(6 * mss))
    segs = a.out(1.0)
    assert len(segs) == 6
    deliver(b, segs[1:4], 1.01)  # the first is lost: three duplicate ACKs
    dupacks = b.out(1.01)
    assert len(dupacks) >= 1
    for i, ack in enumerate(dupacks[:2]):
        deliver(a, [ack], 1.02)
        assert a.out(1.02) == []  # not yet
    deliver(b, segs[4:5], 1.011)
    deliver(a, dupacks[2:] + b.out(1.011), 1.02)
    resent = a.out(1.02)
    assert resent and resent[0].seq == segs[0].seq
    assert a.conn.stats.fast_recoveries == 1 and a.conn.stats.timeouts == 0


def test_sack_recovery_resends_only_the_holes():
    a, b = established_pair()
    mss = a.conn.mss
    a.conn.send(bytes(10 * mss))
    segs = a.out(1.0)
    dropped = {2, 5}
    deliver(b, [s for i, s in enumerate(segs) if i not in dropped], 1.01)
    deliver(a, b.out(1.01), 1.02)
    resent = a.out(1.02)
    assert sorted(s.seq for s in resent if s.payload) == sorted(segs[i].seq for i in dropped)
    assert a.conn.stats.timeouts == 0
    deliver(b, resent, 1.03)
    assert b.conn.recv(1 << 20) == bytes(10 * mss)


def test_retry_limit_ends_the_connection_with_timeout_error():
    a, b = established_pair(Config(max_retries=3, min_rto=0.2, max_rto=1.0))
    a.conn.send(b"into the void")
    a.out(1.0)
    now = 1.0
    for _ in range(10):
        deadline = a.conn.get_timer()
        if deadline is None:
            break
        now = deadline
        a.conn.handle_timer(now)
        a.out(now)
    assert a.conn.state == State.CLOSED
    assert isinstance(a.conn.error, TimeoutError)
    assert a.conn.stats.timeouts == 4  # three retries, then the fourth timeout gives up


def test_syn_retransmitted_then_connect_times_out():
    from corepair import Side

    a = Side("b", 1, Config(max_retries=2, timeout=1.0), 1)
    a.conn.connect(0.0)
    times = []
    now = 0.0
    while a.conn.state != State.CLOSED:
        segs = a.out(now)
        times += [now for s in segs]
        now = a.conn.get_timer()
        a.conn.handle_timer(now)
    assert times == [0.0, 1.0, 3.0]  # RTO 1 s, doubled (RFC 6298 5.5)
    assert isinstance(a.conn.error, TimeoutError)


def test_keepalive_probes_then_peer_unreachable():
    cfg = Config(keepalive_idle=5.0, keepalive_interval=1.0, keepalive_count=3)
    a, b = established_pair(cfg)
    now = exchange(a, b, 0.1)
    # The peer answers the first probe: the connection stays up.
    assert a.conn.get_timer() == pytest.approx(a.conn.last_received + 5.0)
    now = a.conn.get_timer()
    a.conn.handle_timer(now)
    probe = a.out(now)
    assert len(probe) == 1 and not probe[0].payload
    deliver(b, probe, now + 0.01)
    deliver(a, b.out(now + 0.01), now + 0.02)
    assert a.conn.stats.keepalive_probes == 1 and a.conn.state == State.ESTABLISHED
    # Then the peer vanishes.
    for _ in range(10):
        now = a.conn.get_timer()
        a.conn.handle_timer(now)
        a.out(now)
        if a.conn.state == State.CLOSED:
            break
    assert isinstance(a.conn.error, TimeoutError)
    assert "keep-alive" in str(a.conn.error)
    assert a.conn.stats.keepalive_probes == 4


def test_sequence_numbers_wrap_during_a_transfer():
    a, b = established_pair(iss=(2**32 - 3000, 2**32 - 10))
    payload = bytes(range(256)) * 40
    a.conn.send(payload)
    b.conn.send(payload)
    exchange(a, b, 1.0)
    assert b.conn.recv(1 << 20) == payload
    assert a.conn.recv(1 << 20) == payload
    assert a.conn.snd_una > 2**32  # positions went past the wrap


def test_idle_timeout_closes_a_silent_connection():
    cfg = Config(idle_timeout=3.0, keepalive=False)
    a, b = established_pair(cfg)
    assert a.conn.get_timer() == pytest.approx(a.conn.last_received + 3.0)
    now = a.conn.get_timer()
    a.conn.handle_timer(now)
    assert a.conn.state == State.CLOSED and isinstance(a.conn.error, TimeoutError)


def test_paws_drops_a_segment_with_an_ancient_timestamp():
    a, b = established_pair()
    b.conn.send(b"first")
    deliver(a, b.out(4.0), 4.01)  # TS.Recent is now about t=4 s
    assert a.conn.recv(10) == b"first"
    b.conn.send(b"fresh")
    (seg,) = b.out(5.0)
    old = type(seg)(seg.seq, seg.ack, seg.flags, seg.wnd, seg.payload, tsval=(seg.tsval - 5_000_000) % 2**32, tsecr=0)
    deliver(a, [old], 5.01)
    assert a.conn.recv(10) == b"" and a.conn.stats.dropped_segments == 1
    deliver(a, [seg], 5.02)
    assert a.conn.recv(10) == b"fresh"


def test_pacing_spreads_a_window_over_time():
    a, b = established_pair(Config(initial_window=100))
    mss = a.conn.mss
    a.conn.cc.pacing_rate = 100 * mss  # 100 segments per second
    a.conn.snd._pacing_tokens = 0.0
    a.conn.snd._pacing_time = 1.0
    a.conn.send(bytes(50 * mss))
    assert a.out(1.0) == []  # no tokens yet
    deadline = a.conn.get_timer()
    assert deadline == pytest.approx(1.01)  # one segment's worth of time
    a.conn.handle_timer(0.1 + 1.0)  # 100 ms later: 10 segments' worth
    assert len(a.out(1.1)) == 10
    assert a.conn.get_timer() == pytest.approx(1.11)


@pytest.mark.pure
def test_delivery_rate_samples_reach_the_controller(monkeypatch):
    a, b = established_pair()
    samples = []
    cc = a.conn.cc
    on_delivery_rate = type(cc).on_delivery_rate

    def record(self, now, rate, interval, app_limited, *rest):  # controllers have slots: patch the class
        if self is cc:
            samples.append((rate, app_limited))
        return on_delivery_rate(self, now, rate, interval, app_limited, *rest)

    monkeypatch.setattr(type(cc), "on_delivery_rate", record)
    a.conn.send(bytes(4 * a.conn.mss))
    segs = a.out(1.0)
    deliver(b, segs, 1.01)
    deliver(a, b.out(1.01), 1.02)
    assert samples
    rate, app_limited = samples[-1]
    assert rate == pytest.approx(4 * a.conn.mss / 0.02, rel=0.05)


@pytest.mark.pure
def test_sacked_segments_give_rtt_samples_but_not_resent_ones(monkeypatch):
    """While a hole holds the cumulative ACK (an RTT per loss; back to back
    at 2 % loss on a 100 ms path) SACK-only ACKs are the only fresh news:
    each times the segment its first SACK block ends with, unless that was
    ever resent (Karn). Before, such a path gave almost no RTT samples, and
    BBR's min RTT and the RTO went stale."""
    a, b = established_pair(Config(initial_window=20))
    cc = a.conn.cc
    seen = []
    on_ack = type(cc).on_ack

    def record(self, now, acked, in_flight, rtt):  # controllers have slots: patch the class
        if self is cc:
            seen.append(rtt)
        return on_ack(self, now, acked, in_flight, rtt)

    monkeypatch.setattr(type(cc), "on_ack", record)
    mss = a.conn.mss
    a.conn.send(bytes(10 * mss))
    segs = a.out(1.0)
    samples = a.conn.rtt.samples
    deliver(b, segs[1:5], 1.03)  # the first segment is lost
    deliver(a, b.out(1.03), 1.06)
    assert a.conn.snd_una == segs[0].seq  # nothing cumulatively acknowledged
    assert a.conn.rtt.samples > samples
    assert a.conn.rtt.latest_rtt == pytest.approx(0.06)
    assert seen and seen[-1] == pytest.approx(0.06)  # the controller sees it too
    # The hole is repaired; a SACK block ending in resent data times nothing.
    resent = [s for s in a.out(1.06) if s.payload]
    assert resent and resent[0].seq == segs[0].seq
    a.conn.snd.ever_retransmitted.add(segs[4].seq, segs[4].seq + mss)  # as if resent
    samples = a.conn.rtt.samples
    assert a.conn.snd.sack_rate_sample(type("Seg", (), {"sack": [(segs[1].seq, segs[4].seq + mss)]})(), 1.2) is None
    assert a.conn.rtt.samples == samples


def test_pmtud_probe_confirmed_raises_the_segment_size():
    a, b = established_pair(Config(initial_window=100), pmtud=True)
    base_mss = a.conn.mss
    a.conn.send(bytes(200_000))
    segs = a.out(1.0)
    assert len(segs[0].payload) == 8972 - 24  # a datagram of the first probe size, carrying data
    assert all(len(s.payload) == base_mss for s in segs[1:])
    deliver(b, segs, 1.01)
    deliver(a, b.out(1.01), 1.02)
    assert a.conn.max_datagram_size == 8972 and a.conn.mss == 8972 - 24  # the short form; SACK blocks take data room when needed


def test_pmtud_first_probe_waits_for_a_window_of_twelve_probes():
    """In the first rounds a lost probe (the usual fate of the first size on
    a 1,500-byte path) would take a third to a half of the window: the first
    probe waits until cwnd holds PMTU_FIRST_PROBE_CWND of them."""
    from gannet.core.sender import PMTU_FIRST_PROBE_CWND

    a, b = established_pair(Config(initial_window=40), pmtud=True)
    base_mss = a.conn.mss
    probe = 8972 - 24
    a.conn.send(bytes(4_000_000))
    now, first_probe_cwnd, rounds = 1.0, None, 0
    while rounds < 30:
        cwnd = a.conn.cc.cwnd
        segs = a.out(now)
        if any(len(s.payload) > base_mss for s in segs):
            first_probe_cwnd = cwnd
            break
        deliver(b, segs, now + 0.002)
        deliver(a, b.out(now + 0.002), now + 0.004)
        b.conn.recv(1 << 24)
        now += 0.004
        rounds += 1
    assert rounds >= 1  # not in the first flight (40 segments: 58 kB < 12 probes)
    assert first_probe_cwnd is not None and first_probe_cwnd >= PMTU_FIRST_PROBE_CWND * probe


def test_pmtud_probes_on_a_path_whose_window_stays_small():
    """A small bandwidth-delay product keeps cwnd below twelve probes: the
    first probe goes once PMTU_FIRST_PROBE_DELIVERED probes' worth of data
    was delivered, and the search still finds the larger size."""
    from gannet.core.sender import PMTU_FIRST_PROBE_CWND, PMTU_FIRST_PROBE_DELIVERED

    a, b = established_pair(Config(), pmtud=True)
    probe = 8972 - 24
    a.conn.send(bytes(4_000_000))
    now, rounds = 1.0, 0
    while a.conn.max_datagram_size == 1472 and rounds < 60:
        segs = a.out(now)
        if any(len(s.payload) > a.conn.mss for s in segs):
            assert a.conn.cc.cwnd < PMTU_FIRST_PROBE_CWND * probe  # paced at 30 ms rounds
            assert a.conn.delivered >= PMTU_FIRST_PROBE_DELIVERED * probe
        deliver(b, segs, now + 0.01)
        deliver(a, b.out(now + 0.01), now + 0.02)
        b.conn.recv(1 << 24)
        now += 0.03
        rounds += 1
    assert a.conn.max_datagram_size == 8972


@pytest.mark.pure
def test_pmtud_probe_lost_three_times_ends_the_search_without_congestion_response():
    a, b = established_pair(Config(initial_window=100), pmtud=True)
    base_mss = a.conn.mss
    payload = bytes(range(256)) * 2000
    a.conn.send(payload)
    now, probes_dropped, got = 1.0, 0, b""
    for _ in range(40):
        segs = a.out(now)
        big = [s for s in segs if len(s.payload) > base_mss]  # the path drops these
        probes_dropped += len(big)
        deliver(b, [s for s in segs if s not in big], now + 0.01)
        deliver(a, b.out(now + 0.01), now + 0.02)
        got += b.conn.recv(1 << 20)
        now += 0.03
    assert probes_dropped == 3  # MAX_PROBES, then the search stops
    assert a.conn.max_datagram_size == 1472 and not a.conn.snd.pmtu_ladder
    assert a.conn.stats.fast_recoveries == 0  # a lost probe is not congestion
    assert got == payload


def test_resending_the_first_unacknowledged_segment_restarts_the_rto():
    a, b = established_pair()
    mss = a.conn.mss
    a.conn.send(bytes(10 * mss))
    segs = a.out(1.0)
    armed_at_send = a.conn.deadline("rtx")
    deliver(b, segs[1:], 1.01)  # the first segment is lost
    deliver(a, b.out(1.01), 1.02)
    resent = a.out(1.02)
    assert [s.seq for s in resent if s.payload] == [segs[0].seq]
    # the resend has a whole RTO from now, not what was left of the original's
    assert a.conn.deadline("rtx") == pytest.approx(1.02 + a.conn.rtt.current_rto())
    assert a.conn.deadline("rtx") > armed_at_send
