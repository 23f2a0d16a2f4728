"""A PMTU probe the local stack refuses (EMSGSIZE) ends the search at once."""

import random

from gannet.config import Config
from test_batch_path import established as _established

PROBE = 8972


def established():
    # a window of twelve probes: the probe goes in the first flight
    return _established(Config(initial_window=100))


def test_a_locally_refused_probe_is_resent_at_once_and_ends_the_search():
    a, b, ca, cb = established()
    payload = random.Random(5).randbytes(300_000)
    ca.send(payload)
    now, out = 0.01, []
    while not any(len(d) == PROBE for d, _ in out) and now < 0.05:  # paced: a few wake-ups
        out += a.datagrams_to_send(now)
        now += 0.001
    probes = [(d, addr) for d, addr in out if len(d) == PROBE]
    assert len(probes) == 1
    # The adapter's send of the probe fails with EMSGSIZE: it tells the endpoint.
    assert a.datagram_too_big(*probes[0])
    assert ca.snd.pmtu_ladder == () and ca.snd.pmtu_probe is None  # nothing larger will pass either
    assert ca.stats.pmtu_local_failures == 1
    resent = a.datagrams_to_send(now)  # the probe's data goes again now, in full-size segments
    assert resent and all(len(d) <= 1472 for d, _ in resent)
    assert sum(len(d) - 24 for d, _ in resent) >= PROBE - 76
    got = b""
    for d, _ in [o for o in out if o not in probes] + resent:
        b.receive_datagram(d, "A", now + 0.001)
    for _ in range(50):
        now += 0.002
        got += cb.recv(1 << 20)
        for d, _ in b.datagrams_to_send(now):
            a.receive_datagram(d, "B", now)
        for d, _ in a.datagrams_to_send(now):
            assert len(d) <= 1472  # no more probes
            b.receive_datagram(d, "A", now)
    got += cb.recv(1 << 20)
    assert got == payload
    assert ca.stats.fast_recoveries == 0 and ca.stats.timeouts == 0  # no loss detection was needed


def test_other_refused_datagrams_change_nothing():
    a, b, ca, cb = established()
    ca.send(bytes(50_000))
    out, now = [], 0.01
    while not any(len(d) == PROBE for d, _ in out) and now < 0.05:
        out += a.datagrams_to_send(now)
        now += 0.001
    small = [(d, addr) for d, addr in out if len(d) < PROBE]
    assert not a.datagram_too_big(*small[0])  # not the probe
    assert not a.datagram_too_big(b"\x83\x10", "B")  # too short to name a connection
    assert not a.datagram_too_big(small[0][0], "elsewhere")  # no connection to that address
    assert ca.snd.pmtu_probe is not None and ca.stats.pmtu_local_failures == 0
