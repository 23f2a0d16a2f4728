"""The endpoint's lazy timer heap: exact deadlines, about one entry per connection."""

from gannet.config import Config
from gannet.core.endpoint import Endpoint
from gannet.sim import LinkConfig, Simulator

A = ("10.0.0.1", 1000)
B = ("10.0.0.2", 2000)


def pair(config):
    sim = Simulator(seed=3, default_link=LinkConfig(delay=0.002))
    a = sim.add_node(A, Endpoint(config, rng=sim.make_rng("a")))
    b = sim.add_node(B, Endpoint(config, rng=sim.make_rng("b")))
    return sim, a, b


def earliest(ep):
    deadlines = [d for c in ep.connections if (d := c.get_timer()) is not None]
    return min(deadlines) if deadlines else None


def test_timer_is_the_earliest_connection_deadline_and_heap_stays_small():
    sim, a, b = pair(Config(keepalive_idle=2.0, keepalive_interval=1.0))
    b.listen(100)
    conns = [a.connect(B, sim.now) for _ in range(20)]
    sim.run(until=0.5)
    server = []
    while (c := b.accept()) is not None:
        server.append(c)
    assert len(server) == 20
    # Much traffic, each segment moving keep-alive and retransmission deadlines on.
    for step in range(50):
        for c in conns:
            c.send(b"x" * 100)
        sim.run(until=sim.now + 0.01)
        for c in server:
            c.recv(1 << 16)
        for ep in (a, b):
            assert ep.get_timer() == earliest(ep)
            assert len(ep._heap) <= 3 * len(ep.connections) + 5
    # Idle: keep-alive probes flow and nobody dies; the deadlines stay exact.
    sim.run(until=sim.now + 7)
    assert all(c.stats.keepalive_probes or s.stats.keepalive_probes for c, s in zip(conns, server))
    for ep in (a, b):
        assert len(ep.connections) == 20
        assert ep.get_timer() == earliest(ep)


def test_deadline_moved_earlier_fires_at_the_earlier_time():
    sim, a, b = pair(Config(keepalive_idle=30.0, tlp=False))  # the first deadline is the RTO
    b.listen(10)
    conn = a.connect(B, sim.now)
    sim.run(until=0.5)
    srv = b.accept()
    assert a.get_timer() == earliest(a)
    # Data makes an earlier (retransmission) deadline; we never deliver it.
    conn.send(b"hello")
    assert a.datagrams_to_send(sim.now)
    assert a.get_timer() == conn.get_timer() < sim.now + 30
    a.handle_timer(conn.get_timer())
    assert conn.stats.timeouts == 1
    assert srv is not None
