"""Header prediction (Connection.on_predicted, fed by wire.datagram.peek_short)
reaches exactly the state the general segment processing reaches.

Each scenario runs twice from the same seeds: once as it is, once with
on_predicted declining everything (so every segment goes through decode and
on_segment). After every step the two runs must have sent the same bytes,
emitted the same events and hold the same connection state, field by field
(congestion control, RACK, RTT estimator, send and receive buffers, timers).
"""

from __future__ import annotations

import random
from collections import deque
from enum import Enum

import pytest

from gannet.config import Config
from corepair import established_endpoints
from gannet.core.connection import Connection
from gannet.core.endpoint import Endpoint
from gannet.core.rangeset import RangeSet
from gannet.sim import LinkConfig
from gannet.sim.scenario import run_transfer
from crc32c import crc32c

from gannet.wire.datagram import (
    SHORT,
    SHORT_FORM,
    SHORT_SIZE,
    decode,
    encode,
    encode_short,
    peek_short,
)
from gannet.wire.segment import ACK, FIN, PSH, SYN, Segment

SKIP = {"config", "rng", "_events", "_dirty", "__dict__", "conn"}


def dump(obj, seen=None):
    """A plain, comparable picture of an object graph."""
    if seen is None:
        seen = set()
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, Enum)):
        return obj
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    if isinstance(obj, (list, tuple, deque)):
        return [dump(x, seen) for x in obj]
    if isinstance(obj, dict):
        return {dump(k, seen): dump(v, seen) for k, v in obj.items()}
    if isinstance(obj, RangeSet):
        return ("RangeSet", list(obj), obj.total)
    if callable(obj) and not hasattr(obj, "__slots__"):
        return "<callable>"
    if id(obj) in seen:
        return "<seen>"
    seen.add(id(obj))
    names = []
    for klass in type(obj).__mro__:
        names.extend(getattr(klass, "__slots__", ()))
    names.extend(getattr(obj, "__dict__", {}))
    out = {}
    for name in names:
        if name in SKIP or name.startswith("__"):
            continue
        try:
            value = getattr(obj, name)
        except AttributeError:
            continue
        if callable(value) and not hasattr(value, "__slots__") and not isinstance(value, type):
            continue
        out[name] = dump(value, seen)
    return (type(obj).__name__, out)


def snapshot(conn: Connection):
    return dump(conn)


@pytest.fixture
def no_prediction(monkeypatch):
    def off():
        monkeypatch.setattr(Connection, "on_predicted", lambda self, *a: False)
    return off


def pair(config: Config, now: float = 0.0):
    return established_endpoints(config, seeds=(11, 12), now=now)


def pingpong_trace(rounds: int, config: Config, size: int = 64):
    """Ping-pong with timers; returns the picture after every step."""
    a, b, ca, cb = pair(config)
    rng = random.Random(5)
    now = 0.0
    trace = []

    for i in range(rounds):
        now += rng.choice((0.0001, 0.0003, 0.002, 0.05))  # some rounds outlast the delayed ACK
        ca.send(bytes([i & 0xFF]) * size)
        out_a = a.datagrams_to_send(now)
        for d, _x in out_a:
            b.receive_datagram(d, "A", now)
        now += 0.00005
        reply = cb.recv(1 << 16)
        if i % 7 != 3:  # sometimes the server does not answer: a bare delayed ACK goes instead
            cb.send(reply)
        out_b = b.datagrams_to_send(now)
        for d, _x in out_b:
            a.receive_datagram(d, "B", now)
        got = ca.recv(1 << 16)
        for ep in (a, b):
            t = ep.get_timer()
            if t is not None and t <= now + 0.01:
                ep.handle_timer(t)
                now = max(now, t)
        events = []
        for ep in (a, b):
            while (ev := ep.next_event()) is not None:
                events.append(type(ev).__name__)
        trace.append((i, [d for d, _ in out_a], [d for d, _ in out_b], got, events,
                      snapshot(ca), snapshot(cb), a.get_timer(), b.get_timer()))
    return trace


