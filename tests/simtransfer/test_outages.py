"""Outages scripted on the simulator: short ones are survived, long ones reported."""

from gannet.config import Config
from gannet.core.endpoint import Endpoint
from gannet.core.states import State
from gannet.sim import LinkConfig, Simulator

A = ("10.0.0.1", 1)
B = ("10.0.0.2", 2)


def setup(config):
    sim = Simulator(seed=5, default_link=LinkConfig(delay=0.02, mtu=1500))
    a = sim.add_node(A, Endpoint(config, rng=sim.make_rng("a")))
    b = sim.add_node(B, Endpoint(config, rng=sim.make_rng("b")))
    b.listen()
    conn = a.connect(B, sim.now)
    return sim, a, b, conn


def outage(sim, start, length):
    for src, dst in ((A, B), (B, A)):
        link = sim.link(src, dst)
        sim.call_at(start, link.update, loss=1.0)
        sim.call_at(start + length, link.update, loss=0.0)


def test_five_second_outage_mid_transfer_is_survived():
    sim, a, b, conn = setup(Config())
    data = bytes(range(256)) * 8000  # 2 MB
    sent = [0]

    def pump():
        while sent[0] < len(data) and (n := conn.send(data[sent[0] : sent[0] + 65536])):
            sent[0] += n
        if sent[0] < len(data):
            sim.call_later(0.01, pump)

    sim.call_at(0.1, pump)
    outage(sim, 0.3, 5.0)
    got = bytearray()
    server = []

    def drain():
        if not server and (s := b.accept()):
            server.append(s)
        if server:
            got.extend(server[0].recv(1 << 22))
        if len(got) < len(data):
            sim.call_later(0.01, drain)

    sim.call_at(0.05, drain)
    sim.run(until=60, stop=lambda: len(got) == len(data))
    assert bytes(got) == data
    assert conn.state == State.ESTABLISHED
    assert conn.stats.timeouts >= 1


def test_outage_longer_than_the_idle_timeout_is_reported_on_both_sides():
    cfg = Config(keepalive_idle=2.0, keepalive_interval=1.0, keepalive_count=3, max_retries=6, max_rto=2.0)
    sim, a, b, conn = setup(cfg)
    sim.run(until=1)
    server = b.accept()
    sim.call_at(1.5, conn.send, b"x" * 100_000)
    outage(sim, 1.0, 1000.0)
    sim.run(until=120)
    assert conn.state == State.CLOSED and isinstance(conn.error, TimeoutError)
    assert server.state == State.CLOSED and isinstance(server.error, TimeoutError)
    assert "keep-alive" in str(server.error)
