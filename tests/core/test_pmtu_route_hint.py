"""Path MTU discovery with the local route's MTU as a hint (RFC 8899
5.1.2, 5.3.2): the adapter tells the core endpoint what the route toward
the peer carries; the search is capped there and tries it first, falling
back to the usual steps below it if it fails. Without a hint the ladder
climbs from the smallest step, as before."""

import random

from gannet.config import Config
from gannet.core.endpoint import Endpoint
from gannet.core.sender import PMTU_PROBE_SIZES, pmtu_ladder
from gannet.core.states import State

LOOPBACK = 65507  # IPv4 loopback's IP_MTU (65535) less the IP and UDP headers
PAYLOAD = random.Random(15).randbytes(6_000_000)
LONG = PAYLOAD * 3


def test_the_ladder_with_and_without_a_route_mtu():
    assert pmtu_ladder(1472, 65000) == PMTU_PROBE_SIZES
    assert pmtu_ladder(1472, 65000, True) == (65000, 8972, 16384, 32768)
    assert pmtu_ladder(1472, 65507, True) == (65507, 8972, 16384, 32768, 65000)
    assert pmtu_ladder(1472, 65507) == PMTU_PROBE_SIZES  # (no hint: the steps only, as before)
    assert pmtu_ladder(1472, 9000, True) == (9000, 8972)
    assert pmtu_ladder(1472, 20000) == (8972, 16384, 20000)
    assert pmtu_ladder(1472, 1472, True) == pmtu_ladder(1472, 1400, True) == ()


def _pair(hint: int | None, config: Config):
    a, b = Endpoint(config, random.Random(1)), Endpoint(config, random.Random(2))
    if hint is not None:
        a.route_mtu = b.route_mtu = lambda addr: hint
    b.listen(4)
    ca = a.connect("B", 0.0)
    for _ in range(3):
        for d, _addr in a.datagrams_to_send(0.0):
            b.receive_datagram(d, "A", 0.0)
        for d, _addr in b.datagrams_to_send(0.0):
            a.receive_datagram(d, "B", 0.0)
    cb = b.accept()
    assert cb is not None and ca.state == cb.state == State.ESTABLISHED
    return a, b, ca, cb


def _transfer(hint: int | None, path_mtu: int = 65507, payload: bytes = PAYLOAD):
    """Send `payload` from a to b over a path that drops datagrams larger than
    `path_mtu`; returns the sender's connection, the sizes of the PMTU
    probes in the order sent, and what b received."""
    a, b, ca, cb = _pair(hint, Config())
    now, probes, got, sent = 0.001, [], bytearray(), 0
    for _ in range(3000):
        for ep in (a, b):
            timer = ep.get_timer()
            if timer is not None and timer <= now:
                ep.handle_timer(now)
        if sent < len(payload):
            sent += ca.send(payload[sent:sent + (1 << 22)])  # (what the send buffer takes)
        for d, _addr in a.datagrams_to_send(now):
            probe = ca.snd.pmtu_probe
            if probe is not None and probe not in probes:
                probes.append(probe)
            if len(d) <= path_mtu:
                b.receive_datagram(d, "A", now + 0.0005)
        got += cb.recv(1 << 24)
        for d, _addr in b.datagrams_to_send(now + 0.0005):
            a.receive_datagram(d, "B", now + 0.001)
        if len(got) == len(payload):
            break
        now += 0.001
    _transfer.first_probe_at = probes[0][0] - ca.snd.iss if probes else None
    return ca, [size for _start, _end, size in probes], bytes(got)


def test_without_a_hint_the_search_climbs_every_step():
    ca, big, got = _transfer(None)
    assert got == PAYLOAD
    assert ca.route_mtu == 0
    assert big == [8972, 16384, 32768, 65000]
    assert ca.max_datagram_size == 65000 and ca.snd.pmtu_ladder == ()
    assert _transfer.first_probe_at > 0


def test_a_route_mtu_is_probed_first_and_confirmed_in_one_probe():
    ca, big, got = _transfer(LOOPBACK)
    assert got == PAYLOAD
    assert ca.route_mtu == LOOPBACK
    assert big == [65000]  # the top at once, and no step below it
    # It went where the ladder's first step (8972) goes without the hint,
    # not once the window held twelve 65000-byte probes.
    first = _transfer.first_probe_at
    _transfer(None)
    assert first == _transfer.first_probe_at
    assert ca.max_datagram_size == 65000 and ca.snd.pmtu_ladder == ()
    assert ca.stats.fast_recoveries == 0 and ca.stats.timeouts == 0


def test_a_failed_route_mtu_falls_back_to_the_steps_below_it():
    # The local route carries 64 KB, the path beyond only 20,000 bytes.
    ca, big, got = _transfer(LOOPBACK, path_mtu=20000, payload=LONG)
    assert got == LONG
    # MAX_PROBES tries of the top, all lost; then the ladder from the
    # bottom, up to the first size that fails (tried again until the
    # transfer ends)
    assert big[:5] == [65000] * 3 + [8972, 16384]
    assert big[5:] and set(big[5:]) == {32768}
    assert ca.max_datagram_size == 16384  # the largest size that passes
    assert ca.stats.fast_recoveries == 0  # lost probes are not congestion


def test_a_route_mtu_at_or_below_the_datagram_size_means_no_probing():
    for hint in (1472, 1400):
        ca, big, got = _transfer(hint)
        assert got == PAYLOAD
        assert ca.snd.pmtu_ladder == () and big == []
        assert ca.max_datagram_size == 1472


def test_a_route_mtu_between_steps_is_the_ceiling():
    ca, big, got = _transfer(9000)
    assert got == PAYLOAD
    assert big == [9000] and ca.max_datagram_size == 9000


def test_the_route_mtu_counts_the_layer_below_the_connection():
    # An envelope (gannet.crypto) adds bytes to each datagram: the hint is
    # the route's, the connection's ceiling is that much less.
    a, b, ca, cb = _pair(9000, Config(datagram_overhead=40, max_datagram_size=1432, pmtud_max=64960))
    assert ca.snd.pmtu_ladder[0] == 9000 - 40
