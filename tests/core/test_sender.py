"""The sender's rules, stated directly through Sender's interface.

Each test takes an established connection's sender (`conn.snd`) and calls
what the connection calls: `write`, `output` (which may take the
one-segment guard, `send_small`, or the general loop, `output_full`),
`update_window`, `pacing_budget`. Where a rule is enforced on both paths,
both are exercised: a message of at most an MSS goes through the guard, a
longer write through the loop. ACKs come from the peer connection, so the
acknowledgment reaches the sender the way it does in use. No patching: the
tests run on the compiled and the pure build alike.
"""

from __future__ import annotations

import pytest

from gannet.config import Config
from gannet.core.timers import NEVER, PACING, PERSIST
from gannet.wire.segment import ACK, FIN, PSH

from corepair import deliver, established_pair

NOW = 1.0


def sender(**config):
    a, b = established_pair(Config(**config))
    return a, b, a.conn.snd


def output(snd, now: float = NOW, runs: bool = False) -> list:
    out: list = []
    snd.output(now, out, runs)
    return out


def acknowledge(a, b, segs, now: float) -> None:
    """The peer takes `segs` and its ACK comes back (no delayed ACK)."""
    deliver(b, segs, now)
    deliver(a, b.out(now), now)


# ----------------------------------------------------------------- Nagle
def test_nagle_holds_a_small_segment_while_data_is_unacknowledged():
    """RFC 9293 3.7.4: a second small write waits for the first one's ACK
    (the one-segment guard's case: each write fits a segment)."""
    a, b, snd = sender(nodelay=False, congestion_control="newreno", delayed_ack=False)
    assert snd.write(b"a" * 100) == 100
    first = output(snd)
    assert [len(s.payload) for s in first] == [100]
    assert snd.write(b"b" * 100) == 100
    assert snd.nagle_holds(snd.snd_nxt)
    assert output(snd) == []  # held: 100 bytes are unacknowledged
    assert snd.sndbuf.end - snd.snd_nxt == 100
    acknowledge(a, b, first, NOW + 0.01)
    assert snd.snd_una == snd.snd_nxt and not snd.nagle_holds(snd.snd_nxt)
    assert [bytes(s.payload) for s in output(snd, NOW + 0.01)] == [b"b" * 100]


def test_nagle_holds_the_short_tail_of_a_long_write():
    """The general loop: full segments go, the tail smaller than an MSS
    waits for them to be acknowledged."""
    a, b, snd = sender(nodelay=False, congestion_control="newreno", delayed_ack=False)
    mss = snd.mss
    snd.write(bytes(2 * mss + 100))
    sent = output(snd)
    assert [len(s.payload) for s in sent] == [mss, mss]
    assert snd.sndbuf.end - snd.snd_nxt == 100
    acknowledge(a, b, sent, NOW + 0.01)
    assert [len(s.payload) for s in output(snd, NOW + 0.01)] == [100]


@pytest.mark.parametrize("size", [100, 1])
def test_nodelay_sends_small_segments_at_once(size):
    a, b, snd = sender(nodelay=True, congestion_control="newreno")
    mss = snd.mss
    snd.write(bytes(size))
    assert len(output(snd)) == 1
    assert not snd.nagle_holds(snd.snd_nxt)  # unacknowledged data, yet nothing holds
    snd.write(bytes(mss + size))
    assert [len(s.payload) for s in output(snd)] == [mss, size]


# ------------------------------------------------------------------- SWS
def test_sender_sws_avoidance_holds_a_sliver_of_window():
    """RFC 9293 3.8.6.2.1: when the peer's window allows less than an MSS
    of what is waiting, the sliver goes only if it is at least half the
    largest window the peer has offered."""
    a, b, snd = sender(mss=1000, window_size=1000, autotune=False, congestion_control="newreno",
                       delayed_ack=False)
    assert snd.mss == 1000 and snd.max_snd_wnd == 1000
    snd.write(bytes(3000))
    snd.update_window(snd.snd_wl1, snd.snd_wl2, 400)  # 400 < 1000 // 2
    assert snd.sws_holds(400, 0, snd.cwnd())
    assert output(snd) == []
    # Nothing in flight and a useless window: the persist timer probes it.
    assert a.conn.deadline("persist") is not None
    snd.update_window(snd.snd_wl1, snd.snd_wl2, 600)  # at least half: it goes
    assert not snd.sws_holds(600, 0, snd.cwnd())
    sent = output(snd)
    assert [len(s.payload) for s in sent] == [600]
    assert a.conn.deadline("persist") is None  # data left: no probing


