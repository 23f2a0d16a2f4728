"""SourceTrain (wire/batch.py): a train whose payloads stay in the sender's
buffer. Its bytes, in the pieces one sendmsg gathers, must be `encode_run`'s
train byte for byte; an endpoint makes them only when asked, and only for
runs of datagrams of GATHER_FROM bytes or more."""

from __future__ import annotations

import random

import pytest

from gannet.config import Config
from gannet.core.endpoint import Endpoint
from gannet.wire import batch
from gannet.wire.batch import GATHER_FROM, SourceTrain, Train, encode_run, encode_source
from gannet.wire.datagram import SHORT_SIZE, TRAILER_SIZE
from gannet.wire.segment import ACK, PSH, SegmentRun


def random_run(rng: random.Random) -> SegmentRun:
    mss = rng.choice([1, 3, 100, 191, 192, 193, 1448, 8952, 16384, 65000 - 24])  # (192: thirds of 64)
    count = rng.randint(1, 64 if mss < 2000 else 4)
    length = mss * count - (rng.randint(0, mss - 1) if rng.random() < 0.5 else 0)
    offset = rng.randint(0, 9)
    buf = rng.randbytes(offset + length + rng.randint(0, 9))
    if rng.random() < 0.3:
        buf = memoryview(buf)  # (the send buffer holds views of what was written)
    seq = rng.choice([0, 2**32 - 1, 2**32 - 5 * mss, rng.getrandbits(32)])  # wraps inside the run
    return SegmentRun(seq, rng.getrandbits(32), ACK, rng.choice([ACK, ACK | PSH]), rng.getrandbits(16),
                      rng.getrandbits(32), rng.getrandbits(32), buf, offset, length, mss)


@pytest.mark.parametrize("native", [False, True])
def test_a_source_trains_bytes_are_encode_runs(native, monkeypatch):
    """Against encode_run as every build writes it (the C rows primitive
    where it is built, numpy and the row loop otherwise)."""
    if native and batch._c is None:
        pytest.skip("gannet.wire._batch is not built in this build (GANNET_PURE=1 or no compiler)")
    if not native:
        monkeypatch.setattr(batch, "_c", None)
        batch.load_numpy()
    rng = random.Random(11)
    for _ in range(200):
        run = random_run(rng)
        dst = rng.getrandbits(32) or 1
        want = bytes(encode_run(dst, run))
        source = encode_source(dst, run)
        size = SHORT_SIZE + run.mss + TRAILER_SIZE
        assert (source.size, source.count, len(source)) == (size, run.count, len(want))
        assert b"".join(source.pieces()) == want, (run.mss, run.length)
        train = source.train()
        assert type(train) is Train and train.size == size and bytes(train) == want
        # the payloads are not copied: the pieces are views of the run's buffer
        assert source.buf is run.buf and len(source.heads) == run.count * (SHORT_SIZE + TRAILER_SIZE)


def test_the_pieces_alternate_headers_payloads_and_trailers():
    mss = 1000
    data = bytes(range(256)) * 12
    source = encode_source(3, SegmentRun(7, 8, ACK, ACK | PSH, 9, 10, 11, data, 5, 2 * mss + 10, mss))
    pieces = source.pieces()
    assert [len(p) for p in pieces] == [SHORT_SIZE, mss, TRAILER_SIZE + SHORT_SIZE, mss,
                                        TRAILER_SIZE + SHORT_SIZE, 10, TRAILER_SIZE]
    assert pieces[1] == data[5 : 5 + mss] and pieces[5] == data[5 + 2 * mss : 15 + 2 * mss]
    assert pieces[1].obj is data  # a view, not a copy


def _flight(mtu: int, source_trains: bool, trains: bool) -> list:
    config = Config(pmtud=False, max_datagram_size=mtu)
    a, b = Endpoint(config, random.Random(1)), Endpoint(config, random.Random(2))
    b.listen(4)
    ca = a.connect("B", 0.0)
    for _ in range(3):
        for d, _ in a.datagrams_to_send(0.0, True):
            b.receive_datagram(bytes(d), "A", 0.0)
        for d, _ in b.datagrams_to_send(0.0, True):
            a.receive_datagram(bytes(d), "B", 0.0)
    assert b.accept() is not None
    a.source_trains = source_trains
    ca.send(random.Random(3).randbytes(400_000))
    return [item for item, _ in a.datagrams_to_send(0.01, trains)]


def _wire(items: list) -> list[bytes]:
    out = []
    for item in items:
        if type(item) is SourceTrain:
            item = item.train()
        out.extend(item.datagrams() if type(item) is Train else [bytes(item)])
    return out


@pytest.mark.parametrize("mtu", [1472, GATHER_FROM - 1, GATHER_FROM, 65000])
def test_an_endpoint_makes_source_trains_only_when_asked_and_for_large_datagrams(mtu):
    """Endpoint.source_trains: runs as SourceTrains with `trains`, for
    datagrams of GATHER_FROM bytes or more; a caller that did not ask (the
    simulator, an adapter without GSO) gets Trains; the datagrams are the
    same every way."""
    gathered = {type(item) for item in _flight(mtu, True, True)}
    if mtu >= GATHER_FROM:
        assert SourceTrain in gathered and Train not in gathered
    else:
        assert SourceTrain not in gathered and Train in gathered
    assert SourceTrain not in {type(item) for item in _flight(mtu, False, True)}
    assert SourceTrain not in {type(item) for item in _flight(mtu, True, False)}
    assert _wire(_flight(mtu, True, True)) == _wire(_flight(mtu, False, True)) == _wire(_flight(mtu, False, False))
