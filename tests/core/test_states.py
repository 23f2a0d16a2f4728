"""Per-state unit tests: explicit times, exact segments (RFC 9293)."""

import pytest

from gannet.config import Config
from gannet.core.states import State
from gannet.wire.segment import ACK, FIN, PSH, RST, SYN, Segment

from corepair import Side, deliver, established_pair, exchange


def test_three_way_handshake_segments():
    cfg = Config()
    a, b = Side("b", 1, cfg, 1), Side("a", 2, cfg, 2)
    a.conn.connect(0.0)
    assert a.conn.state == State.SYN_SENT
    (syn,) = a.out(0.0)
    assert syn.flags == SYN and syn.seq == a.conn.iss
    assert syn.mss == cfg.mss and syn.sack_permitted and syn.wscale is not None and syn.tsval is not None
    b.conn.accept_syn(syn, 0.005)
    assert b.conn.state == State.SYN_RECEIVED
    (synack,) = b.out(0.005)
    assert synack.flags == SYN | ACK and synack.ack == (a.conn.iss + 1) % 2**32
    deliver(a, [synack], 0.01)
    assert a.conn.state == State.ESTABLISHED
    assert a.event_types() == ["ConnectionEstablished"]
    (ack,) = a.out(0.01)
    assert ack.flags == ACK and ack.seq == (a.conn.iss + 1) % 2**32 and ack.ack == (b.conn.iss + 1) % 2**32
    deliver(b, [ack], 0.015)
    assert b.conn.state == State.ESTABLISHED
    assert b.event_types() == ["ConnectionEstablished"]
    assert a.conn.sack_ok and a.conn.ts_ok and b.conn.sack_ok and b.conn.ts_ok
    assert a.conn.srtt == pytest.approx(0.01)


def test_simultaneous_open():
    cfg = Config()
    a, b = Side("b", 1, cfg, 1), Side("a", 2, cfg, 2)
    a.conn.connect(0.0)
    b.conn.connect(0.0)
    syn_a, syn_b = a.out(0.0), b.out(0.0)
    deliver(a, syn_b, 0.01)
    deliver(b, syn_a, 0.01)
    assert a.conn.state == b.conn.state == State.SYN_RECEIVED
    synack_a, synack_b = a.out(0.01), b.out(0.01)
    assert synack_a[0].flags == SYN | ACK
    deliver(a, synack_b, 0.02)
    deliver(b, synack_a, 0.02)
    assert a.conn.state == b.conn.state == State.ESTABLISHED


def test_four_way_close_and_time_wait():
    a, b = established_pair()
    a.conn.close(1.0)
    assert a.conn.state == State.FIN_WAIT_1
    (fin,) = a.out(1.0)
    assert fin.flags & FIN
    deliver(b, [fin], 1.01)
    assert b.conn.state == State.CLOSE_WAIT and b.conn.eof
    assert "StreamEnded" in b.event_types()
    deliver(a, b.out(1.01), 1.02)
    assert a.conn.state == State.FIN_WAIT_2
    b.conn.close(1.5)
    assert b.conn.state == State.LAST_ACK
    deliver(a, b.out(1.5), 1.51)
    assert a.conn.state == State.TIME_WAIT
    deliver(b, a.out(1.51), 1.52)
    assert b.conn.state == State.CLOSED and b.conn.error is None
    assert b.event_types()[-1] == "ConnectionTerminated"
    assert a.conn.get_timer() == pytest.approx(1.51 + 2 * a.conn.config.msl)
    a.conn.handle_timer(a.conn.get_timer())
    assert a.conn.state == State.CLOSED and a.conn.error is None


def test_simultaneous_close_goes_through_closing():
    a, b = established_pair()
    a.conn.close(1.0)
    b.conn.close(1.0)
    fa, fb = a.out(1.0), b.out(1.0)
    deliver(a, fb, 1.01)
    deliver(b, fa, 1.01)
    assert a.conn.state == b.conn.state == State.CLOSING
    deliver(a, b.out(1.01), 1.02)
    deliver(b, a.out(1.01), 1.02)
    assert a.conn.state == b.conn.state == State.TIME_WAIT


def test_half_close_lets_the_peer_keep_sending():
    a, b = established_pair()
    a.conn.shutdown_write(1.0)
    now = exchange(a, b, 1.0)
    assert b.conn.state == State.CLOSE_WAIT and a.conn.state == State.FIN_WAIT_2
    with pytest.raises(BrokenPipeError):
        a.conn.send(b"more")
    b.conn.send(b"reply after your FIN")
    exchange(a, b, now)
    assert a.conn.recv(100) == b"reply after your FIN"


def test_rst_with_exact_sequence_resets():
    a, b = established_pair()
    deliver(a, [Segment(b.conn.rcv_nxt * 0 + (b.conn.snd_nxt % 2**32), 0, RST)], 1.0)
    assert a.conn.state == State.CLOSED
    assert isinstance(a.conn.error, ConnectionResetError)


def test_rst_in_window_but_not_exact_gets_challenge_ack():
    a, b = established_pair()
    seq = (b.conn.snd_nxt + 100) % 2**32
    deliver(a, [Segment(seq, 0, RST)], 1.0)
    assert a.conn.state == State.ESTABLISHED
    (challenge,) = a.out(1.0)
    assert challenge.flags == ACK and challenge.ack == b.conn.snd_nxt % 2**32
    assert a.conn.stats.challenge_acks == 1