def test_a_window_opening_from_zero_ends_persist_probing():
    """The SND.WL1/WL2 rule's window update (RFC 9293 3.10.7.4) and the
    persist timer (3.8.6.1): a zero window with data waiting arms the
    timer; the probes count up; the window opening resets both."""
    a, b, snd = sender(congestion_control="newreno")
    snd.update_window(snd.snd_wl1, snd.snd_wl2, 0)
    snd.write(bytes(5000))
    assert output(snd) == []
    at = a.conn.deadline("persist")
    assert at is not None
    a.conn.handle_timer(at)  # a window probe
    assert snd.persist_probes == 1 and a.conn.deadline("persist") is not None
    # An older segment (SND.WL1 ahead of its sequence number) does not count.
    assert not snd.update_window(snd.snd_wl1 - 1, snd.snd_wl2, 50_000)
    assert snd.snd_wnd == 0 and snd.persist_probes == 1
    assert snd.update_window(snd.snd_wl1, snd.snd_wl2, 50_000)
    assert snd.persist_probes == 0 and a.conn.deadline("persist") is None
    assert sum(len(s.payload) for s in output(snd, at)) == 5000


# ---------------------------------------------------------------- pacing
def paced(**config):
    """A sender paced at 1,000 segments a second (the controller's rate, set
    here: NewReno leaves it alone) with an empty bucket at NOW."""
    a, b, snd = sender(congestion_control="newreno", send_buffer_size=8 << 20, **config)
    rate = a.conn.cc.pacing_rate = 1000.0 * snd.mss
    a.conn.cc.cwnd = 1000 * snd.mss  # the pacer alone holds it back
    snd._pacing_tokens = 0.0
    snd._pacing_time = NOW
    return a, b, snd, rate


def test_the_token_bucket_fills_at_the_pacing_rate_up_to_the_burst():
    a, b, snd, rate = paced()
    dt = 0.25 * snd.pacing_burst() / rate
    assert snd.pacing_budget(NOW + dt) == pytest.approx(dt * rate)
    assert snd.pacing_budget(NOW + 10.0) == snd.pacing_burst()  # capped: no wait was pending
    assert snd.pacing_burst() >= 10 * snd.mss


@pytest.mark.parametrize("size_mss", [0.5, 3])  # the one-segment guard, the general loop
def test_the_pacer_stores_what_is_left_and_waits_for_what_is_missing(size_mss):
    a, b, snd, rate = paced()
    mss = snd.mss
    size = int(size_mss * mss)
    snd.write(bytes(size))
    tokens = 0.25 * mss if size < mss else 1.5 * mss
    snd._pacing_tokens = tokens
    sent = output(snd)
    if size < mss:
        # Not enough for the message: nothing leaves, the wait is for the rest.
        assert sent == []
        missing = size - tokens
    else:
        assert [len(s.payload) for s in sent] == [mss]
        missing = mss - (tokens - mss)
    assert snd._pacing_due == pytest.approx(NOW + missing / rate)
    assert a.conn.deadline("pacing") == snd._pacing_due
    assert snd._pacing_tokens == pytest.approx(tokens - sum(len(s.payload) for s in sent))
    # On time (a tenth of a microsecond past: the due time is rounded), the
    # tokens are there and exactly the waiting segment goes.
    later = snd._pacing_due + 1e-7
    assert [len(s.payload) for s in output(snd, later)] == [min(size, mss)]


def test_a_small_message_within_the_budget_leaves_and_keeps_the_rest():
    a, b, snd, rate = paced()
    snd._pacing_tokens = 1000.0
    snd.write(bytes(100))
    assert [len(s.payload) for s in output(snd)] == [100]
    assert snd._pacing_tokens == pytest.approx(900.0)
    assert a.conn.deadline("pacing") is None


# ------------------------------------------------------ the app-limited mark
def test_a_sender_with_nothing_left_and_room_in_the_window_marks_samples_app_limited():
    """Rate samples taken until what is in flight now is delivered measure
    the application, not the path (the delivery-rate estimator's mark)."""
    a, b, snd = sender(congestion_control="newreno", nodelay=True)
    snd.write(bytes(100))
    output(snd)
    assert snd._app_limited_until == snd.delivered + 100  # pipe 100 < cwnd
    snd.write(bytes(100))
    output(snd)
    assert snd._sent_log[-1][5] is True  # this record's sample is app-limited
    assert snd._app_limited_until == snd.delivered + 200


def test_a_window_limited_sender_is_not_app_limited():
    a, b, snd = sender(congestion_control="newreno", delayed_ack=False)
    acknowledge(a, b, output(snd), NOW)  # (the handshake's marks delivered)
    mark = snd._app_limited_until
    snd.write(bytes(100 * snd.mss))  # more than the window
    sent = output(snd, NOW + 0.01)
    assert sum(len(s.payload) for s in sent) == snd.cwnd()
    assert snd._app_limited_until == mark  # data is waiting: no new mark
    assert all(rec[5] is bool(mark) for rec in snd._sent_log)


