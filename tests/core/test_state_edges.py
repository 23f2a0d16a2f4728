"""The rarer RFC 9293 transitions and RFC 5961 checks, at explicit times.

test_states.py covers the common paths (handshake, four-way and simultaneous
close, half-close, RST and SYN challenges); these are the edges: refusal and
bad ACKs in SYN-SENT, LISTEN's answers, SYN-RECEIVED's retransmission and
close, FIN-WAIT-1 straight to TIME-WAIT, TIME-WAIT's re-ACK, LAST-ACK's lost
FIN, old ACKs and the challenge-ACK rate limit.
"""

import pytest

from gannet.config import Config
from gannet.core.connection import CHALLENGE_ACK_LIMIT
from gannet.core.states import State
from gannet.wire.segment import ACK, FIN, RST, SYN, Segment

from corepair import Side, deliver, established_pair, exchange

M32 = 2**32


def syn_sent(config: Config | None = None) -> Side:
    a = Side("b", 1, config or Config(), 1)
    a.conn.connect(0.0)
    a.out(0.0)
    a.event_types()
    return a


def syn_received(config: Config | None = None) -> tuple[Side, Side, Segment]:
    cfg = config or Config()
    a, b = Side("b", 1, cfg, 1), Side("a", 2, cfg, 2)
    a.conn.connect(0.0)
    (syn,) = a.out(0.0)
    b.conn.accept_syn(syn, 0.01)
    assert b.conn.state == State.SYN_RECEIVED
    return a, b, syn


# ------------------------------------------------------------------ SYN-SENT
def test_syn_sent_rst_acking_our_syn_means_refused():
    a = syn_sent()
    deliver(a, [Segment(0, (a.conn.iss + 1) % M32, RST | ACK)], 0.01)
    assert a.conn.state == State.CLOSED
    assert isinstance(a.conn.error, ConnectionRefusedError)
    assert a.event_types() == ["ConnectionTerminated"]
    assert a.out(0.01) == []  # a RST is never answered


def test_syn_sent_ignores_rst_without_an_acceptable_ack():
    a = syn_sent()
    deliver(a, [Segment(0, 0, RST)], 0.01)  # no ACK: cannot be checked, so ignored
    deliver(a, [Segment(0, (a.conn.iss + 7) % M32, RST | ACK)], 0.02)  # acks what we never sent
    assert a.conn.state == State.SYN_SENT and a.conn.error is None
    assert a.out(0.02) == []
    assert a.conn.stats.dropped_segments == 1


def test_syn_sent_answers_a_bad_ack_with_rst_and_keeps_waiting():
    a = syn_sent()
    bogus_ack = (a.conn.iss + 100) % M32
    deliver(a, [Segment(5555, bogus_ack, ACK)], 0.01)
    (rst,) = a.out(0.01)
    assert rst.flags == RST and rst.seq == bogus_ack  # RFC 9293 3.10.7.3: <SEQ=SEG.ACK><CTL=RST>
    assert a.conn.state == State.SYN_SENT


def test_close_in_syn_sent_goes_to_closed_quietly():
    a = syn_sent()
    a.conn.close(0.5)
    assert a.conn.state == State.CLOSED and a.conn.error is None
    assert a.out(0.5) == []
    assert a.conn.get_timer() is None  # no SYN retransmission after the close


# -------------------------------------------------------------------- LISTEN
def test_listen_answers_an_ack_with_rst_and_ignores_rst():
    b = Side("a", 2, Config(), 2)
    b.conn.accept_syn(Segment(10, 777, ACK), 0.0)
    (rst,) = b.out(0.0)
    assert rst.flags == RST and rst.seq == 777
    assert b.conn.state == State.LISTEN
    b.conn.on_segment(Segment(10, 0, RST), 0.1)
    assert b.out(0.1) == [] and b.conn.state == State.LISTEN


# -------------------------------------------------------------- SYN-RECEIVED
def test_syn_received_answers_a_retransmitted_syn_with_the_same_syn_ack():
    a, b, syn = syn_received()
    (first,) = b.out(0.01)
    deliver(b, [syn], 0.5)  # our SYN,ACK was lost; the client tried again
    (again,) = b.out(0.5)
    assert again.flags == SYN | ACK
    assert (again.seq, again.ack) == (first.seq, first.ack)
    assert b.conn.state == State.SYN_RECEIVED


def test_syn_received_syn_ack_is_retransmitted_on_timeout():
    a, b, syn = syn_received(Config(timeout=0.3))
    (first,) = b.out(0.01)
    deadline = b.conn.get_timer()
    assert deadline == pytest.approx(0.31)
    b.conn.handle_timer(deadline)
    (again,) = b.out(deadline)
    assert again.flags == SYN | ACK and again.seq == first.seq


def test_rst_in_syn_received_forgets_a_passive_connection_without_error():
    a, b, syn = syn_received()
    b.out(0.01)
    deliver(b, [Segment((syn.seq + 1) % M32, 0, RST)], 0.02)
    assert b.conn.state == State.CLOSED and b.conn.error is None


