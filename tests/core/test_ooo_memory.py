"""Issue 12 finding 2: overlapping out-of-order segments must not make the
receiver hold more memory than its window.

A peer leaves a hole at RCV.NXT and sends 1,400-byte segments that overlap
the previous one in all but one new byte. Each used to be stored whole in
the out-of-order queue (1,400 bytes held per byte of window); now only the
bytes not yet held are kept, each piece charged its overhead, within twice
the offered window."""

import tracemalloc

from corepair import established_pair, exchange

from gannet.config import Config
from gannet.wire.segment import ACK, Segment

MASK = 0xFFFFFFFF
WINDOW = 65536
SIZE = 1400


def test_overlapping_out_of_order_segments_stay_within_twice_the_window():
    a, b = established_pair(Config(window_size=WINDOW, autotune=False))
    a.conn.send(b"x")
    now = exchange(a, b, 0.02)  # b has now offered its whole window
    b.conn.recv(1)
    recv = b.conn
    base = recv.rcv_nxt
    window = recv.rcv.rcv_adv - base
    assert window >= WINDOW // 2
    stream = bytes(range(256)) * (2 * WINDOW // 256 + 16)

    def forged(offset: int, length: int) -> Segment:
        seg = Segment((base + offset) & MASK, recv.snd_nxt & MASK, ACK, 0xFFFF,
                      stream[offset:offset + length])
        seg.tsval = recv.rcv.ts_recent
        return seg

    tracemalloc.start()
    try:
        start_mem = tracemalloc.get_traced_memory()[0]
        peak = 0
        # Byte 0 is the hole; segment i covers [1 + i, 1 + i + SIZE): one new
        # byte each after the first.
        for i in range(window):
            recv.on_segment(forged(1 + i, SIZE), now)
            if i % 512 == 0:
                held = tracemalloc.get_traced_memory()[0] - start_mem
                peak = max(peak, held)
                assert held <= 2 * window, f"{held} bytes held after {i} segments (window {window})"
            if 1 + i + SIZE >= window:
                break
        peak = max(peak, tracemalloc.get_traced_memory()[0] - start_mem)
    finally:
        tracemalloc.stop()
    assert peak <= 2 * window
    assert recv.rcv.ooo_ranges.total <= window
    assert recv.stats.ooo_dropped > 0  # the slivers past the budget were refused
    held = recv.rcv.ooo_ranges.total

    # The hole is filled: everything held is delivered, byte-exact, in order.
    recv.on_segment(forged(0, 1), now)
    got = recv.recv(10 * WINDOW)
    assert len(got) == 1 + held
    assert got == stream[:1 + held]
    assert not recv.rcv.ooo


def test_partly_new_segments_keep_only_their_new_bytes():
    a, b = established_pair(Config(window_size=WINDOW, autotune=False))
    a.conn.send(b"x")
    now = exchange(a, b, 0.02)
    b.conn.recv(1)
    recv = b.conn
    base = recv.rcv_nxt
    stream = bytes(range(256)) * 64

    def seg(offset: int, length: int) -> Segment:
        s = Segment((base + offset) & MASK, recv.snd_nxt & MASK, ACK, 0xFFFF, stream[offset:offset + length])
        s.tsval = recv.rcv.ts_recent
        return s

    recv.on_segment(seg(1000, 1000), now)
    recv.on_segment(seg(3000, 1000), now)
    recv.on_segment(seg(500, 4000), now)  # covers both, adds [500,1000) [2000,3000) [4000,4500)
    assert sorted((k, len(v)) for k, v in recv.rcv.ooo.items()) == [
        (base + 500, 500), (base + 1000, 1000), (base + 2000, 1000), (base + 3000, 1000), (base + 4000, 500)]
    recv.on_segment(seg(1500, 1000), now)  # nothing new
    assert recv.stats.duplicate_segments >= 1
    recv.on_segment(seg(0, 500), now)
    assert recv.recv(10_000) == stream[:4500]