@pytest.mark.parametrize("runs", [False, True])
def test_a_sender_stopped_by_the_peers_receive_window_marks_samples_app_limited(runs):
    """With data waiting and room in the congestion window, the peer's
    receive window stops the sender: what it delivers then measures the
    peer's application (its reads open the window), not the path, so the
    samples are marked as RFC 9438 reads application-limited. Both the
    segment loop and the run path."""
    a, b, snd = sender(congestion_control="newreno", window_size=65535, autotune=False,
                       delayed_ack=False, initial_window=100)
    acknowledge(a, b, output(snd), NOW)
    snd.write(bytes(100 * snd.mss))
    sent = output(snd, NOW + 0.01, runs)
    assert sent and snd.snd_nxt == snd.snd_una + snd.snd_wnd // snd.mss * snd.mss  # the window's whole segments
    assert snd.pipe() < snd.cwnd()  # the congestion window had room
    assert snd._app_limited_until == snd.delivered + snd.pipe()


def test_bbr_stays_in_startup_while_the_peers_receive_window_limits_it():
    """Rounds whose delivery rate the peer's window capped do not count as
    BBR's bandwidth plateau: Startup goes on, so that the window's growth
    (autotuning) is met at Startup's pace instead of probe_bw's 1.25x per
    cycle. Without the mark it left Startup after five such rounds."""
    a, b, snd = sender(congestion_control="bbr", window_size=65535, autotune=False,
                       delayed_ack=False, initial_window=100)
    acknowledge(a, b, output(snd), NOW)
    snd.write(bytes(2000 * snd.mss))
    now = NOW
    for _ in range(12):
        now += 0.001
        sent = output(snd, now)
        assert sum(len(s.payload) for s in sent) < snd.cwnd()  # the peer's window limits, every round
        now += 0.001
        acknowledge(a, b, sent, now)
        assert b.conn.recv(1 << 20)  # the peer reads, its window reopens
        deliver(a, b.out(now), now)
    assert a.conn.cc.state == "startup"


def test_the_mark_is_set_on_an_output_pass_that_finds_nothing_to_send():
    a, b, snd = sender(congestion_control="newreno", nodelay=True)
    snd.write(bytes(300))
    output(snd)
    snd._app_limited_until = 0
    assert output(snd, NOW + 0.001) == []  # nothing to send: only the bookkeeping
    assert snd._app_limited_until == snd.delivered + 300


def test_the_mark_ends_once_the_data_it_covers_is_delivered():
    a, b, snd = sender(congestion_control="newreno", nodelay=True, delayed_ack=False)
    snd.write(bytes(100))
    sent = output(snd)
    mark = snd._app_limited_until
    assert mark == snd.delivered + 100
    snd.write(bytes(100 * snd.mss))  # now window-limited: the mark stays
    more = output(snd)
    assert snd._app_limited_until == mark
    acknowledge(a, b, sent + more, NOW + 0.01)
    assert snd.delivered > mark and snd._app_limited_until == 0


# ------------------------------------------------------------- idle restart
def test_sending_after_idle_restarts_the_delivery_rate_interval():
    """A transmission with nothing in flight starts the delivery-rate
    interval anew: the time the connection sat idle is not counted as
    time the path took to deliver."""
    a, b, snd = sender(congestion_control="newreno", nodelay=True, delayed_ack=False)
    snd.write(bytes(100))
    sent = output(snd)
    acknowledge(a, b, sent, NOW + 0.01)
    assert snd.pipe() == 0
    later = NOW + 5.0
    snd.write(bytes(100))
    output(snd, later)
    rec = snd._sent_log[-1]
    assert rec[2] == later and rec[4] == later and rec[6] == later  # sent, delivered-time, first-sent
    # With data in flight, the interval runs on.
    snd.write(bytes(100))
    output(snd, later + 0.001)
    rec = snd._sent_log[-1]
    assert rec[2] == later + 0.001 and rec[4] == later and rec[6] == later


# ------------------------------------------------------------ PSH and FIN
def test_psh_marks_the_segment_that_empties_the_buffer_and_fin_rides_on_the_last():
    a, b, snd = sender(congestion_control="newreno", nodelay=True)
    mss = snd.mss
    snd.write(bytes(2 * mss + 10))
    sent = output(snd)
    assert [s.flags for s in sent] == [ACK, ACK, ACK | PSH]
    snd.write(bytes(10))
    a.conn.shutdown_write(NOW)
    (last,) = output(snd)
    assert last.flags == ACK | PSH | FIN and len(last.payload) == 10
    assert snd.fin_sent and snd.snd_nxt == snd.sndbuf.end + 1
    assert output(snd) == []  # the FIN is out once
