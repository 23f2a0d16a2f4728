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

from gannet import _build
from gannet.config import Config
from gannet.core.events import Event
from gannet.sim import LinkConfig
from gannet.sim.scenario import run_transfer

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
    return h.hexdigest()


if __name__ == "__main__":
    print(json.dumps({"build": _build.build(), "digest": digest()}))
