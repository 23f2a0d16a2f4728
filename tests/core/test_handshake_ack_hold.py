"""The client's handshake ACK held for its first data (`hold_handshake_ack`).

An adapter whose application usually writes as soon as the connection is up
(asyncio's open_connection) sets it, so that the request carries the ACK and
the bare ACK datagram is saved at both ends. The held ACK still goes out alone
when the adapter calls `release_ack()` or, at the latest, on the timer.
"""

from __future__ import annotations

from gannet.config import Config
from gannet.core.events import ConnectionEstablished
from gannet.core.states import State
from gannet.wire.segment import ACK, PSH, SYN

from corepair import Side, deliver


def handshake(hold: bool, rtt: float = 0.01):
    config = Config().with_(pmtud=False)
    a = Side("b", 1, config, 1)
    b = Side("a", 2, config, 2)
    a.conn.hold_handshake_ack = hold
    a.conn.connect(0.0)
    b.conn.accept_syn(a.out(0.0)[0], rtt / 2)
    synack = b.out(rtt / 2)
    assert [s.flags for s in synack] == [SYN | ACK]
    deliver(a, synack, rtt)
    assert a.conn.state == State.ESTABLISHED
    assert "ConnectionEstablished" in a.event_types()
    return a, b


def test_without_hold_the_ack_leaves_at_once():
    a, _ = handshake(hold=False)
    out = a.out(0.01)
    assert [s.flags for s in out] == [ACK] and not out[0].payload


def test_first_data_carries_the_held_ack():
    a, b = handshake(hold=True)
    assert a.out(0.01) == []  # nothing alone
    assert a.conn.send(b"request") == 7
    out = a.out(0.011)
    assert len(out) == 1 and out[0].flags & ACK and out[0].payload == b"request"
    assert out[0].ack == (b.conn.iss + 1) & 0xFFFFFFFF
    deliver(b, out, 0.015)
    assert b.conn.state == State.ESTABLISHED  # the ACK completed the server's handshake
    assert b.conn.recv(100) == b"request"
    assert not a.conn.release_ack()  # the data took the held ACK along


def test_release_sends_the_held_ack_alone():
    a, b = handshake(hold=True)
    assert a.out(0.01) == []
    assert a.conn.release_ack()
    out = a.out(0.0105)
    assert [s.flags for s in out] == [ACK] and not out[0].payload
    assert not a.conn.release_ack()  # nothing owed any more
    deliver(b, out, 0.015)
    assert b.conn.state == State.ESTABLISHED


def test_held_ack_goes_on_the_timer_at_the_latest():
    a, b = handshake(hold=True)
    assert a.out(0.01) == []
    deadline = a.conn.get_timer()
    # Within an RTO of the SYN-ACK and RFC 1122's 500 ms.
    assert 0.01 < deadline <= 0.01 + min(a.conn.rtt.current_rto(), 0.5)
    a.conn.handle_timer(deadline)
    out = a.out(deadline)
    assert [s.flags for s in out] == [ACK] and not out[0].payload
    deliver(b, out, deadline + 0.005)
    assert b.conn.state == State.ESTABLISHED
    assert [e for e in b.events if isinstance(e, ConnectionEstablished)]


def test_release_before_the_handshake_does_nothing():
    config = Config()
    a = Side("b", 1, config, 1)
    a.conn.hold_handshake_ack = True
    a.conn.connect(0.0)
    assert not a.conn.release_ack()
    assert [s.flags for s in a.out(0.0)] == [SYN]
