"""Congestion controllers' arithmetic at explicit times: CUBIC, HyStart++, BBR.

The controllers are driven directly with synthetic ACKs, RTTs and rate
samples, the way the connection calls them, and compared with the formulas
of RFC 9438 / RFC 9406 and the BBR state machine.
"""

import pytest

from gannet.core import cc
from gannet.core.cc.bbr import (
    DRAIN,
    GAIN_CYCLE,
    HIGH_GAIN,
    MIN_RTT_WINDOW,
    PROBE_BW,
    PROBE_RTT,
    PROBE_RTT_TIME,
    QUANTUM_SEGMENTS,
    INF,
    LOSS_BETA,
    HEADROOM,
    HI_STEP_MAX,
    LOSS_COMP_MAX,
    STARTUP,
    Bbr,
)
from gannet.core.cc.cubic import ALPHA, BETA, C, Cubic
from gannet.core.cc.hystart import CSS_GROWTH_DIVISOR, CSS_ROUNDS, HyStartPlusPlus, RoundCounter

MSS = 1000


def test_registry_offers_every_controller():
    assert {"newreno", "cubic", "bbr"} <= set(cc.available())
    assert isinstance(cc.create("cubic", MSS, 10), Cubic)
    assert isinstance(cc.create("bbr", MSS, 10), Bbr)
    with pytest.raises(ValueError):
        cc.create("vegas", MSS, 10)


# ------------------------------------------------------------------ CUBIC
def cubic_after_loss(w_max_segments: int) -> Cubic:
    """A CUBIC sender that just had a congestion event at w_max_segments."""
    c = Cubic(MSS, 10)
    c.cwnd = w_max_segments * MSS
    c.on_congestion_event(0.0, c.cwnd)
    return c


