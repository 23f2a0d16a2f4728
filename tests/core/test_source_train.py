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
        # apart: the same datagrams, a SourceTrain of one each, the payloads in place
        rows = source.apart()
        assert [(r.count, r.size, r.buf is run.buf) for r in rows] == [(1, size, True)] * run.count
        assert [b"".join(r.pieces()) for r in rows] == train.datagrams()


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


@pytest.mark.parametrize("gather", [True, False])
def test_a_gathered_run_holds_several_large_datagrams_and_they_leave_a_message_each(gather):
    """Where 64 KB is one datagram (path MTU discovery's sizes), a run of a
    gathering endpoint holds up to GATHER_ROWS of them (one SegmentRun, one
    sent-log and RACK record for them all) and each leaves as a SourceTrain
    of its own; without gathering a run is one datagram."""
    data, got, sends, runs, items = _transfer(0, gather=gather)
    assert got == data
    assert all(n == 1 for n in sends.values())
    datagrams = len(sends)
    assert datagrams == -(-len(data) // (65000 - SHORT_SIZE - TRAILER_SIZE))
    if gather:
        assert all(type(item) is SourceTrain and item.count == 1 for item in items)
        assert -(-datagrams // batch.GATHER_ROWS) <= runs <= datagrams // 2, (runs, datagrams)
    else:
        assert runs == len(data) // (65000 - SHORT_SIZE - TRAILER_SIZE)  # (a run each, the short tail alone)


def _transfer(drop_index: int, size: int = 3_000_000, gather: bool = True,
              writes: list[bytes] | None = None) -> tuple[bytes, bytes, dict[int, int], int, list]:
    """A transfer of `size` bytes at 65,000-byte datagrams (the sender's
    endpoint gathering, or not), the `drop_index`-th data datagram (from 1)
    lost once; returns what was sent, what arrived, how often each
    sequence number left, the sender's runs and every item it sent.
    `writes`, a list: the data is written as separate objects of 80,001
    bytes, kept there (else as one object)."""
    config = Config(pmtud=False, max_datagram_size=65000)
    a, b = Endpoint(config, random.Random(1)), Endpoint(config, random.Random(2))
    b.listen(4)
    ca = a.connect("B", 0.0)
    now = 0.0
    for _ in range(3):
        for d, _ in a.datagrams_to_send(now, True):
            b.receive_datagram(bytes(d), "A", now)
        for d, _ in b.datagrams_to_send(now, True):
            a.receive_datagram(bytes(d), "B", now)
    cb = b.accept()
    assert cb is not None
    a.source_trains = gather
    data = random.Random(4).randbytes(size)
    items: list = []
    if writes is None:
        written = ca.send(data)
    else:
        writes += [data[k : k + 80_001] for k in range(0, size, 80_001)]
        written = sum(ca.send(w) for w in writes)
    got = bytearray()
    sends: dict[int, int] = {}
    dropped = False
    index = 0
    for _ in range(20_000):  # (bounded: a stall fails the assertions below)
        now += 0.0005
        for ep in (a, b):
            timer = ep.get_timer()
            if timer is not None and timer <= now:
                ep.handle_timer(now)
        if written < len(data):
            written += ca.send(data[written:])
        for item, _ in a.datagrams_to_send(now, True):
            items.append(item)
            if type(item) is SourceTrain:
                item = item.train()
            for d in item.datagrams() if type(item) is Train else [bytes(item)]:
                if len(d) > 1000:  # (a data datagram: the rest are ACKs and the FIN)
                    seq = int.from_bytes(d[8:12], "big")
                    sends[seq] = sends.get(seq, 0) + 1
                    index += 1
                    if index == drop_index and not dropped:
                        dropped = True
                        continue
                b.receive_datagram(bytes(d), "A", now)
        while cb.readable_bytes:
            got += cb.recv(1 << 20)
        for d, _ in b.datagrams_to_send(now, True):
            a.receive_datagram(bytes(d), "B", now)
        if len(got) == len(data):
            break
    assert dropped or not drop_index
    return data, bytes(got), sends, ca.stats.runs_sent, items


@pytest.mark.parametrize("drop_index", [5, 6, 12])
def test_a_lost_datagram_of_a_gathered_run_is_resent_alone(drop_index):
    """One datagram of a run of several is lost: the later datagrams of the
    same run are SACKed, and loss recovery (per segment of a run, as for a
    GSO run of 1,472-byte datagrams) resends that one only, once; the
    transfer completes with the bytes written."""
    data, got, sends, _, _ = _transfer(drop_index)
    assert got == data
    resent = {seq: n for seq, n in sends.items() if n > 1}
    assert len(resent) == 1 and list(resent.values()) == [2], resent



def test_a_gathered_run_across_written_objects_joins_only_the_datagram_across_a_seam():
    """A gathered run that spans several of the application's writes goes
    out as a SegmentRun for each stretch within one written object (its
    payloads read in place) and one for each datagram across two, joined
    alone (64 KB, where the whole run was joined before); the datagrams,
    their times and the counters are those of the same bytes written as
    one object."""
    writes: list[bytes] = []
    data, got, sends, runs, items = _transfer(0, writes=writes)
    assert got == data and len(writes) == 38
    _, _, whole_sends, whole_runs, whole_items = _transfer(0)
    assert sends == whole_sends and runs == whole_runs
    assert _wire(items) == _wire(whole_items)
    mss = 65000 - SHORT_SIZE - TRAILER_SIZE
    joined = [item for item in items if type(item) is SourceTrain and not any(item.buf is w for w in writes)]
    assert all(item.offset == 0 and len(item.buf) == item.length <= mss for item in joined)
    # one for each seam inside a datagram (none falls on a datagram's edge here)
    assert len(joined) == len(writes) - 1
    assert all(type(item) is not SourceTrain or any(item.buf is w for w in writes) or item in joined
               for item in items)