def test_close_in_syn_received_finishes_the_handshake_then_sends_fin():
    a, b, syn = syn_received()
    b.conn.close(0.01)
    assert b.conn.state == State.FIN_WAIT_1
    out = b.out(0.01)
    assert [s.flags & (SYN | FIN) for s in out] == [SYN, FIN]  # the SYN,ACK, then the FIN after it
    assert out[1].seq == (out[0].seq + 1) % M32
    deliver(a, out, 0.02)
    assert a.conn.eof and a.conn.state == State.CLOSE_WAIT
    exchange(a, b, 0.02)
    assert b.conn.state == State.FIN_WAIT_2


# ---------------------------------------------------------- closing states
def test_fin_that_also_acks_our_fin_goes_from_fin_wait_1_to_time_wait():
    a, b = established_pair()
    a.conn.close(1.0)
    (fin,) = a.out(1.0)
    deliver(b, [fin], 1.01)
    b.conn.close(1.01)  # before b answers: its ACK of our FIN rides on its FIN
    (fin_ack,) = b.out(1.01)
    assert fin_ack.flags & (FIN | ACK) == FIN | ACK and fin_ack.ack == (fin.seq + 1) % M32
    assert a.conn.state == State.FIN_WAIT_1
    deliver(a, [fin_ack], 1.02)
    assert a.conn.state == State.TIME_WAIT
    assert a.conn.get_timer() == pytest.approx(1.02 + 2 * a.conn.config.msl)


def test_time_wait_acks_a_retransmitted_fin_and_restarts_2msl():
    a, b = established_pair()
    a.conn.close(1.0)
    deliver(b, a.out(1.0), 1.01)
    deliver(a, b.out(1.01), 1.02)
    b.conn.close(1.5)
    (b_fin,) = b.out(1.5)
    deliver(a, [b_fin], 1.51)
    assert a.conn.state == State.TIME_WAIT
    a.out(1.51)  # this ACK is lost: b sends its FIN again
    deliver(a, [b_fin], 2.0)
    (ack,) = a.out(2.0)
    assert ack.flags == ACK and ack.ack == (b_fin.seq + 1) % M32
    assert a.conn.get_timer() == pytest.approx(2.0 + 2 * a.conn.config.msl)
    assert a.conn.state == State.TIME_WAIT


def test_last_ack_resends_a_lost_fin_and_closes_on_its_ack():
    a, b = established_pair(Config(tlp=False))
    a.conn.close(1.0)
    deliver(b, a.out(1.0), 1.01)
    deliver(a, b.out(1.01), 1.02)
    b.conn.close(1.5)
    assert b.conn.state == State.LAST_ACK
    (lost,) = b.out(1.5)
    deadline = b.conn.get_timer()
    assert deadline == pytest.approx(1.5 + b.conn.rtt.current_rto())
    b.conn.handle_timer(deadline)
    (again,) = b.out(deadline)
    assert again.flags & FIN and again.seq == lost.seq
    deliver(a, [again], deadline + 0.01)
    deliver(b, a.out(deadline + 0.01), deadline + 0.02)
    assert b.conn.state == State.CLOSED and b.conn.error is None


# ------------------------------------------------------------- RFC 5961
def test_an_ack_older_than_the_largest_window_gets_a_challenge_ack():
    a, b = established_pair()
    a.conn.send(b"x" * 100)
    deliver(b, a.out(1.0), 1.01)
    deliver(a, b.out(1.05), 1.06)
    too_old = (a.conn.snd_una - a.conn.max_snd_wnd - 1000) % M32
    deliver(a, [Segment(b.conn.snd_nxt % M32, too_old, ACK, 100)], 1.1)
    (challenge,) = a.out(1.1)
    assert challenge.flags == ACK and challenge.ack == b.conn.snd_nxt % M32
    assert a.conn.stats.challenge_acks == 1
    assert a.conn.state == State.ESTABLISHED


def test_an_ack_for_data_never_sent_is_dropped_and_answered():
    a, b = established_pair()
    snd_wnd = a.conn.snd_wnd
    future = (a.conn.snd_nxt + 5000) % M32
    deliver(a, [Segment(b.conn.snd_nxt % M32, future, ACK, 1)], 1.0)
    (ack,) = a.out(1.0)
    assert ack.flags == ACK and ack.seq == a.conn.snd_nxt % M32
    assert a.conn.snd_wnd == snd_wnd  # the bogus segment's window was not taken
    assert a.conn.stats.dropped_segments == 1


def test_challenge_acks_are_rate_limited_per_second():
    a, b = established_pair()
    in_window = (b.conn.snd_nxt + 100) % M32
    for i in range(CHALLENGE_ACK_LIMIT + 50):
        deliver(a, [Segment(in_window, 0, RST)], 1.0 + i * 1e-4)
    assert a.conn.stats.challenge_acks == CHALLENGE_ACK_LIMIT
    assert a.conn.state == State.ESTABLISHED
    deliver(a, [Segment(in_window, 0, RST)], 2.5)  # a new second
    assert a.conn.stats.challenge_acks == CHALLENGE_ACK_LIMIT + 1


def test_rst_is_accepted_in_closing_states_without_an_error():
    a, b = established_pair()
    b.conn.close(1.0)
    deliver(a, b.out(1.0), 1.01)
    a.conn.close(1.02)
    assert a.conn.state == State.LAST_ACK
    deliver(a, [Segment(b.conn.snd_nxt % M32, 0, RST)], 1.03)
    assert a.conn.state == State.CLOSED and a.conn.error is None
