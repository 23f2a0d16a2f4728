"""Issue 12 finding 13: a scan cannot tell live connection IDs from dead ones.

Datagrams to made-up connection IDs each drew a RST while those to a live
ID drew nothing, so live IDs could be found by scanning. Now a datagram
that no connection takes gets the same RST whether its ID exists or not,
and RSTs are rate-limited (a token bucket of `reset_burst`, refilled at
`reset_rate` per second)."""

import random

from gannet.config import Config
from gannet.core.endpoint import Endpoint
from gannet.core.states import State
from gannet.sim import LinkConfig, Simulator
from gannet.wire import Segment, decode, encode
from gannet.wire.segment import ACK, PSH, RST

SERVER = ("10.0.0.2", 2000)
CLIENT = ("10.0.0.1", 1000)
SCANNER = ("10.6.6.6", 666)


def live_server():
    sim = Simulator(seed=21, default_link=LinkConfig(delay=0.002))
    server = sim.add_node(SERVER, Endpoint(Config(), rng=sim.make_rng("server")))
    client = sim.add_node(CLIENT, Endpoint(Config(), rng=sim.make_rng("client")))
    server.listen()
    conn = client.connect(SERVER, sim.now)
    conn.send(b"x" * 5000)
    sim.run(until=0.5)
    peer = server.accept()
    assert peer is not None and peer.state == State.ESTABLISHED
    return sim, server, conn, peer


def answer(server: Endpoint, raw: bytes, now: float):
    """What the server sends the scanner for one probe: the decoded replies
    with the connection ID they answer stripped out (it is the probed one)."""
    server.receive_datagram(raw, SCANNER, now)
    out = []
    for data, addr in server.datagrams_to_send(now):
        if addr != SCANNER:
            continue  # (a challenge ACK to the real peer, say: not the scanner's to see)
        dst, _, seg = decode(data)
        out.append((dst, seg.flags, seg.seq, seg.ack, seg.payload))
    return out


def probes(cid: int, rng: random.Random):
    """The probes a scanner sends to ID `cid`: a short-form data segment and
    a long-form one naming a made-up source ID, with made-up numbers."""
    seq, ack = rng.getrandbits(32), rng.getrandbits(32)
    short = encode(cid, 0x77, Segment(seq, ack, ACK | PSH, 100, b"probe", tsval=rng.getrandbits(32), tsecr=0))
    long_ = encode(cid, 0x77, Segment(seq, ack, ACK | PSH, 100, b"probe"))
    assert decode(short)[1] is None and decode(long_)[1] == 0x77
    return [short, long_]


def test_live_and_dead_ids_get_the_same_answer():
    sim, server, conn, peer = live_server()
    rng = random.Random(22)
    now = sim.now
    answers_dead, answers_live = [], []
    for i in range(10):
        dead = rng.getrandbits(32) | 1
        assert dead not in {c.local_cid for c in server.connections}
        for raw in probes(dead, random.Random(i)):
            answers_dead.append(answer(server, raw, now))
        for raw in probes(peer.local_cid, random.Random(i)):
            answers_live.append(answer(server, raw, now))
        now += 0.01
    # Same probes (same numbers), same replies: one RST each, same shape.
    assert answers_dead == answers_live
    assert all(len(a) == 1 and a[0][1] & RST for a in answers_live)
    # And the live connection did not notice.
    sim.run(until=sim.now + 0.5)
    assert peer.state == State.ESTABLISHED and conn.state == State.ESTABLISHED
    assert peer.remote_addr == CLIENT
    conn.send(b"still here")
    sim.run(until=sim.now + 0.5)
    assert peer.recv(1 << 20).endswith(b"still here")


def test_resets_to_unknown_ids_are_rate_limited():
    ep = Endpoint(Config(reset_rate=100.0, reset_burst=20), rng=random.Random(23))
    rng = random.Random(24)

    def scan(n, now):
        for _ in range(n):
            raw = encode(rng.getrandbits(32) | 1, 0x77, Segment(1, rng.getrandbits(32), ACK, 0, b"x"))
            ep.receive_datagram(raw, SCANNER, now)
        return sum(1 for d, _ in ep.datagrams_to_send(now) if decode(d)[2].flags & RST)

    assert scan(200, 0.0) == 20  # the burst
    assert scan(200, 0.1) == 10  # a tenth of a second at 100 per second
    assert scan(200, 100.0) == 20  # a long pause refills only the burst
    assert ep.stats.resets_rate_limited == 3 * 200 - 50
    assert ep.stats.unknown_connection == 600
