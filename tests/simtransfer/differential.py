"""Seeded simulated transfers, reduced to one digest of everything the core
did: every datagram each endpoint emitted (time, address, bytes) and every
event it reported (time, kind, error), then both connections' counters.

Run as a program (`python differential.py`) it prints one JSON line: the
build it ran on (gannet._build.build()) and the digest. The differential
test runs it under the compiled and the pure build and requires the same
digest (test_differential.py).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import asdict

from gannet import _build
from gannet.config import Config
from gannet.core.endpoint import Endpoint
from gannet.core.events import Event
from gannet.sim import LinkConfig
from gannet.sim.scenario import run_transfer
from gannet.wire.batch import SourceTrain, Train

SIZE = 2_000_000


def cases() -> list[tuple[int, LinkConfig, LinkConfig, Config]]:
    """Loss, bursts, reordering, duplication, corruption, a bottleneck
    queue, PMTUD and each congestion controller, a seed each."""
    out = []
    for seed, cc in enumerate(["bbr", "cubic", "newreno", "bbr", "cubic", "bbr", "newreno", "bbr"]):
        r = random.Random(seed * 7919)
        delay = r.choice([0.001, 0.005, 0.02])
        fwd = LinkConfig(
            delay=delay, jitter=r.choice([0.0, delay / 4]), loss=r.choice([0.0, 0.01, 0.05]),
            duplicate=r.choice([0.0, 0.02]), reorder=r.choice([0.0, 0.05]), reorder_delay=delay / 2 + 0.001,
            corrupt=r.choice([0.0, 0.01]), bandwidth=r.choice([None, 20e6]), queue_bytes=64_000,
            mtu=r.choice([1500, None]),
        )
        back = LinkConfig(delay=delay, loss=r.choice([0.0, 0.02]))
        out.append((seed, fwd, back, Config(congestion_control=cc, pmtud=seed % 2 == 0)))
    return out


def digest() -> str:
    h = hashlib.sha256()

    def record(now: float, item: object) -> None:
        if isinstance(item, Event):
            h.update(f"e {now!r} {type(item).__name__} {getattr(item, 'error', None)!r}\n".encode())
        else:
            data, addr = item  # type: ignore[misc]
            h.update(f"d {now!r} {addr!r} {len(data)}\n".encode())
            h.update(bytes(data))

    for seed, fwd, back, config in cases():
        result = run_transfer(seed, SIZE, fwd, back, config=config, time_limit=300, tap=record)
        assert result.intact, f"seed {seed}: the transfer did not complete"
        h.update(json.dumps([seed, result.finish_time, result.srtt, result.client_stats,
                             result.server_stats, result.link_stats], sort_keys=True,
                            default=repr).encode())
    gathered(h.update)
    return h.hexdigest()


def gathered(update: Callable[[bytes], None]) -> None:
    """A transfer between two core endpoints whose sender gathers (an I/O
    adapter's SourceTrains, which the simulator does not ask for): runs of
    several 65,000-byte datagrams, two of them lost once. Every datagram
    either side sends, its time, and both connections' counters."""
    config = Config(pmtud=False, max_datagram_size=65000)
    a, b = Endpoint(config, random.Random(1)), Endpoint(config, random.Random(2))
    b.listen(4)
    ca = a.connect("B", 0.0)
    a.source_trains = True
    data = random.Random(3).randbytes(SIZE)
    written = sent = 0
    got = 0
    now = 0.0
    cb = None
    for _ in range(40_000):  # (bounded: the assertion below fails a stall)
        now += 0.0005
        for ep in (a, b):
            timer = ep.get_timer()
            if timer is not None and timer <= now:
                ep.handle_timer(now)
        if ca.established and written < len(data):
            written += ca.send(data[written:])
        for item, _ in a.datagrams_to_send(now, True):
            if isinstance(item, SourceTrain):
                item = item.train()
            for d in item.datagrams() if isinstance(item, Train) else [bytes(item)]:
                update(f"a {now!r} {len(d)}\n".encode() + d)
                sent += 1
                if sent not in (9, 23):
                    b.receive_datagram(d, "A", now)
        for item, _ in b.datagrams_to_send(now, True):
            update(f"b {now!r}\n".encode() + bytes(item))
            a.receive_datagram(bytes(item), "B", now)
        cb = cb or b.accept()
        while cb is not None and cb.readable_bytes:
            got += len(cb.recv(1 << 20))
        if got == len(data):
            break
    assert got == len(data), "the gathered transfer did not complete"
    assert cb is not None
    update(json.dumps([now, asdict(ca.stats), asdict(cb.stats)], sort_keys=True).encode())


if __name__ == "__main__":
    print(json.dumps({"build": _build.build(), "digest": digest()}))
