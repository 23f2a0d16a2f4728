"""Connections opened through a UDP relay that drops a quarter of all datagrams,
both ways: handshakes (with the handshake ACK riding on the client's first
write), data and echoes all get through, every byte verified."""

from __future__ import annotations

import asyncio
import random

import gannet

LOSS = 0.25
CLIENTS = 10
SIZE = 20000


async def _relay(loop, server_port: int, rng: random.Random) -> int:
    """A relay for one client: datagrams from the client go to the server and
    back, each dropped with probability LOSS. Returns the port to connect to."""

    class Down(asyncio.DatagramProtocol):
        client = None

        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.client = addr
            if rng.random() >= LOSS:
                up.transport.sendto(data, ("127.0.0.1", server_port))

    class Up(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            if down.client is not None and rng.random() >= LOSS:
                down.transport.sendto(data, down.client)

    down, up = Down(), Up()
    await loop.create_datagram_endpoint(lambda: down, local_addr=("127.0.0.1", 0))
    await loop.create_datagram_endpoint(lambda: up, local_addr=("127.0.0.1", 0))
    return down.transport.get_extra_info("sockname")[1]


def test_connections_through_a_lossy_relay_all_complete():
    rng = random.Random(4)

    async def main():
        loop = asyncio.get_running_loop()

        async def echo(reader, writer):
            try:
                writer.write(await reader.readexactly(SIZE))
                await writer.drain()
                await reader.read()
            finally:
                writer.close()

        server = await gannet.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        async def client(i: int) -> bytes:
            reader, writer = await gannet.open_connection("127.0.0.1", await _relay(loop, port, rng))
            data = bytes([i]) * SIZE
            writer.write(data)  # the first write also carries the handshake's ACK
            await writer.drain()
            got = await reader.readexactly(SIZE)
            writer.close()
            return got == data

        try:
            results = await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(CLIENTS))), 90)
        finally:
            server.close()
        assert results == [True] * CLIENTS

    asyncio.run(main())