@pytest.mark.pure  # patches Connection.on_predicted, which the compiled Endpoint calls directly
@pytest.mark.parametrize("cc", ["bbr", "cubic", "newreno"])
@pytest.mark.parametrize("delayed_ack", [True, False])
def test_pingpong_state_identical(cc, delayed_ack, no_prediction):
    config = Config(pmtud=False, congestion_control=cc, delayed_ack=delayed_ack)
    fast = pingpong_trace(120, config)
    no_prediction()
    slow = pingpong_trace(120, config)
    assert len(fast) == len(slow)
    for f, s in zip(fast, slow):
        assert f == s, f"round {f[0]} differs"


def lossy_trace(config: Config, seed: int, size: int = 400_000, blackout=(30, 1200)):
    """A bulk transfer datagram by datagram with drops, reordering and
    duplicates (so SACK, recovery and RACK take turns with prediction)."""
    a, b, ca, cb = pair(config)
    rng = random.Random(seed)
    payload = random.Random(seed + 1).randbytes(size)
    sent = got = 0
    now = 0.0
    trace = []
    in_flight: list[tuple[float, Endpoint, bytes, str]] = []
    steps = 0
    while got < size and steps < 20000:
        steps += 1
        now += 0.0005
        if sent < size:
            sent += ca.send(payload[sent:sent + 20_000])
        for src, dst, name in ((a, b, "A"), (b, a, "B")):
            for d, _x in src.datagrams_to_send(now):
                r = rng.random()
                if r < 0.03 or blackout[0] <= steps < blackout[1]:
                    continue  # lost (during the blackout, everything: timeouts and backoff)
                delay = 0.002 + (0.003 if r < 0.06 else 0.0)  # some arrive late (reordered)
                in_flight.append((now + delay, dst, d, name))
                if r > 0.99:
                    in_flight.append((now + delay + 0.0001, dst, d, name))  # duplicated
        in_flight.sort(key=lambda x: x[0])
        while in_flight and in_flight[0][0] <= now:
            _, dst, d, name = in_flight.pop(0)
            dst.receive_datagram(d, name, now)
        got += len(cb.recv(1 << 20))
        for ep in (a, b):
            t = ep.get_timer()
            if t is not None and t <= now:
                ep.handle_timer(now)
        while a.next_event() is not None or b.next_event() is not None:
            pass
        if steps % 5 == 0:
            trace.append((steps, snapshot(ca), snapshot(cb)))
    trace.append(("end", got, snapshot(ca), snapshot(cb)))
    return trace


@pytest.mark.pure  # patches Connection.on_predicted, which the compiled Endpoint calls directly
@pytest.mark.parametrize("cc", ["bbr", "newreno"])
@pytest.mark.parametrize("sack", [True, False])
def test_lossy_bulk_state_identical(cc, sack, no_prediction):
    config = Config(pmtud=False, congestion_control=cc, sack=sack)
    fast = lossy_trace(config, seed=7)
    assert fast[-1][1] == 400_000
    no_prediction()
    slow = lossy_trace(config, seed=7)
    assert len(fast) == len(slow)
    for f, s in zip(fast, slow):
        assert f == s, f"step {f[0]} differs"


@pytest.mark.pure  # patches Connection.on_predicted, which the compiled Endpoint calls directly
def test_prediction_really_runs(monkeypatch):
    """The ping-pong's data segments and the bulk sender's ACKs take it."""
    calls = {"taken": 0, "declined": 0}
    real = Connection.on_predicted

    def counting(self, *args):
        ok = real(self, *args)
        calls["taken" if ok else "declined"] += 1
        return ok

    monkeypatch.setattr(Connection, "on_predicted", counting)
    config = Config(pmtud=False)
    a, b, ca, cb = pair(config)
    now = 0.0
    for i in range(50):
        now += 0.001
        ca.send(b"x" * 64)
        for d, _x in a.datagrams_to_send(now):
            b.receive_datagram(d, "A", now)
        cb.send(cb.recv(100))
        for d, _x in b.datagrams_to_send(now):
            a.receive_datagram(d, "B", now)
        assert ca.recv(100) == b"x" * 64
    # every request after the first carries a new ACK (of the previous reply),
    # and so does every reply
    assert calls["taken"] >= 98
    assert ca.stats.segments_received >= 50 and cb.stats.segments_received >= 50


