"""The batch path: segment runs encoded as trains, GRO batches scanned into
runs, and the connection's in-order fast path - equivalent to one by one."""

import random

import pytest

from gannet.config import Config
from gannet.core.endpoint import Endpoint
from gannet.core.states import State
from gannet.sim import LinkConfig, Simulator
from gannet.wire import decode, encode
from gannet.wire.batch import encode_run, scan
from gannet.wire.segment import ACK, PSH, SYN, Segment, SegmentRun

A = ("10.0.0.1", 1000)
B = ("10.0.0.2", 2000)


def data(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def a_run(length=10 * 1000 + 123, mss=1000, seq=0xFFFF_F000, last_flags=ACK | PSH):
    buf = bytearray(b"?" * 7 + data(length) + b"!" * 5)
    return SegmentRun(seq, 77, ACK, last_flags, 512, 1234, 99, buf, 7, length, mss)


# ------------------------------------------------------------------ wire
def test_train_is_the_run_encoded_segment_by_segment():
    run = a_run()
    train = encode_run(5, 6, run)
    assert train.size == 36 + 1000 + 4
    expected = [encode(5, 6, seg) for seg in run.segments()]
    assert train.datagrams() == expected
    assert bytes(train) == b"".join(expected)
    # sequence numbers wrap inside the run; only the last carries PSH
    segs = [decode(d)[2] for d in expected]
    assert [s.seq for s in segs][:5] == [(0xFFFF_F000 + i * 1000) % 2**32 for i in range(5)]
    assert [s.flags for s in segs] == [ACK] * 10 + [ACK | PSH]
    assert len(segs[-1].payload) == 123


def test_scan_groups_a_train_into_one_run():
    train = encode_run(5, 6, a_run())
    (run,) = scan(train.datagrams())
    dst, src, seq, ack, wnd, ts0, ts1, payloads, raw = run
    assert (dst, src, seq, ack, wnd, ts0, ts1) == (5, 6, 0xFFFF_F000, 77, 512, 1234, 1234)
    assert b"".join(payloads) == bytes(a_run().buf[7:7 + 10_123])
    assert len(raw) == 11


def test_scan_breaks_runs_at_anything_unusual():
    dgs = encode_run(5, 6, a_run()).datagrams()
    bad = bytearray(dgs[3])
    bad[50] ^= 1  # payload bit flip: the checksum fails
    syn = encode(0, 6, Segment(1, 0, SYN, 100, tsval=1, tsecr=0, mss=1000))
    other_conn = encode(9, 6, Segment(5, 77, ACK, 512, b"x" * 10, tsval=1, tsecr=0))
    gap = dgs[6:]  # dgs[5] missing: not contiguous
    batch = dgs[:3] + [bytes(bad)] + [dgs[4]] + [syn, other_conn] + gap
    runs = scan(batch)
    shapes = [(r[0], None if r[7] is None else len(r[7])) for r in runs]
    assert shapes == [(5, 3), (0, None), (5, 1), (0, None), (9, 1), (5, 5)]
    assert runs[1][8] == [bytes(bad)]  # left for decode, which rejects it
    assert runs[3][8] == [syn]


def test_scan_leaves_options_and_pure_acks_to_decode():
    sack = encode(5, 6, Segment(1, 2, ACK, 10, b"abc", tsval=1, tsecr=2, sack=((10, 20),)))
    pure_ack = encode(5, 6, Segment(1, 2, ACK, 10, b"", tsval=1, tsecr=2))
    no_ts = encode(5, 6, Segment(1, 2, ACK, 10, b"abc"))
    assert [r[7] for r in scan([sack, pure_ack, no_ts])] == [None, None, None]


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
    cfg = config or Config(pmtud=False)
    a, b = Endpoint(cfg, random.Random(1)), Endpoint(cfg, random.Random(2))
    b.listen(4)
    ca = a.connect("B", 0.0)
    for _ in range(3):
        for d, _addr in a.datagrams_to_send(0.0):
            b.receive_datagram(d, "A", 0.0)
        for d, _addr in b.datagrams_to_send(0.0):
            a.receive_datagram(d, "B", 0.0)
    cb = b.accept()
    assert ca.state == cb.state == State.ESTABLISHED
    return a, b, ca, cb


def test_receive_batch_keeps_nothing_of_the_callers_buffer():
    a, b, ca, cb = established()
    message = data(9 * ca.mss + 500, 9)  # within the initial window: one run, its last segment short
    ca.send(message)
    out = a.datagrams_to_send(0.01, trains=True)
    (train, _addr), = [o for o in out if len(o[0]) > 2000]
    buf = bytearray(train)
    views = [memoryview(buf)[i:i + train.size] for i in range(0, len(buf), train.size)]
    b.receive_batch(views, "A", 0.02)
    buf[:] = b"\xee" * len(buf)  # the adapter reuses its buffer at once
    assert cb.stats.fast_path_segments == len(views)
    assert cb.recv(100_000) == message


def test_fast_path_declines_and_changes_nothing():
    a, b, ca, cb = established()
    ca.send(data(5000, 1))
    (train, _), = a.datagrams_to_send(0.01, trains=True)
    (run,) = scan(train.datagrams())
    dst, src, seq, ack, wnd, ts0, ts1, payloads, raw = run
    before = (cb.rcv_nxt, cb.readable_bytes, cb.stats.segments_received)
    # not the next expected byte
    assert not cb.on_data_run((seq + 1) & 0xFFFFFFFF, ack, wnd, ts0, ts1, payloads, 0.02)
    # an ACK we do not have yet
    assert not cb.on_data_run(seq, (ack + 1) & 0xFFFFFFFF, wnd, ts0, ts1, payloads, 0.02)
    # a window change
    assert not cb.on_data_run(seq, ack, wnd - 1, ts0, ts1, payloads, 0.02)
    # timestamps older than TS.Recent: PAWS has to judge
    assert not cb.on_data_run(seq, ack, wnd, (ts0 - 10**6) & 0xFFFFFFFF, ts1, payloads, 0.02)
    assert (cb.rcv_nxt, cb.readable_bytes, cb.stats.segments_received) == before
    # the same datagrams one by one still arrive (the endpoint's fallback)
    b.receive_batch(raw, "A", 0.02)
    assert cb.recv(10_000) == data(5000, 1)


def test_receive_window_grows_with_what_the_application_reads():
    a, b, ca, cb = established(Config(pmtud=False))
    start = cb._rcv_space
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
    assert cb._rcv_space > start
    assert cb._rcv_space <= Config().window_size


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
    assert cb._rcv_space == 1 << 20
    assert cb.readable_bytes <= 1 << 20


def test_fixed_window_without_autotuning():
    a, b, ca, cb = established(Config(pmtud=False, autotune=False, window_size=256 * 1024))
    assert cb._rcv_space == 256 * 1024
    ca.cc.cwnd = 50_000_000  # even a huge window does not grow a fixed send buffer
    assert ca._send_buffer_limit() == Config().send_buffer_size
    assert ca.send(data(5_000_000, 1)) == Config().send_buffer_size
