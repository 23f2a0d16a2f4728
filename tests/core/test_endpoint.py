"""The endpoint: demultiplexing, listen backlog, RST for strangers, hostile input."""

import random

from gannet.config import Config
from gannet.core.endpoint import Endpoint
from gannet.core.states import State
from gannet.sim import LinkConfig, Simulator
from gannet.wire import Segment, decode, encode

A = ("10.0.0.1", 1000)
B = ("10.0.0.2", 2000)


def two_endpoints(seed=1, link=None, config=None):
    sim = Simulator(seed=seed, default_link=link or LinkConfig(delay=0.005))
    a = sim.add_node(A, Endpoint(config or Config(), rng=sim.make_rng("a")))
    b = sim.add_node(B, Endpoint(config or Config(), rng=sim.make_rng("b")))
    return sim, a, b


def test_connect_to_nothing_is_refused():
    sim, a, b = two_endpoints()
    conn = a.connect(B, sim.now)
    sim.run(until=5)
    assert conn.state == State.CLOSED
    assert isinstance(conn.error, ConnectionRefusedError)
    assert b.stats.resets_sent == 1


def test_many_connections_share_one_endpoint():
    sim, a, b = two_endpoints()
    b.listen(100)
    conns = [a.connect(B, sim.now) for _ in range(30)]
    for i, c in enumerate(conns):
        c.send(f"client {i}".encode())
    sim.run(until=2)
    accepted = []
    while (c := b.accept()) is not None:
        accepted.append(c)
    assert len(accepted) == 30
    assert sorted(c.recv(100) for c in accepted) == sorted(f"client {i}".encode() for i in range(30))
    assert len({c.local_cid for c in accepted}) == 30


def test_backlog_limits_unaccepted_connections():
    sim, a, b = two_endpoints(config=Config(timeout=5.0, max_retries=1))
    b.listen(3)
    conns = [a.connect(B, sim.now) for _ in range(5)]
    sim.run(until=1)
    assert sum(c.state == State.ESTABLISHED for c in conns) == 3
    assert b.stats.syn_dropped_backlog == 2
    # Accepting makes room; the dropped clients' SYN retransmissions get in.
    while b.accept():
        pass
    sim.run(until=8)
    assert all(c.state == State.ESTABLISHED for c in conns)


def test_segment_for_unknown_connection_gets_rst():
    sim, a, b = two_endpoints()
    raw = encode(0x1234, 0x99, Segment(100, 200, 0x18, 10, b"data"))
    b.receive_datagram(raw, A, 0.0)
    ((reply, addr),) = b.datagrams_to_send(0.0)
    dst, src, rst = decode(reply)
    assert addr == A and dst == 0x99 and rst.flags & 0x04 and rst.seq == 200


def test_short_form_segment_for_unknown_connection_gets_rst_to_id_zero():
    # The short form names no source connection: the RST goes to ID 0 and
    # carries, as its source, the ID the segment was sent to.
    sim, a, b = two_endpoints()
    raw = encode(0x1234, 0x99, Segment(100, 200, 0x18, 10, b"data", tsval=5, tsecr=0))
    assert decode(raw)[1] is None  # short form
    b.receive_datagram(raw, A, 0.0)
    ((reply, addr),) = b.datagrams_to_send(0.0)
    dst, src, rst = decode(reply)
    assert addr == A and (dst, src) == (0, 0x1234) and rst.flags & 0x04 and rst.seq == 200


def test_a_restarted_peer_resets_the_connection_it_forgot():
    """The server's process restarts and loses the connection: the client's
    next short-form segment draws a RST to ID 0, and the client finds its
    connection by the peer's ID and address and ends it at once."""
    sim, a, b = two_endpoints()
    b.listen(4)
    conn = a.connect(B, sim.now)
    other = a.connect(B, sim.now)  # a second connection to the same server is not touched
    sim.run(until=1)
    assert conn.state == State.ESTABLISHED and other.state == State.ESTABLISHED
    sim.remove_node(b)
    fresh = sim.add_node(B, Endpoint(Config(), rng=sim.make_rng("b2")))
    fresh.listen(1)
    conn.send(b"are you there?")
    sim.run(until=2)
    assert conn.state == State.CLOSED
    assert isinstance(conn.error, ConnectionResetError)
    assert fresh.stats.resets_sent == 1
    assert other.state == State.ESTABLISHED
    # A RST to ID 0 naming no connection of ours is dropped and counted.
    forged = encode(0, 0x5A5A5A5A, Segment(1, 0, 0x04, 0))
    before = a.stats.unknown_connection
    a.receive_datagram(forged, B, sim.now)
    assert a.stats.unknown_connection == before + 1 and other.state == State.ESTABLISHED


def test_hostile_datagrams_are_counted_and_harmless():
    sim, a, b = two_endpoints(link=LinkConfig(delay=0.002))
    b.listen()
    good = a.connect(B, sim.now)
    payload = random.Random(3).randbytes(300_000)
    sent = [0]

    def pump():
        while sent[0] < len(payload):
            n = good.send(payload[sent[0] : sent[0] + 65536])
            if not n:
                break
            sent[0] += n

    rng = random.Random(7)
    junk_count = 0
    for t in range(200):
        sim.call_at(0.01 + t * 0.005, pump)
        kind = t % 4
        if kind == 0:
            junk = rng.randbytes(rng.randrange(0, 1500))
        elif kind == 1:
            junk = encode(0, 5, Segment(1, 0, 0x02))[: rng.randrange(1, 28)]  # always cut short
        elif kind == 2:
            raw = bytearray(encode(rng.getrandbits(32), 5, Segment(1, 2, 0x10, 1, b"x" * 50)))
            raw[rng.randrange(len(raw))] ^= 0xFF
            junk = bytes(raw)
        else:
            junk = b"\x01" * rng.randrange(28, 60)
        junk_count += 1
        sim.call_at(0.01 + t * 0.005, b.receive_datagram, junk, ("10.6.6.6", 666), 0.01 + t * 0.005)
    sim.run(until=10)
    server = b.accept()
    got = server.recv(1 << 20)
    while len(got) < len(payload) and (more := server.recv(1 << 20)):
        got += more
    assert got == payload
    assert b.stats.malformed_dropped == junk_count
    assert server.state == State.ESTABLISHED and good.state == State.ESTABLISHED


def test_simultaneous_open_through_endpoints():
    sim, a, b = two_endpoints()
    ca = a.connect(B, sim.now)
    cb = b.connect(A, sim.now)
    sim.run(until=2)
    assert ca.state == cb.state == State.ESTABLISHED
    assert ca.remote_cid == cb.local_cid and cb.remote_cid == ca.local_cid