@pytest.mark.pure  # patches Connection.on_predicted, which the compiled Endpoint calls directly
def test_sim_transfer_same_result(no_prediction):
    fwd = LinkConfig(delay=0.01, loss=0.02, bandwidth=10e6, queue_bytes=30_000, mtu=1500)
    back = LinkConfig(delay=0.01, loss=0.02, mtu=1500)
    fast = run_transfer(3, 300_000, fwd, back)
    no_prediction()
    slow = run_transfer(3, 300_000, fwd, back)
    assert fast.ok and slow.ok
    assert fast.goodput == slow.goodput
    assert repr(fast) == repr(slow)  # every field of the result, not just the rate


# ------------------------------------------------------------------ wire
def test_peek_short_agrees_with_decode():
    rng = random.Random(3)
    for i in range(300):
        flags = rng.choice((ACK, ACK | PSH))
        payload = rng.randbytes(rng.choice((0, 1, 64, 700, 1400)))
        seg = Segment(rng.getrandbits(32), rng.getrandbits(32), flags, rng.getrandbits(16), payload,
                      tsval=rng.getrandbits(32), tsecr=rng.getrandbits(32))
        d = encode(5, 6, seg)
        assert len(d) == SHORT_SIZE + len(payload) + 4
        for data in (d, bytearray(d), memoryview(bytearray(b"??" + d))[2:]):
            head = peek_short(data)
            assert head is not None
            dst, src, dseg = decode(data)
            assert src is None and dseg.tsecr is None  # the short form carries neither
            assert head == (dst, dseg.flags, dseg.seq, dseg.ack, dseg.wnd, dseg.tsval)
            assert head == (5, seg.flags, seg.seq, seg.ack, seg.wnd, seg.tsval)
            assert bytes(data[SHORT_SIZE:-4]) == dseg.payload == payload


@pytest.mark.parametrize("seg", [
    Segment(1, 2, SYN, 3, tsval=4, tsecr=5),
    Segment(1, 2, ACK | FIN, 3, b"x", tsval=4, tsecr=5),  # short form, but not predicted
    Segment(1, 2, ACK, 3, b"x"),  # no timestamps
    Segment(1, 2, ACK, 3, b"x", tsval=4, tsecr=5, sack=((7, 9),)),
    Segment(1, 2, 0, 3, b"x", tsval=4, tsecr=5),  # no ACK
])
def test_peek_short_declines_other_segments(seg):
    assert peek_short(encode(5, 6, seg)) is None


def test_peek_short_declines_a_corrupt_datagram():
    d = bytearray(encode(5, 6, Segment(1, 2, ACK, 3, b"hello", tsval=4, tsecr=5)))
    assert peek_short(d) is not None
    for i in range(len(d)):
        bad = bytearray(d)
        bad[i] ^= 0x20
        assert peek_short(bad) is None
    assert peek_short(d[:SHORT_SIZE + 3]) is None


@pytest.mark.parametrize("n", [0, 1, 64, 511, 512, 513, 1400, 9000])
def test_encode_short_matches_the_general_encoder(n):
    payload = random.Random(n).randbytes(n)
    seg = Segment(0xFFFFFFFF, 7, ACK | PSH, 0xFFFF, payload, tsval=1, tsecr=0)
    # the short form's layout: form, flags, window, destination, seq, ack, TSval
    body = SHORT.pack(SHORT_FORM, ACK | PSH, 0xFFFF, 9, 0xFFFFFFFF, 7, 1) + payload
    want = body + crc32c(body).to_bytes(4, "little")
    assert encode(9, 10, seg) == want
    assert encode_short(9, ACK | PSH, 0xFFFFFFFF, 7, 0xFFFF, 1, payload) == want
    assert encode_short(9, ACK | PSH, 0xFFFFFFFF, 7, 0xFFFF, 1, memoryview(payload)) == want
    assert decode(want)[2].payload == payload
