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


def test_an_adapter_makes_its_endpoint_observable_only_when_observed():
    """The security layer's endpoints are compiled classes, whose instances
    take no wrappers: an adapter that attaches an observer makes its
    endpoint of the class's `observable` subclass (and the observer's calls
    are on it), one that attaches none keeps the class itself."""
    import asyncio
    import socket

    from gannet._build import build
    from gannet.crypto.endpoint import InsecureEndpoint, SecureEndpoint
    from gannet.io.endpoint import AioEndpoint, make_udp_socket
    from gannet.observe.trace import observable

    loop = asyncio.new_event_loop()
    try:
        for insecure, cls in ((False, SecureEndpoint), (True, InsecureEndpoint)):
            for observed in (False, True):
                config = Config(insecure=insecure, track_limits=observed)
                aep = AioEndpoint(make_udp_socket(socket.AF_INET, ("127.0.0.1", 0)), config, loop)
                try:
                    ep = aep.ep
                    if observed:
                        assert type(ep) is observable(cls) and aep.observer is not None
                        assert ep.datagrams_to_send == aep.observer.datagrams_to_send  # (its wrapper)
                    else:
                        assert type(ep) is cls and aep.observer is None
                        if build() == "compiled":
                            assert not hasattr(ep, "__dict__")  # native: nothing looked up per call
                finally:
                    aep.close()
    finally:
        loop.close()
