"""Two endpoints wired back to back through a tap that sees every datagram:
it may record, alter, drop, replay or inject, as an on-path attacker can.
Driven at explicit times; bounded in steps."""

from __future__ import annotations

import random
from collections.abc import Callable

from gannet.config import Config
from gannet.core.events import ConnectionTerminated
from gannet.crypto.endpoint import InsecureEndpoint, SecureEndpoint, Security
from gannet.observe.trace import observable
from gannet.wire.batch import Train

Tap = Callable[[bytes, str], list[bytes]]  # (datagram, "c->s" or "s->c") -> what arrives


def make(config: Config, rng: random.Random, security: Security, observed: bool = False) -> SecureEndpoint:
    """The endpoint SecureEndpoint makes for `security`; `observed`: of its
    class's Python subclass (gannet.observe.trace.observable), whose
    instances take an observer's wrappers, or a test's, on the instance,
    and whose methods the compiled code calls through Python (so that it
    finds them)."""
    if not observed:
        return SecureEndpoint(config, rng, security=security)
    cls = InsecureEndpoint if security.insecure else SecureEndpoint
    return observable(cls)(config, rng, security=security)


class Pair:
    def __init__(self, client: Security, server: Security, *, config: Config | None = None,
                 tap: Tap | None = None, batches: bool = False, seed: int = 1, observed: bool = False):
        config = config or Config(pmtud=False)
        self.client = make(config, random.Random(seed), client, observed)
        self.server = make(config, random.Random(seed + 1), server, observed)
        self.server.listen()
        self.tap = tap
        self.batches = batches
        self.now = 0.0
        self.recorded: list[bytes] = []
        self.events = {"c": [], "s": []}
        self.batched = 0  # trains delivered as one GRO batch
        self.directions: list[str] = []

    def _flush(self, src, dst, direction: str, dst_addr: str, items=None) -> bool:
        moved = False
        src_addr = "c" if dst_addr == "s" else "s"
        if items is None:
            items = src.datagrams_to_send(self.now, trains=self.batches)
        for item, _addr in items:
            moved = True
            rows = item.datagrams() if type(item) is Train else [bytes(item)]
            arrived = []
            for d in rows:
                self.recorded.append(d)
                self.directions.append(direction)
                arrived.extend(self.tap(d, direction) if self.tap else [d])
            if self.batches and type(item) is Train and arrived == rows:
                dst.receive_batch(bytes(item), item.size, src_addr, self.now)  # as GRO hands it over
                self.batched += len(rows) > 1
            else:
                for d in arrived:
                    dst.receive_datagram(d, src_addr, self.now)
        return moved

    def step(self, dt: float = 0.001, cross: bool = False) -> bool:
        if cross:  # both sides' datagrams leave before either side hears the other's
            out_c = self.client.datagrams_to_send(self.now, trains=self.batches)
            out_s = self.server.datagrams_to_send(self.now, trains=self.batches)
            moved = self._flush(self.client, self.server, "c->s", "s", out_c)
            moved |= self._flush(self.server, self.client, "s->c", "c", out_s)
        else:
            moved = self._flush(self.client, self.server, "c->s", "s")
            moved |= self._flush(self.server, self.client, "s->c", "c")
        self.now += dt
        for ep in (self.client, self.server):
            t = ep.get_timer()
            if t is not None and t <= self.now:
                ep.handle_timer(self.now)
        for name, ep in (("c", self.client), ("s", self.server)):
            while (ev := ep.next_event()) is not None:
                self.events[name].append(ev)
        return moved

    def run(self, until: Callable[[], bool], steps: int = 20000) -> None:
        for _ in range(steps):
            if until():
                return
            if not self.step():
                # nothing in flight: jump to the next deadline
                deadlines = [t for t in (self.client.get_timer(), self.server.get_timer()) if t is not None]
                if deadlines and min(deadlines) > self.now:
                    self.now = min(deadlines)
        raise AssertionError(f"not done after {steps} steps (t={self.now:.3f})")

    def terminated(self, side: str):
        return [e for e in self.events[side] if isinstance(e, ConnectionTerminated)]


def transfer(pair: Pair, data: bytes, steps: int = 200000) -> bytes:
    """Connect, send `data` client->server, close; return what the server read."""
    conn = pair.client.connect("s", pair.now)
    got = bytearray()
    state = {"server": None, "sent": 0, "closed": False}

    def done():
        if conn.error is not None:
            raise conn.error
        if state["sent"] < len(data):
            state["sent"] += conn.send(data[state["sent"]:])
        elif not state["closed"]:
            conn.close(pair.now)
            state["closed"] = True
        if state["server"] is None:
            state["server"] = pair.server.accept()
        srv = state["server"]
        if srv is not None:
            while chunk := srv.recv(1 << 20):
                got.extend(chunk)
            return srv.eof
        return False

    pair.run(done, steps)
    return bytes(got)
