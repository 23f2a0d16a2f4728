"""The adapter reads the local route's MTU toward a peer from the kernel
and hands it to the core as its PMTUD search's ceiling (Linux: IP_MTU of
a connected UDP socket)."""

import asyncio
import socket
import sys

import pytest

import gannet
from gannet.io.endpoint import route_mtu

from gannet_io_helpers import needs_ipv6

pytestmark = [pytest.mark.timeout(30),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_MTU is Linux's")]


def test_loopback_carries_64_kb():
    v4 = route_mtu(socket.AF_INET, ("127.0.0.1", 9))
    assert 65000 <= v4 <= 65535 - 28  # loopback's MTU (65536) less IP and UDP headers
    assert route_mtu(socket.AF_UNIX, "/tmp/x") == 0  # a family it cannot tell


@needs_ipv6
def test_loopback_carries_64_kb_over_ipv6():
    assert 65000 <= route_mtu(socket.AF_INET6, ("::1", 9, 0, 0)) <= 65536 - 48


def test_each_connection_takes_the_route_mtu_and_probes_it_first():
    data = bytes(range(256)) * 40_000  # 10 MB: past PMTUD's first probe

    async def sink(reader, writer):
        got = 0
        while chunk := await reader.read(1 << 20):
            got += len(chunk)
        writer.write(got.to_bytes(8, "big"))
        await writer.drain()
        writer.close()

    async def main():
        async with await gannet.start_server(sink, "127.0.0.1", 0, insecure=True) as server:
            reader, writer = await gannet.open_connection(*server.addresses[0], insecure=True)
            conn = writer.get_extra_info("connection")
            expected = route_mtu(socket.AF_INET, server.addresses[0])
            assert conn.route_mtu == expected > 65000
            # The search's first probe is its top (the local route carries it).
            assert conn.snd.pmtu_ladder[0] == conn.config.pmtud_max == 65000
            writer.write(data)
            writer.write_eof()
            assert int.from_bytes(await reader.readexactly(8), "big") == len(data)
            assert conn.max_datagram_size == 65000  # confirmed
            writer.close()

    asyncio.run(asyncio.wait_for(main(), 25))
