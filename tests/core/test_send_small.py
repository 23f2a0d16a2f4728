"""The one-segment send path (Sender.send_small) reaches exactly the
state and sends exactly the datagrams the general output path
(Sender.output_full) does.

Each scenario runs twice from the same seeds: once as it is, once with
send_small declining everything (so output_full does all). After every step the two
runs must have sent the same bytes, emitted the same events and hold the same
connection state, field by field (tests/core/test_header_prediction.py's
traces and snapshots).
"""

from __future__ import annotations

import random

import pytest

from gannet.config import Config
from gannet.core.connection import Connection
from gannet.core.sender import Sender
from gannet.sim import LinkConfig
from gannet.sim.scenario import run_transfer

from test_header_prediction import lossy_trace, pair, pingpong_trace, snapshot


@pytest.fixture
def general_path(monkeypatch):
    def off():
        monkeypatch.setattr(Sender, "send_small", lambda self, now, out, runs: False)
    return off


@pytest.mark.parametrize("config", [
    Config(pmtud=False),
    Config(pmtud=False, congestion_control="cubic", delayed_ack=False),
    Config(pmtud=False, congestion_control="newreno", nodelay=False),
    Config(pmtud=False, mode="step-by-step"),
    Config(),  # PMTU probes
])
@pytest.mark.parametrize("size", [1, 64, 1300])
def test_pingpong_state_identical(config, size, general_path):
    fast = pingpong_trace(100, config, size=size)
    general_path()
    slow = pingpong_trace(100, config, size=size)
    assert len(fast) == len(slow)
    for f, s in zip(fast, slow):
        assert f == s, f"round {f[0]} differs"


@pytest.mark.parametrize("sack", [True, False])
def test_lossy_bulk_state_identical(sack, general_path):
    config = Config(pmtud=False, sack=sack)
    fast = lossy_trace(config, seed=11, size=200_000)
    assert fast[-1][1] == 200_000
    general_path()
    slow = lossy_trace(config, seed=11, size=200_000)
    assert len(fast) == len(slow)
    for f, s in zip(fast, slow):
        assert f == s, f"step {f[0]} differs"


def small_writes_trace(config: Config, seed: int):
    """Writes of random sizes around the MSS at random moments, a small peer
    window now and then, some datagrams lost: the shortcut's every refusal
    (Nagle, window, cwnd, pacing) and acceptance, against the general path."""
    a, b, ca, cb = pair(config)
    rng = random.Random(seed)
    now = 0.0
    trace = []
    pending: list[tuple[float, object, bytes, str]] = []
    for step in range(600):
        now += rng.choice((0.00001, 0.0002, 0.001, 0.01))
        phase = step // 100 % 3  # 1: the reader stalls while small writes go on
        # (phase 1 writes only while little is unsent: the peer's window,
        # not the backlog, then holds the last bytes back)
        if rng.random() < 0.6 and ca.snd.sndbuf.end - ca.snd_nxt < (200 if phase == 1 else 5000):
            sizes = (1, 10, 100, 700, ca.mss - 1) if phase == 1 else (1, 10, 100, ca.mss - 1, ca.mss, ca.mss + 1, 3000)
            ca.send(rng.randbytes(rng.choice(sizes)))
        if rng.random() < 0.3:
            cb.send(rng.randbytes(rng.choice((1, 64, 500))))
        for src, dst, name in ((a, b, "A"), (b, a, "B")):
            out = src.datagrams_to_send(now)
            trace.append((step, name, [d for d, _ in out]))
            for d, _x in out:
                if rng.random() < 0.02:
                    continue
                pending.append((now + rng.choice((0.0001, 0.001, 0.003)), dst, d, name))
        pending.sort(key=lambda x: x[0])
        while pending and pending[0][0] <= now:
            _, dst, d, name = pending.pop(0)
            dst.receive_datagram(d, name, now)
        r = rng.random() if phase != 1 else 1.0
        if r < 0.6:  # a slow reader: the window closes now and then
            cb.recv(100)
        elif r < 0.65:
            cb.recv(1 << 20)
        ca.recv(1 << 20)
        for ep in (a, b):
            t = ep.get_timer()
            if t is not None and t <= now:
                ep.handle_timer(now)
        while a.next_event() is not None or b.next_event() is not None:
            pass
        trace.append((step, snapshot(ca), snapshot(cb)))
    return trace


@pytest.mark.parametrize("config", [
    Config(pmtud=False, mss=1400, window_size=20_000, autotune=False),
    Config(pmtud=False, mss=1400, window_size=4_000, autotune=False),
    Config(pmtud=False, nodelay=False),
    Config(congestion_control="cubic"),
])
@pytest.mark.parametrize("seed", [1, 2])
def test_small_writes_state_identical(config, seed, general_path):
    fast = small_writes_trace(config, seed)
    general_path()
    slow = small_writes_trace(config, seed)
    assert len(fast) == len(slow)
    for f, s in zip(fast, slow):
        assert f == s, f"step {f[0]} differs"


def shortcut_segments(monkeypatch) -> dict[str, int]:
    """Count the segments send_small itself sends: what it appends, less
    what the general path appends when the shortcut hands it the pass."""
    counts = {"small": 0, "full": 0}
    real_small, real_full = Sender.send_small, Sender.output_full

    def small(self, now, out, runs):
        before, full_before = len(out), counts["full"]
        taken = real_small(self, now, out, runs)
        counts["small"] += len(out) - before - (counts["full"] - full_before)
        return taken

    def full(self, now, out, runs=False, budget=None):
        before = len(out)
        real_full(self, now, out, runs, budget)
        counts["full"] += len(out) - before

    monkeypatch.setattr(Sender, "send_small", small)
    monkeypatch.setattr(Sender, "output_full", full)
    return counts


@pytest.mark.pure
def test_shortcut_really_runs(monkeypatch):
    """The ping-pong's data segments leave from the shortcut: all 56 of
    them in 30 round trips, none from the general path."""
    counts = shortcut_segments(monkeypatch)
    pingpong_trace(30, Config(pmtud=False))
    assert counts["small"] >= 56 and counts["full"] == 0, counts


@pytest.mark.pure
def test_shortcut_count_fails_without_it(monkeypatch, general_path):
    """The count above measures the shortcut: with it declining, the same
    segments come from the general path and the shortcut's count is 0."""
    counts = shortcut_segments(monkeypatch)
    general_path()
    pingpong_trace(30, Config(pmtud=False))
    assert counts["small"] == 0 and counts["full"] >= 56, counts
