"""The batch path: segment runs encoded as trains, GRO batches scanned into
runs, and the connection's in-order fast path - equivalent to one by one."""

import random

import pytest

from gannet.config import Config
from corepair import established_endpoints
from gannet.core.endpoint import Endpoint
from gannet.core.states import State
from gannet.sim import LinkConfig, Simulator
from gannet.wire import decode, encode
from crc32c import crc32c

from gannet.wire import batch as wire_batch
from gannet.wire.batch import batch_residue, coalesce, encode_run, rows, scan
from gannet.wire.datagram import CRC_RESIDUE
from gannet.wire.segment import ACK, PSH, SYN, Segment, SegmentRun

A = ("10.0.0.1", 1000)
B = ("10.0.0.2", 2000)


def data(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def a_run(length=10 * 1000 + 123, mss=1000, seq=0xFFFF_F000, last_flags=ACK | PSH):
    buf = bytearray(b"?" * 7 + data(length) + b"!" * 5)
    return SegmentRun(seq, 77, ACK, last_flags, 512, 1234, 99, buf, 7, length, mss)


NATIVE = wire_batch._c  # the C rows primitive, where it is built (not under GANNET_PURE=1)


@pytest.fixture(params=["native", "numpy", "before-numpy"])
def vector(request, monkeypatch):
    """Every way a run's rows are handled: the C extension's one call each
    (where it is built), its Python equivalent with numpy (its import waited
    for), and one at a time, as while that import runs (wire/batch.py)."""
    if request.param == "native":
        if NATIVE is None:
            pytest.skip("gannet.wire._batch is not built in this build (GANNET_PURE=1 or no compiler)")
        monkeypatch.setattr(wire_batch, "_c", NATIVE)
        return request.param
    monkeypatch.setattr(wire_batch, "_c", None)
    if request.param == "numpy":
        wire_batch.load_numpy()
    else:
        monkeypatch.setattr(wire_batch, "np", None)
        monkeypatch.setattr(wire_batch, "_asked", [True])  # (the import is under way)
    return request.param


# ------------------------------------------------------------------ wire
def test_train_is_the_run_encoded_segment_by_segment():
    run = a_run()
    train = encode_run(5, run)
    assert train.size == 20 + 1000 + 4
    expected = [encode(5, 6, seg) for seg in run.segments()]
    assert train.datagrams() == expected
    assert bytes(train) == b"".join(expected)
    # sequence numbers wrap inside the run; only the last carries PSH
    segs = [decode(d)[2] for d in expected]
    assert [s.seq for s in segs][:5] == [(0xFFFF_F000 + i * 1000) % 2**32 for i in range(5)]
    assert [s.flags for s in segs] == [ACK] * 10 + [ACK | PSH]
    assert len(segs[-1].payload) == 123


@pytest.mark.parametrize("length", [1000, 3 * 1000 + 5, 7 * 1000, 20 * 1000 + 1, 64 * 1000],
                         ids=["one", "few-and-tail", "loop-max", "vector-and-tail", "vector-64"])
def test_both_encoders_write_what_encode_writes(length, vector):
    run = a_run(length=length)
    train = encode_run(5, run)
    assert train.datagrams() == [encode(5, 6, seg) for seg in run.segments()]


def test_train_checksums_are_each_datagrams_own(vector):
    train = encode_run(5, a_run(length=8 * 1000))  # no short tail
    for d in train.datagrams():
        assert crc32c(d[:-4]).to_bytes(4, "little") == d[-4:]
        assert crc32c(d) == CRC_RESIDUE


def batch(datagrams):
    """A GRO-shaped buffer of equal-size datagrams (the last may be shorter)."""
    return b"".join(datagrams), len(datagrams[0])


@pytest.mark.parametrize("length", [10 * 1000 + 123, 3 * 1000, 40 * 1000, 63 * 1000 + 1],
                         ids=["tail", "few-rows", "rows", "64-rows-and-tail"])
def test_scan_groups_a_train_into_one_run(length, vector):
    train = encode_run(5, a_run(length=length))
    runs = scan(memoryview(train), train.size)
    assert sum(len(rows(r[7], train.size)) for r in runs) == -(-length // 1000)
    dst, seq, ack, wnd, ts0, ts1, joined, raw = runs[0]
    assert (dst, seq, ack, wnd, ts0, ts1) == (5, 0xFFFF_F000, 77, 512, 1234, 1234)
    assert b"".join(r[6] for r in runs) == bytes(a_run(length=length).buf[7:7 + length])
    # a short tail may follow as its own run, which continues the first
    assert all(r[6] is not None for r in runs) and len(runs) <= 2
    assert [bytes(d) for r in runs for d in rows(r[7], train.size)] == train.datagrams()


def test_batch_residue_is_the_crc_of_any_correct_batch():
    for rows in (1, 2, 7, 64, 70):
        dgs = encode_run(5, a_run(length=rows * 1000)).datagrams()
        assert crc32c(b"".join(dgs)) == batch_residue(len(dgs[0]), rows)


def lengths(runs, seg):
    return [(r[0], None if r[6] is None else len(rows(r[7], seg))) for r in runs]


def test_scan_breaks_runs_at_anything_unusual(vector):
    rows = 10
    dgs = encode_run(5, a_run(length=rows * 1000)).datagrams()
    bad = bytearray(dgs[3])
    bad[50] ^= 1  # payload bit flip: the checksum fails
    other_conn = encode(9, 6, Segment(5, 77, ACK, 512, b"x" * 1000, tsval=1, tsecr=0))
    syn_sized = encode(0, 6, Segment(1, 0, SYN, 100, b"s" * 980, tsval=1, tsecr=0, mss=1000))
    assert len(other_conn) == len(syn_sized) == len(dgs[0])
    # dgs[2] missing: not contiguous; an ACK change splits a run too
    moved_ack = encode(5, 6, Segment(decode(dgs[rows - 1])[2].seq, 78, ACK, 512, b"a" * 1000,
                                     tsval=1, tsecr=0))
    buf, seg = batch(dgs[:2] + [dgs[3], bytes(bad)] + [other_conn, syn_sized] + dgs[4:rows - 1]
                     + [moved_ack])
    runs = scan(buf, seg)
    assert lengths(runs, seg) == [(5, 2), (5, 1), (0, None), (9, 1), (0, None), (5, rows - 5), (5, 1)]
    assert bytes(runs[2][7]) == bytes(bad)  # left for decode, which rejects it
    assert bytes(runs[4][7]) == syn_sized


def requests_of_many_connections(count=12, size=31):
    """One small data segment from each of `count` connections, of equal size
    (a tunnel's requests from many clients, arriving in one GRO batch)."""
    return [encode(100 + i, 6, Segment(1000 * i, 7 + i, ACK | PSH, 512, bytes([65 + i]) * size,
                                       tsval=i, tsecr=0)) for i in range(count)]


@pytest.mark.parametrize("count", [3, 12], ids=["few", "vector-sized"])
def test_scan_of_many_connections_checks_the_rows_in_one_call(count, vector, monkeypatch):
    dgs = requests_of_many_connections(count)
    buf, seg = batch(dgs)
    batch_residue(seg, count)  # (its table, made once per size)
    calls = []
    real = wire_batch.crc32c
    monkeypatch.setattr(wire_batch, "crc32c", lambda d, *a: calls.append(len(d)) or real(d, *a))
    runs = scan(buf, seg)
    assert calls == [len(buf)]  # the batch, not each row
    # each a run of one, as each scanned alone
    monkeypatch.setattr(wire_batch, "crc32c", real)
    alone = [r for d in dgs for r in scan(d, 0)]
    assert [r[:7] for r in runs] == [r[:7] for r in alone]
    assert [bytes(r[7]) for r in runs] == [bytes(r[7]) for r in alone] == dgs
    assert [(r[0], r[6]) for r in runs] == [(100 + i, bytes([65 + i]) * 31) for i in range(count)]


def test_scan_of_many_connections_still_rejects_a_corrupted_row(vector):
    dgs = requests_of_many_connections(12)
    bad = bytearray(dgs[5])
    bad[30] ^= 0x10
    buf, seg = batch(dgs[:5] + [bytes(bad)] + dgs[6:])
    runs = scan(buf, seg)
    assert [r[0] for r in runs] == [100 + i for i in range(5)] + [0] + [106 + i for i in range(6)]
    assert runs[5][6] is None and bytes(runs[5][7]) == bytes(bad)  # left for decode, which rejects it
    with pytest.raises(Exception):
        decode(bytes(bad))


def test_scan_leaves_options_and_pure_acks_to_decode():
    sack = encode(5, 6, Segment(1, 2, ACK, 10, b"abc", tsval=1, tsecr=2, sack=((10, 20),)))
    pure_ack = encode(5, 6, Segment(1, 2, ACK, 10, b"", tsval=1, tsecr=2))
    no_ts = encode(5, 6, Segment(1, 2, ACK, 10, b"abc"))
    for d in (sack, pure_ack, no_ts):
        assert [r[6] for r in scan(d, 0)] == [None]
    # a batch of identical pure ACKs is no run either
    assert [r[6] for r in scan(pure_ack * 10, len(pure_ack))] == [None] * 10


def test_coalesce_groups_as_gro_does():
    a, b, short, big = b"a" * 100, b"b" * 100, b"c" * 40, b"d" * 300
    groups = coalesce([a, b, short, a, big, a, a])
    # a larger datagram starts a new group; a shorter one ends its group
    assert groups == [(a + b + short, 100), (a, 100), (big + a, 300), (a, 100)]
    assert coalesce([a] * 70) == [(a * 64, 100), (a * 6, 100)]  # 64 segments at most
    for buf, seg in coalesce([big] * 300):
        assert len(buf) <= 65535


# ------------------------------------------------------------------ endpoint / connection
def transfer(gro: bool, link: LinkConfig, size=600_000, seed=3):
    sim = Simulator(seed=seed, default_link=link, gro=gro)
    a = sim.add_node(A, Endpoint(Config(), rng=sim.make_rng("a")))
    b = sim.add_node(B, Endpoint(Config(), rng=sim.make_rng("b")))
    b.listen(4)
    conn = a.connect(B, sim.now)
    payload = data(size, seed)
    sent = [0]

    def pump():
        if sent[0] < size:
            sent[0] += conn.send(payload[sent[0]:sent[0] + 100_000])
            sim.call_later(0.001, pump)

    sim.call_at(0.0, pump)
    got = bytearray()
    server = []

    def drain():
        if not server:
            c = b.accept()
            if c is not None:
                server.append(c)
        if server:
            got.extend(server[0].recv(1 << 20))
        if len(got) < size:
            sim.call_later(0.001, drain)

    sim.call_at(0.0, drain)
    sim.run(until=60, stop=lambda: len(got) >= size)
    return bytes(got) == payload, server[0].stats, conn.stats


@pytest.mark.parametrize("link", [LinkConfig(delay=0.005), LinkConfig(delay=0.005, loss=0.03),
                                  LinkConfig(delay=0.005, reorder=0.05, reorder_delay=0.003, duplicate=0.02)],
                         ids=["clean", "loss", "reorder+dup"])
def test_fast_path_transfer_equals_the_slow_path(link):
    ok_fast, srv_fast, cli_fast = transfer(True, link)
    ok_slow, srv_slow, _ = transfer(False, link)
    assert ok_fast and ok_slow
    assert srv_slow.fast_path_segments == 0
    assert srv_fast.fast_path_segments > 0  # the fast path really ran
    assert cli_fast.runs_sent > 0
    assert srv_fast.bytes_received == srv_slow.bytes_received == 600_000


def established(config=None):
    return established_endpoints(config)


def test_receive_batch_keeps_nothing_of_the_callers_buffer():
    a, b, ca, cb = established()
    message = data(9 * ca.mss + 500, 9)  # within the initial window: one run, its last segment short
    ca.send(message)
    out = a.datagrams_to_send(0.01, trains=True)
    (train, _addr), = [o for o in out if len(o[0]) > 2000]
    buf = bytearray(train)
    b.receive_batch(memoryview(buf), train.size, "A", 0.02)
    buf[:] = b"\xee" * len(buf)  # the adapter reuses its buffer at once
    assert cb.stats.fast_path_segments == 10
    assert cb.recv(100_000) == message


def _without_trailers(train) -> bytearray:
    """The train's datagrams with their CRC trailers overwritten, as an
    encrypted endpoint hands over rows it opened (gannet.crypto)."""
    buf = bytearray(train)
    size = getattr(train, "size", len(buf))  # (one datagram leaves as bytes)
    for off in range(size - 4, len(buf), size):
        buf[off : off + 4] = b"\xee" * 4
    buf[-4:] = b"\xee" * 4  # (a short last row)
    return buf


@pytest.mark.parametrize("rows", [1, 3, 10])
def test_authenticated_datagrams_are_taken_without_their_crc(rows, vector):
    a, b, ca, cb = established()
    message = data((rows - 1) * ca.mss + 500, rows)
    ca.send(message)
    (train, _addr), = [o for o in a.datagrams_to_send(0.01, trains=True)]
    bare = _without_trailers(train)
    seg = getattr(train, "size", 0)
    dropped = b.stats.malformed_dropped
    b.receive_batch(memoryview(bare), seg, "A", 0.02)  # not vouched for: refused, counted
    assert cb.readable_bytes == 0 and b.stats.malformed_dropped == dropped + rows
    b.receive_batch(memoryview(bare), seg, "A", 0.02, True)
    assert cb.recv(100_000) == message
    # and one datagram alone, long form included (the FIN)
    ca.close(0.03)
    (fin, _addr), = a.datagrams_to_send(0.03, trains=True)
    bare = bytearray(fin)
    bare[-4:] = b"\xee" * 4
    b.receive_batch(bytes(bare), 0, "A", 0.04)
    assert cb.state == State.ESTABLISHED
    b.receive_batch(bytes(bare), 0, "A", 0.04, True)
    assert cb.state == State.CLOSE_WAIT


def test_fast_path_declines_and_changes_nothing():
    a, b, ca, cb = established()
    ca.send(data(5000, 1))
    (train, _), = a.datagrams_to_send(0.01, trains=True)
    (run,) = scan(train, train.size)
    dst, seq, ack, wnd, ts0, ts1, joined, raw = run
    runargs = (joined, len(rows(raw, train.size)), len(rows(raw, train.size)[-1]) - 24, 0.02)
    before = (cb.rcv_nxt, cb.readable_bytes, cb.stats.segments_received)
    # not the next expected byte
    assert not cb.on_data_run((seq + 1) & 0xFFFFFFFF, ack, wnd, ts0, ts1, *runargs)
    # an ACK we do not have yet
    assert not cb.on_data_run(seq, (ack + 1) & 0xFFFFFFFF, wnd, ts0, ts1, *runargs)
    # a window change
    assert not cb.on_data_run(seq, ack, wnd - 1, ts0, ts1, *runargs)
    # timestamps older than TS.Recent: PAWS has to judge
    assert not cb.on_data_run(seq, ack, wnd, (ts0 - 10**6) & 0xFFFFFFFF, ts1, *runargs)
    assert (cb.rcv_nxt, cb.readable_bytes, cb.stats.segments_received) == before
    # the same datagrams one by one still arrive (the endpoint's fallback)
    b.receive_batch(train, train.size, "A", 0.02)
    assert cb.recv(10_000) == data(5000, 1)


def test_receive_window_grows_with_what_the_application_reads():
    a, b, ca, cb = established(Config(pmtud=False))
    start = cb.rcv._space
    assert start == 1 << 20  # autotuning starts at 1 MiB (window_size is the ceiling)
    now = 0.0
    chunk = data(200_000, 5)
    for i in range(40):
        now += 0.01
        ca.send(chunk)
        for d, _ in a.datagrams_to_send(now):
            b.receive_datagram(d, "A", now)
        assert len(cb.recv(1 << 22)) > 0  # a reader that keeps up
        for d, _ in b.datagrams_to_send(now):
            a.receive_datagram(d, "B", now)
    assert cb.rcv._space > start
    assert cb.rcv._space <= Config().window_size


def test_a_slow_reader_keeps_the_window_small():
    a, b, ca, cb = established(Config(pmtud=False))
    now = 0.0
    for i in range(40):
        now += 0.01
        ca.send(data(200_000, i))
        for d, _ in a.datagrams_to_send(now):
            b.receive_datagram(d, "A", now)
        for d, _ in b.datagrams_to_send(now):
            a.receive_datagram(d, "B", now)
    # nothing read: the window did not grow and what is buffered fits in it
    assert cb.rcv._space == 1 << 20
    assert cb.readable_bytes <= 1 << 20


def test_fixed_window_without_autotuning():
    a, b, ca, cb = established(Config(pmtud=False, autotune=False, window_size=256 * 1024))
    assert cb.rcv._space == 256 * 1024
    ca.cc.cwnd = 50_000_000  # even a huge window does not grow a fixed send buffer
    assert ca.snd.send_buffer_limit() == Config().send_buffer_size
    assert ca.send(data(5_000_000, 1)) == Config().send_buffer_size


# ------------------------------------------------------------------ hostile batches
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(count=st.integers(1, 20), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=6),
       refix_crc=st.booleans())
def test_scan_of_a_damaged_batch_agrees_with_decode(count, flips, refix_crc):
    """Any damage to a GRO batch (header fields, payload, checksums; with the
    CRCs recomputed, so the header checks must catch it) gives runs whose
    data is exactly what decode accepts, datagram by datagram."""
    train = bytearray(encode_run(5, a_run(length=count * 1000)))
    size = 20 + 1000 + 4
    for pos, mask in flips:
        train[pos % len(train)] ^= mask
    if refix_crc:
        for off in range(0, len(train), size):
            body = train[off:off + size - 4]
            train[off + size - 4:off + size] = crc32c(bytes(body)).to_bytes(4, "little")
    for dst, seq, ack, wnd, ts0, ts1, joined, raw in scan(bytes(train), size):
        if joined is None:
            assert len(raw) <= size
            continue
        segs = [decode(d) for d in rows(raw, size)]  # a run's datagrams all decode
        assert {(d, s) for d, s, _ in segs} == {(dst, None)}
        assert b"".join(seg.payload for _, _, seg in segs) == joined
        assert all(seg.ack == ack and seg.wnd == wnd for _, _, seg in segs)
        assert segs[0][2].seq == seq and segs[0][2].tsval == ts0 and segs[-1][2].tsval == ts1

