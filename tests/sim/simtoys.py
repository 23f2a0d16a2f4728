"""Tiny nodes that follow the Endpoint contract, for testing the simulator."""

from __future__ import annotations

from gannet.sim import LinkConfig, Simulator

A = ("10.0.0.1", 4000)
B = ("10.0.0.2", 4000)


def payload(seq: int, size: int) -> bytes:
    """Numbered datagram: 4-byte big-endian sequence number, then filler
    that differs per datagram so corruption and truncation are visible."""
    head = seq.to_bytes(4, "big")
    return head + bytes([seq & 0xFF]) * max(0, size - 4)


class Sender:
    """Emits `count` numbered datagrams to `dst`, one every `interval` s,
    starting at `start`; `sizes` (optional) gives each datagram's size."""

    def __init__(self, dst, count, interval=0.01, size=100, start=0.0, sizes=None):
        self.dst = dst
        self.count = count
        self.interval = interval
        self.size = size
        self.sizes = sizes
        self.next_time = start
        self.seq = 0
        self.outbox: list[tuple[bytes, object]] = []
        self.sent: list[tuple[float, int, bytes]] = []  # (time, seq, data)
        self.received: list[tuple[float, bytes, object]] = []

    def emit(self, now: float, n: int = 1) -> None:
        """Queue `n` datagrams now (also usable from a call_at callback)."""
        for _ in range(n):
            size = self.sizes[self.seq % len(self.sizes)] if self.sizes else self.size
            data = payload(self.seq, size)
            self.outbox.append((data, self.dst))
            self.sent.append((now, self.seq, data))
            self.seq += 1

    def receive_datagram(self, data, addr, now):
        self.received.append((now, data, addr))

    def datagrams_to_send(self, now):
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self):
        return self.next_time if self.seq < self.count else None

    def handle_timer(self, now):
        self.emit(now)
        self.next_time += self.interval


class Receiver:
    """Records every datagram: (time, data, sender address)."""

    def __init__(self):
        self.received: list[tuple[float, bytes, object]] = []

    def receive_datagram(self, data, addr, now):
        self.received.append((now, bytes(data), addr))

    def datagrams_to_send(self, now):
        return ()

    def get_timer(self):
        return None

    def handle_timer(self, now):
        raise AssertionError("receiver has no timer")

    @property
    def seqs(self) -> list[int]:
        return [int.from_bytes(d[:4], "big") for _, d, _ in self.received]


def one_way(config: LinkConfig, count: int, seed: int = 1, trace=False, **sender_kw):
    """Sender at A -> Receiver at B over `config`; run to completion."""
    sim = Simulator(seed=seed, trace=trace)
    sim.set_link(A, B, config)
    tx = sim.add_node(A, Sender(B, count, **sender_kw))
    rx = sim.add_node(B, Receiver())
    sim.run()
    return sim, tx, rx
