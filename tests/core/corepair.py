"""Two bare Connections wired back to back, driven at explicit times.

Segments are handed over by hand, so a test can drop, reorder or forge any
of them and then assert the exact segments that come out.
"""

from __future__ import annotations

import random
from collections import deque

from gannet.config import Config
from gannet.core.connection import Connection
from gannet.core.endpoint import Endpoint
from gannet.core.states import State
from gannet.wire.segment import Segment


class Side:
    def __init__(self, name: str, cid: int, config: Config, seed: int, iss: int | None = None):
        self.events: deque = deque()
        self.conn = Connection(
            config, random.Random(seed), 0.0, remote_addr=name, local_cid=cid, events=self.events, iss=iss
        )

    def out(self, now: float) -> list[Segment]:
        return self.conn.segments_to_send(now)

    def event_types(self) -> list[str]:
        types = [type(e).__name__ for e in self.events]
        self.events.clear()
        return types


def deliver(side: Side, segs: list[Segment], now: float) -> None:
    for seg in segs:
        side.conn.on_segment(seg, now)


def established_pair(config: Config | None = None, rtt: float = 0.01, iss=(None, None), pmtud=False):
    """Client `a` and server `b`, handshake done at t = rtt (no loss).

    PMTUD is off unless asked for, so segments have the size tests expect.
    """
    config = (config or Config()).with_(pmtud=pmtud)
    a = Side("b", 1, config, 1, iss[0])
    b = Side("a", 2, config, 2, iss[1])
    a.conn.connect(0.0)
    syn = a.out(0.0)
    b.conn.accept_syn(syn[0], rtt / 2)
    synack = b.out(rtt / 2)
    deliver(a, synack, rtt)
    ack = a.out(rtt)
    deliver(b, ack, rtt * 1.5)
    b.out(rtt * 1.5)
    a.events.clear()
    b.events.clear()
    return a, b


def established_endpoints(config: Config | None = None, seeds: tuple[int, int] = (1, 2), now: float = 0.0):
    """Endpoints `a` (connecting, at address "A") and `b` (listening, at
    "B") with one connection established between them at `now`, their
    datagrams handed over by hand: returns a, b and each side's connection.
    Path MTU discovery is off unless `config` turns it on."""
    cfg = config or Config(pmtud=False)
    a, b = Endpoint(cfg, random.Random(seeds[0])), Endpoint(cfg, random.Random(seeds[1]))
    b.listen(4)
    ca = a.connect("B", now)
    for _ in range(3):
        for d, _addr in a.datagrams_to_send(now):
            b.receive_datagram(d, "A", now)
        for d, _addr in b.datagrams_to_send(now):
            a.receive_datagram(d, "B", now)
    cb = b.accept()
    assert cb is not None and ca.state == cb.state == State.ESTABLISHED
    return a, b, ca, cb


def exchange(a: Side, b: Side, now: float, step: float = 0.005, rounds: int = 50) -> float:
    """Let segments flow both ways without loss until both sides are quiet."""
    for _ in range(rounds):
        sa = a.out(now)
        sb = b.out(now)
        if not sa and not sb:
            return now
        now += step
        deliver(b, sa, now)
        deliver(a, sb, now)
    return now
