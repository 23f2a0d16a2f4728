"""Junk datagrams aimed at a live server do not disturb its connections:
three concurrent transfers, each verified, while the junk is counted."""

import hashlib
import random
import socket
import threading
import time

import pytest

import gannet
from gannet.wire.datagram import encode
from gannet.wire.segment import ACK, Segment

from gannet_io_helpers import pattern

pytestmark = pytest.mark.timeout(40)


def junk_datagrams(rng: random.Random, count: int):
    """Random bytes, truncated and bit-flipped copies of well-formed datagrams."""
    for i in range(count):
        kind = i % 3
        if kind == 0:
            yield rng.randbytes(rng.randint(0, 1500))
            continue
        good = encode(rng.getrandbits(32) or 1, rng.getrandbits(32) or 1,
                      Segment(rng.getrandbits(32), rng.getrandbits(32), ACK, 1000,
                              rng.randbytes(rng.randint(0, 1200))))
        if kind == 1:
            yield good[: rng.randint(0, len(good) - 1)]
        else:
            flipped = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                bit = rng.randrange(len(flipped) * 8)
                flipped[bit // 8] ^= 1 << (bit % 8)
            yield bytes(flipped)


CLIENTS = 3


def test_transfers_survive_junk_and_stats_count_it():
    datas = [pattern(2 << 20, 7 + i) for i in range(CLIENTS)]
    ls = gannet.Socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    addr = ls.getsockname()
    results = {}

    def serve(conn):
        with conn:
            h, n = hashlib.sha256(), 0
            while chunk := conn.recv(1 << 20):
                h.update(chunk)
                n += len(chunk)
            results[h.digest()] = n
            conn.sendall(b"done")

    def server():
        workers = []
        for _ in range(CLIENTS):
            conn, _ = ls.accept()
            workers.append(threading.Thread(target=serve, args=(conn,)))
            workers[-1].start()
        for w in workers:
            w.join(20)

    st = threading.Thread(target=server)
    st.start()

    stop = threading.Event()
    sent = [0]

    def attacker():
        rng = random.Random(1234)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            while not stop.is_set() and sent[0] < 3000:
                for dgram in junk_datagrams(rng, 30):
                    u.sendto(dgram, addr)
                    sent[0] += 1
                time.sleep(0.001)

    replies = {}

    def client(i):
        with gannet.Socket() as s:
            s.settimeout(20)
            s.connect(addr)
            time.sleep(0.05)  # the attack is under way
            s.sendall(datas[i])
            s.shutdown(gannet.SHUT_WR)
            replies[i] = s.recv(10)

    at = threading.Thread(target=attacker)
    at.start()
    clients = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    try:
        for c in clients:
            c.start()
        for c in clients:
            c.join(30)
    finally:
        stop.set()
        at.join(5)
        st.join(10)
    time.sleep(0.1)
    stats = ls.endpoint_stats
    ls.close()
    assert replies == {i: b"done" for i in range(CLIENTS)}
    # Every connection got its own bytes, exactly.
    assert results == {hashlib.sha256(d).digest(): len(d) for d in datas}
    # Every junk datagram fails validation (checksum, length); UDP may lose a
    # few on the way, so allow a little slack.
    assert sent[0] > 300
    assert stats.malformed_dropped >= 0.9 * sent[0]
    assert stats.malformed_dropped <= sent[0]
