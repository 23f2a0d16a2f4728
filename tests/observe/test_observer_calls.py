"""An EndpointObserver's input calls have the endpoint's own signatures:
what the I/O adapter or an installed observer passes reaches the core."""

from __future__ import annotations

import random

from gannet.config import Config
from gannet.core.endpoint import Endpoint
from gannet.observe.trace import EndpointObserver


def _syn_with_a_bad_crc() -> bytes:
    client = Endpoint(Config(), random.Random(1))
    client.connect("s", 0.0)
    (syn, _addr), = client.datagrams_to_send(0.0)
    bad = bytearray(syn)
    bad[-1] ^= 0xFF  # the CRC32C trailer
    return bytes(bad)


def _observed_server(tmp_path) -> tuple[Endpoint, EndpointObserver]:
    server = Endpoint(Config(), random.Random(2))
    server.listen()
    return server, EndpointObserver(server, qlog_dir=str(tmp_path), install=False)


def test_observed_receive_batch_passes_authenticated_to_the_endpoint(tmp_path):
    """`authenticated` (an AEAD already vouched for the bytes, so the CRC
    trailer is not read) goes through the observer: the SYN is taken and
    answered. Without it the same datagram fails its CRC and is dropped."""
    bad = _syn_with_a_bad_crc()

    server, obs = _observed_server(tmp_path)
    obs.receive_batch(bad, 0, "c", 0.0)
    assert server.stats.malformed_dropped == 1
    assert server.datagrams_to_send(0.0) == []
    obs.close(0.0)

    server, obs = _observed_server(tmp_path)
    obs.receive_batch(bad, 0, "c", 0.0, True)
    assert server.stats.malformed_dropped == 0
    assert len(server.datagrams_to_send(0.0)) == 1  # the SYN-ACK
    obs.close(0.0)


def test_an_adapter_makes_its_endpoint_observable_only_when_packets_are_recorded(tmp_path):
    """The security layer's endpoints are compiled classes, whose instances
    take no wrappers: an adapter whose observer records packets (a qlog)
    makes its endpoint of the class's `observable` subclass (and the
    observer's calls are on it); one whose observer runs the limit
    accounting alone, or that attaches none, keeps the class itself (its
    calls to its own methods native), the accounting called by its pass."""
    import asyncio
    import socket

    from gannet._build import build
    from gannet.crypto.endpoint import InsecureEndpoint, SecureEndpoint
    from gannet.io.endpoint import AioEndpoint, make_udp_socket
    from gannet.observe.trace import observable

    loop = asyncio.new_event_loop()
    try:
        for insecure, cls in ((False, SecureEndpoint), (True, InsecureEndpoint)):
            for observed in ("", "limits", "qlog"):
                config = Config(insecure=insecure, track_limits=observed == "limits",
                                qlog_dir=str(tmp_path) if observed == "qlog" else None)
                aep = AioEndpoint(make_udp_socket(socket.AF_INET, ("127.0.0.1", 0)), config, loop)
                try:
                    ep = aep.ep
                    if observed == "qlog":
                        assert type(ep) is observable(cls) and aep.observer is not None
                        assert ep.datagrams_to_send == aep.observer.datagrams_to_send  # (its wrapper)
                        assert aep.after_pass is None
                    else:
                        assert type(ep) is cls
                        if observed:
                            assert aep.observer is not None and aep.after_pass == aep.observer.after_pass
                        else:
                            assert aep.observer is None and aep.after_pass is None
                        if build() == "compiled":
                            assert not hasattr(ep, "__dict__")  # native: nothing looked up per call
                finally:
                    aep.close()
    finally:
        loop.close()


def test_an_output_pass_accounts_traced_open_connections_itself_and_hands_on_the_rest():
    """`after_pass` (observe/limits.py's account_pass, compiled): a
    connection whose trace has its clock takes its reason without a call of
    the observer's Python; its first pass (no trace yet) and its end go to
    the observer's `_after_output`, which makes and finishes the trace."""
    from functools import partial

    from gannet.observe.limits import IDLE, account_pass

    client, server = Endpoint(Config(), random.Random(1)), Endpoint(Config(), random.Random(2))
    server.listen()
    obs = EndpointObserver(client, install=False)  # the limit accounting alone
    handed = []

    def other(conn, now):
        handed.append(conn)
        obs._after_output(conn, now)

    after_pass = partial(account_pass, obs._clocks, other)
    conn = client.connect("s", 0.0)
    after_pass([conn], 0.0)
    assert handed == [conn] and obs.clock_of(conn) is not None  # traced by the observer's path
    now = 0.0
    while conn.state.name != "ESTABLISHED" and now < 1.0:
        now += 0.01
        for d, _ in client.datagrams_to_send(now):
            server.receive_datagram(d, "c", now)
        for d, _ in server.datagrams_to_send(now):
            client.receive_datagram(d, "s", now)
    assert conn.state.name == "ESTABLISHED"
    conn.send(bytes(200_000))  # more than a window: the sender is busy
    after_pass([conn], now)
    clock = obs.clock_of(conn)
    assert handed == [conn] and clock.busy and clock.reason != IDLE  # accounted here
    conn.abort(now)
    after_pass([conn], now + 1.0)
    assert handed == [conn, conn] and obs.finished  # the end: the observer's path