def test_rst_outside_window_is_ignored():
    a, b = established_pair()
    deliver(a, [Segment((b.conn.snd_nxt + 2**30) % 2**32, 0, RST)], 1.0)
    assert a.conn.state == State.ESTABLISHED
    assert a.out(1.0) == []


def test_syn_on_established_connection_gets_challenge_ack():
    a, b = established_pair()
    deliver(a, [Segment(b.conn.snd_nxt % 2**32, 0, SYN)], 1.0)
    assert a.conn.state == State.ESTABLISHED
    assert [s.flags for s in a.out(1.0)] == [ACK]


def test_abort_sends_rst_and_peer_sees_reset():
    a, b = established_pair()
    a.conn.abort(1.0)
    assert a.conn.state == State.CLOSED
    rst = a.out(1.0)
    assert rst and rst[0].flags & RST
    deliver(b, rst, 1.01)
    assert isinstance(b.conn.error, ConnectionResetError)


def test_data_in_order_out_of_order_and_duplicates():
    a, b = established_pair(Config(nodelay=True))
    a.conn.send(b"A" * 3000)
    segs = a.out(1.0)
    assert [len(s.payload) for s in segs] == [a.conn.mss, a.conn.mss, 3000 - 2 * a.conn.mss]
    assert segs[-1].flags & PSH
    deliver(b, [segs[2], segs[0], segs[0], segs[1]], 1.01)
    assert b.conn.recv(10000) == b"A" * 3000
    assert b.conn.stats.out_of_order_segments == 1
    assert b.conn.stats.duplicate_segments == 1


def test_sack_blocks_describe_the_holes():
    a, b = established_pair()
    a.conn.send(bytes(5 * a.conn.mss))
    segs = a.out(1.0)
    deliver(b, [segs[1], segs[3]], 1.01)
    acks = b.out(1.01)
    sack = acks[-1].sack
    mss = a.conn.mss
    base = segs[0].seq
    # Newest block first (RFC 2018 4).
    assert sack[0] == ((base + 3 * mss) % 2**32, (base + 4 * mss) % 2**32)
    assert sack[1] == ((base + mss) % 2**32, (base + 2 * mss) % 2**32)


def test_delayed_ack_timer_and_every_second_segment():
    a, b = established_pair(Config(ack_delay=0.04))
    a.conn.send(b"x" * 100)
    deliver(b, a.out(1.0), 1.01)
    assert b.out(1.01) == []  # held back
    assert b.conn.get_timer() == pytest.approx(1.05)
    b.conn.handle_timer(1.05)
    assert [s.flags for s in b.out(1.05)] == [ACK]
    a.conn.send(b"y" * 2 * a.conn.mss)
    deliver(b, a.out(2.0), 2.01)
    assert len(b.out(2.01)) == 1  # two full segments: ACK at once


def test_zero_window_then_window_update():
    cfg = Config(window_size=8 * 1400, mss=1400)
    a, b = established_pair(cfg)
    a.conn.send(bytes(40_000))
    now = exchange(a, b, 1.0)
    assert b.conn.readable_bytes >= 8 * 1400 - a.conn.mss
    assert a.conn.snd_nxt < a.conn.snd.data_end()
    # The sender probes the closed window instead of giving up.
    deadline = a.conn.get_timer()
    assert deadline is not None
    a.conn.handle_timer(deadline)
    probes = a.out(deadline)
    assert probes and a.conn.stats.window_probes == 1
    # Reading opens the window; the receiver says so, and data flows again.
    got = b.conn.recv(1 << 20)
    now = exchange(a, b, deadline)
    while len(got) < 40_000:
        got += b.conn.recv(1 << 20)
        now = exchange(a, b, now + 0.01)
    assert got == bytes(40_000)


def test_window_update_waits_for_the_reply_unless_the_peer_needs_it():
    """The first read after the handshake opens the window from the SYN's
    64 KB to the autotuned size. A peer that sent a small request is not
    waiting for that: the update rides on the reply. A peer that used most
    of its window may be: the update goes at once."""
    a, b = established_pair(rtt=0.01)
    t = 1.0
    a.conn.send(b"request\n")
    deliver(b, a.out(t), t + 0.005)
    assert b.conn.recv(100) == b"request\n"
    assert b.out(t + 0.005) == []  # no pure ACK just for the window
    b.conn.send(b"reply\n")
    (reply,) = b.out(t + 0.006)
    assert reply.payload == b"reply\n" and reply.ack == a.conn.snd_nxt
    assert reply.wnd << b.conn.rcv_wscale > 0xFFFF  # the opened window, on the reply
    deliver(a, [reply], t + 0.011)
    # Without a reply, the delayed ACK carries it.
    a.conn.send(b"another\n")
    deliver(b, a.out(t + 0.1), t + 0.105)
    b.conn.recv(100)
    assert b.out(t + 0.105) == []
    deadline = b.conn.get_timer()
    assert deadline is not None and deadline <= t + 0.105 + b.conn.config.ack_delay + 1e-9
    b.conn.handle_timer(deadline)
    (ack,) = b.out(deadline)
    assert not ack.payload and ack.ack == a.conn.snd_nxt


def test_window_update_is_immediate_when_the_peer_used_most_of_its_window():
    cfg = Config(window_size=64 * 1400, mss=1400)
    a, b = established_pair(cfg, rtt=0.01)
    a.conn.send(bytes(200_000))
    now = exchange(a, b, 1.0)  # the receiver does not read: the window closes
    assert b.conn.readable_bytes >= 60 * 1400
    b.conn.recv(1 << 20)
    (update,) = b.out(now)  # at once, no timer
    assert not update.payload and update.wnd > 0