def ack_rounds(c, start: float, end: float, rtt: float) -> float:
    """One window of MSS-sized ACKs per RTT, evenly spread, until `end`."""
    now = start
    while now < end:
        n = max(1, c.cwnd // MSS)
        for i in range(n):
            c.on_ack(now + rtt * i / n, MSS, c.cwnd, rtt)
        now += rtt
    return now


def test_cubic_reduction_uses_beta_and_sets_k():
    c = cubic_after_loss(1000)
    assert c.w_max == 1000
    assert c.ssthresh == c.cwnd == int(1000 * MSS * BETA)
    c.on_ack(5.0, MSS, c.cwnd, 0.1)  # first ACK in avoidance starts the epoch
    assert c.epoch_start == 5.0
    # RFC 9438 eq. 2: K = cbrt(W_max * (1 - beta) / C)
    assert c.k == pytest.approx((1000 * (1 - BETA) / C) ** (1 / 3))
    assert c.k == pytest.approx(9.0856, abs=1e-3)


def test_cubic_window_follows_the_cubic_function():
    # Large W_max and a long RTT: the cubic region dominates Reno-friendliness.
    c = cubic_after_loss(1000)
    rtt = 0.1
    c.on_ack(0.0, MSS, c.cwnd, rtt)  # epoch starts at t = 0
    now = 0.0
    for t in (1.0, 3.0, 6.0, 9.0, 11.0, 13.0):
        now = ack_rounds(c, now, t, rtt)
        expected = c.w_cubic(now)  # the window aims at W_cubic(t + RTT) each RTT
        assert c.cwnd / MSS == pytest.approx(expected, rel=0.03), f"t={now:.1f}"
    # Concave then convex: it plateaus near W_max around K, then grows past it.
    assert c.cwnd / MSS > 1000


def test_cubic_target_is_clamped_to_one_and_a_half_cwnd_per_rtt():
    c = cubic_after_loss(1000)
    c.on_ack(0.0, MSS, c.cwnd, 0.1)
    start = c.cwnd
    # Far past K the cubic target is huge; one window of ACKs adds at most 50 %.
    c.epoch_start = -100.0
    for _ in range(start // MSS):
        c.on_ack(0.0, MSS, c.cwnd, 0.1)
    assert start * 1.45 < c.cwnd <= start * 1.5 + MSS


def test_cubic_fast_convergence_releases_bandwidth():
    c = cubic_after_loss(100)
    assert c.w_max == 100
    # A second loss before reaching W_max: W_max shrinks further (RFC 9438 4.7).
    c.cwnd = 90 * MSS
    c.on_congestion_event(1.0, c.cwnd)
    assert c.w_max == pytest.approx(90 * (1 + BETA) / 2)
    assert c.cwnd == int(90 * MSS * BETA)
    # A loss above the previous W_max just records it.
    c.cwnd = 120 * MSS
    c.on_congestion_event(2.0, c.cwnd)
    assert c.w_max == pytest.approx(120)


def test_cubic_reno_friendly_region_on_short_rtts():
    # Small W_max and a 10 ms RTT: Reno would grow faster than the cubic curve.
    c = cubic_after_loss(20)
    rtt = 0.01
    c.on_ack(0.0, MSS, c.cwnd, rtt)
    now = ack_rounds(c, 0.0, 0.5, rtt)
    assert c.w_cubic(now + rtt) < c.w_est
    assert c.cwnd / MSS == pytest.approx(c.w_est, abs=0.01)
    # Growth of about ALPHA segments per RTT while below cwnd_prior, then 1.
    assert c.w_est >= 14 + ALPHA * 6 * 0.9  # from 14 segments, about 6 RTTs to 20
    assert c.w_est > 20


def test_cubic_reno_friendly_uses_alpha_below_cwnd_prior():
    c = cubic_after_loss(100)
    c.on_ack(0.0, MSS, c.cwnd, 0.001)
    w0 = c.w_est
    n = c.cwnd // MSS
    for _ in range(n):  # one window of ACKs
        c.on_ack(0.0, MSS, c.cwnd, 0.001)
    assert c.w_est - w0 == pytest.approx(ALPHA, rel=0.02)


def test_cubic_rto_uses_loss_window_and_restarts_with_k_zero():
    c = Cubic(MSS, 10)
    c.ssthresh = 10 * MSS  # already in avoidance
    c.cwnd = 50 * MSS
    c.on_rto(1.0, c.cwnd)
    assert c.cwnd == MSS
    assert c.ssthresh == int(50 * MSS * BETA)
    # A second timeout before any progress keeps ssthresh (RFC 5681 5).
    c.on_rto(2.0, c.cwnd)
    assert c.ssthresh == int(50 * MSS * BETA)
    # Slow start back to ssthresh, then the first avoidance epoch: K = 0 and
    # W_max = cwnd at its start (RFC 9438 4.8).
    now = 3.0
    while c.cwnd < c.ssthresh:
        c.on_ack(now, MSS, c.cwnd, 0.05)
        now += 0.001
    start = c.cwnd / MSS
    c.on_ack(now, MSS, c.cwnd, 0.05)
    assert c.k == 0.0
    assert c.w_max == pytest.approx(start) == pytest.approx(35)


def test_cubic_does_not_grow_an_unused_window():
    c = cubic_after_loss(100)
    before = c.cwnd
    for i in range(100):
        c.on_ack(i * 0.01, MSS, 2 * MSS, 0.05)  # far less than cwnd in flight
    assert c.cwnd == before


# --------------------------------------------------------------- HyStart++
def hs_round(h, now, cwnd, rtt, acks=20):
    """One round of `acks` MSS-sized ACKs all seeing `rtt`."""
    leave = False
    for i in range(acks):
        cwnd, leave = h.on_ack(now + i * 0.001, cwnd, MSS, (acks - i) * MSS, rtt)
        if leave:
            break
    return cwnd, leave


def test_round_counter_ends_a_round_when_the_flight_is_acked():
    r = RoundCounter()
    assert r.on_ack(0.0, MSS, 5 * MSS, 0.1)  # first ACK starts round 1
    assert r.round == 1
    # 4 MSS were outstanding after that ACK: the round ends once they are acked.
    assert [r.on_ack(0.01 * i, MSS, (5 - i) * MSS, 0.1) for i in range(1, 5)] == [
        False,
        False,
        False,
        True,
    ]
    assert r.round == 2
    # Without ACKs (loss recovery) a round also ends after two smoothed RTTs.
    assert not r.tick(0.1)
    assert r.tick(0.04 + 2 * r.srtt)


def test_hystart_stays_in_slow_start_while_rtt_is_flat():
    h = HyStartPlusPlus(MSS)
    cwnd = 10 * MSS
    for k in range(5):
        new, leave = hs_round(h, k * 0.1, cwnd, 0.1)
        assert not leave and not h.in_css
        assert new == cwnd + 20 * MSS  # one MSS per MSS acknowledged
        cwnd = new


def test_hystart_enters_css_on_rtt_increase_then_leaves_slow_start():
    h = HyStartPlusPlus(MSS)
    cwnd = 10 * MSS
    cwnd, _ = hs_round(h, 0.0, cwnd, 0.100)
    cwnd, _ = hs_round(h, 0.1, cwnd, 0.100)
    # threshold = clamp(100 ms / 8, 4 ms, 16 ms) = 12.5 ms: 110 ms is not enough.
    cwnd, _ = hs_round(h, 0.2, cwnd, 0.110)
    assert not h.in_css
    # Against the last round's 110 ms the threshold is 13.75 ms: 125 ms is above.
    cwnd, _ = hs_round(h, 0.3, cwnd, 0.125)
    assert h.in_css
    assert h.css_baseline_min_rtt == pytest.approx(0.125)
    # In CSS, growth is a quarter of slow start.
    before = cwnd
    cwnd, leave = h.on_ack(0.5, cwnd, 4 * MSS, 0, 0.125)
    assert cwnd - before == 4 * MSS // CSS_GROWTH_DIVISOR
    # After CSS_ROUNDS rounds: congestion avoidance.
    leave = False
    rounds = 0
    while not leave:
        cwnd, leave = hs_round(h, 0.6 + rounds * 0.2, cwnd, 0.125)
        rounds += 1
        assert rounds <= CSS_ROUNDS + 1
    assert not h.enabled


def test_hystart_css_returns_to_slow_start_when_rtt_drops():
    h = HyStartPlusPlus(MSS)
    cwnd = 10 * MSS
    for k, rtt in enumerate((0.1, 0.1, 0.13)):
        cwnd, _ = hs_round(h, k * 0.2, cwnd, rtt)
    assert h.in_css
    cwnd, _ = hs_round(h, 1.0, cwnd, 0.09)  # the increase was spurious
    assert not h.in_css and h.enabled


def test_cubic_uses_hystart_to_leave_slow_start():
    c = Cubic(MSS, 10)
    now = 0.0
    rtts = [0.05] * 3 + [0.07] * (CSS_ROUNDS + 3)
    for rtt in rtts:
        n = c.cwnd // MSS
        for i in range(n):
            c.on_ack(now, MSS, (n - i) * MSS, rtt)
            now += rtt / n
    assert c.ssthresh < 1 << 40  # left slow start without any loss
    assert not c.in_slow_start
    # A loss disables HyStart++ for the rest of the connection.
    c.on_congestion_event(now, c.cwnd)
    assert not c.hystart.enabled


# -------------------------------------------------------------------- BBR
MBPS = 1e6 / 8  # bytes/s per Mbit/s


def bbr_round(b, now, rate, rtt=0.04, acked=10 * MSS, in_flight=None, app_limited=False):
    """One round for the controller: a rate sample, then the ACK that carried
    it and ends the round (the connection's order)."""
    in_flight = acked if in_flight is None else in_flight
    b.on_delivery_rate(now, rate, rtt, app_limited)
    b.on_ack(now, acked, in_flight, rtt)


def bbr_in_probe_bw(rate=10 * MBPS, rtt=0.04):
    b = Bbr(MSS, 10)
    now = 0.0
    for k in range(12):
        bbr_round(b, now, rate, rtt)
        now += rtt
        if b.state == PROBE_BW:
            return b, now
    raise AssertionError(f"still in {b.state}")


def test_bbr_startup_paces_at_high_gain_while_bandwidth_grows():
    b = Bbr(MSS, 10)
    assert b.state == STARTUP and b.pacing_gain == HIGH_GAIN
    now, rate = 0.0, 4 * MBPS
    for _ in range(6):
        bbr_round(b, now, rate)
        assert b.state == STARTUP
        assert b.pacing_rate == pytest.approx(HIGH_GAIN * b.btl_bw)
        now += 0.04
        rate *= 2
    assert b.btl_bw == 128 * MBPS
    assert b.min_rtt == 0.04


def test_bbr_app_limited_rounds_do_not_end_startup():
    """A request-response flow delivers one small message per round: its
    rate samples are app-limited and flat. That is no full pipe; taking it
    for one pinned the pacing rate to the trickle (64 kB/s), and each 64-byte
    request then waited for the pacer."""
    b = Bbr(MSS, 10)
    now = 0.0
    for _ in range(20):
        bbr_round(b, now, 64_000, rtt=0.001, acked=64, in_flight=64, app_limited=True)
        now += 0.001
    assert b.state == STARTUP and not b.filled_pipe
    assert b.pacing_rate >= HIGH_GAIN * 10 * MSS / 0.001 * 0.99  # the initial window per RTT


def test_bbr_leaves_startup_after_three_rounds_without_25_percent_growth():
    b = Bbr(MSS, 10)
    now = 0.0
    for rate in (1, 2, 4, 8):
        bbr_round(b, now, rate * MBPS)
        now += 0.04
    # Growth below 25 % per round counts as a plateau.
    states = []
    for rate in (9, 9.5, 9.9):
        # 100 kB acked per round and 100 kB still outstanding: a queue.
        bbr_round(b, now, rate * MBPS, acked=100_000, in_flight=200_000)
        now += 0.04
        states.append(b.state)
    assert states == [STARTUP, STARTUP, DRAIN]
    assert b.filled_pipe
    assert b.pacing_rate == pytest.approx(b.btl_bw / HIGH_GAIN)
    # Drain ends once what is in flight fits the estimated BDP.
    bdp = b.btl_bw * b.min_rtt
    b.on_ack(now, MSS, int(bdp * 1.5), 0.04)
    assert b.state == DRAIN
    b.on_ack(now + 0.01, MSS, int(bdp * 0.9), 0.04)
    assert b.state == PROBE_BW
    assert b.pacing_gain in GAIN_CYCLE and b.pacing_gain != 0.75
    assert b.pacing_rate == pytest.approx(b.pacing_gain * b.btl_bw)


def test_bbr_probe_bw_cycles_gains_each_min_rtt():
    b, now = bbr_in_probe_bw()
    bw = b.btl_bw
    bdp = bw * b.min_rtt
    seen = []
    for _ in range(40):
        now += 0.045  # a little more than min_rtt per step
        inflight = int(bdp * b.pacing_gain) + QUANTUM_SEGMENTS * MSS
        b.on_ack(now, MSS, inflight + MSS, 0.04)
        b.on_delivery_rate(now, bw, 0.04, False)
        seen.append(b.pacing_gain)
        assert b.pacing_rate == pytest.approx(b.pacing_gain * bw)
    # The full cycle shows up: one probe up, one drain, six cruising phases.
    i = seen.index(1.25)
    assert seen[i : i + 8] == list(GAIN_CYCLE)
    assert b.cwnd <= b.target_cwnd()


def test_bbr_bandwidth_filter_is_a_windowed_max_that_skips_app_limited_lows():
    b, now = bbr_in_probe_bw(rate=10 * MBPS)
    # A low app-limited sample says nothing about the path.
    bbr_round(b, now, 2 * MBPS, app_limited=True)
    assert b.btl_bw == 10 * MBPS
    # An app-limited sample above the estimate is still proof of capacity.
    now += 0.04
    bbr_round(b, now, 12 * MBPS, app_limited=True)
    assert b.btl_bw == 12 * MBPS
    # Ten rounds later the peak has aged out of the window.
    for _ in range(11):
        now += 0.04
        bbr_round(b, now, 8 * MBPS)
    assert b.btl_bw == 8 * MBPS


def test_bbr_probe_rtt_after_ten_seconds_without_a_lower_rtt():
    b, now = bbr_in_probe_bw()
    big_cwnd = b.cwnd
    assert big_cwnd > 4 * MSS
    # RTT samples above the minimum for 10 s: the estimate expires.
    t = now
    while t < MIN_RTT_WINDOW + 0.5:
        t += 0.05
        bbr_round(b, t, 10 * MBPS, rtt=0.05, in_flight=big_cwnd)
        if b.state == PROBE_RTT:
            break
    assert b.state == PROBE_RTT
    # Half a BDP (10 Mbit/s x the expired estimate's replacement, 50 ms),
    # not four segments.
    assert b.min_rtt == pytest.approx(0.05)
    assert b.cwnd == int(0.5 * 10 * MBPS * 0.05)
    assert b.pacing_rate == pytest.approx(b.btl_bw)
    # Once in flight is down to half a BDP it holds for 200 ms and a round...
    t += 0.01
    bbr_round(b, t, 10 * MBPS, rtt=0.04, acked=MSS, in_flight=4 * MSS)
    start = t
    while t < start + PROBE_RTT_TIME - 0.02:
        t += 0.02
        bbr_round(b, t, 10 * MBPS, rtt=0.04, acked=MSS, in_flight=MSS)
        assert b.state == PROBE_RTT
    t = start + PROBE_RTT_TIME + 0.01
    bbr_round(b, t, 10 * MBPS, rtt=0.04, acked=MSS, in_flight=MSS)
    # ...then back to ProbeBW with the window it had and a fresh min RTT.
    assert b.state == PROBE_BW
    assert b.cwnd >= big_cwnd
    assert b.min_rtt == pytest.approx(0.04)
    assert b.min_rtt_stamp == pytest.approx(t)


def test_bbr_cwnd_is_gain_times_bdp_plus_quantum():
    b, now = bbr_in_probe_bw(rate=10 * MBPS, rtt=0.04)
    bdp = 10 * MBPS * 0.04
    assert b.target_cwnd() == int(2 * bdp) + QUANTUM_SEGMENTS * MSS
    for _ in range(100):
        now += 0.001
        b.on_ack(now, 10 * MSS, b.cwnd, 0.04)
    # These ACKs deliver 10 MB/s in one-millisecond steps of 10 segments:
    # faster than the 10 Mbit/s model explains, so cwnd has headroom for it.
    assert b.aggregation_cwnd() > 0
    assert b.cwnd == b.target_cwnd() + b.aggregation_cwnd()
    # Tiny paths still keep four segments.
    b.btl_bw, b.min_rtt = 1000.0, 0.001
    assert b.target_cwnd() == 4 * MSS


def test_bbr_ignores_isolated_loss():
    b, now = bbr_in_probe_bw()
    cwnd, rate = b.cwnd, b.btl_bw
    b.on_congestion_event(now, cwnd)  # no queue: RTT at its minimum
    assert b.cwnd == cwnd
    assert b.btl_bw == rate and b.state == PROBE_BW
    b.on_recovery_end(now + 0.05)
    assert b.cwnd == cwnd
    assert b.inflight_hi == INF  # random loss teaches no bound


def test_bbr_loss_with_a_queue_ends_startup_and_bounds_cwnd():
    b = Bbr(MSS, 10)
    now = 0.0
    for rate in (1, 2, 4, 8):
        bbr_round(b, now, rate * MBPS)
        now += 0.04
    bbr_round(b, now, 8 * MBPS, rtt=0.08, in_flight=200 * MSS)  # RTT doubled
    b.on_congestion_event(now, 200 * MSS)
    assert b.filled_pipe and b.state == DRAIN
    assert b.cwnd <= b.target_cwnd(1.0)
    assert b.pacing_rate <= b.btl_bw  # no faster than the bottleneck in recovery


def test_bbr_rto_restarts_from_one_segment_and_grows_back():
    b, now = bbr_in_probe_bw()
    b.on_rto(now, b.cwnd)
    assert b.cwnd == MSS
    for _ in range(100):
        now += 0.01
        b.on_ack(now, 2 * MSS, b.cwnd, 0.04)
    assert b.cwnd == b.target_cwnd() + b.aggregation_cwnd()


def startup_rounds(b, now, rates, rtt=0.04, acks=6):
    """Startup rounds of `acks` ACKs each (so a round's minimum RTT counts),
    the flight acknowledged by the round's last ACK; each ACK carries a new
    RTT sample (a few microseconds apart, as real ones are)."""
    for rate in rates:
        b.on_delivery_rate(now, rate, rtt, False)
        for k in range(acks):
            last = k == acks - 1
            b.on_ack(now + k * rtt / acks, 2 * MSS, 2 * MSS if last else 20 * MSS, rtt + k * 1e-6)
        now += rtt
    return now


def test_bbr_random_loss_in_startup_neither_caps_nor_shrinks():
    b = Bbr(MSS, 10)
    now = startup_rounds(b, 0.0, [1 * MBPS, 2 * MBPS, 4 * MBPS])
    assert b.state == STARTUP
    cwnd = b.cwnd
    b.on_congestion_event(now, cwnd)  # RTT at its minimum: random loss
    assert b.cwnd == cwnd and b.state == STARTUP
    assert b.pacing_rate == pytest.approx(HIGH_GAIN * b.btl_bw)
    # The connection keeps calling on_ack and giving rate samples in
    # recovery (acks_in_recovery): the model and cwnd keep growing.
    assert Bbr.acks_in_recovery
    b.on_delivery_rate(now + 0.01, 8 * MBPS, 0.04, False)
    b.on_ack(now + 0.01, 10 * MSS, cwnd, 0.04)
    assert b.btl_bw == 8 * MBPS
    assert b.pacing_rate == pytest.approx(HIGH_GAIN * 8 * MBPS)
    assert b.cwnd > cwnd


def test_bbr_one_late_rtt_sample_is_not_a_queue():
    b = Bbr(MSS, 10)
    now = startup_rounds(b, 0.0, [1 * MBPS, 2 * MBPS, 4 * MBPS])
    # A new round: one sample at the path RTT, then one twice as long (a
    # delay spike), then a loss.
    b.on_ack(now, 2 * MSS, 20 * MSS, 0.0401)
    b.on_ack(now + 0.005, 2 * MSS, 20 * MSS, 0.08)
    assert not b.queue_evident()
    b.on_congestion_event(now + 0.005, 20 * MSS)
    assert b.state == STARTUP and not b.filled_pipe
    # The connection repeats its latest sample on ACKs it could not time
    # (Karn): repeats are not new evidence.
    for k in range(6):
        b.on_ack(now + 0.006 + k * 0.001, 2 * MSS, 20 * MSS, 0.08)
    assert not b.queue_evident()
    # A whole round of inflated samples is a queue: the same loss ends Startup.
    b.on_recovery_end(now + 0.01)
    now = startup_rounds(b, now + 0.04, [4.2 * MBPS, 4.3 * MBPS], rtt=0.06)
    assert b.state == STARTUP and b.queue_evident()
    b.on_congestion_event(now, 20 * MSS)
    assert b.filled_pipe and b.state != STARTUP
    assert b.pacing_rate <= b.btl_bw


def test_bbr_timeout_keeps_the_bandwidth_estimate_and_restores_the_window():
    b, now = bbr_in_probe_bw(rate=10 * MBPS)
    bw, cwnd = b.btl_bw, b.cwnd
    outstanding = 50 * MSS
    b.on_rto(now, outstanding)
    assert b.cwnd == MSS
    # Afterwards the pipe is near empty, so every ACK would end a byte-counted
    # round; rounds still last at least half a min RTT, so this burst of ACKs
    # (20 ms) does not age the bandwidth samples out of the 10-round window.
    start_round = b.rounds.round
    t = now
    for _ in range(20):
        t += 0.001
        b.on_ack(t, MSS, MSS, 0.04)
        b.on_delivery_rate(t, 1 * MBPS, 0.04, False)
    assert b.rounds.round - start_round <= 1
    assert b.btl_bw == bw
    # Once everything outstanding at the timeout is delivered, the window
    # from before the timeout is back.
    delivered = 20 * MSS
    while delivered < outstanding:
        t += 0.005
        b.on_ack(t, 5 * MSS, 5 * MSS, 0.04)
        delivered += 5 * MSS
    assert b.cwnd >= min(cwnd, b.target_cwnd())


def test_bbr_probe_rtt_restores_its_window_after_a_loss_episode_inside_it():
    b, now = bbr_in_probe_bw()
    big_cwnd = b.cwnd
    t = now
    while b.state != PROBE_RTT:
        t += 0.05
        bbr_round(b, t, 10 * MBPS, rtt=0.05, in_flight=big_cwnd)
    # A loss episode starts and ends while the window is at four segments.
    b.on_congestion_event(t, 4 * MSS)
    b.on_recovery_end(t + 0.01)
    t += 0.02
    bbr_round(b, t, 10 * MBPS, rtt=0.04, acked=MSS, in_flight=MSS)
    t += PROBE_RTT_TIME + 0.05
    bbr_round(b, t, 10 * MBPS, rtt=0.04, acked=MSS, in_flight=MSS)
    assert b.state == PROBE_BW
    assert b.cwnd >= big_cwnd


def test_bbr_rtt_samples_near_the_minimum_confirm_it_without_probe_rtt():
    b, now = bbr_in_probe_bw()
    t = now
    # 12 s of samples 2 % above the minimum (pacing bursts, one segment's
    # serialization): the queue is empty enough, no ProbeRTT.
    while t < MIN_RTT_WINDOW + 2.0:
        t += 0.05
        bbr_round(b, t, 10 * MBPS, rtt=0.0408, in_flight=50 * MSS)
        assert b.state != PROBE_RTT, f"ProbeRTT at t={t:.2f}"
    assert b.min_rtt == pytest.approx(0.04)
    # 5 % above it is a queue: after 10 s the estimate expires as before.
    start = t
    while b.state != PROBE_RTT and t < start + MIN_RTT_WINDOW + 1.0:
        t += 0.05
        bbr_round(b, t, 10 * MBPS, rtt=0.042, in_flight=50 * MSS)
    assert b.state == PROBE_RTT
    assert t - start >= MIN_RTT_WINDOW - 0.1


def queued_round(b, t, in_flight, rtts=(0.060, 0.061, 0.062, 0.063)):
    """One round of ACKs whose RTTs all show a queue (~20 ms at 40 ms)."""
    for k, rtt in enumerate(rtts):
        b.on_delivery_rate(t, 10 * MBPS, 0.04, False)
        b.on_ack(t + k * 0.001, 10 * MSS, in_flight, rtt)


def test_bbr_loss_with_a_queue_bounds_inflight_which_grows_back_exponentially():
    b, now = bbr_in_probe_bw()  # 10 Mbit/s x 40 ms: BDP 50 segments
    assert b.bdp == pytest.approx(50 * MSS)
    t = now
    for _ in range(3):
        t += 0.06
        queued_round(b, t, 100 * MSS)
    assert b.queue_evident()
    b.on_congestion_event(t, 100 * MSS)
    # The buffer overflowed at about 100 segments in flight: stay below 70.
    assert b.inflight_hi == pytest.approx(LOSS_BETA * 100 * MSS)
    b.on_recovery_end(t + 0.06)
    assert b.cwnd <= 70 * MSS < b.target_cwnd()
    # While the bound is what limits a probe (gain 1.25, cwnd at the bound
    # and all of it in flight) it rises, by 1, 2, 4, ... segments in
    # successive probes (BBRv2's probe up), at most HI_STEP_MAX a probe;
    # outside the probes cwnd stays below 0.85 of it, room for another
    # flow's burst.
    hi = b.inflight_hi
    steps = []
    for _ in range(300):
        t += 0.01
        # A quarter window an ACK, the window full: about five ACKs a round.
        bbr_round(b, t, 10 * MBPS, rtt=0.04, acked=b.cwnd // 4, in_flight=b.cwnd + b.cwnd // 4)
        assert b.cwnd <= b.inflight_hi
        if b.pacing_gain <= 1:
            assert b.cwnd <= HEADROOM * b.inflight_hi + MSS
        if b.inflight_hi != hi:
            steps.append(round((b.inflight_hi - hi) / MSS))
            hi = b.inflight_hi
    assert steps[:4] == [1, 2, 4, 8] and max(steps) == HI_STEP_MAX, steps
    # Not limited by it (little in flight): no growth.
    for _ in range(10):
        t += 0.045
        bbr_round(b, t, 10 * MBPS, rtt=0.04, acked=20 * MSS, in_flight=40 * MSS)
    assert b.inflight_hi == hi
    # The next loss with a queue starts the growth from one segment again.
    for _ in range(3):
        t += 0.06
        queued_round(b, t, 100 * MSS)
    b.on_congestion_event(t, 100 * MSS)
    b.on_recovery_end(t + 0.06)
    hi = b.inflight_hi
    while b.inflight_hi == hi and t < 100:
        t += 0.01
        bbr_round(b, t, 10 * MBPS, rtt=0.04, acked=b.cwnd // 4, in_flight=b.cwnd + b.cwnd // 4)
    assert b.inflight_hi == hi + MSS


def test_bbr_inflight_hi_is_never_below_a_bdp_and_a_quarter():
    b, now = bbr_in_probe_bw()
    t = now
    for _ in range(3):
        t += 0.06
        queued_round(b, t, 55 * MSS)
    b.on_congestion_event(t, 55 * MSS)
    # 0.7 x 55 segments would be below the pipe itself (50): a loss there is
    # no overflow of this flow's making, and delay jitter needs headroom.
    assert b.inflight_hi == pytest.approx(1.25 * b.bdp)


def test_bbr_ack_aggregation_adds_only_what_bursts_deliver_beyond_the_model():
    """ACKs that come in bursts (a receiver acknowledging a batch at once)
    leave a cwnd of 2 BDP dry between bursts; Linux BBR's extra_acked idea
    adds the excess. ACKs that arrive at the modelled rate add nothing."""
    smooth, now = bbr_in_probe_bw(rate=10 * MBPS, rtt=0.04)
    step = MSS / (10 * MBPS)  # one segment's time at the bottleneck
    for _ in range(1000):  # 0.8 s, 20 rounds: the bursts of the set-up have aged out
        now += step
        smooth.on_ack(now, MSS, smooth.cwnd, 0.04)
    assert smooth.aggregation_cwnd() <= 2 * MSS

    bursty, now = bbr_in_probe_bw(rate=10 * MBPS, rtt=0.04)
    for _ in range(40):
        now += 10 * step  # the same average rate, ten segments per ACK
        bursty.on_ack(now, 10 * MSS, bursty.cwnd, 0.04)
    assert bursty.aggregation_cwnd() >= 8 * MSS
    assert bursty.aggregation_cwnd() <= 10 * MBPS * 0.1  # capped at 100 ms of bandwidth


@pytest.mark.parametrize("name", ["newreno", "cubic", "bbr"])
def test_controllers_keep_no_instance_dict(name):
    """One controller per connection: an instance dict (BBR has some forty
    fields, past the size where CPython shares dict keys) cost 1.5 KB of
    every idle connection. A field assigned outside __slots__ fails here."""
    from gannet.config import Config
    from gannet.sim import LinkConfig
    from gannet.sim.scenario import run_transfer

    r = run_transfer(1, 300_000, LinkConfig(delay=0.01, loss=0.02), config=Config(congestion_control=name))
    assert r.ok  # every code path a lossy transfer takes ran without an AttributeError
    c = cc.create(name, MSS, 10)
    assert not hasattr(c, "__dict__")


def lossy_rounds(b, now, rounds, loss, rtt=0.04, rate=10 * MBPS, acked=100 * MSS):
    """ProbeBW rounds in which `loss` of what was sent had to be resent
    (the connection's running count of resent bytes rides on the samples)."""
    retx = b._retx_seen
    for _ in range(rounds):
        retx += int(acked * loss / (1 - loss))
        b.on_delivery_rate(now, rate, rtt, False, retx)
        b.on_ack(now, acked, acked, rtt)
        now += rtt
    return now


def gain_one_phase(b, now, rtt=0.04):
    """Walk the gain cycle (with clean rounds that leave the loss estimate
    alone) until a gain-1 phase paces."""
    for _ in range(20):
        if b.pacing_gain == 1.0:
            return now
        now = lossy_rounds(b, now, 1, 0.0, rtt)
    raise AssertionError("no gain-1 phase")


def test_bbr_paces_above_the_bandwidth_by_the_random_loss_rate():
    """Loss before the bottleneck (netlab drops before its rate queue, as
    a lossy radio hop before a wired bottleneck would) takes its share of
    what is sent before the link sees it: pacing at the delivery rate left
    that share of the link idle (netlab, 100 ms, 2 %: 44.3 of the 47.7
    Mbit/s the link carries in payload). BBR divides its pacing rate by
    (1 - the loss rate) of the recent rounds."""
    b, now = bbr_in_probe_bw()
    assert b.loss_comp == 1.0
    now = lossy_rounds(b, now, 40, 0.01)
    assert b.loss_comp == pytest.approx(1 / 0.99, rel=2e-3)
    now = gain_one_phase(b, now)
    assert b.pacing_rate == pytest.approx(b.btl_bw / 0.99, rel=2e-3)
    # Loss-free rounds bring it back down.
    now = lossy_rounds(b, now, 60, 0.0)
    assert b.loss_comp < 1.0005


def test_bbr_loss_compensation_is_capped_and_ignores_loss_with_a_queue():
    b, now = bbr_in_probe_bw()
    now = lossy_rounds(b, now, 40, 0.10)  # far above what random loss looks like
    assert b.loss_comp == pytest.approx(1 / (1 - LOSS_COMP_MAX))
    # Rounds whose RTT shows a queue: the loss is the buffer overflowing,
    # and sending more would only overflow it further.
    q, now = bbr_in_probe_bw()
    retx = 0
    for _ in range(40):
        retx += MSS
        q.on_delivery_rate(now, 10 * MBPS, 0.04, False, retx)
        for k in range(5):  # enough samples for the round's minimum to count
            q.on_ack(now + k * 0.001, 20 * MSS, 100 * MSS if k < 4 else 20 * MSS, 0.06 + k * 1e-6)
        now += 0.06
    assert q.loss_comp < 1.001
