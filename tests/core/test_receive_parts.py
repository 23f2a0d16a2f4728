"""Endpoint.receive_parts: a datagram received in three parts (its short
header, its payload as a bytes object of its own, its CRC32C trailer) has
the effect `receive_datagram` has on the whole of it, and a short-form
segment's payload is kept as the object it came in, not a copy."""

from __future__ import annotations

import random

from gannet.config import Config
from corepair import established_endpoints
from gannet.core.endpoint import Endpoint
from gannet.wire.datagram import SHORT_SIZE, TRAILER_SIZE, peek_short, peek_short_parts


def _parts(d) -> tuple[bytes, bytes, bytes]:
    d = bytes(d)
    return d[:SHORT_SIZE], d[SHORT_SIZE:-TRAILER_SIZE], d[-TRAILER_SIZE:]


def _transfer(split: bool, message: bytes, drop_every: int = 0):
    """`message` from a to b over a lossless (or every n-th datagram lost)
    link, b fed whole datagrams or their parts; returns what b read, b's
    stats and every datagram b sent."""
    cfg = Config(pmtud=False, max_datagram_size=20000)
    a, b = Endpoint(cfg, random.Random(1)), Endpoint(cfg, random.Random(2))
    b.listen(4)
    ca = a.connect("B", 0.0)
    ca.send(message)
    now, got, sent_by_b, cb, k = 0.0, [], [], None, 0
    for _ in range(400):
        now += 0.002
        for d, _addr in a.datagrams_to_send(now):
            k += 1
            if drop_every and k % drop_every == 0:
                continue
            if split:
                b.receive_parts(*_parts(d), "A", now)
            else:
                b.receive_datagram(bytes(d), "A", now)
        for d, _addr in b.datagrams_to_send(now):
            sent_by_b.append(bytes(d))
            a.receive_datagram(d, "B", now)
        if cb is None:
            cb = b.accept()
        if cb is not None:
            while chunk := cb.recv(1 << 20):
                got.append(chunk)
        for ep in (a, b):
            t = ep.get_timer()
            if t is not None and t <= now:
                ep.handle_timer(now)
        if sum(map(len, got)) == len(message):
            break
    return b"".join(got), b.stats.datagrams_received, b.stats.malformed_dropped, sent_by_b


def test_parts_have_the_effect_of_the_whole_datagram():
    message = random.Random(5).randbytes(300_000)
    whole = _transfer(False, message)
    parts = _transfer(True, message)
    assert whole[0] == message
    assert parts == whole  # the same bytes read, the same counts, the same datagrams sent back


def test_parts_have_the_effect_of_the_whole_datagram_with_losses():
    message = random.Random(6).randbytes(200_000)
    whole = _transfer(False, message, drop_every=7)
    assert whole[0] == message
    assert _transfer(True, message, drop_every=7) == whole


def _established():
    return established_endpoints(Config(pmtud=False, max_datagram_size=20000))


def test_the_payload_is_kept_as_the_object_it_came_in():
    a, b, ca, cb = _established()
    ca.send(random.Random(7).randbytes(ca.mss))
    (d, _addr), = a.datagrams_to_send(0.01)
    head, payload, trailer = _parts(d)
    b.receive_parts(head, payload, trailer, "A", 0.02)
    assert cb.recv(1 << 20) is payload


def test_a_damaged_datagram_in_parts_is_dropped_and_counted():
    a, b, ca, cb = _established()
    ca.send(random.Random(8).randbytes(ca.mss))
    (d, _addr), = a.datagrams_to_send(0.01)
    head, payload, trailer = _parts(d)
    damaged = bytearray(payload)
    damaged[100] ^= 1
    before = b.stats.malformed_dropped
    b.receive_parts(head, bytes(damaged), trailer, "A", 0.02)
    assert b.stats.malformed_dropped == before + 1
    assert cb.recv(1 << 20) == b""
    b.receive_parts(head, payload, trailer, "A", 0.03)  # the undamaged one is taken
    assert cb.recv(1 << 20) == payload


def test_peek_short_parts_reads_what_peek_short_reads():
    a, b, ca, cb = _established()
    ca.send(random.Random(9).randbytes(3000))
    for d, _addr in a.datagrams_to_send(0.01):
        assert peek_short_parts(*_parts(d)) == peek_short(bytes(d)) is not None
    head, payload, trailer = _parts(d)
    assert peek_short_parts(head[:-1], payload, trailer) is None  # not a short header's size
    assert peek_short_parts(head, payload, trailer[:3]) is None
    assert peek_short_parts(head, payload + b"x", trailer) is None  # the CRC32C fails
